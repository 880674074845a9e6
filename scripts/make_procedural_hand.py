"""Generate the procedural stand-in hand (NOT MANO) in the MANO v1.2 pickle format.

The project must build, test and demo without the licensed MANO files, so it ships a hand model
written by this script: ``assets/procedural_hand/PROCEDURAL_HAND_{RIGHT,LEFT}.pkl``. Each pickle has
exactly the keys, dtypes and shapes of ``MANO_{RIGHT,LEFT}.pkl`` (except that ``shapedirs`` is a
plain array instead of a chumpy object) and is loaded through the same code path
(``utils.geometry.mano.load_mano_dict`` and ``utils.geometry.mano.HandModel``). It is a synthetic hand built from
tubes, with hand-designed skinning weights, joint regressor, shape directions and pose space; none
of its numbers come from MANO, and results obtained with it say nothing about MANO.

Construction (all deterministic; lengths in metres):

* Skeleton in a builder frame ``B`` (x towards the little finger, y towards the fingertips, z out of
  the back of the hand, wrist joint at the origin), for a set of anatomical parameters
  (:class:`HandParams`).
* Surface: every digit is a tube of ``RING`` vertices per cross-section ring, capped by a rounded
  tip whose pole is the fingertip vertex. The palm is a tube from a 16-vertex wrist ring (the only
  open boundary, as in MANO) to the loop formed by the five digit bases and the skin webs between
  them. The mesh is a topological disc: Euler characteristic 1, one 16-edge boundary.
  With ``V = 778`` vertices this gives MANO's counts, 1538 faces and 2315 edges.
* The first web space (thumb - index) is built as a fold and relaxed into a saddle by membrane
  smoothing of its vertices; then a few Taubin steps round all junctions. Both are linear in the
  positions for a fixed topology, so shape directions stay smooth.
* Skinning weights: each vertex follows the bone segment it lies along, with smooth transitions
  across the joints, then graph smoothing; rows sum to 1.
* Joint regressor: each joint is a convex combination of the vertices around it (a ring), solved
  so that it reproduces the designed joint position; shape changes therefore move the joints.
* Shape directions: central finite differences of the whole construction with respect to ten
  anatomical parameters (overall size, palm width/length/thickness, finger thickness, four finger
  lengths, thumb length), each scaled to a plausible one-sigma change.
* Pose space: ``hands_mean`` is a mildly curled hand; ``hands_components`` is the PCA basis
  (orthonormal rows) of deterministic synthetic poses, ``hands_coeffs`` their coordinates.
* Output frame: MANO-like (fingers along -x, palm normal -y, thumb towards +z), wrist at the origin.
  The left hand is the mirror image (x -> -x) with mirrored shape and pose spaces.

Usage::

    python scripts/make_procedural_hand.py                    # writes assets/procedural_hand/
    python scripts/make_procedural_hand.py --preview hand.png # also renders a preview image
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import sys

import numpy as np

RING = 10  # vertices per digit cross-section ring
WRIST_RING = 16  # vertices of the open wrist boundary (as in MANO)
TARGET_NUM_VERTS = 778  # MANO's vertex count; with one 16-edge boundary this gives MANO's faces
FINGERTIP_VERTEX_IDS = {"thumb": 744, "index": 320, "middle": 443, "ring": 554, "pinky": 671}
PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])
# MANO joint order: 0 wrist, 1-3 index, 4-6 middle, 7-9 pinky, 10-12 ring, 13-15 thumb.
DIGIT_JOINTS = {"index": (1, 2, 3), "middle": (4, 5, 6), "pinky": (7, 8, 9), "ring": (10, 11, 12),
                "thumb": (13, 14, 15)}
# Digits in loop order around the palm, ulnar (little finger) to radial (thumb).
DIGITS = ("pinky", "ring", "middle", "index", "thumb")
# Builder frame B -> MANO-like frame: x_M = -y_B, y_M = z_B, z_M = -x_B (a proper rotation).
B_TO_MANO = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]])
TAUBIN_STEPS = 6
RELAX_STEPS = 30
# Palm rings from the wrist to the loop of digit bases: position t along the palm and vertex count
# (the last one equals the number of positions on that loop).
PALM_RING_T = (0.0, 0.2, 0.4, 0.6, 0.78, 0.92)
PALM_RING_SIZES = (16, 28, 42, 54, 64, 72)
SHAPE_STD = (  # parameter name, relative change per unit beta
    ("scale", 0.05), ("palm_width", 0.06), ("palm_length", 0.06), ("palm_thickness", 0.08),
    ("finger_thickness", 0.08), ("index_length", 0.06), ("middle_length", 0.06),
    ("ring_length", 0.06), ("pinky_length", 0.06), ("thumb_length", 0.06),
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
FINGER_PROFILE = np.array([  # fraction, A, B
    [0.00, 0.0097, 0.0088], [0.45, 0.0092, 0.0080], [0.62, 0.0086, 0.0073],
    [0.75, 0.0082, 0.0069], [1.00, 0.0075, 0.0064]])
THUMB_CMC = (-0.020, 0.018, -0.010)
THUMB_LENGTHS = (0.043, 0.032, 0.029)  # CMC-MCP, MCP-IP, IP-tip
THUMB_DIRS = ((-0.68, 0.68, -0.28), (-0.50, 0.84, -0.20), (-0.38, 0.92, -0.12))
THUMB_NAIL = (-0.90, 0.00, 0.45)  # direction the thumbnail faces (before orthogonalisation)
THUMB_PROFILE = np.array([[0.00, 0.0150, 0.0128], [0.45, 0.0118, 0.0105], [0.75, 0.0108, 0.0094],
                          [1.00, 0.0098, 0.0085]])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


# ----------------------------------------------------------------------------------------------
# Skeleton
# ----------------------------------------------------------------------------------------------
def _skeleton(p: HandParams) -> dict:
    """Digit chains in frame B: for each digit its joint points, tip, frames and profile."""
    digits = {}
    for name, (mcp, spread, lengths, width) in FINGER_SPECS.items():
        length_mult = getattr(p, f"{name}_length")
        base = np.array([mcp[0] * p.palm_width, mcp[1] * p.palm_length, mcp[2] * p.palm_thickness])
        a = np.deg2rad(spread)
        d = np.array([np.sin(a), np.cos(a), 0.0])
        seg = np.array(lengths) * length_mult
        points = base + np.concatenate([[0.0], np.cumsum(seg)])[:, None] * d  # MCP, PIP, DIP, tip
        digits[name] = {"points": points, "dirs": np.repeat(d[None], 3, 0),
                        "nail": np.array([0.0, 0.0, 1.0]),
                        "profile": FINGER_PROFILE * [1.0, width * p.finger_thickness,
                                                     width * p.finger_thickness]}
    cmc = np.array([THUMB_CMC[0] * p.palm_width, THUMB_CMC[1] * p.palm_length,
                    THUMB_CMC[2] * p.palm_thickness])
    dirs = _unit(np.array(THUMB_DIRS))
    seg = np.array(THUMB_LENGTHS) * p.thumb_length
    points = [cmc]
    for k in range(3):
        points.append(points[-1] + seg[k] * dirs[k])
    digits["thumb"] = {"points": np.array(points), "dirs": dirs, "nail": np.array(THUMB_NAIL),
                       "profile": THUMB_PROFILE * [1.0, p.finger_thickness, p.finger_thickness]}
    for dig in digits.values():
        pts = dig["points"]
        dig["cum"] = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    return digits


def _spine_frame(dig: dict, s: float):
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
    d = _unit(d)
    w = _unit(dig["nail"] - np.dot(dig["nail"], d) * d)
    u = np.cross(d, w)
    return centre, d, u, w


def _profile(dig: dict, s: float):
    prof, total = dig["profile"], dig["cum"][-1]
    f = s / total
    return np.interp(f, prof[:, 0], prof[:, 1]), np.interp(f, prof[:, 0], prof[:, 2])


def _adjacency(num_verts: int, faces: np.ndarray):
    """Row-normalised vertex adjacency (uniform Laplacian is ``A @ x - x``), scipy CSR."""
    import scipy.sparse

    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    a = scipy.sparse.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(num_verts,) * 2).tocsr()
    a.data[:] = 1.0
    deg = np.asarray(a.sum(axis=1)).ravel()
    return scipy.sparse.diags(1.0 / np.maximum(deg, 1.0)) @ a


def _taubin(verts: np.ndarray, adjacency, steps: int, keep: np.ndarray) -> np.ndarray:
    """Taubin lambda/mu smoothing (low-pass without shrinkage); ``keep`` vertices do not move."""
    v = verts.copy()
    for _ in range(steps):
        for factor in (0.5, -0.53):
            delta = adjacency @ v - v
            delta[keep] = 0.0
            v = v + factor * delta
    return v


# ----------------------------------------------------------------------------------------------
# Surface
# ----------------------------------------------------------------------------------------------
class _MeshBuilder:
    """Collects vertices (with labels for skinning) and faces."""

    def __init__(self):
        self.verts: list[np.ndarray] = []
        self.part: list[int] = []  # -1 palm / web, else digit index in DIGITS
        self.faces: list[tuple[int, int, int]] = []
        self.relax: list[bool] = []  # vertices relaxed after construction (first web space)

    def add(self, x: np.ndarray, part: int, relax: bool = False) -> int:
        self.verts.append(np.asarray(x, dtype=np.float64))
        self.part.append(part)
        self.relax.append(relax)
        return len(self.verts) - 1

    def zipper(self, ring_a, tau_a, ring_b, tau_b):
        """Triangulate the band between two closed rings ordered counter-clockwise about the
        direction from ``a`` to ``b``; ``tau`` in [0, 1) are the positions around the rings."""
        na, nb = len(ring_a), len(ring_b)
        ta = np.append(tau_a, tau_a[0] + 1.0)
        tb = np.append(tau_b, tau_b[0] + 1.0)
        i = j = 0
        while i < na or j < nb:
            advance_a = j == nb or (i < na and ta[i + 1] <= tb[j + 1])
            if advance_a:
                self.faces.append((ring_a[i % na], ring_a[(i + 1) % na], ring_b[j % nb]))
                i += 1
            else:
                self.faces.append((ring_a[i % na], ring_b[(j + 1) % nb], ring_b[j % nb]))
                j += 1

    def cap(self, ring, pole):
        n = len(ring)
        for k in range(n):
            self.faces.append((ring[k], ring[(k + 1) % n], pole))


def _digit_stations(dig: dict, name: str):
    """Arc lengths of the cross-section rings along a digit (base ring excluded) and the cap."""
    cum = dig["cum"]
    total = cum[-1]
    _, b_end = _profile(dig, total)
    cap_r = 0.85 * b_end
    if name == "thumb":
        # The thumb tube starts at its MCP joint; the metacarpal lies inside the thenar eminence.
        gap = 0.004 * total / sum(THUMB_LENGTHS)
        s0 = cum[1] - gap
        stations = [cum[1] + gap] + list(np.linspace(cum[1] + gap, cum[2], 4)[1:])
        stations += list(np.linspace(cum[2], total - cap_r, 3)[1:])
    else:
        s0 = 0.016 * total / 0.086
        stations = list(np.linspace(s0, cum[1], 4)[1:]) + list(np.linspace(cum[1], cum[2], 3)[1:])
        stations += list(np.linspace(cum[2], total - cap_r, 3)[1:])
    return s0, stations, cap_r


def _ring_points(dig: dict, s: np.ndarray | float, theta: np.ndarray, radius_scale=1.0):
    s = np.broadcast_to(np.asarray(s, dtype=np.float64), theta.shape)
    out = np.empty(theta.shape + (3,))
    for k in range(theta.shape[0]):
        c, _, u, w = _spine_frame(dig, s[k])
        a, b = _profile(dig, s[k])
        out[k] = c + radius_scale * (a * np.cos(theta[k]) * u - b * np.sin(theta[k]) * w)
    return out


def _build_surface(p: HandParams, topology: dict | None = None) -> dict:
    """Build the hand surface in frame B for parameters ``p``.

    The triangulation between rings of different sizes and the set of relaxed vertices depend on
    the geometry; ``topology`` (the result for the template parameters) pins them, so that every
    parameter set gives the same mesh connectivity (needed for the shape directions).
    """
    digits = _skeleton(p)
    mb = _MeshBuilder()
    theta = 2.0 * np.pi * np.arange(RING) / RING
    half = RING // 2
    base_rings, tips = {}, {}

    # --- digit tubes ----------------------------------------------------------------------
    for di, name in enumerate(DIGITS):
        dig = digits[name]
        s0, stations, cap_r = _digit_stations(dig, name)
        # The palmar side of a finger base ring lies further out than the dorsal side.
        tilt = 0.0 if name == "thumb" else 0.35 * s0
        base_pts = _ring_points(dig, s0 + tilt * np.sin(theta), theta, radius_scale=1.02)
        ring = [mb.add(x, di) for x in base_pts]
        base_rings[name] = ring
        tau = np.arange(RING) / RING
        for s in stations:
            nxt = [mb.add(x, di) for x in _ring_points(dig, s, theta)]
            mb.zipper(ring, tau, nxt, tau)
            ring = nxt
        total = dig["cum"][-1]
        for ang in (np.deg2rad(35.0), np.deg2rad(65.0)):
            s = total - cap_r + cap_r * np.sin(ang)
            nxt = [mb.add(x, di) for x in _ring_points(dig, s, theta, radius_scale=np.cos(ang))]
            mb.zipper(ring, tau, nxt, tau)
            ring = nxt
        tip_centre, *_ = _spine_frame(dig, total)
        tips[name] = mb.add(tip_centre, di)
        mb.cap(ring, tips[name])

    # --- webs between neighbouring digits: chains shared by the palmar and dorsal passes -----
    webs = []
    web_counts = {("pinky", "ring"): 1, ("ring", "middle"): 1, ("middle", "index"): 1,
                  ("index", "thumb"): 4}
    for a_name, b_name in zip(DIGITS[:-1], DIGITS[1:]):
        xa = mb.verts[base_rings[a_name][half]]  # radial side of the ulnar digit
        xb = mb.verts[base_rings[b_name][0]]  # ulnar side of the radial digit
        n = web_counts[(a_name, b_name)]
        chain = []
        for k in range(1, n + 1):
            t = k / (n + 1)
            x = (1 - t) * xa + t * xb
            if b_name == "thumb":
                # The first web space arcs out between the index finger and the thumb.
                bow = np.array([-0.8, 0.2, -0.3]) * 0.016 * np.sin(np.pi * t) * (1.0 - t)
                x = x + bow
            else:
                x = x + np.array([0.0, -0.004, -0.0015]) * p.palm_length
            chain.append(mb.add(x, -1, relax=b_name == "thumb"))
        webs.append(chain)

    # --- loop P around the palm's distal end (positions, with repeated vertices) -------------
    palmar, dorsal = [], []
    for k, name in enumerate(DIGITS):  # ulnar -> radial over the palm side
        palmar += base_rings[name][0:half + 1]
        if k < len(webs):
            palmar += webs[k]
    for k in range(len(DIGITS) - 1, -1, -1):  # radial -> ulnar over the back of the hand
        ring = base_rings[DIGITS[k]]
        if k == len(DIGITS) - 1:
            dorsal += ring[half + 1:] + [ring[0]]
        elif k > 0:
            dorsal += ring[half:] + [ring[0]]
        else:
            dorsal += ring[half:]  # the loop closes at the little finger's ulnar side
        if k > 0:
            dorsal += webs[k - 1][::-1]
    loop_p = palmar + dorsal  # starts at the ulnar side of the little finger
    xp = np.array([mb.verts[i] for i in loop_p])
    n_pal = len(palmar)
    # tau: arc-length fraction within each pass, palmar pass -> [0, 0.5), dorsal pass -> [0.5, 1).
    closed = np.vstack([xp, xp[:1]])
    seglen = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    tau_p = np.empty(len(loop_p))
    pal_len = seglen[:n_pal].sum()
    dor_len = seglen[n_pal:].sum()
    tau_p[:n_pal] = 0.5 * np.concatenate([[0.0], np.cumsum(seglen[:n_pal - 1])]) / pal_len
    tau_p[n_pal:] = 0.5 + 0.5 * np.concatenate([[0.0], np.cumsum(seglen[n_pal:-1])]) / dor_len

    def loop_at(tau):
        tt = np.append(tau_p, 1.0)
        xx = np.vstack([xp, xp[:1]])
        return np.stack([np.interp(tau, tt, xx[:, c]) for c in range(3)], axis=-1)

    # --- palm cross-sections: a rounded rectangle growing from the wrist to the knuckles ------
    finger_x = np.array([mb.verts[i][0] for name in DIGITS[:4] for i in base_rings[name]])
    knuckle_a = 0.5 * (finger_x.max() - finger_x.min()) + 0.001 * p.palm_width
    knuckle_cx = 0.5 * (finger_x.max() + finger_x.min())
    wrist_a, wrist_cx = 0.0285 * p.palm_width, -0.002 * p.palm_width
    wrist_b, knuckle_b = 0.0185 * p.palm_thickness, 0.0160 * p.palm_thickness
    wrist_cz, knuckle_cz = 0.0, -0.002 * p.palm_thickness
    wrist_y = -0.013 * p.palm_length
    thumb_pos = [k for k, i in enumerate(loop_p) if i in base_rings["thumb"][1:half]]
    tau_thumb = float(np.mean(tau_p[thumb_pos]))
    # tau spans of the first web space (index - thumb) on the palmar and dorsal passes
    web_pos = [k for k, i in enumerate(loop_p) if i in webs[-1]]
    web_spans = [(tau_p[min(web_pos[:len(webs[-1])])] - 0.04, tau_p[max(web_pos[:len(webs[-1])])] + 0.04),
                 (tau_p[min(web_pos[len(webs[-1]):])] - 0.04, tau_p[max(web_pos[len(webs[-1]):])] + 0.04)]
    thumb_all = [k for k, i in enumerate(loop_p) if i in base_rings["thumb"]]
    tau_thumb_lo, tau_thumb_hi = float(tau_p[min(thumb_all)]), float(tau_p[max(thumb_all)])

    def thumb_weight(tau):
        """1 on the part of the palm that ends at the thumb base, 0 elsewhere, smooth in between."""
        margin = 0.06
        return (_smoothstep((tau - tau_thumb_lo + margin) / margin)
                * _smoothstep((tau_thumb_hi + margin - tau) / margin))

    def section_at(t, tau):
        """Point of the smooth palm section at palm parameter t and angle 2 pi tau
        (tau 0 ulnar (+x), 0.25 palmar (-z), 0.5 radial (-x), 0.75 dorsal (+z))."""
        e = 1.0 - (1.0 - t) ** 2  # widen quickly above the wrist
        a = wrist_a + e * (knuckle_a - wrist_a)
        cx = wrist_cx + e * (knuckle_cx - wrist_cx)
        b = wrist_b + t * (knuckle_b - wrist_b)
        cz = wrist_cz + t * (knuckle_cz - wrist_cz)
        ang = 2.0 * np.pi * tau
        c, s = np.cos(ang), -np.sin(ang)
        ex = 2.0 / 3.0  # superellipse exponent: a rounded rectangle
        return np.stack([cx + a * np.sign(c) * np.abs(c) ** ex, np.zeros_like(tau),
                         cz + b * np.sign(s) * np.abs(s) ** ex], axis=-1)

    # --- palm rings, from the wrist (t = 0) to just below the loop P (t < 1) -------------------
    prev_ring = prev_tau = None
    palm_rings = []
    for k, (t, n) in enumerate(zip(PALM_RING_T, PALM_RING_SIZES)):
        tau = tau_p.copy() if k == len(PALM_RING_SIZES) - 1 else np.arange(n) / n
        assert len(tau) == n, (len(tau), n)
        loop = loop_at(tau)
        x = section_at(t, tau)
        # Hand over from the smooth section to the digit bases; the palm keeps its thickness up to
        # the knuckles (z follows the section longer) except where it ends at the thumb.
        g = _smoothstep((t - 0.45) / 0.55)
        g_z = g * (0.3 + 0.7 * thumb_weight(tau))
        x[:, 0] = (1 - g) * x[:, 0] + g * loop[:, 0]
        x[:, 2] = (1 - g_z) * x[:, 2] + g_z * loop[:, 2]
        x[:, 1] = wrist_y + t * (loop[:, 1] - wrist_y)
        # Fleshy palm and thenar eminence: push outwards in the section plane.
        ang = 2.0 * np.pi * tau
        outward = np.stack([np.cos(ang), np.zeros_like(tau), -np.sin(ang)], axis=-1)
        dtau = (tau - tau_thumb + 0.5) % 1.0 - 0.5
        thenar = 0.010 * np.exp(-(dtau / 0.09) ** 2)
        palmar_side = np.clip(np.sin(ang), 0, None)
        bulge = (0.002 + 0.003 * palmar_side + thenar) * np.sin(np.pi * t) * p.palm_thickness
        x = x + bulge[:, None] * outward
        in_web = np.zeros(n, dtype=bool)
        if t >= 0.55:
            for lo_, hi_ in web_spans:
                in_web |= (tau >= lo_) & (tau <= hi_)
        ring = [mb.add(xi, -1, relax=bool(r)) for xi, r in zip(x, in_web)]
        palm_rings.append(ring)
        if prev_ring is not None:
            mb.zipper(prev_ring, prev_tau, ring, tau)
        prev_ring, prev_tau = ring, tau
    mb.zipper(prev_ring, prev_tau, loop_p, tau_p)

    verts = np.array(mb.verts)
    faces = np.array(mb.faces, dtype=np.int64)
    relax = np.array(mb.relax)
    if topology is not None:
        assert len(verts) == len(topology["verts"]), "vertex count must not depend on parameters"
        faces, relax = topology["faces"], topology["relax"]
    adjacency = _adjacency(len(verts), faces)
    # The first web space is built as a fold between the index finger and the thumb; relaxing it
    # (membrane smoothing of those vertices only) opens it into a smooth saddle.
    for _ in range(RELAX_STEPS):
        verts[relax] += 0.5 * (adjacency @ verts - verts)[relax]
    keep = np.zeros(len(verts), dtype=bool)
    keep[palm_rings[0]] = True  # the open wrist boundary stays as designed
    verts = _taubin(verts, adjacency, TAUBIN_STEPS, keep)
    verts = verts * p.scale
    return {"verts": verts, "faces": faces, "part": np.array(mb.part), "relax": relax,
            "tips": tips, "wrist_ring": palm_rings[0], "palm_rings": palm_rings, "digits": digits,
            "num_loop_p": len(loop_p), "webs": webs}


# ----------------------------------------------------------------------------------------------
# Skinning weights and joint regressor
# ----------------------------------------------------------------------------------------------
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
        return _smoothstep((s - centre + half) / (2.0 * half))

    s0, s1, s2 = step(0.0, base_half_width), step(cum[1], joint_half_width), step(cum[2], joint_half_width)
    return np.stack([1.0 - s0, s0 - s1, s1 - s2, s2], axis=1)


def _skinning_weights(surface: dict, scale: float) -> np.ndarray:
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
        affinity = np.exp(-(r / reach) ** 2) * palm
        weights[:, list(joints)] += affinity[:, None] * chain[:, 1:]
        palm_digit_total += affinity * (1.0 - chain[:, 0])
    over = np.maximum(palm_digit_total, 1.0)
    weights[palm, 1:] /= over[palm, None]
    weights[palm, 0] = 1.0 - np.minimum(palm_digit_total[palm], 1.0)
    # A little graph smoothing removes the remaining kinks at the palm/digit seams.
    adjacency = _adjacency(len(verts), surface["faces"])
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


def _joint_regressor(verts: np.ndarray, targets: np.ndarray):
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


def _joint_targets(digits: dict) -> np.ndarray:
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
            _, _, lateral, _ = _spine_frame(dig, s)
            axes[j - 1] = -lateral
    return axes


# ----------------------------------------------------------------------------------------------
# Pose space
# ----------------------------------------------------------------------------------------------
# Mildly curled rest pose: flexion (rad) of the three joints of each digit.
MEAN_FLEXION = {"index": (0.10, 0.22, 0.12), "middle": (0.14, 0.26, 0.14), "ring": (0.18, 0.28, 0.15),
                "pinky": (0.22, 0.30, 0.16), "thumb": (0.08, 0.10, 0.18)}


def _pose_space(digits: dict, num_samples: int = 1554):
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


def _rotate_pose_vectors(pose45: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Express per-joint axis-angle vectors (..., 45) in another frame (proper rotation)."""
    shape = pose45.shape
    return (pose45.reshape(-1, 15, 3) @ rotation.T).reshape(shape)


# ----------------------------------------------------------------------------------------------
# Assembly
# ----------------------------------------------------------------------------------------------
def _fingertip_permutation(num_verts: int, tips: dict) -> np.ndarray:
    """Permutation ``order`` (new index -> old index) putting each fingertip pole at the vertex id
    that smplx uses for MANO's fingertips."""
    order = np.arange(num_verts)
    for name, new_id in FINGERTIP_VERTEX_IDS.items():
        old_id = tips[name]
        where = int(np.nonzero(order == old_id)[0][0])
        order[where], order[new_id] = order[new_id], order[where]
    return order


def build_hand(side: str = "right") -> dict:
    """The procedural hand as a MANO-format dict (see the module docstring)."""
    import scipy.sparse

    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    base = HandParams()
    surface = _build_surface(base)
    verts_b = surface["verts"]
    assert len(verts_b) == TARGET_NUM_VERTS, len(verts_b)
    faces = surface["faces"]
    order = _fingertip_permutation(len(verts_b), surface["tips"])
    inverse = np.argsort(order)

    weights = _skinning_weights(surface, base.scale)
    targets = _joint_targets(surface["digits"]) * base.scale
    regressor = _joint_regressor(verts_b, targets)

    shapedirs = np.zeros((len(verts_b), 3, len(SHAPE_STD)))
    for k, (name, std) in enumerate(SHAPE_STD):
        eps = 1e-3
        plus = _build_surface(dataclasses.replace(base, **{name: 1.0 + eps}), topology=surface)
        minus = _build_surface(dataclasses.replace(base, **{name: 1.0 - eps}), topology=surface)
        shapedirs[:, :, k] = (plus["verts"] - minus["verts"]) / (2.0 * eps) * std

    hands_mean, components, coeffs = _pose_space(surface["digits"])

    rot = B_TO_MANO
    v_template = verts_b[order] @ rot.T
    out = {
        "v_template": v_template,
        "f": inverse[faces].astype(np.uint32),
        "weights": weights[order],
        "shapedirs": np.einsum("ij,vjk->vik", rot, shapedirs[order]),
        "posedirs": np.zeros((len(verts_b), 3, 135)),
        "J_regressor": scipy.sparse.csc_matrix(regressor[:, order]),
        "kintree_table": np.stack([np.where(PARENTS < 0, 4294967295, PARENTS),
                                   np.arange(16)]).astype(np.int64),
        "hands_mean": _rotate_pose_vectors(hands_mean, rot),
        "hands_components": _rotate_pose_vectors(components, rot),
        "hands_coeffs": coeffs,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    out["J"] = np.asarray(out["J_regressor"] @ out["v_template"])
    if side == "left":
        out = mirror_to_left(out)
    return out


def mirror_to_left(right: dict) -> dict:
    """Mirror a right hand (x -> -x) into a left hand with its own consistent data."""
    import scipy.sparse

    flip = np.array([-1.0, 1.0, 1.0])
    # An axis-angle vector is a pseudo-vector: under the reflection x -> -x it maps to (x, -y, -z).
    flip_pose = np.tile(np.array([1.0, -1.0, -1.0]), 15)
    left = dict(right)
    left["v_template"] = right["v_template"] * flip
    left["f"] = right["f"][:, [0, 2, 1]].copy()  # keep the normals pointing outwards
    left["shapedirs"] = right["shapedirs"] * flip[None, :, None]
    left["posedirs"] = np.zeros_like(right["posedirs"])
    left["J_regressor"] = scipy.sparse.csc_matrix(right["J_regressor"])
    left["J"] = right["J"] * flip
    left["hands_mean"] = right["hands_mean"] * flip_pose
    left["hands_components"] = right["hands_components"] * flip_pose[None]
    left["hands_coeffs"] = right["hands_coeffs"].copy()
    for key in ("weights", "kintree_table"):
        left[key] = right[key].copy()
    return left


# ----------------------------------------------------------------------------------------------
# Checks and preview
# ----------------------------------------------------------------------------------------------
def find_self_intersections(verts: np.ndarray, faces: np.ndarray, chunk: int = 128) -> np.ndarray:
    """Pairs ``(edge, face)`` (K,2) where a mesh edge crosses a triangle it does not touch, and
    the unique edges (E,2). Two triangles that intersect (not coplanar) always have such a pair."""
    edges = np.unique(np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1), axis=0)
    t0 = verts[faces[:, 0]]
    e1, e2 = verts[faces[:, 1]] - t0, verts[faces[:, 2]] - t0
    hits = []
    for start in range(0, len(edges), chunk):
        ed = edges[start:start + chunk]
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
        "num_verts": len(v), "num_faces": len(f), "num_edges": len(edges),
        "euler": int(mesh.euler_number), "winding_consistent": bool(mesh.is_winding_consistent),
        "max_faces_per_edge": int(counts.max()), "boundary_loops": [len(lp) for lp in loops],
        "self_intersections": len(hits), "joints_inside": inside.round(2).tolist(),
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


def render_preview(verts: np.ndarray, faces: np.ndarray, path: str, size: int = 320,
                   views=((0.0, 0.0), (180.0, 0.0), (0.0, -90.0), (-40.0, 25.0))) -> None:
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
            cv2.fillConvexPoly(img, np.round(px[faces[fi]] * 16).astype(np.int32), colour,
                               lineType=cv2.LINE_AA, shift=4)
        tiles.append(img)
    cv2.imwrite(path, np.concatenate(tiles, axis=1))


def write_hand(hand: dict, path: str) -> None:
    """Write a MANO-format pickle (protocol 2, like the MANO release) atomically."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        pickle.dump(hand, fh, protocol=2)
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--out-dir", default=os.path.join(repo, "assets", "procedural_hand"))
    parser.add_argument("--preview", default=None, help="also save a preview image of the right hand")
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    for side in ("right", "left"):
        hand = build_hand(side)
        summary = check_hand(hand)
        path = os.path.join(args.out_dir, f"PROCEDURAL_HAND_{side.upper()}.pkl")
        write_hand(hand, path)
        print(f"{path}: {os.path.getsize(path) / 1e6:.2f} MB, {summary}")
        if args.preview and side == "right":
            render_preview(hand["v_template"], hand["f"].astype(np.int64), args.preview)
    return 0


if __name__ == "__main__":
    sys.exit(main())
