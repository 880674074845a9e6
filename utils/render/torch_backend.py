"""Pure-PyTorch rasteriser with nvdiffrast's interface (CPU and CUDA, no compiled code).

Conventions (docs/architecture.md, "Renderer"):

* ``clip`` (B, V, 4) are nvdiffrast clip coordinates; pixel ``(row, col)`` has its centre at
  ``x_ndc = (2 col + 1) / W - 1``, ``y_ndc = (2 row + 1) / H - 1`` (no y flip: row 0 is the top row).
* ``rast`` (B, H, W, 4) holds ``(u, v, z/w, triangle_id + 1)``, background all zero; an attribute
  interpolates as ``u a0 + v a1 + (1 - u - v) a2`` with perspective-correct ``u, v``.

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
* ``antialias`` follows nvdiffrast's analytic silhouette-edge model (Laine et al. 2020, sec. 3.6): for
  every right/down neighbour pair with different triangle ids, the triangle in front is tested for a
  silhouette edge (a mesh boundary, or one whose neighbouring triangle folds back in screen space)
  crossing the segment between the two pixel centres; the crossing position ``d`` (pixels from the
  front pixel's centre) blends one pixel of the pair towards the other by ``|0.5 - d|``. Gradients
  reach the two vertices of that edge through ``d`` and the colours through the blend. One extension
  (``max_hops``, see :func:`antialias`): when the front triangle's edge is an interior edge, the search
  continues across it along the segment, because on dense meshes the triangles along a contour are
  sub-pixel slivers that rarely own a pixel. Pairs that no silhouette edge's screen box touches skip
  the search (an exact, conservative filter).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch

_KEY_EMPTY = torch.iinfo(torch.int64).max
_BBOX_EPS = 1e-4  # pixels; widens bounding boxes so pixel centres on a box boundary are never missed
_AA_EPS = 1.0 / 16.0  # accepted crossing overshoot in pixels (as nvdiffrast), then clamped to [0, 1]
DEFAULT_AA_MAX_HOPS = 32  # interior edges the silhouette search may cross (0 = nvdiffrast's rule)
_TOPOLOGY_CACHE: OrderedDict = OrderedDict()
_LAST_CHECKED_FACES: list = [None]
_TOPOLOGY_CACHE_SIZE = 4


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def _check_clip_faces(clip: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Validate ``clip (B,V,4)`` float and ``faces (F,3)`` int in range; return faces as long."""
    if not torch.is_tensor(clip) or clip.dim() != 3 or clip.shape[-1] != 4 or not clip.is_floating_point():
        shape = tuple(clip.shape) if torch.is_tensor(clip) else type(clip).__name__
        raise ValueError(f"clip must be a float tensor of shape (B, V, 4), got {shape}")
    if not torch.is_tensor(faces) or faces.dim() != 2 or faces.shape[-1] != 3 or faces.is_floating_point():
        shape = tuple(faces.shape) if torch.is_tensor(faces) else type(faces).__name__
        raise ValueError(f"faces must be an integer tensor of shape (F, 3), got {shape}")
    if faces.device != clip.device:
        raise ValueError(f"faces on {faces.device} but clip on {clip.device}")
    # The range check reads every index; skip it when these very faces were checked last time.
    key = (faces.data_ptr(), faces._version, faces.dtype, tuple(faces.shape), faces.device, clip.shape[1])
    faces = faces.long()
    if faces.numel() and key != _LAST_CHECKED_FACES[0]:
        lo, hi = int(faces.min()), int(faces.max())
        if lo < 0 or hi >= clip.shape[1]:
            raise ValueError(f"faces index vertices in [{lo}, {hi}] but clip has {clip.shape[1]} vertices")
        _LAST_CHECKED_FACES[0] = key
    return faces


def _check_rast(rast: torch.Tensor) -> tuple[int, int, int]:
    if not torch.is_tensor(rast) or rast.dim() != 4 or rast.shape[-1] != 4:
        shape = tuple(rast.shape) if torch.is_tensor(rast) else type(rast).__name__
        raise ValueError(f"rast must have shape (B, H, W, 4), got {shape}")
    return rast.shape[0], rast.shape[1], rast.shape[2]


def _resolution(resolution) -> tuple[int, int]:
    try:
        h, w = (int(r) for r in resolution)
    except (TypeError, ValueError):
        raise ValueError(f"resolution must be (H, W), got {resolution!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"resolution must be positive, got (H, W) = ({h}, {w})")
    return h, w


# ---------------------------------------------------------------------------------------------
# Shared geometry
# ---------------------------------------------------------------------------------------------


def _rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a 2D table via ``index_select`` (much faster than advanced indexing on CPU,
    and its backward is an ``index_add``): (N, C) table, (...) index -> (..., C)."""
    return table.index_select(0, index.reshape(-1)).view(*index.shape, table.shape[1])


def _edge_planes(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Homogeneous edge functions of triangles.

    Args:
        c: (..., 3, 4) clip coordinates of the three vertices.
    Returns:
        A, B, C: (..., 3); ``e_i(x_ndc, y_ndc) = A_i x_ndc + B_i y_ndc + C_i = p . (c_j x c_k)`` over the
        ``(x, y, w)`` components, ``(i, j, k)`` cyclic.
    """
    x0, x1, x2 = c[..., 0, 0], c[..., 1, 0], c[..., 2, 0]
    y0, y1, y2 = c[..., 0, 1], c[..., 1, 1], c[..., 2, 1]
    w0, w1, w2 = c[..., 0, 3], c[..., 1, 3], c[..., 2, 3]
    A = torch.stack([y1 * w2 - w1 * y2, y2 * w0 - w2 * y0, y0 * w1 - w0 * y1], -1)
    B = torch.stack([w1 * x2 - x1 * w2, w2 * x0 - x2 * w0, w0 * x1 - x0 * w1], -1)
    C = torch.stack([x1 * y2 - y1 * x2, x2 * y0 - y2 * x0, x0 * y1 - y0 * x1], -1)
    return A, B, C


def pixel_barycentrics(
    clip: torch.Tensor,
    faces: torch.Tensor,
    batch: torch.Tensor,
    face: torch.Tensor,
    row: torch.Tensor,
    col: torch.Tensor,
    resolution,
) -> torch.Tensor:
    """Perspective-correct barycentrics of pixel centres in given triangles (differentiable in ``clip``).

    Args:
        clip: (B, V, 4) clip coordinates.
        faces: (F, 3) long.
        batch, face, row, col: (P,) long: image index, triangle index, pixel row and column.
        resolution: ``(H, W)``.
    Returns:
        (P, 3) barycentrics ``(b0, b1, b2)`` summing to 1 (``u = b0``, ``v = b1`` in nvdiffrast terms).
    """
    h, w = resolution
    num_verts = clip.shape[1]
    vid = _rows(faces, face) + (batch * num_verts)[:, None]  # (P, 3) rows of the flattened clip
    c = _rows(clip.reshape(-1, 4), vid)  # (P, 3, 4)
    A, B, C = _edge_planes(c)
    x_ndc = ((2 * col + 1).to(clip.dtype) / w - 1)[:, None]
    y_ndc = ((2 * row + 1).to(clip.dtype) / h - 1)[:, None]
    e = A * x_ndc + B * y_ndc + C  # (P, 3)
    # Sums over the 3 vertices are written out: small-dim reductions enter the thread pool.
    return e / (e[:, 0:1] + e[:, 1:2] + e[:, 2:3])


def _owner_index(counts: torch.Tensor, total: int) -> torch.Tensor:
    """``repeat_interleave(arange(len(counts)), counts)`` for counts >= 1, as a cumulative sum of step
    marks (repeat_interleave enters the thread pool, which is slow on a loaded CPU)."""
    marks = torch.zeros(total, dtype=torch.long, device=counts.device)
    marks[torch.cumsum(counts, 0)[:-1]] = 1
    return torch.cumsum(marks, 0)


def _depth_key(z: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
    """int64 keys ordered by float32 depth, then by face index (exact tie-break)."""
    bits = z.float().view(torch.int32)
    # IEEE floats order like sign-magnitude integers: flip the magnitude bits of negatives.
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (bits.long() << 32) | face


# ---------------------------------------------------------------------------------------------
# Rasterize
# ---------------------------------------------------------------------------------------------


def _face_setup(clip: torch.Tensor, faces: torch.Tensor, h: int, w: int):
    """Per-triangle bounding boxes and pixel-space edge/depth planes for triangles that can cover a pixel.

    Returns:
        inst: (S,) long flat ``batch * F + face`` of the surviving triangles.
        box: (4, S) long ``x_lo, y_lo, width, height`` of pixel-centre bounding boxes (non-empty).
        coef: (12, S) ``A(3), B(3), C(3), zA, zB, zC`` with ``e_i = A_i col + B_i row + C_i`` (>= 0 inside
            for all i) and ``z/w = zA col + zB row + zC``. (Rows, not columns: stacking and gathering
            whole rows is much faster than strided columns.)
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
    offset = (torch.arange(bsz, device=clip.device) * num_verts)[:, None]
    vid = [(faces[:, k][None] + offset).reshape(-1) for k in range(3)]
    fx = [px.index_select(0, v) for v in vid]
    fy = [py.index_select(0, v) for v in vid]
    x_lo = torch.ceil(torch.minimum(torch.minimum(fx[0], fx[1]), fx[2]) - (0.5 + _BBOX_EPS))
    x_hi = torch.floor(torch.maximum(torch.maximum(fx[0], fx[1]), fx[2]) - (0.5 - _BBOX_EPS))
    y_lo = torch.ceil(torch.minimum(torch.minimum(fy[0], fy[1]), fy[2]) - (0.5 + _BBOX_EPS))
    y_hi = torch.floor(torch.maximum(torch.maximum(fy[0], fy[1]), fy[2]) - (0.5 - _BBOX_EPS))
    ok = (x_lo <= x_hi) & (y_lo <= y_hi) & (x_hi >= 0) & (y_hi >= 0) & (x_lo <= w - 1) & (y_lo <= h - 1)
    inst = ok.nonzero().squeeze(1)
    if inst.numel() == 0:
        return inst, None, None
    x_lo, x_hi = x_lo.index_select(0, inst).clamp_min(0), x_hi.index_select(0, inst).clamp_max(w - 1)
    y_lo, y_hi = y_lo.index_select(0, inst).clamp_min(0), y_hi.index_select(0, inst).clamp_max(h - 1)

    c = [flat.index_select(0, v.index_select(0, inst)) for v in vid]  # 3 x (S, 4)
    (x0, y0, z0, w0), (x1, y1, z1, w1), (x2, y2, z2, w2) = (ck.unbind(1) for ck in c)
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
    return inst, box, coef


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
    owner = _owner_index(counts, total)
    # Per candidate: (box x_lo, y_lo, width, first candidate index of its triangle).
    meta = torch.cat([box[:3], (torch.cumsum(counts, 0) - counts)[None]]).index_select(1, owner)
    local = torch.arange(total, device=device) - meta[3]
    dy = torch.div(local, meta[2], rounding_mode="floor")
    col = meta[0] + (local - dy * meta[2])
    row = meta[1] + dy
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
    h, w = _resolution(resolution)
    bsz = clip.shape[0]
    num_faces = faces.shape[0]
    with torch.no_grad():
        clip = clip.detach()
        zbuf = torch.full((bsz * h * w,), _KEY_EMPTY, dtype=torch.long, device=clip.device)
        if num_faces:
            inst, box, coef = _face_setup(clip, faces, h, w)
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
                    for s0, s1 in zip(bounds[:-1], bounds[1:]):
                        if s1 > s0:
                            _scatter_candidates(
                                zbuf, inst[s0:s1], box[:, s0:s1], coef[:, s0:s1], num_faces, h, w
                            )
        return _rast_from_zbuf(clip, faces, zbuf, h, w)


def _rast_from_zbuf(
    clip: torch.Tensor, faces: torch.Tensor, zbuf: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    bsz = clip.shape[0]
    rast = torch.zeros(bsz * h * w, 4, dtype=clip.dtype, device=clip.device)
    pix = (zbuf != _KEY_EMPTY).nonzero().squeeze(1)
    if pix.numel():
        face = zbuf[pix] & 0xFFFFFFFF
        batch = torch.div(pix, h * w, rounding_mode="floor")
        rem = pix - batch * (h * w)
        row = torch.div(rem, w, rounding_mode="floor")
        col = rem - row * w
        bary = pixel_barycentrics(clip, faces, batch, face, row, col, (h, w))
        vid = _rows(faces, face) + (batch * clip.shape[1])[:, None]
        cz = _rows(clip.reshape(-1, 4), vid)  # (P, 3, 4)
        zw = (bary * cz[..., 2]).sum(-1) / (bary * cz[..., 3]).sum(-1)  # runs once, under no_grad
        rast[pix] = torch.stack([bary[:, 0], bary[:, 1], zw, (face + 1).to(clip.dtype)], -1)
    return rast.reshape(bsz, h, w, 4)


# ---------------------------------------------------------------------------------------------
# Interpolate
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Antialias
# ---------------------------------------------------------------------------------------------


class MeshTopology(NamedTuple):
    """Edge adjacency, per triangle edge ``i`` (the edge ``(v_{i+1}, v_{i+2})`` opposite vertex ``i``).

    Attributes:
        opposite: (F, 3) long, the vertex of the neighbouring triangle that is not on the edge, or -1.
        neighbour: (F, 3) long, the neighbouring triangle, or -1.
        consistent: (F, 3) bool, the neighbour runs along the edge in the opposite direction (both
            triangles wound the same way); False where there is no neighbour.
        edges: (E, 4) long ``(v_a, v_b, face, neighbour or -1)``, each two-triangle edge once and every
            other triangle edge on its own (faces with repeated vertices left out).
        edge_consistent: (E,) bool, ``consistent`` of those edges.
    """

    opposite: torch.Tensor
    neighbour: torch.Tensor
    consistent: torch.Tensor
    edges: torch.Tensor
    edge_consistent: torch.Tensor


def mesh_topology(faces: torch.Tensor, num_verts: int | None = None) -> MeshTopology:
    """Edge adjacency of a triangle mesh (see :class:`MeshTopology`).

    Boundary edges, non-manifold edges (more than two faces) and faces with repeated vertices have no
    neighbour (-1; treated as silhouette edges). Results are cached for the last few distinct ``faces``
    (compared by value), so calling this every frame costs one comparison.

    Args:
        faces: (F, 3) int.
        num_verts: number of vertices (default ``faces.max() + 1``).
    """
    faces = faces.long()
    for key_faces, topo in _TOPOLOGY_CACHE.values():
        if (
            key_faces.shape == faces.shape
            and key_faces.device == faces.device
            and torch.equal(key_faces, faces)
        ):
            return topo
    num_faces = faces.shape[0]
    nv = int(num_verts) if num_verts is not None else (int(faces.max()) + 1 if num_faces else 1)
    va, vb = faces[:, [1, 2, 0]].reshape(-1), faces[:, [2, 0, 1]].reshape(-1)  # edge i = (v_{i+1}, v_{i+2})
    bad = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 2] == faces[:, 0])
    key = torch.minimum(va, vb) * nv + torch.maximum(va, vb)
    # Faces with repeated vertices take no part in the topology: give their edges unique dummy keys.
    key = torch.where(bad.repeat_interleave(3), -1 - torch.arange(len(key), device=key.device), key)
    order = torch.argsort(key, stable=True)
    _, counts = torch.unique_consecutive(key[order], return_counts=True)
    run_start = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    run_len = torch.repeat_interleave(counts, counts)
    pos = torch.arange(len(key), device=key.device)
    # Each two-face edge pairs sorted positions (s, s+1): the partner of a half-edge is the other one.
    partner = order[torch.where(pos == run_start, pos + 1, pos - 1).clamp_max(max(len(key) - 1, 0))]
    two = run_len == 2
    none = torch.full_like(pos, -1)
    opp_sorted = torch.where(two, faces.reshape(-1)[partner], none)  # half-edge h = 3 f + i faces vertex i
    nbr_sorted = torch.where(two, torch.div(partner, 3, rounding_mode="floor"), none)
    opposite = torch.empty_like(pos).scatter_(0, order, opp_sorted).reshape(num_faces, 3)
    neighbour = torch.empty_like(pos).scatter_(0, order, nbr_sorted).reshape(num_faces, 3)
    opposite[bad], neighbour[bad] = -1, -1
    # Consistent winding: our start vertex v_{i+1} is the partner's end vertex v_{k+2}.
    partner_full = torch.empty_like(pos).scatter_(0, order, partner)
    k = partner_full % 3
    partner_end = faces.reshape(-1)[torch.div(partner_full, 3, rounding_mode="floor") * 3 + (k + 2) % 3]
    consistent = (neighbour.reshape(-1) >= 0) & (partner_end == va)
    own_face = torch.div(pos, 3, rounding_mode="floor")
    nbr_flat = neighbour.reshape(-1)
    keep = (~bad.repeat_interleave(3) & ((nbr_flat < 0) | (own_face < nbr_flat))).nonzero().squeeze(1)
    edges = torch.stack([va[keep], vb[keep], own_face[keep], nbr_flat[keep]], 1)
    topo = MeshTopology(opposite, neighbour, consistent.reshape(num_faces, 3), edges, consistent[keep])
    _TOPOLOGY_CACHE[id(opposite)] = (faces.clone(), topo)
    while len(_TOPOLOGY_CACHE) > _TOPOLOGY_CACHE_SIZE:
        _TOPOLOGY_CACHE.popitem(last=False)
    return topo


def _silhouette_pixels(
    clip: torch.Tensor, faces: torch.Tensor, topo: MeshTopology, h: int, w: int
) -> torch.Tensor:
    """(B H W,) bool: pixels whose square touches the screen bounding box of a possible silhouette edge.

    A silhouette edge that crosses the segment between two neighbouring pixel centres crosses one of
    the two pixel squares, so pairs with neither pixel marked can skip the silhouette search. Possible
    silhouette edges (a superset of the exact test in :func:`antialias`): boundary edges, edges between
    inconsistently wound triangles, edges whose two triangles face different ways (for consistent
    winding this equals the exact test), and edges next to triangles that are not drawn (w <= 0).
    """
    bsz, num_verts, _ = clip.shape
    num_faces = faces.shape[0]
    flat = clip.reshape(-1, 4)
    inv_w = torch.where(flat[:, 3] > 0, 1.0 / flat[:, 3], torch.full_like(flat[:, 3], float("nan")))
    px, py = (flat[:, 0] * inv_w + 1) * (0.5 * w), (flat[:, 1] * inv_w + 1) * (0.5 * h)
    offset = (torch.arange(bsz, device=clip.device) * num_verts)[:, None]
    vid = [(faces[:, k][None] + offset).reshape(-1) for k in range(3)]
    x0, x1, x2 = (px.index_select(0, v) for v in vid)
    y0, y1, y2 = (py.index_select(0, v) for v in vid)
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)  # NaN where a vertex has w <= 0
    # Facing: +-1, or 0 for triangles that are not drawn or so thin that rounding could flip the sign
    # the exact test computes (pixel coordinates carry ~1e-7 relative error); 0 makes every edge of
    # theirs a possible silhouette.
    size = (x1 - x0).abs() + (x2 - x0).abs() + (y1 - y0).abs() + (y2 - y0).abs()
    thin = area.abs() <= 1e-5 * max(h, w) * size
    facing = torch.where(thin, torch.zeros_like(area), torch.sign(area)).view(bsz, num_faces)
    drawn = ~torch.isnan(area)
    va, vb, f1, f2 = topo.edges.unbind(1)
    has2 = f2 >= 0
    f2c = f2.clamp_min(0)
    drawn = drawn.view(bsz, num_faces)
    fa, fb = facing.index_select(1, f1), facing.index_select(1, f2c)  # (B, E)
    sil = (~has2 | ~topo.edge_consistent) | (fa * fb <= 0)
    sil = sil & (drawn.index_select(1, f1) | (drawn.index_select(1, f2c) & has2))
    b, e = sil.nonzero(as_tuple=True)
    mask = torch.zeros(bsz * h * w, dtype=torch.bool, device=clip.device)
    if b.numel() == 0:
        return mask
    vj = va.index_select(0, e) + b * num_verts
    vk = vb.index_select(0, e) + b * num_verts
    xj, xk, yj, yk = (
        px.index_select(0, vj),
        px.index_select(0, vk),
        py.index_select(0, vj),
        py.index_select(0, vk),
    )
    pad = _AA_EPS + 1e-3
    x_lo = torch.floor(torch.minimum(xj, xk) - pad).clamp(0, w - 1).long()
    x_hi = torch.floor(torch.maximum(xj, xk) + pad).clamp(0, w - 1).long()
    y_lo = torch.floor(torch.minimum(yj, yk) - pad).clamp(0, h - 1).long()
    y_hi = torch.floor(torch.maximum(yj, yk) + pad).clamp(0, h - 1).long()
    bw, bh = x_hi - x_lo + 1, y_hi - y_lo + 1
    counts = bw * bh
    total = int(counts.sum())
    owner = _owner_index(counts, total)
    local = torch.arange(total, device=clip.device) - (torch.cumsum(counts, 0) - counts).index_select(
        0, owner
    )
    bwo = bw.index_select(0, owner)
    dy = torch.div(local, bwo, rounding_mode="floor")
    pix = (
        (b.index_select(0, owner) * h + y_lo.index_select(0, owner) + dy) * w
        + x_lo.index_select(0, owner)
        + (local - dy * bwo)
    )
    mask[pix] = True
    return mask


def _to_pixels(c: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    inv_w = 1.0 / c[..., 3]
    return (c[..., 0] * inv_w + 1) * (0.5 * w), (c[..., 1] * inv_w + 1) * (0.5 * h)


@torch.no_grad()
def _silhouette_crossings(rast: torch.Tensor, clip: torch.Tensor, faces: torch.Tensor, max_hops: int):
    """Pixel pairs to blend and the silhouette edge each one crosses (see :func:`antialias`).

    Returns:
        None when nothing is to be blended, else (P,) long tensors ``pix0, pix1`` (flat indices of the
        left/top and right/bottom pixel), ``down`` (1 for vertical pairs), ``frow, fcol`` (front pixel),
        float ``ds`` (+1 when pixel 0 is in front, else -1) and ``vj, vk`` (rows of ``clip.reshape(-1, 4)``
        of the edge's end points).
    """
    h, w = rast.shape[1:3]
    num_verts = clip.shape[1]
    clip = clip.detach()
    tri = rast[..., 3].long() - 1  # (B, H, W), -1 = background
    zw = rast[..., 2]
    pairs = []
    for down in (0, 1):
        t0 = tri[:, :-1] if down else tri[:, :, :-1]
        t1 = tri[:, 1:] if down else tri[:, :, 1:]
        b, r, c = (t0 != t1).nonzero(as_tuple=True)
        p0 = (b * h + r) * w + c
        pairs.append((p0, p0 + (w if down else 1), torch.full_like(p0, down)))
    pix0, pix1, down = (torch.cat(x) for x in zip(*pairs))
    if pix0.numel() == 0:
        return None
    topo = mesh_topology(faces, num_verts)
    if max_hops > 0:
        # Only pairs that a silhouette edge can cross need the (walking) search.
        near = _silhouette_pixels(clip, faces, topo, h, w)
        idx = (near.index_select(0, pix0) | near.index_select(0, pix1)).nonzero().squeeze(1)
        pix0, pix1, down = pix0.index_select(0, idx), pix1.index_select(0, idx), down.index_select(0, idx)
        if pix0.numel() == 0:
            return None
    tri_flat, z_flat = tri.reshape(-1), zw.reshape(-1)
    tri0, tri1 = tri_flat.index_select(0, pix0), tri_flat.index_select(0, pix1)
    # The triangle in front owns the edge: the non-background one, else the nearer one.
    use1 = (tri0 < 0) | ((tri1 >= 0) & ~(z_flat.index_select(0, pix0) < z_flat.index_select(0, pix1)))
    face = torch.where(use1, tri1, tri0)
    far_face = torch.where(use1, tri0, tri1)
    front = torch.where(use1, pix1, pix0)
    batch = torch.div(pix0, h * w, rounding_mode="floor")
    rem = front - batch * (h * w)
    frow = torch.div(rem, w, rounding_mode="floor")
    fcol = rem - frow * w
    ds = 1.0 - 2.0 * use1.to(clip.dtype)  # +1: the neighbour lies along +a (see below)
    # Work in (a, b) pixel coordinates: a along the pair, b across it, i.e. (x, y) for horizontal
    # pairs and (y, x) for vertical ones. One vertex table holds both layouts; w <= 0 gives NaN.
    flat = clip.reshape(-1, 4)
    inv_w = torch.where(flat[:, 3] > 0, 1.0 / flat[:, 3], torch.full_like(flat[:, 3], float("nan")))
    px, py = (flat[:, 0] * inv_w + 1) * (0.5 * w), (flat[:, 1] * inv_w + 1) * (0.5 * h)
    table = torch.cat([torch.stack([px, py], 1), torch.stack([py, px], 1)])  # (2 B V, 2)
    dn = down.bool()
    # Per pair: front centre (a, b), direction sign; first table row of its image/layout, far face.
    pair_f = torch.stack(
        [
            torch.where(dn, frow, fcol).to(clip.dtype) + 0.5,
            torch.where(dn, fcol, frow).to(clip.dtype) + 0.5,
            ds,
        ],
        1,
    )
    pair_i = torch.stack([batch * num_verts + down * flat.shape[0], far_face], 1)
    opposite, neighbour = topo.opposite.reshape(-1), topo.neighbour.reshape(-1)
    found_pair, found_half = [], []
    active = torch.arange(len(pix0), device=pix0.device)
    cur = face
    for hop in range(max_hops + 1):
        pf = pair_f.index_select(0, active)
        base, far = pair_i.index_select(0, active).unbind(1)
        vid = faces.index_select(0, cur) + base[:, None]  # (A, 3) table rows
        rel = table.index_select(0, vid.reshape(-1)).view(-1, 3, 2) - pf[:, None, :2]
        relj, relk = rel.roll(-1, 1), rel.roll(-2, 1)  # edge i runs from vertex i+1 to vertex i+2
        dr = relk - relj
        aj, bj = relj.unbind(-1)
        da, db = dr.unbind(-1)
        straddle = (bj >= 0) != (relk[..., 1] >= 0)  # the edge crosses the line through both centres
        dc = torch.where(straddle, pf[:, 2:3] * (aj - bj * da / db), -float("inf"))
        # Where the line leaves the triangle towards the neighbour: the farthest straddling edge
        # (elementwise arg-max over the three edges; ties go to the lower index).
        d0, d1, d2 = dc.unbind(1)
        d01 = torch.maximum(d0, d1)
        d = torch.maximum(d01, d2)
        edge = torch.where(d2 > d01, 2, (d1 > d0).long())[:, None]
        half = cur * 3 + edge.squeeze(1)
        opp = opposite.index_select(0, half)
        # (start of the edge, edge vector, own third vertex) of the chosen edge.
        g = torch.cat([relj, dr, rel], -1).gather(1, edge[:, :, None].expand(-1, 1, 6)).squeeze(1)
        wing_v = table.index_select(0, opp.clamp_min(0) + base) - pf[:, :2] - g[:, 0:2]
        own_v = g[:, 4:6] - g[:, 0:2]
        own = g[:, 2] * own_v[:, 1] - g[:, 3] * own_v[:, 0]
        wing = g[:, 2] * wing_v[:, 1] - g[:, 3] * wing_v[:, 0]
        # Silhouette: the far vertex of the triangle across the edge is not strictly on the other
        # side from this triangle's third vertex (NaN, i.e. w <= 0, counts as a border).
        silhouette = (opp < 0) | ~(own * wing < 0)
        inside = (d > -_AA_EPS) & (d < 1 + _AA_EPS)
        hit = (inside & silhouette & (g[:, 3].abs() >= g[:, 2].abs())).nonzero().squeeze(1)
        if hit.numel():
            found_pair.append(active.index_select(0, hit))
            found_half.append(half.index_select(0, hit))
        if hop == max_hops:
            break
        # Continue across interior edges until the neighbour pixel's triangle or centre is reached.
        nxt = neighbour.index_select(0, half)
        go = (~silhouette & (d > -float("inf")) & (d < 1 + _AA_EPS) & (nxt != far)).nonzero().squeeze(1)
        if go.numel() == 0:
            break
        active, cur = active.index_select(0, go), nxt.index_select(0, go)
    if not found_pair:
        return None
    sel, half = torch.cat(found_pair), torch.cat(found_half)
    pix0, pix1, down, frow, fcol, ds, batch = (
        x.index_select(0, sel) for x in (pix0, pix1, down, frow, fcol, ds, batch)
    )
    fidx, eidx = torch.div(half, 3, rounding_mode="floor"), half % 3
    fl = faces.reshape(-1)
    vj = fl.index_select(0, fidx * 3 + (eidx + 1) % 3) + batch * num_verts
    vk = fl.index_select(0, fidx * 3 + (eidx + 2) % 3) + batch * num_verts
    return pix0, pix1, down, frow, fcol, ds, vj, vk


def _attach(color: torch.Tensor, clip: torch.Tensor) -> torch.Tensor:
    """``color`` unchanged but, when ``clip`` requires grad, part of its graph (with zero gradient), so
    that a loss on an image without silhouettes still back-propagates like one with them."""
    if clip.requires_grad and torch.is_grad_enabled():
        return color + (clip.reshape(-1)[:1] * 0).to(color.dtype).reshape(())
    return color


def antialias(
    color: torch.Tensor,
    rast: torch.Tensor,
    clip: torch.Tensor,
    faces: torch.Tensor,
    max_hops: int = DEFAULT_AA_MAX_HOPS,
) -> torch.Tensor:
    """Analytic silhouette-edge antialiasing (nvdiffrast's model, extended for dense meshes).

    For every right/down neighbour pair with different triangle ids, the triangle in front (the
    non-background one, else the one with the smaller z/w) is intersected with the line through both
    pixel centres. If its edge on the neighbour's side is a silhouette edge (a mesh boundary, or the
    triangle across it folds back in screen space), at least as steep as it is wide along the pair, and
    crosses within the segment at distance ``d`` from the front pixel's centre, the pixel whose half
    holds the crossing is blended towards the other by ``|0.5 - d|``.

    nvdiffrast stops when that edge is an interior edge. On dense meshes the triangles along the
    contour are sub-pixel slivers that rarely own a pixel, so that rule misses most silhouettes: the
    gradient of the total antialiased coverage w.r.t. a uniform scale of the mesh, compared with the
    true rate of change of the covered area, is 17 % on the 98k-face procedural hand at 256 px and 0 %
    on a 5120-face sphere at 48 px. Here the search instead follows the surface across interior edges
    along the pair's segment, up to ``max_hops`` triangles, and stops without blending when it reaches
    the neighbour pixel's triangle or passes its centre; with the default that ratio is 98 % and 97 %
    (93 % with 16 hops, 52 % with 8 on the hand). ``max_hops=0`` is nvdiffrast's rule.

    Args:
        color: (B, H, W, C) shaded image (e.g. from :func:`interpolate`).
        rast: (B, H, W, 4) raster that produced it.
        clip: (B, V, 4) clip vertices of ``rast``.
        faces: (F, 3) int.
        max_hops: interior edges the silhouette search may cross (0 = nvdiffrast).
    Returns:
        (B, H, W, C) antialiased image; differentiable w.r.t. ``color`` and ``clip`` (silhouette
        gradients through the edge crossing positions).
    """
    bsz, h, w = _check_rast(rast)
    faces = _check_clip_faces(clip, faces)
    if color.dim() != 4 or tuple(color.shape[:3]) != (bsz, h, w):
        raise ValueError(
            f"color must have shape ({bsz}, {h}, {w}, C) to match rast, got {tuple(color.shape)}"
        )
    if clip.shape[0] != bsz:
        raise ValueError(f"clip batch {clip.shape[0]} does not match rast batch {bsz}")
    crossings = _silhouette_crossings(rast, clip, faces, max_hops)
    if crossings is None:
        return _attach(color, clip)
    pix0, pix1, down, frow, fcol, ds, vj, vk = crossings
    chans = color.shape[-1]
    ds = ds.to(clip.dtype)

    # Differentiable part: where the chosen edge crosses the pair's segment, from the live clip tensor.
    flat = clip.reshape(-1, 4)
    pjx, pjy = _to_pixels(flat.index_select(0, vj), h, w)
    pkx, pky = _to_pixels(flat.index_select(0, vk), h, w)
    dn = down.bool()
    fx, fy = fcol.to(clip.dtype) + 0.5, frow.to(clip.dtype) + 0.5
    xj, yj = torch.where(dn, pjy - fy, pjx - fx), torch.where(dn, pjx - fx, pjy - fy)
    xk, yk = torch.where(dn, pky - fy, pkx - fx), torch.where(dn, pkx - fx, pky - fy)
    dc = ds * (xj - yj * (xk - xj) / (yk - yj))
    alpha = (ds * (0.5 - dc.clamp(0.0, 1.0))).to(color.dtype)
    # alpha > 0: the edge lies in pixel 0's half, pixel 0 takes alpha of pixel 1; else the reverse.
    target = torch.where(alpha > 0, pix0, pix1)
    col_flat = color.reshape(-1, chans)
    delta = alpha[:, None] * (col_flat.index_select(0, pix1) - col_flat.index_select(0, pix0))
    return col_flat.index_add(0, target, delta).reshape(color.shape)


# ---------------------------------------------------------------------------------------------
# Visibility
# ---------------------------------------------------------------------------------------------


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


class TorchRenderer:
    """Pure-PyTorch renderer (``backend="torch"``): runs wherever its input tensors live.

    Args:
        aa_max_hops: ``max_hops`` of :func:`antialias` (0 reproduces nvdiffrast's silhouette rule).
    """

    name = "torch"

    def __init__(self, aa_max_hops: int = DEFAULT_AA_MAX_HOPS):
        self.aa_max_hops = int(aa_max_hops)

    def rasterize(self, clip, faces, resolution):
        return rasterize(clip, faces, resolution)

    def interpolate(self, attr, rast, faces, clip=None):
        return interpolate(attr, rast, faces, clip)

    def antialias(self, color, rast, clip, faces):
        return antialias(color, rast, clip, faces, max_hops=self.aa_max_hops)

    def visible_vertices(self, rast, faces, num_verts):
        return visible_vertices(rast, faces, num_verts)

    def __repr__(self) -> str:
        return f"TorchRenderer(aa_max_hops={self.aa_max_hops})"


__all__ = [
    "rasterize",
    "interpolate",
    "antialias",
    "visible_vertices",
    "pixel_barycentrics",
    "mesh_topology",
    "MeshTopology",
    "DEFAULT_AA_MAX_HOPS",
    "TorchRenderer",
]
