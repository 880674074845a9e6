"""Rasterise triangles into nvdiffrast's ``rast`` layout, and read visibility from it (torch backend).

How it works:

* Coverage is decided with homogeneous 2D edge functions (Olano and Greer 1997): for clip vertices
  ``c_i = (x_i, y_i, w_i)`` and a pixel centre ``p = (x_ndc, y_ndc, 1)``, ``e_i = p . (c_j x c_k)`` is
  proportional to the perspective-correct barycentric of vertex ``i``. A pixel is covered when all three
  have the sign of ``det[c0, c1, c2]``: both windings are drawn (no backface culling), zero-area
  triangles (``det = 0``) are skipped. A shared edge gives exactly negated edge functions in its two
  triangles, so closed meshes have no cracks.
* Every triangle is expanded into the pixel centres of its (clamped) screen bounding box; most faces of
  a dense mesh cover no pixel centre and are dropped before any per-pixel work. Candidates are processed
  in chunks of at most ``max_candidates`` so memory stays bounded for large triangles.
* Depth test: a single ``scatter_reduce(amin)`` on an int64 key ``(float32 bits of z/w) << 32 | face``,
  which resolves depth and breaks exact ties towards the smaller face index in one pass.
* Near plane: triangles with a vertex at ``w <= 0`` (at or behind the eye plane) are **culled**; the
  others are clipped **per pixel** at ``-1 <= z/w <= 1``, which equals exact near/far-plane clipping for
  them. (nvdiffrast clips the culled ones geometrically; they only matter when the camera is inside
  the mesh.)
"""

from __future__ import annotations

import torch

from utils.image_size import image_hw
from utils.render.common import (
    _check_clip_faces,
    _check_rast,
    _face_vertex_rows,
    _owner_index,
    _pixel_edge_values,
    _stash_raster,
)

_KEY_EMPTY = torch.iinfo(torch.int64).max
_BBOX_EPS = 1e-4  # pixels; widens bounding boxes so pixel centres on a box boundary are never missed


def _depth_key(z: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
    """int64 keys ordered by float32 depth, then by face index (exact tie-break)."""
    bits = z.float().view(torch.int32)
    # IEEE floats order like sign-magnitude integers: flip the magnitude bits of negatives.
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (bits.long() << 32) | face


def _face_setup(clip: torch.Tensor, faces: torch.Tensor, h: int, w: int):
    """Per-triangle bounding boxes and pixel-space edge/depth planes for triangles that can cover a pixel.

    Returns:
        inst: (S,) long flat ``batch * F + face`` of the surviving triangles.
        box: (4, S) long ``x_lo, y_lo, width, height`` of pixel-centre bounding boxes (non-empty).
        coef: (12, S) ``A(3), B(3), C(3), zA, zB, zC`` with ``e_i = A_i col + B_i row + C_i`` (>= 0 inside
            for all i) and ``z/w = zA col + zB row + zC``. (Rows, not columns: stacking and gathering
            whole rows is much faster than strided columns.)
        projected: vertex pixel coordinates ``px, py`` (B V,) (NaN for w <= 0) and per corner k of
            every (image, face) ``fx[k], fy[k]`` (B F,); antialias reuses them.
    """
    bsz, num_verts, _ = clip.shape
    flat = clip.reshape(-1, 4)
    wv = flat[:, 3]
    # Pixel coordinates of the vertices (continuous, centres at +0.5) for the bounding boxes only; NaN
    # for w <= 0 so that such triangles fail every bound comparison below and are culled.
    inv_w = torch.where(wv > 0, 1.0 / wv, torch.full_like(wv, float("nan")))
    px = (flat[:, 0] * inv_w + 1) * (0.5 * w)
    py = (flat[:, 1] * inv_w + 1) * (0.5 * h)
    # Vertex k of every (image, face) as a flat row of `flat`; 1D gathers keep everything contiguous.
    vid = _face_vertex_rows(faces, bsz, num_verts)
    fx = [px.index_select(0, v) for v in vid]
    fy = [py.index_select(0, v) for v in vid]
    x_lo = torch.ceil(torch.minimum(torch.minimum(fx[0], fx[1]), fx[2]) - (0.5 + _BBOX_EPS))
    x_hi = torch.floor(torch.maximum(torch.maximum(fx[0], fx[1]), fx[2]) - (0.5 - _BBOX_EPS))
    y_lo = torch.ceil(torch.minimum(torch.minimum(fy[0], fy[1]), fy[2]) - (0.5 + _BBOX_EPS))
    y_hi = torch.floor(torch.maximum(torch.maximum(fy[0], fy[1]), fy[2]) - (0.5 - _BBOX_EPS))
    # Clamped to the image, a box is non-empty exactly when it holds a pixel centre inside the image
    # (NaN boxes, from w <= 0, compare false).
    x_lo, x_hi, y_lo, y_hi = (
        x_lo.clamp_min(0),
        x_hi.clamp_max(w - 1),
        y_lo.clamp_min(0),
        y_hi.clamp_max(h - 1),
    )
    inst = ((x_lo <= x_hi) & (y_lo <= y_hi)).nonzero().squeeze(1)
    if inst.numel() == 0:
        return inst, None, None, (px, py, fx, fy)
    x_lo, x_hi, y_lo, y_hi = (t.index_select(0, inst) for t in (x_lo, x_hi, y_lo, y_hi))

    # Components gathered one by one into contiguous (S,) tensors: arithmetic on strided columns of
    # (S, 4) rows is several times slower.
    comps = flat.t().contiguous()  # (4, B V)
    sel = [v.index_select(0, inst) for v in vid]
    (x0, y0, z0, w0), (x1, y1, z1, w1), (x2, y2, z2, w2) = (
        [comp.index_select(0, v) for comp in comps] for v in sel
    )
    # Edge function i = p . (c_j x c_k) over (x, y, w), (i, j, k) cyclic.
    A = [y1 * w2 - w1 * y2, y2 * w0 - w2 * y0, y0 * w1 - w0 * y1]
    B = [w1 * x2 - x1 * w2, w2 * x0 - x2 * w0, w0 * x1 - x0 * w1]
    C = [x1 * y2 - y1 * x2, x2 * y0 - y2 * x0, x0 * y1 - y0 * x1]
    det = x0 * A[0] + y0 * B[0] + w0 * C[0]  # det[c0, c1, c2]; 0 for zero-area triangles
    # Fold the winding sign and the NDC -> pixel-index map (x_ndc = (2 col + 1) / W - 1) into the planes.
    sgn = torch.sign(det)
    sx, sy = sgn * (2.0 / w), sgn * (2.0 / h)
    ox, oy = 1.0 / w - 1.0, 1.0 / h - 1.0
    inv_det = 1.0 / det.abs().clamp_min(torch.finfo(det.dtype).tiny)
    # z/w is affine in screen space: z/w = sum_i e_i z_i / det.
    zA = (A[0] * z0 + A[1] * z1 + A[2] * z2) * inv_det
    zB = (B[0] * z0 + B[1] * z1 + B[2] * z2) * inv_det
    zC = (C[0] * z0 + C[1] * z1 + C[2] * z2) * inv_det
    coef = torch.stack(
        [
            A[0] * sx,
            A[1] * sx,
            A[2] * sx,
            B[0] * sy,
            B[1] * sy,
            B[2] * sy,
            sgn * (C[0] + A[0] * ox + B[0] * oy),
            sgn * (C[1] + A[1] * ox + B[1] * oy),
            sgn * (C[2] + A[2] * ox + B[2] * oy),
            zA * sgn * (2.0 / w),
            zB * sgn * (2.0 / h),
            sgn * (zC + zA * ox + zB * oy),
        ]
    )
    box = torch.stack([x_lo, y_lo, x_hi - x_lo + 1, y_hi - y_lo + 1]).long()
    keep = det != 0
    if not bool(keep.all()):
        keep = keep.nonzero().squeeze(1)
        inst, box, coef = inst.index_select(0, keep), box.index_select(1, keep), coef.index_select(1, keep)
    return inst, box, coef, (px, py, fx, fy)


def _scatter_candidates(
    zbuf: torch.Tensor,
    inst: torch.Tensor,
    box: torch.Tensor,
    coef: torch.Tensor,
    num_faces: int,
    h: int,
    w: int,
) -> None:
    """Test every pixel centre in the boxes of these triangles and depth-test the covered ones into zbuf.

    ``box`` (4, S) and ``coef`` (12, S) as returned by :func:`_face_setup`.
    """
    counts = box[2] * box[3]
    total = int(counts.sum())
    if total == 0:
        return
    device = inst.device
    # Candidate indices in int32 (a chunk holds at most max(max_candidates, H W) of them): gathers from
    # and arithmetic on int32 tensors are about twice as fast as int64.
    box = box.int()
    owner = _owner_index(counts, total, torch.int32)
    # Per candidate: box x_lo, y_lo, width and first candidate index of its triangle.
    start = torch.cumsum(counts, 0, dtype=torch.int32) - counts
    x_lo, y_lo, width, first = (t.index_select(0, owner) for t in (box[0], box[1], box[2], start.int()))
    local = torch.arange(total, dtype=torch.int32, device=device) - first
    dy = torch.div(local, width, rounding_mode="floor")
    col = x_lo + (local - dy * width)
    row = y_lo + dy
    cf = coef.index_select(1, owner)  # (12, T)
    colf, rowf = col.to(cf.dtype), row.to(cf.dtype)
    e0 = cf[0] * colf + cf[3] * rowf + cf[6]
    e1 = cf[1] * colf + cf[4] * rowf + cf[7]
    e2 = cf[2] * colf + cf[5] * rowf + cf[8]
    zc = cf[9] * colf + cf[10] * rowf + cf[11]
    inside = (torch.minimum(torch.minimum(e0, e1), e2) >= 0) & (zc.abs() <= 1)
    hit = inside.nonzero().squeeze(1)
    if hit.numel() == 0:
        return
    inst_hit = inst.index_select(0, owner.index_select(0, hit))
    batch = torch.div(inst_hit, num_faces, rounding_mode="floor")
    pix = (batch * h + row.index_select(0, hit)) * w + col.index_select(0, hit)
    key = _depth_key(zc.index_select(0, hit), inst_hit - batch * num_faces)
    zbuf.scatter_reduce_(0, pix, key, reduce="amin")


def rasterize(
    clip: torch.Tensor, faces: torch.Tensor, resolution, max_candidates: int = 1 << 19
) -> torch.Tensor:
    """Rasterise triangles into nvdiffrast's ``rast`` layout (not differentiable; see :func:`interpolate`).

    Args:
        clip: (B, V, 4) clip-space vertices (float32 or float64; any device).
        faces: (F, 3) int vertex indices; both windings are drawn.
        resolution: ``(H, W)`` in pixels.
        max_candidates: bound on (triangle, pixel) pairs tested at once (about 150 bytes each; a
            chunk holds at least ``H * W`` so one triangle is never split).
    Returns:
        (B, H, W, 4) ``(u, v, z/w, triangle_id + 1)``, background all zero, dtype of ``clip``.
    """
    faces = _check_clip_faces(clip, faces)
    h, w = image_hw(resolution, "resolution")
    bsz = clip.shape[0]
    num_faces = faces.shape[0]
    clip_in = clip
    with torch.no_grad():
        clip = clip.detach()
        zbuf = torch.full((bsz * h * w,), _KEY_EMPTY, dtype=torch.long, device=clip.device)
        projected = None
        if num_faces:
            inst, box, coef, projected = _face_setup(clip, faces, h, w)
            if inst.numel():
                counts = box[2] * box[3]
                budget = max(int(max_candidates), h * w)
                if int(counts.sum()) <= budget:
                    _scatter_candidates(zbuf, inst, box, coef, num_faces, h, w)
                else:
                    # Split the triangle list into runs of about `budget` candidates.
                    ends = torch.cumsum(counts, 0)
                    cuts = torch.searchsorted(
                        ends, torch.arange(budget, int(ends[-1]), budget, device=ends.device), right=True
                    )
                    bounds = [0] + sorted(set(cuts.tolist()) - {0}) + [len(inst)]
                    for s0, s1 in zip(bounds[:-1], bounds[1:], strict=True):
                        if s1 > s0:
                            _scatter_candidates(
                                zbuf, inst[s0:s1], box[:, s0:s1], coef[:, s0:s1], num_faces, h, w
                            )
        rast, data = _rast_from_zbuf(clip, faces, zbuf, h, w)
        data["projected"] = projected
    # interpolate (and antialias) reuse the covered pixels and their edge values (see common).
    _stash_raster(rast, clip_in, faces, data)
    return rast


def _rast_from_zbuf(
    clip: torch.Tensor, faces: torch.Tensor, zbuf: torch.Tensor, h: int, w: int
) -> tuple[torch.Tensor, dict]:
    """``rast`` (B, H, W, 4) from the z-buffer, and per covered pixel (flat index ``pix``, ``batch``,
    ``row``, ``col``, ``face``, :class:`~utils.render.common.PixelEdges` ``edges``)."""
    bsz = clip.shape[0]
    rast = torch.zeros(bsz * h * w, 4, dtype=clip.dtype, device=clip.device)
    pix = (zbuf != _KEY_EMPTY).nonzero().squeeze(1)
    face = zbuf.index_select(0, pix) & 0xFFFFFFFF
    batch = torch.div(pix, h * w, rounding_mode="floor")
    rem = pix - batch * (h * w)
    row = torch.div(rem, w, rounding_mode="floor")
    col = rem - row * w
    data = {"pix": pix, "batch": batch, "row": row, "col": col, "face": face, "edges": None}
    if pix.numel():
        edges = _pixel_edge_values(clip, faces, batch, face, row, col, (h, w))  # as pixel_barycentrics
        e, cz = edges.e, edges.c
        bary = e / (e[:, 0:1] + e[:, 1:2] + e[:, 2:3])
        zw = (bary * cz[..., 2]).sum(-1) / (bary * cz[..., 3]).sum(-1)  # runs once, under no_grad
        rast.index_copy_(0, pix, torch.stack([bary[:, 0], bary[:, 1], zw, (face + 1).to(clip.dtype)], -1))
        data["edges"] = edges
    return rast.reshape(bsz, h, w, 4), data


def visible_vertices(rast: torch.Tensor, faces: torch.Tensor, num_verts: int) -> torch.Tensor:
    """Vertices of the triangles that own at least one pixel.

    Args:
        rast: (B, H, W, 4) raster.
        faces: (F, 3) int.
        num_verts: V.
    Returns:
        (B, V) bool.
    """
    bsz, h, w = _check_rast(rast)
    faces = faces.long().to(rast.device)
    num_faces = faces.shape[0]
    tri = rast[..., 3].reshape(bsz, -1).long()  # triangle id + 1, 0 = background
    seen = torch.zeros(bsz, num_faces + 1, dtype=torch.bool, device=rast.device)
    seen.scatter_(1, tri, True)
    seen = seen[:, 1:]  # (B, F)
    vis = torch.zeros(bsz, num_verts, dtype=torch.uint8, device=rast.device)
    src = seen[:, :, None].expand(-1, -1, 3).reshape(bsz, -1).to(torch.uint8)
    vis.scatter_reduce_(1, faces.reshape(1, -1).expand(bsz, -1), src, reduce="amax")
    return vis.bool()
