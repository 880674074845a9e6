"""Slow, obviously-correct per-pixel Python references for the renderer (tests only).

Same conventions and rules as :mod:`utils.render.torch_backend` but written the textbook way: project
the vertices to pixels (``x / w``), test each pixel centre against each triangle with 2D edge functions,
keep the nearest ``z / w`` (first triangle on exact ties), correct the screen barycentrics for
perspective by ``1 / w``. Float64 Python scalars throughout; use on a few hundred pixels and triangles.
"""

from __future__ import annotations

import torch


def _project(c, h, w):
    """(x, y, w) clip -> (px, py) continuous pixels, or None when w <= 0 (culled)."""
    if c[3] <= 0:
        return None
    return ((c[0] / c[3] + 1.0) * 0.5 * w, (c[1] / c[3] + 1.0) * 0.5 * h)


def _cross2(ax, ay, bx, by):
    return ax * by - ay * bx


def _edge(a, b, p):
    """Twice the signed area of (a, b, p)."""
    return _cross2(b[0] - a[0], b[1] - a[1], p[0] - a[0], p[1] - a[1])


def rasterize_reference(clip: torch.Tensor, faces: torch.Tensor, resolution) -> torch.Tensor:
    """Per-pixel, per-triangle loop version of ``rasterize``.

    (B, V, 4) clip, (F, 3) faces, (H, W) -> (B, H, W, 4) float64 ``(u, v, z/w, triangle_id + 1)``.
    """
    h, w = (int(r) for r in resolution)
    clip_l = clip.detach().double().cpu().tolist()
    faces_l = faces.long().cpu().tolist()
    out = torch.zeros(len(clip_l), h, w, 4, dtype=torch.float64)
    for b, verts in enumerate(clip_l):
        for row in range(h):
            for col in range(w):
                p = (col + 0.5, row + 0.5)
                best = None
                for f, (i0, i1, i2) in enumerate(faces_l):
                    c = (verts[i0], verts[i1], verts[i2])
                    q = [_project(ci, h, w) for ci in c]
                    if any(qi is None for qi in q):
                        continue
                    area = _edge(q[0], q[1], q[2])
                    if area == 0:
                        continue
                    # Screen-space barycentrics; inside when all are >= 0 (either winding).
                    l0 = _edge(q[1], q[2], p) / area
                    l1 = _edge(q[2], q[0], p) / area
                    l2 = _edge(q[0], q[1], p) / area
                    if min(l0, l1, l2) < 0:
                        continue
                    z = l0 * c[0][2] / c[0][3] + l1 * c[1][2] / c[1][3] + l2 * c[2][2] / c[2][3]
                    if not -1.0 <= z <= 1.0:
                        continue
                    if best is None or z < best[0]:
                        # Perspective correction: attributes are affine in 1/w-weighted screen space.
                        m = [l0 / c[0][3], l1 / c[1][3], l2 / c[2][3]]
                        s = sum(m)
                        best = (z, m[0] / s, m[1] / s, f)
                if best is not None:
                    z, u, v, f = best
                    out[b, row, col] = torch.tensor([u, v, z, f + 1.0], dtype=torch.float64)
    return out


def interpolate_reference(attr: torch.Tensor, rast: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Per-pixel loop version of ``interpolate``: attr (B, V, C) or (V, C) -> (B, H, W, C) float64."""
    bsz, h, w, _ = rast.shape
    attr = attr.detach().double().cpu()
    if attr.dim() == 2:
        attr = attr[None].expand(bsz, -1, -1)
    out = torch.zeros(bsz, h, w, attr.shape[-1], dtype=torch.float64)
    faces_l = faces.long().cpu().tolist()
    rast = rast.detach().double().cpu()
    for b in range(bsz):
        for row in range(h):
            for col in range(w):
                u, v, _, tid = rast[b, row, col].tolist()
                if tid <= 0:
                    continue
                i0, i1, i2 = faces_l[int(tid) - 1]
                a = attr[b] if attr.shape[0] > 1 else attr[0]
                out[b, row, col] = u * a[i0] + v * a[i1] + (1 - u - v) * a[i2]
    return out


def antialias_reference(
    color: torch.Tensor, rast: torch.Tensor, clip: torch.Tensor, faces: torch.Tensor, max_hops: int = 8
) -> torch.Tensor:
    """Pair-by-pair loop version of ``antialias`` (forward values only), float64.

    For each right/down neighbour pair with different triangle ids: take the front triangle (the
    non-background one, else the one with smaller z/w; the lower pixel of the pair on ties) and walk
    along the line through both pixel centres: in the current triangle, find the edge crossing that
    line farthest towards the neighbour. If it is a silhouette edge (boundary, or the adjacent
    triangle's third vertex lies on the same side of it as this triangle's third vertex, or behind the
    eye), at least as steep as it is wide along the pair direction, and crossing within 1/16 pixel of
    the segment between the centres, blend the pixel whose half contains the crossing towards the other
    by ``|0.5 - d|``. If it is an interior edge crossed before the far centre, step into the adjacent
    triangle (at most ``max_hops`` times) unless that is the neighbour pixel's triangle.
    """
    bsz, h, w, chans = color.shape
    col_in = color.detach().double().cpu()
    out = col_in.clone()
    clip_l = clip.detach().double().cpu().tolist()
    faces_l = [tuple(f) for f in faces.long().cpu().tolist()]
    # Edge -> faces adjacency, edges as sorted vertex pairs.
    adj: dict = {}
    for f, tri in enumerate(faces_l):
        if len(set(tri)) < 3:
            continue  # faces with repeated vertices take no part in the topology
        for i in range(3):
            e = tuple(sorted((tri[(i + 1) % 3], tri[(i + 2) % 3])))
            adj.setdefault(e, []).append(f)
    tid = rast[..., 3].detach().cpu().long().tolist()
    zw = rast[..., 2].detach().double().cpu().tolist()
    eps = 1.0 / 16
    for b in range(bsz):
        verts = clip_l[b]
        # Plain perspective division (the walk only visits triangles with w > 0 at all vertices).
        q = [
            ((c[0] / c[3] + 1.0) * 0.5 * w, (c[1] / c[3] + 1.0) * 0.5 * h) if c[3] != 0 else None
            for c in verts
        ]
        for row in range(h):
            for col in range(w):
                for down in (0, 1):
                    r1, c1 = (row + 1, col) if down else (row, col + 1)
                    if r1 >= h or c1 >= w:
                        continue
                    t0, t1 = tid[b][row][col] - 1, tid[b][r1][c1] - 1
                    if t0 == t1:
                        continue
                    use1 = t0 < 0 or (t1 >= 0 and not zw[b][row][col] < zw[b][r1][c1])
                    f, far = (t1, t0) if use1 else (t0, t1)
                    frow, fcol = (r1, c1) if use1 else (row, col)
                    centre = (fcol + 0.5, frow + 0.5)
                    ds = -1.0 if use1 else 1.0
                    for _ in range(max_hops + 1):
                        tri = faces_l[f]
                        best = None
                        for i in range(3):
                            vj, vk = tri[(i + 1) % 3], tri[(i + 2) % 3]
                            # Coordinates relative to the front centre, transposed for vertical pairs.
                            a = (q[vj][0] - centre[0], q[vj][1] - centre[1])
                            c = (q[vk][0] - centre[0], q[vk][1] - centre[1])
                            if down:
                                a, c = (a[1], a[0]), (c[1], c[0])
                            if (a[1] >= 0) == (c[1] >= 0):
                                continue
                            d = ds * (a[0] - a[1] * (c[0] - a[0]) / (c[1] - a[1]))
                            if best is None or d > best[0]:
                                best = (d, i, a, c)
                        if best is None:
                            break
                        d, i, a, c = best
                        vj, vk = tri[(i + 1) % 3], tri[(i + 2) % 3]
                        others = [g for g in adj.get(tuple(sorted((vj, vk))), []) if g != f]
                        nxt = None
                        if len(others) == 1 and len(set(tri)) == 3:
                            nxt = others[0]
                            wing = [v for v in faces_l[nxt] if v not in (vj, vk)][0]
                            if verts[wing][3] <= 0:
                                silhouette = True
                            else:
                                own = _edge(q[tri[i]], q[vj], q[vk])
                                folded = _edge(q[wing], q[vj], q[vk])
                                silhouette = own * folded >= 0
                        else:
                            silhouette = True  # boundary or non-manifold edge
                        if silhouette:
                            steep = abs(c[1] - a[1]) >= abs(c[0] - a[0])
                            if steep and -eps < d < 1.0 + eps:
                                d = min(max(d, 0.0), 1.0)
                                alpha = ds * (0.5 - d)
                                tr, tc = (row, col) if alpha > 0 else (r1, c1)
                                out[b, tr, tc] += alpha * (col_in[b, r1, c1] - col_in[b, row, col])
                            break
                        if not d < 1.0 + eps or nxt == far:
                            break
                        f = nxt
    return out


__all__ = ["rasterize_reference", "interpolate_reference", "antialias_reference"]
