"""Benchmarks: the paper's tables on synthetic data, and speed, written to benchmarks/results.{md,json}.

Every row is produced by the project's own entry scripts and configs (run as subprocesses), never by
a separate code path:

* ``sr``       (Table 3): bicubic, LIIF, GIIF without discriminator (LIIF with normals), GIIF + D on the
               held-out SR validation subjects at x4, x8, x12.8, x16 (``main_giif.py``, ``main_disc.py``);
* ``srhand``   (Table 1): SR source x reconstruction rows of ``main.py`` on the held-out reconstruction
               subject: bicubic + Ours, LIIF + XHand, GIIF w/o ftd. + XHand / Ours, GIIF w/ ftd. + XHand,
               SRHand, hr + Ours;
* ``ablation`` (Table 4(b)): fine-tuning with L_con, + L_wave, + L_D (``--set finetune.weights.*``);
* ``static``   (Table 2's protocol): one pose seen by 40 cameras, novel views at x4 and x16: bicubic + Ours, LIIF +
               XHand, SRHand, hr + Ours (captures ``<data>_static``, generated when missing; the NeRF-SR, DiSR-NeRF
               and SRGS rows of the paper are not re-implemented);
* ``identity`` (Table 4(a)): XHand vs Ours on the fine-tuned GIIF's SR images, on the reconstruction subject and on
               a second identity (captures ``<data>_id2`` generated with seed 1 when missing);
* ``noise``    (Table 5): SRHand from MANO parameters with Gaussian noise (~10 mm MPJPE) vs the GT ones;
* ``speed``:   renderer forward/backward, GIIF decode throughput, one SRHand training and fine-tuning
               step with peak memory (``scripts/benchmark_{render,giif,srhand_step}.py``).

Every main.py row runs with seeds 0, 1, 2 and every SR row with seeds 0, 1, 2 (paper scale: 0, 1; mean ± std). ``--scale cpu``
(default) uses ``conf/synthetic/*.conf`` on ``data/synthetic``: the committed tables. ``--scale paper`` uses
``conf/synthetic/paper/*.conf`` (the paper's model sizes and schedules) on ``data/synthetic_paper``
(``python scripts/make_synthetic.py --preset paper --out data/synthetic_paper``): a GPU job.

    python scripts/benchmark.py                        # CPU scale, all sections (about 2.5 h on 2 cores)
    python scripts/benchmark.py --sections sr speed    # a subset
    python scripts/benchmark.py --scale paper --jobs 1 # paper scale (GPU), to benchmarks/results_paper.*

Every finished run's metrics.json (trimmed) is committed under ``benchmarks/runs/`` (``utils.bench.runstore``),
keyed by its entry script, resolved config (machine-specific paths normalised away), seed, scale, input
checkpoints and the content fingerprint of its data folder (``utils.bench.fingerprint``), with the code
revision and machine that produced it. A run already in the store is not run again (``--fresh`` re-runs
and overwrites), so an interrupted benchmark resumes on any machine from the committed entries made on the
same captures; entries from before fingerprints (legacy) are reused only on the machine that made them
(``--legacy_machine`` names another). Every table says which revisions, machines and data its runs come
from, and a claim pairs only runs on the same data.
``docs/benchmark_protocol.md`` has the protocol, the claims' verdict rule and the medium scale's budget.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from utils.bench import runstore  # noqa: E402
from utils.bench.claims_table import claims_markdown, input_mano_row, section_claims  # noqa: E402
from utils.bench.claims_table import mean_std as _mean_std  # noqa: E402
from utils.bench.claims_table import summarise as _summarise  # noqa: E402
from utils.bench.plan import (  # noqa: E402
    CONFS,
    DATA_ARGS,
    IDENTITY_SEED,
    MEDIUM_DATA_COMMAND,
    NOISE_SETS,
    SCALE_DEFAULTS,
    SCALE_SECTIONS,
    SCALE_SR_SEEDS,
    SRHAND_RUNS,
    STATIC_DATA_ARGS,
    STATIC_FACTORS,
    STATIC_KEYS,
    TABLES,
    sr_plan,
    srhand_jobs,
)
from utils.bench.provenance import fill_from_store  # noqa: E402
from utils.bench.report import (  # noqa: E402
    identity_markdown,
    merge_render_runs,
    noise_markdown,
    refine_markdown,
    speed_markdown,
    sr_markdown,
    srhand_markdown,
    static_markdown,
)
from utils.bench.runner import (  # noqa: E402
    checkpoint_ready,
    execute,
    git_rev,
    job_key,
    legacy_keys,
    legacy_machines,
    machine,
    run,
    store_summary,
)
from utils.checkpoint import atomic_write_text  # noqa: E402
from utils.config import load_config  # noqa: E402


def section_sr(args, work: Path) -> dict:
    jobs, keys, _ = sr_plan(args, work)
    upstream = {str(j[2] / "giif.pth"): i for i, j in enumerate(jobs)}
    entries, timings = execute(args, work, "sr", jobs, keys, parallel=1, upstream=upstream)
    reports = {(name, seed): entries[run_dir.name]["metrics"] for name, seed, run_dir, _ in jobs}
    origin = {(name, seed): runstore.provenance(entries[run_dir.name]) for name, seed, run_dir, _ in jobs}
    steps = f"{args.steps} steps" if args.steps > 0 else "the config's epochs"
    both = f"{args.steps} + {args.disc_steps} steps" if args.steps > 0 else "both stages' epochs"
    sources = {  # row -> (run, method in its metrics.json)
        "bicubic": ("giif", "bicubic"),
        f"LIIF ({steps})": ("liif", "giif"),
        f"GIIF w/o D ({steps})": ("giif", "giif"),
        f"GIIF w/o D ({both}, stage 2 with adv_weight 0)": ("giif_noadv", "giif"),
        f"GIIF + D ({both})": ("disc", "giif"),
    }
    rows, stds, per_seed, provenance, residual = {}, {}, {}, {}, {}
    for label, (name, method) in sources.items():
        if method != "bicubic":  # the residual mode the row's runs were made with
            modes = {
                runstore.config_value(entries[run_dir.name], "model.args.residual")
                for row, _, run_dir, _ in jobs
                if row == name
            }
            residual[label] = ", ".join(sorted(modes))
        results = {seed: reports[(name, seed)]["results"][method] for seed in args.sr_seeds}
        per_seed[label] = results
        provenance[label] = {str(seed): origin[(name, seed)] for seed in args.sr_seeds}
        rows[label], stds[label] = {}, {}
        for scale in next(iter(results.values())):
            metrics = next(iter(results.values()))[scale]
            stats = {m: _mean_std([r[scale][m] for r in results.values()]) for m in metrics}
            rows[label][scale] = {m: mean for m, (mean, _) in stats.items()}
            stds[label][scale] = {m: std for m, (_, std) in stats.items()}
    first = reports[("giif", args.sr_seeds[0])]
    return {
        "rows": rows,
        "std": stds,
        "per_seed": per_seed,
        "provenance": provenance,
        "seeds": list(args.sr_seeds),
        "row_keys": {label: f"{name}:{method}" for label, (name, method) in sources.items()},
        "residual": residual,
        "perceptual": first["perceptual"],
        "num_images": first["num_images"],
        "degradation": first["degradation"],
        "seconds": timings,
        **store_summary(entries.values(), timings),
    }


def _row_metrics(m: dict) -> dict:
    """The table's metrics of one main.py ``metrics.json`` (``pp_*``: the paper's protocol, when present)."""
    pk = m.get("perceptual_key", "lpips")
    sr = (m.get("sr") or {}).get("all") or {}
    render = m["render"]["all"]
    row = {
        "sr_psnr": sr.get("psnr_masked"),
        "sr_perc": sr.get(f"{pk}_masked"),
        "render_psnr": render["psnr_masked"],
        "render_perc": render[f"{pk}_masked"],
        "p2p_mm": m["p2p_mm"],
        "p2p_mm_se": m.get("p2p_se_mm"),  # the estimator's own standard error (runs after issue 26)
        "p2p_mm_mano": m.get("p2p_mm_mano"),
        "p2p_mm_mano_se": m.get("p2p_se_mm_mano"),
        # the paper's P2P protocol (eval.pseudo_gt_mesh_dir; runs since issue 23), None where not measured
        "p2p_pseudo_gt_mm": m.get("p2p_pseudo_gt_mm"),
        "p2p_pseudo_gt_mm_se": m.get("p2p_pseudo_gt_se_mm"),
        "p2p_pseudo_gt_mm_mano": m.get("p2p_pseudo_gt_mm_mano"),
        "inconsistency": (m.get("inconsistency") or {}).get("sr"),
        "mano_noise_mpjpe_mm": (m.get("mano_noise") or {}).get("mpjpe_mm"),
        "perceptual": m.get("perceptual"),
    }
    refined = (m.get("refinement") or {}).get("keypoints") or {}
    fitted = m.get("test_time_fit") or {}
    own = (
        fitted or m
    )  # P2P at the poses the method itself uses: the test-time-fitted ones, else the annotation's
    row.update(
        {
            "mpjpe_annotation_mm": refined.get("mpjpe_annotation_mm"),
            "mpjpe_refined_mm": refined.get("mpjpe_refined_mm"),
            "ttf_p2p_mm": fitted.get("p2p_mm"),
            "p2p_own_pose_mm": own.get("p2p_mm"),
            "p2p_own_pose_mm_se": own.get("p2p_se_mm"),
            "ttf_p2p_mm_mano": fitted.get("p2p_mm_mano"),
            "ttf_render_psnr": ((fitted.get("render") or {}).get("all") or {}).get("psnr_masked"),
            "ttf_mpjpe_annotation_mm": (fitted.get("keypoints") or {}).get("mpjpe_annotation_mm"),
            "ttf_mpjpe_mm": (fitted.get("keypoints") or {}).get("mpjpe_refined_mm"),
        }
    )
    paper = m.get("paper_protocol")
    if paper:
        p_render, p_sr = paper.get("render") or {}, paper.get("sr") or {}
        row.update(
            {
                "pp_sr_psnr": p_sr.get("psnr"),
                "pp_sr_ssim": p_sr.get("ssim"),
                "pp_sr_perc": p_sr.get(pk),
                "pp_render_psnr": p_render.get("psnr"),
                "pp_render_ssim": p_render.get("ssim"),
                "pp_render_perc": p_render.get(pk),
                "pp_inconsistency": paper.get("inconsistency_windowed"),
                "pp_p2p_mm": paper.get("p2p_truth_to_recon_mm"),
                "pp_p2p_mm_se": paper.get("p2p_truth_to_recon_se_mm"),
                "pp_p2p_mm_mano": paper.get("p2p_mano_truth_to_recon_mm"),
                "pp_p2p_mm_mano_se": paper.get("p2p_mano_truth_to_recon_se_mm"),
            }
        )
    return row


def srhand_table(
    args,
    work: Path,
    table: str,
    data: str | None = None,
    folder: str = "srhand",
    conf: str | None = None,
    extra: tuple[str, ...] = (),
    keys: list[str] | None = None,
) -> dict:
    """One table of main.py rows (``TABLES[table]``, or ``keys``) x ``args.seeds``; see :func:`srhand_jobs`."""
    all_keys, labels = TABLES[table]
    keys = [key for key in (keys or all_keys) if not getattr(args, "rows", None) or key in args.rows]
    jobs = srhand_jobs(args, work, keys, check_models=False, data=data, folder=folder, conf=conf, extra=extra)
    sr, sr_keys, refs = sr_plan(args, work)
    run_keys = [job_key(args, cmd, seed, refs) for _, seed, _, cmd in jobs]
    twins, accepted = legacy_keys(args, run_keys), legacy_machines(args)
    store = runstore.RunStore(args.store)
    todo = [
        key
        for (key, _, _, _), run_key, twin in zip(jobs, run_keys, twins, strict=True)
        if args.fresh or store.find("srhand", key, run_key, twin, accepted) is None
    ]
    # Rows to run need their GIIF/LIIF and discriminator checkpoints; when the SR runs that write them are
    # only in the store (another machine, or --work emptied), those SR runs are run again first.
    producers = {str(j[2] / name): i for i, j in enumerate(sr) for name in ("giif.pth", "disc.pth")}
    needed = {str(Path(args.giif_model).parent / "disc.pth")} if todo else set()
    needed |= {
        str(Path(args.liif_model if SRHAND_RUNS[key][2] == "liif" else args.giif_model)) for key in todo
    }
    force = {
        producers[path]
        for path in needed
        if path in producers and not checkpoint_ready(path, sr_keys[producers[path]])
    }
    if force and not args.fresh:
        print(
            f"[benchmark] main.py runs to do need {len(force)} SR checkpoint(s) not on this machine: re-running "
            + ", ".join(sr[i][2].name for i in sorted(force))
        )
        execute(
            args,
            work,
            "sr",
            sr,
            sr_keys,
            upstream={str(j[2] / "giif.pth"): i for i, j in enumerate(sr)},
            force=force,
        )
    for key in todo:
        srhand_jobs(
            args, work, [key], data=data, folder=folder, conf=conf
        )  # its checkpoint must be there now
    entries, seconds = execute(args, work, "srhand", jobs, run_keys, parallel=args.jobs)
    rows = {}
    for key in keys:
        runs = {seed: _row_metrics(entries[f"{key}_s{seed}"]["metrics"]) for seed in args.seeds}
        rows[labels.get(key, SRHAND_RUNS[key][0])] = {
            **_summarise(key, runs),
            "provenance": {str(seed): runstore.provenance(entries[f"{key}_s{seed}"]) for seed in args.seeds},
        }
    if table in ("srhand", "static", "refine"):
        rows.update(input_mano_row(rows))
    return {
        "rows": rows,
        "seeds": list(args.seeds),
        "seconds": seconds,
        "noise_sets": NOISE_SETS if table in ("noise", "refine") else None,
        **store_summary(entries.values(), seconds),
    }


def section_srhand(args, work: Path) -> dict:
    return srhand_table(args, work, "srhand")


def section_ablation(args, work: Path) -> dict:
    return srhand_table(args, work, "ablation")


def section_noise(args, work: Path) -> dict:
    return srhand_table(args, work, "noise")


def section_refine(args, work: Path) -> dict:
    return srhand_table(args, work, "refine")


def _generated(args, work: Path, path: Path, extra: list[str], what: str) -> Path:
    """``path``, after generating synthetic captures there (the scale's settings, then ``extra``) if missing."""
    if not (path / "synthetic_meta.json").is_file():
        cmd = [
            sys.executable,
            "scripts/make_synthetic.py",
            *DATA_ARGS[args.scale],
            *extra,
            "--out",
            str(path),
        ]
        print(f"[benchmark] generating {what}: {' '.join(cmd[1:])}", flush=True)
        run(cmd, work / "logs" / f"data_{path.name}.log")
    return path


def section_static(args, work: Path) -> dict:
    """Table 2's protocol: one pose seen by 40 cameras, novel views (8 held-out cameras of that pose) at x4
    and x16: SRHand against its own baselines (bicubic + Ours, LIIF + XHand) and hr + Ours (upper bound,
    run once: the scale factor does not reach it). Captures ``<data>_static`` (generated when missing)."""
    if "static" not in CONFS[args.scale]:
        raise SystemExit(
            f"the static section has no config at --scale {args.scale} (CONFS[{args.scale!r}]['static'])"
        )
    data = _generated(
        args,
        work,
        Path(str(args.data).rstrip("/") + "_static"),
        STATIC_DATA_ARGS,
        "the single-pose captures of Table 2",
    )
    hr_size = load_config(REPO / CONFS[args.scale]["static"], schema="srhand").get_int("data.hr_size")
    factors = {}
    for factor in STATIC_FACTORS:
        keys = [key for key in STATIC_KEYS if key != "hr_ours"]
        factors[f"x{factor}"] = srhand_table(
            args,
            work,
            "static",
            data=str(data),
            folder=f"static_x{factor}",
            conf=CONFS[args.scale]["static"],
            keys=keys,
            extra=(f"data.lr_size={hr_size // factor}",),
        )
    upper = srhand_table(
        args,
        work,
        "static",
        data=str(data),
        folder="static_hr",
        conf=CONFS[args.scale]["static"],
        keys=["hr_ours"],
    )
    return {"factors": factors, "upper_bound": upper, "seeds": list(args.seeds), "hr_size": hr_size}


def identity_data(args) -> Path:
    """Table 4(a)'s second identity's captures: ``<data>_id2``, generated with seed ``IDENTITY_SEED``."""
    return Path(str(args.data).rstrip("/") + "_id2")


def section_identity(args, work: Path) -> dict:
    """Table 4(a): XHand vs Ours (both on the fine-tuned GIIF's SR images) on two identities: the
    reconstruction subject of ``--data`` (the Table 1 runs, reused) and that of captures generated with
    another seed (same generator settings; GIIF never saw either subject)."""
    second = _generated(
        args, work, identity_data(args), ["--seed", str(IDENTITY_SEED)], "the second identity's captures"
    )
    identities = {}
    for label, data, folder in (
        ("identity 1", args.data, "srhand"),
        ("identity 2", str(second), "identity2"),
    ):
        table = srhand_table(args, work, "identity", data=data, folder=folder)
        meta = json.loads((Path(data) / "synthetic_meta.json").read_text())
        subject = next((sub for sub in meta.get("subjects", []) if sub.get("role") == "reconstruction"), {})
        table["subject"] = {
            "generator_seed": meta["config"].get("seed"),
            "betas": subject.get("betas"),
            "input_mano_p2p_mm": (meta.get(subject.get("split", "test")) or {}).get("input_mano_p2p_mm"),
        }
        identities[label] = table
    return {"identities": identities, "seeds": list(args.seeds)}


# ---------------------------------------------------------------------------------------------- speed
RENDER_RUNS = 3  # renderer benchmark runs; the table gives their range (a shared host's load varies)


def section_speed(args, work: Path) -> dict:
    py = sys.executable
    out = {}
    steps = [
        (
            f"render_{k}",
            [py, "scripts/benchmark_render.py", "--repeats", "10", "--threads", "2", "--res", "256", "512"],
        )
        for k in range(RENDER_RUNS)
    ]
    steps += [
        ("giif_decode", [py, "scripts/benchmark_giif.py"]),
        (
            "srhand_step_cpu",
            [
                py,
                "scripts/benchmark_srhand_step.py",
                "--size",
                "cpu",
                "--data",
                args.data,
                "--threads",
                "2",
                "--compare",
                "--parts",
                "train",
                "finetune",
                "giif_train",
            ],
        ),
    ]
    if args.paper_steps:
        steps.append(
            (
                "srhand_step_paper",
                [
                    py,
                    "scripts/benchmark_srhand_step.py",
                    "--size",
                    "paper",
                    "--data",
                    args.data,
                    "--steps",
                    "3",
                    "--compare",
                    "--parts",
                    *args.paper_steps,
                ],
            )
        )
    for name, cmd in steps:
        log = work / "logs" / f"speed_{name}.log"
        run(cmd, log)
        last = log.read_text().strip().splitlines()[-1]
        out[name] = json.loads(last)
    runs = [out.pop(f"render_{k}") for k in range(RENDER_RUNS)]
    out["render"] = merge_render_runs(runs)
    return out


SCALE_STEMS = {"cpu": "results", "medium": "results_medium", "paper": "results_paper"}


SECTIONS = {
    "sr": (section_sr, sr_markdown, "Super-resolution (paper Table 3, synthetic data)"),
    "srhand": (
        section_srhand,
        srhand_markdown,
        "3D reconstruction from SR images (paper Table 1, synthetic data)",
    ),
    "ablation": (
        section_ablation,
        srhand_markdown,
        "Fine-tuning loss ablation (paper Table 4(b), synthetic data)",
    ),
    "noise": (section_noise, noise_markdown, "Noisy MANO parameters (paper Table 5, synthetic data)"),
    "refine": (
        section_refine,
        refine_markdown,
        "MANO refinement with the avatar (not in the paper; synthetic data, fitted annotations)",
    ),
    "static": (
        section_static,
        static_markdown,
        "Single pose, novel views, x4 and x16 (paper Table 2's protocol, synthetic data)",
    ),
    "identity": (
        section_identity,
        identity_markdown,
        "Geometric enhancement per identity (paper Table 4(a), synthetic data)",
    ),
    "speed": (section_speed, speed_markdown, "Speed"),
}
CLAIMS_TITLE = "Claims: paired differences and verdicts (paper Tables 1, 3, 4(b))"
ORDER = ("sr", "srhand", "static", "ablation", "identity", "noise", "refine", "claims", "speed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scale",
        choices=list(CONFS),
        default="cpu",
        help="cpu: CPU-sized configs (the committed tables); medium: x16 at 256 px, subdivision 2, "
        "about 4 h on 2 cores (docs/benchmark_protocol.md); paper: the paper's model sizes and "
        "schedules on the paper-preset synthetic data (a GPU job)",
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=list(SECTIONS),
        help="default: all (medium: sr srhand ablation; the claims are always recomputed)",
    )
    parser.add_argument(
        "--data", help="synthetic captures (default: data/synthetic, or data/synthetic_paper)"
    )
    parser.add_argument("--work", help="run folders (default: outputs/benchmark, or outputs/benchmark_paper)")
    parser.add_argument(
        "--out",
        default=str(REPO / "benchmarks"),
        help="where results.md/json (results_paper.md/json for --scale paper) go",
    )
    parser.add_argument(
        "--steps",
        type=int,
        help="GIIF/LIIF training steps of the SR section (cpu, medium: 324 = 6 "
        "epochs of conf/synthetic/giif.conf; paper: 0 = the config's epochs)",
    )
    parser.add_argument(
        "--disc_steps",
        type=int,
        help="discriminator-stage steps (cpu, medium: 108 = 2 epochs of "
        "conf/synthetic/disc.conf; paper: 0 = the config's epochs)",
    )
    parser.add_argument(
        "--giif_model",
        help="stage-2 GIIF for the main.py sections, its disc.pth beside it "
        "(default: WORK/sr_disc/giif.pth)",
    )
    parser.add_argument(
        "--liif_model",
        help="LIIF (no normal maps) for the LIIF + XHand row (default: " "WORK/sr_liif/giif.pth)",
    )
    parser.add_argument(
        "--sr_seeds",
        type=int,
        nargs="+",
        help="SR-section seeds per row (default 0 1 2; paper 0 1) "
        "(seed 0's GIIF and LIIF supervise the main.py rows)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="main.py seeds per row")
    parser.add_argument(
        "--sr_set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a --set item for every GIIF/LIIF/discriminator run (e.g. model.args.residual=none: the GIIF of the "
        "tables committed before issue 24, which the CPU configs' bilinear residual no longer is)",
    )
    parser.add_argument(
        "--rows",
        nargs="+",
        choices=list(SRHAND_RUNS),
        help="only these main.py rows in the sections run (e.g. a diagnostic on other captures); "
        "default: every row of each table",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="main.py runs at once (each with cpu_count / jobs threads; use 1 on a GPU)",
    )
    parser.add_argument(
        "--paper_steps",
        nargs="*",
        choices=["train", "finetune"],
        help="speed section: paper-size SRHand steps to time (default: both on CUDA, train on a "
        "CPU, where the paper-size fine-tuning set-up alone takes over 15 minutes)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="ignore the run store: re-run every run (and "
        "empty --work first); the new entries replace the stored ones",
    )
    parser.add_argument(
        "--store",
        default=str(REPO / "benchmarks" / "runs"),
        help="run store: one committed JSON per finished run (utils/bench/runstore.py)",
    )
    parser.add_argument(
        "--legacy_machine",
        action="append",
        default=[],
        metavar="CPU",
        help="also reuse legacy run-store entries (made before data fingerprints, issue 22) made on this "
        "CPU (their `machine` field, e.g. 'Intel(R) Xeon(R) Processor'), as if this machine's captures were "
        "theirs; by default only those of this machine's CPU are reused",
    )
    parser.add_argument(
        "--report_only",
        action="store_true",
        help="run nothing: rewrite results.md (and the claims) from results.json",
    )
    args = parser.parse_args(argv)
    data, work, stem, steps, disc_steps = SCALE_DEFAULTS[args.scale]
    args.data = args.data or str(REPO / data)
    args.work = args.work or str(REPO / work)
    args.results_stem = stem
    args.sections = args.sections or SCALE_SECTIONS.get(args.scale, list(SECTIONS))
    args.sr_seeds = args.sr_seeds or SCALE_SR_SEEDS.get(args.scale, [0, 1])
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

    work, out = Path(args.work), Path(args.out)
    if not args.report_only and not (Path(args.data) / "synthetic_meta.json").is_file():
        hint = (
            MEDIUM_DATA_COMMAND
            if args.scale == "medium"
            else f"python scripts/make_synthetic.py --out {args.data}"
        )
        raise SystemExit(f"{args.data}: no synthetic captures; run `{hint}` first")
    if args.fresh and not args.report_only:
        shutil.rmtree(work, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / f"{args.results_stem}.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    fill_from_store(results, args.store, args.scale)  # tables written before their runs' machines were kept
    command = " ".join(["python", "scripts/benchmark.py", *(sys.argv[1:] if argv is None else argv)])
    for name in [] if args.report_only else args.sections:
        compute, _, title = SECTIONS[name]
        print(f"[benchmark] {title} ...", flush=True)
        start = time.time()
        results[name] = {
            "result": compute(args, work),
            "seconds": time.time() - start,
            "command": command,
            "git": git_rev(),
            "machine": machine(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
    # Claims: every scale with results beside this one (the CPU and medium tables side by side).
    by_scale = {}
    for scale, stem in SCALE_STEMS.items():
        path = out / f"{stem}.json"
        if scale == args.scale:
            by_scale[scale] = results
        elif path.is_file() and scale != "paper":
            by_scale[scale] = json.loads(path.read_text())
            fill_from_store(by_scale[scale], args.store, scale)
    if args.scale != "paper" and "medium" not in by_scale:
        by_scale["medium"] = {}  # shown as "not run"
    results["claims"] = {
        "result": section_claims(by_scale),
        "seconds": 0.0,
        "command": command,
        "git": git_rev(),
        "machine": machine(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    atomic_write_text(results_path, json.dumps(results, indent=2))
    lines = [
        "# Benchmarks",
        "",
        "Produced by `python scripts/benchmark.py`; every row comes from the project's own "
        "entry scripts and configs. "
        + {
            "cpu": "Synthetic captures, CPU-sized models: a toy scale, not the paper's.",
            "medium": "Synthetic captures at the paper's x16 (LR 16 -> 256 px), "
            "subdivision 2, reduced schedules (docs/benchmark_protocol.md); GIIF fine-tuning in the reference's "
            "proportions: 4 rounds of 5 inner epochs at joint epochs 12, 14, 16, 18 of 24 (reference: 4 rounds of "
            "20 at 350, 400, 450, 500 of 620; `conf/synthetic/medium/srhand.conf`).",
            "paper": "Paper-preset synthetic captures, the paper's model sizes and " "schedules.",
        }[args.scale],
        "",
    ]
    for name in ORDER:
        entry = results.get(name)
        if entry is None:
            continue
        markdown, title = (claims_markdown, CLAIMS_TITLE) if name == "claims" else SECTIONS[name][1:]
        m = entry["machine"]
        lines += [
            f"## {title}",
            "",
            f"`{entry['command']}` at `{entry['git']}` on {entry['date']}, "
            f"{m.get('gpu') or m.get('cpu_model') or 'CPU'} ({m['cpu_count']} CPU cores, torch {m['torch']}), "
            f"{entry['seconds']:.0f} s.",
            "",
        ]
        lines += markdown(entry["result"]) + [""]
    md_path = out / f"{args.results_stem}.md"
    atomic_write_text(md_path, "\n".join(lines))
    print(f"[benchmark] wrote {md_path} and {results_path}")


if __name__ == "__main__":
    main()
