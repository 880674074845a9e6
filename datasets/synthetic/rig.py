"""The camera rig and the lighting of a capture.

:func:`make_camera_rig` spreads V OpenCV cameras over the sphere around the hand (farthest-point
sampled, away from the forearm, the hand off-centre in the raw image); :func:`make_sh_lighting`
gives each camera its own 2nd-order spherical-harmonics lighting (the Deep3DFace basis SRHand's
avatar uses, world-space normals, ``utils.geometry.sh`` convention).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from datasets.synthetic._np import normalize, rotvec_to_matrix


def fibonacci_sphere(n):
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], 1)


def rotation_between(a, b):
    """Rotation matrix taking unit vector a to unit vector b (minimal angle)."""
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    if np.linalg.norm(v) < 1e-12:
        return np.eye(3)
    angle = math.atan2(np.linalg.norm(v), c)
    return rotvec_to_matrix(normalize(v) * angle)


def make_camera_rig(
    rng,
    points_world,
    num_views: int,
    raw_size,
    avoid_direction=None,
    avoid_angle_deg: float = 40.0,
    fill=(0.55, 0.8),
    distance=(0.6, 0.9),
):
    """V cameras spread around the hand, each seeing every point with the hand off-centre.

    Args:
        rng: numpy Generator.
        points_world: (M, 3) all hand vertices of all frames, world, metres.
        num_views: V.
        raw_size: ``(H, W)``.
        avoid_direction: unit world direction no camera may look from (the forearm), within
            ``avoid_angle_deg``.
        fill: range of the fraction of the limiting image side that the union of all frames covers.
        distance: camera distance range (metres) from the hand's bounding-box centre.

    Returns:
        K (V,3,3), R (V,3,3), t (V,3) float64 numpy, and the viewing directions (V,3).
    """
    from utils.geometry.camera import look_at

    H, W = raw_size
    pts = np.asarray(points_world, dtype=np.float64)
    centre = 0.5 * (pts.min(0) + pts.max(0))
    cand = (
        fibonacci_sphere(max(64, 8 * num_views))
        @ rotvec_to_matrix(normalize(rng.normal(size=3)) * rng.uniform(0, np.pi)).T
    )
    if avoid_direction is not None:
        keep = cand @ normalize(avoid_direction) < math.cos(math.radians(avoid_angle_deg))
        cand = cand[keep]
    # Farthest-point sampling: an even spread over the allowed directions.
    chosen = [int(rng.integers(len(cand)))]
    dist = np.linalg.norm(cand - cand[chosen[0]], axis=1)
    while len(chosen) < num_views:
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(cand - cand[nxt], axis=1))
    dirs = cand[chosen]
    Ks, Rs, ts = [], [], []
    for d in dirs:
        eye = centre + rng.uniform(*distance) * d
        roll = math.radians(rng.normal(0.0, 12.0))
        up = np.array([0.0, -1.0, 0.0])
        if abs(np.dot(up, d)) > 0.9:
            up = np.array([0.0, 0.0, 1.0])
        up = rotvec_to_matrix(-d * roll) @ up
        R0, _ = look_at(eye.tolist(), centre.tolist(), up.tolist(), dtype=torch.float64)
        R0 = R0.numpy()
        x = (pts - eye) @ R0.T
        n = x[:, :2] / x[:, 2:3]
        span = np.maximum(n.max(0) - n.min(0), 1e-9)
        f = rng.uniform(*fill) * min(W / span[0], H / span[1])
        free = np.array([W, H]) - f * span
        offset_pix = rng.uniform(-0.45, 0.45, 2) * free
        mid = 0.5 * (n.max(0) + n.min(0))
        Q = rotation_between(
            normalize(np.array([mid[0], mid[1], 1.0])),
            normalize(np.array([offset_pix[0] / f, offset_pix[1] / f, 1.0])),
        )
        R = Q @ R0
        K = np.array([[f, 0.0, W / 2.0], [0.0, f, H / 2.0], [0.0, 0.0, 1.0]])
        # Rotation distorts the projection slightly: shrink the focal length until everything fits.
        for _ in range(50):
            x = (pts - eye) @ R.T
            uv = x[:, :2] / x[:, 2:3] * K[0, 0] + K[:2, 2]
            if (
                uv.min() >= 1.0
                and uv[:, 0].max() <= W - 1.0
                and uv[:, 1].max() <= H - 1.0
                and x[:, 2].min() > 0.1
            ):
                break
            K[0, 0] *= 0.95
            K[1, 1] *= 0.95
        Ks.append(K)
        Rs.append(R)
        ts.append(-R @ eye)
    return np.stack(Ks), np.stack(Rs), np.stack(ts), dirs


def make_sh_lighting(rng, num_views: int) -> np.ndarray:
    """Per-camera SH coefficients (V, 27) in the ``utils.geometry.sh`` convention (RGB x 9, Deep3DFace basis,
    ``sh_shade`` adds the constant ambient 0.8 to each DC term), for world-space normals.

    One key light direction per capture; each camera gets its own intensity, white balance and a
    jittered key direction (SRHand models lighting per view). Irradiance: ambient 0.55-0.7 plus
    0.3-0.45 times ``n . key``, plus small second-order terms.
    """
    key = normalize(rng.normal(size=3))
    out = np.zeros((num_views, 3, 9))
    for v in range(num_views):
        d = normalize(key + rng.normal(0.0, 0.25, 3))
        out[v] = (
            directional_sh(
                rng.uniform(0.55, 0.7), rng.uniform(0.3, 0.45), d, second_order=rng.normal(0.0, 0.03, 5)
            )
            * (rng.uniform(0.9, 1.1) * (1.0 + rng.uniform(-0.04, 0.04, 3)))[:, None]
        )
    return to_sh_convention(out)


def directional_sh(ambient, strength, direction, second_order=None) -> np.ndarray:
    """(3, 9) *total* coefficients giving irradiance ``ambient + strength * (n . direction)``."""
    from utils.geometry.sh import A1C1, Y0

    d = normalize(direction)
    c = np.zeros(9)
    c[0] = ambient / Y0
    # Y1 = -a1c1 n_y, Y2 = a1c1 n_z, Y3 = -a1c1 n_x.
    c[1], c[2], c[3] = -strength * d[1] / A1C1, strength * d[2] / A1C1, -strength * d[0] / A1C1
    if second_order is not None:
        c[4:] = second_order
    return np.repeat(c[None], 3, 0)


def to_sh_convention(total) -> np.ndarray:
    """(V, 3, 9) total coefficients -> (V, 27) for ``utils.geometry.sh.sh_shade`` (which adds its ambient)."""
    from utils.geometry.sh import DEFAULT_AMBIENT

    out = np.array(total, dtype=np.float64)
    out[:, :, 0] -= DEFAULT_AMBIENT
    return out.reshape(len(out), 27)
