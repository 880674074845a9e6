"""Perspective-correct attribute interpolation over a raster (torch backend).

Differentiable w.r.t. the attributes and, when ``clip`` is given and requires grad, the vertex
positions (barycentrics recomputed at the pixel centres with the raster's triangle ids).
"""

from __future__ import annotations

import torch

from utils.render.common import _check_rast, _rows, pixel_barycentrics


def _covered_pixels(rast: torch.Tensor):
    """Flat indices, batch, row, col and triangle index (all (P,) long) of covered pixels."""
    bsz, h, w = _check_rast(rast)
    tri = rast[..., 3].reshape(-1)
    pix = (tri > 0).nonzero().squeeze(1)
    face = tri.index_select(0, pix).long() - 1
    batch = torch.div(pix, h * w, rounding_mode="floor")
    rem = pix - batch * (h * w)
    row = torch.div(rem, w, rounding_mode="floor")
    return pix, batch, row, rem - row * w, face


def interpolate(
    attr: torch.Tensor, rast: torch.Tensor, faces: torch.Tensor, clip: torch.Tensor | None = None
) -> torch.Tensor:
    """Interpolate per-vertex attributes over the raster, perspective-correct.

    Args:
        attr: (B, V, C), (1, V, C) or (V, C) per-vertex attributes.
        rast: (B, H, W, 4) output of :func:`rasterize`.
        faces: (F, 3) int, the faces that were rasterised.
        clip: optional (B, V, 4) clip vertices that produced ``rast``. When given and it requires grad,
            barycentrics are recomputed from it at the pixel centres (same triangle ids), so the output is
            differentiable w.r.t. the vertex positions too (not across triangle boundaries: that is what
            :func:`antialias` is for).
    Returns:
        (B, H, W, C), 0 on background pixels; differentiable w.r.t. ``attr`` (and ``clip``).
    """
    bsz, h, w = _check_rast(rast)
    if not torch.is_tensor(attr) or attr.dim() not in (2, 3):
        raise ValueError(
            f"attr must have shape (B, V, C) or (V, C), got "
            f"{tuple(attr.shape) if torch.is_tensor(attr) else type(attr).__name__}"
        )
    if attr.dim() == 3 and attr.shape[0] not in (1, bsz):
        raise ValueError(f"attr batch {attr.shape[0]} does not match rast batch {bsz}")
    faces = faces.long()
    num_verts, chans = attr.shape[-2], attr.shape[-1]
    pix, batch, row, col, face = _covered_pixels(rast)
    if clip is not None and clip.requires_grad and torch.is_grad_enabled():
        if clip.shape[0] != bsz or clip.shape[1] != num_verts:
            raise ValueError(
                f"clip shape {tuple(clip.shape)} does not match rast batch {bsz} / attr "
                f"vertices {num_verts}"
            )
        bary = pixel_barycentrics(clip, faces, batch, face, row, col, (h, w))
    else:
        uv = rast.reshape(-1, 4).index_select(0, pix)[:, :2]
        bary = torch.cat([uv, 1 - uv[:, 0:1] - uv[:, 1:2]], -1)
    bary = bary.to(attr.dtype)
    vid = _rows(faces, face)  # (P, 3)
    if attr.dim() == 3 and attr.shape[0] == bsz and bsz > 1:
        vid = vid + (batch * num_verts)[:, None]
    rows = _rows(attr.reshape(-1, chans), vid)  # (P, 3, C)
    vals = rows[:, 0] * bary[:, 0:1] + rows[:, 1] * bary[:, 1:2] + rows[:, 2] * bary[:, 2:3]
    out = torch.zeros(bsz * h * w, chans, dtype=attr.dtype, device=attr.device)
    return out.index_copy(0, pix, vals).reshape(bsz, h, w, chans)
