"""Loss terms of SRHand: 3D reconstruction (sec. 3.4.1) and GIIF adaptive fine-tuning (sec. 3.4.2).

Every term is a pure function of tensors; the two combiners at the end (:func:`reconstruction_losses`,
:func:`finetune_losses`) apply the weights of a config dict and return every term by name.

Conventions: images ``(B, C, H, W)`` in [0, 1] (RGB); masks ``(B, 1, H, W)`` in {0, 1}; per-vertex
signals ``(V, C)``; ``uv_pix`` are pixel coordinates with pixel centres at +0.5 (``utils.geometry.camera``);
lengths in metres. ``perceptual`` arguments are callables ``perceptual(pred, target) -> scalar`` on
[0, 1] images (an LPIPS wrapper in training; any differentiable image distance in tests).

Formulas, weights and the differences from the reference code are tabulated in
``docs/srhand_model.md``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from models import discriminator as disc_module
from models.avatar import MEAN_HAND_ALBEDO_RGB
from utils.metrics.geometry import sample_at_pixels

__all__ = [
    "MEAN_HAND_ALBEDO_RGB",
    "RECON_WEIGHTS",
    "FINETUNE_WEIGHTS",
    "masked_l1",
    "photometric_loss",
    "laplacian_norms",
    "laplacian_loss",
    "part_aware_laplacian_loss",
    "edge_stretch_loss",
    "skinning_weight_loss",
    "displacement_anchor_loss",
    "mean_albedo_prior",
    "mean_texture_loss",
    "mask_loss",
    "wavelet_loss",
    "vertex_color_stats",
    "unconfidence_map",
    "consistency_loss",
    "pose_consistency_loss",
    "discriminator_loss",
    "reconstruction_losses",
    "finetune_losses",
]

Perceptual = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]



# --------------------------------------------------------------------------------------------------
# 3D reconstruction terms (sec. 3.4.1)
# --------------------------------------------------------------------------------------------------


def masked_l1(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error over valid pixels and all channels.

    Args:
        pred, target: ``(B, C, H, W)``.
        valid: ``(B, 1, H, W)`` bool/float weights, or ``None`` for every pixel.
    Returns:
        Scalar ``sum(|pred - target| * valid) / (C * sum(valid))`` (0 when nothing is valid).
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    diff = (pred - target).abs()
    if valid is None:
        return diff.mean()
    valid = valid.to(diff.dtype)
    denom = (valid.sum() * pred.shape[1]).clamp(min=1.0)
    return (diff * valid).sum() / denom


def photometric_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    perceptual: Perceptual | None = None,
    l1_weight: float = 0.8,
    perceptual_weight: float = 0.2,
) -> torch.Tensor:
    """``L_pho``: L1 over valid pixels plus a perceptual distance (paper sec. 3.4.1).

    ``l1_weight * masked_l1(pred, target, valid) + perceptual_weight * perceptual(pred, target * valid)``.
    The reference uses ``30 * (0.8 L1 + 0.2 LPIPS-vgg)`` with the SR image as target; the factor 30
    is the ``photometric`` weight of :func:`reconstruction_losses`.

    Args:
        pred: ``(B, 3, H, W)`` rendered image. target: ``(B, 3, H, W)`` SR image.
        valid: ``(B, 1, H, W)`` (target mask AND rasterised coverage), or ``None``.
        perceptual: image distance callable; skipped when ``None`` or its weight is 0.
    Returns:
        Scalar.
    """
    loss = l1_weight * masked_l1(pred, target, valid)
    if perceptual is not None and perceptual_weight != 0:
        masked_target = target if valid is None else target * valid.to(target.dtype)
        loss = loss + perceptual_weight * perceptual(pred, masked_target)
    return loss


def laplacian_norms(x: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
    """Per-vertex norm of the uniform graph Laplacian of a per-vertex signal.

    Args:
        x: ``(V, C)`` signal (positions, displacement, albedo, skinning weights).
        laplacian: ``(V, V)`` sparse or dense ``L = D^-1 A - I`` (``utils.geometry.mesh.uniform_laplacian``).
    Returns:
        ``(V,)`` ``||(L x)_v||_2``.
    """
    if x.ndim != 2 or laplacian.shape != (x.shape[0], x.shape[0]):
        raise ValueError(f"expected x (V,C) and laplacian (V,V); got {tuple(x.shape)} and {tuple(laplacian.shape)}")
    lx = torch.sparse.mm(laplacian, x) if laplacian.is_sparse else laplacian @ x
    return lx.norm(dim=-1)


def laplacian_loss(x: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
    """Uniform Laplacian smoothness, ``(1/V) * sum_v ||(L x)_v||`` (the reference's ``lap_sum``)."""
    return laplacian_norms(x, laplacian).sum() / x.shape[0]


def part_aware_laplacian_loss(
    x: torch.Tensor,
    laplacian: torch.Tensor,
    quantile: float = 0.25,
    keep: str = "upper",
    vertex_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``L_lap``: quantile-masked Laplacian smoothing (XHand's part-aware rule, paper sec. 3.4.1).

    With ``s_v = ||(L x)_v||`` and ``q`` the ``quantile`` of ``s`` (the mask is not differentiated):
    ``keep="upper"`` returns ``(1/V) sum_{s_v > q} w_v s_v`` (the reference's rule for displacement
    and albedo: the smoothest quarter is exempt, the rest is smoothed); ``keep="lower"`` returns
    ``(1/V) sum_{s_v < q} w_v s_v`` (the reference's phase-B rule on canonical positions).
    The normalisation is by the total vertex count ``V`` as in the reference, not by the number of
    selected vertices. The paper writes the term with explicit part-level weights ``w``; the
    reference has none (``vertex_weights=None``).

    Args:
        x: ``(V, C)``. laplacian: ``(V, V)``.
        quantile: in (0, 1). keep: ``"upper"`` or ``"lower"``.
        vertex_weights: optional ``(V,)`` part weights.
    Returns:
        Scalar.
    """
    s = laplacian_norms(x, laplacian)
    q = torch.quantile(s.detach().float(), quantile).to(s.dtype)
    if keep == "upper":
        selected = s.detach() > q
    elif keep == "lower":
        selected = s.detach() < q
    else:
        raise ValueError(f"keep must be 'upper' or 'lower', got {keep!r}")
    if vertex_weights is not None:
        s = s * vertex_weights
    return (s * selected.to(s.dtype)).sum() / x.shape[0]


def edge_stretch_loss(
    verts: torch.Tensor, edges: torch.Tensor, rest_sq_lengths: torch.Tensor, max_value: float = 1.0
) -> torch.Tensor:
    """``L_edge``: stretch-only penalty on squared edge lengths.

    ``mean_e clamp(|x_i - x_j|^2 - l0_e^2, 0, max_value)`` over the given edges (XHand/SRHand: only
    lengthening is penalised; ``max_value`` = 1 m^2 never binds at hand scale).

    Args:
        verts: ``(V, 3)`` or ``(B, V, 3)`` metres. Which mesh is a choice of the caller: the paper
            compares the refined mesh to the initially subdivided one (we pass the canonical
            displaced mesh by default); the reference passes the *posed* mesh.
        edges: ``(E, 2)`` vertex index pairs (``utils.geometry.mesh.unique_edges``; the reference uses the
            3F per-face edges, counting interior edges twice).
        rest_sq_lengths: ``(E,)`` squared rest lengths (canonical subdivided template).
    Returns:
        Scalar.
    """
    edges = edges.long()
    e = verts[..., edges[:, 0], :] - verts[..., edges[:, 1], :]
    return (e.pow(2).sum(-1) - rest_sq_lengths).clamp(0.0, max_value).mean()


def skinning_weight_loss(weights: torch.Tensor, weights_init: torch.Tensor) -> torch.Tensor:
    """MSE of predicted skinning weights ``(V, J)`` to the upsampled MANO weights ``(V, J)``.

    The reference adds ``laplacian_loss(weights)`` (weight 1) as a separate term; see
    :func:`reconstruction_losses`.
    """
    return F.mse_loss(weights, weights_init)


def displacement_anchor_loss(delta: torch.Tensor, delta_anchor: torch.Tensor) -> torch.Tensor:
    """L1 of the predicted displacement ``(V, 3)`` to the pre-phase (SfS) displacement ``(V, 3)``
    (the reference's ``delta2``, weight 1)."""
    return (delta - delta_anchor).abs().mean()


def mean_albedo_prior(
    albedo: torch.Tensor, prior: tuple[float, float, float] = MEAN_HAND_ALBEDO_RGB, per_vertex: bool = False
) -> torch.Tensor:
    """Mean-albedo prior, MSE to the mean hand colour (RGB).

    Args:
        albedo: ``(N, 3)`` albedo samples in [0, 1] (vertices, or valid pixels).
        prior: RGB mean hand albedo.
        per_vertex: ``False``: ``MSE(mean_n albedo, prior)`` (the reference's pre-phase rule, and
            ours); ``True``: ``mean_n MSE(albedo_n, prior)`` (the reference's main loop, which pulls
            every vertex towards the mean colour).
    Returns:
        Scalar.
    """
    target = torch.as_tensor(prior, dtype=albedo.dtype, device=albedo.device)
    albedo = albedo.reshape(-1, 3)
    if per_vertex:
        return F.mse_loss(albedo, target.expand_as(albedo))
    return F.mse_loss(albedo.mean(0), target)


def mean_texture_loss(
    shading_only: torch.Tensor,
    sr: torch.Tensor,
    perceptual: Perceptual,
    mask: torch.Tensor | None = None,
    grayscale: bool = False,
) -> torch.Tensor:
    """``L_mean`` (paper eq. 7): perceptual distance between the mean-texture render and the SR image.

    The mean-texture render shades the posed mesh with the mean albedo ``a_bar`` in place of the
    per-vertex albedo, so only geometry (and lighting) can explain the SR image's appearance: this is
    what pushes wrinkles into the displacement rather than into the albedo.

    Args:
        shading_only: ``(B, 3, H, W)`` mean-texture render (``HandAvatar`` output ``shading_only``).
        sr: ``(B, 3, H, W)`` SR target.
        perceptual: image distance.
        mask: optional ``(B, 1, H, W)``; the target is multiplied by it.
        grayscale: compare channel means (3-channel replicated); the reference compares channel
            *sums* as a 1-channel image. Default: RGB, as the paper writes it.
    Returns:
        Scalar.
    """
    target = sr if mask is None else sr * mask.to(sr.dtype)
    if grayscale:
        shading_only = shading_only.mean(1, keepdim=True).expand_as(shading_only)
        target = target.mean(1, keepdim=True).expand_as(target)
    return perceptual(shading_only, target)


def mask_loss(pred_mask: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE between the antialiased coverage ``(B, 1, H, W)`` and the target mask (weight 0 in the
    reference)."""
    return F.mse_loss(pred_mask, mask.to(pred_mask.dtype))


# --------------------------------------------------------------------------------------------------
# Adaptive fine-tuning terms (sec. 3.4.2)
# --------------------------------------------------------------------------------------------------

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
    for a, b in zip(xh, yh):
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
    flat_index = (torch.arange(batch, device=var.device)[:, None] * (height * width) + row * width + col)[visible]
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
        for p, flag in zip(module.parameters(), flags):
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


# --------------------------------------------------------------------------------------------------
# Combiners
# --------------------------------------------------------------------------------------------------

# Defaults: the reference's values in its main loop (after phase B); docs/srhand_model.md lists them.
RECON_WEIGHTS = {
    "photometric": 30.0,  # sfs_weight
    "photometric_l1": 0.8,
    "photometric_perceptual": 0.2,
    "mean_texture": 1.0,  # geo_weight (paper eq. 7; 0 disables)
    "mean_texture_grayscale": False,
    "lap_delta": 500.0,  # lap_weight / 10 (5000 -> 9000 at half training in the reference)
    "lap_albedo": 1.0,
    "lap_weights": 1.0,
    "lap_quantile": 0.25,
    "skinning": 100.0,
    "edge": 5.0e5,
    "delta_anchor": 1.0,
    "albedo_prior": 0.2,
    "albedo_prior_per_vertex": False,
    "mask": 0.0,
}

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


def _merge(defaults: Mapping, cfg: Mapping | None) -> dict:
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise KeyError(f"unknown loss config keys {unknown}; valid keys: {sorted(defaults)}")
    return {**defaults, **cfg}


def _zero(like: torch.Tensor) -> torch.Tensor:
    return like.new_zeros(())


def reconstruction_losses(
    out: Mapping[str, torch.Tensor],
    sr: torch.Tensor,
    valid: torch.Tensor,
    *,
    laplacian: torch.Tensor,
    edges: torch.Tensor,
    rest_sq_lengths: torch.Tensor,
    weights_init: torch.Tensor,
    delta_anchor: torch.Tensor | None = None,
    perceptual: Perceptual | None = None,
    mask: torch.Tensor | None = None,
    cfg: Mapping | None = None,
) -> dict[str, torch.Tensor]:
    """All 3D reconstruction terms of one step, weighted, plus their sum under ``"total"``.

    Args:
        out: ``HandAvatar.forward`` dict (``image``, ``mask``, ``shading_only``, ``albedo``,
            ``delta``, ``weights``, ``verts_canonical``).
        sr: ``(B, 3, H, W)`` SR targets. valid: ``(B, 1, H, W)`` target mask AND coverage.
        laplacian: ``(V, V)``. edges: ``(E, 2)``. rest_sq_lengths: ``(E,)``.
        weights_init: ``(V, 16)`` upsampled MANO weights. delta_anchor: ``(V, 3)`` pre-phase
            displacement (``None`` skips the term).
        perceptual: image distance (``None`` skips the perceptual parts and ``mean_texture``).
        mask: ``(B, 1, H, W)`` target mask for the mask term.
        cfg: weights overriding :data:`RECON_WEIGHTS` (a 0 weight skips the term).
    Returns:
        Weighted terms by name and ``"total"``.
    """
    w = _merge(RECON_WEIGHTS, cfg)
    image = out["image"]
    terms: dict[str, torch.Tensor] = {}
    terms["photometric"] = w["photometric"] * photometric_loss(
        image, sr, valid, perceptual, w["photometric_l1"], w["photometric_perceptual"]
    )
    if w["mean_texture"] and perceptual is not None:
        terms["mean_texture"] = w["mean_texture"] * mean_texture_loss(
            out["shading_only"], sr, perceptual, valid, grayscale=w["mean_texture_grayscale"]
        )
    q = w["lap_quantile"]
    if w["lap_delta"]:
        terms["lap_delta"] = w["lap_delta"] * part_aware_laplacian_loss(out["delta"], laplacian, q)
    if w["lap_albedo"]:
        terms["lap_albedo"] = w["lap_albedo"] * part_aware_laplacian_loss(out["albedo"], laplacian, q)
    if w["lap_weights"]:
        terms["lap_weights"] = w["lap_weights"] * laplacian_loss(out["weights"], laplacian)
    if w["skinning"]:
        terms["skinning"] = w["skinning"] * skinning_weight_loss(out["weights"], weights_init)
    if w["edge"]:
        terms["edge"] = w["edge"] * edge_stretch_loss(out["verts_canonical"], edges, rest_sq_lengths)
    if w["delta_anchor"] and delta_anchor is not None:
        terms["delta_anchor"] = w["delta_anchor"] * displacement_anchor_loss(out["delta"], delta_anchor)
    if w["albedo_prior"]:
        terms["albedo_prior"] = w["albedo_prior"] * mean_albedo_prior(
            out["albedo"], per_vertex=w["albedo_prior_per_vertex"]
        )
    if w["mask"] and mask is not None:
        terms["mask"] = w["mask"] * mask_loss(out["mask"], mask)
    terms["total"] = sum(terms.values(), _zero(image))
    return terms


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
    w = _merge(FINETUNE_WEIGHTS, cfg)
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
        pose = _zero(sr)
    terms["pose_consistency"] = w["consistency"] * w["pose"] * pose
    if disc is not None and w["disc"]:
        if mask is None:
            mask = torch.ones_like(sr[:, :1])
        terms["disc"] = w["disc"] * discriminator_loss(disc, sr, mask, gan_loss)
    terms["total"] = sum(terms.values(), _zero(sr))
    terms["vertex_mean"] = mean.detach()
    terms["vertex_count"] = count.detach()
    terms["unconfidence"] = unconf.detach()
    return terms
