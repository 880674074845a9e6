"""Small numpy helpers shared by the synthetic generator's modules (float64, no torch state)."""

from __future__ import annotations

import math

import numpy as np
import torch


def normalize(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def smoothstep(e0, e1, x):
    t = np.clip((np.asarray(x, dtype=np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def orth(v, axis):
    """Component of ``v`` orthogonal to the unit ``axis``, normalised."""
    return normalize(v - np.dot(v, axis) * axis)


def rotvec_to_matrix(rv):
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.asarray(rv, dtype=np.float64)).as_matrix()


def bezier(p0, p1, p2, n=64):
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def dist_to_polyline(points, line):
    """Distance of 2D ``points (N,2)`` to a polyline ``(M,2)``."""
    a, b = line[:-1], line[1:]
    ab = b - a
    t = np.clip(
        np.einsum("nmk,mk->nm", points[:, None] - a[None], ab) / np.maximum((ab**2).sum(1), 1e-18), 0, 1
    )
    closest = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(points[:, None] - closest, axis=-1).min(1)


def sum_of_sines(rng, points, num, wavelength_range):
    """Unit-variance random field on 3D ``points``: sum of ``num`` plane waves."""
    dirs = normalize(rng.normal(size=(num, 3)))
    wavelengths = np.exp(rng.uniform(np.log(wavelength_range[0]), np.log(wavelength_range[1]), num))
    phases = rng.uniform(0.0, 2 * np.pi, num)
    field_ = np.sin(points @ (dirs / wavelengths[:, None]).T * 2 * np.pi + phases).sum(1)
    return field_ / math.sqrt(num / 2.0)


def vertex_normals_np(verts, faces):
    """(N,3) float64 unit vertex normals of a numpy mesh (``utils.geometry.mesh.vertex_normals``)."""
    from utils.geometry.mesh import vertex_normals

    n = vertex_normals(
        torch.as_tensor(verts, dtype=torch.float64)[None], torch.as_tensor(faces, dtype=torch.long)
    )
    return n[0].numpy()


def vertex_spacing(verts, faces) -> np.ndarray:
    """(N,) mean length of the edges incident to each vertex."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    length = np.linalg.norm(verts[edges[:, 0]] - verts[edges[:, 1]], axis=1)
    total = np.bincount(edges.ravel(), weights=np.repeat(length, 2), minlength=len(verts))
    count = np.bincount(edges.ravel(), minlength=len(verts))
    return total / np.maximum(count, 1)
