"""Models of the SRHand stage: the avatar, GIIF (frozen copy and fine-tuned copy), the discriminator, their
optimisers, and the SR targets GIIF (or bicubic / HR) produces for the avatar.

Also the small tensor helpers the phases share: chunked GIIF decoding, the fine-tuned parameter
selection, the unconfidence splat and the jet colour map.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from models import registry
from models.avatar import MEAN_HAND_ALBEDO_RGB, HandAvatar
from models.sr_coords import make_coord
from trainers.sr_eval import bicubic_upsample
from trainers.srhand.sequence import SRHandInputError
from utils.checkpoint import (
    CheckpointError,
    build_model,
    load_checkpoint,
)
from utils.config import ConfigError, conf_to_dict
from utils.metrics.perceptual import PreparedTarget

SR_SOURCES = ("giif_finetuned", "giif", "bicubic", "hr")


PHASES = ("albedo", "sfs", "train", "done")


AVATAR_NAME = "hand_avatar"


GIIF_PARTS = ("encoder", "normal_encoder", "imnet")


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


def giif_decode_masked(giif, lr: torch.Tensor, normal: torch.Tensor, mask: torch.Tensor, chunk: int,
                       checkpoint: bool = False, feats=None) -> torch.Tensor:
    """GIIF output ``(B, 3, H, W)`` queried only at the pixels where ``mask (B, 1, H, W) > 0``, 0 elsewhere.

    Equals ``giif_decode(giif, lr, normal, mask.shape[-2:], chunk, checkpoint) * mask`` for a {0, 1} mask
    (each query is independent; the values of the queried pixels differ at most by float rounding of the
    MLP's row blocks) at the cost of the masked pixels only. Views are padded to the largest mask of the
    batch; the padded queries are decoded and dropped. ``feats``: ``giif.encode(lr, normal)`` when already at
    hand.
    """
    B, _, H, W = mask.shape
    if feats is None:
        feats = giif.encode(lr, normal if giif.use_normal else None)
    inside = mask.reshape(B, H * W) > 0
    counts = inside.sum(1)
    width = max(1, int(counts.max()))  # one host sync per step
    order = torch.argsort((~inside).to(torch.uint8), dim=1, stable=True)[:, :width]  # (B, Q) masked pixels first
    valid = torch.arange(width, device=mask.device)[None] < counts[:, None]  # (B, Q)
    coord = make_coord((H, W), device=lr.device, dtype=lr.dtype)[order]  # (B, Q, 2)
    cell = coord.new_tensor([2.0 / H, 2.0 / W]).expand(B, width, 2)
    chunk = max(1, int(chunk))
    preds = []
    for start in range(0, width, chunk):
        c, ce = coord[:, start:start + chunk], cell[:, start:start + chunk]
        if checkpoint and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint as ckpt

            preds.append(ckpt(giif.query, feats, c, ce, use_reentrant=False))
        else:
            preds.append(giif.query(feats, c, ce))
    pred = torch.cat(preds, dim=1)  # (B, Q, 3)
    flat = (order + torch.arange(B, device=mask.device)[:, None] * (H * W))[valid]
    out = pred.new_zeros(B * H * W, pred.shape[-1]).index_copy(0, flat, pred[valid])
    return out.view(B, H, W, -1).permute(0, 3, 1, 2).contiguous()


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

    def _resize(self, image: torch.Tensor) -> torch.Tensor:
        if self.size and tuple(image.shape[-2:]) != (self.size, self.size):
            image = F.interpolate(image, size=(self.size, self.size), mode="area")
        return image

    def prepare(self, target: torch.Tensor):
        """The resized ``target`` encoded once (``PerceptualLoss.prepare``) when the network can, else
        the resized target itself; either can be passed as ``target`` to several calls."""
        target = self._resize(target)
        return self.net.prepare(target) if hasattr(self.net, "prepare") else target

    def __call__(self, pred: torch.Tensor, target) -> torch.Tensor:
        target = target if isinstance(target, PreparedTarget) else self._resize(target)
        return self.net(self._resize(pred), target)


def round_epoch(fraction: float, epochs: int) -> int:
    return int(math.floor(fraction * epochs + 0.5))


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


class ModelsMixin:
    """Methods of :class:`trainers.srhand.SRHandTrainer` (setup); state lives on the trainer."""

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
