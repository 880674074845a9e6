"""Checkpoint state of the SRHand stage: what a resume needs (phase, epoch, step, avatar and optimiser,
pre-phase tensors, fine-tuned GIIF with its optimiser and initial values), atomic saves, resume and
loading for evaluation, with checks that a checkpoint belongs to the same fit.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from trainers.srhand.sequence import SRHandInputError, camera_centres
from trainers.srhand.setup import AVATAR_NAME, build_avatar, check_hand_model
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


class StateMixin:
    """Methods of :class:`trainers.srhand.SRHandTrainer` (state); state lives on the trainer."""

    # ------------------------------------------------------------------ checkpoints
    def _avatar_entry(self) -> dict:
        return {"name": AVATAR_NAME, "args": copy.deepcopy(self.avatar_args), "sd": self.avatar.state_dict()}

    def _provenance(self) -> dict:
        d = self.data
        return {
            "sr_source": self.sr_source,
            "hand": {"side": self.seq.hand_side, "model_file": str(getattr(self.hand_model, "source_path", ""))},
            "fit": {"sequence": self.seq.name, "frame_ids": list(d.frame_ids), "cameras": list(d.camera_names),
                    "camera_centres": camera_centres(d.R, d.t).cpu(),
                    "hr_size": int(d.size[0]), "lr_size": self.conf.get_int("data.lr_size"),
                    "degradation": self.conf.get_string("data.degradation"), "mano_noise": self._mano_noise()},
        }

    def _state(self) -> dict:
        extra = {
            "phase": self.phase, "pre": {k: v.detach().clone() for k, v in self.pre.items()},
            "pre_optimizer": self.pre_optimizer.state_dict() if self.pre_optimizer is not None else None,
            "prephase_result": self.prephase_result, "history": self.history,
            "rng": torch.get_rng_state(), "ft_step": getattr(self, "ft_step", 0), **self._provenance(),
        }
        if self.giif is not None:
            extra["giif"] = model_entry(self.giif)
        if self.giif_optimizer is not None:
            extra["giif_optimizer"] = self.giif_optimizer.state_dict()
            extra["giif_initial"] = self.giif_initial
        return make_checkpoint(self.stage, self._avatar_entry(),
                               optimizer=self.optimizer.state_dict() if self.optimizer is not None else None,
                               step=self.step, epoch=self.epoch, config=conf_to_dict(self.conf), **extra)

    def save(self) -> None:
        """``checkpoints/last.pth`` (resumable); from the joint phase on also ``model.pth`` and
        ``implicit_model.pth`` (the authors' names), all atomic."""
        save_atomic(self._state(), checkpoint_dir(self.run_dir) / "last.pth")
        if self.phase in ("train", "done"):
            save_atomic(make_checkpoint(self.stage, self._avatar_entry(), step=self.step, epoch=self.epoch,
                                        config=conf_to_dict(self.conf), phase=self.phase, history=self.history,
                                        **self._provenance()),
                        self.run_dir / "model.pth")
            if self.giif is not None:
                save_atomic(make_checkpoint("giif", model_entry(self.giif), step=self.step, epoch=self.epoch,
                                            config=conf_to_dict(self.conf), finetuned_by="srhand",
                                            rounds=len(self.history)),
                            self.run_dir / "implicit_model.pth")

    def resume(self, implicit_path: str | None = None) -> None:
        """Continue from ``checkpoints/last.pth``: phase, epoch, step, every network and optimiser."""
        path = latest_checkpoint(self.run_dir)
        if path is None:
            raise FileNotFoundError(f"--r: no checkpoint in {checkpoint_dir(self.run_dir)} (nothing to resume)")
        try:
            ckpt = load_checkpoint(path, stage=self.stage)
        except CheckpointError as err:
            raise SRHandInputError(str(err)) from None
        self._check_same_fit(ckpt, str(path))
        if ckpt["model"]["args"] != self.avatar_args:
            diff = sorted(k for k in set(ckpt["model"]["args"]) | set(self.avatar_args)
                          if ckpt["model"]["args"].get(k) != self.avatar_args.get(k))
            raise SRHandInputError(f"{path}: the avatar was built with other settings than this config "
                                   f"(differing: {diff}); resume with the run's own config")
        if ckpt.get("sr_source") != self.sr_source:
            raise SRHandInputError(f"{path} was trained with sr_source = {ckpt.get('sr_source')!r}, this config "
                                   f"has {self.sr_source!r}")
        self.avatar.load_state_dict(ckpt["model"]["sd"])
        self.phase, self.epoch, self.step = ckpt["phase"], ckpt["epoch"], ckpt["step"]
        with torch.no_grad():
            for key, value in ckpt["pre"].items():
                self.pre[key].copy_(value.to(self.device))
        self.prephase_result = {k: v.to(self.device) for k, v in (ckpt.get("prephase_result") or {}).items()}
        self.history = list(ckpt.get("history", []))
        self.ft_step = ckpt.get("ft_step", 0)
        self.optimizer = None
        self._make_phase_optimizer()
        if self.pre_optimizer is not None and ckpt.get("pre_optimizer") is not None:
            self.pre_optimizer.load_state_dict(ckpt["pre_optimizer"])
        if self.optimizer is not None and ckpt.get("optimizer") is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.giif is not None and "giif" in ckpt:
            if implicit_path:
                self.log.warning("--implicit_path %s replaces the fine-tuned GIIF of %s", implicit_path, path)
            else:
                self.giif.load_state_dict(ckpt["giif"]["sd"])
        if self.giif_optimizer is not None and "giif_optimizer" in ckpt:
            self.giif_optimizer.load_state_dict(ckpt["giif_optimizer"])
            self.giif_initial = {k: v.to(self.device) for k, v in ckpt["giif_initial"].items()}
        if "rng" in ckpt:
            torch.set_rng_state(ckpt["rng"])
        self.log.info("resumed from %s: phase %s, epoch %d, step %d, %d fine-tuning round(s) done", path,
                      self.phase, self.epoch, self.step, len(self.history))

    def _check_same_fit(self, ckpt: dict, where: str) -> None:
        fit = ckpt.get("fit", {})
        d = self.data
        if fit.get("cameras") != list(d.camera_names):
            raise SRHandInputError(
                f"{where} was fitted to cameras {fit.get('cameras')}, this config selects {list(d.camera_names)} "
                "(data.cameras / data.num_views): resume with the run's own data settings")
        if fit.get("frame_ids") != list(d.frame_ids):
            raise SRHandInputError(
                f"{where} was fitted to frames {fit.get('frame_ids')}, this config selects {list(d.frame_ids)} "
                "(data.num_frames / data.frame_ids)")
        if ckpt.get("hand", {}).get("side") != self.seq.hand_side:
            raise SRHandInputError(f"{where} is a {ckpt.get('hand', {}).get('side')} hand, data.hand = "
                                   f"{self.seq.hand_side!r}")
        if fit.get("mano_noise", {}) != self._mano_noise():
            raise SRHandInputError(f"{where} was fitted with data.mano_noise = {fit.get('mano_noise', {})}, this "
                                   f"config has {self._mano_noise()}: resume with the run's own data settings")

    # ------------------------------------------------------------------ evaluation
    def load_for_eval(self, model_path: str | Path, implicit_path: str | None = None) -> None:
        """Load ``model_path/model.pth`` (avatar) and the fine-tuned GIIF for :meth:`evaluate`."""
        folder = Path(model_path)
        path = folder / "model.pth" if folder.is_dir() else folder
        if not path.is_file():
            raise FileNotFoundError(f"--model_path {model_path}: no model.pth there (train with main.py first)")
        try:
            ckpt = load_checkpoint(path, stage=self.stage)
        except CheckpointError as err:
            raise SRHandInputError(str(err)) from None
        self.eval_ckpt = ckpt
        self.model_folder = path.parent
        fitted_noise = ckpt.get("fit", {}).get("mano_noise", {})
        if fitted_noise != self._mano_noise():
            self.log.warning("%s was fitted with data.mano_noise = %s, evaluated with %s (set data.mano_noise to "
                             "evaluate on the parameters it was fitted with)", path, fitted_noise, self._mano_noise())
        side = ckpt["hand"]["side"]
        if side != self.conf.get_string("data.hand"):
            raise SRHandInputError(f"{path} is a {side} hand, data.hand = {self.conf.get_string('data.hand')!r}")
        self.hand_model = self._hand_model(side)
        self.avatar = build_avatar(ckpt["model"], self.hand_model).to(self.device).eval()
        self.avatar_args = ckpt["model"]["args"]
        check_hand_model(self.avatar, self.hand_model, torch.tensor(self.avatar_args["mean_shape"]), str(path))
        self.sr_source = ckpt.get("sr_source", self.sr_source)
        self.giif = None
        if implicit_path or self.sr_source in ("giif", "giif_finetuned"):
            gpath = implicit_path or str(path.parent / "implicit_model.pth")
            self.giif = self._load_giif(gpath, "--implicit_path" if implicit_path else "implicit_model.pth")
            if implicit_path and self.sr_source not in ("giif", "giif_finetuned"):
                self.sr_source = "giif_finetuned"
        self.log.info("evaluating %s (phase %s, epoch %d, sr_source %s)", path, ckpt.get("phase"), ckpt["epoch"],
                      self.sr_source)
