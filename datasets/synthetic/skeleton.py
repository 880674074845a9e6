"""The hand skeleton as the generator sees it: MANO joint constants and :class:`HandFrame`, the
directions (forward, thumbward, palm normal, per-joint bone/flexion/spread axes, fingertips) derived
from a canonical hand's joints, vertices and skinning weights. Detail placement and articulation are
both built on it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets.synthetic._np import normalize, orth

MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
# MANO joint order: 0 wrist, 1-3 index, 4-6 middle, 7-9 pinky, 10-12 ring, 13-15 thumb.
FINGER_JOINTS = {
    "thumb": (13, 14, 15),
    "index": (1, 2, 3),
    "middle": (4, 5, 6),
    "ring": (10, 11, 12),
    "pinky": (7, 8, 9),
}
FINGERS = ("thumb", "index", "middle", "ring", "pinky")  # InterHand's finger order
MM = 1e-3


@dataclass
class HandFrame:
    """Skeleton-derived directions of a canonical hand (world = canonical frame, metres).

    ``forward``: wrist -> middle MCP; ``thumbward``: towards the thumb, orthogonal to ``forward``;
    ``palm_normal``: out of the palm; per joint ``axis`` (bone direction to its child / the tip),
    ``palmar`` (flexion side, orthogonal to the axis), ``flex_axis`` (rotation axis that curls the
    bone towards the palm), ``spread_axis`` (rotation axis that moves it towards the thumb);
    ``tips``: (5, 3) fingertip positions and ``tip_vertex``: their vertex ids (thumb..pinky).
    """

    joints: np.ndarray
    forward: np.ndarray
    thumbward: np.ndarray
    palm_normal: np.ndarray
    axis: np.ndarray
    palmar: np.ndarray
    flex_axis: np.ndarray
    spread_axis: np.ndarray
    tips: np.ndarray
    tip_vertex: np.ndarray
    bone_length: np.ndarray


def hand_frame(joints, verts, weights, side: str) -> HandFrame:
    """Directions of a canonical hand from its joints (16,3), vertices (N,3) and skinning weights (N,16)."""
    J = np.asarray(joints, dtype=np.float64)
    verts = np.asarray(verts, dtype=np.float64)
    owner = np.asarray(weights).argmax(1)
    forward = normalize(J[4] - J[0])
    # Little-finger MCP -> index MCP points towards the thumb (the thumb joints themselves sit too
    # close to the wrist to give a stable direction).
    thumbward = orth(J[1] - J[7], forward)
    # Right hand, palm facing the viewer, fingers up: the thumb is on the viewer's right.
    palm_normal = np.cross(thumbward, forward) if side == "right" else np.cross(forward, thumbward)
    axis = np.zeros((16, 3))
    tips = np.zeros((5, 3))
    tip_vertex = np.zeros(5, dtype=np.int64)
    for k, finger in enumerate(FINGERS):
        a, b, c = FINGER_JOINTS[finger]
        axis[a], axis[b] = normalize(J[b] - J[a]), normalize(J[c] - J[b])
        ids = np.nonzero(owner == c)[0]
        if len(ids) == 0:
            raise ValueError(f"no vertex is skinned mainly to the distal {finger} joint {c}")
        proj = (verts[ids] - J[c]) @ axis[b]
        tip_vertex[k] = ids[np.argmax(proj)]
        tips[k] = verts[tip_vertex[k]]
        axis[c] = normalize(tips[k] - J[c])
    axis[0] = forward
    bone_length = np.zeros(16)
    for k, finger in enumerate(FINGERS):
        a, b, c = FINGER_JOINTS[finger]
        bone_length[a], bone_length[b] = np.linalg.norm(J[b] - J[a]), np.linalg.norm(J[c] - J[b])
        bone_length[c] = np.linalg.norm(tips[k] - J[c])
    bone_length[0] = np.linalg.norm(J[4] - J[0])
    # The thumb pad faces the palm side, turned towards the index finger.
    to_index = normalize(J[1] - J[14])
    palmar = np.zeros((16, 3))
    flex_axis = np.zeros((16, 3))
    spread_axis = np.zeros((16, 3))
    for j in range(16):
        n = palm_normal if j < 13 else normalize(palm_normal + 0.5 * orth(to_index, axis[j]))
        palmar[j] = orth(n, axis[j])
        flex_axis[j] = normalize(np.cross(axis[j], palmar[j]))
        sa = palm_normal if np.dot(np.cross(palm_normal, axis[j]), thumbward) > 0 else -palm_normal
        spread_axis[j] = sa
    return HandFrame(
        J,
        forward,
        thumbward,
        palm_normal,
        axis,
        palmar,
        flex_axis,
        spread_axis,
        tips,
        tip_vertex,
        bone_length,
    )


def finger_local(v, frame: HandFrame, j):
    """Along-bone coordinate ``s`` (m), cosine to the palmar direction and lateral offset of ``v`` about joint ``j``."""
    rel = v - frame.joints[j]
    s = rel @ frame.axis[j]
    q = rel - s[:, None] * frame.axis[j]
    r = np.maximum(np.linalg.norm(q, axis=1), 1e-9)
    cos_palmar = (q @ frame.palmar[j]) / r
    lateral = q @ np.cross(frame.axis[j], frame.palmar[j])
    return s, cos_palmar, lateral
