"""Sequence data of the SRHand stage: the frames and views a run fits, cropped, degraded and kept in memory.

``SequenceData`` holds the per-frame, per-view tensors (HR crops, LR inputs, masks, normal maps, cameras);
``prepare_sequence`` builds it from a ``CaptureSequence``; :func:`read_capture` reads the configured
capture (with the MANO noise of paper Table 5) and :func:`load_fit_data` the frames and views a run fits.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datasets.preprocess import degrade
from trainers.srhand.context import RunContext
from trainers.srhand.settings import DataSettings, MANONoiseSettings
from utils.config import ConfigError
from utils.errors import InputError
from utils.geometry.camera import Cameras


class SRHandInputError(InputError):
    """Inputs that do not fit together (data vs checkpoint, cameras, hand model); reported without a traceback."""


@dataclass(slots=True)
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
        return Cameras(
            K=self.K[frame, views],
            R=self.R[views],
            t=self.t[views],
            image_size=self.size,
            names=[self.camera_names[v] for v in views],
        )

    def get(self, key: str, frame: int, views: Sequence[int]) -> torch.Tensor:
        """``key`` in (hr, mask, normal, lr) for ``views`` of ``frame``: float32 ``(B, C, H, W)``."""
        return getattr(self, key)[frame, list(views)].float()


def storage_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float32 if device.type == "cuda" else torch.float16
    if name not in ("float32", "float16"):
        raise ConfigError(f"data.storage must be auto, float32 or float16, got {name!r}")
    return getattr(torch, name)


def sample_frame(seq, frame: int, views: Sequence[int], data: DataSettings, with_raw: bool = False) -> dict:
    """Crop ``views`` of ``frame`` (``CaptureSequence.sample``) and stack them.

    Returns float32 CPU tensors: ``hr (B,3,H,W)`` (MANO-masked), ``mask (B,1,H,W)``, ``normal
    (B,3,Hn,Wn)``, ``K (B,3,3)``, ``R``, ``t``, ``lr (B,3,h,w)`` and with ``with_raw`` the unmasked crop
    ``raw``.
    """
    samples = [
        seq.sample(
            frame,
            v,
            size=data.hr_size,
            ratio=data.crop_ratio,
            normal_space=data.normal_space,
            normal_size=data.normal_size,
        )
        for v in views
    ]
    mask = torch.stack([s["mask"] for s in samples])
    raw = torch.stack([s["image"] for s in samples])
    hr = raw * mask
    out = {
        "hr": hr,
        "mask": mask,
        "normal": torch.stack([s["normal_map"] for s in samples]),
        "K": torch.stack([s["K"] for s in samples]),
        "R": torch.stack([s["R"] for s in samples]),
        "t": torch.stack([s["t"] for s in samples]),
        "lr": degrade(hr, size=data.lr_size, mode=data.degradation),
    }
    if with_raw:
        out["raw"] = raw
    return out


def prepare_sequence(
    seq, data: DataSettings, device: torch.device, dtype: torch.dtype, progress=None
) -> SequenceData:
    """Crop every (frame, view) of ``seq`` once and keep the tensors on ``device`` (see :class:`SequenceData`)."""
    frames = range(seq.num_frames)
    views = list(range(seq.num_views))
    parts = defaultdict(list)
    for f in progress(frames, desc="prepare data") if progress else frames:
        s = sample_frame(seq, f, views, data)
        for key, value in s.items():
            parts[key].append(value)
    size = data.hr_size
    return SequenceData(
        frame_ids=list(seq.frame_ids),
        camera_names=list(seq.camera_names),
        hr=torch.stack(parts["hr"]).to(device, dtype),
        mask=torch.stack(parts["mask"]).to(device).bool(),
        normal=torch.stack(parts["normal"]).to(device, dtype),
        lr=torch.stack(parts["lr"]).to(device),
        K=torch.stack(parts["K"]).to(device),
        R=parts["R"][0].to(device),
        t=parts["t"][0].to(device),
        pose=seq.mano_pose.to(device),
        shape=seq.mano_shape.to(device),
        trans=seq.mano_trans.to(device),
        size=(size, size),
    )


def random_views(gen: torch.Generator, num_views: int, count: int | None = None) -> list[int]:
    """A random order of the ``num_views`` views drawn from ``gen``, cut to ``count`` (None or < 0: all)."""
    perm = torch.randperm(num_views, generator=gen).tolist()
    return perm if count is None or count < 0 else perm[:count]


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
        if (subject.get("split"), subject.get("capture"), subject.get("sequence")) == (
            split,
            capture,
            sequence,
        ):
            return subject
    return None


def read_capture(
    ctx: RunContext, cameras, frame_ids=None, num_frames=None, frame_mode: str = "strided"
) -> tuple[object, dict[int, float]]:
    """The configured capture (``data.*``) with ``cameras`` and the selected frames, MANO noise applied.

    Args:
        cameras: camera names, or a count of colour cameras (the first ones, sorted, minus ``drop_cam``).
        frame_ids, num_frames, frame_mode: the frame selection of ``datasets.interhand.read_interhand_sequence``.
    Returns:
        The ``CaptureSequence`` and, for ``data.mano_noise``, the MPJPE (mm) of every frame's perturbed
        parameters by frame id (empty without noise).
    """
    d = ctx.settings.data
    if d.dataset == "goliath":  # one Goliath dome capture; MANO fitted, cached in the run
        from datasets.goliath import read_from_config

        seq = read_from_config(
            ctx.conf, ctx.run_dir, cameras, frame_ids, num_frames, frame_mode, log=ctx.log.info
        )
    else:
        from datasets.interhand import read_interhand_sequence

        if not Path(d.data_path).is_dir():
            raise FileNotFoundError(
                f"data.data_path = {d.data_path!r} is not a folder. Generate the synthetic captures with "
                "`python scripts/make_synthetic.py` or point data.data_path (or $SRHAND_DATA) at InterHand2.6M."
            )
        seq = read_interhand_sequence(
            d.data_path,
            d.split,
            d.capture,
            d.sequence,
            hand=d.hand,
            cameras=cameras,
            num_frames=num_frames,
            frame_mode=frame_mode,
            frame_ids=frame_ids,
            drop_cameras=tuple(d.drop_cam),
            mano_dir=d.mano_dir or None,
        )
    return perturb_sequence(seq, d.mano_noise, ctx.log)


def perturb_sequence(seq, noise: MANONoiseSettings, log) -> tuple[object, dict[int, float]]:
    """``seq`` with noisy MANO parameters (paper Table 5) and the MPJPE (mm) of each frame's, by frame id.

    Without noise, ``seq`` itself and ``{}``.
    """
    from datasets.capture import hand_joints, perturb_mano
    from utils.metrics.geometry import mpjpe_mm

    if not noise.active:
        return seq, {}
    record = noise.record()
    noisy = perturb_mano(seq, **record)
    errors = mpjpe_mm(hand_joints(noisy), hand_joints(seq))
    log.warning(
        "data.mano_noise %s: MANO parameters of %d frames of %s perturbed, MPJPE %.2f mm",
        record,
        seq.num_frames,
        seq.name,
        float(errors.mean()),
    )
    return noisy, {int(f): float(e) for f, e in zip(seq.frame_ids, errors, strict=True)}


def mano_noise_report(
    noise: MANONoiseSettings, mpjpe: dict[int, float], fit_frames: Sequence[int], eval_frames: Sequence[int]
) -> dict | None:
    """The noise settings and the mean MPJPE (mm) of the perturbed parameters on the fitting and evaluated
    frames (``mpjpe``: frame id -> MPJPE); None without noise."""
    if not noise.active:
        return None

    def mean(frames):
        values = [mpjpe[int(f)] for f in frames if int(f) in mpjpe]
        return float(np.mean(values)) if values else None

    return {**noise.record(), "mpjpe_mm": mean(eval_frames), "mpjpe_mm_fit": mean(fit_frames)}


@dataclass(frozen=True, slots=True)
class FitData:
    """The frames and views a run fits: the capture read, its prepared tensors, its MANO noise.

    Attributes:
        seq: the ``CaptureSequence`` of the fitting frames and cameras (MANO noise applied).
        tensors: its crops, LR inputs, masks, normal maps and cameras on the device (:class:`SequenceData`).
        noise_mpjpe: frame id -> MPJPE (mm) of the perturbed MANO parameters (empty without noise).
    """

    seq: object
    tensors: SequenceData
    noise_mpjpe: dict


def load_fit_data(ctx: RunContext) -> FitData:
    """Read the fitting frames and views of ``data.*`` and crop them (logs what it read)."""
    d = ctx.settings.data
    cameras = [str(c) for c in d.cameras] or d.num_views
    frame_ids = [int(f) for f in d.frame_ids] or None
    seq, mpjpe = read_capture(
        ctx, cameras, frame_ids=frame_ids, num_frames=None if frame_ids else d.num_frames
    )
    if isinstance(cameras, int) and seq.num_views < cameras:
        raise SRHandInputError(
            f"data.num_views = {cameras} but {seq.name} has only {seq.num_views} usable "
            f"colour cameras ({seq.camera_names})"
        )
    if frame_ids is None and seq.num_frames < d.num_frames:
        ctx.log.warning(
            "data.num_frames = %d but %s has only %d usable frames", d.num_frames, seq.name, seq.num_frames
        )
    ctx.log.info("%s", seq.summary())
    start = time.time()
    dtype = storage_dtype(d.storage, ctx.device)
    tensors = prepare_sequence(seq, d, ctx.device, dtype, progress=ctx.log.progress)
    ctx.log.info(
        "fitting data: %d frames x %d views at %dx%d (LR %d, x%g), stored as %s, %.1f s",
        tensors.num_frames,
        tensors.num_views,
        *tensors.size,
        d.lr_size,
        d.hr_size / d.lr_size,
        str(dtype).replace("torch.", ""),
        time.time() - start,
    )
    return FitData(seq=seq, tensors=tensors, noise_mpjpe=mpjpe)
