"""Pictures of stage 3: the jet colour map and per-vertex values drawn on the rendered surface."""

from __future__ import annotations

import torch


def jet(x: torch.Tensor) -> torch.Tensor:
    """The jet colour map of values in [0, 1]: ``(...,)`` -> ``(..., 3)`` RGB."""
    x = x.clamp(0.0, 1.0)[..., None]
    centres = x.new_tensor([3.0, 2.0, 1.0])
    return (1.5 - (4.0 * x - centres).abs()).clamp(0.0, 1.0)


def surface_unconfidence(
    renderer, var: torch.Tensor, rast: torch.Tensor, faces: torch.Tensor, scale: float
) -> torch.Tensor:
    """Per-vertex variance ``(V,)`` drawn on the rendered surface for visualisation: ``(B, 3, H, W)`` jet colours
    of ``clamp(scale * var)`` interpolated over the triangles of ``rast (B, H, W, 4)``, black background.

    (``trainers.losses.unconfidence_map`` splats the same values at the vertex pixels only, which leaves
    gaps between the vertices of a coarse mesh.)"""
    values = (scale * var).clamp(0.0, 1.0)[None, :, None].expand(rast.shape[0], -1, 1)
    image = renderer.interpolate(values.contiguous(), rast, faces)[..., 0]  # (B, H, W)
    covered = (rast[..., 3] > 0).to(image.dtype)
    return (jet(image) * covered[..., None]).permute(0, 3, 1, 2)
