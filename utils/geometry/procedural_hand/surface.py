"""The procedural hand's surface: digit tubes, webs and palm rings, then relaxing and smoothing.

Every digit is a tube of ``RING`` vertices per cross-section ring, capped by a rounded tip whose
pole is the fingertip vertex. The palm is a tube from a 16-vertex wrist ring (the only open
boundary, as in MANO) to the loop formed by the five digit bases and the skin webs between them.
The first web space (thumb - index) is built as a fold and relaxed into a saddle by membrane
smoothing; a few Taubin steps then round all junctions. Both are linear in the positions for a fixed
topology, so shape directions stay smooth. All in the builder frame ``B``.
"""

from __future__ import annotations

import numpy as np

from utils.geometry.procedural_hand.skeleton import (
    DIGITS,
    THUMB_LENGTHS,
    HandParams,
    build_skeleton,
    digit_profile,
    smoothstep,
    spine_frame,
)

RING = 10  # vertices per digit cross-section ring
TAUBIN_STEPS = 6
RELAX_STEPS = 30
# Palm rings from the wrist to the loop of digit bases: position t along the palm and vertex count
# (the last one equals the number of positions on that loop).
PALM_RING_T = (0.0, 0.2, 0.4, 0.6, 0.78, 0.92)
PALM_RING_SIZES = (16, 28, 42, 54, 64, 72)


def vertex_adjacency(num_verts: int, faces: np.ndarray):
    """Row-normalised vertex adjacency (uniform Laplacian is ``A @ x - x``), scipy CSR."""
    import scipy.sparse

    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    a = scipy.sparse.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(num_verts,) * 2).tocsr()
    a.data[:] = 1.0
    deg = np.asarray(a.sum(axis=1)).ravel()
    return scipy.sparse.diags(1.0 / np.maximum(deg, 1.0)) @ a


def taubin(verts: np.ndarray, adjacency, steps: int, keep: np.ndarray) -> np.ndarray:
    """Taubin lambda/mu smoothing (low-pass without shrinkage); ``keep`` vertices do not move."""
    v = verts.copy()
    for _ in range(steps):
        for factor in (0.5, -0.53):
            delta = adjacency @ v - v
            delta[keep] = 0.0
            v = v + factor * delta
    return v


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
    _, b_end = digit_profile(dig, total)
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
        c, _, u, w = spine_frame(dig, s[k])
        a, b = digit_profile(dig, s[k])
        out[k] = c + radius_scale * (a * np.cos(theta[k]) * u - b * np.sin(theta[k]) * w)
    return out


def build_surface(p: HandParams, topology: dict | None = None) -> dict:
    """Build the hand surface in frame B for parameters ``p``.

    The triangulation between rings of different sizes and the set of relaxed vertices depend on
    the geometry; ``topology`` (the result for the template parameters) pins them, so that every
    parameter set gives the same mesh connectivity (needed for the shape directions).
    """
    digits = build_skeleton(p)
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
        tip_centre, *_ = spine_frame(dig, total)
        tips[name] = mb.add(tip_centre, di)
        mb.cap(ring, tips[name])

    # --- webs between neighbouring digits: chains shared by the palmar and dorsal passes -----
    webs = []
    web_counts = {("pinky", "ring"): 1, ("ring", "middle"): 1, ("middle", "index"): 1, ("index", "thumb"): 4}
    for a_name, b_name in zip(DIGITS[:-1], DIGITS[1:], strict=True):
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
        palmar += base_rings[name][0 : half + 1]
        if k < len(webs):
            palmar += webs[k]
    for k in range(len(DIGITS) - 1, -1, -1):  # radial -> ulnar over the back of the hand
        ring = base_rings[DIGITS[k]]
        if k == len(DIGITS) - 1:
            dorsal += ring[half + 1 :] + [ring[0]]
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
    tau_p[:n_pal] = 0.5 * np.concatenate([[0.0], np.cumsum(seglen[: n_pal - 1])]) / pal_len
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
    web_spans = [
        (tau_p[min(web_pos[: len(webs[-1])])] - 0.04, tau_p[max(web_pos[: len(webs[-1])])] + 0.04),
        (tau_p[min(web_pos[len(webs[-1]) :])] - 0.04, tau_p[max(web_pos[len(webs[-1]) :])] + 0.04),
    ]
    thumb_all = [k for k, i in enumerate(loop_p) if i in base_rings["thumb"]]
    tau_thumb_lo, tau_thumb_hi = float(tau_p[min(thumb_all)]), float(tau_p[max(thumb_all)])

    def thumb_weight(tau):
        """1 on the part of the palm that ends at the thumb base, 0 elsewhere, smooth in between."""
        margin = 0.06
        return smoothstep((tau - tau_thumb_lo + margin) / margin) * smoothstep(
            (tau_thumb_hi + margin - tau) / margin
        )

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
        return np.stack(
            [
                cx + a * np.sign(c) * np.abs(c) ** ex,
                np.zeros_like(tau),
                cz + b * np.sign(s) * np.abs(s) ** ex,
            ],
            axis=-1,
        )

    # --- palm rings, from the wrist (t = 0) to just below the loop P (t < 1) -------------------
    prev_ring = prev_tau = None
    palm_rings = []
    for k, (t, n) in enumerate(zip(PALM_RING_T, PALM_RING_SIZES, strict=True)):
        tau = tau_p.copy() if k == len(PALM_RING_SIZES) - 1 else np.arange(n) / n
        assert len(tau) == n, (len(tau), n)
        loop = loop_at(tau)
        x = section_at(t, tau)
        # Hand over from the smooth section to the digit bases; the palm keeps its thickness up to
        # the knuckles (z follows the section longer) except where it ends at the thumb.
        g = smoothstep((t - 0.45) / 0.55)
        g_z = g * (0.3 + 0.7 * thumb_weight(tau))
        x[:, 0] = (1 - g) * x[:, 0] + g * loop[:, 0]
        x[:, 2] = (1 - g_z) * x[:, 2] + g_z * loop[:, 2]
        x[:, 1] = wrist_y + t * (loop[:, 1] - wrist_y)
        # Fleshy palm and thenar eminence: push outwards in the section plane.
        ang = 2.0 * np.pi * tau
        outward = np.stack([np.cos(ang), np.zeros_like(tau), -np.sin(ang)], axis=-1)
        dtau = (tau - tau_thumb + 0.5) % 1.0 - 0.5
        thenar = 0.010 * np.exp(-((dtau / 0.09) ** 2))
        palmar_side = np.clip(np.sin(ang), 0, None)
        bulge = (0.002 + 0.003 * palmar_side + thenar) * np.sin(np.pi * t) * p.palm_thickness
        x = x + bulge[:, None] * outward
        in_web = np.zeros(n, dtype=bool)
        if t >= 0.55:
            for lo_, hi_ in web_spans:
                in_web |= (tau >= lo_) & (tau <= hi_)
        ring = [mb.add(xi, -1, relax=bool(r)) for xi, r in zip(x, in_web, strict=True)]
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
    adjacency = vertex_adjacency(len(verts), faces)
    # The first web space is built as a fold between the index finger and the thumb; relaxing it
    # (membrane smoothing of those vertices only) opens it into a smooth saddle.
    for _ in range(RELAX_STEPS):
        verts[relax] += 0.5 * (adjacency @ verts - verts)[relax]
    keep = np.zeros(len(verts), dtype=bool)
    keep[palm_rings[0]] = True  # the open wrist boundary stays as designed
    verts = taubin(verts, adjacency, TAUBIN_STEPS, keep)
    verts = verts * p.scale
    return {
        "verts": verts,
        "faces": faces,
        "part": np.array(mb.part),
        "relax": relax,
        "tips": tips,
        "wrist_ring": palm_rings[0],
        "palm_rings": palm_rings,
        "digits": digits,
        "num_loop_p": len(loop_p),
        "webs": webs,
    }
