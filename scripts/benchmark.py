"""Benchmarks: the paper's tables on synthetic data, and speed, written to benchmarks/results.{md,json}.

Every row is produced by the project's own entry scripts and configs (run as subprocesses), never by
a separate code path:

* ``sr``       (Table 3): bicubic, LIIF, GIIF without discriminator (LIIF with normals), GIIF + D on the
               held-out SR validation subjects at x4, x8, x12.8, x16 (``main_giif.py``, ``main_disc.py``);
* ``srhand``   (Table 1): SR source x reconstruction rows of ``main.py`` on the held-out reconstruction
               subject: bicubic + Ours, LIIF + XHand, GIIF w/o ftd. + XHand / Ours, GIIF w/ ftd. + XHand,
               SRHand, hr + Ours;
* ``ablation`` (Table 4(b)): fine-tuning with L_con, + L_wave, + L_D (``--set finetune.weights.*``);
* ``noise``    (Table 5): SRHand from MANO parameters with Gaussian noise (~10 mm MPJPE) vs the GT ones;
* ``speed``:   renderer forward/backward, GIIF decode throughput, one SRHand training and fine-tuning
               step with peak memory (``scripts/benchmark_{render,giif,srhand_step}.py``).

Every main.py row runs with seeds 0, 1, 2 and every SR row with seeds 0, 1 (mean ± std). ``--scale cpu``
(default) uses ``conf/synthetic/*.conf`` on ``data/synthetic``: the committed tables. ``--scale paper`` uses
``conf/synthetic/paper/*.conf`` (the paper's model sizes and schedules) on ``data/synthetic_paper``
(``python scripts/make_synthetic.py --preset paper --out data/synthetic_paper``): a GPU job.

    python scripts/benchmark.py                        # CPU scale, all sections (about 2.5 h on 2 cores)
    python scripts/benchmark.py --sections sr speed    # a subset
    python scripts/benchmark.py --scale paper --jobs 1 # paper scale (GPU), to benchmarks/results_paper.*

Runs reuse an existing run folder under ``--work`` unless ``--fresh``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SR_SCALES = ("x4", "x8", "x12.8", "x16")


def run(cmd: list[str], log: Path, env: dict | None = None) -> float:
    """Run ``cmd`` in the repository, output to ``log``; returns seconds. Raises on failure."""
    start = time.time()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        result = subprocess.run(cmd, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    if result.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise SystemExit(f"benchmark step failed ({' '.join(cmd)}):\n{tail}\nfull log: {log}")
    return time.time() - start


def machine() -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()}
    try:
        with open("/proc/cpuinfo") as handle:
            info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu_model"] = platform.processor() or platform.machine()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


# ---------------------------------------------------------------------------------------------- SR
# Configs per scale: CPU-sized (the committed tables) and the paper's sizes on the paper-preset data.
CONFS = {
    "cpu": {"giif": "conf/synthetic/giif.conf", "liif": "conf/synthetic/liif.conf",
            "disc": "conf/synthetic/disc.conf", "srhand": "conf/synthetic/srhand.conf"},
    "paper": {"giif": "conf/synthetic/paper/giif.conf", "liif": "conf/synthetic/paper/liif.conf",
              "disc": "conf/synthetic/paper/disc.conf", "srhand": "conf/synthetic/paper/srhand.conf"},
}
SCALE_DEFAULTS = {  # --data, --work, results file stem, SR steps, discriminator-stage steps (0 = the config's epochs)
    "cpu": ("data/synthetic", "outputs/benchmark", "results", 324, 108),
    "paper": ("data/synthetic_paper", "outputs/benchmark_paper", "results_paper", 0, 0),
}


def _steps_sets(steps: int) -> list[str]:
    return ["--set", f"train.max_steps={steps}", "--set", "train.epochs=1000"] if steps > 0 else []


def sr_jobs(args, work: Path) -> list[tuple[str, int, Path, list[str]]]:
    """(name, seed, run folder, command) of the SR section, in dependency order. Seed 0's folders are
    ``sr_<name>`` (the main.py sections' GIIF and LIIF), seed s's ``sr_<name>_s<s>``."""
    py, confs = sys.executable, CONFS[args.scale]
    data = ["--set", f"data.data_path={args.data}"]
    jobs = []
    for seed in args.sr_seeds:
        suffix = f"_s{seed}" if seed else ""
        seed_set = ["--set", f"seed={seed}"]
        for name in ("liif", "giif"):
            run_dir = work / f"sr_{name}{suffix}"
            jobs.append((name, seed, run_dir, [py, "main_giif.py", "--conf", confs[name], "--out", str(run_dir), *data,
                                               *seed_set, *_steps_sets(args.steps)]))
        # Stage 2 continues GIIF for disc_steps more steps; with the adversarial weight at 0 it gives the same
        # extra steps and schedule without the discriminator's gradient (GIIF + D compared at equal cost).
        giif = work / f"sr_giif{suffix}" / "giif.pth"
        for name, extra in (("disc", []), ("giif_noadv", ["--set", "adv.adv_weight=0.0"])):
            run_dir = work / f"sr_{name}{suffix}"
            jobs.append((name, seed, run_dir, [py, "main_disc.py", "--conf", confs["disc"], "--out", str(run_dir),
                                               "--model_path", str(giif), *data, *extra, *seed_set,
                                               *_steps_sets(args.disc_steps)]))
    return jobs


def section_sr(args, work: Path) -> dict:
    jobs = sr_jobs(args, work)
    timings = {}
    for _, _, run_dir, cmd in jobs:
        if not (run_dir / "metrics.json").is_file():  # --fresh empties --work first
            timings[run_dir.name] = run(cmd, work / "logs" / f"{run_dir.name}.log")
    reports = {(name, seed): json.loads((run_dir / "metrics.json").read_text()) for name, seed, run_dir, _ in jobs}
    steps = f"{args.steps} steps" if args.steps > 0 else "the config's epochs"
    both = f"{args.steps} + {args.disc_steps} steps" if args.steps > 0 else "both stages' epochs"
    sources = {  # row -> (run, method in its metrics.json)
        "bicubic": ("giif", "bicubic"),
        f"LIIF ({steps})": ("liif", "giif"),
        f"GIIF w/o D ({steps})": ("giif", "giif"),
        f"GIIF w/o D ({both}, stage 2 with adv_weight 0)": ("giif_noadv", "giif"),
        f"GIIF + D ({both})": ("disc", "giif"),
    }
    rows, stds, per_seed = {}, {}, {}
    for label, (name, method) in sources.items():
        results = {seed: reports[(name, seed)]["results"][method] for seed in args.sr_seeds}
        per_seed[label] = results
        rows[label], stds[label] = {}, {}
        for scale in next(iter(results.values())):
            metrics = next(iter(results.values()))[scale]
            stats = {m: _mean_std([r[scale][m] for r in results.values()]) for m in metrics}
            rows[label][scale] = {m: mean for m, (mean, _) in stats.items()}
            stds[label][scale] = {m: std for m, (_, std) in stats.items()}
    first = reports[("giif", args.sr_seeds[0])]
    return {"rows": rows, "std": stds, "per_seed": per_seed, "seeds": list(args.sr_seeds),
            "perceptual": first["perceptual"], "num_images": first["num_images"],
            "degradation": first["degradation"], "seconds": timings}


def sr_markdown(result: dict) -> list[str]:
    perc = result["perceptual"] or "perceptual"
    pkey = None
    seeds = result.get("seeds", [0])
    spread = (f" Mean over seeds {', '.join(map(str, seeds))} (PSNR ± standard deviation)." if len(seeds) > 1
              else " One seed.")
    lines = [f"Masked metrics on the SR validation subjects ({result['num_images']} images, "
             f"LR by `{result['degradation']}` downsampling; perceptual metric: {perc}).{spread}", ""]
    header = "| method | " + " | ".join(f"{s} PSNR / SSIM / {perc.split('-')[0]}" for s in SR_SCALES) + " |"
    lines += [header, "|---|" + "---|" * len(SR_SCALES)]
    for name, by_scale in result["rows"].items():
        cells = []
        for scale in SR_SCALES:
            row = by_scale.get(scale)
            if row is None:
                cells.append("-")
                continue
            pkey = pkey or next((k for k in row if k.endswith("_masked") and not k.startswith(("psnr", "ssim"))), None)
            perc_value = f"{row[pkey]:.4f}" if pkey else "-"
            std = (result.get("std") or {}).get(name, {}).get(scale, {}).get("psnr_masked")
            psnr = f"{row['psnr_masked']:.2f}" + (f" ± {std:.2f}" if std is not None else "")
            cells.append(f"{psnr} / {row['ssim_masked']:.3f} / {perc_value}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


# ---------------------------------------------------------------------------------------------- SRHand
# Gaussian noise on the MANO parameters for Table 5: 9.6 mm MPJPE on the evaluated frames of the synthetic
# subject (the paper's 9.54 mm; 11.3 mm over all its frames); the measured MPJPE is reported with the row.
NOISE_SETS = ["data.mano_noise.pose_std=0.052", "data.mano_noise.trans_std=0.0045", "data.mano_noise.shape_std=0.3"]
# main.py rows on the held-out reconstruction subject, all from conf/synthetic/srhand.conf with --set
# overrides: key -> (label, overrides, GIIF checkpoint: "giif" = stage-2 GIIF, "liif" = LIIF, no normals).
SRHAND_RUNS = {
    "bicubic_ours": ("bicubic + Ours", ["sr_source=bicubic"], "giif"),
    "liif_xhand": ("LIIF + XHand", ["sr_source=giif", "model.use_enh=false"], "liif"),
    "giif_xhand": ("GIIF w/o ftd. + XHand", ["sr_source=giif", "model.use_enh=false"], "giif"),
    "giif_ours": ("GIIF w/o ftd. + Ours", ["sr_source=giif"], "giif"),
    "ftd_xhand": ("GIIF w/ ftd. + XHand", ["sr_source=giif_finetuned", "model.use_enh=false"], "giif"),
    "srhand": ("SRHand (GIIF w/ ftd. + Ours)", ["sr_source=giif_finetuned"], "giif"),
    "hr_ours": ("hr + Ours (upper bound)", ["sr_source=hr"], "giif"),
    # Table 4(b): the fine-tuning loss terms (pose consistency belongs to the consistency term).
    "ft_con": ("w/ ftd.: L_con", ["sr_source=giif_finetuned", "finetune.weights.wavelet=0",
                                  "finetune.weights.disc=0"], "giif"),
    "ft_con_wav": ("w/ ftd.: L_con + L_wave", ["sr_source=giif_finetuned", "finetune.weights.disc=0"], "giif"),
    # Table 5: SRHand from noisy MANO parameters (fitting and evaluation), see data.mano_noise.
    "srhand_noisy": ("SRHand, noisy MANO parameters", ["sr_source=giif_finetuned", *NOISE_SETS], "giif"),
}
TABLES = {  # section -> (row keys, label overrides)
    "srhand": (["bicubic_ours", "liif_xhand", "giif_xhand", "giif_ours", "ftd_xhand", "srhand", "hr_ours"], {}),
    "ablation": (["giif_ours", "ft_con", "ft_con_wav", "srhand"],
                 {"giif_ours": "w/o ftd.", "srhand": "w/ ftd.: L_con + L_wave + L_D (SRHand)"}),
    "noise": (["srhand_noisy", "srhand"], {"srhand": "SRHand, ground-truth MANO parameters"}),
}


def srhand_jobs(args, work: Path, keys: list[str], check_models: bool = True) -> list[tuple[str, int, Path, list[str]]]:
    """(key, seed, run folder, command) of every run of ``keys`` x ``args.seeds``."""
    models_by_kind = {"giif": Path(args.giif_model), "liif": Path(args.liif_model)}
    jobs = []
    for key in keys:
        _, sets, kind = SRHAND_RUNS[key]
        model = models_by_kind[kind]
        if check_models and not model.is_file():
            raise SystemExit(f"{model}: no {kind.upper()} checkpoint for row {key!r}; run the SR section or "
                             f"`make demo` first (or pass --{kind}_model)")
        for seed in args.seeds:
            run_dir = work / "srhand" / f"{key}_s{seed}"
            cmd = [sys.executable, "main.py", "--conf", CONFS[args.scale]["srhand"], "--out", str(run_dir),
                   "--set", f"data.data_path={args.data}", "--set", f"giif_model={model}",
                   "--set", f"disc_model={Path(args.giif_model).parent / 'disc.pth'}", "--set", f"seed={seed}"]
            for item in sets:
                cmd += ["--set", item]
            jobs.append((key, seed, run_dir, cmd))
    return jobs


def run_jobs(jobs, work: Path, parallel: int) -> dict:
    """Run the jobs whose run folder has no metrics.json yet (``--fresh`` empties ``--work`` first),
    ``parallel`` at a time, each with ``cpu_count // parallel`` threads. Returns seconds per run folder."""
    from concurrent.futures import ThreadPoolExecutor

    todo = [j for j in jobs if not (j[2] / "metrics.json").is_file()]
    threads = str(max(1, (os.cpu_count() or 1) // max(1, parallel)))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    print(f"[benchmark] {len(todo)} main.py run(s) to do, {parallel} at a time", flush=True)
    with ThreadPoolExecutor(max(1, parallel)) as pool:
        futures = {j[2].name: pool.submit(run, j[3], work / "logs" / f"srhand_{j[2].name}.log", env) for j in todo}
        return {name: f.result() for name, f in futures.items()}


def _row_metrics(run_dir: Path) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    pk = m.get("perceptual_key", "lpips")
    sr = (m.get("sr") or {}).get("all") or {}
    render = m["render"]["all"]
    return {"sr_psnr": sr.get("psnr_masked"), "sr_perc": sr.get(f"{pk}_masked"),
            "render_psnr": render["psnr_masked"], "render_perc": render[f"{pk}_masked"],
            "p2p_mm": m["p2p_mm"], "p2p_mm_mano": m.get("p2p_mm_mano"),
            "inconsistency": (m.get("inconsistency") or {}).get("sr"),
            "mano_noise_mpjpe_mm": (m.get("mano_noise") or {}).get("mpjpe_mm"),
            "perceptual": m.get("perceptual")}


def _mean_std(values: list) -> tuple:
    import statistics

    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def srhand_table(args, work: Path, table: str) -> dict:
    keys, labels = TABLES[table]
    jobs = srhand_jobs(args, work, keys)
    seconds = run_jobs(jobs, work, args.jobs)
    rows = {}
    for key in keys:
        runs = {seed: _row_metrics(work / "srhand" / f"{key}_s{seed}") for seed in args.seeds}
        first = next(iter(runs.values()))
        summary = {}
        for metric in first:
            if metric == "perceptual":
                continue
            mean, std = _mean_std([r[metric] for r in runs.values()])
            summary[metric] = {"mean": mean, "std": std}
        rows[labels.get(key, SRHAND_RUNS[key][0])] = {"key": key, "perceptual": first["perceptual"],
                                                       "seeds": runs, "summary": summary}
    return {"rows": rows, "seeds": list(args.seeds), "seconds": seconds,
            "noise_sets": NOISE_SETS if table == "noise" else None}


def _fmt(stat: dict, digits: int) -> str:
    if stat["mean"] is None:
        return "-"
    text = f"{stat['mean']:.{digits}f}"
    return text + (f" ± {stat['std']:.{digits}f}" if stat["std"] is not None else "")


def srhand_markdown(result: dict, extra: list[tuple[str, str, int]] | None = None) -> list[str]:
    first = next(iter(result["rows"].values()))
    perc = first["perceptual"] or "perceptual"
    seeds = result["seeds"]
    total = len(result["rows"]) * len(seeds)
    executed = len(result.get("seconds") or {})
    lines = [f"Held-out frames and cameras of the reconstruction subject, inside the MANO mask; perceptual metric "
             f"{perc}. Mean ± standard deviation over seeds {', '.join(map(str, seeds))} (initialisation and "
             f"shuffles of main.py; the SR models are the same). {executed} of the {total} runs were executed by "
             "this section, the others reused from existing run folders (earlier sections or commands; `--fresh` re-runs all).", ""]
    extra_cols = extra or []
    header = f"| row | SR PSNR | SR {perc} | render PSNR | render {perc} | P2P (mm) | inconsistency |"
    header += "".join(f" {name} |" for name, _, _ in extra_cols)
    lines += [header, "|---|---|---|---|---|---|---|" + "---|" * len(extra_cols)]
    for name, row in result["rows"].items():
        s = row["summary"]
        cells = [_fmt(s["sr_psnr"], 2), _fmt(s["sr_perc"], 4), _fmt(s["render_psnr"], 2), _fmt(s["render_perc"], 4),
                 _fmt(s["p2p_mm"], 3), _fmt(s["inconsistency"], 4)]
        cells += [_fmt(s[key], digits) for _, key, digits in extra_cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def section_srhand(args, work: Path) -> dict:
    return srhand_table(args, work, "srhand")


def section_ablation(args, work: Path) -> dict:
    return srhand_table(args, work, "ablation")


def section_noise(args, work: Path) -> dict:
    return srhand_table(args, work, "noise")


def noise_markdown(result: dict) -> list[str]:
    lines = srhand_markdown(result, extra=[("MPJPE of the input (mm)", "mano_noise_mpjpe_mm", 2),
                                           ("input MANO P2P (mm)", "p2p_mm_mano", 3)])
    lines += ["", "Noise (`--set`): " + ", ".join(f"`{s}`" for s in result["noise_sets"] or []) + "; it is applied "
              "to every frame the run reads (fitting and evaluation), so the crops, MANO masks and normal maps "
              "follow the noisy hand as they would with estimated parameters."]
    return lines


# ---------------------------------------------------------------------------------------------- speed
def section_speed(args, work: Path) -> dict:
    py = sys.executable
    out = {}
    steps = [("render", [py, "scripts/benchmark_render.py", "--repeats", "5", "--threads", "2"]),
             ("giif_decode", [py, "scripts/benchmark_giif.py"]),
             ("srhand_step_cpu", [py, "scripts/benchmark_srhand_step.py", "--size", "cpu", "--data", args.data])]
    if args.paper_steps:
        steps.append(("srhand_step_paper", [py, "scripts/benchmark_srhand_step.py", "--size", "paper", "--data",
                                            args.data, "--steps", "2", "--parts", *args.paper_steps]))
    for name, cmd in steps:
        log = work / "logs" / f"speed_{name}.log"
        run(cmd, log)
        last = log.read_text().strip().splitlines()[-1]
        out[name] = json.loads(last)
    return out


def speed_markdown(result: dict) -> list[str]:
    lines = ["Renderer (rasterize + interpolate + antialias, one view, the 3x-subdivided hand; "
             "`scripts/benchmark_render.py`, 2 threads):", "",
             "| resolution | faces | forward (ms) | forward + backward (ms) |", "|---|---|---|---|"]
    for row in result.get("render", []):
        lines.append(f"| {row['res']} | {row['faces']} | {row['ms_forward']:.1f} | {row['ms_forward_backward']:.1f} |")
    decode = result.get("giif_decode")
    if decode:
        lines += ["", f"GIIF decode throughput (no gradient, every output pixel queried; {decode.get('threads')} "
                  "thread(s)):", "",
                  "| model | parameters (M) | output | encode (ms) | encode + query (ms) | output MP/s |", "|---|---|---|---|---|---|"]
        for row in decode.get("results", []):
            lines.append(f"| {row['size']} | {row['params_M']:.2f} | {row['out']}x{row['out']} | "
                         f"{1000 * row['encode_s']:.0f} | {1000 * row['decode_s']:.0f} | {row['decode_MPps']:.3f} |")
    step_rows = [(k, v) for k, v in result.items() if k.startswith("srhand_step")]
    if step_rows:
        lines += ["", "SRHand steps (`scripts/benchmark_srhand_step.py`; peak memory on CPU is the process's peak "
                  "resident set, data and models included):", "",
                  "| config | vertices | px | step | views | threads | ms | peak MiB |", "|---|---|---|---|---|---|---|---|"]
        for _, info in step_rows:
            for row in info["rows"]:
                lines.append(f"| {info['config']} | {info['vertices']} | {info['resolution'][0]} | {row['part']} | "
                             f"{row['views']} | {info['threads']} | {row['ms']:.0f} | {row['peak_mib']:.0f} |")
    return lines


SECTIONS = {"sr": (section_sr, sr_markdown, "Super-resolution (paper Table 3, synthetic data)"),
            "srhand": (section_srhand, srhand_markdown, "3D reconstruction from SR images (paper Table 1, synthetic data)"),
            "ablation": (section_ablation, srhand_markdown, "Fine-tuning loss ablation (paper Table 4(b), synthetic data)"),
            "noise": (section_noise, noise_markdown, "Noisy MANO parameters (paper Table 5, synthetic data)"),
            "speed": (section_speed, speed_markdown, "Speed")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=list(CONFS), default="cpu",
                        help="cpu: CPU-sized configs (the committed tables); paper: the paper's model sizes and "
                             "schedules on the paper-preset synthetic data (a GPU job)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--data", help="synthetic captures (default: data/synthetic, or data/synthetic_paper)")
    parser.add_argument("--work", help="run folders (default: outputs/benchmark, or outputs/benchmark_paper)")
    parser.add_argument("--out", default=str(REPO / "benchmarks"),
                        help="where results.md/json (results_paper.md/json for --scale paper) go")
    parser.add_argument("--steps", type=int, help="GIIF/LIIF training steps of the SR section (cpu: 324 = 6 epochs "
                        "of conf/synthetic/giif.conf; paper: 0 = the config's epochs)")
    parser.add_argument("--disc_steps", type=int, help="discriminator-stage steps (cpu: 108 = 2 epochs of "
                        "conf/synthetic/disc.conf; paper: 0 = the config's epochs)")
    parser.add_argument("--giif_model", help="stage-2 GIIF for the main.py sections, its disc.pth beside it "
                        "(default: WORK/sr_disc/giif.pth)")
    parser.add_argument("--liif_model", help="LIIF (no normal maps) for the LIIF + XHand row (default: "
                        "WORK/sr_liif/giif.pth)")
    parser.add_argument("--sr_seeds", type=int, nargs="+", default=[0, 1], help="SR-section seeds per row "
                        "(seed 0's GIIF and LIIF supervise the main.py rows)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="main.py seeds per row")
    parser.add_argument("--jobs", type=int, default=2,
                        help="main.py runs at once (each with cpu_count / jobs threads; use 1 on a GPU)")
    parser.add_argument("--paper_steps", nargs="*", choices=["train", "finetune"],
                        help="speed section: paper-size SRHand steps to time (default: both on CUDA, train on a "
                             "CPU, where the paper-size fine-tuning set-up alone takes over 15 minutes)")
    parser.add_argument("--fresh", action="store_true", help="retrain instead of reusing run folders")
    args = parser.parse_args(argv)
    data, work, stem, steps, disc_steps = SCALE_DEFAULTS[args.scale]
    args.data = args.data or str(REPO / data)
    args.work = args.work or str(REPO / work)
    args.results_stem = stem
    args.steps = steps if args.steps is None else args.steps
    args.disc_steps = disc_steps if args.disc_steps is None else args.disc_steps
    args.giif_model = args.giif_model or str(Path(args.work) / "sr_disc" / "giif.pth")
    args.liif_model = args.liif_model or str(Path(args.work) / "sr_liif" / "giif.pth")
    if args.paper_steps is None:
        import torch

        args.paper_steps = ["train", "finetune"] if torch.cuda.is_available() else ["train"]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    if not (Path(args.data) / "synthetic_meta.json").is_file():
        raise SystemExit(f"{args.data}: no synthetic captures; run `python scripts/make_synthetic.py --out {args.data}` first")
    work, out = Path(args.work), Path(args.out)
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / f"{args.results_stem}.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name in args.sections:
        compute, _, title = SECTIONS[name]
        print(f"[benchmark] {title} ...", flush=True)
        start = time.time()
        results[name] = {"result": compute(args, work), "seconds": time.time() - start,
                         "command": " ".join(["python", "scripts/benchmark.py", *(sys.argv[1:] if argv is None else argv)]),
                         "git": git_rev(), "machine": machine(),
                         "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    results_path.write_text(json.dumps(results, indent=2))
    lines = ["# Benchmarks", "", "Produced by `python scripts/benchmark.py`; every row comes from the project's own "
             "entry scripts and configs. " + ("Synthetic captures, CPU-sized models: a toy scale, not the paper's."
                                              if args.scale == "cpu" else
                                              "Paper-preset synthetic captures, the paper's model sizes and schedules."),
             ""]
    for name, entry in results.items():
        if name not in SECTIONS:
            continue
        _, markdown, title = SECTIONS[name]
        m = entry["machine"]
        lines += [f"## {title}", "", f"`{entry['command']}` at `{entry['git']}` on {entry['date']}, "
                  f"{m.get('gpu') or m.get('cpu_model') or 'CPU'} ({m['cpu_count']} CPU cores, torch {m['torch']}), "
                  f"{entry['seconds']:.0f} s.", ""]
        lines += markdown(entry["result"]) + [""]
    md_path = out / f"{args.results_stem}.md"
    md_path.write_text("\n".join(lines))
    print(f"[benchmark] wrote {md_path} and {results_path}")


if __name__ == "__main__":
    main()
