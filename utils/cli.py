"""Command lines of the three entry scripts (the authors' flags kept, plus a few of ours).

    args = build_parser("giif", __doc__).parse_args()
    conf = load_config(args.conf, args.overrides, schema="giif")
    device = resolve_device(args.device)

Flags by stage (``*`` = the authors' README flag):

=====================  ======  ======  ======  ==================================================
flag                   giif    disc    srhand  meaning
=====================  ======  ======  ======  ==================================================
``--conf`` *           yes     yes     yes     HOCON config (required)
``--eval`` *           yes     yes     yes     evaluate instead of training
``--model_path`` *     yes     yes     yes     giif/disc: GIIF checkpoint to start from or to
                                               evaluate; srhand: the experiment folder
``--model_path_disc`` *        yes             discriminator checkpoint to start from; with
                                               ``--eval``, the one evaluated beside GIIF
``--resume``, ``--r``  yes     yes     yes     resume the run folder from its last checkpoint;
                                               one flag, two spellings (``--r`` * is the
                                               authors' stage-3 flag)
``--implicit_path`` *                  yes     fine-tuned GIIF checkpoint (overrides the one in
                                               ``--model_path``)
``--save_vis`` *       yes     yes     yes     write visualisation images (and a GIF in srhand eval)
``--no_eval``          yes     yes             train without the evaluation at the end (srhand:
                                               ``eval.after_training``)
``--set KEY=VALUE``    yes     yes     yes     config override, repeatable (``args.overrides``)
``--out``              yes     yes     yes     run folder (default: from the config)
``--device``           yes     yes     yes     ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``
``--seed``             yes     yes     yes     random seed (default: the config's)
=====================  ======  ======  ======  ==================================================

The authors' ``--data_path`` (crashes in their code) and ``--use_liif`` (unused) are not kept.
"""

from __future__ import annotations

import argparse
import os
import re

from utils.errors import InputError

STAGES = ("giif", "disc", "srhand")
# The ``--set`` example of each stage's --help: a real key of that stage's schema (tests/test_cli.py).
SET_EXAMPLES = {"giif": "train.batch_size=4", "disc": "adv.adv_weight=0.1", "srhand": "train.epochs=100"}


def _device_name(text: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def build_parser(stage: str, description: str | None = None) -> argparse.ArgumentParser:
    """The ``argparse`` parser of an entry script.

    Args:
        stage: ``"giif"`` (main_giif.py), ``"disc"`` (main_disc.py) or ``"srhand"`` (main.py).
        description: shown by ``--help`` (the script's docstring).

    Returns:
        the parser; ``--set`` values are collected in ``args.overrides`` (a list, possibly empty).
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # a prefix (`--mod`) of a flag is an error, not a guess
    )
    parser.add_argument("--conf", required=True, help="HOCON config file")
    parser.add_argument("--eval", action="store_true", help="evaluate instead of training")
    if stage == "srhand":
        parser.add_argument(
            "--model_path",
            default=None,
            help="experiment folder: resumed with --r/--resume, evaluated with --eval "
            "(default: the run folder given by the config)",
        )
        parser.add_argument(
            "--implicit_path",
            default=None,
            help="fine-tuned GIIF checkpoint (default: the one saved in --model_path)",
        )
    else:
        parser.add_argument(
            "--model_path", default=None, help="GIIF checkpoint to initialise from (train) or to evaluate"
        )
        if stage == "disc":
            parser.add_argument(
                "--model_path_disc",
                default=None,
                help="discriminator checkpoint to initialise from; with --eval, a discriminator whose accuracy "
                "on the validation subjects (ground truth vs GIIF's SR) is added to metrics.json",
            )
    # Both spellings in every script: the authors wrote --r for main.py and --resume for stages 1-2.
    where = "--out, else --model_path, else" if stage == "srhand" else "--out, else"
    parser.add_argument(
        *(("--r", "--resume") if stage == "srhand" else ("--resume", "--r")),
        dest="resume",
        action="store_true",
        help=f"continue the run folder ({where} the config's <out_root>/<exp_name>) from its last "
        "checkpoint (<run>/checkpoints/last.pth); --r and --resume mean the same",
    )
    parser.add_argument("--save_vis", action="store_true", help="write visualisation images")
    if stage != "srhand":  # main.py has eval.after_training
        parser.add_argument(
            "--no_eval",
            action="store_true",
            help="train without the evaluation at the end (no metrics.json; evaluate later with --eval)",
        )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config key, e.g. --set {SET_EXAMPLES[stage]} (repeatable; values are read as HOCON)",
    )
    parser.add_argument("--out", default=None, help="run folder (default: derived from the config)")
    parser.add_argument(
        "--device", type=_device_name, default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the config's)")
    return parser


def add_pose_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--inbetween`` and ``--pose_capture``, which refine a ``--poses`` source
    (``trainers.srhand.poses.resolve_poses``) in scripts/animate.py and scripts/export_avatar.py."""
    parser.add_argument(
        "--inbetween", type=int, default=4, help="poses between two capture frames (interpolate)"
    )
    parser.add_argument("--pose_capture", default=None, help="capture of a multi-capture MANO .json")


def add_trained_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data_path``, ``--mano_dir`` and ``--device`` of the scripts that read a trained stage-3 run
    (``trainers.srhand.animation.load_trained_avatar``, ``read_run_capture``)."""
    parser.add_argument(
        "--data_path", default=None, help="where the run's capture lies now (default: its config's)"
    )
    parser.add_argument("--mano_dir", default=None, help="hand model folder, when the recorded file is gone")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")


def resolve_device(name: str = "auto"):
    """The ``torch.device`` for a ``--device`` value.

    ``auto`` is CUDA when available, else CPU. Under ``torchrun`` (``LOCAL_RANK`` set), ``auto`` and
    ``cuda`` become ``cuda:<LOCAL_RANK>`` so that each process uses its own GPU.

    Raises:
        ValueError: CUDA was asked for but is not available, or the index does not exist.
    """
    import torch

    name = _device_name(name)
    if name == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if name == "auto" and not available:
        return torch.device("cpu")
    if not available:
        raise InputError(f"--device {name} was requested but CUDA is not available (use --device cpu)")
    index = int(os.environ.get("LOCAL_RANK", 0)) if name in ("auto", "cuda") else int(name.split(":")[1])
    count = torch.cuda.device_count()
    if index >= count:
        raise InputError(f"CUDA device {index} requested but only {count} visible")
    return torch.device("cuda", index)
