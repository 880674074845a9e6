"""Run logging: stdout, ``<run_dir>/log.txt`` and TensorBoard; progress bars; NaN/inf checks.

(Named ``run_logging`` rather than ``logging`` so that it can never shadow the standard library's
``logging`` module, e.g. when a file in ``utils/`` is run as a script.)

    log = RunLogger(run_dir)                 # rank 0 writes; other ranks print warnings only
    for step, batch in enumerate(log.progress(loader, "epoch 3")):
        losses = {"l1": ..., "perceptual": ...}
        check_finite(step, losses)
        log.log_losses(step, losses)
    log.close()
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from utils import dist

_FORMAT = "%(asctime)s %(levelname)s %(message)s"


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the step and every term."""


def _value(x: Any) -> float:
    """A Python float from a scalar tensor / number (mean of a non-scalar tensor)."""
    if hasattr(x, "detach"):
        x = x.detach()
        return float(x.float().mean()) if x.numel() != 1 else float(x)
    return float(x)


def check_finite(step: int, losses: Mapping[str, Any]) -> None:
    """Raise ``NonFiniteLossError`` if any loss term holds a NaN or an infinity.

    Args:
        step: the training step, for the message.
        losses: name -> tensor (any shape) or number.

    The check costs one device synchronisation; the per-term values are only read on failure.
    """
    import torch

    tensors = {k: v for k, v in losses.items() if hasattr(v, "detach")}
    numbers = {k: v for k, v in losses.items() if k not in tensors}
    bad = [k for k, v in numbers.items() if not math.isfinite(float(v))]
    if tensors:
        device = next(iter(tensors.values())).device
        flags = torch.stack([torch.isfinite(v.detach()).all().to(device) for v in tensors.values()])
        if not bool(flags.all()):
            bad += [k for k, ok in zip(tensors, flags.tolist(), strict=True) if not ok]
    if not bad:
        return
    bad_text = ", ".join(f"{k}={_value(losses[k])}" for k in losses if k in bad)
    rest = ", ".join(f"{k}={_value(losses[k]):.6g}" for k in losses if k not in bad)
    raise NonFiniteLossError(
        f"non-finite loss at step {step}: {bad_text}" + (f" (finite terms: {rest})" if rest else "")
    )


class RunLogger:
    """Logs to stdout, ``<run_dir>/log.txt`` and (optionally) TensorBoard ``<run_dir>/tensorboard``.

    Only the main process (rank 0) writes files and TensorBoard events and shows progress bars; the
    other ranks print warnings and errors to stderr, prefixed with their rank.

    Args:
        run_dir: the run folder (created on rank 0).
        use_tensorboard: write TensorBoard events (``torch.utils.tensorboard`` is imported here, lazily;
            if it cannot be imported a warning is logged and TensorBoard is skipped).
        name: the ``logging`` logger name (one logger per run folder).
        rank: this process's rank; by default from ``utils.dist``.
    """

    def __init__(
        self, run_dir: str | Path, use_tensorboard: bool = True, name: str = "srhand", rank: int | None = None
    ):
        self.run_dir = Path(run_dir)
        self.rank = dist.rank() if rank is None else rank
        self.is_main = self.rank == 0
        self.logger = logging.getLogger(f"{name}.{self.run_dir.resolve()}")
        self.logger.propagate = False
        self._drop_handlers()
        self.writer = None
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.logger.setLevel(logging.INFO)
            for handler in (logging.StreamHandler(sys.stdout), logging.FileHandler(self.run_dir / "log.txt")):
                handler.setFormatter(logging.Formatter(_FORMAT, "%Y-%m-%d %H:%M:%S"))
                self.logger.addHandler(handler)
            if use_tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError as err:
                    self.logger.warning("TensorBoard disabled: cannot import it (%s)", err)
                else:
                    self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        else:
            self.logger.setLevel(logging.WARNING)
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(f"[rank {self.rank}] {_FORMAT}"))
            self.logger.addHandler(handler)

    def _drop_handlers(self) -> None:
        for handler in list(self.logger.handlers):
            self.logger.removeHandler(handler)
            handler.close()

    def info(self, msg: str, *args: Any) -> None:
        self.logger.info(msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self.logger.warning(msg, *args)

    def error(self, msg: str, *args: Any) -> None:
        self.logger.error(msg, *args)

    def log_scalars(self, step: int, values: Mapping[str, Any], prefix: str = "") -> None:
        """Write ``values`` (name -> number or scalar tensor) to TensorBoard as ``prefix/name``."""
        if self.writer is None:
            return
        for key, value in values.items():
            self.writer.add_scalar(f"{prefix}/{key}" if prefix else key, _value(value), step)

    def log_losses(
        self, step: int, losses: Mapping[str, Any], prefix: str = "train", to_stdout: bool = True
    ) -> None:
        """Log every loss term by name: one line (stdout and log.txt) and TensorBoard scalars."""
        if not self.is_main:
            return
        values = {k: _value(v) for k, v in losses.items()}
        if to_stdout:
            self.logger.info(
                "%s step %d: %s", prefix, step, "  ".join(f"{k}={v:.5g}" for k, v in values.items())
            )
        self.log_scalars(step, values, prefix)

    def log_image(self, tag: str, image: Any, step: int) -> None:
        """Write an image to TensorBoard: ``(H, W, 3)`` numpy or ``(3, H, W)`` tensor, RGB in [0, 1]."""
        if self.writer is None:
            return
        import numpy as np

        if hasattr(image, "detach"):
            image = image.detach().float().cpu().numpy()
            dataformats = "CHW" if image.ndim == 3 else "HW"
        else:
            image = np.asarray(image, dtype=np.float32)
            dataformats = "HWC" if image.ndim == 3 else "HW"
        self.writer.add_image(tag, np.clip(image, 0.0, 1.0), step, dataformats=dataformats)

    def progress(self, iterable: Iterable, desc: str = "", enabled: bool = True, **tqdm_kwargs: Any):
        """``tqdm(iterable)``, shown on the main process when ``enabled`` (see ``progress``)."""
        return progress(iterable, desc, enabled and self.is_main, **tqdm_kwargs)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()
        for handler in self.logger.handlers:
            handler.flush()

    def close(self) -> None:
        """Flush and close TensorBoard and the log file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self._drop_handlers()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(iterable: Iterable, desc: str = "", enabled: bool = True, **tqdm_kwargs: Any):
    """A tqdm progress bar around ``iterable``, shown only on rank 0 and when ``enabled``.

    Always a ``tqdm`` object (disabled elsewhere), so callers may use ``update``/``set_postfix`` on
    every rank.
    """
    from tqdm import tqdm

    tqdm_kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, desc=desc, disable=not (enabled and dist.is_main()), **tqdm_kwargs)
