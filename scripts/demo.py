"""The whole SRHand pipeline on the embedded synthetic default, as a new user runs it (`make demo`).

Stages, each the project's own command (run as a subprocess, exactly as a user would type it):

1. ``scripts/make_synthetic.py``   synthetic captures (train/val SR subjects, held-out reconstruction subject)
2. ``main_giif.py --no_eval``      GIIF on the SR training subjects
3. ``main_disc.py``                adversarial stage, from stage 1, evaluated on the validation subjects
4. ``main.py --save_vis``          SRHand on the held-out subject (joint reconstruction + GIIF fine-tuning),
                                   then its evaluation on held-out frames with panels
5. ``scripts/animate.py``          the avatar in poses the capture never had (slerp between its frames), orbit
6. ``scripts/export_avatar.py``    the avatar as a skinned glTF (``avatar.glb``), with the new poses as its clip

The demo shows the product; the benchmark (``scripts/benchmark.py``, ``benchmarks/``) carries the controls
(the equal-step adversarial-weight-0 twin of stage 2, seeds, baselines). To fit 10 minutes on 2 cores, stages 1
and 2 train shorter schedules than the benchmark's (``GIIF_EPOCHS``, ``DISC_EPOCHS`` below: 108 + 54 steps
instead of 324 + 108), stage 1 is not evaluated on its own (``--no_eval``: its model is an intermediate; stage 2's
evaluation is the SR table), and SRHand runs its full CPU config with a P2P estimate of ``P2P_SAMPLES`` points per
surface instead of 40,000 (its standard error, printed with it, about 0.002 mm instead of 0.001) and fits the
held-out poses in 60 steps instead of 120 (``TEST_TIME_FIT``, measured equal).

A stage whose outputs exist is reused (``--fresh`` redoes everything). At the end, ``<out>/report.md`` gathers
the metric tables and pictures, ``<out>/overview.png`` is the picture at the top of the README (LR input, SR,
render, geometry and ground truth of a held-out frame; the avatar in new poses), and the total wall time is
printed.
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
sys.path.insert(0, str(REPO))  # the overview picture uses utils.image_io
GIIF_EPOCHS = 2  # 108 steps (the benchmark's conf/synthetic/giif.conf: 6 epochs, 324 steps)
DISC_EPOCHS = 1  # 54 steps (the benchmark: 2 epochs, 108 steps)
P2P_SAMPLES = 10000  # stratified P2P samples per surface (conf/synthetic/srhand.conf: 40,000)
# The test-time fit in 60 Adam steps at 4e-3 instead of 120 at 2e-3: the same fitted P2P on the demo's run (2.892
# vs 2.895 mm) and on the benchmark's hr + Ours seed 0 (1.524 vs 1.524 mm), in half the time (benchmarks/refinement.md)
TEST_TIME_FIT = ["refine.test_steps=60", "refine.test_learning_rate=4e-3"]
INBETWEEN = 3  # new poses between consecutive capture frames: 23 pairs x 3 = 69 frames on the default data


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
    overview = out / "overview.png"
    if overview.is_file():
        lines += [
            "![LR input, SR, render, geometry and ground truth of a held-out frame; the avatar in new poses]"
            "(overview.png)",
            "",
        ]
    lines += ["## Wall time", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {'reused' if v is None else f'{v:.0f}'} |" for k, v in timings.items()]
    lines += [f"| total | {total:.0f} |", ""]

    disc_m = runs["disc"] / "metrics.json"
    if disc_m.is_file():
        disc = json.loads(disc_m.read_text())
        scales = list(next(iter(disc["results"].values())).keys())
        s1, s2 = _steps(runs["giif"] / "giif.pth"), disc.get("discriminator", {})
        d_steps, weight, d_lr = (
            s2.get("steps", "?"),
            s2.get("adv_weight", "?"),
            s2.get("disc_learning_rate", "?"),
        )
        methods = {"bicubic": (disc, "bicubic")}
        methods[
            f"GIIF + discriminator ({s1} + {d_steps} steps, adversarial weight {weight}, D lr {d_lr})"
        ] = (disc, "giif")
        lines += ["## Super-resolution on validation subjects (held-out people)", ""]
        lines += sr_table(disc, methods, scales)
        lines += [
            "",
            "The demo trains shorter schedules than the benchmark and does not evaluate stage 1 on its own. GIIF "
            "without the discriminator, LIIF, the equal-step control at adversarial weight 0 and the seed spread "
            "are in benchmarks/results.md, benchmarks/sr_residual.md and benchmarks/disc_sweep.md.",
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
        ]
        fitted, refined = m.get("test_time_fit") or {}, (m.get("refinement") or {}).get("keypoints") or {}
        if fitted:  # MANO refinement (not the paper's method): both evaluations, the annotated pose above
            held_out = fitted.get("keypoints") or {}
            lines += [
                f"| SRHand avatar at the test-time-fitted poses (MANO refinement) | **{fitted['p2p_mm']:.3f}** | - |",
                f"| its fitted MANO mesh | {fitted['p2p_mm_mano']:.3f} | - |",
                "",
                "The rows above the last two are at the annotated poses (the paper's method evaluates there); with "
                "MANO refinement (`refine.enabled`, docs/srhand_model.md 6.5a) the held-out frames' poses are fitted "
                "to their SR images with the avatar frozen, and the last two rows are measured there. Keypoint "
                f"error (21 joints vs the truth): fitting frames {refined.get('mpjpe_annotation_mm', nan):.2f} mm "
                f"annotated -> {refined.get('mpjpe_refined_mm', nan):.2f} mm refined; held-out frames "
                f"{held_out.get('mpjpe_annotation_mm', nan):.2f} -> {held_out.get('mpjpe_refined_mm', nan):.2f} mm. "
                "The benchmark's `refine` section runs both methods over seeds (benchmarks/refinement.md).",
            ]
        estimator = m.get("p2p_estimator") or {}
        lines += [
            "",
            f"Demo settings that differ from `conf/synthetic/srhand.conf` (and the benchmark): P2P from "
            f"{estimator.get('samples_per_surface', '?')} points per surface (40,000)"
            + (f", test-time fit `{'`, `'.join(TEST_TIME_FIT)}` (120 steps at 2e-3)" if fitted else "")
            + ".",
        ]
        lines += [
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
    lines += avatar_section(runs["srhand"], out)
    from utils.checkpoint import atomic_write_text

    return atomic_write_text(out / "report.md", "\n".join(lines))


def avatar_section(run: Path, out: Path) -> list[str]:
    """The report's lines on the animation (``<run>/animation``) and the glTF export (``<run>/avatar.json``)."""
    lines = []
    poses = run / "animation" / "poses.npz"
    if poses.is_file():
        import numpy as np

        with np.load(poses) as saved:
            labels, camera = [str(x) for x in saved["labels"]], str(saved["camera"])
        new = sum("->" in label for label in labels)
        lines += [
            "## The avatar in new poses",
            "",
            f"`scripts/animate.py`: {len(labels)} frames, {new} of them poses the capture never had (slerp per "
            f"joint between consecutive capture frames; the pose-conditioned networks evaluated at each), "
            f"camera: {camera}. Files: `animation.mp4`, `animation.gif`, `meshes/*.ply`, `poses.npz` in "
            f"`{os.path.relpath(run / 'animation', REPO)}`.",
            "",
        ]
        gif = run / "animation" / "animation.gif"
        if gif.is_file():
            lines += [f"![the avatar in new poses]({os.path.relpath(gif, out)})", ""]
    summary = run / "avatar.json"
    if summary.is_file():
        glb = json.loads(summary.read_text())
        gap = glb["skinned_vs_avatar_at_capture_poses"]
        lines += [
            "## The avatar as a skinned glTF",
            "",
            f"`scripts/export_avatar.py`: `{os.path.relpath(run / 'avatar.glb', REPO)}`, {glb['num_vertices']} "
            f"vertices, 16 MANO joints, top-4 skinning weights. Skinned by its skeleton at the {gap['frames']} "
            f"capture poses, it is {gap['mean_mm']:.3f} mm (mean vertex distance; max {gap['max_mm']:.3f} mm) "
            f"from the avatar's own mesh at those poses: the file cannot carry the {glb['not_carried']}."
            + (
                f" It holds the {glb['animation']['frames']} new poses as an animation clip at "
                f"{glb['animation']['fps']:g} fps."
                if glb.get("animation")
                else ""
            ),
            "",
        ]
    return lines


def make_overview(run: Path, out: Path) -> Path | None:
    """``<out>/overview.png``: LR input, SR, render, geometry and ground truth of the first view of the first
    evaluation panel (``<run>/vis/frame_*.png``), over 5 frames of the animation (new poses). None when either
    is missing."""
    import imageio.v3 as iio
    import numpy as np

    from utils.image_io import grid_tile, make_grid, read_image, write_image

    panels = sorted((run / "vis").glob("frame_*.png"))
    gif = run / "animation" / "animation.gif"
    if not panels or not gif.is_file():
        return None
    panel = (read_image(panels[0], on_black="ignore") * 255).round().astype(np.uint8)
    # the panel's columns (trainers/srhand/evaluation.py _write_panel): LR, SR, render, geometry, normals,
    # albedo, GT, unconfidence
    picks = {"LR input": 0, "SR": 1, "render": 2, "geometry": 3, "truth": 6}
    tiles = [grid_tile(panel, 8, i) for i in picks.values()]
    frames = iio.imread(gif)
    side = tiles[0].shape[0]
    import cv2

    chosen = np.linspace(0, len(frames) - 1, 5).round().astype(int)
    moves = [cv2.resize(frames[i][..., :3], (side, side), interpolation=cv2.INTER_AREA) for i in chosen]
    labels = [*picks, *["new pose"] * len(moves)]
    return write_image(out / "overview.png", make_grid([*tiles, *moves], labels, ncols=5))


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
    timings[f"GIIF (stage 1, {GIIF_EPOCHS} epochs)"] = stage(
        "giif",
        [
            py,
            "main_giif.py",
            "--conf",
            "conf/synthetic/giif.conf",
            "--save_vis",
            "--set",
            f"train.epochs={GIIF_EPOCHS}",
            "--no_eval",
            *env_data,
        ],
        runs["giif"] / "giif.pth",
        args.fresh,
        logs,
    )
    timings[f"discriminator (stage 2, {DISC_EPOCHS} epoch(s))"] = stage(
        "disc",
        [
            py,
            "main_disc.py",
            "--conf",
            "conf/synthetic/disc.conf",
            "--model_path",
            str(runs["giif"] / "giif.pth"),
            "--save_vis",
            "--set",
            f"train.epochs={DISC_EPOCHS}",
            *env_data,
        ],
        runs["disc"] / "metrics.json",
        args.fresh,
        logs,
    )
    timings["SRHand (stage 3) and its evaluation"] = stage(
        "srhand",
        [
            py,
            "main.py",
            "--conf",
            "conf/synthetic/srhand.conf",
            "--save_vis",
            "--set",
            f"eval.p2p_samples={P2P_SAMPLES}",
            *[arg for item in TEST_TIME_FIT for arg in ("--set", item)],
            *env_data,
        ],
        runs["srhand"] / "vis",
        args.fresh,
        logs,
    )  # training ends with the evaluation (eval.after_training): metrics.json, and vis/ with --save_vis
    model = ["--model_path", str(runs["srhand"]), "--data_path", str(data)]
    timings["animation (new poses)"] = stage(
        "animate",
        [
            py,
            "scripts/animate.py",
            *model,
            "--poses",
            "interpolate",
            "--inbetween",
            str(INBETWEEN),
            "--camera",
            "orbit",
            "--video",
            "mp4",
            "gif",
        ],
        runs["srhand"] / "animation" / "poses.npz",
        args.fresh,
        logs,
    )
    timings["glTF export"] = stage(
        "export",
        [py, "scripts/export_avatar.py", *model, "--poses", "interpolate", "--inbetween", str(INBETWEEN)],
        runs["srhand"] / "avatar.json",
        args.fresh,
        logs,
    )
    make_overview(runs["srhand"], out)
    total = time.time() - start
    report = write_report(out, runs, timings, total)
    print(f"report: {report}")
    print(f"total wall time: {total / 60:.1f} min")


if __name__ == "__main__":
    main()
