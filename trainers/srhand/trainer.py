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

Evaluation runs on frames (and optionally cameras) held out from fitting: rendered PSNR/SSIM/perceptual
against the ground-truth HR crops, SR metrics, P2P against ground-truth meshes, and the inconsistency of
the SR images across views and frames, all written to ``metrics.json``.

Checkpoints (``<run>/checkpoints/last.pth``, atomic) hold everything a resume needs: phase, epoch,
step, the avatar and its optimiser, the pre-phase tensors, the fine-tuned GIIF, its optimiser and the
initial values of its fine-tuned parameters. ``<run>/model.pth`` (avatar) and
``<run>/implicit_model.pth`` (fine-tuned GIIF, a stage-``giif`` checkpoint) keep the authors' names.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from trainers.srhand import phases
from trainers.srhand.bundle import SRHandModels, avatar_arguments, build_models
from trainers.srhand.context import RunContext
from trainers.srhand.evaluation import (
    FittedAvatar,
    evaluate_fit,
    load_fitted_avatar,
    select_evaluation,
    training_timing,
    write_metrics,
)
from trainers.srhand.finetune import GiifFeatureCache, feature_cache_for, finetune_step
from trainers.srhand.sequence import FitData, load_fit_data
from trainers.srhand.state import (
    FitProgress,
    FitRecord,
    TrainingState,
    read_resume_checkpoint,
    save_checkpoints,
)
from trainers.srhand.targets import SRTargets, make_targets
from utils.run_logging import RunLogger


class SRHandTrainer:
    """``main.py``'s stage 3 in the order of the paper's procedure, over the objects of this package.

    ``build_data`` reads the fit (:class:`FitData`), ``build_models`` builds the networks
    (:class:`SRHandModels`), the training state (:class:`TrainingState`, or the resumed one) and the SR
    targets (:class:`SRTargets`); ``train`` runs the phases; ``evaluate_trained`` / ``evaluate_saved``
    evaluate the avatar just trained or a saved one. Each object is built once and declared here.

    Args:
        conf: validated config (schema ``conf/schema/srhand.conf``).
        run_dir: the run folder.
        device: torch device.
        logger: the run's ``RunLogger``.
        seed: initialisation and shuffle seed (default: the config's ``seed``).
    """

    __slots__ = ("ctx", "fit", "models", "state", "targets", "record", "feature_cache")

    def __init__(
        self,
        conf,
        run_dir: str | Path,
        device: torch.device | str,
        logger: RunLogger,
        seed: int | None = None,
    ):
        self.ctx = RunContext.create(conf, run_dir, device, logger, seed)
        self.fit: FitData | None = None
        self.models: SRHandModels | None = None
        self.state: TrainingState | None = None
        self.targets: SRTargets | None = None
        self.record: FitRecord | None = None
        self.feature_cache: GiifFeatureCache | None = feature_cache_for(self.ctx.settings)

    # ------------------------------------------------------------------ set-up
    def build_data(self) -> FitData:
        """Read and crop the fitting frames and views."""
        self.fit = load_fit_data(self.ctx)
        return self.fit

    def build_models(self, resume: bool = False, implicit_path: str | None = None) -> None:
        """The networks, the training state (continued from ``checkpoints/last.pth`` with ``resume``) and the
        SR targets of the fit read by :meth:`build_data`."""
        ctx, fit = self.ctx, self.fit
        hand_model = fit.seq.hand_model()
        args = avatar_arguments(ctx, fit.tensors)
        ckpt = path = None
        if resume:
            ckpt, path = read_resume_checkpoint(ctx, fit, args)
        self.models = build_models(
            ctx, fit.tensors, hand_model, args, implicit_path=implicit_path, resume=ckpt
        )
        self.state = TrainingState.start(ctx.settings, self.models, fit.tensors.num_views)
        if ckpt is not None:
            self.state.restore(ckpt, ctx.settings, self.models)
            ctx.log.info(
                "resumed from %s: phase %s, epoch %d, step %d, %d fine-tuning round(s) done",
                path,
                self.state.phase,
                self.state.epoch,
                self.state.step,
                len(self.state.history),
            )
        self.record = FitRecord.of_fit(ctx.settings, fit, hand_model)
        s, data = ctx.settings, fit.tensors
        start = time.time()
        self.targets = make_targets(
            self.models.giif, self.models.giif_orig, s.sr_source, data, s.eval.batch_size, s.decode_chunk
        )
        self.state.timing["sr_generation_s"].append(time.time() - start)
        ctx.log.info(
            "SR targets (%s) for %d images in %.1f s",
            s.sr_source,
            data.num_frames * data.num_views,
            time.time() - start,
        )

    # ------------------------------------------------------------------ training
    def save(self) -> None:
        """Checkpoint the fit (:func:`trainers.srhand.state.save_checkpoints`)."""
        save_checkpoints(self.ctx, self.models, self.state, self.record)

    def train(self) -> dict:
        """Run (or continue) the phases until the end or ``stop_after_epochs``. Returns timings."""
        ctx, models, state = self.ctx, self.models, self.state
        data = self.fit.tensors
        start, cpu_start = time.time(), time.process_time()
        while state.phase != "done":
            if state.phase == "train":
                finished = phases.run_joint_phase(
                    ctx, models, data, self.targets, state, self.feature_cache, self.save
                )
            else:
                finished = phases.run_prephase(ctx, models, data, self.targets, state, self.save)
            if not finished:
                self.save()
                ctx.log.info(
                    "stopped after %d epoch(s) in this run (stop_after_epochs) at phase %s, epoch %d; "
                    "continue with --r",
                    state.epochs_this_run,
                    state.phase,
                    state.epoch,
                )
                break
            phases.advance_phase(ctx, models, state)
            self.save()
        total = time.time() - start
        summary = state.timing_summary()
        summary["train_wall_s"] = total
        summary["train_cpu_s"] = time.process_time() - cpu_start  # all threads; less sensitive to other load
        ctx.log.info(
            "training wall time %.1f s; %s",
            total,
            ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if k not in ("train_wall_s", "train_cpu_s")),
        )
        if ctx.run_dir.is_dir():
            from utils.checkpoint import atomic_write_text

            atomic_write_text(ctx.run_dir / "timing.json", json.dumps(summary, indent=2))
        return summary

    def enter_joint_phase(self) -> None:
        """Move a freshly built fit straight to the joint phase, as after the pre-phases (their result is the
        initial one): for the step benchmark and the GPU check."""
        phases.finish_prephase(self.ctx, self.models, self.state)
        self.state.phase, self.state.epoch = "train", 0
        self.state.make_phase_optimizer(self.ctx.settings, self.models)

    def train_step(self, frame: int, views: list[int], weights: dict, refine: bool | None = None) -> dict:
        """One joint step (:func:`trainers.srhand.phases.train_step`); ``refine`` (default: whether the fit has
        MANO refinement) moves the frame's MANO parameters too."""
        if refine is None:
            refine = self.models.mano is not None
        return phases.train_step(
            self.ctx, self.models, self.fit.tensors, self.targets, self.state, frame, views, weights, refine
        )

    def finetune_step(self, frame: int, views: list[int], weights: dict):
        """One GIIF fine-tuning step without pose-consistency history (:func:`.finetune.finetune_step`)."""
        return finetune_step(
            self.ctx,
            self.models,
            self.fit.tensors,
            self.targets,
            self.state,
            self.feature_cache,
            frame,
            views,
            weights,
            None,
            None,
        )

    # ------------------------------------------------------------------ evaluation
    def fitted_avatar(self) -> FittedAvatar:
        """The avatar trained in this process, with its GIIF and records, for :func:`evaluate`."""
        m = self.models
        return FittedAvatar(
            avatar=m.avatar,
            avatar_args=m.avatar_args,
            giif=m.giif,
            sr_source=self.ctx.settings.sr_source,
            record=self.record,
            progress=FitProgress.of_state(self.state),
            mano=m.mano,
        )

    def evaluate_trained(self, save_vis: bool = False, write: bool = True) -> dict:
        """Evaluate the avatar just trained (no reload); with ``write``, ``metrics.json`` and a table."""
        fitted = self.fitted_avatar()
        selection = select_evaluation(self.ctx, fitted.record, known_mpjpe=self.fit.noise_mpjpe)
        report = evaluate_fit(
            self.ctx, fitted, selection, save_vis=save_vis, timing=self.state.timing_summary() or None
        )
        if write:
            write_metrics(self.ctx, report)
        return report

    def evaluate_saved(
        self, model_path: str | Path, implicit_path: str | None = None, save_vis: bool = False
    ) -> dict:
        """``--eval``: evaluate the avatar of ``model_path`` (a run folder or its ``model.pth``), write
        ``metrics.json`` and a table."""
        fitted, folder = load_fitted_avatar(self.ctx, model_path, implicit_path)
        selection = select_evaluation(self.ctx, fitted.record)
        report = evaluate_fit(self.ctx, fitted, selection, save_vis=save_vis, timing=training_timing(folder))
        write_metrics(self.ctx, report)
        return report
