"""Rotation conversions for posing and export: axis-angle <-> unit quaternion, quaternion slerp, and
quaternion -> matrix, in float64 NumPy.

Quaternions are stored ``(x, y, z, w)`` (glTF's order), unit length, with ``w >= 0`` where a function
chooses the sign. Axis-angle vectors are ``angle * axis`` in radians, as MANO stores its pose.
"""

from __future__ import annotations

import numpy as np

__all__ = ["axis_angle_to_quaternion", "quaternion_to_axis_angle", "quaternion_to_matrix", "slerp"]

_SMALL = 1e-8  # below this angle (radians) the series expansions are exact to float64


def axis_angle_to_quaternion(axis_angle: np.ndarray) -> np.ndarray:
    """Unit quaternions ``(..., 4)`` (x, y, z, w) of axis-angle vectors ``(..., 3)`` (radians)."""
    aa = np.asarray(axis_angle, dtype=np.float64)
    if aa.shape[-1:] != (3,):
        raise ValueError(f"axis-angle vectors must be (..., 3), got {aa.shape}")
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    # sin(angle/2)/angle -> 1/2 - angle^2/48 near zero
    scale = np.where(angle > _SMALL, np.sin(angle / 2) / np.maximum(angle, _SMALL), 0.5 - angle**2 / 48)
    return np.concatenate([aa * scale, np.cos(angle / 2)], axis=-1)


def quaternion_to_axis_angle(quaternion: np.ndarray) -> np.ndarray:
    """Axis-angle vectors ``(..., 3)`` of quaternions ``(..., 4)`` (x, y, z, w; normalised here), the angle in
    ``[0, pi]`` (``q`` and ``-q`` give the same vector)."""
    q = np.asarray(quaternion, dtype=np.float64)
    if q.shape[-1:] != (4,):
        raise ValueError(f"quaternions must be (..., 4) (x, y, z, w), got {q.shape}")
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(q[..., 3:] < 0, -q, q)
    sin_half = np.linalg.norm(q[..., :3], axis=-1, keepdims=True)
    angle = 2 * np.arctan2(sin_half, q[..., 3:])
    scale = np.where(sin_half > _SMALL, angle / np.maximum(sin_half, _SMALL), 2 + sin_half**2 / 3)
    return q[..., :3] * scale


def quaternion_to_matrix(quaternion: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` of quaternions ``(..., 4)`` (x, y, z, w; normalised here)."""
    q = np.asarray(quaternion, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def slerp(q0: np.ndarray, q1: np.ndarray, t: float | np.ndarray) -> np.ndarray:
    """Spherical linear interpolation between unit quaternions ``(..., 4)`` along the shorter arc.

    Args:
        q0, q1: quaternions of the same shape (x, y, z, w). t: fraction in [0, 1] (scalar, or broadcast
            against ``q0[..., :1]``); 0 gives ``q0``, 1 gives ``q1`` (up to sign).
    Returns:
        ``(..., 4)`` unit quaternions at constant angular speed between the two.
    """
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if t.ndim and t.shape[-1:] != (1,):
        t = t[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)  # the shorter of the two arcs
    dot = np.abs(dot).clip(max=1.0)
    theta = np.arccos(dot)
    sin_theta = np.sin(theta)
    near = sin_theta < 1e-6  # nearly equal: linear interpolation is exact to float64 there
    safe = np.where(near, 1.0, sin_theta)
    w0 = np.where(near, 1 - t, np.sin((1 - t) * theta) / safe)
    w1 = np.where(near, t, np.sin(t * theta) / safe)
    out = w0 * q0 + w1 * q1
    return out / np.linalg.norm(out, axis=-1, keepdims=True)
