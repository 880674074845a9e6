"""Triangle-mesh operations: Loop subdivision with skinning-weight upsampling, normals, edges and
the uniform Laplacian.

Conventions: ``verts`` are (V, 3) or batched (B, V, 3) positions in metres (any frame); ``faces``
are (F, 3) integer vertex indices, counter-clockwise seen from outside (outward normals). Torch
functions keep dtype and device. The preprocessing functions (subdivision, edges, Laplacian) check
their inputs and raise ``ValueError`` naming the problem; the per-step functions (normals, edge
lengths) check shapes, and values only with ``check=True`` (a value check synchronises a GPU).

Loop subdivision is trimesh's (the reference code's), one level at a time. The weight upsampling
depends on trimesh's output order, which is verified at run time (see :func:`loop_subdivide`).
MANO's counts: 778 -> 3093 -> 12337 -> 49281 vertices and 1538 -> 6152 -> 24608 -> 98432 faces
(``V' = V + E``, ``F' = 4F``, ``E' = 2E + 3F``); the procedural hand has exactly the same counts.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "check_mesh",
    "loop_subdivide",
    "subdivision_counts",
    "face_normals",
    "vertex_normals",
    "unique_edges",
    "edge_lengths",
    "uniform_laplacian",
    "subdivided_hand",
]


def _to_numpy(x, dtype=None) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def check_mesh(
    verts, faces, num_verts: int | None = None, allow_degenerate: bool = True, name: str = "mesh"
) -> None:
    """Validate a mesh; raise ``ValueError`` naming the first problem found.

    Args:
        verts: (V, 3) or (B, V, 3) positions (numpy or torch), or None to check ``faces`` only.
        faces: (F, 3) integer vertex indices.
        num_verts: vertex count when ``verts`` is None.
        allow_degenerate: accept faces that repeat a vertex.
        name: what to call the mesh in messages.
    """
    if verts is not None:
        shape = tuple(verts.shape)
        if len(shape) not in (2, 3) or shape[-1] != 3:
            raise ValueError(f"{name}: verts must be (V, 3) or (B, V, 3), got shape {shape}")
        num_verts = shape[-2]
        finite = torch.isfinite(verts).all().item() if torch.is_tensor(verts) else np.isfinite(verts).all()
        if not finite:
            raise ValueError(f"{name}: verts contain NaN or inf")
    if tuple(faces.shape)[-1:] != (3,) or len(faces.shape) != 2:
        raise ValueError(f"{name}: faces must be (F, 3), got shape {tuple(faces.shape)}")
    integer = (
        not faces.is_floating_point() and not faces.is_complex() and faces.dtype != torch.bool
        if torch.is_tensor(faces)
        else np.issubdtype(np.asarray(faces).dtype, np.integer)
    )
    if not integer:
        raise ValueError(f"{name}: faces must hold integer indices, got dtype {faces.dtype}")
    if len(faces) == 0:
        return
    lo, hi = int(faces.min()), int(faces.max())
    if num_verts is not None and (lo < 0 or hi >= num_verts):
        raise ValueError(
            f"{name}: faces index vertices in [{lo}, {hi}] but there are {num_verts} vertices "
            f"(valid: 0..{num_verts - 1})"
        )
    if lo < 0:
        raise ValueError(f"{name}: faces contain negative index {lo}")
    if not allow_degenerate:
        f = _to_numpy(faces)
        bad = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 2] == f[:, 0])
        if bad.any():
            raise ValueError(
                f"{name}: {int(bad.sum())} degenerate faces repeat a vertex "
                f"(first: face {int(np.argmax(bad))} = {f[np.argmax(bad)].tolist()})"
            )


# ----------------------------------------------------------------------------------------------
# Loop subdivision
# ----------------------------------------------------------------------------------------------
def subdivision_counts(
    num_verts: int, num_faces: int, num_edges: int, levels: int
) -> list[tuple[int, int, int]]:
    """(V, F, E) after each of ``levels`` Loop subdivisions (level 0 first):
    ``V' = V + E``, ``F' = 4F``, ``E' = 2E + 3F``."""
    counts = [(num_verts, num_faces, num_edges)]
    for _ in range(levels):
        v, f, e = counts[-1]
        counts.append((v + e, 4 * f, 2 * e + 3 * f))
    return counts


def _edge_vertex_endpoints(
    faces: np.ndarray, new_faces: np.ndarray, num_old: int, num_new_total: int
) -> np.ndarray:
    """Endpoints (E, 2) of every new edge vertex, read from trimesh's face order; verifies it.

    trimesh 5.2 splits face ``i = (v0, v1, v2)`` into faces ``4i..4i+3``:
    ``(v0, o01, o20), (o01, v1, o12), (o20, o12, v2), (o01, o12, o20)``, where ``o_ab`` is the new
    vertex on edge ``ab``; old vertices keep their indices, new ones follow.
    """
    num_faces = len(faces)
    if new_faces.shape != (4 * num_faces, 3):
        raise RuntimeError(_order_error(f"expected {4 * num_faces} faces, got {new_faces.shape}"))
    quad = new_faces.reshape(num_faces, 4, 3)
    o01, o12, o20 = quad[:, 0, 1], quad[:, 1, 2], quad[:, 0, 2]
    same = (
        (quad[:, 0, 0] == faces[:, 0])
        & (quad[:, 1, 1] == faces[:, 1])
        & (quad[:, 2, 2] == faces[:, 2])
        & (quad[:, 1, 0] == o01)
        & (quad[:, 3, 0] == o01)
        & (quad[:, 2, 1] == o12)
        & (quad[:, 3, 1] == o12)
        & (quad[:, 2, 0] == o20)
        & (quad[:, 3, 2] == o20)
        & (o01 >= num_old)
        & (o12 >= num_old)
        & (o20 >= num_old)
    )
    if not same.all():
        bad = int(np.argmin(same))
        raise RuntimeError(_order_error(f"face {bad} {faces[bad].tolist()} became {quad[bad].tolist()}"))
    odd = np.concatenate([o01, o12, o20]) - num_old
    ends = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    num_odd = num_new_total - num_old
    endpoints = np.full((num_odd, 2), -1, dtype=np.int64)
    endpoints[odd] = ends
    # Every new vertex must be claimed, and all faces sharing it must agree on its edge.
    if (endpoints < 0).any() or not (endpoints[odd] == ends).all():
        raise RuntimeError(_order_error("new vertices do not correspond one-to-one to the mesh edges"))
    return endpoints


def _order_error(detail: str) -> str:
    import trimesh

    return (
        "trimesh.remesh.subdivide_loop no longer returns its vertices and faces in the order the "
        f"skinning-weight upsampling relies on ({detail}); trimesh {trimesh.__version__} is installed, "
        "the code was written for trimesh 5.2 (pin trimesh==5.2.0 or update utils/geometry/mesh.py)"
    )


def loop_subdivide(verts, faces, levels: int = 1, weights=None):
    """Loop-subdivide a mesh ``levels`` times (trimesh) and upsample per-vertex weights.

    Old vertices move (Loop smoothing) but keep their weights; each new edge vertex gets the mean
    of its two endpoints' weights (the reference ``subdivide_weight``), so rows keep summing to 1.

    Args:
        verts: (V, 3) vertices (numpy or torch), metres.
        faces: (F, 3) integer faces.
        levels: number of subdivision steps (>= 0).
        weights: optional (V, C) per-vertex attributes, e.g. (V, 16) skinning weights.
    Returns:
        ``(verts (V', 3), faces (F', 3), weights (V', C) or None)``, torch tensors (verts/weights keep
        the input dtype and device; faces long) when ``verts`` is a tensor, else numpy (float64, int64).
    Raises:
        ValueError: bad input mesh. RuntimeError: trimesh changed its output order.
    """
    import trimesh

    if levels < 0:
        raise ValueError(f"levels must be >= 0, got {levels}")
    check_mesh(verts, faces, allow_degenerate=False, name="loop_subdivide")
    if len(verts.shape) != 2:
        raise ValueError(f"loop_subdivide: verts must be (V, 3), got {tuple(verts.shape)}")
    is_torch = torch.is_tensor(verts)
    v = _to_numpy(verts, np.float64)
    f = _to_numpy(faces, np.int64)
    w = None
    if weights is not None:
        w = _to_numpy(weights, np.float64)
        if w.ndim != 2 or w.shape[0] != len(v):
            raise ValueError(f"loop_subdivide: weights must be (V, C) with V = {len(v)}, got {w.shape}")
    for _ in range(levels):
        new_v, new_f = trimesh.remesh.subdivide_loop(v, f, iterations=1)
        new_f = np.asarray(new_f, dtype=np.int64)
        if w is not None:
            ends = _edge_vertex_endpoints(f, new_f, len(v), len(new_v))
            w = np.concatenate([w, 0.5 * (w[ends[:, 0]] + w[ends[:, 1]])])
        else:
            _edge_vertex_endpoints(f, new_f, len(v), len(new_v))
        v, f = np.asarray(new_v, dtype=np.float64), new_f
    if not is_torch:
        return v, f, w
    out_v = torch.as_tensor(v, dtype=verts.dtype, device=verts.device)
    out_f = torch.as_tensor(f, dtype=torch.long, device=verts.device)
    out_w = None
    if w is not None:
        ref = weights if torch.is_tensor(weights) else verts
        out_w = torch.as_tensor(w, dtype=ref.dtype, device=ref.device)
    return out_v, out_f, out_w


# ----------------------------------------------------------------------------------------------
# Normals, edges, Laplacian
# ----------------------------------------------------------------------------------------------
def _batched(verts: torch.Tensor, faces: torch.Tensor, fn: str):
    if not torch.is_tensor(verts) or not torch.is_tensor(faces):
        raise TypeError(f"{fn}: verts and faces must be torch tensors")
    if verts.dim() not in (2, 3) or verts.shape[-1] != 3:
        raise ValueError(f"{fn}: verts must be (V, 3) or (B, V, 3), got {tuple(verts.shape)}")
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"{fn}: faces must be (F, 3), got {tuple(faces.shape)}")
    single = verts.dim() == 2
    return (verts.unsqueeze(0) if single else verts), faces.long(), single


def _face_cross(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    v0, v1, v2 = (verts[:, faces[:, k]] for k in range(3))
    return torch.cross(v1 - v0, v2 - v0, dim=-1)  # (B, F, 3), norm = 2 * area


def face_normals(
    verts: torch.Tensor, faces: torch.Tensor, eps: float = 1e-12, check: bool = False
) -> torch.Tensor:
    """Unit face normals (right-hand rule on the face's vertex order).

    Args:
        verts: (V, 3) or (B, V, 3). faces: (F, 3) long. eps: floor of the norm (degenerate faces
        get a zero normal). check: also validate values (indices in range, finite).
    Returns:
        (F, 3) or (B, F, 3).
    """
    if check:
        check_mesh(verts, faces, name="face_normals")
    v, f, single = _batched(verts, faces, "face_normals")
    n = _face_cross(v, f)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(eps)
    return n[0] if single else n


def vertex_normals(
    verts: torch.Tensor, faces: torch.Tensor, eps: float = 1e-12, check: bool = False
) -> torch.Tensor:
    """Area-weighted unit vertex normals (sum of the adjacent faces' cross products).

    Args:
        verts: (V, 3) or (B, V, 3). faces: (F, 3) long. eps: floor of the norm (isolated vertices
        get a zero normal). check: also validate values.
    Returns:
        (V, 3) or (B, V, 3), differentiable w.r.t. ``verts``.
    """
    if check:
        check_mesh(verts, faces, name="vertex_normals")
    v, f, single = _batched(verts, faces, "vertex_normals")
    cross = _face_cross(v, f)
    normals = torch.zeros_like(v)
    for k in range(3):
        normals = normals.index_add(1, f[:, k], cross)
    normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(eps)
    return normals[0] if single else normals


def unique_edges(faces):
    """Unique undirected edges ``(E, 2)`` with ``i < j``, sorted lexicographically.

    Args:
        faces: (F, 3) integer faces (numpy or torch).
    Returns:
        (E, 2) of the same kind (torch long on the faces' device, or numpy int64).
    """
    check_mesh(None, faces, name="unique_edges")
    f = _to_numpy(faces, np.int64)
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    edges = np.unique(edges, axis=0)
    if torch.is_tensor(faces):
        return torch.as_tensor(edges, dtype=torch.long, device=faces.device)
    return edges


def edge_lengths(verts: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Edge lengths: (E,) for (V, 3) verts or (B, E) for (B, V, 3); metres like ``verts``."""
    if edges.dim() != 2 or edges.shape[1] != 2:
        raise ValueError(f"edge_lengths: edges must be (E, 2), got {tuple(edges.shape)}")
    if verts.shape[-1] != 3 or verts.dim() not in (2, 3):
        raise ValueError(f"edge_lengths: verts must be (V, 3) or (B, V, 3), got {tuple(verts.shape)}")
    edges = edges.long()
    return (verts[..., edges[:, 0], :] - verts[..., edges[:, 1], :]).norm(dim=-1)


def uniform_laplacian(
    num_verts: int, faces, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Uniform (umbrella) Laplacian ``L = D^-1 A - I`` as a sparse (V, V) torch tensor.

    ``(L @ x)_i`` is the mean of vertex i's neighbours minus ``x_i``: zero for constant fields and,
    at interior vertices of a flat regular grid, for linear ones. Isolated vertices get a zero row.

    Args:
        num_verts: V. faces: (F, 3) integer faces. dtype/device of the result (default: the
            faces' device).
    Returns:
        Coalesced sparse COO tensor (V, V).
    """
    check_mesh(None, faces, num_verts=num_verts, name="uniform_laplacian")
    if device is None:
        device = faces.device if torch.is_tensor(faces) else "cpu"
    edges = _to_numpy(unique_edges(faces), np.int64)
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    degree = np.bincount(rows, minlength=num_verts).astype(np.float64)
    vals = 1.0 / degree[rows]
    connected = np.nonzero(degree > 0)[0]
    rows = np.concatenate([rows, connected])
    cols = np.concatenate([cols, connected])
    vals = np.concatenate([vals, -np.ones(len(connected))])
    index = torch.as_tensor(np.stack([rows, cols]), dtype=torch.long, device=device)
    values = torch.as_tensor(vals, dtype=dtype, device=device)
    return torch.sparse_coo_tensor(index, values, (num_verts, num_verts), check_invariants=False).coalesce()


# ----------------------------------------------------------------------------------------------
# The subdivided hand template
# ----------------------------------------------------------------------------------------------
_CACHE_ATTR = "_subdivision_cache"
_MAX_CACHED_SHAPES = 8


def subdivided_hand(hand_model, level: int = 3, shape: torch.Tensor | None = None):
    """The hand's canonical template Loop-subdivided ``level`` times, with upsampled weights.

    As in XHand/SRHand: the shaped template ``v_template + shapedirs · shape`` (778 vertices) is
    subdivided by trimesh; the skinning weights are upsampled by edge-midpoint averaging. Results
    are cached on the model (per level, and per shape for the positions).

    Args:
        hand_model: a :class:`utils.geometry.mano.HandModel`.
        level: number of subdivisions (3 gives 49,281 vertices for MANO-topology hands).
        shape: (10,) shape coefficients (e.g. the sequence's mean shape); None = zeros.
    Returns:
        ``verts (V', 3)`` rest frame, metres; ``faces (F', 3)`` long; ``weights (V', 16)``; on the
        model's device, in its dtype.
    """
    if shape is not None and shape.dim() != 1:
        raise ValueError(f"subdivided_hand: shape must be (S,), got {tuple(shape.shape)}")
    template = hand_model.shaped_template(shape)
    dtype, device = template.dtype, template.device
    cache = hand_model.__dict__.setdefault(_CACHE_ATTR, {})
    topo_key = ("topology", level)
    shape_key = ("verts", level, None if shape is None else tuple(_to_numpy(shape, np.float64).tolist()))
    if topo_key not in cache or shape_key not in cache:
        weights = None
        if topo_key not in cache:
            weights = hand_model.lbs_weights.detach().cpu().numpy().astype(np.float64)
        sub_verts, sub_faces, sub_weights = loop_subdivide(
            template.detach().cpu().numpy(), hand_model.faces.detach().cpu().numpy(), level, weights
        )
        if weights is not None:
            cache[topo_key] = (sub_faces, sub_weights)
        cached_shapes = [k for k in cache if k[0] == "verts"]
        if len(cached_shapes) >= _MAX_CACHED_SHAPES:
            del cache[cached_shapes[0]]
        cache[shape_key] = sub_verts
    sub_faces, sub_weights = cache[topo_key]
    return (
        torch.as_tensor(cache[shape_key], dtype=dtype, device=device),
        torch.as_tensor(sub_faces, dtype=torch.long, device=device),
        torch.as_tensor(sub_weights, dtype=dtype, device=device),
    )
