"""The procedural hand's rig: skinning weights, joint regressor and pose space (frame ``B``).

* Skinning weights: each vertex follows the bone segment it lies along, with smooth transitions
  across the joints, then graph smoothing; rows sum to 1.
* Joint regressor: each joint is a convex combination of the vertices around it (a ring), solved
  so that it reproduces the designed joint position; shape changes therefore move the joints.
* Pose space: ``hands_mean`` is a mildly curled hand; ``hands_components`` is the PCA basis
  (orthonormal rows) of deterministic synthetic poses, ``hands_coeffs`` their coordinates.
"""

from __future__ import annotations

import numpy as np

from utils.geometry.procedural_hand.skeleton import DIGIT_JOINTS, DIGITS, smoothstep, spine_frame
from utils.geometry.procedural_hand.surface import vertex_adjacency


def _spine_coordinates(verts: np.ndarray, dig: dict):
    """Arc length ``s`` along a digit's bone chain (extended beyond both ends) and the distance
    ``r`` to it, for every vertex. Returns two (V,) arrays."""
    pts, cum = dig["points"], dig["cum"]
    best_r = np.full(len(verts), np.inf)
    best_s = np.zeros(len(verts))
    for k in range(3):
        seg = pts[k + 1] - pts[k]
        length = np.linalg.norm(seg)
        along = (verts - pts[k]) @ seg / length
        lo = -np.inf if k == 0 else 0.0
        hi = np.inf if k == 2 else length
        along = np.clip(along, lo, hi)
        r = np.linalg.norm(verts - (pts[k] + along[:, None] * seg / length), axis=1)
        better = r < best_r
        best_r[better], best_s[better] = r[better], cum[k] + along[better]
    return best_s, best_r


def _chain_weights(s: np.ndarray, cum: np.ndarray, base_half_width: float, joint_half_width: float):
    """Weights (V,4) of (root, bone 1, bone 2, bone 3) along one digit, smooth across joints."""

    def step(centre, half):
        return smoothstep((s - centre + half) / (2.0 * half))

    s0, s1, s2 = step(0.0, base_half_width), step(cum[1], joint_half_width), step(cum[2], joint_half_width)
    return np.stack([1.0 - s0, s0 - s1, s1 - s2, s2], axis=1)


def skinning_weights(surface: dict, scale: float) -> np.ndarray:
    """Skinning weights (V,16), rows summing to 1 (frame B geometry)."""
    verts, part = surface["verts"], surface["part"]
    weights = np.zeros((len(verts), 16))
    palm = part < 0
    palm_digit_total = np.zeros(len(verts))
    for di, name in enumerate(DIGITS):
        dig = surface["digits"][name]
        cum = dig["cum"] * scale
        s, r = _spine_coordinates(verts, {"points": dig["points"] * scale, "cum": cum})
        is_thumb = name == "thumb"
        chain = _chain_weights(s, cum, (0.020 if is_thumb else 0.011) * scale, 0.0045 * scale)
        joints = DIGIT_JOINTS[name]
        mine = part == di
        weights[mine, 0] = chain[mine, 0]
        weights[np.ix_(mine, joints)] = chain[mine, 1:]
        # Palm skin near a digit base follows the digit's first bone (knuckles, thenar eminence).
        reach = (0.022 if is_thumb else 0.010) * scale
        affinity = np.exp(-((r / reach) ** 2)) * palm
        weights[:, list(joints)] += affinity[:, None] * chain[:, 1:]
        palm_digit_total += affinity * (1.0 - chain[:, 0])
    over = np.maximum(palm_digit_total, 1.0)
    weights[palm, 1:] /= over[palm, None]
    weights[palm, 0] = 1.0 - np.minimum(palm_digit_total[palm], 1.0)
    # A little graph smoothing removes the remaining kinks at the palm/digit seams.
    adjacency = vertex_adjacency(len(verts), surface["faces"])
    for _ in range(3):
        weights = 0.5 * weights + 0.5 * (adjacency @ weights)
    weights[weights < 1e-6] = 0.0
    return weights / weights.sum(axis=1, keepdims=True)


def _convex_regressor_row(verts: np.ndarray, target: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1 over ``candidates`` whose combination of the vertices is
    (as close as possible to) ``target``, staying close to uniform weights."""
    from scipy.optimize import lsq_linear

    x = verts[candidates]  # (n, 3)
    n = len(candidates)
    big = 1e4
    a = np.vstack([big * np.vstack([x.T, np.ones((1, n))]), np.eye(n)])
    b = np.concatenate([big * np.append(target, 1.0), np.full(n, 1.0 / n)])
    w = lsq_linear(a, b, bounds=(0.0, 1.0), method="bvls").x
    return w / w.sum()


def joint_regressor(verts: np.ndarray, targets: np.ndarray):
    """Sparse (16, V) regressor; each joint from the ring of vertices around it."""
    import scipy.sparse

    rows, cols, vals = [], [], []
    for j, target in enumerate(targets):
        dist = np.linalg.norm(verts - target, axis=1)
        # The vertices around the joint (its ring and the neighbouring rings), growing the ball
        # until their convex hull contains the joint centre.
        for factor in (1.8, 2.2, 2.6, 3.0, 3.5):
            candidates = np.nonzero(dist < factor * dist.min())[0]
            if len(candidates) < 16:
                candidates = np.argsort(dist)[:16]
            w = _convex_regressor_row(verts, target, candidates)
            if np.linalg.norm(w @ verts[candidates] - target) < 1e-4:
                break
        keep = w > 1e-8
        rows += [j] * int(keep.sum())
        cols += list(candidates[keep])
        vals += list(w[keep] / w[keep].sum())
    return scipy.sparse.csc_matrix((vals, (rows, cols)), shape=(16, len(verts)))


def joint_targets(digits: dict) -> np.ndarray:
    """Designed joint centres (16,3) in frame B: wrist at the origin, then each digit's chain."""
    targets = np.zeros((16, 3))
    for name, joints in DIGIT_JOINTS.items():
        targets[list(joints)] = digits[name]["points"][:3]
    return targets


def _flexion_axes(digits: dict) -> np.ndarray:
    """Flexion axis (15,3) of each non-root joint in frame B (rotating the bone towards the palm
    side of the digit is a positive rotation about it)."""
    axes = np.zeros((15, 3))
    for name, joints in DIGIT_JOINTS.items():
        dig = digits[name]
        for k, j in enumerate(joints):
            s = dig["cum"][k] + 0.5 * (dig["cum"][k + 1] - dig["cum"][k])
            _, _, lateral, _ = spine_frame(dig, s)
            axes[j - 1] = -lateral
    return axes


# Mildly curled rest pose: flexion (rad) of the three joints of each digit.
MEAN_FLEXION = {
    "index": (0.10, 0.22, 0.12),
    "middle": (0.14, 0.26, 0.14),
    "ring": (0.18, 0.28, 0.15),
    "pinky": (0.22, 0.30, 0.16),
    "thumb": (0.08, 0.10, 0.18),
}


def pose_space(digits: dict, num_samples: int = 1554):
    """hands_mean (45,), hands_components (45,45) orthonormal rows, hands_coeffs (N,45); frame B.

    The components are the principal axes of deterministic synthetic poses around the mean: a
    per-finger curl spread over its three joints, finger spreading, thumb flexion/opposition and
    small independent noise on every coordinate (so that the basis is complete)."""
    flex = _flexion_axes(digits)
    spread_axis = np.array([0.0, 0.0, 1.0])  # about the palm normal: spreads fingers sideways
    mean = np.zeros((15, 3))
    for name, joints in DIGIT_JOINTS.items():
        for k, j in enumerate(joints):
            mean[j - 1] = MEAN_FLEXION[name][k] * flex[j - 1]
    rng = np.random.default_rng(20251101)
    poses = np.repeat(mean[None], num_samples, axis=0)
    for name, joints in DIGIT_JOINTS.items():
        curl = rng.uniform(-0.25, 1.1, size=num_samples)
        share = (0.8, 1.0, 0.6) if name != "thumb" else (0.5, 0.6, 0.8)
        for k, j in enumerate(joints):
            jitter = rng.normal(0.0, 0.08, size=num_samples)
            poses[:, j - 1] += (share[k] * curl + jitter)[:, None] * flex[j - 1]
        spread = rng.normal(0.0, 0.12, size=num_samples)
        poses[:, joints[0] - 1] += spread[:, None] * spread_axis
    poses += rng.normal(0.0, 0.02, size=poses.shape)
    centred = poses.reshape(num_samples, 45) - mean.reshape(1, 45)
    _, _, vt = np.linalg.svd(centred, full_matrices=True)
    # Deterministic signs: the largest entry of every component is positive.
    signs = np.sign(vt[np.arange(45), np.abs(vt).argmax(axis=1)])
    components = vt * signs[:, None]
    coeffs = centred @ components.T
    return mean.reshape(45), components, coeffs


def rotate_pose_vectors(pose45: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Express per-joint axis-angle vectors (..., 45) in another frame (proper rotation)."""
    shape = pose45.shape
    return (pose45.reshape(-1, 15, 3) @ rotation.T).reshape(shape)
