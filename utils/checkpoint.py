"""Checkpoints: atomic writes, self-describing contents, clear errors on load.

A checkpoint of this project is a dict (see ``docs/architecture.md``)::

    {
        "format": "srhand-checkpoint/1",
        "stage": "giif" | "disc" | "srhand",       # which entry script wrote it
        "model": {"name": str, "args": dict, "sd": state_dict},
        "optimizer": state_dict | None,
        "step": int, "epoch": int,
        "config": dict,                            # resolved config, plain data, for the record only
        ...                                        # more model entries (e.g. "disc") and extras
    }

Every model entry carries its own ``{"name", "args"}`` spec, so an evaluation rebuilds the network
from the checkpoint alone (``build_model``), never from the training config.

Run folders keep their checkpoints in ``<run_dir>/checkpoints/``: ``last.pth`` (rewritten atomically
during training) and optionally ``step_<8 digits>.pth`` snapshots. ``latest_checkpoint(run_dir)`` is
what ``--resume`` uses.

``atomic_write`` is the project's one writer of files: checkpoints, configs, ``metrics.json``, images,
meshes, data sets and reports all go through it (or ``atomic_write_text`` / ``atomic_write_bytes``;
``tests/test_atomic_writes.py`` finds any other write). Its temporary files are named
``.<name>.<random>.tmp`` (``TEMP_GLOB``), which is what ``utils.run_lock.remove_stale_temp_files`` removes
after a crash.

``torch`` is imported inside the functions, so ``utils.config`` can use ``atomic_write`` without it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from utils.errors import InputError

CHECKPOINT_FORMAT = "srhand-checkpoint/1"
TEMP_GLOB = ".*.tmp"  # the temporary files of atomic_write, ".<name>.<random>.tmp" beside the destination
_MODEL_ENTRY_KEYS = ("name", "args", "sd")


class CheckpointError(InputError):
    """A checkpoint is missing, unreadable, not one of ours, or does not fit the expected model."""


class WriteFailedError(OSError):
    """An atomic write failed (disk full, read-only or missing folder, no permission, ...).

    The destination keeps its previous content and the temporary file is removed. Not the user's input
    but theirs to fix: ``trainers.run.USER_ERRORS`` lists it, so the entry scripts report it in one line
    with exit status 2.
    """

    def __init__(self, path: Path, err: OSError):
        self.path = Path(path)
        reason = _WRITE_REASONS.get(err.errno, "")
        super().__init__(err.errno, f"cannot write {path}: {err.strerror or err}{reason}")

    def __str__(self) -> str:
        kept = "the previous version is unchanged" if self.path.exists() else "nothing was written there"
        return f"{self.strerror}; {kept}"


_WRITE_REASONS = {
    errno.ENOSPC: " (the disk is full: free space, or point --out at another disk, then resume)",
    errno.EDQUOT: " (disk quota exceeded)",
    errno.EROFS: " (read-only file system: pick a writable --out)",
    errno.EACCES: " (no write permission on the folder: pick a writable --out)",
    errno.EPERM: " (not permitted: pick a writable --out)",
}


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write a file so that readers see either the old content or the complete new one.

    The content goes to a temporary file in the same folder (same file system), is flushed and
    fsync'ed, then ``os.replace``d onto ``path``. If ``write`` raises (or the process dies), ``path``
    keeps its previous content and the temporary file is removed (on an exception).

    Args:
        path: destination; parent folders are created.
        write: called with the open temporary file object.
        mode: ``"wb"`` or ``"w"`` (text, UTF-8).

    Returns:
        the destination path.

    Raises:
        WriteFailedError: the folder cannot be created or written, or ``write``/``os.replace`` failed
            with an ``OSError`` (disk full, read-only); ``path`` is unchanged.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # TEMP_GLOB
    except OSError as err:
        raise WriteFailedError(path, err) from err
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(err, OSError) and not isinstance(err, WriteFailedError):
            raise WriteFailedError(path, err) from err
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """``atomic_write`` for a text file (UTF-8)."""
    return atomic_write(path, lambda handle: handle.write(text), mode="w")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """``atomic_write`` of ``data`` (an encoded image, a mesh, ...)."""
    return atomic_write(path, lambda handle: handle.write(data))


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (e.g. Windows), so best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temporary file in the same folder, fsync, replace)."""
    import torch

    def write(handle) -> None:
        try:
            torch.save(obj, handle)
        except RuntimeError as err:  # torch reports a failed write (e.g. disk full) as a RuntimeError
            if "writ" not in str(err).lower():
                raise
            raise OSError(errno.EIO, f"torch.save failed: {str(err).splitlines()[0]}") from err

    return atomic_write(path, write)


def model_entry(module, spec: dict | None = None) -> dict:
    """The ``{"name", "args", "sd"}`` entry for ``module``.

    Args:
        module: the network (unwrapped from DDP by the caller, or here if it has ``.module``).
        spec: its ``{"name", "args"}``; by default read from the module (``models.registry.model_spec``
            stores it on every registered network as ``_model_spec``).
    """
    module = getattr(module, "module", module)  # DistributedDataParallel -> the network
    if spec is None:
        spec = getattr(module, "_model_spec", None)
        if spec is None:
            raise CheckpointError(
                f"{type(module).__qualname__} carries no {{name, args}} spec (not built through "
                "models.registry); pass spec= explicitly"
            )
    return {"name": spec["name"], "args": dict(spec.get("args") or {}), "sd": module.state_dict()}


def make_checkpoint(
    stage: str,
    model: dict,
    *,
    optimizer: dict | None = None,
    step: int = 0,
    epoch: int = 0,
    config: dict | None = None,
    **extra: Any,
) -> dict:
    """Assemble a checkpoint dict in the layout described in the module docstring.

    Args:
        stage: ``"giif"``, ``"disc"`` or ``"srhand"``.
        model: the main model entry (``model_entry(net)``).
        optimizer: ``optimizer.state_dict()`` or None.
        step, epoch: training progress.
        config: the resolved config as plain data (``utils.config.conf_to_dict``).
        extra: further entries, e.g. ``disc=model_entry(discriminator)``, ``scheduler=...``.
    """
    _check_model_entry(model, "model", "<new checkpoint>")
    return {
        "format": CHECKPOINT_FORMAT,
        "stage": stage,
        "model": model,
        "optimizer": optimizer,
        "step": int(step),
        "epoch": int(epoch),
        "config": config or {},
        **extra,
    }


def load_checkpoint(
    path: str | Path,
    map_location: Any = "cpu",
    stage: str | Iterable[str] | None = None,
    weights_only: bool = True,
) -> dict:
    """Load and check a checkpoint written by ``save_atomic(make_checkpoint(...))``.

    Args:
        path: the ``.pth`` file.
        map_location: passed to ``torch.load`` (``"cpu"`` by default: move the model afterwards).
        stage: the stage(s) whose checkpoints are acceptable; None accepts any stage.
        weights_only: ``torch.load``'s safe mode (tensors and plain containers only). Our checkpoints
            load with it; set False only for a file you trust.

    Returns:
        the checkpoint dict.

    Raises:
        CheckpointError: the file is missing, unreadable, not a checkpoint of this project (e.g. the
            authors' whole pickled modules), or written by another stage.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        hint = " (it is a folder: pass the .pth file inside it)" if path.is_dir() else ""
        raise CheckpointError(f"no checkpoint at {path}{hint}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ... here
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        pickled_object = "Unsupported global" in str(err) or "GLOBAL" in str(err)
        hint = (
            " It pickles Python objects (a whole module or optimizer, as the authors' giif.pth/model.pth "
            "do) rather than state dicts, so it is not a checkpoint of this project."
            if pickled_object
            else " The file may be truncated or not a torch checkpoint."
        )
        raise CheckpointError(f"cannot read checkpoint {path}: {text}.{hint}") from err
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        found = sorted(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path} is not a checkpoint of this project: expected a dict with a 'model' entry "
            f"{{name, args, sd}}, found {found}"
        )
    _check_model_entry(ckpt["model"], "model", path)
    if stage is not None:
        accepted = [stage] if isinstance(stage, str) else list(stage)
        written_by = ckpt.get("stage")
        if written_by not in accepted:
            raise CheckpointError(
                f"{path} was written by the {written_by!r} stage (model {ckpt['model']['name']!r}); "
                f"this command expects a checkpoint of stage {' or '.join(map(repr, accepted))}"
            )
    return ckpt


def _check_model_entry(entry: Any, key: str, where: Any) -> None:
    if not isinstance(entry, dict) or any(k not in entry for k in _MODEL_ENTRY_KEYS):
        found = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise CheckpointError(
            f"{where}: entry {key!r} must be a dict with keys {list(_MODEL_ENTRY_KEYS)}, found {found}"
        )


def check_arch_matches(
    ckpt_spec: dict, expected_spec: dict, what: str = "model", defaults: dict | None = None
) -> None:
    """Raise if a checkpoint's ``{"name", "args"}`` differs from the expected architecture.

    Args:
        ckpt_spec: the checkpoint's model entry (or just its name/args).
        expected_spec: the spec built from the current config.
        what: label used in the message (e.g. ``"GIIF"``).
        defaults: the constructor defaults of the checkpoint's network (``models.registry.default_args``):
            an argument the checkpoint does not record (it was written before the argument existed) is
            read as its default, which is what ``build_model`` rebuilds it with. None: absent is a difference.

    Raises:
        CheckpointError: listing the name difference and every differing argument, one per line.
    """
    lines = []
    if ckpt_spec.get("name") != expected_spec.get("name"):
        lines.append(f"  name: checkpoint={ckpt_spec.get('name')!r}, expected={expected_spec.get('name')!r}")
    ckpt_args = ckpt_spec.get("args") or {}
    expected_args = expected_spec.get("args") or {}
    absent = object()
    defaults = defaults or {}
    for key in sorted(set(ckpt_args) | set(expected_args)):
        have, want = ckpt_args.get(key, absent), expected_args.get(key, absent)
        recorded = have is not absent
        if not recorded and key in defaults:
            have = defaults[key]
        if have != want:
            have, want = ("<absent>" if v is absent else repr(v) for v in (have, want))
            if not recorded and key in defaults:
                have += (
                    " (not recorded: the checkpoint predates the argument, so it is built with its default)"
                )
            lines.append(f"  {key}: checkpoint={have}, expected={want}")
    if lines:
        raise CheckpointError(
            f"the {what} checkpoint has a different architecture than expected:\n" + "\n".join(lines)
        )


def build_model(ckpt: dict, make: Callable[..., Any], key: str = "model", strict: bool = True):
    """Rebuild the network of ``ckpt[key]`` from its own spec and load its weights.

    Args:
        ckpt: a checkpoint dict (``load_checkpoint``).
        make: the registry's ``make({"name", "args"})`` (``models.registry.make``).
        key: which model entry (``"model"``, ``"disc"``, ...).
        strict: require the state dict to match exactly (default). With False, missing and unexpected
            keys are returned instead of being silently ignored.

    Returns:
        the module (on CPU, or wherever ``make`` puts it) when ``strict``; else
        ``(module, missing_keys, unexpected_keys)``.

    Raises:
        CheckpointError: no such entry, a spec this code cannot build, or weights that do not fit it.
    """
    if key not in ckpt:
        raise CheckpointError(f"checkpoint has no {key!r} entry (entries: {sorted(ckpt)})")
    entry = ckpt[key]
    _check_model_entry(entry, key, "checkpoint")
    try:
        module = make({"name": entry["name"], "args": entry["args"]})
    except (KeyError, TypeError, ValueError) as err:
        # an unknown name or arguments this code's constructor rejects: the file, not the code, is off
        raise CheckpointError(
            f"checkpoint entry {key!r}: this code cannot build {entry['name']!r} from the "
            f"entry's spec: {err}"
        ) from err
    own = module.state_dict()
    problems = []
    for name, tensor in entry["sd"].items():
        if name in own and tuple(own[name].shape) != tuple(tensor.shape):
            problems.append(f"  {name}: checkpoint {tuple(tensor.shape)}, model {tuple(own[name].shape)}")
    if problems:
        raise CheckpointError(
            f"checkpoint entry {key!r} ({entry['name']}) does not fit the network built from its own "
            "spec (was the model code changed?):\n" + "\n".join(problems)
        )
    result = module.load_state_dict(entry["sd"], strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if strict:
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint entry {key!r} ({entry['name']}) does not match the network: "
                f"missing {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
                f"unexpected {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}"
            )
        return module
    return module, missing, unexpected


def checkpoint_dir(run_dir: str | Path) -> Path:
    """``<run_dir>/checkpoints``."""
    return Path(run_dir) / "checkpoints"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint ``--resume`` continues from: ``last.pth``, else the highest ``step_*.pth``.

    Args:
        run_dir: the run folder (its ``checkpoints/`` subfolder is searched), or that subfolder.

    Returns:
        the path, or None when the folder holds no checkpoint.
    """
    run_dir = Path(run_dir)
    folder = run_dir if run_dir.name == "checkpoints" else checkpoint_dir(run_dir)
    if (folder / "last.pth").is_file():
        return folder / "last.pth"
    steps = []
    for candidate in folder.glob("step_*.pth"):
        match = re.fullmatch(r"step_(\d+)\.pth", candidate.name)
        if match:
            steps.append((int(match.group(1)), candidate))
    return max(steps)[1] if steps else None
