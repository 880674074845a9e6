"""The training state of stage 3 and the record of a fit, with their checkpoints.

:class:`TrainingState` is what the phases advance: phase, epoch, steps, the optimisers, the pre-phase
tensors and result, the fine-tuning history. :class:`FitRecord` says what was fitted (sequence, frames,
cameras, crops, MANO noise, SR source), :class:`FitProgress` how far; evaluation reads both, from the
training just done or from a saved ``model.pth``. Checkpoints (``<run>/checkpoints/last.pth``, ``model.pth``,
``implicit_model.pth``; atomic) are written by :func:`save_checkpoints` and read back by
:func:`read_resume_checkpoint`, which refuses a checkpoint of another fit.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.avatar import MEAN_HAND_ALBEDO_RGB
from trainers.srhand.bundle import SRHandModels
from trainers.srhand.context import RunContext
from trainers.srhand.sequence import FitData, SRHandInputError, camera_centres
from trainers.srhand.settings import SRHandSettings
from utils.checkpoint import (
    CheckpointError,
    checkpoint_dir,
    latest_checkpoint,
    load_checkpoint,
    make_checkpoint,
    model_entry,
    save_atomic,
)
from utils.config import conf_to_dict

STAGE = "srhand"
PHASES = ("albedo", "sfs", "train", "done")


@dataclass(slots=True)
class TrainingState:
    """Where a fit is and what it needs to continue; everything but ``timing`` and ``epochs_this_run`` is
    checkpointed.

    Attributes:
        phase: one of :data:`PHASES`. epoch: epochs done in the phase (``done`` keeps the last training
            epoch). step: optimiser steps of the avatar and pre-phase tensors. ft_step: GIIF fine-tuning steps.
        pre: the pre-phase tensors ``albedo_logits (V, 3)``, ``sh (num_views, 27)``, ``delta (V, 3)``.
        pre_optimizer: Adam over ``pre`` in the pre-phases, else None.
        optimizer: Adam over the avatar's parameters, from the joint phase on, else None.
        giif_optimizer: Adam over GIIF's fine-tuned parameters (``sr_source = giif_finetuned``), else None;
            it persists across rounds (reference).
        mano_optimizer: Adam over the MANO offsets (``refine.enabled``), from the joint phase on, else None.
        prephase_result: ``delta``, ``albedo``, ``sh`` at the end of the pre-phases (``{}`` before).
        history: one record per fine-tuning round (:func:`trainers.srhand.finetune.finetune_round`).
        timing: seconds of steps and target generations in this process, by name.
        epochs_this_run: epochs run in this process (``stop_after_epochs``).
    """

    pre: dict[str, torch.nn.Parameter]
    phase: str = PHASES[0]
    epoch: int = 0
    step: int = 0
    ft_step: int = 0
    pre_optimizer: torch.optim.Optimizer | None = None
    optimizer: torch.optim.Optimizer | None = None
    giif_optimizer: torch.optim.Optimizer | None = None
    mano_optimizer: torch.optim.Optimizer | None = None
    prephase_result: dict[str, torch.Tensor] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    timing: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    epochs_this_run: int = 0

    @classmethod
    def start(cls, settings: SRHandSettings, models: SRHandModels, num_views: int) -> TrainingState:
        """The state before the first epoch: the albedo pre-phase, pre-phase tensors at the mean hand colour,
        no lighting and no displacement, and GIIF's optimiser when it is fine-tuned."""
        avatar = models.avatar
        device = avatar.verts_template.device
        albedo0 = (
            torch.logit(torch.tensor(MEAN_HAND_ALBEDO_RGB, device=device)).expand(avatar.num_verts, 3).clone()
        )
        pre = {
            "albedo_logits": torch.nn.Parameter(albedo0),
            "sh": torch.nn.Parameter(torch.zeros(num_views, 27, device=device)),
            "delta": torch.nn.Parameter(torch.zeros(avatar.num_verts, 3, device=device)),
        }
        state = cls(pre=pre)
        if models.finetune_names:
            named = dict(models.giif.named_parameters())
            state.giif_optimizer = torch.optim.Adam(
                [named[n] for n in models.finetune_names], lr=settings.finetune.learning_rate
            )
        state.make_phase_optimizer(settings, models)
        return state

    def make_phase_optimizer(self, settings: SRHandSettings, models: SRHandModels) -> None:
        """Set ``pre_optimizer`` for a pre-phase; from the joint phase on, drop it and create ``optimizer``
        (once: it persists to the end)."""
        if self.phase == "albedo":
            a = settings.albedo
            self.pre_optimizer = torch.optim.Adam(
                [
                    {"params": [self.pre["albedo_logits"]], "lr": a.albedo_learning_rate},
                    {"params": [self.pre["sh"]], "lr": a.sh_learning_rate},
                ]
            )
        elif self.phase == "sfs":
            s = settings.sfs
            self.pre_optimizer = torch.optim.Adam(
                [
                    {"params": [self.pre["delta"]], "lr": s.delta_learning_rate},
                    {"params": [self.pre["albedo_logits"]], "lr": s.albedo_learning_rate},
                    {"params": [self.pre["sh"]], "lr": s.sh_learning_rate},
                ]
            )
        else:
            self.pre_optimizer = None
            if self.optimizer is None:
                self.optimizer = torch.optim.Adam(models.avatar.parameters(), lr=settings.train.learning_rate)
            if self.mano_optimizer is None and models.mano is not None:
                self.mano_optimizer = torch.optim.Adam(models.mano.parameter_groups(settings.refine))

    def timing_summary(self) -> dict[str, float]:
        """Mean seconds of each timed part of this process."""
        return {k: float(np.mean(v)) for k, v in self.timing.items() if v}

    def checkpoint_entries(self) -> dict:
        """What ``last.pth`` holds of the state, beside the avatar's optimiser (``optimizer``), step and epoch."""
        entries = {
            "phase": self.phase,
            "pre": {k: v.detach().clone() for k, v in self.pre.items()},
            "pre_optimizer": self.pre_optimizer.state_dict() if self.pre_optimizer is not None else None,
            "prephase_result": self.prephase_result,
            "history": self.history,
            "rng": torch.get_rng_state(),
            "ft_step": self.ft_step,
        }
        if self.giif_optimizer is not None:
            entries["giif_optimizer"] = self.giif_optimizer.state_dict()
        if self.mano_optimizer is not None:
            entries["mano_optimizer"] = self.mano_optimizer.state_dict()
        return entries

    def restore(self, ckpt: dict, settings: SRHandSettings, models: SRHandModels) -> None:
        """Continue from ``ckpt`` (``last.pth`` of this fit; its networks are already in ``models``): phase,
        epoch, steps, pre-phase tensors and result, history, every optimiser, the global RNG state."""
        device = models.avatar.verts_template.device
        self.phase, self.epoch, self.step = ckpt["phase"], ckpt["epoch"], ckpt["step"]
        with torch.no_grad():
            for key, value in ckpt["pre"].items():
                self.pre[key].copy_(value.to(device))
        self.prephase_result = {k: v.to(device) for k, v in (ckpt.get("prephase_result") or {}).items()}
        self.history = list(ckpt.get("history", []))
        self.ft_step = ckpt.get("ft_step", 0)
        self.optimizer = self.mano_optimizer = None
        self.make_phase_optimizer(settings, models)
        if self.mano_optimizer is not None and ckpt.get("mano_optimizer") is not None:
            self.mano_optimizer.load_state_dict(ckpt["mano_optimizer"])
        if self.pre_optimizer is not None and ckpt.get("pre_optimizer") is not None:
            self.pre_optimizer.load_state_dict(ckpt["pre_optimizer"])
        if self.optimizer is not None and ckpt.get("optimizer") is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.giif_optimizer is not None and "giif_optimizer" in ckpt:
            self.giif_optimizer.load_state_dict(ckpt["giif_optimizer"])
        if "rng" in ckpt:
            torch.set_rng_state(ckpt["rng"])


@dataclass(frozen=True, slots=True)
class FitRecord:
    """What an avatar was fitted to, as its checkpoints record it (``sr_source``, ``hand``, ``fit`` entries).

    Attributes:
        sr_source: the supervision it was fitted with. hand_side: ``right`` or ``left``.
        model_file: the hand model file. sequence: the capture sequence's name.
        frame_ids: the fitting frames. cameras: the fitting cameras' names.
        camera_centres: ``(V, 3)`` world centres (metres) of the fitting cameras.
        hr_size, lr_size: the crop and LR sides (pixels). degradation: HR -> LR.
        mano_noise: ``data.mano_noise`` as recorded (``{}`` without noise).
        data_report: what the reader and the preparation left out or flagged (cameras, frames, black
            views, the hand model; :class:`trainers.srhand.sequence.FitData`), None in checkpoints written
            before it was recorded.
    """

    sr_source: str
    hand_side: str
    model_file: str
    sequence: str
    frame_ids: list
    cameras: list
    camera_centres: torch.Tensor
    hr_size: int
    lr_size: int
    degradation: str
    mano_noise: dict
    data_report: dict | None = None

    @classmethod
    def of_fit(cls, settings: SRHandSettings, fit: FitData, hand_model) -> FitRecord:
        """The record of a fit of ``fit`` with ``settings`` and ``hand_model``."""
        d = fit.tensors
        return cls(
            sr_source=settings.sr_source,
            hand_side=fit.seq.hand_side,
            model_file=str(getattr(hand_model, "source_path", "")),
            sequence=fit.seq.name,
            frame_ids=list(d.frame_ids),
            cameras=list(d.camera_names),
            camera_centres=camera_centres(d.R, d.t).cpu(),
            hr_size=int(d.size[0]),
            lr_size=settings.data.lr_size,
            degradation=settings.data.degradation,
            mano_noise=settings.data.mano_noise.record(),
            data_report=fit.report,
        )

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> FitRecord:
        """The record a stage-3 checkpoint (``model.pth`` or ``last.pth``) carries."""
        fit = ckpt["fit"]
        return cls(
            sr_source=ckpt.get("sr_source"),
            hand_side=ckpt["hand"]["side"],
            model_file=ckpt["hand"].get("model_file", ""),
            sequence=fit["sequence"],
            frame_ids=list(fit["frame_ids"]),
            cameras=list(fit["cameras"]),
            camera_centres=fit["camera_centres"],
            hr_size=fit["hr_size"],
            lr_size=fit["lr_size"],
            degradation=fit["degradation"],
            mano_noise=fit.get("mano_noise", {}),
            data_report=fit.get("data_report"),
        )

    def provenance(self) -> dict:
        """The checkpoint entries ``sr_source``, ``hand`` and ``fit``."""
        return {
            "sr_source": self.sr_source,
            "hand": {"side": self.hand_side, "model_file": self.model_file},
            "fit": {
                "sequence": self.sequence,
                "frame_ids": list(self.frame_ids),
                "cameras": list(self.cameras),
                "camera_centres": self.camera_centres,
                "hr_size": self.hr_size,
                "lr_size": self.lr_size,
                "degradation": self.degradation,
                "mano_noise": self.mano_noise,
                **({"data_report": self.data_report} if self.data_report is not None else {}),
            },
        }


@dataclass(frozen=True, slots=True)
class FitProgress:
    """How far a fit went: the phase and epoch it stopped at, its fine-tuning rounds."""

    epoch: int
    phase: str | None
    history: list

    @classmethod
    def of_state(cls, state: TrainingState) -> FitProgress:
        return cls(epoch=state.epoch, phase=state.phase, history=list(state.history))

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> FitProgress:
        return cls(epoch=ckpt["epoch"], phase=ckpt.get("phase"), history=list(ckpt.get("history", [])))


def save_checkpoints(ctx: RunContext, models: SRHandModels, state: TrainingState, record: FitRecord) -> None:
    """Write ``checkpoints/last.pth`` (resumable); from the joint phase on also ``model.pth`` and
    ``implicit_model.pth`` (the authors' names), all atomic."""
    config = conf_to_dict(ctx.conf)
    extra = {**state.checkpoint_entries(), **record.provenance()}
    mano = models.mano_entry()
    if mano is not None:
        extra["mano_refinement"] = mano
    if models.giif is not None:
        extra["giif"] = model_entry(models.giif)
    if state.giif_optimizer is not None:
        extra["giif_initial"] = {k: v.detach().clone() for k, v in models.giif_initial().items()}
    save_atomic(
        make_checkpoint(
            STAGE,
            models.avatar_entry(),
            optimizer=state.optimizer.state_dict() if state.optimizer is not None else None,
            step=state.step,
            epoch=state.epoch,
            config=config,
            **extra,
        ),
        checkpoint_dir(ctx.run_dir) / "last.pth",
    )
    if state.phase in ("train", "done"):
        save_atomic(
            make_checkpoint(
                STAGE,
                models.avatar_entry(),
                step=state.step,
                epoch=state.epoch,
                config=config,
                phase=state.phase,
                history=state.history,
                **({"mano_refinement": mano} if mano is not None else {}),
                **record.provenance(),
            ),
            ctx.run_dir / "model.pth",
        )
        if models.mano is not None:
            write_refined_mano(ctx, models)
        if models.giif is not None:
            save_atomic(
                make_checkpoint(
                    "giif",
                    model_entry(models.giif),
                    step=state.step,
                    epoch=state.epoch,
                    config=config,
                    finetuned_by="srhand",
                    rounds=len(state.history),
                ),
                ctx.run_dir / "implicit_model.pth",
            )


def write_refined_mano(ctx: RunContext, models: SRHandModels) -> Path:
    """``<run>/refined_mano.json``: the refined MANO parameters of the fitting frames in InterHand2.6M's
    ``MANO_NeuralAnnot`` layout (:func:`trainers.srhand.refine.refined_mano_json`), atomic."""
    import json

    from trainers.srhand.refine import refined_mano_json
    from utils.checkpoint import atomic_write_text

    d = ctx.settings.data
    path = ctx.run_dir / "refined_mano.json"
    atomic_write_text(
        path, json.dumps(refined_mano_json(models.mano, d.capture, d.hand, models.mano.frame_ids))
    )
    return path


def read_resume_checkpoint(ctx: RunContext, fit: FitData, avatar_args: dict) -> tuple[dict, Path]:
    """``checkpoints/last.pth`` of the run folder, checked to belong to this fit (``--r``), and its path.

    Raises:
        FileNotFoundError: no checkpoint. SRHandInputError: unreadable, or made with other cameras,
            frames, hand, MANO noise, avatar settings or ``sr_source`` than this config.
    """
    path = latest_checkpoint(ctx.run_dir)
    if path is None:
        raise FileNotFoundError(f"--r: no checkpoint in {checkpoint_dir(ctx.run_dir)} (nothing to resume)")
    try:
        ckpt = load_checkpoint(path, stage=STAGE)
    except CheckpointError as err:
        raise SRHandInputError(str(err)) from None
    check_same_fit(ckpt, ctx.settings, fit, str(path))
    if ckpt["model"]["args"] != avatar_args:
        diff = sorted(
            k
            for k in set(ckpt["model"]["args"]) | set(avatar_args)
            if ckpt["model"]["args"].get(k) != avatar_args.get(k)
        )
        raise SRHandInputError(
            f"{path}: the avatar was built with other settings than this config "
            f"(differing: {diff}); resume with the run's own config"
        )
    if ckpt.get("sr_source") != ctx.settings.sr_source:
        raise SRHandInputError(
            f"{path} was trained with sr_source = {ckpt.get('sr_source')!r}, this config "
            f"has {ctx.settings.sr_source!r}"
        )
    return ckpt, path


def check_same_fit(ckpt: dict, settings: SRHandSettings, fit: FitData, where: str) -> None:
    """Raise ``SRHandInputError`` unless ``ckpt`` was fitted to the cameras, frames, hand and MANO noise of
    ``fit`` and ``settings``."""
    recorded = ckpt.get("fit", {})
    d = fit.tensors
    noise = settings.data.mano_noise.record()
    if recorded.get("cameras") != list(d.camera_names):
        raise SRHandInputError(
            f"{where} was fitted to cameras {recorded.get('cameras')}, this config selects {list(d.camera_names)} "
            "(data.cameras / data.num_views): resume with the run's own data settings"
        )
    if recorded.get("frame_ids") != list(d.frame_ids):
        raise SRHandInputError(
            f"{where} was fitted to frames {recorded.get('frame_ids')}, this config selects {list(d.frame_ids)} "
            "(data.num_frames / data.frame_ids)"
        )
    if ckpt.get("hand", {}).get("side") != fit.seq.hand_side:
        raise SRHandInputError(
            f"{where} is a {ckpt.get('hand', {}).get('side')} hand, data.hand = " f"{fit.seq.hand_side!r}"
        )
    if recorded.get("mano_noise", {}) != noise:
        raise SRHandInputError(
            f"{where} was fitted with data.mano_noise = {recorded.get('mano_noise', {})}, this "
            f"config has {noise}: resume with the run's own data settings"
        )


def read_model_checkpoint(model_path: str | Path) -> tuple[dict, Path]:
    """The ``model.pth`` of a run folder (or the file itself) for ``--eval``, and its path.

    Raises:
        FileNotFoundError: no ``model.pth`` there. SRHandInputError: not a stage-3 checkpoint.
    """
    folder = Path(model_path)
    path = folder / "model.pth" if folder.is_dir() else folder
    if not path.is_file():
        raise FileNotFoundError(f"--model_path {model_path}: no model.pth there (train with main.py first)")
    try:
        return load_checkpoint(path, stage=STAGE), path
    except CheckpointError as err:
        raise SRHandInputError(str(err)) from None
