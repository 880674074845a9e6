"""Helpers shared by the torch backend's ops: input checks, edge planes, pixel barycentrics, mesh topology,
and what the ops keep between calls (the per-faces cache, the last raster's per-pixel data; see
docs/architecture.md, "Renderer").

Conventions are those of :mod:`utils.render.torch_backend` (clip coordinates, pixel centres, ``rast``
layout). Imports torch only.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import NamedTuple

import torch

_TOPOLOGY_CACHE: OrderedDict = OrderedDict()
_LAST_CHECKED_FACES: list = [None]
_TOPOLOGY_CACHE_SIZE = 4
_FACES_CACHE: OrderedDict = OrderedDict()  # id(faces) -> (faces, faces._version, {name: value})
_FACES_CACHE_SIZE = 4


# ---------------------------------------------------------------------------------------------
# Per-mesh cache
# ---------------------------------------------------------------------------------------------


def faces_cached(faces: torch.Tensor, name: str, build):
    """``build()``, computed once per ``faces`` tensor object and in-place version (for the last few).

    Per-frame work that depends on the faces only (their long copy, index columns, topology tables)
    is looked up here. The entry holds a reference to ``faces``, so its ``id`` is not reused while
    cached, and any in-place change (``faces[...] = ...``, ``faces.copy_(...)``) bumps ``faces._version``
    and misses. Not seen: writes that bypass the version counter (through ``faces.data`` or a NumPy
    view); pass a new tensor after those. Inference tensors have no version counter: nothing is cached
    for them.
    """
    version = _version(faces)
    if version is None:
        return build()
    key = id(faces)
    entry = _FACES_CACHE.get(key)
    if entry is None or entry[0] is not faces or entry[1] != version:
        entry = (faces, version, {})
        _FACES_CACHE[key] = entry
        while len(_FACES_CACHE) > _FACES_CACHE_SIZE:
            _FACES_CACHE.popitem(last=False)
    values = entry[2]
    if name not in values:
        values[name] = build()
    return values[name]


def _version(t: torch.Tensor) -> int | None:
    """In-place version counter of ``t``; None for inference tensors, which have none."""
    return None if t.is_inference() else t._version


def _as_long(faces: torch.Tensor) -> torch.Tensor:
    """``faces.long()``, the same tensor object every call for the same input (so that caches keyed on
    it hit for int32 faces too)."""
    return faces if faces.dtype == torch.long else faces_cached(faces, "long", faces.long)


def _face_vertex_rows(faces: torch.Tensor, bsz: int, num_verts: int) -> torch.Tensor:
    """(3, B F) int: row of corner k of face f of image b in ``clip.reshape(-1, 4)`` at ``[k, b F + f]``.
    Contiguous rows (1D gathers with them are fast), int32 for one image (cached per faces; gathering
    from int32 is about twice as fast as from int64)."""
    columns = faces_cached(faces, "columns", lambda: faces.t().int().contiguous())
    if bsz == 1:
        return columns
    offset = torch.arange(bsz, device=faces.device) * num_verts
    return (columns[:, None, :] + offset[None, :, None]).reshape(3, -1)


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
    key = (faces.data_ptr(), _version(faces), faces.dtype, tuple(faces.shape), faces.device, clip.shape[1])
    faces = _as_long(faces)
    if faces.numel() and (key[1] is None or key != _LAST_CHECKED_FACES[0]):
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
    e = _pixel_edge_values(clip, faces, batch, face, row, col, resolution).e
    # Sums over the 3 vertices are written out: small-dim reductions enter the thread pool.
    return e / (e[:, 0:1] + e[:, 1:2] + e[:, 2:3])


class PixelEdges(NamedTuple):
    """Per covered pixel: ``corner`` (P, 3) its triangle's vertex indices, ``vid`` (P, 3) their rows in
    ``clip.reshape(-1, 4)``, ``c`` (P, 3, 4) those clip vertices, ``x_ndc, y_ndc`` (P, 1) the pixel
    centre and ``e`` (P, 3) the edge functions there (barycentrics times their sum)."""

    corner: torch.Tensor
    vid: torch.Tensor
    c: torch.Tensor
    x_ndc: torch.Tensor
    y_ndc: torch.Tensor
    e: torch.Tensor


def _pixel_edge_values(clip, faces, batch, face, row, col, resolution) -> PixelEdges:
    """Edge functions of triangles at pixel centres (arguments as :func:`pixel_barycentrics`, which
    normalises ``e``)."""
    h, w = resolution
    num_verts = clip.shape[1]
    corner = _rows(faces, face)
    vid = corner + (batch * num_verts)[:, None]  # (P, 3) rows of the flattened clip
    c = _rows(clip.reshape(-1, 4), vid)  # (P, 3, 4)
    A, B, C = _edge_planes(c)
    x_ndc = ((2 * col + 1).to(clip.dtype) / w - 1)[:, None]
    y_ndc = ((2 * row + 1).to(clip.dtype) / h - 1)[:, None]
    return PixelEdges(corner, vid, c, x_ndc, y_ndc, A * x_ndc + B * y_ndc + C)


# The covered pixels and their edge values of the last raster, for interpolate to reuse instead of
# recomputing them: (weak ref to rast, its version, weak ref to clip, its version, faces, data). Only
# used while rast, clip and faces are the very objects rasterize saw, unchanged since (in-place
# changes bump the version counters); cleared when rast is freed.
_LAST_RASTER: list = [None]


def _stash_raster(rast: torch.Tensor, clip: torch.Tensor, faces: torch.Tensor, data: dict) -> None:
    def clear(ref):
        entry = _LAST_RASTER[0]
        if entry is not None and entry[0] is ref:
            _LAST_RASTER[0] = None

    if rast.is_inference() or clip.is_inference():  # no version counters to check: keep nothing
        _LAST_RASTER[0] = None
        return
    _LAST_RASTER[0] = (weakref.ref(rast, clear), rast._version, weakref.ref(clip), clip._version, faces, data)


def _stashed_raster(rast: torch.Tensor) -> tuple | None:
    """``(data, clip, faces)`` stashed by :func:`utils.render.rasterize.rasterize` for this very,
    unchanged ``rast`` (``clip`` None when it was freed or changed since), else None."""
    entry = _LAST_RASTER[0]
    if entry is None or entry[0]() is not rast or entry[1] != _version(rast):
        return None
    clip = entry[2]()
    if clip is not None and _version(clip) != entry[3]:
        clip = None
    return entry[5], clip, entry[4]


def _owner_index(counts: torch.Tensor, total: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """``repeat_interleave(arange(len(counts)), counts)`` for counts >= 1, as a cumulative sum of step
    marks (repeat_interleave enters the thread pool, which is slow on a loaded CPU)."""
    marks = torch.zeros(total, dtype=dtype, device=counts.device)
    marks[torch.cumsum(counts, 0)[:-1]] = 1
    return torch.cumsum(marks, 0, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Mesh topology
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
    (compared by value, so calling this every frame costs one comparison; nothing when it is the same
    tensor object, unchanged, as last time: see :func:`faces_cached`).

    Args:
        faces: (F, 3) int.
        num_verts: number of vertices (default ``faces.max() + 1``).
    """
    faces = _as_long(faces)
    # The same tensor object, unchanged since: no comparison needed (else by value).
    return faces_cached(faces, "topology", lambda: _mesh_topology_by_value(faces, num_verts))


def _mesh_topology_by_value(faces: torch.Tensor, num_verts: int | None) -> MeshTopology:
    """:func:`mesh_topology` for long faces, cached by value."""
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
