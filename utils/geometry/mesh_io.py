"""Mesh files: OBJ and PLY with per-vertex colours (writers, and minimal readers for round trips).

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


_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}


def load_ply(path: str | os.PathLike):
    """Read a triangle mesh written by :func:`save_ply` (or any PLY with a vertex element holding
    x, y, z [red, green, blue] scalars and a face element with one index list).

    Returns:
        ``verts (V, 3) float64``, ``faces (F, 3) int64``, ``colors (V, 3)`` in [0, 1] or None.
    """
    with open(path, "rb") as fh:
        if fh.readline().strip() != b"ply":
            raise InputError(f"{path}: not a PLY file")
        fmt, elements = None, []
        while True:
            line = fh.readline()
            if not line:
                raise InputError(f"{path}: PLY header has no end_header")
            parts = line.decode("ascii", errors="replace").split()
            if not parts or parts[0] in ("comment", "obj_info"):
                continue
            if parts[0] == "end_header":
                break
            if parts[0] == "format":
                fmt = parts[1]
            elif parts[0] == "element":
                elements.append({"name": parts[1], "count": int(parts[2]), "props": []})
            elif parts[0] == "property":
                elements[-1]["props"].append(parts[1:])
        body = fh.read()
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise InputError(f"{path}: unsupported PLY format {fmt!r}")
    end = "<" if fmt == "binary_little_endian" else ">"
    verts = faces = colors = None
    offset = 0
    tokens = body.split() if fmt == "ascii" else None
    for el in elements:
        if fmt == "ascii":
            rows = []
            for _ in range(el["count"]):
                row = []
                for prop in el["props"]:
                    if prop[0] == "list":
                        n = int(tokens[offset])
                        row.append([float(t) for t in tokens[offset + 1 : offset + 1 + n]])
                        offset += 1 + n
                    else:
                        row.append(float(tokens[offset]))
                        offset += 1
                rows.append(row)
            names = [p[-1] for p in el["props"]]
            table = {name: [r[i] for r in rows] for i, name in enumerate(names)}
        else:
            if any(p[0] == "list" for p in el["props"]):
                # Only a single list property with a fixed length (triangles) is supported.
                ((count_t, index_t, name),) = [p[1:] for p in el["props"]]
                if el["count"] == 0:  # nothing stored, not even a list length to read
                    if el["name"] == "face":
                        faces = np.zeros((0, 3), np.int64)
                    continue
                n = np.frombuffer(body, dtype=end + _PLY_TYPES[count_t], count=1, offset=offset)[0]
                dt = np.dtype(
                    [("n", end + _PLY_TYPES[count_t]), ("idx", end + _PLY_TYPES[index_t], (int(n),))]
                )
                data = np.frombuffer(body, dtype=dt, count=el["count"], offset=offset)
                if el["count"] and (data["n"] != n).any():
                    raise InputError(f"{path}: only faces with a constant vertex count are supported")
                table = {name: data["idx"]}
            else:
                dt = np.dtype([(p[1], end + _PLY_TYPES[p[0]]) for p in el["props"]])
                data = np.frombuffer(body, dtype=dt, count=el["count"], offset=offset)
                table = {name: data[name] for name in dt.names}
            offset += dt.itemsize * el["count"]
        if el["name"] == "vertex":
            verts = np.stack([np.asarray(table[c], dtype=np.float64) for c in "xyz"], axis=1)
            if all(c in table for c in ("red", "green", "blue")):
                colors = (
                    np.stack([np.asarray(table[c], dtype=np.float64) for c in ("red", "green", "blue")], 1)
                    / 255.0
                )
        elif el["name"] == "face":
            (lists,) = table.values()
            faces = np.asarray([list(f) for f in lists] if fmt == "ascii" else lists, dtype=np.int64)
            if faces.ndim != 2 or faces.shape[1] != 3:
                raise InputError(f"{path}: only triangle faces are supported")
    if verts is None:
        raise InputError(f"{path}: PLY file has no vertex element")
    return verts, (faces if faces is not None else np.zeros((0, 3), np.int64)), colors
