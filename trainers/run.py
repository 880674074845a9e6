"""Shared start-up of the entry scripts: CLI -> config -> device/DDP -> run folder -> trainer.

Errors a user can fix (``utils.errors.InputError`` and its subclasses: config, checkpoints, MANO files,
data; missing files; a held run folder; a failed write; a non-finite loss) are printed as one clear message
and exit with status 2; set ``SRHAND_DEBUG=1`` to get the full traceback instead. Any other exception,
a plain ``ValueError``, ``KeyError`` or ``OSError`` included, is a bug and keeps its traceback.

Every invocation locks its run folder (``utils.run_lock``) before it writes anything there: a second
process on the same folder stops with the holder's pid; the lock of a killed run is taken over with a
warning, and the temporary files its interrupted atomic writes left are removed then.

The command line is parsed before anything heavy is imported (``--help`` answers without torch), and the
inputs that can be checked cheaply (the data folder, every checkpoint the command line or the config names,
a checkpoint to resume from) are checked before the run folder is created (:func:`check_inputs`), so a run
that cannot start leaves no folder behind.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from utils.checkpoint import CheckpointError, WriteFailedError, latest_checkpoint
from utils.cli import build_parser, resolve_device
from utils.config import ConfigError, config_origin, load_config, missing_data_path_error, save_resolved
from utils.errors import InputError
from utils.run_lock import RunLock, RunLockError, remove_stale_temp_files
from utils.run_logging import NonFiniteLossError

# Exceptions that mean "the user has something to fix", reported in one line without a traceback. Not
# ValueError, KeyError or OSError in general: raised by a bug, those must show where.
USER_ERRORS: tuple[type[BaseException], ...] = (
    InputError,
    FileNotFoundError,
    RunLockError,
    WriteFailedError,
    NonFiniteLossError,
)


@dataclass(frozen=True)
class RunSetup:
    """What :func:`setup` prepared for one invocation; :func:`close_run` ends it.

    Attributes:
        args: the parsed command line. conf: the validated config.
        seed: ``--seed``, or the config's ``seed`` when the flag is not given.
        run_dir: the run folder. device: this process's torch device.
        logger: the run's ``RunLogger``. lock: the run folder's lock (held by the main rank only).
    """

    args: argparse.Namespace
    conf: object
    seed: int
    run_dir: Path
    device: object
    logger: object
    lock: RunLock


def parse_args(stage: str, description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The entry script's command line (``utils.cli.build_parser``); ``--help`` exits here."""
    parser = build_parser(stage, description)
    args = parser.parse_args(argv)
    if getattr(args, "no_eval", False) and args.eval:
        parser.error("--no_eval skips the evaluation after training; it cannot go with --eval")
    return args


def run_folder(stage: str, args: argparse.Namespace, conf) -> Path:
    """The run folder: ``--out``; for main.py the ``--model_path`` folder (the authors' ``--eval --r
    --model_path FOLDER``; the folder of a ``model.pth`` given instead); else ``<out_root>/<exp_name>``."""
    if args.out:
        return Path(args.out)
    if stage == "srhand" and args.model_path:
        path = Path(args.model_path)
        return path.parent if path.suffix == ".pth" else path
    return Path(conf.get_string("out_root")) / conf.get_string("exp_name")


def _require_file(path: str | Path, what: str, hint: str) -> None:
    path = Path(path)
    if not path.is_file():
        found = " (a folder: name the .pth file inside it)" if path.is_dir() else ""
        raise CheckpointError(f"{what} = {str(path)!r}: no such file{found}; {hint}")


def check_inputs(stage: str, args: argparse.Namespace, conf, run_dir: Path) -> None:
    """Check, before the run folder is created, what can be checked cheaply: the data folder, every checkpoint
    the command line or the config names, and a checkpoint to resume from.

    The trainers check the same again (and more: the files' contents) when they read them.

    Raises:
        InputError: ``data.data_path`` is not a folder (naming the environment variable that feeds it, if
            any). CheckpointError: a named checkpoint is missing, or ``--resume`` finds none. ConfigError:
            stage 3 needs a GIIF / discriminator checkpoint the config does not name.
    """
    dataset = conf.get_string("data.dataset") if stage == "srhand" else "interhand"
    if not Path(conf.get_string("data.data_path")).is_dir():
        raise missing_data_path_error(conf, dataset)
    if stage == "srhand":
        _check_srhand_inputs(args, conf, run_dir)
        return
    if args.eval:
        if stage == "disc" and args.model_path_disc:  # evaluated beside GIIF (DiscTrainer.judge_validation)
            _require_file(
                args.model_path_disc, "--model_path_disc", "pass a disc.pth written by main_disc.py"
            )
        _require_file(
            args.model_path or run_dir / "giif.pth",
            "--model_path" if args.model_path else "the run's GIIF",
            "pass --model_path with a giif.pth written by main_giif.py / main_disc.py",
        )
        check_checkpoint_residual(conf, args.model_path or run_dir / "giif.pth")
        return
    if args.resume:
        # The run continues from its own checkpoint; --model_path / --model_path_disc only started it.
        if latest_checkpoint(run_dir) is None:
            raise CheckpointError(
                f"--resume: no checkpoint in {run_dir / 'checkpoints'} (nothing to resume): start the run "
                "without --resume, or pick its folder with --out"
            )
        return
    if args.model_path:
        _require_file(
            args.model_path, "--model_path", "pass a giif.pth written by main_giif.py / main_disc.py"
        )
        check_checkpoint_residual(conf, args.model_path)
    if stage == "disc":
        if not args.model_path:
            giif_model = conf.get_string("giif_model")
            if not giif_model:
                raise InputError(
                    "main_disc.py starts from a stage-1 GIIF: pass --model_path RUN/giif.pth "
                    "(written by main_giif.py) or set giif_model in the config"
                )
            _require_file(giif_model, "giif_model", "set it to a giif.pth written by main_giif.py")
            check_checkpoint_residual(conf, giif_model)
        if args.model_path_disc:
            _require_file(
                args.model_path_disc, "--model_path_disc", "pass a disc.pth written by main_disc.py"
            )


def check_checkpoint_residual(conf, path: str | Path) -> None:
    """``model.args.residual`` of a GIIF/LIIF config against the checkpoint it starts from or evaluates (a
    checkpoint without the key predates it and is ``none``), before the run folder exists; the trainer's
    architecture check compares every other argument when it builds the model.

    Raises:
        ConfigError: the two differ, naming both values and how to fix it.
        CheckpointError: the file is not a checkpoint of this project.
    """
    from utils.checkpoint import load_checkpoint

    args = conf.get("model.args", None) or {}
    want = args.get("residual", "none")
    entry = load_checkpoint(path)["model"]
    have = entry["args"].get("residual")
    if (have or "none") == want:
        return
    origin = config_origin(conf, "model.args.residual") if "residual" in args else "the default"
    recorded = repr(have) if have else "'none' (it does not record model.residual: it predates the option)"
    raise ConfigError(
        f"model.args.residual = {want!r} (from {origin}) but the GIIF checkpoint {path} was trained with "
        f"residual {recorded}: set model.args.residual = {have or 'none'} (--set model.args.residual="
        f"{have or 'none'}) or pick a checkpoint trained with residual {want!r}"
    )


def _check_srhand_inputs(args: argparse.Namespace, conf, run_dir: Path) -> None:
    """main.py's part of :func:`check_inputs` (the rules of ``trainers.srhand.bundle.load_giif`` / ``load_disc``
    and ``trainers.srhand.state.read_model_checkpoint``, for existence only)."""
    if args.implicit_path:
        _require_file(
            args.implicit_path, "--implicit_path", "pass a giif.pth written by main_giif.py / main_disc.py"
        )
    if args.eval:
        model = Path(args.model_path) if args.model_path else run_dir
        _require_file(
            model / "model.pth" if model.suffix != ".pth" else model,
            "--model_path" if args.model_path else "the run's avatar",
            "pass --model_path with the folder of a main.py run (its model.pth)",
        )
        return
    from trainers.srhand.settings import read_settings

    read_settings(conf)  # the settings' own checks (e.g. refinement on one frame), before the run folder
    if args.resume and latest_checkpoint(run_dir) is None:
        raise CheckpointError(
            f"--r: no checkpoint in {run_dir / 'checkpoints'} (nothing to resume): start the run without --r, "
            "or pick its folder with --model_path / --out"
        )
    _check_mask_source(conf)
    sr_source = conf.get_string("sr_source")
    if sr_source in ("giif", "giif_finetuned") and not args.implicit_path:
        giif_model = conf.get_string("giif_model")
        if not giif_model:
            raise ConfigError(
                f"sr_source = {sr_source!r} needs a GIIF checkpoint: set giif_model "
                "(main_disc.py's giif.pth) or pass --implicit_path"
            )
        _require_file(giif_model, "giif_model", "train GIIF with main_giif.py / main_disc.py first")
    if sr_source == "giif_finetuned":
        disc_model = conf.get_string("disc_model")
        if disc_model:
            _require_file(disc_model, "disc_model", "set it to a disc.pth written by main_disc.py")
        elif conf.get_float("finetune.weights.disc") > 0:
            raise ConfigError(
                "finetune.weights.disc > 0 needs the stage-2 discriminator: set disc_model "
                "(main_disc.py's disc.pth), or set finetune.weights.disc = 0"
            )


def _check_mask_source(conf) -> None:
    """``data.mask_source = capture`` on an InterHand-layout capture without segmentation files (Goliath's
    cameras without one are dropped by its reader). The reader checks each selected image again."""
    if conf.get_string("data.mask_source") != "capture" or conf.get_string("data.dataset") != "interhand":
        return
    from datasets.interhand import sequence_dir

    folder = Path(
        sequence_dir(
            conf.get_string("data.data_path"),
            conf.get_string("data.split"),
            conf.get_string("data.capture"),
            conf.get_string("data.sequence"),
        )
    )
    if not any(folder.glob("*/mask*.png")):
        raise InputError(
            f"data.mask_source = capture but {folder} holds no foreground segmentation of its own "
            "(cam*/mask<frame>.png beside the images; InterHand2.6M has none): use data.mask_source = dilated "
            "(or mano), or generate synthetic captures with --segmentation"
        )


def setup(stage: str, args: argparse.Namespace, argv: Sequence[str] | None = None) -> RunSetup:
    """Load and validate the config, check the inputs, initialise devices/DDP, the run folder and logger.

    Args:
        stage: ``giif``, ``disc`` or ``srhand``.
        args: the parsed command line (:func:`parse_args`).
        argv: the command line recorded in ``command.txt`` (default: ``sys.argv``).

    Returns:
        the :class:`RunSetup`; the caller ends the run with ``close_run(run)``, which releases its lock.
    """
    conf = load_config(args.conf, args.overrides, schema=stage)
    run_dir = run_folder(stage, args, conf)
    check_inputs(stage, args, conf, run_dir)

    import torch

    from utils import dist
    from utils.run_logging import RunLogger

    seed = conf.get_int("seed") if args.seed is None else args.seed
    info = dist.init_distributed(resolve_device(args.device))
    torch.manual_seed(seed)  # identical on every rank: DDP replicas start from the same weights
    lock = RunLock(run_dir)
    stale_warnings: list[str] = []
    if dist.is_main():  # one lock per run: the DDP ranks of this run share the folder
        lock.acquire(warn=stale_warnings.append)
    try:
        logger = RunLogger(run_dir, use_tensorboard=conf.get_bool("use_tensorboard"))
        for message in stale_warnings:
            logger.warning("%s", message)
        if stale_warnings:
            removed = remove_stale_temp_files(run_dir)
            if removed:
                logger.warning(
                    "removed %d temporary file(s) of interrupted writes: %s",
                    len(removed),
                    ", ".join(str(p.relative_to(run_dir)) for p in removed),
                )
        if dist.is_main():
            # An evaluation records its own config beside the run's, never over the training record.
            record_dir = run_dir / "eval" if args.eval else run_dir
            save_resolved(conf, record_dir, [sys.executable, *sys.argv] if argv is None else list(argv))
    except BaseException:
        lock.release()
        raise
    logger.info("%s: run folder %s, device %s, world size %d", stage, run_dir, info.device, info.world_size)
    return RunSetup(
        args=args, conf=conf, seed=seed, run_dir=run_dir, device=info.device, logger=logger, lock=lock
    )


def close_run(run: RunSetup) -> None:
    """Close the run's logger and release its run-folder lock."""
    run.logger.close()
    run.lock.release()


def check_data_counts(conf, seq) -> None:
    """The srhand rules that need the data: fitting views and frames not above what ``seq`` holds.

    Raises:
        ConfigError: ``<key> = <value> in <file>: must be <= <available> (...)``, like the schema rules.
    """
    data = conf.get_config("data")
    errors = []
    checks = [
        ("data.num_views", not data.get_list("cameras"), seq.num_views, "usable colour cameras"),
        ("data.num_frames", not data.get_list("frame_ids"), seq.num_frames, "usable frames"),
    ]
    for key, applies, available, what in checks:
        value = conf.get_int(key)
        if applies and value > available:
            errors.append(
                f"{key} = {value} in {config_origin(conf, key)}: must be <= {available} "
                f"(the {what} of {seq.name} in {data.get_string('data_path')})"
            )
    if errors:
        raise ConfigError("\n  ".join(["the config asks for more than the data holds:", *errors]))


def main_guard(body: Callable[[], object]) -> int:
    """Run ``body`` and turn ``USER_ERRORS`` into a one-line message (exit 2) unless ``SRHAND_DEBUG`` is set.

    Returns:
        0 when ``body`` returns, 2 for a user error; any other exception propagates with its traceback.
    """
    from utils import dist

    try:
        body()
        return 0
    except USER_ERRORS as err:
        if os.environ.get("SRHAND_DEBUG"):
            raise
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        print("(set SRHAND_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2
    finally:
        if "torch.distributed" in sys.modules:  # else no process group exists (e.g. after --help)
            dist.cleanup()


def run_sr_stage(stage: str, description: str, argv: Sequence[str] | None = None) -> dict | None:
    """``main_giif.py`` (stage ``giif``) and ``main_disc.py`` (stage ``disc``): train, or ``--eval``."""
    args = parse_args(stage, description, argv)  # before the imports below: --help needs no torch
    from trainers.disc_trainer import DiscTrainer
    from trainers.giif_trainer import GiifTrainer

    run = setup(stage, args, argv)
    conf, run_dir = run.conf, run.run_dir
    trainer = (DiscTrainer if stage == "disc" else GiifTrainer)(
        conf, run_dir, run.device, run.logger, seed=run.seed
    )
    try:
        if args.eval:
            trainer.build_data(train=False)
            trainer.build_model(args.model_path or str(run_dir / "giif.pth"))
            if stage == "disc" and args.model_path_disc:
                trainer.load_eval_disc(args.model_path_disc)
            return trainer.run_eval(save_vis=args.save_vis)
        trainer.build_data(train=True)
        model_path = args.model_path
        if stage == "disc" and not model_path:
            model_path = conf.get_string("giif_model") or None  # check_inputs: set unless resuming
        trainer.build_model(None if args.resume else model_path)
        if stage == "disc":
            trainer.build_disc(None if args.resume else args.model_path_disc)
        trainer.build_optim()
        if args.resume:
            trainer.resume()
        trainer.train()
        if args.no_eval:
            run.logger.info(
                "trained; no evaluation (--no_eval): run with --eval --model_path %s", run_dir / "giif.pth"
            )
            return None
        return trainer.run_eval(save_vis=args.save_vis)
    finally:
        close_run(run)


def run_srhand(description: str, argv: Sequence[str] | None = None) -> dict | None:
    """``main.py`` (stage ``srhand``): train (``--r`` / ``--resume`` resumes the run folder), then evaluate; or
    ``--eval`` of ``--model_path FOLDER`` (``--implicit_path`` overrides its fine-tuned GIIF)."""
    args = parse_args("srhand", description, argv)  # before the imports below: --help needs no torch
    from trainers.srhand import SRHandTrainer
    from utils import dist

    run = setup("srhand", args, argv)
    conf, run_dir, logger = run.conf, run.run_dir, run.logger
    try:
        if dist.world_size() > 1:
            raise InputError("main.py fits one sequence on one device: launch it without torchrun")
        trainer = SRHandTrainer(conf, run_dir, run.device, logger, seed=run.seed)
        if args.eval:
            return trainer.evaluate_saved(
                args.model_path or run_dir, args.implicit_path, save_vis=args.save_vis
            )
        if not args.resume and latest_checkpoint(run_dir) is not None:
            logger.warning(
                "%s already holds a checkpoint: starting a new run over it (pass --r to resume)", run_dir
            )
        fit = trainer.build_data()
        check_data_counts(conf, fit.seq)
        trainer.build_models(resume=args.resume, implicit_path=args.implicit_path)
        trainer.train()
        if trainer.state.phase == "done" and conf.get_bool("eval.after_training"):
            return trainer.evaluate_trained(save_vis=args.save_vis)
        return None
    finally:
        close_run(run)
