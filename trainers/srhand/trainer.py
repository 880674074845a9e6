"""Stage 3 of SRHand (``main.py``): reconstruct a hand avatar from LR captures, fine-tune GIIF with it.

One sequence seen by V cameras over F frames (``datasets.interhand``) is cropped to ``hr_size`` around
the MANO hand (``CaptureSequence.sample``); the LR inputs are ``degrade(MANO-masked HR, lr_size)``.
The supervision of the hand ("SR targets") comes from ``sr_source``: GIIF (stage 2, frozen or
adaptively fine-tuned), bicubic upsampling, or the HR images themselves.

Phases (``docs/srhand_model.md``, section "Trainer"):

1. ``albedo``: per-vertex albedo and per-camera SH of the first frame, template geometry;
2. ``sfs``: + per-vertex displacement (shape from shading), first frame;
3. ``train``: the pose-conditioned networks of ``models.avatar.HandAvatar`` over all frames, with the
   reconstruction losses of ``trainers.losses``; inside it, every ``finetune.update_term`` epochs of
   the configured window, a GIIF fine-tuning round (``finetune.inner_epochs`` passes over the frames:
   render the current hand, decode SR with gradient, ``finetune_losses``, step GIIF's optimiser),
   after which every SR target is regenerated.

Evaluation (``evaluate``) runs on frames (and optionally cameras) held out from fitting: rendered
PSNR/SSIM/perceptual against the ground-truth HR crops, SR metrics, P2P against ground-truth meshes,
and the inconsistency of the SR images across views and frames, all written to ``metrics.json``.

Checkpoints (``<run>/checkpoints/last.pth``, atomic) hold everything a resume needs: phase, epoch,
step, the avatar and its optimiser, the pre-phase tensors, the fine-tuned GIIF, its optimiser and the
initial values of its fine-tuned parameters. ``<run>/model.pth`` (avatar) and
``<run>/implicit_model.pth`` (fine-tuned GIIF, a stage-``giif`` checkpoint) keep the authors' names.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from models.avatar import HandAvatar
from trainers.srhand.evaluation import EvaluationMixin
from trainers.srhand.finetune import FinetuneMixin
from trainers.srhand.phases import PhasesMixin
from trainers.srhand.sequence import SequenceMixin
from trainers.srhand.setup import PHASES, SR_SOURCES, ModelsMixin
from trainers.srhand.state import StateMixin
from utils.config import ConfigError
from utils.run_logging import RunLogger


class SRHandTrainer(SequenceMixin, ModelsMixin, PhasesMixin, FinetuneMixin, StateMixin, EvaluationMixin):
    """SRHand reconstruction with adaptive GIIF fine-tuning. See the module docstring.

    Args:
        conf: validated config (schema ``conf/schema/srhand.conf``).
        run_dir: the run folder.
        device: torch device.
        logger: the run's ``RunLogger``.
    """

    stage = "srhand"

    def __init__(self, conf, run_dir: str | Path, device: torch.device | str, logger: RunLogger):
        self.conf = conf
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.log = logger
        self.seed = conf.get_int("seed")
        self.sr_source = conf.get_string("sr_source")
        if self.sr_source not in SR_SOURCES:
            raise ConfigError(f"sr_source must be one of {SR_SOURCES}, got {self.sr_source!r}")
        self.phase, self.epoch, self.step = PHASES[0], 0, 0
        self.avatar: HandAvatar | None = None
        self.giif = None
        self.giif_orig = None
        self.disc = None
        self.giif_optimizer = None
        self.giif_initial: dict[str, torch.Tensor] = {}
        self.optimizer = None
        self.pre: dict[str, torch.Tensor] = {}
        self.pre_optimizer = None
        self.prephase_result: dict[str, torch.Tensor] = {}
        self.history: list[dict] = []
        self.timing: dict[str, list] = defaultdict(list)
        self.perceptual = None
        self._renderer = None
        self._epochs_this_run = 0
        self.mano_noise_mpjpe: dict[int, float] = {}  # frame id -> MPJPE (mm) of the perturbed parameters

    def train(self) -> dict:
        """Run (or continue) the phases until the end or ``stop_after_epochs``. Returns timings."""
        start, cpu_start = time.time(), time.process_time()
        while self.phase != "done":
            finished = {"albedo": self._run_prephase, "sfs": self._run_prephase, "train": self._run_train}[self.phase]()
            if not finished:
                self.save()
                self.log.info("stopped after %d epoch(s) in this run (stop_after_epochs) at phase %s, epoch %d; "
                              "continue with --r", self._epochs_this_run, self.phase, self.epoch)
                break
            self._next_phase()
            self.save()
        total = time.time() - start
        summary = self.timing_summary()
        summary["train_wall_s"] = total
        summary["train_cpu_s"] = time.process_time() - cpu_start  # all threads; less sensitive to other load
        self.log.info("training wall time %.1f s; %s", total,
                      ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if k not in ("train_wall_s", "train_cpu_s")))
        if self.run_dir.is_dir():
            (self.run_dir / "timing.json").write_text(json.dumps(summary, indent=2))
        return summary

    def timing_summary(self) -> dict:
        return {k: float(np.mean(v)) for k, v in self.timing.items() if v}
