"""Checks of a generated hand (topology, self-intersections, joints inside) and a preview image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from utils.geometry.procedural_hand.skeleton import WRIST_RING


def find_self_intersections(verts: np.ndarray, faces: np.ndarray, chunk: int = 128) -> np.ndarray:
    """Pairs ``(edge, face)`` (K,2) where a mesh edge crosses a triangle it does not touch, and
    the unique edges (E,2). Two triangles that intersect (not coplanar) always have such a pair."""
    edges = np.unique(np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1), axis=0)
    t0 = verts[faces[:, 0]]
    e1, e2 = verts[faces[:, 1]] - t0, verts[faces[:, 2]] - t0
    hits = []
    for start in range(0, len(edges), chunk):
        ed = edges[start : start + chunk]
        a = verts[ed[:, 0]][:, None]  # (n,1,3)
        d = verts[ed[:, 1]][:, None] - a
        p = np.cross(d, e2[None])
        det = np.einsum("nfk,fk->nf", p, e1)
        ok = np.abs(det) > 1e-18
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        tv = a - t0[None]
        u = np.einsum("nfk,nfk->nf", tv, p) * inv
        q = np.cross(tv, np.broadcast_to(e1[None], tv.shape))
        v = np.einsum("nfk,nfk->nf", np.broadcast_to(d, q.shape), q) * inv
        t = np.einsum("nfk,fk->nf", q, e2) * inv
        tol = 1e-9
        m = ok & (u > tol) & (v > tol) & (u + v < 1 - tol) & (t > tol) & (t < 1 - tol)
        ei, fi = np.nonzero(m)
        ei = ei + start
        touching = (faces[fi] == edges[ei, :1]).any(1) | (faces[fi] == edges[ei, 1:]).any(1)
        hits.append(np.stack([ei[~touching], fi[~touching]], axis=1))
    return np.concatenate(hits), edges


def winding_numbers(verts: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Generalised winding number (P,) of points w.r.t. the mesh with its open boundaries closed
    by a fan to each boundary loop's centroid (about 1 inside, 0 outside)."""
    import trimesh

    mesh = trimesh.Trimesh(verts, faces, process=False)
    extra_v, extra_f = [], []
    for loop in _boundary_loops(faces):
        centre = len(verts) + len(extra_v)
        extra_v.append(verts[loop].mean(axis=0))
        extra_f += [(loop[k], loop[(k + 1) % len(loop)], centre) for k in range(len(loop))]
    if extra_v:
        mesh = trimesh.Trimesh(np.vstack([verts, extra_v]), np.vstack([faces, extra_f]), process=False)
    tri = mesh.vertices[mesh.faces]  # (F,3,3)
    out = np.zeros(len(points))
    for i, pnt in enumerate(points):
        a, b, c = (tri[:, k] - pnt for k in range(3))
        la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
        num = np.einsum("ij,ij->i", a, np.cross(b, c))
        den = la * lb * lc + (a * b).sum(1) * lc + (b * c).sum(1) * la + (c * a).sum(1) * lb
        out[i] = np.arctan2(num, den).sum() / (2.0 * np.pi)
    return out


def _boundary_loops(faces: np.ndarray) -> list[list[int]]:
    """Boundary loops of a manifold triangle mesh, each oriented like its faces' edges reversed."""
    directed = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    as_set = set(map(tuple, directed))
    nxt = {}
    for a, b in directed:
        if (b, a) not in as_set:
            nxt[b] = a  # walk the boundary against the face orientation
    loops, seen = [], set()
    for start in nxt:
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(int(v))
            v = nxt[v]
        loops.append(loop)
    return loops


def check_hand(hand: dict) -> dict:
    """Topology and geometry checks of a generated hand; returns a summary, raises on failure."""
    import trimesh

    v, f = hand["v_template"], hand["f"].astype(np.int64)
    mesh = trimesh.Trimesh(v, f, process=False)
    edges = mesh.edges_unique
    counts = np.bincount(mesh.edges_unique_inverse, minlength=len(edges))
    loops = _boundary_loops(f)
    hits, _ = find_self_intersections(v, f)
    inside = winding_numbers(v, f, hand["J"])
    summary = {
        "num_verts": len(v),
        "num_faces": len(f),
        "num_edges": len(edges),
        "euler": int(mesh.euler_number),
        "winding_consistent": bool(mesh.is_winding_consistent),
        "max_faces_per_edge": int(counts.max()),
        "boundary_loops": [len(lp) for lp in loops],
        "self_intersections": len(hits),
        "joints_inside": inside.round(2).tolist(),
        "bbox_m": (v.max(0) - v.min(0)).round(4).tolist(),
    }
    problems = []
    if summary["euler"] != 1 or summary["boundary_loops"] != [WRIST_RING]:
        problems.append("expected a disc with one 16-edge wrist boundary")
    if not summary["winding_consistent"] or summary["max_faces_per_edge"] > 2:
        problems.append("not an oriented manifold")
    if summary["self_intersections"]:
        problems.append("self-intersections at rest")
    if (inside < 0.5).any():
        problems.append("a joint lies outside the surface")
    if problems:
        raise RuntimeError(f"procedural hand failed its checks ({'; '.join(problems)}): {summary}")
    return summary


def render_preview(
    verts: np.ndarray,
    faces: np.ndarray,
    path: str,
    size: int = 320,
    views=((0.0, 0.0), (180.0, 0.0), (0.0, -90.0), (-40.0, 25.0)),
) -> None:
    """Save a shaded orthographic preview (several views side by side) as an image (needs cv2).

    ``views`` are (yaw, pitch) in degrees: yaw about the model's z axis, then pitch about the
    screen's horizontal axis. In the MANO-like frame the defaults show the back of the hand (from
    +y), the palm, the thumb side and a three-quarter view. Back faces are drawn dark blue."""
    import cv2

    centre = 0.5 * (verts.max(0) + verts.min(0))
    extent = 1.1 * np.abs(verts - centre).max()
    tiles = []
    for yaw, pitch in views:
        a, b = np.deg2rad(yaw), np.deg2rad(pitch)
        # Camera basis: start by looking down -y (view from +y), x to the right, -z up.
        base = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
        rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
        cam = (verts - centre) @ (rx @ base @ rz).T  # x right, y up, z towards the viewer
        px = np.stack([(cam[:, 0] / extent * 0.5 + 0.5) * size, (0.5 - cam[:, 1] / extent * 0.5) * size], 1)
        tri = cam[faces]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
        img = np.full((size, size, 3), 255, np.uint8)
        for fi in np.argsort(tri[:, :, 2].mean(1)):  # painter's algorithm, far to near
            shade = 60 + 180 * abs(normal[fi, 2])
            colour = (shade * 0.78, shade * 0.82, shade * 0.95) if normal[fi, 2] > 0 else (40, 40, 160)
            cv2.fillConvexPoly(
                img, np.round(px[faces[fi]] * 16).astype(np.int32), colour, lineType=cv2.LINE_AA, shift=4
            )
        tiles.append(img)
    from utils.checkpoint import atomic_write_bytes

    ok, encoded = cv2.imencode(Path(path).suffix or ".png", np.concatenate(tiles, axis=1))
    if not ok:
        raise ValueError(f"cannot encode a preview for {path} (unsupported extension?)")
    atomic_write_bytes(path, encoded.tobytes())
