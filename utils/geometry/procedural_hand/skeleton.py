"""Design constants, anatomical parameters and the skeleton of the procedural hand.

The skeleton lives in a builder frame ``B`` (x towards the little finger, y towards the fingertips,
z out of the back of the hand, wrist joint at the origin); ``B_TO_MANO`` turns it into the
MANO-like output frame. :class:`HandParams` holds the anatomical multipliers the shape directions
differentiate.
"""

from __future__ import annotations

import dataclasses

import numpy as np

WRIST_RING = 16  # vertices of the open wrist boundary (as in MANO)
TARGET_NUM_VERTS = 778  # MANO's vertex count; with one 16-edge boundary this gives MANO's faces
FINGERTIP_VERTEX_IDS = {"thumb": 744, "index": 320, "middle": 443, "ring": 554, "pinky": 671}
PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])
# MANO joint order: 0 wrist, 1-3 index, 4-6 middle, 7-9 pinky, 10-12 ring, 13-15 thumb.
DIGIT_JOINTS = {
    "index": (1, 2, 3),
    "middle": (4, 5, 6),
    "pinky": (7, 8, 9),
    "ring": (10, 11, 12),
    "thumb": (13, 14, 15),
}
# Digits in loop order around the palm, ulnar (little finger) to radial (thumb).
DIGITS = ("pinky", "ring", "middle", "index", "thumb")
# Builder frame B -> MANO-like frame: x_M = -y_B, y_M = z_B, z_M = -x_B (a proper rotation).
B_TO_MANO = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]])
SHAPE_STD = (  # parameter name, relative change per unit beta
    ("scale", 0.05),
    ("palm_width", 0.06),
    ("palm_length", 0.06),
    ("palm_thickness", 0.08),
    ("finger_thickness", 0.08),
    ("index_length", 0.06),
    ("middle_length", 0.06),
    ("ring_length", 0.06),
    ("pinky_length", 0.06),
    ("thumb_length", 0.06),
)


@dataclasses.dataclass(frozen=True)
class HandParams:
    """Anatomical multipliers of the procedural hand (1.0 = the template)."""

    scale: float = 1.0
    palm_width: float = 1.0
    palm_length: float = 1.0
    palm_thickness: float = 1.0
    finger_thickness: float = 1.0
    index_length: float = 1.0
    middle_length: float = 1.0
    ring_length: float = 1.0
    pinky_length: float = 1.0
    thumb_length: float = 1.0


# Fingers in frame B at unit parameters: MCP joint (x, y, z), spread angle (deg, + = towards the
# little finger), phalanx lengths (MCP-PIP, PIP-DIP, DIP-tip), cross-section scale.
FINGER_SPECS = {
    "index": ((-0.0290, 0.086, -0.002), -4.0, (0.040, 0.024, 0.022), 1.00),
    "middle": ((-0.0085, 0.090, -0.002), 0.0, (0.044, 0.028, 0.024), 1.03),
    "ring": ((0.0115, 0.086, -0.002), 4.0, (0.041, 0.027, 0.023), 0.96),
    "pinky": ((0.0300, 0.077, -0.002), 9.0, (0.032, 0.020, 0.021), 0.84),
}
# Finger cross-section half axes (lateral A, dorsal-palmar B) at fractions of the finger length.
FINGER_PROFILE = np.array(
    [  # fraction, A, B
        [0.00, 0.0097, 0.0088],
        [0.45, 0.0092, 0.0080],
        [0.62, 0.0086, 0.0073],
        [0.75, 0.0082, 0.0069],
        [1.00, 0.0075, 0.0064],
    ]
)
THUMB_CMC = (-0.020, 0.018, -0.010)
THUMB_LENGTHS = (0.043, 0.032, 0.029)  # CMC-MCP, MCP-IP, IP-tip
THUMB_DIRS = ((-0.68, 0.68, -0.28), (-0.50, 0.84, -0.20), (-0.38, 0.92, -0.12))
THUMB_NAIL = (-0.90, 0.00, 0.45)  # direction the thumbnail faces (before orthogonalisation)
THUMB_PROFILE = np.array(
    [[0.00, 0.0150, 0.0128], [0.45, 0.0118, 0.0105], [0.75, 0.0108, 0.0094], [1.00, 0.0098, 0.0085]]
)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def build_skeleton(p: HandParams) -> dict:
    """Digit chains in frame B: for each digit its joint points, tip, frames and profile."""
    digits = {}
    for name, (mcp, spread, lengths, width) in FINGER_SPECS.items():
        length_mult = getattr(p, f"{name}_length")
        base = np.array([mcp[0] * p.palm_width, mcp[1] * p.palm_length, mcp[2] * p.palm_thickness])
        a = np.deg2rad(spread)
        d = np.array([np.sin(a), np.cos(a), 0.0])
        seg = np.array(lengths) * length_mult
        points = base + np.concatenate([[0.0], np.cumsum(seg)])[:, None] * d  # MCP, PIP, DIP, tip
        digits[name] = {
            "points": points,
            "dirs": np.repeat(d[None], 3, 0),
            "nail": np.array([0.0, 0.0, 1.0]),
            "profile": FINGER_PROFILE * [1.0, width * p.finger_thickness, width * p.finger_thickness],
        }
    cmc = np.array(
        [THUMB_CMC[0] * p.palm_width, THUMB_CMC[1] * p.palm_length, THUMB_CMC[2] * p.palm_thickness]
    )
    dirs = unit(np.array(THUMB_DIRS))
    seg = np.array(THUMB_LENGTHS) * p.thumb_length
    points = [cmc]
    for k in range(3):
        points.append(points[-1] + seg[k] * dirs[k])
    digits["thumb"] = {
        "points": np.array(points),
        "dirs": dirs,
        "nail": np.array(THUMB_NAIL),
        "profile": THUMB_PROFILE * [1.0, p.finger_thickness, p.finger_thickness],
    }
    for dig in digits.values():
        pts = dig["points"]
        dig["cum"] = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    return digits


def spine_frame(dig: dict, s: float):
    """Centre, direction d, lateral u and dorsal w of a digit at arc length ``s`` from its base.

    ``(w, u, d)`` is right-handed; ring angle theta maps to ``A cos(theta) u - B sin(theta) w``, so
    increasing theta runs ulnar -> palmar -> radial -> dorsal (counter-clockwise about d).
    """
    pts, cum, dirs = dig["points"], dig["cum"], dig["dirs"]
    seg = int(np.clip(np.searchsorted(cum, s, side="right") - 1, 0, 2))
    centre = pts[seg] + (s - cum[seg]) * dirs[seg]
    # Blend directions across the joints so that rings do not pinch at a bend.
    blend_half = 0.006
    d = dirs[seg].copy()
    if seg > 0 and s - cum[seg] < blend_half:
        t = 0.5 + 0.5 * (s - cum[seg]) / blend_half
        d = (1 - t) * dirs[seg - 1] + t * dirs[seg]
    elif seg < 2 and cum[seg + 1] - s < blend_half:
        t = 0.5 + 0.5 * (cum[seg + 1] - s) / blend_half
        d = t * dirs[seg] + (1 - t) * dirs[seg + 1]
    d = unit(d)
    w = unit(dig["nail"] - np.dot(dig["nail"], d) * d)
    u = np.cross(d, w)
    return centre, d, u, w


def digit_profile(dig: dict, s: float):
    prof, total = dig["profile"], dig["cum"][-1]
    f = s / total
    return np.interp(f, prof[:, 0], prof[:, 1]), np.interp(f, prof[:, 0], prof[:, 2])
