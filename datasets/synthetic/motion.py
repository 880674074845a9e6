"""Articulation: smooth, varied hand motion over a sequence, as MANO parameters.

Per-finger flexion, a fist component, spread, thumb-index pinch, wrist twist/flexion/deviation and a
small drift, each a smooth random curve over the frames; the joint rotations are built from the
subject's :class:`~datasets.synthetic.skeleton.HandFrame` (flexion and spread axes).
"""

from __future__ import annotations

import math

import numpy as np

from datasets.synthetic._np import normalize
from datasets.synthetic.skeleton import FINGER_JOINTS, FINGERS, HandFrame


def smooth_signal(rng, num_frames, lo, hi, num_keys=None):
    """A smooth random curve over the frames: cubic spline through random keys in [lo, hi]."""
    from scipy.interpolate import CubicSpline

    num_keys = num_keys or max(3, num_frames // 4 + 2)
    keys = rng.uniform(lo, hi, num_keys)
    t = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    return np.clip(CubicSpline(np.linspace(0.0, 1.0, num_keys), keys, bc_type="natural")(t), lo, hi)


def make_articulation(rng, frame: HandFrame, num_frames: int, pose_mean, base_rotation=None):
    """Smooth, varied hand motion as MANO parameters.

    Args:
        rng: numpy Generator.
        frame: the subject's :class:`HandFrame`.
        num_frames: F.
        pose_mean: (48,) the model's pose mean (``[0, 0, 0, hands_mean]``); subtracted so that
            ``HandModel`` (``flat_hand_mean=False``) reproduces the designed rotations.
        base_rotation: (3, 3) world orientation of the canonical hand (default: fingers towards world
            -y, palm facing a random horizontal direction).

    Returns:
        pose (F, 48) float64 axis-angle, trans_offset (F, 3) metres (a drift to add to the rest
        placement), and the per-frame control signals (dict) for the metadata.
    """
    from scipy.spatial.transform import Rotation

    F_ = num_frames
    sig = {f"curl_{f}": smooth_signal(rng, F_, 0.0, 0.8) for f in FINGERS}
    sig["fist"] = smooth_signal(rng, F_, 0.0, 0.7)
    sig["spread"] = smooth_signal(rng, F_, -0.3, 1.0)
    sig["pinch"] = smooth_signal(rng, F_, -0.6, 1.0).clip(0.0, 1.0)
    sig["twist"] = smooth_signal(rng, F_, -math.radians(70), math.radians(70))
    sig["wrist_flex"] = smooth_signal(rng, F_, -math.radians(35), math.radians(35))
    sig["wrist_dev"] = smooth_signal(rng, F_, -math.radians(15), math.radians(15))
    drift = np.stack([smooth_signal(rng, F_, -0.015, 0.015) for _ in range(3)], 1)

    full = np.zeros((F_, 16, 3))
    flex_deg = {"mcp": 75.0, "pip": 95.0, "dip": 65.0}
    spread_deg = {"index": 12.0, "middle": 2.0, "ring": -8.0, "pinky": -16.0}
    opposition_axis = normalize(np.cross(frame.thumbward, frame.palm_normal))
    for k in range(F_):
        pinch = sig["pinch"][k]
        for finger in FINGERS:
            a, b, c = FINGER_JOINTS[finger]
            curl = np.clip(0.65 * sig[f"curl_{finger}"][k] + 0.5 * sig["fist"][k], 0.0, 0.9)
            if finger == "thumb":
                curl_t = curl * 0.7
                full[k, a] = (
                    math.radians(20.0 * curl_t + 25.0 * pinch) * frame.flex_axis[a]
                    + math.radians(35.0 * pinch + 10.0 * curl_t) * opposition_axis
                )
                full[k, b] = math.radians(35.0 * curl_t + 20.0 * pinch) * frame.flex_axis[b]
                full[k, c] = math.radians(55.0 * curl_t + 25.0 * pinch) * frame.flex_axis[c]
                continue
            if finger == "index":
                curl = max(curl, 0.55 * pinch)
            full[k, a] = (
                math.radians(flex_deg["mcp"] * curl) * frame.flex_axis[a]
                + math.radians(spread_deg[finger] * sig["spread"][k] * (1 - curl)) * frame.spread_axis[a]
            )
            full[k, b] = math.radians(flex_deg["pip"] * curl) * frame.flex_axis[b]
            full[k, c] = math.radians(flex_deg["dip"] * curl * rng.uniform(0.9, 1.0)) * frame.flex_axis[c]
    if base_rotation is None:
        yaw = rng.uniform(0, 2 * np.pi)
        target_forward = np.array([0.0, -1.0, 0.0])
        target_palm = np.array([math.cos(yaw), 0.0, math.sin(yaw)])
        src = np.stack([frame.forward, frame.palm_normal, np.cross(frame.forward, frame.palm_normal)], 1)
        dst = np.stack([target_forward, target_palm, np.cross(target_forward, target_palm)], 1)
        base_rotation = dst @ src.T
    wrist_flex_axis = normalize(np.cross(frame.forward, frame.palm_normal))
    for k in range(F_):
        local = (
            Rotation.from_rotvec(sig["twist"][k] * frame.forward)
            * Rotation.from_rotvec(sig["wrist_flex"][k] * wrist_flex_axis)
            * Rotation.from_rotvec(sig["wrist_dev"][k] * frame.palm_normal)
        )
        full[k, 0] = (Rotation.from_matrix(base_rotation) * local).as_rotvec()
    pose = full.reshape(F_, 48) - np.asarray(pose_mean, dtype=np.float64).reshape(1, 48)
    return pose, drift, {k: v.tolist() for k, v in sig.items()}
