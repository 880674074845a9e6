"""The run context of stage 3: what every phase reads and none changes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from trainers.srhand.settings import SRHandSettings, read_settings
from utils.run_logging import RunLogger


@dataclass(frozen=True, slots=True)
class RunContext:
    """The settings, the run folder, the device, the logger and the renderer of one ``main.py`` run.

    Attributes:
        settings: the config, read once (:mod:`trainers.srhand.settings`).
        conf: the resolved config tree itself, for the records (checkpoints) and the Goliath reader.
        run_dir: the run folder (checkpoints, meshes, pictures, ``metrics.json``).
        device: where the tensors and networks live.
        log: the run's logger (stdout, ``log.txt``, TensorBoard).
        seed: the seed of initialisation and of every per-epoch shuffle (the config's ``seed`` unless
            the command line gave another).
        renderer: the differentiable renderer (``utils.render.get_renderer("auto")``).
    """

    settings: SRHandSettings
    conf: object
    run_dir: Path
    device: torch.device
    log: RunLogger
    seed: int
    renderer: object

    @classmethod
    def create(
        cls, conf, run_dir: str | Path, device: torch.device | str, log: RunLogger, seed: int | None = None
    ) -> RunContext:
        """Read the settings of ``conf`` (validated against the srhand schema) and make the renderer."""
        from utils.render import get_renderer

        settings = read_settings(conf)
        return cls(
            settings=settings,
            conf=conf,
            run_dir=Path(run_dir),
            device=torch.device(device),
            log=log,
            seed=settings.seed if seed is None else int(seed),
            renderer=get_renderer("auto"),
        )
