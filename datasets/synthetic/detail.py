"""A subject's surface detail on the subdivided canonical mesh: detail fields, albedo, displacement.

- **geometry-predictable detail**: flexion creases across the palmar side of every finger joint,
  wrinkles over the dorsal knuckles, the three main palm lines, fingernails (own albedo, lunula,
  free edge, a raised plate in a groove) on the dorsal side of each distal phalanx; all placed from
  the skeleton (:class:`~datasets.synthetic.skeleton.HandFrame`: joint positions, bone axes, palm
  normal) and the skinning weights;
- **subject-specific detail**: line positions, counts, widths and depths jittered per subject,
  minor palm creases, freckles, fine skin texture (a random sum of sinusoids over the canonical
  surface), tone blotches, nail colour.

Albedo is per vertex; the grooves are small displacements along the normal (0.1-0.5 mm). Every
function draws from the subject's numpy Generator in a fixed order (the data depend on it).
"""

from __future__ import annotations

import math

import numpy as np

from datasets.synthetic._np import bezier, dist_to_polyline, normalize, smoothstep, sum_of_sines
from datasets.synthetic.skeleton import FINGER_JOINTS, FINGERS, MM, HandFrame, finger_local

SKIN_TONES = np.array(
    [[0.86, 0.68, 0.58], [0.78, 0.57, 0.45], [0.62, 0.44, 0.33], [0.45, 0.30, 0.21], [0.30, 0.19, 0.13]]
)


def skin_tone(rng) -> np.ndarray:
    """(3,) base RGB skin tone: a random blend of two neighbouring :data:`SKIN_TONES`, jittered."""
    t = rng.uniform(0.0, len(SKIN_TONES) - 1)
    lo = int(min(math.floor(t), len(SKIN_TONES) - 2))
    skin = SKIN_TONES[lo] * (1 - (t - lo)) + SKIN_TONES[lo + 1] * (t - lo)
    return skin * rng.uniform(0.95, 1.05, 3)


def detail_fields(rng, v, normals, w, frame: HandFrame, spacing_v) -> dict:
    """Per-vertex detail fields in [0, 1]: creases, knuckle wrinkles, palm lines, nails (+ lunula, free edge).

    ``spacing_v (N,)`` is the mean length of the edges at each vertex: line profiles are widened to at
    least about one edge so that per-vertex attributes draw continuous lines, not dashes.
    """
    J = frame.joints
    N = len(v)
    crease = np.zeros(N)
    knuckle = np.zeros(N)
    nail = np.zeros(N)
    lunula = np.zeros(N)
    free_edge = np.zeros(N)
    nail_groove = np.zeros(N)
    jitter = lambda s: 1.0 + rng.uniform(-s, s)  # noqa: E731

    def local(j):
        return finger_local(v, frame, j)

    for finger in FINGERS:
        a, b, c = FINGER_JOINTS[finger]
        parent = {a: 0, b: a, c: b}
        # Palmar flexion creases: (joint, offset along the bone in metres, number of lines).
        if finger == "thumb":
            plan = [(b, 0.0, 2), (c, 0.3 * MM, 1)]  # thumb MCP (two lines) and IP
        else:  # digital crease at the finger base, PIP (two lines), DIP
            plan = [(a, 0.30 * frame.bone_length[a], 2), (b, 0.5 * MM, 2), (c, 0.3 * MM, 1)]
        for j, centre, lines in plan:
            s, cos_p, lateral = local(j)
            region = smoothstep(0.35, 0.6, w[:, parent[j]] + w[:, j])
            palmar = smoothstep(0.05, 0.55, cos_p)
            strength = rng.uniform(0.7, 1.0)
            spacing = 1.6 * MM * jitter(0.3)
            sigma = np.hypot(0.6 * MM * jitter(0.25), 0.6 * spacing_v)
            for k in range(lines):
                sk = centre + (k - (lines - 1) / 2) * spacing + rng.normal(0, 0.3 * MM)
                tilt = rng.normal(0.0, 0.08)  # creases are not exactly perpendicular to the bone
                crease = np.maximum(
                    crease,
                    strength * region * palmar * np.exp(-0.5 * ((s - sk - tilt * lateral) / sigma) ** 2),
                )
        # Dorsal knuckle wrinkles over PIP and DIP (and MCP), short arcs.
        for j, count in ((a, 3), (b, 5), (c, 3)):
            if finger == "thumb" and j == a:
                continue
            s, cos_p, lateral = local(j)
            region = smoothstep(0.35, 0.6, w[:, parent[j]] + w[:, j])
            dorsal = smoothstep(0.3, 0.8, -cos_p)
            envelope = np.exp(-0.5 * (lateral / (3.5 * MM * jitter(0.2))) ** 2)
            spacing = 1.1 * MM * jitter(0.3)
            sigma = np.hypot(0.4 * MM * jitter(0.2), 0.5 * spacing_v)
            curvature = rng.uniform(20.0, 60.0)  # 1/m: arcs bulge towards the fingertip
            strength = rng.uniform(0.4, 0.8)
            for k in range(count):
                sk = (k - (count - 1) / 2) * spacing
                g = np.exp(-0.5 * ((s - sk - curvature * lateral**2) / sigma) ** 2)
                knuckle = np.maximum(knuckle, strength * region * dorsal * envelope * g)
        # Fingernail on the dorsal side of the distal phalanx.
        s, cos_p, lateral = local(c)
        sn = s / frame.bone_length[c]
        region = smoothstep(0.3, 0.6, w[:, c])
        start = rng.uniform(0.26, 0.34)
        half_angle = math.radians(rng.uniform(48.0, 58.0) if finger != "thumb" else rng.uniform(52.0, 62.0))
        along = smoothstep(start, start + 0.06, sn) * (1.0 - smoothstep(1.0, 1.06, sn))
        across = smoothstep(math.cos(half_angle + 0.15), math.cos(half_angle - 0.1), -cos_p)
        m = region * along * across
        nail = np.maximum(nail, m)
        lunula = np.maximum(lunula, m * (1.0 - smoothstep(start + 0.06, start + 0.16, sn)))
        free_edge = np.maximum(free_edge, m * smoothstep(0.93, 0.99, sn))
        nail_groove = np.maximum(nail_groove, 4.0 * m * (1.0 - m))

    # Palm lines, in palm-plane coordinates (x towards the middle MCP, y towards the thumb, unit = palm length).
    L = frame.bone_length[0]
    rel = v - J[0]
    xy = np.stack([rel @ frame.forward, rel @ frame.thumbward], 1) / L
    on_palm = smoothstep(0.1, 0.45, normals @ frame.palm_normal) * smoothstep(0.4, 0.7, w[:, 0] + w[:, 13])
    mcp = {
        f: np.array(
            [
                (J[FINGER_JOINTS[f][0]] - J[0]) @ frame.forward,
                (J[FINGER_JOINTS[f][0]] - J[0]) @ frame.thumbward,
            ]
        )
        / L
        for f in FINGERS
    }
    jit = lambda: rng.normal(0.0, 0.03, 2)  # noqa: E731
    ulnar = mcp["pinky"][1] - 0.12
    lines = [
        # heart line: ulnar edge below the little finger -> between index and middle
        (
            np.array([0.80, ulnar]) + jit(),
            np.array([0.70, 0.5 * (mcp["ring"][1] + mcp["middle"][1])]) + jit(),
            np.array([0.86, 0.5 * (mcp["index"][1] + mcp["middle"][1])]) + jit(),
            1.0,
        ),
        # head line: radial edge between thumb and index -> across the palm
        (
            np.array([0.72, mcp["index"][1] + 0.08]) + jit(),
            np.array([0.55, mcp["middle"][1]]) + jit(),
            np.array([0.50, ulnar + 0.15]) + jit(),
            1.0,
        ),
        # life line: around the thenar eminence towards the wrist
        (
            np.array([0.70, mcp["index"][1] + 0.07]) + jit(),
            np.array([0.40, mcp["middle"][1] + 0.02]) + jit(),
            np.array([0.08, 0.5 * (mcp["index"][1] + mcp["middle"][1])]) + jit(),
            1.0,
        ),
    ]
    for _ in range(int(rng.integers(3, 8))):  # minor, subject-specific creases
        p0 = np.array([rng.uniform(0.2, 0.8), rng.uniform(ulnar, mcp["index"][1])])
        p2 = p0 + normalize(rng.normal(size=2)) * rng.uniform(0.1, 0.3)
        lines.append((p0, 0.5 * (p0 + p2) + rng.normal(0, 0.04, 2), p2, rng.uniform(0.25, 0.5)))
    palm_lines = np.zeros(N)
    candidates = np.nonzero(on_palm > 0)[0]
    for p0, p1, p2, strength in lines:
        d = dist_to_polyline(xy[candidates], bezier(p0, p1, p2)) * L
        sigma = np.hypot(rng.uniform(0.55, 0.8) * MM, 0.6 * spacing_v[candidates])
        palm_lines[candidates] = np.maximum(
            palm_lines[candidates], strength * np.exp(-0.5 * (d / sigma) ** 2)
        )
    palm_lines *= on_palm

    # Freckles / moles on the back of the hand.
    dorsal_side = smoothstep(0.0, 0.4, -(normals @ frame.palm_normal))
    freckles = np.zeros(N)
    spots = rng.poisson(rng.uniform(2.0, 12.0))
    if spots:
        probs = dorsal_side / dorsal_side.sum()
        for i in rng.choice(N, size=spots, p=probs):
            radius = rng.uniform(0.5, 1.4) * MM
            d2 = ((v - v[i]) ** 2).sum(1)
            freckles = np.maximum(freckles, rng.uniform(0.4, 1.0) * np.exp(-0.5 * d2 / radius**2))
    return {
        "crease": crease,
        "knuckle": knuckle,
        "palm_lines": palm_lines,
        "nail": nail,
        "lunula": lunula,
        "free_edge": free_edge,
        "nail_groove": nail_groove,
        "freckles": freckles,
        "dorsal": dorsal_side,
    }


def compose_surface(rng, v, normals, f: dict, skin, frame: HandFrame):
    """Per-vertex albedo (N,3) in [0,1] and displacement (N,) metres from the detail fields."""
    N = len(v)
    palm_side = 1.0 - f["dorsal"]
    tone = skin[None] * (1.0 + 0.10 * palm_side[:, None]) + palm_side[:, None] * np.array([0.04, 0.0, -0.01])
    # Redness over the knuckles and on the fingertips (geometry-predictable), blotches and pores (not).
    red = np.zeros(N)
    for finger in FINGERS:
        a, b, c = FINGER_JOINTS[finger]
        for j in (b, c):
            red = np.maximum(
                red, np.exp(-0.5 * (np.linalg.norm(v - frame.joints[j], axis=1) / (5 * MM)) ** 2)
            )
        k = FINGERS.index(finger)
        red = np.maximum(
            red, 0.8 * np.exp(-0.5 * (np.linalg.norm(v - frame.tips[k], axis=1) / (6 * MM)) ** 2)
        )
    tone = tone * (1.0 + red[:, None] * np.array([0.04, -0.05, -0.05]) * rng.uniform(0.5, 1.5))
    blotch = sum_of_sines(rng, v, 16, (6 * MM, 25 * MM))
    pores = sum_of_sines(rng, v, 48, (0.5 * MM, 2.0 * MM))
    albedo = tone * (1.0 + 0.035 * blotch[:, None]) * (1.0 + rng.uniform(0.03, 0.06) * pores[:, None])
    crease_dark = rng.uniform(0.35, 0.5)
    albedo *= (1.0 - crease_dark * np.clip(f["crease"] + 0.8 * f["palm_lines"], 0, 1))[:, None]
    albedo *= (1.0 - rng.uniform(0.25, 0.4) * f["knuckle"])[:, None]
    mole = albedo * np.array([0.55, 0.47, 0.42]) * rng.uniform(0.8, 1.1)  # darker and browner
    albedo = albedo * (1 - f["freckles"][:, None]) + mole * f["freckles"][:, None]
    nail_rgb = np.array([0.86, 0.66, 0.64]) * rng.uniform(0.92, 1.05, 3)
    nail_rgb = 0.75 * nail_rgb + 0.25 * skin  # nails take some of the underlying tone
    nail_col = (
        nail_rgb[None] * (1 - f["lunula"][:, None]) + np.array([0.93, 0.86, 0.84]) * f["lunula"][:, None]
    )
    nail_col = (
        nail_col * (1 - f["free_edge"][:, None]) + np.array([0.92, 0.88, 0.80]) * f["free_edge"][:, None]
    )
    albedo = albedo * (1 - f["nail"][:, None]) + nail_col * f["nail"][:, None]
    albedo = np.clip(albedo, 0.02, 0.98)

    disp = (
        -rng.uniform(0.3, 0.5) * MM * f["crease"]
        - rng.uniform(0.2, 0.35) * MM * f["palm_lines"]
        - rng.uniform(0.1, 0.2) * MM * f["knuckle"]
        + rng.uniform(0.15, 0.3) * MM * f["nail"]
        - rng.uniform(0.2, 0.3) * MM * f["nail_groove"]
        + 0.03 * MM * sum_of_sines(rng, v, 32, (0.5 * MM, 2.0 * MM))
    )
    return albedo.astype(np.float64), disp
