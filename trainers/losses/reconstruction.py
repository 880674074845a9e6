"""Loss terms of the 3D reconstruction (paper sec. 3.4.1) and their weighted combination.

Conventions as in :mod:`trainers.losses`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from models.avatar import MEAN_HAND_ALBEDO_RGB

Perceptual = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
    perceptual_target=None,
) -> torch.Tensor:
    """``L_pho``: L1 over valid pixels plus a perceptual distance (paper sec. 3.4.1).

    ``l1_weight * masked_l1(pred, target, valid) + perceptual_weight * perceptual(pred, target * valid)``.
    The reference uses ``30 * (0.8 L1 + 0.2 LPIPS-vgg)`` with the SR image as target; the factor 30
    is the ``photometric`` weight of :func:`reconstruction_losses`.

    Args:
        pred: ``(B, 3, H, W)`` rendered image. target: ``(B, 3, H, W)`` SR image.
        valid: ``(B, 1, H, W)`` (target mask AND rasterised coverage), or ``None``.
        perceptual: image distance callable; skipped when ``None`` or its weight is 0.
        perceptual_target: ``perceptual.prepare(target * valid)``, passed when several terms share it.
    Returns:
        Scalar.
    """
    loss = l1_weight * masked_l1(pred, target, valid)
    if perceptual is not None and perceptual_weight != 0:
        if perceptual_target is None:
            perceptual_target = target if valid is None else target * valid.to(target.dtype)
        loss = loss + perceptual_weight * perceptual(pred, perceptual_target)
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
        raise ValueError(
            f"expected x (V,C) and laplacian (V,V); got {tuple(x.shape)} and {tuple(laplacian.shape)}"
        )
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


def merge_weights(defaults: Mapping, cfg: Mapping | None) -> dict:
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise KeyError(f"unknown loss config keys {unknown}; valid keys: {sorted(defaults)}")
    return {**defaults, **cfg}


def scalar_zero(like: torch.Tensor) -> torch.Tensor:
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
    w = merge_weights(RECON_WEIGHTS, cfg)
    image = out["image"]
    terms: dict[str, torch.Tensor] = {}
    # Both perceptual terms compare with sr * valid: it is encoded once (the same values as encoding it in
    # each term, tests/test_losses.py).
    shared = None
    if (
        perceptual is not None
        and hasattr(perceptual, "prepare")
        and w["photometric_perceptual"]
        and w["mean_texture"]
        and not w["mean_texture_grayscale"]
    ):
        shared = perceptual.prepare(sr * valid.to(sr.dtype))
    terms["photometric"] = w["photometric"] * photometric_loss(
        image, sr, valid, perceptual, w["photometric_l1"], w["photometric_perceptual"], shared
    )
    if w["mean_texture"] and perceptual is not None:
        terms["mean_texture"] = w["mean_texture"] * (
            perceptual(out["shading_only"], shared)
            if shared is not None
            else mean_texture_loss(
                out["shading_only"], sr, perceptual, valid, grayscale=w["mean_texture_grayscale"]
            )
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
    terms["total"] = sum(terms.values(), scalar_zero(image))
    return terms
