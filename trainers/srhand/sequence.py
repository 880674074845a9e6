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
from trainers.srhand.supervision import margin_pixels, ring_colour, supervision_targets, view_background
from utils.config import ConfigError, missing_data_path_error
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
        hr: ``(F, V, 3, H, W)`` HR targets: the crops masked as ``mask_source`` says
            (:func:`trainers.srhand.supervision.supervision_targets`; ``mano``: by the MANO silhouette).
        mask: ``(F, V, 1, H, W)`` bool MANO silhouettes.
        normal: ``(F, V, 3, Hn, Wn)`` MANO normal maps (GIIF's geometric input).
        lr: ``(F, V, 3, h, w)`` float32 LR images, ``degrade(hr, lr_size)``.
        K: ``(F, V, 3, 3)`` cropped intrinsics (pixels of the H x W crop). R: ``(V, 3, 3)``. t: ``(V, 3)``.
        pose: ``(F, 48)``. shape: ``(F, 10)``. trans: ``(F, 3)`` metres.
        size: ``(H, W)``.
        usable: ``(F, V)`` bool on the CPU: the views whose image is not all black (InterHand2.6M has frames
            that are black in some views). Only usable views are fitted, fine-tuned on and given SR targets.
        mask_source: ``data.mask_source`` (``mano``, ``capture`` or ``dilated``).
        support: ``(F, V, 1, H, W)`` bool, the pixels the losses compare (``mask`` itself for ``mano``).
        background: ``(V, 3)`` float32 colour of each view's background, over which renders are composited
            (``capture``: 0; ``dilated``: estimated from the images; ``mano``: 0, unused).
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
    usable: torch.Tensor
    mask_source: str = "mano"
    support: torch.Tensor | None = None
    background: torch.Tensor | None = None

    def __post_init__(self):
        if self.support is None:
            self.support = self.mask
        if self.background is None:
            self.background = torch.zeros(len(self.camera_names), 3, device=self.mask.device)

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

    def usable_views(self, frame: int, views: Sequence[int]) -> list[int]:
        """``views`` without those whose image of ``frame`` is black, in their order."""
        return [v for v in views if bool(self.usable[frame, v])]

    def get(self, key: str, frame: int, views: Sequence[int]) -> torch.Tensor:
        """``key`` in (hr, mask, support, normal, lr) for ``views`` of ``frame``: float32 ``(B, C, H, W)``."""
        return getattr(self, key)[frame, list(views)].float()


def storage_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float32 if device.type == "cuda" else torch.float16
    if name not in ("float32", "float16"):
        raise ConfigError(f"data.storage must be auto, float32 or float16, got {name!r}")
    return getattr(torch, name)


def sample_frame(
    seq,
    frame: int,
    views: Sequence[int],
    data: DataSettings,
    with_raw: bool = False,
    with_segmentation: bool = False,
) -> dict:
    """Crop ``views`` of ``frame`` (``CaptureSequence.sample``) and stack them.

    Returns float32 CPU tensors: ``hr (B,3,H,W)`` (MANO-masked), ``mask (B,1,H,W)``, ``normal
    (B,3,Hn,Wn)``, ``K (B,3,3)``, ``R``, ``t``, ``lr (B,3,h,w)``, ``is_black (B,)`` bool (the raw image is
    all black), with ``with_raw`` the unmasked crop ``raw`` and with ``with_segmentation`` the capture's
    own foreground ``segmentation (B,1,H,W)``.
    """
    samples = [
        seq.sample(
            frame,
            v,
            size=data.hr_size,
            ratio=data.crop_ratio,
            normal_space=data.normal_space,
            normal_size=data.normal_size,
            with_segmentation=with_segmentation,
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
        "lr": degrade(
            hr,
            size=data.lr_size,
            mode=data.degradation,
            camera=data.lr_camera,
            generators=data.lr_camera.generators_for([(seq.name, frame, v, data.lr_size) for v in views]),
        ),
        "is_black": torch.tensor([bool(s["is_black"]) for s in samples]),
    }
    if with_raw:
        out["raw"] = raw
    if with_segmentation:
        out["segmentation"] = torch.stack([s["segmentation"] for s in samples])
    return out


def check_mask_source(seq, data: DataSettings) -> None:
    """Raise :class:`SRHandInputError` when ``data.mask_source = capture`` and ``seq`` has no segmentation."""
    if data.mask_source == "capture" and not seq.has_segmentation:
        raise SRHandInputError(
            f"data.mask_source = capture but {seq.name} has no foreground segmentation of its own (for every "
            "image of the selection: mask<frame>.png beside image<frame>.jpg, or Goliath's segmentation_fgbg); "
            "use data.mask_source = dilated (or mano), or generate synthetic captures with --segmentation"
        )


def supervised_frame(sample: dict, data: DataSettings) -> dict:
    """The supervision of one :func:`sample_frame` result (taken with ``with_raw``, and ``with_segmentation``
    for ``capture``) under ``data.mask_source``: ``hr`` (target), ``lr`` (its degradation, GIIF's input),
    ``support`` and ``ring (B, 3)`` (the ring colours of the background estimate,
    :func:`trainers.srhand.supervision.ring_colour`). ``mano`` gives the sample's own ``hr`` and ``lr``."""
    radius = margin_pixels(data.mask_margin, data.hr_size)
    hr, support = supervision_targets(
        data.mask_source, sample["raw"], sample["mask"], sample.get("segmentation"), radius
    )
    ring = (
        ring_colour(sample["raw"], sample["mask"], support)
        if data.mask_source == "dilated"
        else torch.zeros(hr.shape[0], 3)
    )
    lr = degrade(hr, size=data.lr_size, mode=data.degradation) if data.mask_source != "mano" else sample["lr"]
    return {"hr": hr, "lr": lr, "support": support, "ring": ring}


def prepare_sequence(
    seq, data: DataSettings, device: torch.device, dtype: torch.dtype, progress=None
) -> tuple[SequenceData, dict]:
    """Crop every (frame, view) of ``seq`` once and keep the tensors on ``device`` (see :class:`SequenceData`).

    A frame with fewer than ``data.min_views`` usable (not black) views is left out.

    Returns:
        The tensors of the frames kept, and ``{frame id: why it was left out}``.
    Under ``data.mask_source`` capture or dilated the HR targets, LR inputs and supports follow
    :func:`supervised_frame`, and ``dilated`` estimates each view's background colour
    (:func:`trainers.srhand.supervision.view_background` over the usable images of the frames kept).

    Raises:
        SRHandInputError: no frame has ``data.min_views`` usable views; ``data.mask_source = capture`` on a
            capture without its own segmentation.
    """
    check_mask_source(seq, data)
    frames = range(seq.num_frames)
    views = list(range(seq.num_views))
    wide = data.mask_source != "mano"
    parts = defaultdict(list)
    for f in progress(frames, desc="prepare data") if progress else frames:
        s = sample_frame(seq, f, views, data, with_raw=wide, with_segmentation=data.mask_source == "capture")
        if wide:
            s.update(supervised_frame(s, data))
            del s["raw"]
            s.pop("segmentation", None)
        for key, value in s.items():
            parts[key].append(value)
    usable = ~torch.stack(parts["is_black"])  # (F, V)
    keep, dropped = [], {}
    for f, count in enumerate(usable.sum(1).tolist()):
        if count >= data.min_views:
            keep.append(f)
            continue
        black = [seq.camera_names[v] for v in views if not usable[f, v]]
        dropped[int(seq.frame_ids[f])] = (
            f"{count} usable view(s) of {len(views)}, fewer than data.min_views = {data.min_views} "
            f"(black images in {', '.join(black)})"
        )
    if not keep:
        raise SRHandInputError(
            f"{seq.name}: no fitting frame has data.min_views = {data.min_views} usable (not all-black) views: "
            f"{dropped}; choose other frames (data.frame_ids) or cameras (data.cameras), or lower data.min_views"
        )
    index = torch.tensor(keep)

    def stacked(key: str) -> torch.Tensor:
        return torch.stack(parts[key])[index]

    size = data.hr_size
    mask = stacked("mask").to(device).bool()
    background = None
    if data.mask_source == "dilated":
        background = view_background(stacked("ring"), usable[index]).to(device)
    prepared = SequenceData(
        frame_ids=[seq.frame_ids[f] for f in keep],
        camera_names=list(seq.camera_names),
        hr=stacked("hr").to(device, dtype),
        mask=mask,
        normal=stacked("normal").to(device, dtype),
        lr=stacked("lr").to(device),
        K=stacked("K").to(device),
        R=parts["R"][0].to(device),
        t=parts["t"][0].to(device),
        pose=seq.mano_pose[index].to(device),
        shape=seq.mano_shape[index].to(device),
        trans=seq.mano_trans[index].to(device),
        size=(size, size),
        usable=usable[index],
        mask_source=data.mask_source,
        support=stacked("support").to(device).bool() if wide else mask,
        background=background,
    )
    return prepared, dropped


def random_views(
    gen: torch.Generator, num_views: int, count: int | None = None, usable: torch.Tensor | None = None
) -> list[int]:
    """A random order of the ``num_views`` views drawn from ``gen``, without those ``usable (num_views,)``
    marks False, cut to ``count`` (None or < 0: all). The draw does not depend on ``usable``."""
    perm = torch.randperm(num_views, generator=gen).tolist()
    if usable is not None:
        perm = [v for v in perm if bool(usable[v])]
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
            ctx.conf,
            ctx.run_dir,
            cameras,
            frame_ids,
            num_frames,
            frame_mode,
            log=ctx.log.info,
            warn=ctx.log.warning,
        )
    else:
        from datasets.interhand import read_interhand_sequence

        if not Path(
            d.data_path
        ).is_dir():  # trainers.run.check_inputs checks it first; this is for direct use
            raise missing_data_path_error(ctx.conf, d.dataset)
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
    """The frames and views a run fits: the capture read, its prepared tensors, its MANO noise, its report.

    Attributes:
        seq: the ``CaptureSequence`` of the fitting frames and cameras as read (MANO noise applied).
        tensors: the crops, LR inputs, masks, normal maps and cameras of the frames kept, on the device
            (:class:`SequenceData`; ``tensors.usable`` marks the views that are not black).
        noise_mpjpe: frame id -> MPJPE (mm) of the perturbed MANO parameters (empty without noise).
        report: what the reader and the preparation left out or flagged (``metrics.json`` -> ``data.fit``):
            the reader's report (:meth:`datasets.capture.CaptureSequence.data_report`), the hand model, and
            ``frames_left_out`` (frame id -> why: too few usable views).
    """

    seq: object
    tensors: SequenceData
    noise_mpjpe: dict
    report: dict


def hand_model_report(model) -> dict:
    """The hand model a run uses, for the log and ``metrics.json``."""
    return {
        "path": str(getattr(model, "source_path", "")),
        "procedural": bool(getattr(model, "is_procedural", False)),
    }


def load_fit_data(ctx: RunContext) -> FitData:
    """Read the fitting frames and views of ``data.*`` and crop them; logs the hand model and, once the images
    are read, what the reader left out (cameras, frames) and the black views, which are not fitted.

    Raises:
        InputError: the procedural stand-in hand on data that is not this project's synthetic captures
            (unless ``data.allow_procedural_hand``); fewer cameras than ``data.num_views``; no frame with
            ``data.min_views`` usable views.
    """
    from datasets.capture import check_hand_model_for_data, describe_hand_model
    from utils.geometry.mano import resolve_hand_model_path

    d = ctx.settings.data
    # before any data is read (a Goliath capture's MANO fit takes minutes)
    check_hand_model_for_data(
        resolve_hand_model_path(d.mano_dir or None, d.hand), d.data_path, d.allow_procedural_hand
    )
    cameras = [str(c) for c in d.cameras] or d.num_views
    frame_ids = [int(f) for f in d.frame_ids] or None
    seq, mpjpe = read_capture(
        ctx, cameras, frame_ids=frame_ids, num_frames=None if frame_ids else d.num_frames
    )
    hand_model = seq.hand_model()
    ctx.log.info("hand model: %s", describe_hand_model(hand_model))
    if isinstance(cameras, int) and seq.num_views < cameras:
        raise SRHandInputError(
            f"data.num_views = {cameras} but {seq.name} has only {seq.num_views} usable "
            f"colour cameras ({seq.camera_names})"
        )
    if frame_ids is None and seq.num_frames < d.num_frames:
        ctx.log.warning(
            "data.num_frames = %d but %s has only %d usable frames", d.num_frames, seq.name, seq.num_frames
        )
    start = time.time()
    dtype = storage_dtype(d.storage, ctx.device)
    tensors, left_out = prepare_sequence(seq, d, ctx.device, dtype, progress=ctx.log.progress)
    ctx.log.info("%s", seq.summary())  # after the images are read: the black ones are known now
    report = {**seq.data_report(), "hand_model": hand_model_report(hand_model)}
    if left_out:
        report["frames_left_out"] = {str(f): why for f, why in left_out.items()}
        for f, why in left_out.items():
            ctx.log.warning("frame %d left out of the fit: %s", f, why)
    black = [(int(f), c) for f, c in seq.report["black_images"] if int(f) not in left_out]
    if black:
        ctx.log.warning(
            "%d black view(s) not fitted (frame, camera): %s", len(black), ", ".join(map(str, black))
        )
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
    return FitData(seq=seq, tensors=tensors, noise_mpjpe=mpjpe, report=report)
