"""The whole SRHand pipeline on the embedded synthetic default, as a new user runs it (`make demo`).

Stages, each the project's own command (run as a subprocess, exactly as a user would type it):

1. ``scripts/make_synthetic.py``   synthetic captures (train/val SR subjects, held-out reconstruction subject)
2. ``main_giif.py``                GIIF on the SR training subjects, evaluated on the validation subjects
3. ``main_disc.py``                adversarial stage, from stage 1; run twice: with the discriminator and
                                   with adversarial weight 0 (equal steps without D's gradient)
4. ``main.py``                     SRHand on the held-out subject (joint reconstruction + GIIF fine-tuning)
5. ``main.py --eval --r``          evaluation on held-out frames, with --save_vis

A stage whose outputs exist is reused (``--fresh`` redoes everything). At the end,
``<out>/report.md`` gathers the metric tables and pictures, and the total wall time is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def stage(name: str, cmd: list[str], done: Path, fresh: bool, log_dir: Path) -> float | None:
    """Run ``cmd`` unless ``done`` exists (and not ``fresh``); returns the seconds it took (None: reused)."""
    if done.exists() and not fresh:
        print(f"[{name}] reusing {done.relative_to(REPO) if done.is_relative_to(REPO) else done}")
        return None
    print(f"[{name}] $ {' '.join(cmd)}", flush=True)
    start = time.time()
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{name}.log", "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        # Echo progress lines so the user sees the stage advance.
        proc.wait()
    seconds = time.time() - start
    if proc.returncode != 0:
        tail = (log_dir / f"{name}.log").read_text().splitlines()[-25:]
        print("\n".join(tail), file=sys.stderr)
        raise SystemExit(f"[{name}] failed (exit {proc.returncode}); full log: {log_dir / f'{name}.log'}")
    print(f"[{name}] done in {seconds:.0f} s", flush=True)
    return seconds


def sr_table(report: dict, methods: dict[str, str], scales: list[str]) -> list[str]:
    perc = report.get("perceptual") or "perceptual"
    key = next(
        (
            k
            for k in next(iter(report["results"].values()))[scales[0]]
            if k.endswith("_masked") and not k.startswith(("psnr", "ssim"))
        ),
        None,
    )
    lines = [
        f"| method | scale | PSNR (masked) | SSIM (masked) | {perc} (masked) | PSNR (full) |",
        "|---|---|---|---|---|---|",
    ]
    for label, (source, method) in methods.items():
        rows = source["results"].get(method, {})
        for scale in scales:
            row = rows.get(scale)
            if row is None:
                continue
            perc_value = f"{row[key]:.4f}" if key and key in row else "-"
            lines.append(
                f"| {label} | {scale} | {row['psnr_masked']:.2f} | {row['ssim_masked']:.4f} | "
                f"{perc_value} | {row['psnr_full']:.2f} |"
            )
    return lines


def _steps(checkpoint: Path) -> int | str:
    """Training steps recorded in a checkpoint ('?' when it cannot be read)."""
    try:
        import torch

        return torch.load(checkpoint, map_location="cpu", weights_only=False).get("step", "?")
    except (OSError, RuntimeError):
        return "?"


def write_report(out: Path, runs: dict[str, Path], timings: dict[str, float], total: float) -> Path:
    lines = [
        "# SRHand demo report",
        "",
        "Synthetic captures (procedural hand, CPU-sized configs): numbers are for this toy scale, "
        "not the paper's. See benchmarks/results.md for the full tables.",
        "",
    ]
    lines += ["## Wall time", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {'reused' if v is None else f'{v:.0f}'} |" for k, v in timings.items()]
    lines += [f"| total | {total:.0f} |", ""]

    giif_m = runs["giif"] / "metrics.json"
    disc_m = runs["disc"] / "metrics.json"
    if giif_m.is_file() and disc_m.is_file():
        giif, disc = json.loads(giif_m.read_text()), json.loads(disc_m.read_text())
        scales = list(next(iter(giif["results"].values())).keys())
        noadv_m = runs["disc_noadv"] / "metrics.json"
        noadv = json.loads(noadv_m.read_text()) if noadv_m.is_file() else None
        s1, s2 = _steps(runs["giif"] / "giif.pth"), disc.get("discriminator", {})
        d_steps, weight, d_lr = (
            s2.get("steps", "?"),
            s2.get("adv_weight", "?"),
            s2.get("disc_learning_rate", "?"),
        )
        methods = {"bicubic": (giif, "bicubic"), f"GIIF (stage 1, {s1} steps)": (giif, "giif")}
        if noadv is not None:
            methods[f"GIIF, adversarial weight 0 ({s1} + {d_steps} steps)"] = (noadv, "giif")
        methods[
            f"GIIF + discriminator ({s1} + {d_steps} steps, adversarial weight {weight}, D lr {d_lr})"
        ] = (disc, "giif")
        lines += ["## Super-resolution on validation subjects (held-out people)", ""]
        lines += sr_table(giif, methods, scales)
        lines += [
            "",
            "GIIF + discriminator trains more steps than stage-1 GIIF: compare it with the equal-step "
            "row at adversarial weight 0 (one seed here; benchmarks/disc_sweep.md has the seed spread).",
            "",
        ]
        vis = (
            sorted((runs["disc"] / "eval_vis").glob("x8*.png"))[:2]
            or sorted((runs["giif"] / "eval_vis").glob("*.png"))[:2]
        )
        for path in vis:
            lines += [f"![SR grid: LR, bicubic, GIIF, GT, normal map]({os.path.relpath(path, out)})", ""]

    srhand_m = runs["srhand"] / "metrics.json"
    if srhand_m.is_file():
        m = json.loads(srhand_m.read_text())
        perc, pk = m.get("perceptual", "perceptual"), m.get("perceptual_key", "lpips")
        cfg = m.get("config", {})
        lines += [
            "## SRHand on the held-out reconstruction subject",
            "",
            f"{cfg.get('fit_views')} views x {cfg.get('fit_frames')} frames fitted from {cfg.get('lr_size')} px LR "
            f"images (x{cfg.get('scale')}); evaluated on {len(m.get('eval_frames', []))} held-out frames x "
            f"{len(m.get('eval_cameras', []))} cameras; SR source `{cfg.get('sr_source')}`, "
            f"mesh of {cfg.get('num_vertices')} vertices. Metrics inside the GT MANO mask.",
            "",
            f"| | PSNR | SSIM | {perc} |",
            "|---|---|---|---|",
        ]
        for label, key in (
            ("bicubic upsampling", "sr_bicubic"),
            ("fine-tuned GIIF (SR)", "sr"),
            ("SRHand render", "render"),
        ):
            row = m.get(key, {}).get("all")
            if row:
                lines.append(
                    f"| {label} | {row['psnr_masked']:.2f} | {row['ssim_masked']:.4f} | {row[pk + '_masked']:.4f} |"
                )
        inc = m.get("inconsistency", {})
        paper = m.get("paper_protocol") or {}
        nan = float("nan")
        lines += [
            "",
            "| geometry | P2P (mm, symmetric) | P2P truth -> mesh (mm, paper protocol) |",
            "|---|---|---|",
            f"| SRHand avatar | **{m.get('p2p_mm') or nan:.3f}** | {paper.get('p2p_truth_to_recon_mm') or nan:.3f} |",
            f"| input MANO mesh (no reconstruction) | {m.get('p2p_mm_mano') or nan:.3f} | "
            f"{paper.get('p2p_mano_truth_to_recon_mm') or nan:.3f} |",
            "",
            f"Inconsistency (per-vertex colour variance across views and frames): SR {inc.get('sr', nan):.4f}, "
            f"bicubic {inc.get('bicubic', nan):.4f}, GT HR {inc.get('gt_hr', nan):.4f}; paper protocol (8 frames "
            f"of one view): SR {paper.get('inconsistency_windowed', nan):.4f}.",
            "",
        ]
        for path in sorted((runs["srhand"] / "vis").glob("frame_*.png"))[:2]:
            lines += [
                f"![panel: LR, SR, render, geometry, normals, albedo, GT, unconfidence]({os.path.relpath(path, out)})",
                "",
            ]
        for path in sorted((runs["srhand"] / "finetune").glob("round*_unconfidence.png"))[:2]:
            lines += [f"![unconfidence before/after a fine-tuning round]({os.path.relpath(path, out)})", ""]
        for path in sorted((runs["srhand"] / "vis").glob("*.gif"))[:1]:
            lines += [f"![held-out frames]({os.path.relpath(path, out)})", ""]
    from utils.checkpoint import atomic_write_text

    return atomic_write_text(out / "report.md", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="outputs/demo", help="folder of the report and the stage logs")
    parser.add_argument("--data", default="data/synthetic", help="synthetic capture folder")
    parser.add_argument("--fresh", action="store_true", help="regenerate the data and retrain every stage")
    args = parser.parse_args()

    out = (REPO / args.out).resolve()
    data = (REPO / args.data).resolve()
    logs = out / "logs"
    py = sys.executable
    runs = {
        "giif": REPO / "outputs" / "synthetic_giif",
        "disc": REPO / "outputs" / "synthetic_disc",
        "disc_noadv": REPO / "outputs" / "synthetic_disc_noadv",
        "srhand": REPO / "outputs" / "synthetic_srhand",
    }
    if args.fresh:
        for path in [*runs.values(), out]:
            shutil.rmtree(path, ignore_errors=True)
    env_data = ["--set", f"data.data_path={data}"]
    start = time.time()
    timings = {}
    timings["synthetic data"] = stage(
        "data",
        [py, "scripts/make_synthetic.py", "--out", str(data), "--save_vis"]
        + (["--overwrite"] if args.fresh else []),
        data / "synthetic_meta.json",
        args.fresh,
        logs,
    )
    timings["GIIF (stage 1)"] = stage(
        "giif",
        [py, "main_giif.py", "--conf", "conf/synthetic/giif.conf", "--save_vis", *env_data],
        runs["giif"] / "metrics.json",
        args.fresh,
        logs,
    )
    timings["discriminator (stage 2)"] = stage(
        "disc",
        [
            py,
            "main_disc.py",
            "--conf",
            "conf/synthetic/disc.conf",
            "--model_path",
            str(runs["giif"] / "giif.pth"),
            "--save_vis",
            *env_data,
        ],
        runs["disc"] / "metrics.json",
        args.fresh,
        logs,
    )
    timings["stage 2 at adversarial weight 0"] = stage(
        "disc_noadv",
        [
            py,
            "main_disc.py",
            "--conf",
            "conf/synthetic/disc.conf",
            "--model_path",
            str(runs["giif"] / "giif.pth"),
            "--out",
            str(runs["disc_noadv"]),
            "--set",
            "adv.adv_weight=0.0",
            *env_data,
        ],
        runs["disc_noadv"] / "metrics.json",
        args.fresh,
        logs,
    )
    timings["SRHand (stage 3)"] = stage(
        "srhand",
        [py, "main.py", "--conf", "conf/synthetic/srhand.conf", *env_data],
        runs["srhand"] / "model.pth",
        args.fresh,
        logs,
    )
    timings["SRHand evaluation"] = stage(
        "srhand_eval",
        [
            py,
            "main.py",
            "--conf",
            "conf/synthetic/srhand.conf",
            "--eval",
            "--r",
            "--model_path",
            str(runs["srhand"]),
            "--save_vis",
            *env_data,
        ],
        runs["srhand"] / "vis",
        args.fresh,
        logs,
    )  # training writes metrics.json too; --save_vis writes vis/
    total = time.time() - start
    report = write_report(out, runs, timings, total)
    print(f"report: {report}")
    print(f"total wall time: {total / 60:.1f} min")


if __name__ == "__main__":
    main()
