"""Sequence data of the SRHand stage: the frames and views a run fits, cropped, degraded and kept in memory.

``SequenceData`` holds the per-frame, per-view tensors (HR crops, LR inputs, masks, normal maps, cameras);
``prepare_sequence`` builds it from a ``CaptureSequence``; ``SequenceMixin`` gives the trainer its reading
of the configured capture (frame selection, MANO noise of paper Table 5).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from datasets.preprocess import degrade
from utils.config import ConfigError
from utils.geometry.camera import Cameras


class SRHandInputError(ValueError):
    """Inputs that do not fit together (data vs checkpoint, cameras, hand model); reported without a traceback."""


@dataclass
class SequenceData:
    """The prepared (frame, view) tensors of one sequence, on the training device.

    Images are stored in ``dtype`` (float16 on CPU by default) and returned as float32 by :meth:`get`.

    Attributes:
        frame_ids: F frame numbers. camera_names: V camera names.
        hr: ``(F, V, 3, H, W)`` HR crops masked by the MANO silhouette (the ground truth).
        mask: ``(F, V, 1, H, W)`` bool MANO silhouettes.
        normal: ``(F, V, 3, Hn, Wn)`` MANO normal maps (GIIF's geometric input).
        lr: ``(F, V, 3, h, w)`` float32 LR images, ``degrade(hr, lr_size)``.
        K: ``(F, V, 3, 3)`` cropped intrinsics (pixels of the H x W crop). R: ``(V, 3, 3)``. t: ``(V, 3)``.
        pose: ``(F, 48)``. shape: ``(F, 10)``. trans: ``(F, 3)`` metres.
        size: ``(H, W)``.
    """

    frame_ids: list
    camera_names: list
    hr: torch.Tensor
    mask: torch.Tensor
    normal: torch.Tensor
    lr: torch.Tensor
    K: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    pose: torch.Tensor
    shape: torch.Tensor
    trans: torch.Tensor
    size: tuple

    @property
    def num_frames(self) -> int:
        return len(self.frame_ids)

    @property
    def num_views(self) -> int:
        return len(self.camera_names)

    def cameras(self, frame: int, views: Sequence[int]) -> Cameras:
        """The cropped cameras of ``views`` in frame ``frame`` (float32, on the data's device)."""
        views = list(views)
        return Cameras(K=self.K[frame, views], R=self.R[views], t=self.t[views], image_size=self.size,
                       names=[self.camera_names[v] for v in views])

    def get(self, key: str, frame: int, views: Sequence[int]) -> torch.Tensor:
        """``key`` in (hr, mask, normal, lr) for ``views`` of ``frame``: float32 ``(B, C, H, W)``."""
        return getattr(self, key)[frame, list(views)].float()


def storage_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float32 if device.type == "cuda" else torch.float16
    if name not in ("float32", "float16"):
        raise ConfigError(f"data.storage must be auto, float32 or float16, got {name!r}")
    return getattr(torch, name)


def sample_frame(seq, frame: int, views: Sequence[int], dconf, with_raw: bool = False) -> dict:
    """Crop ``views`` of ``frame`` (``CaptureSequence.sample``) and stack them.

    Returns float32 CPU tensors: ``hr (B,3,H,W)`` (MANO-masked), ``mask (B,1,H,W)``, ``normal
    (B,3,Hn,Wn)``, ``K (B,3,3)``, ``R``, ``t``, ``lr (B,3,h,w)`` and with ``with_raw`` the unmasked crop
    ``raw``.
    """
    size = dconf.get_int("hr_size")
    samples = [
        seq.sample(frame, v, size=size, ratio=dconf.get_float("crop_ratio"),
                   normal_space=dconf.get_string("normal_space"), normal_size=dconf.get_int("normal_size"))
        for v in views
    ]
    mask = torch.stack([s["mask"] for s in samples])
    raw = torch.stack([s["image"] for s in samples])
    hr = raw * mask
    out = {
        "hr": hr, "mask": mask, "normal": torch.stack([s["normal_map"] for s in samples]),
        "K": torch.stack([s["K"] for s in samples]), "R": torch.stack([s["R"] for s in samples]),
        "t": torch.stack([s["t"] for s in samples]),
        "lr": degrade(hr, size=dconf.get_int("lr_size"), mode=dconf.get_string("degradation")),
    }
    if with_raw:
        out["raw"] = raw
    return out


def prepare_sequence(seq, dconf, device: torch.device, dtype: torch.dtype, progress=None) -> SequenceData:
    """Crop every (frame, view) of ``seq`` once and keep the tensors on ``device`` (see :class:`SequenceData`)."""
    frames = range(seq.num_frames)
    views = list(range(seq.num_views))
    parts = defaultdict(list)
    for f in (progress(frames, desc="prepare data") if progress else frames):
        s = sample_frame(seq, f, views, dconf)
        for key, value in s.items():
            parts[key].append(value)
    size = dconf.get_int("hr_size")
    return SequenceData(
        frame_ids=list(seq.frame_ids), camera_names=list(seq.camera_names),
        hr=torch.stack(parts["hr"]).to(device, dtype), mask=torch.stack(parts["mask"]).to(device).bool(),
        normal=torch.stack(parts["normal"]).to(device, dtype), lr=torch.stack(parts["lr"]).to(device),
        K=torch.stack(parts["K"]).to(device), R=parts["R"][0].to(device), t=parts["t"][0].to(device),
        pose=seq.mano_pose.to(device), shape=seq.mano_shape.to(device), trans=seq.mano_trans.to(device),
        size=(size, size),
    )


def camera_centres(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """World camera centres ``-R^T t`` ``(N, 3)`` of OpenCV extrinsics ``R (N,3,3)``, ``t (N,3)``."""
    return -torch.einsum("nji,nj->ni", R.double(), t.double()).float()


def synthetic_meta_entry(data_path: str, split: str, capture: str, sequence: str) -> dict | None:
    """The subject entry of ``<data_path>/synthetic_meta.json`` for this sequence, or None."""
    path = Path(data_path) / "synthetic_meta.json"
    if not path.is_file():
        return None
    meta = json.loads(path.read_text())
    for subject in meta.get("subjects", []):
        if (subject.get("split"), subject.get("capture"), subject.get("sequence")) == (split, capture, sequence):
            return subject
    return None


class SequenceMixin:
    """Methods of :class:`trainers.srhand.SRHandTrainer` (sequence); state lives on the trainer."""

    def _read_sequence(self, cameras, frame_ids=None, num_frames=None, frame_mode="strided"):
        from datasets.interhand import read_interhand_sequence

        d = self.conf.get_config("data")
        if d.get_string("dataset") == "goliath":  # one Goliath dome capture; MANO fitted, cached in the run
            from datasets.goliath import read_from_config

            return self._perturb_mano(read_from_config(self.conf, self.run_dir, cameras, frame_ids, num_frames,
                                                       frame_mode, log=self.log.info))
        root = d.get_string("data_path")
        if not Path(root).is_dir():
            raise FileNotFoundError(
                f"data.data_path = {root!r} is not a folder. Generate the synthetic captures with "
                "`python scripts/make_synthetic.py` or point data.data_path (or $SRHAND_DATA) at InterHand2.6M.")
        seq = read_interhand_sequence(
            root, d.get_string("split"), d.get_string("capture"), d.get_string("sequence"), hand=d.get_string("hand"),
            cameras=cameras, num_frames=num_frames, frame_mode=frame_mode, frame_ids=frame_ids,
            drop_cameras=tuple(d.get_list("drop_cam")), mano_dir=d.get_string("mano_dir") or None)
        return self._perturb_mano(seq)

    def _mano_noise(self) -> dict:
        n = self.conf.get_config("data.mano_noise")
        stds = {k: n.get_float(k) for k in ("pose_std", "shape_std", "trans_std")}
        for key, value in stds.items():
            if not value >= 0:
                raise ConfigError(f"data.mano_noise.{key} must be >= 0, got {value}")
        return {**stds, "seed": n.get_int("seed")} if any(stds.values()) else {}

    def _perturb_mano(self, seq):
        """``data.mano_noise``: the sequence with noisy MANO parameters (paper Table 5); records the MPJPE."""
        from datasets.capture import hand_joints, perturb_mano
        from utils.metrics.geometry import mpjpe_mm

        noise = self._mano_noise()
        if not noise:
            return seq
        noisy = perturb_mano(seq, **noise)
        errors = mpjpe_mm(hand_joints(noisy), hand_joints(seq))
        self.mano_noise_mpjpe.update({int(f): float(e) for f, e in zip(seq.frame_ids, errors)})
        self.log.warning("data.mano_noise %s: MANO parameters of %d frames of %s perturbed, MPJPE %.2f mm",
                         noise, seq.num_frames, seq.name, float(errors.mean()))
        return noisy

    def mano_noise_report(self, fit_frames: Sequence[int], eval_frames: Sequence[int]) -> dict | None:
        """The noise settings and the MPJPE (mm) of the perturbed parameters on the fitting and evaluated frames."""
        noise = self._mano_noise()
        if not noise:
            return None

        def mean(frames):
            values = [self.mano_noise_mpjpe[int(f)] for f in frames if int(f) in self.mano_noise_mpjpe]
            return float(np.mean(values)) if values else None

        return {**noise, "mpjpe_mm": mean(eval_frames), "mpjpe_mm_fit": mean(fit_frames)}

    # ------------------------------------------------------------------ data
    def build_data(self) -> SequenceData:
        """Read the fitting frames and views and crop them (``self.data``)."""
        d = self.conf.get_config("data")
        cameras = [str(c) for c in d.get_list("cameras")] or d.get_int("num_views")
        frame_ids = [int(f) for f in d.get_list("frame_ids")] or None
        seq = self._read_sequence(cameras, frame_ids=frame_ids,
                                  num_frames=None if frame_ids else d.get_int("num_frames"))
        if isinstance(cameras, int) and seq.num_views < cameras:
            raise SRHandInputError(f"data.num_views = {cameras} but {seq.name} has only {seq.num_views} usable "
                                   f"colour cameras ({seq.camera_names})")
        if frame_ids is None and seq.num_frames < d.get_int("num_frames"):
            self.log.warning("data.num_frames = %d but %s has only %d usable frames", d.get_int("num_frames"),
                             seq.name, seq.num_frames)
        self.seq = seq
        self.log.info("%s", seq.summary())
        start = time.time()
        dtype = storage_dtype(d.get_string("storage"), self.device)
        self.data = prepare_sequence(seq, d, self.device, dtype, progress=self.log.progress)
        self.log.info("fitting data: %d frames x %d views at %dx%d (LR %d, x%g), stored as %s, %.1f s",
                      self.data.num_frames, self.data.num_views, *self.data.size, d.get_int("lr_size"),
                      d.get_int("hr_size") / d.get_int("lr_size"), str(dtype).replace("torch.", ""),
                      time.time() - start)
        return self.data
