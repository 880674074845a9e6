"""Sweep of the discriminator stage: adversarial weight x D learning rate x seed, from ONE stage-1 GIIF.

Every run is ``main_disc.py --conf conf/synthetic/disc.conf`` (equal steps: the config's epochs) with
``--set adv.adv_weight=W adv.disc_learning_rate=D seed=S``, evaluated by the stage itself on the SR
validation subjects (never the reconstruction subject) at x4, x8, x16. Weight 0 is the equal-step run
without D's gradient (D still trains beside it but cannot move GIIF, so its learning rate is irrelevant
and it runs once per seed). For every (W, D) the table gives the masked PSNR / SSIM / perceptual
distance (mean over seeds), the paired differences to weight 0 of the same seed (mean +- std over
seeds), and the stage's diagnostics (D accuracy on real / fake hand pixels and the adversarial/L1
gradient-norm ratio, means over the last quarter of training). Writes ``benchmarks/disc_sweep.{md,json}``.

    python scripts/make_synthetic.py --out /tmp/disc_data
    python main_giif.py --conf conf/synthetic/giif.conf --out /tmp/disc_work/stage1 --set data.data_path=/tmp/disc_data
    python scripts/sweep_disc.py --giif /tmp/disc_work/stage1/giif.pth --data /tmp/disc_data \\
        --work /tmp/disc_work/sweep --grid 0 0.01:1e-4 0.1:1e-3 1:1e-3 --seeds 0 1 2 --jobs 3

Finished runs (a ``metrics.json`` in their folder) are reused, so the grid can grow between calls.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.benchmark import git_rev, machine  # noqa: E402
from utils.checkpoint import atomic_write_text  # noqa: E402

SCALES = ("x4", "x8", "x16")
DIAG = ("d_acc_real", "d_acc_fake", "grad_ratio_adv_l1")


def parse_grid(items: list[str]) -> list[tuple[float, float]]:
    """``W`` or ``W:D`` -> (adversarial weight, D learning rate); weight 0 gets the schema's 1e-3."""
    grid = []
    for item in items:
        weight, _, dlr = item.partition(":")
        grid.append((float(weight), float(dlr) if dlr else 1e-3))
    return grid


def run_name(weight: float, dlr: float, seed: int) -> str:
    return f"w{weight:g}_d{dlr:g}_s{seed}"


def one_run(args, weight: float, dlr: float, seed: int) -> tuple[str, float | None]:
    out = Path(args.work) / run_name(weight, dlr, seed)
    if (out / "metrics.json").is_file():
        return out.name, None
    cmd = [
        sys.executable,
        "main_disc.py",
        "--conf",
        args.conf,
        "--out",
        str(out),
        "--model_path",
        args.giif,
        "--set",
        f"data.data_path={args.data}",
        "--set",
        f"adv.adv_weight={weight}",
        "--set",
        f"adv.disc_learning_rate={dlr}",
        "--set",
        f"seed={seed}",
        "--set",
        "eval.scales=[" + ", ".join(s[1:] for s in SCALES) + "]",
    ]
    for item in args.set:
        cmd += ["--set", item]
    log = Path(args.work) / "logs" / f"{out.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log, "w") as handle:
        result = subprocess.run(
            cmd,
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(args.threads)},
        )
    if result.returncode != 0:
        raise SystemExit(f"{out.name} failed (exit {result.returncode}); log: {log}")
    return out.name, time.time() - start


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def collect(args, grid) -> dict:
    work = Path(args.work)
    runs = {}
    for weight, dlr in grid:
        for seed in args.seeds:
            path = work / run_name(weight, dlr, seed) / "metrics.json"
            if path.is_file():
                runs[(weight, dlr, seed)] = json.loads(path.read_text())
    if not runs:
        raise SystemExit("no finished runs")
    first = next(iter(runs.values()))
    pkey = next(
        k
        for k in first["results"]["giif"][SCALES[0]]
        if k.endswith("_masked") and not k.startswith(("psnr", "ssim"))
    )
    zero = {seed: r for (w, _, seed), r in runs.items() if w == 0}
    rows = []
    for weight, dlr in grid:
        if weight == 0 and any(row["adv_weight"] == 0 for row in rows):
            continue
        seeds = [s for s in args.seeds if (weight, dlr, s) in runs]
        if not seeds:
            continue
        row = {
            "adv_weight": weight,
            "disc_learning_rate": None if weight == 0 else dlr,
            "seeds": seeds,
            "steps": runs[(weight, dlr, seeds[0])].get("discriminator", {}).get("steps"),
            "scales": {},
            "diagnostics": {},
        }
        for scale in SCALES:
            cell = {}
            for metric in ("psnr_masked", "ssim_masked", pkey):
                values = [runs[(weight, dlr, s)]["results"]["giif"][scale][metric] for s in seeds]
                cell[metric] = mean_std(values)
                paired = [
                    runs[(weight, dlr, s)]["results"]["giif"][scale][metric]
                    - zero[s]["results"]["giif"][scale][metric]
                    for s in seeds
                    if s in zero
                ]
                if paired and weight != 0:
                    cell[f"delta_{metric}"] = mean_std(paired) + (len(paired),)
            row["scales"][scale] = cell
        for key in DIAG:
            for part in ("first_quarter", "last_quarter"):
                values = [
                    runs[(weight, dlr, s)]["discriminator"][part][key]
                    for s in seeds
                    if "discriminator" in runs[(weight, dlr, s)]
                ]
                if values:
                    row["diagnostics"][f"{key}_{part}"] = statistics.fmean(values)
        rows.append(row)
    bicubic = {scale: first["results"]["bicubic"][scale] for scale in SCALES}
    return {
        "rows": rows,
        "perceptual_key": pkey,
        "perceptual": first.get("perceptual"),
        "num_images": first.get("num_images"),
        "bicubic": bicubic,
    }


def verdict(row: dict, pkey: str) -> str:
    """Goal of issue 15: perceptual distance lower than weight 0 by more than the seed std of the paired
    difference, PSNR within 0.3 dB, at every scale."""
    ok, notes = True, []
    for scale in SCALES:
        cell = row["scales"][scale]
        if f"delta_{pkey}" not in cell:
            return "no paired weight-0 run"
        d_lp, s_lp, n = cell[f"delta_{pkey}"]
        d_ps, _, _ = cell["delta_psnr_masked"]
        better = n > 1 and d_lp < 0 and abs(d_lp) > s_lp
        ok &= better and abs(d_ps) <= 0.3
        if not better:
            notes.append(f"{scale}: perceptual not lower beyond the std")
        if abs(d_ps) > 0.3:
            notes.append(f"{scale}: PSNR {d_ps:+.2f} dB")
    return "goal reached" if ok else "; ".join(notes)


def markdown(result: dict, meta: dict) -> str:
    pkey, perc = result["perceptual_key"], result["perceptual"] or "perceptual"
    lines = [
        "# Discriminator-stage sweep (issue 15)",
        "",
        f"`{meta['command']}` at `{meta['revision']}` on {meta['date']}, {meta['machine']}.",
        "",
        f"Stage-1 GIIF: `{meta['giif']}` ({meta['giif_steps']} steps); data `{meta['data']}`. Every run starts "
        f"from it and trains {result['rows'][0]['steps']} stage-2 steps "
        f"(`{meta['conf']}` with the command's `--set`; only the adversarial weight, the D learning rate and "
        "the seed differ between runs). "
        f"Masked metrics on the SR validation subjects ({result['num_images']} images), perceptual metric {perc}. "
        "Seeds change D's initialisation, the patches, scales and batch order. Weight 0 is the equal-step "
        "run without D's gradient. Δ = run - weight-0 run of the same seed, mean ± std over seeds. "
        "D accuracy: hand pixels classified correctly (real / fake), mean over the last quarter of training; "
        "ratio: ‖∂(w·L_adv)/∂sr‖ / ‖∂L_l1/∂sr‖, first → last quarter.",
        "",
    ]
    head = "| weight | D lr | seeds | " + " | ".join(
        f"{s} PSNR / SSIM / {perc.split('-')[0]}" for s in SCALES
    )
    head += " | " + " | ".join(f"{s} Δ{perc.split('-')[0]} / ΔPSNR" for s in SCALES)
    head += " | D acc real / fake | grad ratio | verdict |"
    lines += [head, "|" + "---|" * (3 + 2 * len(SCALES) + 3)]
    bic = result["bicubic"]
    lines.append(
        "| bicubic | - | - | "
        + " | ".join(
            f"{bic[s]['psnr_masked']:.2f} / {bic[s]['ssim_masked']:.3f} / {bic[s][pkey]:.4f}" for s in SCALES
        )
        + " | "
        + " | ".join("-" for _ in SCALES)
        + " | - | - | - |"
    )
    for row in result["rows"]:
        cells = []
        for s in SCALES:
            c = row["scales"][s]
            cells.append(f"{c['psnr_masked'][0]:.2f} / {c['ssim_masked'][0]:.3f} / {c[pkey][0]:.4f}")
        deltas = []
        for s in SCALES:
            c = row["scales"][s]
            if f"delta_{pkey}" in c:
                dl, sl, _ = c[f"delta_{pkey}"]
                dp, sp, _ = c["delta_psnr_masked"]
                deltas.append(f"{dl:+.4f} ± {sl:.4f} / {dp:+.2f} ± {sp:.2f}")
            else:
                deltas.append("-")
        d = row["diagnostics"]
        acc = (
            f"{d['d_acc_real_last_quarter']:.2f} / {d['d_acc_fake_last_quarter']:.2f}"
            if "d_acc_real_last_quarter" in d
            else "-"
        )
        ratio = (
            f"{d['grad_ratio_adv_l1_first_quarter']:.3g} → {d['grad_ratio_adv_l1_last_quarter']:.3g}"
            if "grad_ratio_adv_l1_last_quarter" in d
            else "-"
        )
        lr = "-" if row["disc_learning_rate"] is None else f"{row['disc_learning_rate']:g}"
        seeds = ", ".join(map(str, row["seeds"]))
        v = "(reference)" if row["adv_weight"] == 0 else verdict(row, pkey)
        lines.append(
            f"| {row['adv_weight']:g} | {lr} | {seeds} | "
            + " | ".join(cells)
            + " | "
            + " | ".join(deltas)
            + f" | {acc} | {ratio} | {v} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--giif", required=True, help="stage-1 giif.pth every run starts from")
    parser.add_argument("--data", required=True, help="synthetic capture folder (the one stage 1 trained on)")
    parser.add_argument("--work", default="outputs/disc_sweep", help="run folders")
    parser.add_argument("--conf", default="conf/synthetic/disc.conf")
    parser.add_argument(
        "--grid",
        nargs="+",
        default=["0", "0.01:1e-4", "0.1:1e-3", "1:1e-3"],
        help="W or W:D (adversarial weight : D learning rate)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    parser.add_argument("--threads", type=int, default=1, help="OMP threads per run")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra override for every run (e.g. train.max_steps=36); use a separate --work",
    )
    parser.add_argument("--report_only", action="store_true", help="only collect finished runs")
    parser.add_argument("--out", default="benchmarks/disc_sweep", help="report stem (.md and .json)")
    args = parser.parse_args()
    grid = parse_grid(args.grid)
    # Weight 0 does not depend on D's learning rate: one run per seed.
    runs = sorted(
        {(w, 1e-3 if w == 0 else d, s) for w, d in grid for s in args.seeds},
        key=lambda r: (r[2], r[0] != 0, r[0]),
    )
    grid = list(dict.fromkeys((w, 1e-3 if w == 0 else d) for w, d in grid))
    if not args.report_only:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for name, seconds in pool.map(lambda r: one_run(args, *r), runs):
                print(f"{name}: {'reused' if seconds is None else f'{seconds:.0f} s'}", flush=True)
    result = collect(args, grid)
    giif_meta = {}
    try:
        import torch

        giif_meta = torch.load(args.giif, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError):
        pass
    meta = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
        "revision": git_rev(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": (
            lambda m: f"{m['cpu_model']} ({m['cpu_count']} CPU cores, torch {m['torch']}, "
            f"{args.threads} thread(s) per run, {args.jobs} run(s) at once)"
        )(machine()),
        "giif": args.giif,
        "giif_steps": giif_meta.get("step"),
        "data": args.data,
        "conf": args.conf,
        "seeds": args.seeds,
    }
    out = REPO / args.out
    atomic_write_text(out.with_suffix(".md"), markdown(result, meta))
    atomic_write_text(out.with_suffix(".json"), json.dumps({"meta": meta, **result}, indent=2))
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
