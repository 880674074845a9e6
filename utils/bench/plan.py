"""What the benchmark runs (``scripts/benchmark.py``): the configs and captures of each scale, the SR section's
jobs, the ``main.py`` rows of every table with their ``--set`` overrides, and the commands of both.

A job is ``(name, seed, run folder, command)``; the command is the entry script exactly as a user types it. The
runner (:mod:`utils.bench.runner`) executes jobs and keys them in the run store; the sections and tables live in
the script.
"""

from __future__ import annotations

import sys
from pathlib import Path

from utils.bench.runner import job_key, legacy_keys, output_refs

SR_SCALES = ("x4", "x8", "x12.8", "x16")


# ---------------------------------------------------------------------------------------------- SR
# Configs per scale: CPU-sized (the committed tables) and the paper's sizes on the paper-preset data.
CONFS = {
    "cpu": {
        "giif": "conf/synthetic/giif.conf",
        "liif": "conf/synthetic/liif.conf",
        "disc": "conf/synthetic/disc.conf",
        "srhand": "conf/synthetic/srhand.conf",
        "static": "conf/synthetic/srhand_static.conf",
    },
    "medium": {
        "giif": "conf/synthetic/medium/giif.conf",
        "liif": "conf/synthetic/medium/liif.conf",
        "disc": "conf/synthetic/medium/disc.conf",
        "srhand": "conf/synthetic/medium/srhand.conf",
    },
    "paper": {
        "giif": "conf/synthetic/paper/giif.conf",
        "liif": "conf/synthetic/paper/liif.conf",
        "disc": "conf/synthetic/paper/disc.conf",
        "srhand": "conf/synthetic/paper/srhand.conf",
    },
}
SCALE_DEFAULTS = {  # --data, --work, results file stem, SR steps, discriminator-stage steps (0 = the config's epochs)
    "cpu": ("data/synthetic", "outputs/benchmark", "results", 324, 108),
    "medium": ("data/synthetic_medium", "outputs/benchmark_medium", "results_medium", 324, 108),
    "paper": ("data/synthetic_paper", "outputs/benchmark_paper", "results_paper", 0, 0),
}
# The medium scale's captures (docs/benchmark_protocol.md): the paper preset's 256 px crops and x16, fewer
# views, frames and subjects.
DATA_ARGS = {
    "cpu": [],
    "medium": [
        "--preset",
        "paper",
        "--raw-size",
        "384",
        "256",
        "--num-views",
        "12",
        "--num-frames",
        "12",
        "--num-subjects",
        "6",
    ],
    "paper": ["--preset", "paper"],
}
MEDIUM_DATA_COMMAND = " ".join(
    ["python scripts/make_synthetic.py", *DATA_ARGS["medium"], "--out data/synthetic_medium"]
)
# Table 2's static captures: one pose, 40 fitting + 8 held-out cameras (conf/synthetic/srhand_static.conf).
STATIC_DATA_ARGS = [
    "--num-views",
    "40",
    "--num-heldout-views",
    "8",
    "--num-frames",
    "1",
    "--num-subjects",
    "3",
]
STATIC_FACTORS = (4, 16)  # x4 and x16, as the paper's Table 2
STATIC_KEYS = ["bicubic_ours", "liif_xhand", "srhand", "hr_ours"]
# Table 4(a)'s second identity: the reconstruction subject of captures generated with another seed (same settings).
IDENTITY_SEED = 1


def _steps_sets(steps: int) -> list[str]:
    return ["--set", f"train.max_steps={steps}", "--set", "train.epochs=1000"] if steps > 0 else []


def sr_jobs(args, work: Path) -> list[tuple[str, int, Path, list[str]]]:
    """(name, seed, run folder, command) of the SR section, in dependency order. Seed 0's folders are
    ``sr_<name>`` (the main.py sections' GIIF and LIIF), seed s's ``sr_<name>_s<s>``."""
    py, confs = sys.executable, CONFS[args.scale]
    data = ["--set", f"data.data_path={args.data}"]
    for item in getattr(args, "sr_set", None) or []:  # e.g. the stored tables' model.args.residual=none
        data += ["--set", item]
    jobs = []

    def add(name, seed, run_dir: Path, script: str, conf: str, steps: int, model=(), extra=()) -> None:
        cmd = [py, script, "--conf", conf, "--out", str(run_dir), *model, *data, *extra]
        jobs.append((name, seed, run_dir, [*cmd, "--set", f"seed={seed}", *_steps_sets(steps)]))

    for seed in args.sr_seeds:
        suffix = f"_s{seed}" if seed else ""
        for name in ("liif", "giif"):
            add(name, seed, work / f"sr_{name}{suffix}", "main_giif.py", confs[name], args.steps)
        # Stage 2 continues GIIF for disc_steps more steps; with the adversarial weight at 0 it gives the same
        # extra steps and schedule without the discriminator's gradient (GIIF + D compared at equal cost).
        giif = ["--model_path", str(work / f"sr_giif{suffix}" / "giif.pth")]
        for name, extra in (("disc", []), ("giif_noadv", ["--set", "adv.adv_weight=0.0"])):
            run_dir = work / f"sr_{name}{suffix}"
            add(name, seed, run_dir, "main_disc.py", confs["disc"], args.disc_steps, model=giif, extra=extra)
    return jobs


def sr_plan(args, work: Path) -> tuple[list[tuple], list[dict], dict]:
    """The SR jobs, their run-store keys and ``{checkpoint path: run:<key hash>}`` of their outputs."""
    jobs, keys, refs = sr_jobs(args, work), [], {}
    for _, seed, run_dir, cmd in jobs:
        keys.append(job_key(args, cmd, seed, refs))
        refs.update(output_refs(run_dir, keys[-1]))
    legacy_keys(args, keys)  # their version-1 twins, which the main.py rows' twins name
    return jobs, keys, refs


# ---------------------------------------------------------------------------------------------- SRHand
# Gaussian noise on the MANO parameters for Table 5: 9.6 mm MPJPE on the evaluated frames of the synthetic
# subject (the paper's 9.54 mm; 11.3 mm over all its frames); the measured MPJPE is reported with the row.
NOISE_SETS = [
    "data.mano_noise.pose_std=0.052",
    "data.mano_noise.trans_std=0.0045",
    "data.mano_noise.shape_std=0.3",
]
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
    "ft_con": (
        "w/ ftd.: L_con",
        ["sr_source=giif_finetuned", "finetune.weights.wavelet=0", "finetune.weights.disc=0"],
        "giif",
    ),
    "ft_con_wav": (
        "w/ ftd.: L_con + L_wave",
        ["sr_source=giif_finetuned", "finetune.weights.disc=0"],
        "giif",
    ),
    # Table 5: SRHand from noisy MANO parameters (fitting and evaluation), see data.mano_noise.
    "srhand_noisy": ("SRHand, noisy MANO parameters", ["sr_source=giif_finetuned", *NOISE_SETS], "giif"),
    # Joint MANO refinement (not in the paper; docs/srhand_model.md 6.5a), each against its row without it.
    "hr_ours_refine": ("hr + Ours, MANO refinement", ["sr_source=hr", "refine.enabled=true"], "giif"),
    "srhand_refine": (
        "SRHand, MANO refinement",
        ["sr_source=giif_finetuned", "refine.enabled=true"],
        "giif",
    ),
    "srhand_noisy_refine": (
        "SRHand, noisy MANO parameters, MANO refinement",
        ["sr_source=giif_finetuned", *NOISE_SETS, "refine.enabled=true"],
        "giif",
    ),
}
# Sections and SR seeds per scale when not given.
SCALE_SECTIONS = {"medium": ["sr", "srhand", "ablation"]}
SCALE_SR_SEEDS = {"cpu": [0, 1, 2], "medium": [0, 1, 2]}  # the paper scale (a GPU job): 0, 1
TABLES = {  # section -> (row keys, label overrides)
    "srhand": (
        ["bicubic_ours", "liif_xhand", "giif_xhand", "giif_ours", "ftd_xhand", "srhand", "hr_ours"],
        {},
    ),
    "ablation": (
        ["giif_ours", "ft_con", "ft_con_wav", "srhand"],
        {"giif_ours": "w/o ftd.", "srhand": "w/ ftd.: L_con + L_wave + L_D (SRHand)"},
    ),
    "noise": (["srhand_noisy", "srhand"], {"srhand": "SRHand, ground-truth MANO parameters"}),
    "refine": (
        ["hr_ours", "hr_ours_refine", "srhand", "srhand_refine", "srhand_noisy", "srhand_noisy_refine"],
        {"hr_ours": "hr + Ours", "srhand": "SRHand"},
    ),
    "identity": (["ftd_xhand", "srhand"], {"ftd_xhand": "XHand", "srhand": "Ours"}),
    "static": (STATIC_KEYS, {}),
}


PAPER_METHOD = [
    "refine.enabled=false"
]  # rows of the paper's method: the synthetic config refines the MANO fit


def srhand_jobs(
    args,
    work: Path,
    keys: list[str],
    check_models: bool = True,
    data: str | None = None,
    folder: str = "srhand",
    conf: str | None = None,
    extra: tuple[str, ...] = (),
) -> list[tuple[str, int, Path, list[str]]]:
    """(key, seed, run folder, command) of every run of ``keys`` x ``args.seeds``, on the captures ``data``
    (default ``args.data``), in ``work / folder``, from ``conf`` (default: the scale's srhand config) with
    the ``--set`` items ``extra`` after each row's own."""
    models_by_kind = {"giif": Path(args.giif_model), "liif": Path(args.liif_model)}
    jobs = []
    for key in keys:
        _, sets, kind = SRHAND_RUNS[key]
        model = models_by_kind[kind]
        if check_models and not model.is_file():
            raise SystemExit(
                f"{model}: no {kind.upper()} checkpoint for row {key!r}; run the SR section or "
                f"`make demo` first (or pass --{kind}_model)"
            )
        for seed in args.seeds:
            run_dir = work / folder / f"{key}_s{seed}"
            cmd = [
                sys.executable,
                "main.py",
                "--conf",
                conf or CONFS[args.scale]["srhand"],
                "--out",
                str(run_dir),
                "--set",
                f"data.data_path={data or args.data}",
                "--set",
                f"giif_model={model}",
                "--set",
                f"disc_model={Path(args.giif_model).parent / 'disc.pth'}",
                "--set",
                f"seed={seed}",
            ]
            paper = [] if any(item.startswith("refine.") for item in sets) else PAPER_METHOD
            for item in (*paper, *sets, *extra):
                cmd += ["--set", item]
            jobs.append((key, seed, run_dir, cmd))
    return jobs
