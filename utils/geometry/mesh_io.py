"""Mesh files: OBJ and PLY with per-vertex colours (writers; a minimal OBJ reader, PLY read by trimesh).

Vertices are written as given (metres in this project), faces as (F, 3) 0-based indices (OBJ stores
them 1-based). Colours are (V, 3) RGB floats in [0, 1]: OBJ writes them as the common
``v x y z r g b`` extension, PLY as ``uchar red/green/blue``. Files are written by ``utils.checkpoint.atomic_write`` (a temporary file
renamed over the destination), so an interrupted run never leaves a half-written mesh, and the clean-up of
a crashed run finds its temporary file; parent folders are created.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from utils.checkpoint import atomic_write_bytes
from utils.errors import InputError

__all__ = ["save_obj", "load_obj", "save_ply", "load_ply"]


def _as_numpy(x, dtype, name: str, cols: int) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=dtype)
    if x.ndim != 2 or x.shape[1] != cols:
        raise ValueError(f"{name} must be (N, {cols}), got shape {x.shape}")
    return x


def _prepare(verts, faces, colors):
    verts = _as_numpy(verts, np.float64, "verts", 3)
    faces = _as_numpy(faces, np.int64, "faces", 3)
    if not np.isfinite(verts).all():
        raise ValueError("verts contain NaN or inf")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(verts)):
        raise ValueError(
            f"faces index vertices in [{faces.min()}, {faces.max()}] but there are " f"{len(verts)} vertices"
        )
    if colors is not None:
        colors = _as_numpy(colors, np.float64, "colors", 3)
        if len(colors) != len(verts):
            raise ValueError(f"colors must have one row per vertex ({len(verts)}), got {len(colors)}")
        colors = np.clip(colors, 0.0, 1.0)
    return verts, faces, colors


def save_obj(path: str | os.PathLike, verts, faces, colors=None) -> None:
    """Write a triangle mesh as Wavefront OBJ.

    Args:
        path: output file.
        verts: (V, 3) positions. faces: (F, 3) 0-based indices.
        colors: optional (V, 3) RGB in [0, 1] (clipped), written as ``v x y z r g b``.
    """
    verts, faces, colors = _prepare(verts, faces, colors)
    lines = []
    if colors is None:
        lines += [f"v {x:.7g} {y:.7g} {z:.7g}" for x, y, z in verts]
    else:
        lines += [
            f"v {x:.7g} {y:.7g} {z:.7g} {r:.5f} {g:.5f} {b:.5f}"
            for (x, y, z), (r, g, b) in zip(verts, colors, strict=True)
        ]
    lines += [f"f {a} {b} {c}" for a, b, c in faces + 1]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("ascii"))


def load_obj(path: str | os.PathLike):
    """Read vertices, triangles and optional vertex colours from an OBJ file (minimal reader).

    Polygons are fan-triangulated; ``v/vt/vn`` index forms and negative (relative) indices are
    accepted; texture coordinates, normals, groups and materials are ignored.

    Returns:
        ``verts (V, 3) float64``, ``faces (F, 3) int64`` 0-based, ``colors (V, 3) float64`` or None
        (None unless every vertex line carries a colour).
    """
    verts, colors, faces = [], [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "v":
                values = [float(x) for x in parts[1:]]
                if len(values) < 3:
                    raise InputError(f"{path}:{number}: vertex line needs 3 coordinates: {line.strip()}")
                verts.append(values[:3])
                colors.append(values[3:6] if len(values) >= 6 else None)
            elif parts[0] == "f":
                idx = []
                for token in parts[1:]:
                    i = int(token.split("/")[0])
                    idx.append(i - 1 if i > 0 else len(verts) + i)
                if len(idx) < 3:
                    raise InputError(f"{path}:{number}: face line needs 3 vertices: {line.strip()}")
                faces += [(idx[0], idx[k], idx[k + 1]) for k in range(1, len(idx) - 1)]
    verts_np = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
    faces_np = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(faces_np) and (faces_np.min() < 0 or faces_np.max() >= len(verts_np)):
        raise InputError(f"{path}: faces reference vertices outside 1..{len(verts_np)}")
    has_colors = len(colors) > 0 and all(c is not None for c in colors)
    return verts_np, faces_np, (np.asarray(colors, dtype=np.float64) if has_colors else None)


def save_ply(path: str | os.PathLike, verts, faces, colors=None, binary: bool = True) -> None:
    """Write a triangle mesh as PLY (binary little-endian by default, or ASCII).

    Args:
        path: output file. verts: (V, 3) positions (stored as float32). faces: (F, 3) 0-based.
        colors: optional (V, 3) RGB in [0, 1], stored as uchar 0..255.
        binary: binary little-endian (default) or ASCII.
    """
    verts, faces, colors = _prepare(verts, faces, colors)
    header = [
        "ply",
        f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
        f"element vertex {len(verts)}",
        "property float x",
        "property float y",
        "property float z",
    ]
    if colors is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    head = ("\n".join(header) + "\n").encode("ascii")
    rgb = None if colors is None else np.round(colors * 255.0).astype(np.uint8)
    if binary:
        fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
        if rgb is not None:
            fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        vdata = np.empty(len(verts), dtype=fields)
        vdata["x"], vdata["y"], vdata["z"] = verts.T.astype(np.float32)
        if rgb is not None:
            vdata["red"], vdata["green"], vdata["blue"] = rgb.T
        fdata = np.empty(len(faces), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
        fdata["n"] = 3
        fdata["idx"] = faces
        atomic_write_bytes(path, head + vdata.tobytes() + fdata.tobytes())
        return
    lines = []
    for k, (x, y, z) in enumerate(verts.astype(np.float32)):
        row = f"{x:.9g} {y:.9g} {z:.9g}"
        if rgb is not None:
            row += " {} {} {}".format(*rgb[k])
        lines.append(row)
    lines += [f"3 {a} {b} {c}" for a, b, c in faces]
    atomic_write_bytes(path, head + ("\n".join(lines) + "\n").encode("ascii"))


def load_ply(source, name: str | None = None):
    """Read a mesh from a PLY file with trimesh's reader, keeping per-vertex colours.

    Any PLY that trimesh reads: ASCII or binary, further elements, further properties of the vertex or face
    element (``property uchar flags`` after the index list, per-face colours, normals, ...). Polygons are
    fan-triangulated as in :func:`load_obj`; a vertex-only file (a point set) gives no faces.

    Args:
        source: the file's path, or a binary file object (e.g. a zip member read into ``io.BytesIO``).
        name: how messages name the file (default: the path).

    Returns:
        ``verts (V, 3) float64``, ``faces (F, 3) int64`` 0-based (``(0, 3)`` when the file has none),
        ``colors (V, 3)`` RGB in [0, 1] from the vertices' red/green/blue, or None.

    Raises:
        InputError: not a PLY file, or one trimesh cannot read, or faces indexing missing vertices.
        FileNotFoundError: no file at ``source``.
    """
    from trimesh.exchange.ply import load_ply as read_ply

    is_path = isinstance(source, (str, os.PathLike))
    what = name or (os.fspath(source) if is_path else "PLY data")
    try:
        if is_path:
            with open(source, "rb") as handle:
                data = read_ply(handle)
        else:
            data = read_ply(source)
    except FileNotFoundError:
        raise
    except Exception as err:  # the parser's ValueError, KeyError, IndexError, ...: the file is not readable
        raise InputError(f"{what}: cannot read the PLY file ({type(err).__name__}: {err})") from None
    verts = np.asarray(data.get("vertices", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    if not len(verts):
        raise InputError(f"{what}: PLY file has no vertices")
    faces = data.get("faces")
    faces = np.zeros((0, 3), np.int64) if faces is None else np.asarray(faces, dtype=np.int64)
    if faces.ndim != 2 or (len(faces) and faces.shape[1] < 3):
        raise InputError(f"{what}: the PLY faces are not polygons of 3 or more vertices")
    if faces.shape[1] > 3:  # (F, k) polygons -> a fan of k - 2 triangles each, in polygon order
        faces = np.stack([faces[:, [0, k, k + 1]] for k in range(1, faces.shape[1] - 1)], axis=1)
    faces = faces.reshape(-1, 3)
    if len(faces) and (faces.min() < 0 or faces.max() >= len(verts)):
        raise InputError(f"{what}: faces index vertices outside 0..{len(verts) - 1}")
    colors = data.get("vertex_colors")
    if colors is not None:
        colors = np.asarray(colors, dtype=np.float64)[:, :3] / 255.0
    return verts, faces, colors
