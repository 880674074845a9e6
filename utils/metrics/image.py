"""Image metrics: PSNR (standard and the authors' variant), SSIM, and a perceptual metric.

Inputs are RGB images in [0, 1]: tensors ``(B, 3, H, W)`` / ``(3, H, W)`` or numpy ``(H, W, 3)`` /
``(B, H, W, 3)``. Masks are ``(H, W)``, ``(H, W, 1)``, ``(1, H, W)``, ``(B, 1, H, W)`` or
``(B, H, W)``, a pixel is valid where ``mask > 0.5``. Every function computes the metric per image
and returns the mean over the batch (``reduction="none"`` gives the per-image values).

Definitions
-----------
``psnr``
    Standard PSNR: ``MSE = sum over valid pixels and the 3 channels of (clip(pred, 0, 1) - gt)^2 /
    (3 * number of valid pixels)``, ``PSNR = 10 log10(1 / MSE)`` dB. Without a mask every pixel is
    valid. The prediction is clipped to [0, 1] (as the authors do); identical images give ``inf``.
``psnr_reference``
    What the authors' ``calculate_psnr`` computes (SRHand repository, ``models/utils.py``): the squared
    error summed over the *whole* image (background included) divided by ``3 * mask.sum()``. With a
    mask this is not the MSE inside the mask: background errors count, and the mean is over the mask
    area. Kept to compare with numbers produced by their code; equals ``psnr`` without a mask and
    whenever the prediction is exact outside the mask.
``ssim``
    ``skimage.metrics.structural_similarity(channel_axis=-1, data_range=1)`` (7x7 uniform window, the
    authors' call). With a mask: the full SSIM map averaged over valid pixels and channels, excluding
    the 3-pixel image border that skimage also excludes from its mean (so an all-ones mask gives the
    unmasked value).
``PerceptualMetric``
    LPIPS-alex (v0.1) when its torchvision trunk weights are cached, else ST-LPIPS-alex (see
    ``utils.metrics.perceptual``). Its ``name`` must be reported with every value. Inputs are mapped to
    [-1, 1] (the authors fed [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from utils.metrics.perceptual import as_nchw, choose_perceptual


def _as_bhwc(image: Any, what: str) -> np.ndarray:
    """float64 numpy ``(B, H, W, C)`` from a tensor ``([B,] C, H, W)`` or numpy ``([B,] H, W, C)``."""
    if torch.is_tensor(image):
        array = image.detach().double().cpu().numpy()
        array = array[None] if array.ndim == 3 else array
        if array.ndim != 4:
            raise ValueError(f"{what}: expected a tensor (B, C, H, W) or (C, H, W), got {tuple(image.shape)}")
        return np.transpose(array, (0, 2, 3, 1))
    array = np.asarray(image, dtype=np.float64)
    array = array[None] if array.ndim == 3 else array
    if array.ndim != 4:
        raise ValueError(f"{what}: expected an array (B, H, W, C) or (H, W, C), got {np.shape(image)}")
    return array


def _as_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    """bool numpy ``(B, H, W)`` for images of ``shape = (B, H, W, C)``."""
    batch, height, width = shape[:3]
    m = mask.detach().cpu().numpy() if torch.is_tensor(mask) else np.asarray(mask)
    m = np.squeeze(m)
    if m.ndim == 2:
        m = m[None]
    if m.shape[-2:] != (height, width) or m.shape[0] not in (1, batch):
        raise ValueError(f"mask of shape {np.shape(mask)} does not fit images of (B, H, W) = {shape[:3]}")
    return np.broadcast_to(m > 0.5, (batch, height, width))


def _prepare(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    pred_a, gt_a = _as_bhwc(pred, "pred"), _as_bhwc(gt, "gt")
    if pred_a.shape != gt_a.shape:
        raise ValueError(f"pred {pred_a.shape} and gt {gt_a.shape} differ in shape (as (B, H, W, C))")
    return np.clip(pred_a, 0.0, 1.0), gt_a


def _reduce(values: np.ndarray, reduction: str):
    if reduction == "mean":
        return float(np.mean(values))
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def _to_psnr(mse: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -10.0 * np.log10(mse)


def psnr(pred: Any, gt: Any, mask: Any = None, reduction: str = "mean"):
    """Standard PSNR in dB over the valid pixels (see the module docstring).

    Returns:
        the mean over images (float), or per-image values ``(B,)`` with ``reduction="none"``.

    Raises:
        ValueError: mismatched shapes, or a mask with no valid pixel in some image.
    """
    pred_a, gt_a = _prepare(pred, gt)
    squared = (pred_a - gt_a) ** 2
    channels = squared.shape[-1]
    if mask is None:
        mse = squared.reshape(len(squared), -1).mean(axis=1)
    else:
        valid = _as_mask(mask, squared.shape)
        count = valid.reshape(len(valid), -1).sum(axis=1)
        if (count == 0).any():
            raise ValueError(
                f"PSNR mask has no valid pixel in image(s) {np.flatnonzero(count == 0).tolist()}"
            )
        mse = (squared * valid[..., None]).reshape(len(squared), -1).sum(axis=1) / (channels * count)
    return _reduce(_to_psnr(mse), reduction)


def psnr_reference(pred: Any, gt: Any, mask: Any = None, reduction: str = "mean"):
    """The authors' ``calculate_psnr``: whole-image squared error / (3 x mask pixels), in dB.

    Returns:
        the mean over images, or per-image values with ``reduction="none"``.
    """
    pred_a, gt_a = _prepare(pred, gt)
    squared_sum = ((pred_a - gt_a) ** 2).reshape(len(pred_a), -1).sum(axis=1)
    channels = pred_a.shape[-1]
    if mask is None:
        area = np.full(len(pred_a), pred_a.shape[1] * pred_a.shape[2], dtype=np.float64)
    else:
        area = _as_mask(mask, pred_a.shape).reshape(len(pred_a), -1).sum(axis=1).astype(np.float64)
        if (area == 0).any():
            raise ValueError("psnr_reference: empty mask")
    return _reduce(_to_psnr(squared_sum / (channels * area)), reduction)


def ssim(pred: Any, gt: Any, mask: Any = None, reduction: str = "mean"):
    """SSIM (skimage, 7x7 uniform window, data range 1); with a mask, the SSIM map averaged inside it.

    Returns:
        the mean over images, or per-image values with ``reduction="none"``.
    """
    from skimage.metrics import structural_similarity

    pred_a, gt_a = _prepare(pred, gt)
    valid = None if mask is None else _as_mask(mask, pred_a.shape)
    values = []
    for index in range(len(pred_a)):
        if valid is None:
            values.append(structural_similarity(pred_a[index], gt_a[index], channel_axis=-1, data_range=1.0))
            continue
        _, ssim_map = structural_similarity(
            pred_a[index], gt_a[index], channel_axis=-1, data_range=1.0, full=True
        )
        inside = valid[index].copy()
        border = 3  # (win_size - 1) // 2 for skimage's default 7x7 window
        inside[:border] = inside[-border:] = False
        inside[:, :border] = inside[:, -border:] = False
        if not inside.any():
            raise ValueError(f"SSIM mask has no valid pixel away from the border in image {index}")
        values.append(float(ssim_map[inside].mean()))
    return _reduce(np.asarray(values), reduction)


class PerceptualMetric:
    """Perceptual distance for evaluation: LPIPS when possible offline, else ST-LPIPS (never random).

    Args:
        kind: ``"auto"``, ``"lpips"`` or ``"stlpips"`` (see ``utils.metrics.perceptual.choose_perceptual``).
        net: LPIPS trunk (``"alex"``, the authors' SRHand evaluation; ``"vgg"`` their GIIF one). The
            ST-LPIPS fallback uses the same network family.
        device: where to run it (default CPU; moved to the inputs' device on each call otherwise).

    Attributes:
        name: ``"LPIPS"`` or ``"ST-LPIPS"``: report it with every number.
        label: ``"LPIPS-alex"``, ``"ST-LPIPS-alex"``, ...
        reason: why this network was chosen.
    """

    def __init__(self, kind: str = "auto", net: str = "alex", device: Any = None):
        choice = choose_perceptual(kind, net=net, fallback_net=net, purpose="metric")
        self.name, self.net, self.reason, self.label = choice.name, choice.net, choice.reason, choice.label
        self.module = choice.module
        if device is not None:
            self.module.to(device)

    @torch.no_grad()
    def __call__(self, pred: Any, gt: Any, reduction: str = "mean"):
        """Distance between ``pred`` and ``gt`` (RGB [0, 1]); lower is more similar. ``gt`` may be a
        :meth:`reference` of the ground truth, whose features are then not computed again.

        Returns:
            the mean over the batch (float), or a ``(B,)`` tensor with ``reduction="none"``.
        """
        ref = gt if isinstance(gt, PerceptualReference) else None
        pred_t = as_nchw(pred, "pred")
        gt_shape = ref.shape if ref is not None else as_nchw(gt, "gt").shape
        if pred_t.shape != gt_shape:
            raise ValueError(f"pred {tuple(pred_t.shape)} and gt {tuple(gt_shape)} differ in shape")
        device = self._device_for(pred_t)
        pred_t = pred_t.to(device).clamp(0.0, 1.0) * 2.0 - 1.0
        if ref is not None and ref.features is not None:
            values = self._distance(self._features(pred_t), ref.features).reshape(-1)
        else:
            gt_t = (ref.image if ref is not None else as_nchw(gt, "gt")).to(device) * 2.0 - 1.0
            values = self.module(pred_t, gt_t).reshape(-1)
        return _reduce_tensor(values, reduction)

    @torch.no_grad()
    def reference(self, gt: Any) -> PerceptualReference:
        """The ground truth ``gt`` (RGB [0, 1]) with its network features, to compare several predictions with
        it at the cost of one more network pass each (``metric(pred, reference)``); the values equal
        ``metric(pred, gt)``'s."""
        gt_t = as_nchw(gt, "gt")
        device = self._device_for(gt_t)
        feats = self._features(gt_t.to(device) * 2.0 - 1.0) if self._splits else None
        return PerceptualReference(gt_t, tuple(gt_t.shape), feats)

    def _device_for(self, x: torch.Tensor) -> torch.device:
        """The network's device, after moving it to ``x``'s when that is not the CPU."""
        device = next(self.module.parameters()).device
        if x.device != device and x.device.type != "cpu":
            device = x.device
            self.module.to(device)
        return device

    @property
    def _splits(self) -> bool:
        """Whether the network is the (ST-)LPIPS ``LPIPS`` module whose forward this class repeats in two
        halves (features, distance); other modules are called whole."""
        m = self.module
        return all(
            hasattr(m, a) for a in ("scaling_layer", "net", "lins", "L", "lpips", "version")
        ) and not getattr(m, "spatial", False)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(ST-)LPIPS's unit-normalised features of every layer of ``x`` (in [-1, 1]), as its forward."""
        m = self.module
        outs = m.net.forward(m.scaling_layer(x) if m.version == "0.1" else x)
        return [f / (torch.sqrt(torch.sum(f**2, dim=1, keepdim=True)) + 1e-10) for f in outs[: m.L]]

    def _distance(self, feats0: list[torch.Tensor], feats1: list[torch.Tensor]) -> torch.Tensor:
        """(ST-)LPIPS's distance ``(B, 1, 1, 1)`` of two feature lists, as its forward."""
        m = self.module
        value = 0
        for k in range(m.L):
            diff = (feats0[k] - feats1[k]) ** 2
            layer = m.lins[k](diff) if m.lpips else diff.sum(dim=1, keepdim=True)
            value = value + layer.mean([2, 3], keepdim=True)
        return value

    def __repr__(self) -> str:
        return f"PerceptualMetric({self.label}: {self.reason})"


@dataclass(frozen=True)
class PerceptualReference:
    """A ground-truth batch and its perceptual features (:meth:`PerceptualMetric.reference`); ``features`` is
    None for a network that is called whole."""

    image: torch.Tensor
    shape: tuple
    features: list | None


def _reduce_tensor(values: torch.Tensor, reduction: str):
    if reduction == "mean":
        return float(values.mean())
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
