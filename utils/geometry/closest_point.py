"""Closest points on triangle meshes, as correspondences for fitting (exact, KD-tree pruned).

A fitter needs, for each query point, *which* surface point is closest (a triangle index and the
barycentric weights of the closest point on it). The search runs without gradients in float64 on
the CPU (scipy's ``cKDTree``); the caller rebuilds the closest point as ``bary · corners`` from its
own differentiable tensors. Since the closest point minimises the distance, holding the weights
fixed gives the exact first derivative of the point-to-surface distance (envelope theorem), so
``|p - bary · corners|`` is a differentiable point-to-surface distance.

``utils.metrics.geometry.point_to_surface_distance`` returns distances only (the metric); this
module returns the correspondences, with the same exact pruned search, and is tested against it.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["closest_point_barycentric", "TriangleMeshSearch", "PointCloudSearch"]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1)


def _segment_param(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Parameter in [0, 1] of the closest point to ``p`` on segment ``a b`` (``a`` for a zero-length one)."""
    ab = b - a
    den = _dot(ab, ab)
    return (_dot(p - a, ab) / torch.where(den > 0, den, torch.ones_like(den))).clamp(0, 1)


def closest_point_barycentric(points: torch.Tensor, tris: torch.Tensor) -> torch.Tensor:
    """Barycentric weights of the closest point on each paired triangle.

    Ericson, *Real-Time Collision Detection* 5.1.5 (the same Voronoi-region tests as
    :func:`utils.metrics.geometry.point_triangle_distance`), returning weights instead of a distance.

    Args:
        points: ``(P, 3)`` query points.
        tris: ``(P, 3, 3)`` triangle corners ``a, b, c`` paired with each point.
    Returns:
        ``(P, 3)`` weights ``(u, v, w)``, each in [0, 1], summing to 1; the closest point is
        ``u a + v b + w c``. Zero-area triangles use their closest edge.
    """
    if points.ndim != 2 or points.shape[-1] != 3 or tris.shape != (*points.shape[:1], 3, 3):
        raise ValueError(
            f"expected points (P,3) and tris (P,3,3); got {tuple(points.shape)} and {tuple(tris.shape)}"
        )
    a, b, c = tris.unbind(1)
    ab, ac = b - a, c - a
    ap, bp, cp = points - a, points - b, points - c
    d1, d2 = _dot(ab, ap), _dot(ac, ap)
    d3, d4 = _dot(ab, bp), _dot(ac, bp)
    d5, d6 = _dot(ab, cp), _dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    tiny = torch.finfo(points.dtype).tiny
    one, zero = torch.ones_like(d1), torch.zeros_like(d1)

    def ratio(num, den):
        return num / torch.where(den.abs() > tiny, den, one)

    # Face interior first, then overwrite in reverse priority so Ericson's first matching test wins.
    denom = va + vb + vc
    v, w = ratio(vb, denom), ratio(vc, denom)
    bary = torch.stack([1 - v - w, v, w], -1)

    def set_where(cond, value):
        nonlocal bary
        bary = torch.where(cond[:, None], value, bary)

    t = ratio(d4 - d3, (d4 - d3) + (d5 - d6))
    set_where((va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0), torch.stack([zero, 1 - t, t], -1))  # edge BC
    t = ratio(d2, d2 - d6)
    set_where((vb <= 0) & (d2 >= 0) & (d6 <= 0), torch.stack([1 - t, zero, t], -1))  # edge AC
    set_where((d6 >= 0) & (d5 <= d6), torch.stack([zero, zero, one], -1))  # vertex C
    t = ratio(d1, d1 - d3)
    set_where((vc <= 0) & (d1 >= 0) & (d3 <= 0), torch.stack([1 - t, t, zero], -1))  # edge AB
    set_where((d3 >= 0) & (d4 <= d3), torch.stack([zero, one, zero], -1))  # vertex B
    set_where((d1 <= 0) & (d2 <= 0), torch.stack([one, zero, zero], -1))  # vertex A

    degenerate = denom.abs() <= tiny
    if degenerate.any():  # no interior region: the closest of the three edges
        p, tri = points[degenerate], tris[degenerate]
        options = []
        for i, j in ((0, 1), (1, 2), (2, 0)):
            t = _segment_param(p, tri[:, i], tri[:, j])
            weights = torch.zeros(p.shape[0], 3, dtype=p.dtype, device=p.device)
            weights[:, i], weights[:, j] = 1 - t, weights[:, j] + t
            options.append(weights)
        options = torch.stack(options, 1)  # (D, 3 edges, 3)
        dist = (p[:, None] - (options[..., None] * tri[:, None]).sum(2)).norm(dim=-1)
        bary = bary.clone()
        bary[degenerate] = options[torch.arange(p.shape[0]), dist.argmin(1)]
    return bary


class TriangleMeshSearch:
    """Exact closest point on a fixed triangle mesh for many query points.

    Each triangle is represented by the points of a barycentric grid fine enough that every point
    of the triangle lies within ``R`` of one of them (``R`` about the median edge length, so large
    triangles get more points). The triangles of the ``k`` nearest representatives give an upper
    bound ``u`` on the distance; a triangle closer than ``u`` has a representative within ``u + R``,
    and all of those triangles are tested, so the result is exact (the same distances as
    :func:`utils.metrics.geometry.point_to_surface_distance`).

    Args:
        verts: ``(V, 3)`` vertex positions (any dtype/device; a float64 CPU copy is kept).
        faces: ``(T, 3)`` vertex indices.
        k: representatives used for the first bound.
        chunk: point-triangle pairs evaluated at once.
    """

    def __init__(self, verts: torch.Tensor, faces: torch.Tensor, k: int = 12, chunk: int = 1 << 20):
        from scipy.spatial import cKDTree

        self.tris = verts.detach().cpu().double()[faces.detach().cpu().long()]  # (T, 3, 3)
        longest = (self.tris - self.tris.roll(1, dims=1)).norm(dim=-1).max(1).values  # (T,)
        spacing = float(longest.median().clamp_min(1e-12))
        levels = torch.ceil(longest / spacing).clamp(1, 64).long()
        reps, owners = [], []
        for n in levels.unique().tolist():
            ids = (levels == n).nonzero().squeeze(1)
            i, j = torch.meshgrid(torch.arange(n + 1), torch.arange(n + 1), indexing="ij")
            keep = i + j <= n
            grid = torch.stack([n - i[keep] - j[keep], i[keep], j[keep]], -1).double() / n  # (G, 3)
            reps.append(torch.einsum("gc,tcd->tgd", grid, self.tris[ids]).reshape(-1, 3))
            owners.append(ids.repeat_interleave(grid.shape[0]))
        self.owner = torch.cat(owners)  # (Q,) triangle of each representative
        # Every point of a triangle lies in a grid sub-triangle with edges <= longest / n
        # (a point of a triangle is within longest_edge / sqrt(3) of its nearest corner).
        self.radius = float((longest / levels).max()) / 3**0.5
        self.tree = cKDTree(torch.cat(reps).numpy())
        self.k = min(k, self.owner.numel())
        self.chunk = chunk

    def _pairs(self, points: torch.Tensor, face_idx: torch.Tensor):
        bary = closest_point_barycentric(points, self.tris[face_idx])
        closest = (bary[:, :, None] * self.tris[face_idx]).sum(1)
        return bary, (points - closest).norm(dim=-1)

    def query(self, points: torch.Tensor, exact: bool = True):
        """Closest surface point of each query point.

        Args:
            points: ``(P, 3)``.
            exact: False skips the refinement: the best of the ``k`` candidate triangles (exact in
                all but rare cases near a surface, about twice as fast; for inner loops).
        Returns:
            ``face_idx (P,) long``, ``bary (P, 3) float64`` and ``dist (P,) float64``, all on the CPU.
        """
        p64 = points.detach().cpu().double()
        num, num_tris = p64.shape[0], self.tris.shape[0]
        rep_dist, knn = self.tree.query(p64.numpy(), k=self.k)
        knn = self.owner[torch.from_numpy(np.asarray(knn).reshape(num, self.k)).long()]
        _, dist = self._pairs(p64.repeat_interleave(self.k, 0), knn.reshape(-1))
        best_dist, arg = dist.view(num, self.k).min(1)
        best_face = knn[torch.arange(num), arg]
        if not exact:
            return best_face, *self._pairs(p64, best_face)

        # A triangle without a representative among the k nearest is at least (k-th representative
        # distance - R) away: points whose bound is below that are already exact.
        kth = torch.from_numpy(np.asarray(rep_dist, dtype=np.float64).reshape(num, self.k)[:, -1])
        todo = (best_dist > kth - self.radius).nonzero().squeeze(1)
        radii = (best_dist + self.radius).numpy() * (1 + 1e-9) + 1e-12
        block = max(1, self.chunk // 256)
        for start in range(0, todo.numel(), block):
            rows = todo[start : start + block]
            balls = self.tree.query_ball_point(p64[rows].numpy(), radii[rows.numpy()])
            lengths = torch.tensor([len(ball) for ball in balls], dtype=torch.long)
            point_idx = torch.repeat_interleave(rows, lengths)
            face_idx = self.owner[
                torch.from_numpy(np.concatenate([np.asarray(ball, dtype=np.int64) for ball in balls]))
            ]
            pairs = torch.unique(point_idx * num_tris + face_idx)  # one test per (point, triangle)
            point_idx, face_idx = pairs // num_tris, pairs % num_tris
            for s in range(0, point_idx.numel(), self.chunk):
                pi, fi = point_idx[s : s + self.chunk], face_idx[s : s + self.chunk]
                _, d = self._pairs(p64[pi], fi)
                new_best = best_dist.scatter_reduce(0, pi, d, reduce="amin")
                # A candidate that attains its point's new minimum (ties have equal distances).
                hit = (d == new_best[pi]) & (d < best_dist[pi])
                best_face[pi[hit]] = fi[hit]
                best_dist = new_best
        bary, dist = self._pairs(p64, best_face)
        return best_face, bary, dist


class PointCloudSearch:
    """Nearest point of a fixed point set (KD-tree), for targets without faces.

    Args:
        points: ``(N, 3)`` reference points.
    """

    def __init__(self, points: torch.Tensor):
        from scipy.spatial import cKDTree

        self.tree = cKDTree(points.detach().cpu().double().numpy())

    def query(self, points: torch.Tensor):
        """``index (P,) long`` of the nearest reference point and ``dist (P,) float64``, on the CPU."""
        dist, idx = self.tree.query(points.detach().cpu().double().numpy(), k=1)
        return torch.from_numpy(np.asarray(idx)).long(), torch.from_numpy(np.asarray(dist, dtype=np.float64))
