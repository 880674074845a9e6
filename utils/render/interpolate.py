"""Perspective-correct attribute interpolation over a raster (torch backend).

Differentiable w.r.t. the attributes and, when ``clip`` is given and requires grad, the vertex
positions (barycentrics recomputed at the pixel centres with the raster's triangle ids). The backward
is written by hand (:class:`_Interpolate`): the autograd graph of the barycentrics spent most of its
time filling zero tensors for ``select``/``slice`` backward; ``interpolate_autograd`` keeps the plain
autograd version for the tests that compare the two.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from utils.render.common import (
    _as_long,
    _check_rast,
    _pixel_edge_values,
    _rows,
    _stashed_raster,
    pixel_barycentrics,
)


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


def _check_interpolate(attr, rast, faces, clip):
    """Validate the arguments of :func:`interpolate`; return ``(B, H, W)``, faces as long and whether
    the barycentrics are to be recomputed from ``clip`` (given, requiring grad, grad mode on)."""
    bsz, h, w = _check_rast(rast)
    if not torch.is_tensor(attr) or attr.dim() not in (2, 3):
        raise ValueError(
            f"attr must have shape (B, V, C) or (V, C), got "
            f"{tuple(attr.shape) if torch.is_tensor(attr) else type(attr).__name__}"
        )
    if attr.dim() == 3 and attr.shape[0] not in (1, bsz):
        raise ValueError(f"attr batch {attr.shape[0]} does not match rast batch {bsz}")
    use_clip = clip is not None and clip.requires_grad and torch.is_grad_enabled()
    if use_clip and (clip.shape[0] != bsz or clip.shape[1] != attr.shape[-2]):
        raise ValueError(
            f"clip shape {tuple(clip.shape)} does not match rast batch {bsz} / attr "
            f"vertices {attr.shape[-2]}"
        )
    return (bsz, h, w), _as_long(faces), use_clip


class _Interpolate(torch.autograd.Function):
    """:func:`interpolate` with a hand-written backward (first order only).

    With ``e_i = p . (c_j x c_k)`` over the ``(x, y, w)`` components of the clip vertices, ``p = (x_ndc,
    y_ndc, 1)`` and ``b_i = e_i / S``, ``S = sum_i e_i``: ``dL/de_i = (g_i - sum_k g_k b_k) / S`` for
    ``g = dL/db``, and ``dL/dc_m = (G_{m+2} c_{m+1} - G_{m+1} c_{m+2}) x p`` with ``G = dL/de``.
    """

    @staticmethod
    def forward(ctx, attr, clip, rast, faces, bhw, use_clip):
        bsz, h, w = bhw
        num_verts, chans = attr.shape[-2], attr.shape[-1]
        # Covered pixels (and their edge values) as rasterize found them, when rast is its output,
        # unchanged; else from rast.
        stash = _stashed_raster(rast)
        if stash is not None:
            data, stash_clip, stash_faces = stash
            pix, batch, row, col, face = (data[k] for k in ("pix", "batch", "row", "col", "face"))
            edges = data["edges"] if stash_clip is clip and stash_faces is faces else None
        else:
            pix, batch, row, col, face = _covered_pixels(rast)
            edges = None
        if use_clip:
            if edges is None:
                edges = _pixel_edge_values(clip, faces, batch, face, row, col, (h, w))
            vid_clip, c, x_ndc, y_ndc, e = edges.vid, edges.c, edges.x_ndc, edges.y_ndc, edges.e
            total = e[:, 0:1] + e[:, 1:2] + e[:, 2:3]
            bary_clip = e / total
            bary = bary_clip.to(attr.dtype)
        else:
            uv = rast.reshape(-1, 4).index_select(0, pix)[:, :2]
            bary = torch.cat([uv, 1 - uv[:, 0:1] - uv[:, 1:2]], -1).to(attr.dtype)
        vid = edges.corner if edges is not None else _rows(faces, face)  # (P, 3) rows of the flat attr
        if attr.dim() == 3 and attr.shape[0] == bsz and bsz > 1:
            vid = vid + (batch * num_verts)[:, None]
        rows = _rows(attr.reshape(-1, chans), vid)  # (P, 3, C)
        vals = rows[:, 0] * bary[:, 0:1] + rows[:, 1] * bary[:, 1:2] + rows[:, 2] * bary[:, 2:3]
        out = torch.zeros(bsz * h * w, chans, dtype=attr.dtype, device=attr.device)
        out = out.index_copy(0, pix, vals).reshape(bsz, h, w, chans)
        ctx.attr_shape, ctx.use_clip = attr.shape, use_clip
        if use_clip:
            ctx.clip_shape = clip.shape
            ctx.save_for_backward(pix, vid, bary, rows, vid_clip, c, x_ndc, y_ndc, total, bary_clip)
        else:
            ctx.save_for_backward(pix, vid, bary, rows)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        pix, vid, bary, rows = ctx.saved_tensors[:4]
        chans = rows.shape[-1]
        g = grad_out.reshape(-1, chans).index_select(0, pix)  # (P, C)
        grad_attr = grad_clip = None
        if ctx.needs_input_grad[0]:
            contrib = bary[:, :, None] * g[:, None, :]  # (P, 3, C)
            grad_attr = torch.zeros(ctx.attr_shape.numel() // chans, chans, dtype=g.dtype, device=g.device)
            grad_attr = grad_attr.index_add_(0, vid.reshape(-1), contrib.reshape(-1, chans))
            grad_attr = grad_attr.view(ctx.attr_shape)
        if ctx.use_clip and ctx.needs_input_grad[1]:
            vid_clip, c, x_ndc, y_ndc, total, bary_clip = ctx.saved_tensors[4:]
            # dL/db (P, 3) as a batched matrix product, then dL/de.
            gb = torch.bmm(rows, g[:, :, None]).squeeze(2).to(c.dtype)
            dot = (
                gb[:, 0:1] * bary_clip[:, 0:1]
                + gb[:, 1:2] * bary_clip[:, 1:2]
                + gb[:, 2:3] * bary_clip[:, 2:3]
            )
            ge = (gb - dot) / total  # (P, 3)
            cxyw = c.index_select(2, torch.tensor([0, 1, 3], device=c.device))  # (P, 3, 3)
            # U_m = G_{m+2} c_{m+1} - G_{m+1} c_{m+2} is, per component, a cross product over the
            # vertex axis; then dL/dc_m = U_m x p with p = (x_ndc, y_ndc, 1).
            u = torch.linalg.cross(cxyw, ge[:, :, None].expand_as(cxyw), dim=1)
            p = torch.stack([x_ndc, y_ndc, torch.ones_like(x_ndc)], -1)  # (P, 1, 3)
            gxyw = torch.linalg.cross(u, p.expand_as(u), dim=2)  # (P, 3, 3)
            gc = torch.cat([gxyw[..., :2], torch.zeros_like(gxyw[..., :1]), gxyw[..., 2:]], -1)  # (P, 3, 4)
            grad_clip = torch.zeros(ctx.clip_shape.numel() // 4, 4, dtype=c.dtype, device=c.device)
            grad_clip = grad_clip.index_add_(0, vid_clip.reshape(-1), gc.reshape(-1, 4))
            grad_clip = grad_clip.view(ctx.clip_shape)
        return grad_attr, grad_clip, None, None, None, None


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
        (B, H, W, C), 0 on background pixels; differentiable w.r.t. ``attr`` (and ``clip``), first
        order only.
    """
    bhw, faces, use_clip = _check_interpolate(attr, rast, faces, clip)
    return _Interpolate.apply(attr, clip if use_clip else None, rast, faces, bhw, use_clip)


def interpolate_autograd(
    attr: torch.Tensor, rast: torch.Tensor, faces: torch.Tensor, clip: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`interpolate` differentiated by autograd (slower; kept to test the hand-written backward)."""
    (bsz, h, w), faces, use_clip = _check_interpolate(attr, rast, faces, clip)
    num_verts, chans = attr.shape[-2], attr.shape[-1]
    pix, batch, row, col, face = _covered_pixels(rast)
    if use_clip:
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
