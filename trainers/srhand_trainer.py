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

import copy
import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from datasets.preprocess import degrade
from models import registry
from models.avatar import MEAN_HAND_ALBEDO_RGB, HandAvatar
from models.sr_coords import make_coord
from trainers import losses as L
from trainers.sr_eval import bicubic_upsample, normal_to_rgb
from utils.metrics import image as metrics
from utils.geometry.camera import Cameras
from utils.checkpoint import (
    CheckpointError,
    build_model,
    checkpoint_dir,
    latest_checkpoint,
    load_checkpoint,
    make_checkpoint,
    model_entry,
    save_atomic,
)
from utils.config import ConfigError, conf_to_dict
from utils.run_logging import RunLogger, check_finite
from utils.seeding import keyed_generator

SR_SOURCES = ("giif_finetuned", "giif", "bicubic", "hr")
PHASES = ("albedo", "sfs", "train", "done")
AVATAR_NAME = "hand_avatar"
GIIF_PARTS = ("encoder", "normal_encoder", "imnet")


class SRHandInputError(ValueError):
    """Inputs that do not fit together (data vs checkpoint, cameras, hand model); reported without a traceback."""


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# GIIF helpers
# --------------------------------------------------------------------------------------------------


def giif_decode(giif, lr: torch.Tensor, normal: torch.Tensor, size: Sequence[int], chunk: int,
                checkpoint: bool = False) -> torch.Tensor:
    """GIIF output ``(B, 3, H, W)`` (not clamped) under the caller's grad mode.

    Like ``GIIF.decode`` but optionally with gradient checkpointing per chunk of queries, so that
    decoding with gradient (fine-tuning) needs the memory of one chunk plus the outputs.
    """
    feats = giif.encode(lr, normal if giif.use_normal else None)
    H, W = int(size[0]), int(size[1])
    B = lr.shape[0]
    coord = make_coord((H, W), device=lr.device, dtype=lr.dtype).unsqueeze(0).expand(B, H * W, 2)
    cell = coord.new_tensor([2.0 / H, 2.0 / W]).expand(B, H * W, 2)
    chunk = max(1, int(chunk))
    preds = []
    for start in range(0, H * W, chunk):
        c, ce = coord[:, start:start + chunk], cell[:, start:start + chunk]
        if checkpoint and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint as ckpt

            preds.append(ckpt(giif.query, feats, c, ce, use_reentrant=False))
        else:
            preds.append(giif.query(feats, c, ce))
    return torch.cat(preds, dim=1).transpose(1, 2).reshape(B, 3, H, W)


def finetuned_parameter_names(giif, spec: str) -> list[str]:
    """Names of GIIF's parameters selected by ``finetune.params`` (``imnet``, ``all``, ``a+b``)."""
    if spec == "all":
        parts = [p for p in GIIF_PARTS if getattr(giif, p, None) is not None]
    else:
        parts = [p.strip() for p in spec.split("+") if p.strip()]
        bad = [p for p in parts if p not in GIIF_PARTS or getattr(giif, p, None) is None]
        if bad or not parts:
            present = [p for p in GIIF_PARTS if getattr(giif, p, None) is not None]
            raise ConfigError(f"finetune.params = {spec!r}: unknown GIIF part(s) {bad or [spec]}; "
                              f"use 'all' or parts of {present} joined by '+'")
    return [name for name, _ in giif.named_parameters() if name.split(".")[0] in parts]


def jet(x: torch.Tensor) -> torch.Tensor:
    """The jet colour map of values in [0, 1]: ``(...,)`` -> ``(..., 3)`` RGB."""
    x = x.clamp(0.0, 1.0)[..., None]
    centres = x.new_tensor([3.0, 2.0, 1.0])
    return (1.5 - (4.0 * x - centres).abs()).clamp(0.0, 1.0)


def surface_unconfidence(renderer, var: torch.Tensor, rast: torch.Tensor, faces: torch.Tensor,
                         scale: float) -> torch.Tensor:
    """Per-vertex variance ``(V,)`` drawn on the rendered surface for visualisation: ``(B, 3, H, W)`` jet colours
    of ``clamp(scale * var)`` interpolated over the triangles of ``rast (B, H, W, 4)``, black background.

    (``trainers.losses.unconfidence_map`` splats the same values at the vertex pixels only, which leaves
    gaps between the vertices of a coarse mesh.)"""
    values = (scale * var).clamp(0.0, 1.0)[None, :, None].expand(rast.shape[0], -1, 1)
    image = renderer.interpolate(values.contiguous(), rast, faces)[..., 0]  # (B, H, W)
    covered = (rast[..., 3] > 0).to(image.dtype)
    return (jet(image) * covered[..., None]).permute(0, 3, 1, 2)


class ResizedPerceptual:
    """A perceptual distance evaluated on images area-resized to ``size`` x ``size`` (``size`` 0: as given).

    LPIPS-type networks cost most of a CPU training step at 128 px; LPIPS itself was calibrated on 64 x 64
    patches, so the CPU configs compare at 64 px. ``name`` is the wrapped network's.
    """

    def __init__(self, net, size: int = 0):
        self.net, self.size = net, int(size)
        self.name = getattr(net, "name", type(net).__name__) + (f"@{self.size}px" if self.size else "")

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.size and tuple(pred.shape[-2:]) != (self.size, self.size):
            pred = F.interpolate(pred, size=(self.size, self.size), mode="area")
            target = F.interpolate(target, size=(self.size, self.size), mode="area")
        return self.net(pred, target)


def _round_epoch(fraction: float, epochs: int) -> int:
    return int(math.floor(fraction * epochs + 0.5))


# --------------------------------------------------------------------------------------------------
# Avatar construction and checkpoints
# --------------------------------------------------------------------------------------------------


def avatar_kwargs_from_conf(conf) -> dict:
    return conf_to_dict(conf, "model")


def build_avatar(entry: dict, hand_model) -> HandAvatar:
    """Rebuild a ``HandAvatar`` from a checkpoint entry ``{"name", "args", "sd"}`` and a hand model."""
    if entry.get("name") != AVATAR_NAME:
        raise CheckpointError(f"expected a {AVATAR_NAME!r} model entry, found {entry.get('name')!r}")
    args = dict(entry["args"])
    args["mean_shape"] = torch.tensor(args["mean_shape"], dtype=torch.float32)
    avatar = HandAvatar.from_hand_model(hand_model, **args)
    avatar.load_state_dict(entry["sd"])
    return avatar


def check_hand_model(avatar: HandAvatar, hand_model, mean_shape: torch.Tensor, what: str, tol_mm: float = 1.0):
    """Raise ``SRHandInputError`` when ``hand_model`` is not the one the avatar was built from.

    Compares the rest joints the avatar stores with those of ``hand_model`` at the same mean shape.
    """
    with torch.no_grad():
        joints = hand_model.rest_joints(mean_shape.reshape(1, -1).to(hand_model.v_template))[0]
    diff = float((joints.float().cpu() - avatar.joints_rest.float().cpu()).norm(dim=-1).max()) * 1000
    if diff > tol_mm:
        raise SRHandInputError(
            f"{what}: the hand model of data.mano_dir ({getattr(hand_model, 'source_path', '?')}) is not the one "
            f"the avatar was built from (rest joints differ by up to {diff:.1f} mm): set data.mano_dir to the MANO "
            "files used for training")


# --------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------


class SRHandTrainer:
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

    # ------------------------------------------------------------------ helpers
    @property
    def renderer(self):
        if self._renderer is None:
            from utils.render import get_renderer

            self._renderer = get_renderer("auto")
        return self._renderer

    def _hand_model(self, side: str):
        from utils.geometry.mano import HandModel, resolve_hand_model_path

        path = resolve_hand_model_path(self.conf.get_string("data.mano_dir") or None, side)
        return HandModel.from_file(path, side=side)

    def _read_sequence(self, cameras, frame_ids=None, num_frames=None, frame_mode="strided"):
        from datasets.interhand import read_interhand_sequence

        d = self.conf.get_config("data")
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

    # ------------------------------------------------------------------ models
    def _load_giif(self, path: str, key_name: str):
        if not path:
            raise ConfigError(f"sr_source = {self.sr_source!r} needs a GIIF checkpoint: set {key_name} "
                              "(main_disc.py's giif.pth) or pass --implicit_path")
        if not Path(path).is_file():
            raise FileNotFoundError(f"{key_name} = {path!r}: no such file (train GIIF with main_giif.py / "
                                    "main_disc.py first)")
        try:
            ckpt = load_checkpoint(path, stage=("giif", "disc"))
            if ckpt["model"]["name"] not in ("giif", "liif"):
                raise CheckpointError(f"{path} holds a {ckpt['model']['name']!r} network, not GIIF/LIIF")
            giif = build_model(ckpt, registry.make)
        except CheckpointError as err:
            raise SRHandInputError(f"{key_name}: {err}") from None
        trained = (ckpt.get("config") or {}).get("data", {})
        ours = self.conf.get_string("data.normal_space")
        if getattr(giif, "use_normal", False) and trained.get("normal_space", ours) != ours:
            raise SRHandInputError(
                f"{key_name} ({path}) was trained with data.normal_space = {trained['normal_space']!r}, this config "
                f"has data.normal_space = {ours!r}: set it to {trained['normal_space']!r}")
        if "normal_size" in trained and trained["normal_size"] != self.conf.get_int("data.normal_size"):
            self.log.warning("%s was trained with normal maps of %s pixels, data.normal_size = %d", key_name,
                             trained["normal_size"], self.conf.get_int("data.normal_size"))
        self.log.info("GIIF loaded from %s (%s, %.2f M parameters)", path, ckpt["model"]["name"],
                      sum(p.numel() for p in giif.parameters()) / 1e6)
        return giif.to(self.device).eval()

    def _load_disc(self):
        path = self.conf.get_string("disc_model")
        weight = self.conf.get_float("finetune.weights.disc")
        if not path:
            if weight > 0:
                raise ConfigError("finetune.weights.disc > 0 needs the stage-2 discriminator: set disc_model "
                                  "(main_disc.py's disc.pth), or set finetune.weights.disc = 0")
            return None
        if not Path(path).is_file():
            raise FileNotFoundError(f"disc_model = {path!r}: no such file")
        try:
            ckpt = load_checkpoint(path, stage="disc")
            disc = build_model(ckpt, registry.make, key="disc" if "disc" in ckpt else "model")
        except CheckpointError as err:
            raise SRHandInputError(f"disc_model: {err}") from None
        hr = self.conf.get_int("data.hr_size")
        if hr % 8:
            raise ConfigError(f"the discriminator needs image sides divisible by 8: data.hr_size = {hr}")
        disc.requires_grad_(False)
        return disc.to(self.device).eval()

    def build_models(self, resume: bool = False, implicit_path: str | None = None) -> None:
        """Avatar, GIIF (+ the frozen original, optimiser, discriminator), perceptual loss; then resume or
        generate the SR targets."""
        d = self.data
        self.hand_model = self.seq.hand_model()
        self.avatar_args = {**avatar_kwargs_from_conf(self.conf), "num_views": d.num_views,
                            "mean_shape": [float(x) for x in d.shape.mean(0).cpu()]}
        torch.manual_seed(self.seed)
        args = dict(self.avatar_args, mean_shape=torch.tensor(self.avatar_args["mean_shape"]))
        self.avatar = HandAvatar.from_hand_model(self.hand_model, **args).to(self.device)
        self.log.info("avatar: %d vertices, %d faces, use_enh=%s, %.2f M parameters", self.avatar.num_verts,
                      self.avatar.faces.shape[0], self.avatar.use_enh,
                      sum(p.numel() for p in self.avatar.parameters()) / 1e6)
        self.ops = self.avatar.mesh_operators()

        if self.sr_source in ("giif", "giif_finetuned"):
            self.giif = self._load_giif(implicit_path or self.conf.get_string("giif_model"),
                                        "--implicit_path" if implicit_path else "giif_model")
            self.giif.requires_grad_(False)
        if self.sr_source == "giif_finetuned":
            fconf = self.conf.get_config("finetune")
            self.finetune_names = finetuned_parameter_names(self.giif, fconf.get_string("params"))
            named = dict(self.giif.named_parameters())
            for name in self.finetune_names:
                named[name].requires_grad_(True)
            self.giif_initial = {n: named[n].detach().clone() for n in self.finetune_names}
            self.giif_optimizer = torch.optim.Adam([named[n] for n in self.finetune_names],
                                                   lr=fconf.get_float("learning_rate"))
            self.disc = self._load_disc()
            self.log.info("GIIF fine-tuning: %s (%d tensors, %.3f M parameters), discriminator %s",
                          fconf.get_string("params"), len(self.finetune_names),
                          sum(named[n].numel() for n in self.finetune_names) / 1e6,
                          "on" if self.disc is not None else "off")
        kind = self.conf.get_string("train.perceptual")
        if kind != "none":
            from utils.metrics.perceptual import PerceptualLoss

            self.perceptual = ResizedPerceptual(PerceptualLoss(kind), self.conf.get_int("train.perceptual_size"))
            self.log.info("perceptual training loss: %s", self.perceptual.name)
        self._init_prephase()
        if resume:
            self.resume(implicit_path)
        if self.giif is not None:
            # The frozen original (for the wavelet loss) = the current GIIF with the initial values of the
            # fine-tuned parameters (identical unless resumed after a round).
            self.giif_orig = copy.deepcopy(self.giif).requires_grad_(False).eval()
            with torch.no_grad():
                named = dict(self.giif_orig.named_parameters())
                for name, value in self.giif_initial.items():
                    named[name].copy_(value)
        start = time.time()
        self.sr = self._generate_sr(self.giif)
        self.sr_orig = None
        if self.sr_source == "giif_finetuned":
            named = dict(self.giif.named_parameters())
            unchanged = all(torch.equal(named[n], v) for n, v in self.giif_initial.items())
            # Targets are replaced, never modified in place, so the two names may share one tensor.
            self.sr_orig = self.sr if unchanged else self._generate_sr(self.giif_orig)
        self.timing["sr_generation_s"].append(time.time() - start)
        self.log.info("SR targets (%s) for %d images in %.1f s", self.sr_source,
                      d.num_frames * d.num_views, time.time() - start)

    def _init_prephase(self) -> None:
        V = self.avatar.num_verts
        dev = self.device
        albedo0 = torch.logit(torch.tensor(MEAN_HAND_ALBEDO_RGB, device=dev)).expand(V, 3).clone()
        self.pre = {
            "albedo_logits": torch.nn.Parameter(albedo0),
            "sh": torch.nn.Parameter(torch.zeros(self.data.num_views, 27, device=dev)),
            "delta": torch.nn.Parameter(torch.zeros(V, 3, device=dev)),
        }
        self._make_phase_optimizer()

    def _make_phase_optimizer(self) -> None:
        if self.phase == "albedo":
            a = self.conf.get_config("albedo")
            self.pre_optimizer = torch.optim.Adam([
                {"params": [self.pre["albedo_logits"]], "lr": a.get_float("albedo_learning_rate")},
                {"params": [self.pre["sh"]], "lr": a.get_float("sh_learning_rate")}])
        elif self.phase == "sfs":
            s = self.conf.get_config("sfs")
            self.pre_optimizer = torch.optim.Adam([
                {"params": [self.pre["delta"]], "lr": s.get_float("delta_learning_rate")},
                {"params": [self.pre["albedo_logits"]], "lr": s.get_float("albedo_learning_rate")},
                {"params": [self.pre["sh"]], "lr": s.get_float("sh_learning_rate")}])
        elif self.phase in ("train", "done"):
            self.pre_optimizer = None
            if self.optimizer is None:
                self.optimizer = torch.optim.Adam(self.avatar.parameters(),
                                                  lr=self.conf.get_float("train.learning_rate"))

    # ------------------------------------------------------------------ SR targets
    @torch.no_grad()
    def _sr_batch(self, giif, source: str, lr, normal, mask, hr) -> torch.Tensor:
        """SR images ``(B, 3, H, W)`` of one batch for ``source``, masked by the MANO silhouette."""
        size = hr.shape[-2:]
        if source == "hr":
            return hr
        if source == "bicubic":
            return bicubic_upsample(lr, size) * mask
        out = giif_decode(giif, lr, normal, size, self.conf.get_int("decode_chunk"))
        return out.clamp(0.0, 1.0) * mask

    @torch.no_grad()
    def _generate_sr(self, giif) -> torch.Tensor:
        """SR targets of every (frame, view): ``(F, V, 3, H, W)`` in the storage dtype."""
        d = self.data
        out = torch.empty_like(d.hr)
        if giif is not None:
            giif.eval()
        batch = max(1, self.conf.get_int("eval.batch_size"))
        for f in range(d.num_frames):
            for k in range(0, d.num_views, batch):
                views = list(range(k, min(k + batch, d.num_views)))
                sr = self._sr_batch(giif, self.sr_source, d.get("lr", f, views), d.get("normal", f, views),
                                    d.get("mask", f, views), d.get("hr", f, views))
                out[f, views] = sr.to(out.dtype)
        return out

    # ------------------------------------------------------------------ the loop
    def _stop_requested(self) -> bool:
        limit = self.conf.get_int("stop_after_epochs")
        return 0 <= limit <= self._epochs_this_run

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

    def _next_phase(self) -> None:
        if self.phase == "sfs":
            self._finish_prephase()
        self.phase = PHASES[PHASES.index(self.phase) + 1]
        if self.phase != "done":  # "done" keeps the last training epoch, for the record
            self.epoch = 0
        self._make_phase_optimizer()
        self.log.info("phase %s", self.phase)

    def _views_of(self, gen: torch.Generator, count: int | None = None) -> list[int]:
        perm = torch.randperm(self.data.num_views, generator=gen).tolist()
        return perm if count is None or count < 0 else perm[:count]

    # ---- pre-phases ---------------------------------------------------------------------------
    def _run_prephase(self) -> bool:
        pconf = self.conf.get_config(self.phase)
        epochs = pconf.get_int("epochs")
        batch = max(1, pconf.get_int("batch_size"))
        bar = self.log.progress(range(self.epoch, epochs), desc=self.phase, initial=self.epoch, total=epochs)
        for _ in bar:
            if self._stop_requested():
                return False
            i = self.epoch + 1
            gen = keyed_generator(self.seed, self.phase, i)
            views = self._views_of(gen)
            for k in range(0, len(views), batch):
                terms = self._prephase_step(views[k:k + batch], i, epochs)
            self.epoch = i
            self._epochs_this_run += 1
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(total=f"{float(terms['total'].detach()):.4f}")
            if self.conf.get_int("ckpt_every") > 0 and i % self.conf.get_int("ckpt_every") == 0 and i < epochs:
                self.save()
        return True

    def _prephase_geometry(self, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Canonical ``template (+ displacement in sfs)`` and its posed copy, MANO skinning weights."""
        verts = self.avatar.verts_template + (self.pre["delta"] if self.phase == "sfs" else 0.0)
        return verts, self.avatar.pose_vertices(verts, self.avatar.weights_init, self.data.pose[frame],
                                                self.data.trans[frame])

    def _prephase_step(self, views: list[int], i: int, epochs: int) -> dict:
        t0 = time.time()
        d, frame = self.data, 0
        verts_canon, posed = self._prephase_geometry(frame)
        albedo = torch.sigmoid(self.pre["albedo_logits"])
        out = self.avatar.render(posed, albedo, d.cameras(frame, views), views, renderer=self.renderer,
                                 sh_coeffs=self.pre["sh"])
        sr, mask = self.sr[frame, views].float(), d.get("mask", frame, views)
        valid = mask * out["coverage"].to(mask.dtype)
        c = self.conf.get_config(self.phase)
        terms = {"photometric": c.get_float("photometric") * L.masked_l1(out["image"], sr, valid),
                 "albedo_prior": c.get_float("albedo_prior") * L.mean_albedo_prior(albedo)}
        if self.phase == "sfs":
            boost = c.get_float("lap_boost") if i > _round_epoch(c.get_float("lap_boost_at"), epochs) else 1.0
            lap = self.ops["laplacian"]
            terms["lap_delta"] = boost * c.get_float("lap_delta") * L.part_aware_laplacian_loss(self.pre["delta"], lap)
            terms["lap_verts"] = boost * c.get_float("lap_verts") * L.part_aware_laplacian_loss(verts_canon, lap,
                                                                                                keep="lower")
            terms["lap_albedo"] = c.get_float("lap_albedo") * L.part_aware_laplacian_loss(albedo, lap)
            terms["edge"] = c.get_float("edge") * L.edge_stretch_loss(verts_canon, self.ops["edges"],
                                                                      self.ops["rest_sq_lengths"])
        terms["total"] = sum(terms.values())
        self._optimise(self.pre_optimizer, terms)
        self.timing[f"{self.phase}_step_s"].append(time.time() - t0)
        return terms

    def _optimise(self, optimizer, terms: dict) -> None:
        check_finite(self.step, terms)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        self.step += 1
        if self.step % max(1, self.conf.get_int("log_every")) == 0:
            self.log.log_losses(self.step, {k: v.detach() for k, v in terms.items()}, prefix=self.phase)

    @torch.no_grad()
    def _finish_prephase(self) -> None:
        """Start the pose-conditioned networks at the pre-phase result (``HandAvatar.set_prephase``)."""
        delta = self.pre["delta"].detach().clone()
        albedo = torch.sigmoid(self.pre["albedo_logits"]).detach().clone()
        sh = self.pre["sh"].detach().clone()
        self.prephase_result = {"delta": delta, "albedo": albedo, "sh": sh}
        self.avatar.set_prephase(delta=delta, albedo=albedo, sh_coeffs=sh)
        from utils.geometry.mesh_io import save_obj

        save_obj(self.run_dir / "prephase.obj", (self.avatar.verts_template + delta).cpu(),
                 self.avatar.faces.cpu(), albedo.cpu())
        self.log.info("pre-phases done: |delta| mean %.3f mm, albedo mean %s; canonical mesh -> prephase.obj",
                      float(delta.norm(dim=-1).mean()) * 1000, [round(float(x), 3) for x in albedo.mean(0)])

    # ---- joint training -----------------------------------------------------------------------
    def finetune_epochs(self, epochs: int | None = None) -> list[int]:
        """The 1-based training epochs at whose start a GIIF fine-tuning round runs."""
        if self.sr_source != "giif_finetuned":
            return []
        f = self.conf.get_config("finetune")
        epochs = self.conf.get_int("train.epochs") if epochs is None else epochs
        term = f.get_int("update_term")
        if term <= 0 or f.get_int("inner_epochs") <= 0:
            return []
        lo, hi = _round_epoch(f.get_float("start"), epochs), _round_epoch(f.get_float("stop"), epochs)
        return [i for i in range(1, epochs + 1) if lo <= i < hi and i % term == 0]

    def _renew_epoch(self, i: int, epochs: int) -> bool:
        t = self.conf.get_config("train")
        every = t.get_int("renew_means_every")
        return every > 0 and i >= _round_epoch(t.get_float("renew_means_start"), epochs) and i % every == 1 % every

    def loss_weights(self, i: int, epochs: int) -> dict:
        """The reconstruction-loss weights of epoch ``i`` (schedule of the reference, see the schema)."""
        t = self.conf.get_config("train")
        w = conf_to_dict(self.conf, "train.losses")
        if not self.avatar.use_enh:
            w["mean_texture"] = 0.0  # plain XHand
        if i >= _round_epoch(t.get_float("late_start"), epochs):
            w["photometric"] *= t.get_float("late_photometric_scale")
            if self.avatar.use_enh:
                w["lap_delta"] = t.get_float("late_lap_delta")
        return w

    def _run_train(self) -> bool:
        t = self.conf.get_config("train")
        epochs = t.get_int("epochs")
        rounds = set(self.finetune_epochs(epochs))
        d = self.data
        batch = max(1, t.get_int("batch_size"))
        bar = self.log.progress(range(self.epoch, epochs), desc="train", initial=self.epoch, total=epochs)
        for _ in bar:
            if self._stop_requested():
                return False
            i = self.epoch + 1
            if self._renew_epoch(i, epochs):
                self.avatar.renew_means(d.pose, mode=t.get_string("renew_mode"))
                self.log.info("epoch %d: renewed the networks' means (%s)", i, t.get_string("renew_mode"))
            if i in rounds:
                self.finetune_round(i)
            weights = self.loss_weights(i, epochs)
            gen = keyed_generator(self.seed, "train", i)
            frames = torch.randperm(d.num_frames, generator=gen).tolist()
            totals = []
            for f in frames:
                views = self._views_of(gen, t.get_int("views_per_frame"))
                for k in range(0, len(views), batch):
                    terms = self._train_step(f, views[k:k + batch], weights)
                    totals.append(float(terms["total"].detach()))
            self.epoch = i
            self._epochs_this_run += 1
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(totals):.4f}")
            if self.conf.get_int("ckpt_every") > 0 and i % self.conf.get_int("ckpt_every") == 0 and i < epochs:
                self.save()
        return True

    def _train_step(self, frame: int, views: list[int], weights: dict) -> dict:
        t0 = time.time()
        d = self.data
        out = self.avatar(d.pose[frame], d.trans[frame], d.cameras(frame, views), views, renderer=self.renderer)
        sr, mask = self.sr[frame, views].float(), d.get("mask", frame, views)
        valid = mask * out["coverage"].to(mask.dtype)
        terms = L.reconstruction_losses(
            out, sr, valid, laplacian=self.ops["laplacian"], edges=self.ops["edges"],
            rest_sq_lengths=self.ops["rest_sq_lengths"], weights_init=self.avatar.weights_init,
            delta_anchor=self.prephase_result.get("delta"), perceptual=self.perceptual, mask=mask, cfg=weights)
        self._optimise(self.optimizer, terms)
        self.timing["train_step_s"].append(time.time() - t0)
        return terms

    # ---- GIIF fine-tuning ---------------------------------------------------------------------
    @torch.no_grad()
    def target_unconfidence(self, frames: Sequence[int] | None = None) -> dict:
        """Per-vertex colour variance of the current SR targets across the views of each frame.

        Returns ``{"mean_var": float, "var": (V,) mean over frames of the vertices seen twice or more}``.
        """
        d = self.data
        frames = range(d.num_frames) if frames is None else frames
        total = torch.zeros(self.avatar.num_verts, device=self.device)
        count = torch.zeros_like(total)
        values = []
        for f in frames:
            uv, vis = self._vertex_projection(f, list(range(d.num_views)))
            _, var, n = L.vertex_color_stats(self.sr[f].float(), uv, vis)
            seen = n >= 2
            if seen.any():
                values.append(float(var[seen].mean()))
            total += var * seen
            count += seen
        return {"mean_var": float(np.mean(values)) if values else float("nan"), "var": total / count.clamp(min=1)}

    @torch.no_grad()
    def _vertex_projection(self, frame: int, views: list[int]):
        d = self.data
        batch = max(1, self.conf.get_int("eval.batch_size"))
        geo = self.avatar.forward_geometry(d.pose[frame], d.trans[frame])
        uvs, viss = [], []
        for k in range(0, len(views), batch):
            vb = views[k:k + batch]
            out = self.avatar.render(geo["verts_posed"], geo["albedo"], d.cameras(frame, vb), vb,
                                     renderer=self.renderer)
            uvs.append(out["uv_pix"])
            viss.append(out["visible"])
        return torch.cat(uvs), torch.cat(viss)

    def finetune_round(self, epoch: int) -> dict:
        """One adaptive fine-tuning round of GIIF (paper 3.3-3.4.2), then regenerate the SR targets."""
        fconf = self.conf.get_config("finetune")
        d = self.data
        round_index = len(self.history)
        gen = keyed_generator(self.seed, "finetune", epoch)
        frames = torch.randperm(d.num_frames, generator=gen).tolist()[:max(1, fconf.get_int("num_frames"))]
        views = self._views_of(keyed_generator(self.seed, "finetune_views"), fconf.get_int("num_views"))
        batch = max(1, fconf.get_int("batch_size"))
        inner = fconf.get_int("inner_epochs")
        weights = conf_to_dict(self.conf, "finetune.weights")
        vis_frame = frames[0]
        before = self.target_unconfidence()
        sr_before = self.sr[vis_frame, views[:batch]].float()
        self.log.info("epoch %d: GIIF fine-tuning round %d (%d inner epochs x %d frames x %d views), "
                      "unconfidence (mean per-vertex variance of the SR targets) %.6f",
                      epoch, round_index, inner, len(frames), len(views), before["mean_var"])
        start = time.time()
        prev_mean = prev_count = None
        inner_vars, inner_means = [], []
        bar = self.log.progress(range(inner), desc=f"finetune {round_index}")
        for e in bar:
            var_sum = torch.zeros(self.avatar.num_verts, device=self.device)
            var_cnt = torch.zeros_like(var_sum)
            epoch_terms = defaultdict(list)
            for f in frames:
                for k in range(0, len(views), batch):
                    vb = views[k:k + batch]
                    terms, var, count = self._finetune_step(f, vb, weights, prev_mean, prev_count)
                    prev_mean, prev_count = terms["vertex_mean"], terms["vertex_count"]
                    seen = count >= 2
                    var_sum += var * seen
                    var_cnt += seen
                    for key in ("total", "wavelet", "consistency", "pose_consistency", "disc"):
                        if key in terms:
                            epoch_terms[key].append(float(terms[key].detach()))
            per_vertex = var_sum / var_cnt.clamp(min=1)
            inner_vars.append(per_vertex)
            inner_means.append(float(per_vertex[var_cnt > 0].mean()) if (var_cnt > 0).any() else float("nan"))
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(epoch_terms['total']):.4f}", var=f"{inner_means[-1]:.5f}")
        steps_done = time.time()
        self.sr = self._generate_sr(self.giif)
        regenerated = time.time()
        after = self.target_unconfidence()
        seconds = time.time() - start
        self.timing["sr_regeneration_s"].append(regenerated - steps_done)
        record = {"round": round_index, "epoch": epoch, "unconfidence_before": before["mean_var"],
                  "unconfidence_after": after["mean_var"], "inner_epoch_mean_var": inner_means,
                  "seconds": seconds, "step_seconds": steps_done - start,
                  "regeneration_seconds": regenerated - steps_done}
        self.history.append(record)
        self.log.info("round %d done in %.1f s: unconfidence %.6f -> %.6f (inner epochs: %s)", round_index, seconds,
                      before["mean_var"], after["mean_var"], ", ".join(f"{v:.6f}" for v in inner_means))
        self.log.log_scalars(epoch, {"unconfidence_before": before["mean_var"],
                                     "unconfidence_after": after["mean_var"]}, prefix="finetune")
        self._save_round_vis(round_index, inner_vars[0], inner_vars[-1], vis_frame, views[:batch], sr_before)
        return record

    def _finetune_step(self, frame: int, views: list[int], weights: dict, prev_mean, prev_count):
        t0 = time.time()
        d = self.data
        with torch.no_grad():
            out = self.avatar(d.pose[frame], d.trans[frame], d.cameras(frame, views), views, renderer=self.renderer)
        mask = d.get("mask", frame, views)
        fconf = self.conf.get_config("finetune")
        sr = giif_decode(self.giif, d.get("lr", frame, views), d.get("normal", frame, views), d.size,
                         fconf.get_int("chunk"), fconf.get_bool("checkpoint_chunks"))
        # Masked like the targets: the background carries no signal (and gets no gradient).
        sr = sr * mask
        terms = L.finetune_losses(sr, self.sr_orig[frame, views].float(), out["image"], out["uv_pix"],
                                  out["visible"], mask=mask, disc=self.disc, prev_mean=prev_mean,
                                  prev_count=prev_count, cfg=weights)
        loss_terms = {k: v for k, v in terms.items() if k not in ("vertex_mean", "vertex_count", "unconfidence")}
        check_finite(self.step, loss_terms)
        self.giif_optimizer.zero_grad(set_to_none=True)
        loss_terms["total"].backward()
        self.giif_optimizer.step()
        self.ft_step = getattr(self, "ft_step", 0) + 1
        if self.ft_step % max(1, self.conf.get_int("log_every")) == 0:
            self.log.log_losses(self.ft_step, {k: v.detach() for k, v in loss_terms.items()}, prefix="finetune")
        _, var, count = L.vertex_color_stats(sr.detach(), out["uv_pix"], out["visible"])
        self.timing["finetune_step_s"].append(time.time() - t0)
        return terms, var, count

    @torch.no_grad()
    def _save_round_vis(self, round_index: int, var_first, var_last, frame: int, views: list[int], sr_before) -> None:
        """Unconfidence before/after a round: OBJs of the canonical mesh coloured by the per-vertex variance
        of the first and last inner epoch, and a PNG of one frame: SR targets and their per-vertex variance
        across the views drawn on the surface, before | after the round."""
        from utils.image_io import make_grid, write_image
        from utils.geometry.mesh_io import save_obj

        folder = self.run_dir / "finetune"
        scale = self.conf.get_float("finetune.weights.unconf_scale")
        d = self.data
        geo = self.avatar.forward_geometry(d.pose[frame], d.trans[frame])
        for tag, var in (("first", var_first), ("last", var_last)):
            save_obj(folder / f"round{round_index:02d}_unconfidence_{tag}.obj", geo["verts_canonical"].cpu(),
                     self.avatar.faces.cpu(), jet((scale * var).clamp(0, 1)).cpu())
        out = self.avatar.render(geo["verts_posed"], geo["albedo"], d.cameras(frame, views), views,
                                 renderer=self.renderer)
        sr_after = self.sr[frame, views].float()
        tiles, labels = [], []
        for name, sr in (("before", sr_before), ("after", sr_after)):
            _, var, _ = L.vertex_color_stats(sr, out["uv_pix"], out["visible"])
            unconf = surface_unconfidence(self.renderer, var, out["rast"], self.avatar.faces, scale)
            for b in range(sr.shape[0]):
                tiles += [sr[b], unconf[b]]
                labels += [f"SR {name}", f"U {name}"]
        write_image(folder / f"round{round_index:02d}_unconfidence.png",
                    make_grid(tiles, labels, ncols=2 * sr_before.shape[0]))

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

    def eval_selection(self) -> tuple[list[int], list[str], dict]:
        """Frames and cameras to evaluate and, for cameras not fitted, the fitted camera whose SH they use."""
        e = self.conf.get_config("eval")
        d = self.conf.get_config("data")
        ckpt = self.eval_ckpt
        fit = ckpt["fit"]
        meta = synthetic_meta_entry(d.get_string("data_path"), d.get_string("split"), d.get_string("capture"),
                                    d.get_string("sequence"))
        cameras = [str(c) for c in e.get_list("cameras")] or list(fit["cameras"])
        if e.get_bool("include_heldout_cameras") and meta:
            cameras += [c for c in meta.get("heldout_cameras", []) if c not in cameras]
        full = self._read_sequence(cameras, num_frames=None)
        frames = [int(f) for f in e.get_list("frames")]
        if not frames:
            candidates = list(meta["heldout_frame_ids"]) if meta and meta.get("heldout_frame_ids") else list(full.frame_ids)
            if e.get_int("num_frames") > 0:
                candidates = candidates[:e.get_int("num_frames")]
            exclude = set(fit["frame_ids"]) if e.get_bool("exclude_fit_frames") else set()
            frames = [f for f in candidates if f not in exclude]
        if not frames:
            raise SRHandInputError("no frame to evaluate: every candidate frame was used for fitting (set eval.frames)")
        positions = [full.frame_index(f) for f in frames]
        self.eval_seq = full.select(frames=positions)
        centres = camera_centres(full.cameras.R, full.cameras.t)
        fit_centres = fit["camera_centres"]
        substitutes = {}
        for v, name in enumerate(cameras):
            if name not in fit["cameras"]:
                nearest = int((fit_centres - centres[v]).norm(dim=-1).argmin())
                substitutes[name] = fit["cameras"][nearest]
        return frames, cameras, substitutes

    def _gt_mesh(self, frame_index: int, frame_id: int):
        gt_dir = self.conf.get_string("eval.gt_mesh_dir")
        if gt_dir:
            from utils.geometry.mesh_io import load_obj

            path = Path(gt_dir) / f"{frame_id}.obj"
            if not path.is_file():
                raise FileNotFoundError(f"eval.gt_mesh_dir = {gt_dir!r}: no mesh for frame {frame_id} ({path}); "
                                        "export one with an sr_source = hr run and eval.export_meshes = true")
            verts, faces = load_obj(path)[:2]
            return torch.as_tensor(verts, dtype=torch.float32), torch.as_tensor(faces, dtype=torch.long), str(gt_dir)
        if self.eval_seq.gt_mesh_path:
            verts, faces = self.eval_seq.gt_mesh(frame_index)
            return verts, faces, self.eval_seq.gt_mesh_path
        return None, None, None

    @torch.no_grad()
    def evaluate(self, save_vis: bool = False) -> dict:
        """Metrics on held-out frames (and cameras): see the module docstring and docs/srhand_model.md."""
        from utils.image_io import make_grid, save_gif, write_image
        from utils.geometry.mesh_io import save_obj
        from utils.metrics.geometry import inconsistency, p2p_mm, sample_at_pixels

        start, cpu_start = time.time(), time.process_time()
        e = self.conf.get_config("eval")
        dconf = self.conf.get_config("data")
        frames, cameras, substitutes = self.eval_selection()
        fit_cams = self.eval_ckpt["fit"]["cameras"]
        sh_index = [fit_cams.index(substitutes.get(c, c)) for c in cameras]
        for cam, sub in substitutes.items():
            self.log.info("camera %s was not fitted: its SH lighting is that of the nearest fitted camera %s", cam, sub)
        perceptual = None
        if e.get_string("perceptual") != "none":
            perceptual = metrics.PerceptualMetric(e.get_string("perceptual"), net="alex", device=self.device)
        perc_key = perceptual.name.lower().replace("-", "") if perceptual is not None else None
        avatar = self.avatar.eval()
        batch = max(1, e.get_int("batch_size"))
        records: list[dict] = []
        colours = defaultdict(list)
        visibility = []
        p2p, p2p_mano = {}, {}
        gt_source = None
        vis_frames = e.get_int("max_vis_frames") if save_vis else 0
        gif_frames = []
        export = e.get_bool("export_meshes") or save_vis
        giif = self.giif.eval() if self.giif is not None else None
        bar = self.log.progress(list(enumerate(frames)), desc="evaluate")
        for fi, frame_id in bar:
            geo = avatar.forward_geometry(self.eval_seq.mano_pose[fi].to(self.device),
                                          self.eval_seq.mano_trans[fi].to(self.device))
            panel_rows = []
            for k in range(0, len(cameras), batch):
                views = list(range(k, min(k + batch, len(cameras))))
                s = {key: v.to(self.device) for key, v in
                     sample_frame(self.eval_seq, fi, views, dconf, with_raw=True).items()}
                size = tuple(s["hr"].shape[-2:])
                cams = Cameras(K=s["K"], R=s["R"], t=s["t"], image_size=size, names=[cameras[v] for v in views])
                out = avatar.render(geo["verts_posed"], geo["albedo"], cams, [sh_index[v] for v in views],
                                    renderer=self.renderer)
                render, mask = out["image"], s["mask"]
                pred_mask = (out["mask"] > 0.5).to(mask.dtype)
                sr = self._sr_batch(giif, self.sr_source, s["lr"], s["normal"], mask, s["hr"])
                bicubic = bicubic_upsample(s["lr"], size) * mask
                rows = self._image_metrics(render, s["hr"], mask, pred_mask, s["raw"], perceptual, perc_key)
                sr_rows = self._sr_metrics(sr, s["hr"], mask, perceptual, perc_key) if self.sr_source != "hr" else None
                bic_rows = self._sr_metrics(bicubic, s["hr"], mask, perceptual, perc_key)
                for b, v in enumerate(views):
                    rec = {"frame_id": frame_id, "camera": cameras[v], "fitted_camera": cameras[v] in fit_cams,
                           "render": rows[b], "sr_bicubic": bic_rows[b]}
                    if sr_rows is not None:
                        rec["sr"] = sr_rows[b]
                    records.append(rec)
                visible = out["visible"]
                visibility.append(visible.cpu())
                for name, images in (("sr", sr), ("gt_hr", s["hr"]), ("bicubic", bicubic)):
                    colours[name].append(sample_at_pixels(images, out["uv_pix"]).cpu())
                if fi < vis_frames:
                    albedo_img = self.renderer.interpolate(geo["albedo"][None].expand(len(views), -1, -1), out["rast"],
                                                           avatar.faces).permute(0, 3, 1, 2)
                    lr_up = F.interpolate(s["lr"], size=size, mode="nearest")
                    panel_rows.append({"lr": lr_up, "sr": sr, "render": render, "shading": out["shading_only"],
                                       "normal": normal_to_rgb(out["normal"]), "albedo": albedo_img, "gt": s["hr"],
                                       "uv": out["uv_pix"], "visible": visible, "rast": out["rast"]})
                if k == 0 and save_vis:
                    gif_frames.append(make_grid([s["hr"][0], render[0], out["shading_only"][0]],
                                                [f"GT {frame_id}", "render", "geometry"]))
            # geometry
            gt_v, gt_f, gt_source = self._gt_mesh(fi, frame_id)
            if gt_v is not None:
                p2p[frame_id] = p2p_mm(geo["verts_posed"].cpu(), avatar.faces.cpu(), gt_v, gt_f,
                                       num_samples=e.get_int("p2p_samples"))
                p2p_mano[frame_id] = p2p_mm(self.eval_seq.verts_world(fi), self.eval_seq.faces, gt_v, gt_f,
                                            num_samples=e.get_int("p2p_samples"))
            if export:
                save_obj(self.run_dir / "meshes" / f"{frame_id}.obj", geo["verts_posed"].cpu(), avatar.faces.cpu(),
                         geo["albedo"].cpu())
            if panel_rows:
                self._write_panel(panel_rows, frame_id, e.get_int("max_vis_views"), make_grid, write_image)
        if gif_frames:
            save_gif(self.run_dir / "vis" / f"{cameras[0]}.gif", gif_frames, fps=e.get_float("gif_fps"))

        window = e.get_int("inconsistency_window") or None
        vis_all = torch.cat(visibility)
        if window is not None:
            window = min(window, vis_all.shape[0])
        incon = {name: inconsistency(torch.cat(c), vis_all, window=window) for name, c in colours.items()}
        if self.sr_source == "hr":
            incon["sr"] = incon["gt_hr"]
        report = self._report(records, frames, cameras, substitutes, p2p, p2p_mano, gt_source, incon, window,
                              perceptual, time.time() - start)
        report["eval_cpu_seconds"] = time.process_time() - cpu_start
        return report

    def _image_metrics(self, render, hr, mask, pred_mask, raw, perceptual, perc_key) -> list[dict]:
        """Per-image metrics of the render: ``masked`` (both images masked by the GT MANO silhouette, statistics
        inside it), ``full`` (whole image, GT masked by the MANO silhouette) and ``predmask`` (the reference
        protocol: both images masked by the predicted silhouette, whole image)."""
        pairs = {"masked": (render * mask, hr, mask), "full": (render, hr, None),
                 "predmask": (render * pred_mask, raw * pred_mask, None)}
        return self._metrics_rows(pairs, perceptual, perc_key)

    def _sr_metrics(self, sr, hr, mask, perceptual, perc_key) -> list[dict]:
        return self._metrics_rows({"masked": (sr, hr, mask), "full": (sr, hr, None)}, perceptual, perc_key)

    @staticmethod
    def _metrics_rows(pairs: dict, perceptual, perc_key) -> list[dict]:
        rows = None
        for region, (pred, gt, m) in pairs.items():
            values = {f"psnr_{region}": metrics.psnr(pred, gt, mask=m, reduction="none"),
                      f"ssim_{region}": metrics.ssim(pred, gt, mask=m, reduction="none")}
            if perceptual is not None:
                values[f"{perc_key}_{region}"] = perceptual(pred, gt, reduction="none").cpu().numpy()
            if rows is None:
                rows = [{} for _ in range(pred.shape[0])]
            for key, vals in values.items():
                for b, value in enumerate(vals):
                    rows[b][key] = float(value)
        return rows

    def _write_panel(self, rows: list[dict], frame_id: int, max_views: int, make_grid, write_image) -> None:
        scale = self.conf.get_float("eval.unconf_vis_scale")
        cat = {k: torch.cat([r[k] for r in rows]) for k in rows[0]}
        _, var, _ = L.vertex_color_stats(cat["sr"], cat["uv"], cat["visible"])
        unconf = surface_unconfidence(self.renderer, var, cat["rast"], self.avatar.faces, scale)
        tiles, labels = [], []
        names = ["LR", "SR", "render", "geometry", "normals", "albedo", "GT", "unconfidence"]
        for b in range(min(max_views, cat["sr"].shape[0])):
            tiles += [cat["lr"][b], cat["sr"][b], cat["render"][b], cat["shading"][b], cat["normal"][b],
                      cat["albedo"][b], cat["gt"][b], unconf[b]]
            labels += names
        write_image(self.run_dir / "vis" / f"frame_{frame_id}.png", make_grid(tiles, labels, ncols=len(names)))

    def _report(self, records, frames, cameras, substitutes, p2p, p2p_mano, gt_source, incon, window, perceptual,
                seconds) -> dict:
        def mean_of(rows: list[dict]) -> dict:
            keys = rows[0].keys() if rows else []
            return {k: float(np.mean([r[k] for r in rows])) for k in keys}

        groups = {"all": records, "fitted_cameras": [r for r in records if r["fitted_camera"]],
                  "other_cameras": [r for r in records if not r["fitted_camera"]]}
        groups = {k: v for k, v in groups.items() if v}
        ckpt = self.eval_ckpt
        fit = ckpt["fit"]
        report = {
            "config": {"sr_source": self.sr_source, "use_enh": bool(self.avatar.use_enh),
                       "scale": fit["hr_size"] / fit["lr_size"], "hr_size": fit["hr_size"], "lr_size": fit["lr_size"],
                       "degradation": fit["degradation"], "subdivision_levels": self.avatar_args["subdivision_levels"],
                       "num_vertices": self.avatar.num_verts, "sequence": fit["sequence"],
                       "fit_frames": len(fit["frame_ids"]), "fit_views": len(fit["cameras"]),
                       "epoch": ckpt["epoch"], "phase": ckpt.get("phase")},
            "eval_frames": frames, "eval_cameras": cameras, "sh_substitutes": substitutes,
            "num_samples": len(records),
            "perceptual": perceptual.label if perceptual is not None else None,
            "perceptual_key": perceptual.name.lower().replace("-", "") if perceptual is not None else None,
            "render": {k: mean_of([r["render"] for r in v]) for k, v in groups.items()},
            "sr": ({k: mean_of([r["sr"] for r in v]) for k, v in groups.items()} if self.sr_source != "hr" else None),
            "sr_bicubic": {k: mean_of([r["sr_bicubic"] for r in v]) for k, v in groups.items()},
            "p2p_mm": float(np.mean(list(p2p.values()))) if p2p else None,
            "p2p_mm_mano": float(np.mean(list(p2p_mano.values()))) if p2p_mano else None,
            "p2p_mm_per_frame": {str(k): v for k, v in p2p.items()},
            "gt_mesh_source": gt_source,
            "inconsistency": {"sr": incon["sr"], "gt_hr": incon["gt_hr"], "bicubic": incon["bicubic"],
                              "window": window},
            "finetune_rounds": ckpt.get("history", self.history),
            "mano_noise": self.mano_noise_report(fit["frame_ids"], frames),
            "eval_seconds": seconds,
        }
        if self.timing:
            report["timing"] = self.timing_summary()
        elif getattr(self, "model_folder", None) is not None and (self.model_folder / "timing.json").is_file():
            report["timing"] = json.loads((self.model_folder / "timing.json").read_text())  # of the training run
        return report

    def run_eval(self, save_vis: bool = False) -> dict:
        """``--eval``: :meth:`evaluate`, then ``metrics.json`` and a console table."""
        report = self.evaluate(save_vis=save_vis)
        path = self.run_dir / "metrics.json"
        path.write_text(json.dumps(report, indent=2))
        self.log.info("SRHand evaluation:\n%s", format_report(report))
        self.log.info("metrics written to %s", path)
        return report

    def prepare_eval_from_training(self) -> None:
        """Evaluate the avatar just trained in this process (no reload)."""
        self.eval_ckpt = make_checkpoint(self.stage, self._avatar_entry(), epoch=self.epoch, phase=self.phase,
                                         history=self.history, **self._provenance())
        self.avatar.eval()


def format_report(report: dict) -> str:
    """A plain-text table of an :meth:`SRHandTrainer.evaluate` report."""
    perc, pk = report.get("perceptual"), report.get("perceptual_key")
    cfg = report["config"]
    lines = [f"sr_source={cfg['sr_source']} use_enh={cfg['use_enh']} x{cfg['scale']:g} "
             f"({cfg['lr_size']} -> {cfg['hr_size']}), {report['num_samples']} images "
             f"({len(report['eval_frames'])} frames x {len(report['eval_cameras'])} cameras)"]
    header = ["rows", "group", "PSNR", "SSIM"] + ([perc] if perc else []) + ["PSNR full", "SSIM full"]
    lines += [" | ".join(header), " | ".join("---" for _ in header)]
    for name in ("render", "sr", "sr_bicubic"):
        block = report.get(name)
        if not block:
            continue
        for group, row in block.items():
            cells = [name, group, f"{row['psnr_masked']:.2f}", f"{row['ssim_masked']:.4f}"]
            if perc:
                cells.append(f"{row[f'{pk}_masked']:.4f}")
            cells += [f"{row['psnr_full']:.2f}", f"{row['ssim_full']:.4f}"]
            lines.append(" | ".join(cells))
    if report.get("p2p_mm") is not None:
        lines.append(f"P2P {report['p2p_mm']:.3f} mm (MANO input: {report['p2p_mm_mano']:.3f} mm; "
                     f"ground truth: {report['gt_mesh_source']})")
    inc = report["inconsistency"]
    lines.append(f"inconsistency: SR {inc['sr']:.6f}, GT HR {inc['gt_hr']:.6f}, bicubic {inc['bicubic']:.6f}"
                 + (f" (window {inc['window']})" if inc["window"] else ""))
    if report.get("sh_substitutes"):
        lines.append("SH of the nearest fitted camera used for: "
                     + ", ".join(f"{k} <- {v}" for k, v in report["sh_substitutes"].items()))
    if perc:
        lines.append(f"(perceptual metric: {perc}; masked = inside the GT MANO silhouette, full = whole image)")
    return "\n".join(lines)
