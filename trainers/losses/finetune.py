"""Loss terms of GIIF's adaptive fine-tuning (paper sec. 3.4.2): wavelet, unconfidence-weighted
consistency, pose consistency and discriminator terms, and their weighted combination.

Conventions as in :mod:`trainers.losses`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from contextlib import contextmanager

import torch
import torch.nn as nn

from models import discriminator as disc_module
from trainers.losses.reconstruction import merge_weights, scalar_zero
from utils.metrics.geometry import sample_at_pixels

_DWT_CACHE: dict[tuple, nn.Module] = {}


def _dwt(levels: int, wave: str, mode: str, like: torch.Tensor) -> nn.Module:
    key = (levels, wave, mode, like.device, like.dtype)
    if key not in _DWT_CACHE:
        with warnings.catch_warnings():
            # pytorch_wavelets imports the deprecated pkg_resources (harmless; see requirements.txt)
            warnings.filterwarnings("ignore", message=".*pkg_resources.*")
            from pytorch_wavelets import DWTForward

        _DWT_CACHE[key] = DWTForward(J=levels, wave=wave, mode=mode).to(device=like.device, dtype=like.dtype)
    return _DWT_CACHE[key]


def wavelet_loss(
    sr: torch.Tensor,
    sr_orig: torch.Tensor,
    low_weight: float = 0.2,
    high_weight: float = 1.0,
    levels: int = 3,
    wave: str = "haar",
    mode: str = "zero",
) -> torch.Tensor:
    """``L_freq`` (paper eq. 9): keep the SR image's wavelet bands close to the pre-fine-tuning output.

    With ``(x_L, {x_H^l})`` = ``DWT_J(sr)`` and ``(y_L, {y_H^l})`` = ``DWT_J(sr_orig)``
    (``pytorch_wavelets.DWTForward``, Haar = db1, zero padding)::

        L = low_weight * mean|x_L - y_L| + high_weight * sum_l mean|x_H^l - y_H^l|

    per sample and band element. The reference sums the high bands over the *batch* before the L1
    (``|sum_b x_H - sum_b y_H|``), which lets errors of different images cancel; we do not.

    Args:
        sr: ``(B, 3, H, W)`` current GIIF output (with gradient).
        sr_orig: ``(B, 3, H, W)`` GIIF output before any fine-tuning (constant).
    Returns:
        Scalar.
    """
    dwt = _dwt(levels, wave, mode, sr)
    xl, xh = dwt(sr)
    yl, yh = dwt(sr_orig.to(sr.dtype))
    loss = low_weight * (xl - yl).abs().mean()
    for a, b in zip(xh, yh, strict=True):
        loss = loss + high_weight * (a - b).abs().mean()
    return loss


def vertex_color_stats(
    sr: torch.Tensor, uv_pix: torch.Tensor, visible: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-vertex colour mean and variance over the views that see the vertex.

    Colours ``c_bv`` are sampled **bilinearly** at the projected vertex positions (the reference
    takes the nearest pixel ``floor(255 uv)``). With ``n_v = sum_b vis_bv``::

        mu_v     = sum_b vis_bv c_bv / max(n_v, 1)                       (V, 3)
        sigma2_v = sum_b vis_bv sum_rgb (c_bv - mu_v)^2 / max(n_v, 1)     (V,)  summed over RGB

    Both carry gradient to ``sr`` (the reference computes ``mu`` from a detached copy). Vertices
    seen by no view get ``mu = 0``, ``sigma2 = 0``; seen by one view, ``sigma2 = 0``.

    Args:
        sr: ``(B, 3, H, W)`` SR images of the B views of one frame.
        uv_pix: ``(B, V, 2)`` projected vertex pixel coordinates in ``sr``'s resolution.
        visible: ``(B, V)`` bool visibility.
    Returns:
        ``mean (V, 3)``, ``var (V,)``, ``count (V,)`` (float).
    """
    if visible.shape != uv_pix.shape[:2]:
        raise ValueError(f"visible {tuple(visible.shape)} does not match uv_pix {tuple(uv_pix.shape)}")
    colors = sample_at_pixels(sr, uv_pix)  # (B, V, 3)
    w = visible.to(colors.dtype)[..., None]
    count = w.sum(0)  # (V, 1)
    denom = count.clamp(min=1.0)
    mean = (colors * w).sum(0) / denom
    var = ((colors - mean) ** 2 * w).sum(0).sum(-1) / denom[:, 0]
    return mean, var, count[:, 0]


def unconfidence_map(
    var: torch.Tensor,
    uv_pix: torch.Tensor,
    visible: torch.Tensor,
    size: tuple[int, int],
    scale: float = 100.0,
    detach: bool = False,
) -> torch.Tensor:
    """Unconfidence map ``U``: per-vertex variance splatted at the visible vertices' pixels.

    ``U[b, 0, floor(v), floor(u)] = clamp(scale * sigma2_v, 0, 1)`` for every vertex ``v`` visible in
    view ``b``, 0 elsewhere. Several vertices in one pixel: the maximum (the reference's
    index-assignment keeps an arbitrary one). Gradient flows into ``var`` unless ``detach``
    (the reference does not detach either).

    Args:
        var: ``(V,)`` from :func:`vertex_color_stats`.
        uv_pix: ``(B, V, 2)`` pixel coordinates. visible: ``(B, V)``.
        size: ``(H, W)`` of the map.
    Returns:
        ``(B, 1, H, W)``.
    """
    height, width = size
    batch = uv_pix.shape[0]
    value = (scale * var).clamp(0.0, 1.0)
    if detach:
        value = value.detach()
    col = uv_pix[..., 0].detach().floor().long().clamp(0, width - 1)
    row = uv_pix[..., 1].detach().floor().long().clamp(0, height - 1)
    flat_index = (torch.arange(batch, device=var.device)[:, None] * (height * width) + row * width + col)[
        visible
    ]
    values = value[None].expand(batch, -1)[visible]
    out = torch.zeros(batch * height * width, dtype=var.dtype, device=var.device)
    out = out.scatter_reduce(0, flat_index, values, reduce="amax", include_self=True)
    return out.view(batch, 1, height, width)


def consistency_loss(render: torch.Tensor, sr: torch.Tensor, unconf: torch.Tensor) -> torch.Tensor:
    """Multi-view part of ``L_cons`` (eq. 8): ``mean |render * U - sr * U|``.

    In unconfident (high-variance) pixels the SR image is pulled towards the render of the
    multi-view-consistent explicit hand. The mean runs over all ``B * 3 * H * W`` entries.

    Args:
        render: ``(B, 3, H, W)`` avatar render (constant while GIIF is fine-tuned).
        sr: ``(B, 3, H, W)`` GIIF output. unconf: ``(B, 1, H, W)``.
    Returns:
        Scalar.
    """
    return ((render - sr) * unconf).abs().mean()


def pose_consistency_loss(
    mean: torch.Tensor, mean_prev: torch.Tensor, count: torch.Tensor, count_prev: torch.Tensor
) -> torch.Tensor:
    """Pose part of ``L_cons`` (eq. 8): L1 between per-vertex mean colours of two steps.

    ``mean_{v: n_v > 0 and n'_v > 0} |mu_v - mu'_v|`` (averaged over RGB too). The gradient reaches
    GIIF through ``mean`` (the reference builds the means from detached colours, so its term is a
    constant; and it averages over all vertices, unseen ones included). ``mean_prev`` is normally
    the detached mean of the previous step.

    Args:
        mean, mean_prev: ``(V, 3)``. count, count_prev: ``(V,)`` number of views seeing each vertex.
    Returns:
        Scalar (0, still attached to ``mean``, when no vertex is seen at both steps).
    """
    both = (count > 0) & (count_prev > 0)
    if not both.any():
        return mean.sum() * 0.0
    return (mean[both] - mean_prev[both].to(mean.dtype)).abs().mean()


@contextmanager
def _frozen(module: nn.Module):
    """Evaluate ``module`` in eval mode without accumulating parameter gradients."""
    flags = [p.requires_grad for p in module.parameters()]
    was_training = module.training
    module.requires_grad_(False)
    module.eval()
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        module.train(was_training)


def discriminator_loss(
    disc: nn.Module,
    sr: torch.Tensor,
    mask: torch.Tensor,
    gan_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """``L_D`` (eq. 10): adversarial loss of GIIF's output under the frozen discriminator.

    ``gan_loss(D(sr), targets)`` with ``D``'s parameters frozen (no gradient accumulates in them;
    eval mode, so spectral-norm power iterations and any normalisation statistics stay untouched)
    but the gradient flowing into ``sr`` and hence GIIF. The reference passes ``sr.detach()``, so its
    term is a constant.

    Args:
        disc: per-pixel discriminator returning logits ``(B, 1, H, W)``
            (``models.discriminator.UNetDiscriminatorSN``).
        sr: ``(B, 3, H, W)``. mask: ``(B, 1, H, W)`` hand mask.
        gan_loss: ``(logits, targets) -> scalar``; default ``models.discriminator.gan_loss`` (BCE
            with logits).
        targets: default ``models.discriminator.disc_targets(mask, "generator")`` (1 inside the hand,
            0.5 outside, the reference's ``0.5 (1 - M) + M``).
    Returns:
        Scalar.
    """
    if targets is None:
        targets = disc_module.disc_targets(mask, "generator")
    if gan_loss is None:
        gan_loss = disc_module.gan_loss
    with _frozen(disc):
        logits = disc(sr)
    return gan_loss(logits, targets.to(logits.dtype))


FINETUNE_WEIGHTS = {
    "wavelet": 2.0,
    "wavelet_low": 0.2,
    "wavelet_high": 1.0,
    "wavelet_levels": 3,
    "wavelet_wave": "haar",
    "consistency": 10.0,
    "pose": 0.1,  # inside the consistency term: cons = multiview + pose * pose_term
    "disc": 0.2,
    "unconf_scale": 100.0,
    "unconf_detach": False,
}


def finetune_losses(
    sr: torch.Tensor,
    sr_orig: torch.Tensor,
    render: torch.Tensor,
    uv_pix: torch.Tensor,
    visible: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    disc: nn.Module | None = None,
    gan_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    prev_mean: torch.Tensor | None = None,
    prev_count: torch.Tensor | None = None,
    cfg: Mapping | None = None,
) -> dict[str, torch.Tensor]:
    """GIIF adaptive fine-tuning loss (paper eq. 8-10) for the views of one frame.

    ``total = wavelet * L_freq + disc * L_D + consistency * (L_multiview + pose * L_pose)``, with the
    reference's weights (:data:`FINETUNE_WEIGHTS`: 2, 0.2, 10, 0.1).

    Args:
        sr: ``(B, 3, H, W)`` GIIF output for B views of one frame (with gradient).
        sr_orig: ``(B, 3, H, W)`` GIIF output of the same inputs before fine-tuning.
        render: ``(B, 3, H, W)`` avatar render of the same views (detached here).
        uv_pix: ``(B, V, 2)`` projected vertices in ``sr`` pixels. visible: ``(B, V)``.
        mask: ``(B, 1, H, W)`` hand mask for the discriminator targets (all ones if ``None``).
        disc: frozen discriminator; ``None`` skips ``L_D``.
        gan_loss: see :func:`discriminator_loss`.
        prev_mean, prev_count: ``(V, 3)``, ``(V,)`` statistics of the previous step (``None`` on the
            first step: the pose term is 0).
        cfg: overrides of :data:`FINETUNE_WEIGHTS`.
    Returns:
        Weighted loss terms ``wavelet``, ``consistency`` (multi-view part), ``pose_consistency``,
        ``disc`` (when ``disc`` is given) and ``total``; plus non-loss entries ``vertex_mean``
        ``(V, 3)`` and ``vertex_count`` ``(V,)`` (detached, to pass as ``prev_*`` next step) and
        ``unconfidence`` ``(B, 1, H, W)`` (detached, for visualisation).
    """
    w = merge_weights(FINETUNE_WEIGHTS, cfg)
    mean, var, count = vertex_color_stats(sr, uv_pix, visible)
    unconf = unconfidence_map(var, uv_pix, visible, sr.shape[-2:], w["unconf_scale"], w["unconf_detach"])
    terms: dict[str, torch.Tensor] = {}
    terms["wavelet"] = w["wavelet"] * wavelet_loss(
        sr, sr_orig, w["wavelet_low"], w["wavelet_high"], w["wavelet_levels"], w["wavelet_wave"]
    )
    terms["consistency"] = w["consistency"] * consistency_loss(render.detach(), sr, unconf)
    if prev_mean is not None and prev_count is not None:
        pose = pose_consistency_loss(mean, prev_mean.detach(), count, prev_count)
    else:
        pose = scalar_zero(sr)
    terms["pose_consistency"] = w["consistency"] * w["pose"] * pose
    if disc is not None and w["disc"]:
        if mask is None:
            mask = torch.ones_like(sr[:, :1])
        terms["disc"] = w["disc"] * discriminator_loss(disc, sr, mask, gan_loss)
    terms["total"] = sum(terms.values(), scalar_zero(sr))
    terms["vertex_mean"] = mean.detach()
    terms["vertex_count"] = count.detach()
    terms["unconfidence"] = unconf.detach()
    return terms
