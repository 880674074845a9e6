"""Synthetic multi-view hand captures with high-frequency detail and ground-truth meshes.

A *subject* is a hand model (the shipped procedural hand, or real MANO files) with its own shape
(betas), skin tone and a detailed surface on the 3x Loop-subdivided mesh (49,281 vertices for MANO
topology):

- **geometry-predictable detail**: flexion creases across the palmar side of every finger joint,
  wrinkles over the dorsal knuckles, the three main palm lines, fingernails (own albedo, lunula,
  free edge, a raised plate in a groove) on the dorsal side of each distal phalanx; all placed from
  the skeleton (joint positions, bone axes, palm normal) and the skinning weights;
- **subject-specific detail**: line positions, counts, widths and depths jittered per subject,
  minor palm creases, freckles, fine skin texture (a random sum of sinusoids over the canonical
  surface), tone blotches, nail colour.

Albedo is per vertex; the grooves are small displacements along the normal (0.1-0.5 mm).

A *sequence* poses the subject over F frames with a smooth articulation (per-finger flexion, a fist
component, spread, thumb-index pinch, wrist twist/flexion, a small drift), sees it from V cameras
spread over the sphere (farthest-point sampled, away from the forearm, the hand off-centre in the
raw image) and lights each camera with its own 2nd-order spherical harmonics (the Deep3DFace basis
SRHand's avatar uses, world-space normals). Images are rendered supersampled and box-filtered
(antialiased), black background, and written as JPEG in the InterHand2.6M layout with the four
annotation JSONs, so :mod:`datasets.interhand` reads them like the real data. Beside the tree:
``gt_meshes/{split}/Capture{N}/{seq}.npz`` (posed detailed meshes per frame, canonical mesh,
albedo, displacement, detail labels) and ``gt_masks/...`` (rendered silhouettes, PNG).

The MANO parameters written to ``MANO_NeuralAnnot.json`` are the ones that posed the subject:
``HandModel.forward(pose, shape, trans)`` gives the coarse (778-vertex) hand; the ground truth is
the same pose applied by linear blend skinning (``utils.geometry.lbs.pose_mesh``, no pose blend shapes, as
the XHand/SRHand template) to the detailed subdivided mesh.

Everything is deterministic given the seed (numpy ``SeedSequence`` per subject). See docs/data.md
for the layout, splits and presets.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
# MANO joint order: 0 wrist, 1-3 index, 4-6 middle, 7-9 pinky, 10-12 ring, 13-15 thumb.
FINGER_JOINTS = {"thumb": (13, 14, 15), "index": (1, 2, 3), "middle": (4, 5, 6), "ring": (10, 11, 12),
                 "pinky": (7, 8, 9)}
FINGERS = ("thumb", "index", "middle", "ring", "pinky")  # InterHand's finger order
RECON_SEQUENCE = "ROM03_RT_No_Occlusion"
SR_SEQUENCE = "ROM01_RT_Synthetic"
MM = 1e-3

PRESETS = {
    # CPU-sized: a few minutes on 2 cores.
    "cpu": dict(raw_size=(192, 192), hr_size=128, num_views=12, num_heldout_views=2, num_frames=12,
                num_subjects=5, supersample=2),
    # The paper's protocol: 256x256 crops, 20 views x 20 frames (+ held-out frames and views),
    # InterHand-like portrait raw images.
    "paper": dict(raw_size=(512, 334), hr_size=256, num_views=20, num_heldout_views=2, num_frames=20,
                  num_subjects=10, supersample=2),
}


@dataclass
class SyntheticConfig:
    """What to generate (see :data:`PRESETS`).

    Attributes:
        seed: master seed; every subject draws from its own child stream.
        raw_size: ``(H, W)`` of the raw camera images.
        hr_size: crop size the consumers are meant to use (recorded in the metadata; the reader crops).
        num_views: cameras per SR capture, and fitting cameras of the reconstruction sequence.
        num_heldout_views: extra cameras of the reconstruction sequence, for evaluation only.
        num_frames: frames per SR sequence, and fitting frames of the reconstruction sequence (which
            gets as many held-out frames again, interleaved).
        num_subjects: total subjects: 1 reconstruction subject (test split), ``num_val_subjects``
            SR-validation subjects (val split), the rest SR-training subjects (train split).
        num_val_subjects: None = ``max(1, num_subjects // 5)``.
        supersample: render at this integer factor and box-filter down (antialiasing).
        subdivision_levels: Loop subdivisions of the hand mesh (3 = SRHand/XHand's 49,281 vertices).
        hand_side: ``right`` (SRHand's data) or ``left``.
        mano_dir: folder with ``MANO_{RIGHT,LEFT}.pkl`` (None: the shipped procedural hand).
        save_gt_normals: also write camera-space GT normal maps (PNG, ``(n + 1) / 2``).
    """

    seed: int = 0
    raw_size: tuple = (192, 192)
    hr_size: int = 128
    num_views: int = 12
    num_heldout_views: int = 2
    num_frames: int = 12
    num_subjects: int = 5
    num_val_subjects: int | None = None
    supersample: int = 2
    subdivision_levels: int = 3
    hand_side: str = "right"
    mano_dir: str | None = None
    save_gt_normals: bool = False

    @classmethod
    def preset(cls, name: str, **overrides) -> "SyntheticConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        values = dict(PRESETS[name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def __post_init__(self):
        self.raw_size = tuple(int(s) for s in (self.raw_size if not isinstance(self.raw_size, int)
                                                 else (self.raw_size, self.raw_size)))
        if self.num_subjects < 3:
            raise ValueError(f"num_subjects must be >= 3 (train, val, reconstruction), got {self.num_subjects}")
        if self.hand_side not in ("right", "left"):
            raise ValueError(f"hand_side must be 'right' or 'left', got {self.hand_side!r}")
        for key in ("num_views", "num_frames", "supersample"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")

    def subject_plan(self) -> list:
        """``[(split, capture, role)]`` per subject index: reconstruction first, then val, then train."""
        n_val = self.num_val_subjects if self.num_val_subjects is not None else max(1, self.num_subjects // 5)
        n_train = self.num_subjects - 1 - n_val
        if n_val < 1 or n_train < 1:
            raise ValueError(f"{self.num_subjects} subjects cannot give >= 1 train and {n_val} val subject(s)")
        plan = [("test", "Capture0", "reconstruction")]
        plan += [("val", f"Capture{i}", "sr_val") for i in range(n_val)]
        plan += [("train", f"Capture{i}", "sr_train") for i in range(n_train)]
        return plan


# ----------------------------------------------------------------------------------------------
# Small numeric helpers
# ----------------------------------------------------------------------------------------------


def _normalize(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def _smoothstep(e0, e1, x):
    t = np.clip((np.asarray(x, dtype=np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _orth(v, axis):
    """Component of ``v`` orthogonal to the unit ``axis``, normalised."""
    return _normalize(v - np.dot(v, axis) * axis)


def _rotvec_to_matrix(rv):
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.asarray(rv, dtype=np.float64)).as_matrix()


def _smooth_signal(rng, num_frames, lo, hi, num_keys=None):
    """A smooth random curve over the frames: cubic spline through random keys in [lo, hi]."""
    from scipy.interpolate import CubicSpline

    num_keys = num_keys or max(3, num_frames // 4 + 2)
    keys = rng.uniform(lo, hi, num_keys)
    t = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    return np.clip(CubicSpline(np.linspace(0.0, 1.0, num_keys), keys, bc_type="natural")(t), lo, hi)


def _bezier(p0, p1, p2, n=64):
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def _dist_to_polyline(points, line):
    """Distance of 2D ``points (N,2)`` to a polyline ``(M,2)``."""
    a, b = line[:-1], line[1:]
    ab = b - a
    t = np.clip(np.einsum("nmk,mk->nm", points[:, None] - a[None], ab) / np.maximum((ab ** 2).sum(1), 1e-18), 0, 1)
    closest = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(points[:, None] - closest, axis=-1).min(1)


def _sum_of_sines(rng, points, num, wavelength_range):
    """Unit-variance random field on 3D ``points``: sum of ``num`` plane waves."""
    dirs = _normalize(rng.normal(size=(num, 3)))
    wavelengths = np.exp(rng.uniform(np.log(wavelength_range[0]), np.log(wavelength_range[1]), num))
    phases = rng.uniform(0.0, 2 * np.pi, num)
    field_ = np.sin(points @ (dirs / wavelengths[:, None]).T * 2 * np.pi + phases).sum(1)
    return field_ / math.sqrt(num / 2.0)


# ----------------------------------------------------------------------------------------------
# Hand geometry from the skeleton
# ----------------------------------------------------------------------------------------------


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
    forward = _normalize(J[4] - J[0])
    # Little-finger MCP -> index MCP points towards the thumb (the thumb joints themselves sit too
    # close to the wrist to give a stable direction).
    thumbward = _orth(J[1] - J[7], forward)
    # Right hand, palm facing the viewer, fingers up: the thumb is on the viewer's right.
    palm_normal = np.cross(thumbward, forward) if side == "right" else np.cross(forward, thumbward)
    axis = np.zeros((16, 3))
    tips = np.zeros((5, 3))
    tip_vertex = np.zeros(5, dtype=np.int64)
    for k, finger in enumerate(FINGERS):
        a, b, c = FINGER_JOINTS[finger]
        axis[a], axis[b] = _normalize(J[b] - J[a]), _normalize(J[c] - J[b])
        ids = np.nonzero(owner == c)[0]
        if len(ids) == 0:
            raise ValueError(f"no vertex is skinned mainly to the distal {finger} joint {c}")
        proj = (verts[ids] - J[c]) @ axis[b]
        tip_vertex[k] = ids[np.argmax(proj)]
        tips[k] = verts[tip_vertex[k]]
        axis[c] = _normalize(tips[k] - J[c])
    axis[0] = forward
    bone_length = np.zeros(16)
    for k, finger in enumerate(FINGERS):
        a, b, c = FINGER_JOINTS[finger]
        bone_length[a], bone_length[b] = np.linalg.norm(J[b] - J[a]), np.linalg.norm(J[c] - J[b])
        bone_length[c] = np.linalg.norm(tips[k] - J[c])
    bone_length[0] = np.linalg.norm(J[4] - J[0])
    # The thumb pad faces the palm side, turned towards the index finger.
    to_index = _normalize(J[1] - J[14])
    palmar = np.zeros((16, 3))
    flex_axis = np.zeros((16, 3))
    spread_axis = np.zeros((16, 3))
    for j in range(16):
        n = palm_normal if j < 13 else _normalize(palm_normal + 0.5 * _orth(to_index, axis[j]))
        palmar[j] = _orth(n, axis[j])
        flex_axis[j] = _normalize(np.cross(axis[j], palmar[j]))
        sa = palm_normal if np.dot(np.cross(palm_normal, axis[j]), thumbward) > 0 else -palm_normal
        spread_axis[j] = sa
    return HandFrame(J, forward, thumbward, palm_normal, axis, palmar, flex_axis, spread_axis, tips, tip_vertex,
                     bone_length)


# ----------------------------------------------------------------------------------------------
# Subjects
# ----------------------------------------------------------------------------------------------

SKIN_TONES = np.array([[0.86, 0.68, 0.58], [0.78, 0.57, 0.45], [0.62, 0.44, 0.33], [0.45, 0.30, 0.21],
                       [0.30, 0.19, 0.13]])


@dataclass
class Subject:
    """A hand identity. Arrays are numpy, canonical (rest pose, flat hand), metres.

    ``verts_coarse (778,3)`` shaped template, ``verts (N,3)`` detailed subdivided mesh (displaced),
    ``verts_smooth (N,3)`` the same before displacement, ``faces (Fs,3)``, ``weights (N,16)``
    skinning weights, ``albedo (N,3)`` RGB in [0,1], ``displacement (N,)`` metres along the normal,
    ``labels``: per-vertex detail fields in [0,1] (``crease``, ``knuckle``, ``palm_lines``, ``nail``,
    ``freckles``), ``skin_rgb`` the base tone.
    """

    index: int
    betas: np.ndarray
    skin_rgb: np.ndarray
    verts_coarse: np.ndarray
    verts_smooth: np.ndarray
    verts: np.ndarray
    faces: np.ndarray
    weights: np.ndarray
    albedo: np.ndarray
    displacement: np.ndarray
    labels: dict
    frame: HandFrame
    side: str
    info: dict = field(default_factory=dict)


def _vertex_normals_np(verts, faces):
    from utils.geometry.mesh import vertex_normals

    n = vertex_normals(torch.as_tensor(verts, dtype=torch.float64)[None], torch.as_tensor(faces, dtype=torch.long))
    return n[0].numpy()


def _vertex_spacing(verts, faces) -> np.ndarray:
    """(N,) mean length of the edges incident to each vertex."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    length = np.linalg.norm(verts[edges[:, 0]] - verts[edges[:, 1]], axis=1)
    total = np.bincount(edges.ravel(), weights=np.repeat(length, 2), minlength=len(verts))
    count = np.bincount(edges.ravel(), minlength=len(verts))
    return total / np.maximum(count, 1)


def make_subject(hand_model, rng: np.random.Generator, index: int = 0, levels: int = 3) -> Subject:
    """Draw a subject: shape, skin tone, and the detailed canonical surface on the subdivided mesh."""
    from utils.geometry.mesh import loop_subdivide

    side = hand_model.side if hasattr(hand_model, "side") else "right"
    betas = np.clip(rng.normal(0.0, 0.8, 10), -2.0, 2.0)
    v_template = hand_model.v_template.detach().double().cpu().numpy()
    shapedirs = hand_model.shapedirs.detach().double().cpu().numpy()
    v_shaped = v_template + shapedirs @ betas
    faces = hand_model.faces.detach().cpu().numpy().astype(np.int64)
    weights = hand_model.lbs_weights.detach().double().cpu().numpy()
    J = hand_model.J_regressor.detach().double().cpu().to_dense().numpy() @ v_shaped \
        if hand_model.J_regressor.is_sparse else hand_model.J_regressor.detach().double().cpu().numpy() @ v_shaped
    v_sub, f_sub, w_sub = loop_subdivide(torch.as_tensor(v_shaped), torch.as_tensor(faces), levels,
                                         weights=torch.as_tensor(weights))
    v_sub = np.asarray(v_sub, dtype=np.float64)
    f_sub = np.asarray(f_sub, dtype=np.int64)
    w_sub = np.asarray(w_sub, dtype=np.float64)
    frame = hand_frame(J, v_shaped, weights, side)
    normals = _vertex_normals_np(v_sub, f_sub)

    fields = _detail_fields(rng, v_sub, normals, w_sub, frame, _vertex_spacing(v_sub, f_sub))
    t = rng.uniform(0.0, len(SKIN_TONES) - 1)
    lo = int(min(math.floor(t), len(SKIN_TONES) - 2))
    skin = SKIN_TONES[lo] * (1 - (t - lo)) + SKIN_TONES[lo + 1] * (t - lo)
    skin = skin * rng.uniform(0.95, 1.05, 3)
    albedo, disp = _compose_surface(rng, v_sub, normals, fields, skin, frame)
    verts = v_sub + disp[:, None] * normals
    return Subject(index=index, betas=betas, skin_rgb=skin, verts_coarse=v_shaped, verts_smooth=v_sub,
                   verts=verts, faces=f_sub, weights=w_sub, albedo=albedo, displacement=disp,
                   labels=fields, frame=frame, side=side)


def _detail_fields(rng, v, normals, w, frame: HandFrame, spacing_v) -> dict:
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
        rel = v - J[j]
        s = rel @ frame.axis[j]
        q = rel - s[:, None] * frame.axis[j]
        r = np.maximum(np.linalg.norm(q, axis=1), 1e-9)
        cos_palmar = (q @ frame.palmar[j]) / r
        lateral = q @ np.cross(frame.axis[j], frame.palmar[j])
        return s, cos_palmar, lateral

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
            region = _smoothstep(0.35, 0.6, w[:, parent[j]] + w[:, j])
            palmar = _smoothstep(0.05, 0.55, cos_p)
            strength = rng.uniform(0.7, 1.0)
            spacing = 1.6 * MM * jitter(0.3)
            sigma = np.hypot(0.6 * MM * jitter(0.25), 0.6 * spacing_v)
            for k in range(lines):
                sk = centre + (k - (lines - 1) / 2) * spacing + rng.normal(0, 0.3 * MM)
                tilt = rng.normal(0.0, 0.08)  # creases are not exactly perpendicular to the bone
                crease = np.maximum(crease, strength * region * palmar *
                                    np.exp(-0.5 * ((s - sk - tilt * lateral) / sigma) ** 2))
        # Dorsal knuckle wrinkles over PIP and DIP (and MCP), short arcs.
        for j, count in ((a, 3), (b, 5), (c, 3)):
            if finger == "thumb" and j == a:
                continue
            s, cos_p, lateral = local(j)
            region = _smoothstep(0.35, 0.6, w[:, parent[j]] + w[:, j])
            dorsal = _smoothstep(0.3, 0.8, -cos_p)
            envelope = np.exp(-0.5 * (lateral / (3.5 * MM * jitter(0.2))) ** 2)
            spacing = 1.1 * MM * jitter(0.3)
            sigma = np.hypot(0.4 * MM * jitter(0.2), 0.5 * spacing_v)
            curvature = rng.uniform(20.0, 60.0)  # 1/m: arcs bulge towards the fingertip
            strength = rng.uniform(0.4, 0.8)
            for k in range(count):
                sk = (k - (count - 1) / 2) * spacing
                g = np.exp(-0.5 * ((s - sk - curvature * lateral ** 2) / sigma) ** 2)
                knuckle = np.maximum(knuckle, strength * region * dorsal * envelope * g)
        # Fingernail on the dorsal side of the distal phalanx.
        s, cos_p, lateral = local(c)
        sn = s / frame.bone_length[c]
        region = _smoothstep(0.3, 0.6, w[:, c])
        start = rng.uniform(0.26, 0.34)
        half_angle = math.radians(rng.uniform(48.0, 58.0) if finger != "thumb" else rng.uniform(52.0, 62.0))
        along = _smoothstep(start, start + 0.06, sn) * (1.0 - _smoothstep(1.0, 1.06, sn))
        across = _smoothstep(math.cos(half_angle + 0.15), math.cos(half_angle - 0.1), -cos_p)
        m = region * along * across
        nail = np.maximum(nail, m)
        lunula = np.maximum(lunula, m * (1.0 - _smoothstep(start + 0.06, start + 0.16, sn)))
        free_edge = np.maximum(free_edge, m * _smoothstep(0.93, 0.99, sn))
        nail_groove = np.maximum(nail_groove, 4.0 * m * (1.0 - m))

    # Palm lines, in palm-plane coordinates (x towards the middle MCP, y towards the thumb, unit = palm length).
    L = frame.bone_length[0]
    rel = v - J[0]
    xy = np.stack([rel @ frame.forward, rel @ frame.thumbward], 1) / L
    on_palm = _smoothstep(0.1, 0.45, normals @ frame.palm_normal) * _smoothstep(0.4, 0.7, w[:, 0] + w[:, 13])
    mcp = {f: np.array([(J[FINGER_JOINTS[f][0]] - J[0]) @ frame.forward,
                        (J[FINGER_JOINTS[f][0]] - J[0]) @ frame.thumbward]) / L for f in FINGERS}
    jit = lambda: rng.normal(0.0, 0.03, 2)  # noqa: E731
    ulnar = mcp["pinky"][1] - 0.12
    lines = [
        # heart line: ulnar edge below the little finger -> between index and middle
        (np.array([0.80, ulnar]) + jit(), np.array([0.70, 0.5 * (mcp["ring"][1] + mcp["middle"][1])]) + jit(),
         np.array([0.86, 0.5 * (mcp["index"][1] + mcp["middle"][1])]) + jit(), 1.0),
        # head line: radial edge between thumb and index -> across the palm
        (np.array([0.72, mcp["index"][1] + 0.08]) + jit(), np.array([0.55, mcp["middle"][1]]) + jit(),
         np.array([0.50, ulnar + 0.15]) + jit(), 1.0),
        # life line: around the thenar eminence towards the wrist
        (np.array([0.70, mcp["index"][1] + 0.07]) + jit(), np.array([0.40, mcp["middle"][1] + 0.02]) + jit(),
         np.array([0.08, 0.5 * (mcp["index"][1] + mcp["middle"][1])]) + jit(), 1.0),
    ]
    for _ in range(int(rng.integers(3, 8))):  # minor, subject-specific creases
        p0 = np.array([rng.uniform(0.2, 0.8), rng.uniform(ulnar, mcp["index"][1])])
        p2 = p0 + _normalize(rng.normal(size=2)) * rng.uniform(0.1, 0.3)
        lines.append((p0, 0.5 * (p0 + p2) + rng.normal(0, 0.04, 2), p2, rng.uniform(0.25, 0.5)))
    palm_lines = np.zeros(N)
    candidates = np.nonzero(on_palm > 0)[0]
    for p0, p1, p2, strength in lines:
        d = _dist_to_polyline(xy[candidates], _bezier(p0, p1, p2)) * L
        sigma = np.hypot(rng.uniform(0.55, 0.8) * MM, 0.6 * spacing_v[candidates])
        palm_lines[candidates] = np.maximum(palm_lines[candidates], strength * np.exp(-0.5 * (d / sigma) ** 2))
    palm_lines *= on_palm

    # Freckles / moles on the back of the hand.
    dorsal_side = _smoothstep(0.0, 0.4, -(normals @ frame.palm_normal))
    freckles = np.zeros(N)
    spots = rng.poisson(rng.uniform(2.0, 12.0))
    if spots:
        probs = dorsal_side / dorsal_side.sum()
        for i in rng.choice(N, size=spots, p=probs):
            radius = rng.uniform(0.5, 1.4) * MM
            d2 = ((v - v[i]) ** 2).sum(1)
            freckles = np.maximum(freckles, rng.uniform(0.4, 1.0) * np.exp(-0.5 * d2 / radius ** 2))
    return {"crease": crease, "knuckle": knuckle, "palm_lines": palm_lines, "nail": nail, "lunula": lunula,
            "free_edge": free_edge, "nail_groove": nail_groove, "freckles": freckles, "dorsal": dorsal_side}


def _compose_surface(rng, v, normals, f: dict, skin, frame: HandFrame):
    """Per-vertex albedo (N,3) in [0,1] and displacement (N,) metres from the detail fields."""
    N = len(v)
    palm_side = 1.0 - f["dorsal"]
    tone = skin[None] * (1.0 + 0.10 * palm_side[:, None]) + palm_side[:, None] * np.array([0.04, 0.0, -0.01])
    # Redness over the knuckles and on the fingertips (geometry-predictable), blotches and pores (not).
    red = np.zeros(N)
    for finger in FINGERS:
        a, b, c = FINGER_JOINTS[finger]
        for j in (b, c):
            red = np.maximum(red, np.exp(-0.5 * (np.linalg.norm(v - frame.joints[j], axis=1) / (5 * MM)) ** 2))
        k = FINGERS.index(finger)
        red = np.maximum(red, 0.8 * np.exp(-0.5 * (np.linalg.norm(v - frame.tips[k], axis=1) / (6 * MM)) ** 2))
    tone = tone * (1.0 + red[:, None] * np.array([0.04, -0.05, -0.05]) * rng.uniform(0.5, 1.5))
    blotch = _sum_of_sines(rng, v, 16, (6 * MM, 25 * MM))
    pores = _sum_of_sines(rng, v, 48, (0.5 * MM, 2.0 * MM))
    albedo = tone * (1.0 + 0.035 * blotch[:, None]) * (1.0 + rng.uniform(0.03, 0.06) * pores[:, None])
    crease_dark = rng.uniform(0.35, 0.5)
    albedo *= (1.0 - crease_dark * np.clip(f["crease"] + 0.8 * f["palm_lines"], 0, 1))[:, None]
    albedo *= (1.0 - rng.uniform(0.25, 0.4) * f["knuckle"])[:, None]
    mole = albedo * np.array([0.55, 0.47, 0.42]) * rng.uniform(0.8, 1.1)  # darker and browner
    albedo = albedo * (1 - f["freckles"][:, None]) + mole * f["freckles"][:, None]
    nail_rgb = np.array([0.86, 0.66, 0.64]) * rng.uniform(0.92, 1.05, 3)
    nail_rgb = 0.75 * nail_rgb + 0.25 * skin  # nails take some of the underlying tone
    nail_col = nail_rgb[None] * (1 - f["lunula"][:, None]) + np.array([0.93, 0.86, 0.84]) * f["lunula"][:, None]
    nail_col = nail_col * (1 - f["free_edge"][:, None]) + np.array([0.92, 0.88, 0.80]) * f["free_edge"][:, None]
    albedo = albedo * (1 - f["nail"][:, None]) + nail_col * f["nail"][:, None]
    albedo = np.clip(albedo, 0.02, 0.98)

    disp = (-rng.uniform(0.3, 0.5) * MM * f["crease"] - rng.uniform(0.2, 0.35) * MM * f["palm_lines"]
            - rng.uniform(0.1, 0.2) * MM * f["knuckle"] + rng.uniform(0.15, 0.3) * MM * f["nail"]
            - rng.uniform(0.2, 0.3) * MM * f["nail_groove"]
            + 0.03 * MM * _sum_of_sines(rng, v, 32, (0.5 * MM, 2.0 * MM)))
    return albedo.astype(np.float64), disp


def pose_subject(hand_model, subject: Subject, pose: torch.Tensor, trans: torch.Tensor,
                 levels: int = 3) -> torch.Tensor:
    """Ground-truth posed meshes ``(F, N, 3)`` (world, metres) for MANO ``pose (F,48)``, ``trans (F,3)``.

    Linear blend skinning of the detailed canonical mesh with the subdivided weights
    (``utils.geometry.lbs.pose_mesh``). When the hand model has pose blend shapes (real MANO; the procedural
    hand has none), its per-frame corrective offsets are carried to the subdivided mesh the way the
    skinning weights are (edge midpoints average their endpoints), so the GT agrees with
    ``HandModel.forward`` as closely as without them.
    """
    from utils.geometry.lbs import batch_rodrigues, pose_mesh

    verts = torch.as_tensor(subject.verts, dtype=torch.float32)
    weights = torch.as_tensor(subject.weights, dtype=torch.float32)
    shape = torch.as_tensor(subject.betas, dtype=torch.float32)
    posedirs = hand_model.posedirs.detach().float().cpu()
    if float(posedirs.abs().max()) > 0:
        from utils.geometry.mesh import loop_subdivide

        rotmats = batch_rodrigues((pose + hand_model.pose_mean.float().cpu()).reshape(len(pose), 16, 3))
        feature = (rotmats[:, 1:] - torch.eye(3)).reshape(len(pose), -1)  # (F, 135)
        offsets = torch.einsum("fp,vcp->vfc", feature, posedirs).reshape(posedirs.shape[0], -1)  # (778, 3F)
        _, _, offsets_sub = loop_subdivide(torch.as_tensor(subject.verts_coarse), hand_model.faces.cpu(), levels,
                                           weights=offsets.double())
        verts = verts[None] + offsets_sub.float().reshape(-1, len(pose), 3).permute(1, 0, 2)
    return pose_mesh(hand_model, verts, weights, pose, shape, trans).float()


# ----------------------------------------------------------------------------------------------
# Articulation
# ----------------------------------------------------------------------------------------------


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
    sig = {f"curl_{f}": _smooth_signal(rng, F_, 0.0, 0.8) for f in FINGERS}
    sig["fist"] = _smooth_signal(rng, F_, 0.0, 0.7)
    sig["spread"] = _smooth_signal(rng, F_, -0.3, 1.0)
    sig["pinch"] = _smooth_signal(rng, F_, -0.6, 1.0).clip(0.0, 1.0)
    sig["twist"] = _smooth_signal(rng, F_, -math.radians(70), math.radians(70))
    sig["wrist_flex"] = _smooth_signal(rng, F_, -math.radians(35), math.radians(35))
    sig["wrist_dev"] = _smooth_signal(rng, F_, -math.radians(15), math.radians(15))
    drift = np.stack([_smooth_signal(rng, F_, -0.015, 0.015) for _ in range(3)], 1)

    full = np.zeros((F_, 16, 3))
    flex_deg = {"mcp": 75.0, "pip": 95.0, "dip": 65.0}
    spread_deg = {"index": 12.0, "middle": 2.0, "ring": -8.0, "pinky": -16.0}
    opposition_axis = _normalize(np.cross(frame.thumbward, frame.palm_normal))
    for k in range(F_):
        pinch = sig["pinch"][k]
        for finger in FINGERS:
            a, b, c = FINGER_JOINTS[finger]
            curl = np.clip(0.65 * sig[f"curl_{finger}"][k] + 0.5 * sig["fist"][k], 0.0, 0.9)
            if finger == "thumb":
                curl_t = curl * 0.7
                full[k, a] = math.radians(20.0 * curl_t + 25.0 * pinch) * frame.flex_axis[a] \
                    + math.radians(35.0 * pinch + 10.0 * curl_t) * opposition_axis
                full[k, b] = math.radians(35.0 * curl_t + 20.0 * pinch) * frame.flex_axis[b]
                full[k, c] = math.radians(55.0 * curl_t + 25.0 * pinch) * frame.flex_axis[c]
                continue
            if finger == "index":
                curl = max(curl, 0.55 * pinch)
            full[k, a] = math.radians(flex_deg["mcp"] * curl) * frame.flex_axis[a] \
                + math.radians(spread_deg[finger] * sig["spread"][k] * (1 - curl)) * frame.spread_axis[a]
            full[k, b] = math.radians(flex_deg["pip"] * curl) * frame.flex_axis[b]
            full[k, c] = math.radians(flex_deg["dip"] * curl * rng.uniform(0.9, 1.0)) * frame.flex_axis[c]
    if base_rotation is None:
        yaw = rng.uniform(0, 2 * np.pi)
        target_forward = np.array([0.0, -1.0, 0.0])
        target_palm = np.array([math.cos(yaw), 0.0, math.sin(yaw)])
        src = np.stack([frame.forward, frame.palm_normal, np.cross(frame.forward, frame.palm_normal)], 1)
        dst = np.stack([target_forward, target_palm, np.cross(target_forward, target_palm)], 1)
        base_rotation = dst @ src.T
    wrist_flex_axis = _normalize(np.cross(frame.forward, frame.palm_normal))
    for k in range(F_):
        local = (Rotation.from_rotvec(sig["twist"][k] * frame.forward)
                 * Rotation.from_rotvec(sig["wrist_flex"][k] * wrist_flex_axis)
                 * Rotation.from_rotvec(sig["wrist_dev"][k] * frame.palm_normal))
        full[k, 0] = (Rotation.from_matrix(base_rotation) * local).as_rotvec()
    pose = full.reshape(F_, 48) - np.asarray(pose_mean, dtype=np.float64).reshape(1, 48)
    return pose, drift, {k: v.tolist() for k, v in sig.items()}


# ----------------------------------------------------------------------------------------------
# Cameras and lighting
# ----------------------------------------------------------------------------------------------


def _fibonacci_sphere(n):
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5 ** 0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], 1)


def _rotation_between(a, b):
    """Rotation matrix taking unit vector a to unit vector b (minimal angle)."""
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    if np.linalg.norm(v) < 1e-12:
        return np.eye(3)
    angle = math.atan2(np.linalg.norm(v), c)
    return _rotvec_to_matrix(_normalize(v) * angle)


def make_camera_rig(rng, points_world, num_views: int, raw_size, avoid_direction=None,
                    avoid_angle_deg: float = 40.0, fill=(0.55, 0.8), distance=(0.6, 0.9)):
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
    cand = _fibonacci_sphere(max(64, 8 * num_views)) @ _rotvec_to_matrix(_normalize(rng.normal(size=3))
                                                                       * rng.uniform(0, np.pi)).T
    if avoid_direction is not None:
        keep = cand @ _normalize(avoid_direction) < math.cos(math.radians(avoid_angle_deg))
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
        up = _rotvec_to_matrix(-d * roll) @ up
        R0, _ = look_at(eye.tolist(), centre.tolist(), up.tolist(), dtype=torch.float64)
        R0 = R0.numpy()
        x = (pts - eye) @ R0.T
        n = x[:, :2] / x[:, 2:3]
        span = np.maximum(n.max(0) - n.min(0), 1e-9)
        f = rng.uniform(*fill) * min(W / span[0], H / span[1])
        free = np.array([W, H]) - f * span
        offset_pix = rng.uniform(-0.45, 0.45, 2) * free
        mid = 0.5 * (n.max(0) + n.min(0))
        Q = _rotation_between(_normalize(np.array([mid[0], mid[1], 1.0])),
                              _normalize(np.array([offset_pix[0] / f, offset_pix[1] / f, 1.0])))
        R = Q @ R0
        K = np.array([[f, 0.0, W / 2.0], [0.0, f, H / 2.0], [0.0, 0.0, 1.0]])
        # Rotation distorts the projection slightly: shrink the focal length until everything fits.
        for _ in range(50):
            x = (pts - eye) @ R.T
            uv = x[:, :2] / x[:, 2:3] * K[0, 0] + K[:2, 2]
            if uv.min() >= 1.0 and uv[:, 0].max() <= W - 1.0 and uv[:, 1].max() <= H - 1.0 and x[:, 2].min() > 0.1:
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
    key = _normalize(rng.normal(size=3))
    out = np.zeros((num_views, 3, 9))
    for v in range(num_views):
        d = _normalize(key + rng.normal(0.0, 0.25, 3))
        out[v] = _directional_sh(rng.uniform(0.55, 0.7), rng.uniform(0.3, 0.45), d,
                                 second_order=rng.normal(0.0, 0.03, 5)) \
            * (rng.uniform(0.9, 1.1) * (1.0 + rng.uniform(-0.04, 0.04, 3)))[:, None]
    return _to_sh_convention(out)


def _directional_sh(ambient, strength, direction, second_order=None) -> np.ndarray:
    """(3, 9) *total* coefficients giving irradiance ``ambient + strength * (n . direction)``."""
    from utils.geometry.sh import A1C1, Y0

    d = _normalize(direction)
    c = np.zeros(9)
    c[0] = ambient / Y0
    # Y1 = -a1c1 n_y, Y2 = a1c1 n_z, Y3 = -a1c1 n_x.
    c[1], c[2], c[3] = -strength * d[1] / A1C1, strength * d[2] / A1C1, -strength * d[0] / A1C1
    if second_order is not None:
        c[4:] = second_order
    return np.repeat(c[None], 3, 0)


def _to_sh_convention(total) -> np.ndarray:
    """(V, 3, 9) total coefficients -> (V, 27) for ``utils.geometry.sh.sh_shade`` (which adds its ambient)."""
    from utils.geometry.sh import DEFAULT_AMBIENT

    out = np.array(total, dtype=np.float64)
    out[:, :, 0] -= DEFAULT_AMBIENT
    return out.reshape(len(out), 27)


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def render_views(verts_world: torch.Tensor, faces: torch.Tensor, albedo: torch.Tensor, K, R, t, raw_size,
                 sh_coeffs, supersample: int = 2, with_normals: bool = False, renderer=None,
                 views_per_pass: int = 4) -> dict:
    """Render a mesh from V cameras, supersampled and box-filtered.

    Args:
        verts_world: (N, 3) float32 world vertices, metres.
        faces: (F, 3) long.
        albedo: (N, 3) RGB in [0, 1].
        K, R, t: (V,3,3), (V,3,3), (V,3) tensors (raw image intrinsics).
        raw_size: ``(H, W)``.
        sh_coeffs: (V, 27) SH lighting per camera (world-space normals, ``utils.geometry.sh`` convention).
        supersample: integer factor.
        with_normals: also return camera-space normal maps.
        views_per_pass: cameras rasterised together (bounds memory; small batches are faster on CPU).

    Returns:
        dict: ``image (V,H,W,3)`` RGB in [0,1] (black background), ``coverage (V,H,W)`` fraction of
        covered subsamples, optionally ``normal_map (V,H,W,3)`` (camera space, unit where covered).
    """
    from utils.geometry.camera import Cameras
    from utils.geometry.mesh import vertex_normals
    from utils.render import get_renderer
    from utils.geometry.sh import sh_shade

    renderer = renderer or get_renderer("auto")
    H, W = raw_size
    s = int(supersample)
    scale = torch.tensor([[s, 0, 0], [0, s, 0], [0, 0, 1]], dtype=K.dtype, device=K.device)
    verts = verts_world[None]
    attrs = torch.cat([albedo.to(verts.dtype), vertex_normals(verts, faces)[0]], -1)
    pool = torch.nn.functional.avg_pool2d
    outputs = []
    for start in range(0, len(K), views_per_pass):
        sl = slice(start, start + views_per_pass)
        cams = Cameras(K=scale @ K[sl], R=R[sl], t=t[sl], image_size=(H * s, W * s))
        rast = renderer.rasterize(cams.to_clip(verts), faces, (H * s, W * s))
        pix = renderer.interpolate(attrs, rast, faces)
        covered = rast[..., 3] > 0
        n = torch.nn.functional.normalize(pix[..., 3:6], dim=-1, eps=1e-8)
        color = torch.zeros_like(pix[..., :3])
        # Shade covered samples only (the background is most of the image).
        b, y, x = torch.nonzero(covered, as_tuple=True)
        for v in range(len(cams)):
            sel = b == v
            irradiance = sh_shade(n[v, y[sel], x[sel]][None], sh_coeffs[start + v][None].to(n.dtype))[0]
            color[v, y[sel], x[sel]] = (pix[v, y[sel], x[sel], :3] * irradiance).clamp(0.0, 1.0)
        cov = covered.to(verts.dtype)
        out = {"image": pool(color.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1),
               "coverage": pool(cov[:, None], s)[:, 0]}
        if with_normals:
            n_cam = torch.einsum("vij,vhwj->vhwi", R[sl].to(n.dtype), n) * cov[..., None]
            n_cam = pool(n_cam.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1)
            covered_px = out["coverage"][..., None] > 0
            out["normal_map"] = torch.nn.functional.normalize(n_cam, dim=-1, eps=1e-8) * covered_px
        outputs.append(out)
    return {k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}


# ----------------------------------------------------------------------------------------------
# The generator
# ----------------------------------------------------------------------------------------------


def _camera_names(num_fit: int, num_heldout: int) -> list:
    return [f"cam{400101 + i}" for i in range(num_fit)] + [f"cam{400201 + i}" for i in range(num_heldout)]


def _interhand_joints(joints16, verts778, tip_vertex):
    """(21, 3) joints in InterHand order (thumb4..1, index4..1, middle, ring, pinky, wrist)."""
    from datasets.interhand import INTERHAND_FROM_MANO

    out = []
    for entry in INTERHAND_FROM_MANO:
        out.append(verts778[tip_vertex[entry[1]]] if isinstance(entry, tuple) else joints16[entry])
    return np.stack(out)


def generate(config: SyntheticConfig, out_dir, progress: bool = True, overwrite: bool = False,
             log=print) -> dict:
    """Generate every subject and sequence of ``config`` under ``out_dir``; returns the metadata dict.

    Writes ``images/``, ``annotations/``, ``gt_meshes/``, ``gt_masks/`` and ``synthetic_meta.json``.
    Refuses a non-empty ``out_dir`` unless ``overwrite`` (files are then replaced, nothing deleted).
    """
    from datasets.interhand import InterHandWriter, gt_mesh_path
    from utils.image_io import write_image
    from utils.geometry.mano import HandModel, resolve_hand_model_path
    from utils.render import get_renderer

    out_dir = os.fspath(out_dir)
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir}: not empty; pass overwrite=True (--overwrite) to write into it")
    os.makedirs(out_dir, exist_ok=True)
    t_start = time.time()
    side = config.hand_side
    mano_file = resolve_hand_model_path(config.mano_dir, side)
    hand = HandModel.from_file(mano_file, side=side)
    pose_mean = hand.pose_mean.detach().double().cpu().numpy().reshape(48)
    renderer = get_renderer("auto")
    H, W = config.raw_size
    seeds = np.random.SeedSequence(config.seed).spawn(config.num_subjects)
    writers = {}
    meta = {"generator": "datasets.synthetic", "config": asdict(config), "hand_model": mano_file,
            "subjects": [], "num_images": 0}
    plan = config.subject_plan()
    bar = _progress(sum(_num_renders(config, role) for _, _, role in plan), progress)
    for index, (split, capture, role) in enumerate(plan):
        rng = np.random.default_rng(seeds[index])
        subject = make_subject(hand, rng, index=index, levels=config.subdivision_levels)
        recon = role == "reconstruction"
        seq_name = RECON_SEQUENCE if recon else SR_SEQUENCE
        num_frames = 2 * config.num_frames if recon else config.num_frames
        num_heldout_views = config.num_heldout_views if recon else 0
        pose, drift, signals = make_articulation(rng, subject.frame, num_frames, pose_mean)
        shape = np.repeat(subject.betas[None], num_frames, 0)
        trans = drift - subject.frame.joints[0][None]  # wrist near the world origin
        pose_t = torch.as_tensor(pose, dtype=torch.float32)
        shape_t = torch.as_tensor(shape, dtype=torch.float32)
        trans_t = torch.as_tensor(trans, dtype=torch.float32)
        with torch.no_grad():
            coarse, joints = hand.forward(pose_t, shape_t, trans_t)
            detailed = pose_subject(hand, subject, pose_t, trans_t, levels=config.subdivision_levels)
        coarse, joints, detailed = coarse.float(), joints.float(), detailed.float()
        # Cameras: away from the forearm (the wrist side of the mean pose).
        forearm = (joints[:, 0] - joints[:, 4]).mean(0).numpy()
        names = _camera_names(config.num_views, num_heldout_views)
        K, R, t, _ = make_camera_rig(rng, detailed.reshape(-1, 3).numpy()[::7], len(names), (H, W),
                                     avoid_direction=forearm)
        order = rng.permutation(len(names))  # held-out cameras are interleaved among the fitting ones
        K, R, t = K[order], R[order], t[order]
        sh = make_sh_lighting(rng, len(names))
        frame_ids = [10000 + 6 * k for k in range(num_frames)]

        writer = writers.setdefault(split, InterHandWriter(out_dir, split))
        for v, name in enumerate(names):
            writer.add_camera(capture, name, K[v], R[v], t[v])
        K_t = torch.as_tensor(K, dtype=torch.float32)
        R_t = torch.as_tensor(R, dtype=torch.float32)
        t_t = torch.as_tensor(t, dtype=torch.float32)
        sh_t = torch.as_tensor(sh, dtype=torch.float32)
        faces_t = torch.as_tensor(subject.faces, dtype=torch.long)
        albedo_t = torch.as_tensor(subject.albedo, dtype=torch.float32)
        bbox_uv, _ = _project_np(coarse.numpy(), K, R, t)
        for k, frame_id in enumerate(frame_ids):
            writer.add_mano(capture, frame_id, side, pose[k], shape[k], trans[k])
            writer.add_joints(capture, frame_id, side,
                              _interhand_joints(joints[k].numpy(), coarse[k].numpy(), subject.frame.tip_vertex))
            with torch.no_grad():
                rendered = render_views(detailed[k], faces_t, albedo_t, K_t, R_t, t_t, (H, W), sh_t,
                                        supersample=config.supersample, with_normals=config.save_gt_normals,
                                        renderer=renderer)
            for v, name in enumerate(names):
                path = writer.image_path(capture, seq_name, name, frame_id)
                write_image(path, rendered["image"][v].numpy())
                gt_dir = (split, capture, seq_name, name)
                mask_path = os.path.join(out_dir, "gt_masks", *gt_dir, f"mask{frame_id}.png")
                write_image(mask_path, (rendered["coverage"][v].numpy() >= 0.5).astype(np.uint8)[..., None]
                            .repeat(3, 2) * 255)
                if config.save_gt_normals:
                    npath = os.path.join(out_dir, "gt_normals", *gt_dir, f"normal{frame_id}.png")
                    write_image(npath, 0.5 * (rendered["normal_map"][v].numpy() + 1.0)
                                * (rendered["coverage"][v].numpy()[..., None] >= 0.5))
                uv = bbox_uv[v, k]
                lo, hi = uv.min(0), uv.max(0)
                writer.add_image(capture, seq_name, name, frame_id, W, H, subject=index,
                                 bbox=[lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]], hand_type=side)
                meta["num_images"] += 1
            bar.update(len(names))
        gt_path = gt_mesh_path(out_dir, split, capture, seq_name)
        os.makedirs(os.path.dirname(gt_path), exist_ok=True)
        np.savez(gt_path, frame_ids=np.asarray(frame_ids, dtype=np.int64), faces=subject.faces.astype(np.int32),
                 verts=detailed.numpy().astype(np.float32),
                 verts_canonical=subject.verts.astype(np.float32),
                 verts_canonical_smooth=subject.verts_smooth.astype(np.float32),
                 albedo=subject.albedo.astype(np.float32), displacement=subject.displacement.astype(np.float32),
                 weights=subject.weights.astype(np.float32), betas=subject.betas.astype(np.float32),
                 mano_pose=pose.astype(np.float32), mano_shape=shape.astype(np.float32),
                 mano_trans=trans.astype(np.float32), tip_vertex=subject.frame.tip_vertex,
                 **{f"label_{k}": v.astype(np.float16) for k, v in subject.labels.items()})
        entry = {"index": index, "role": role, "split": split, "capture": capture, "sequence": seq_name,
                 "hand_side": side, "betas": subject.betas.tolist(), "skin_rgb": subject.skin_rgb.tolist(),
                 "frame_ids": frame_ids, "cameras": names, "K": K.tolist(), "R": R.tolist(), "t": t.tolist(),
                 "sh_coeffs": sh.tolist(),
                 "gt_meshes": os.path.relpath(gt_path, out_dir), "signals": signals}
        if recon:
            entry["fit_frame_ids"] = frame_ids[::2]
            entry["heldout_frame_ids"] = frame_ids[1::2]
            entry["fit_cameras"] = names[: config.num_views]
            entry["heldout_cameras"] = names[config.num_views:]
        meta["subjects"].append(entry)
        log(f"[synthetic] {split}/{capture}/{seq_name}: {role}, {num_frames} frames x {len(names)} views "
            f"({time.time() - t_start:.1f} s)")
    bar.close()
    for writer in writers.values():
        writer.write()
    meta["seconds"] = round(time.time() - t_start, 2)
    meta["bytes"] = _disk_usage(out_dir)
    with open(os.path.join(out_dir, "synthetic_meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def _num_renders(config: SyntheticConfig, role: str) -> int:
    if role == "reconstruction":
        return 2 * config.num_frames * (config.num_views + config.num_heldout_views)
    return config.num_frames * config.num_views


def _project_np(verts, K, R, t):
    """verts (F,N,3) -> uv (V,F,N,2), depth (V,F,N)."""
    x = np.einsum("vij,fnj->vfni", R, verts) + t[:, None, None]
    uv = x[..., :2] / x[..., 2:3]
    uv = uv * np.stack([K[:, 0, 0], K[:, 1, 1]], 1)[:, None, None] + K[:, None, None, :2, 2]
    return uv, x[..., 2]


def _disk_usage(root) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _progress(total, enabled):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, unit="img", desc="rendering")


# ----------------------------------------------------------------------------------------------
# Visualisation
# ----------------------------------------------------------------------------------------------


def save_visualisation(data_path, path, hr_size: int = 128, num_views: int = 4, num_frames: int = 2,
                       mano_dir=None) -> str:
    """Picture of the reconstruction sequence as the reader sees it, plus detail close-ups.

    Rows: HR crops (``num_views`` views x ``num_frames`` frames), their MANO masks over the crop,
    camera-space MANO normal maps; last row: close-ups of the GT mesh (palm, back, fingertips)
    rendered at 256x256 with the subject's albedo.
    """
    from datasets.interhand import read_interhand_sequence
    from utils.image_io import make_grid, write_image

    seq = read_interhand_sequence(data_path, "test", "Capture0", RECON_SEQUENCE, mano_dir=mano_dir)
    crops, masks, normals = [], [], []
    frames = np.linspace(0, seq.num_frames - 1, num_frames).round().astype(int)
    views = np.linspace(0, seq.num_views - 1, num_views).round().astype(int)
    for f in frames:
        for v in views:
            s = seq.sample(int(f), int(v), size=hr_size)
            img = s["image"].permute(1, 2, 0).numpy()
            crops.append(img)
            m = s["mask"][0].numpy()[..., None]
            masks.append(img * (0.35 + 0.65 * m) + (1 - m) * np.array([0.0, 0.0, 0.25]))
            normals.append((0.5 * (s["normal_map"].permute(1, 2, 0).numpy() + 1.0)) * m)
    n = len(crops)
    close = _closeups(data_path, size=hr_size * 2)
    up = lambda im: np.kron(im, np.ones((2, 2, 1)))  # noqa: E731
    tiles = [up(c) for c in crops] + [up(c) for c in masks] + [up(c) for c in normals] + close
    labels = ([f"f{seq.frame_ids[f]} {seq.cameras.names[v]}" for f in frames for v in views]
              + ["MANO mask"] * n + ["MANO normals (cam)"] * n + ["GT close-up"] * len(close))
    grid = make_grid(tiles, labels=labels, ncols=n)
    write_image(path, grid)
    return os.fspath(path)


def _closeups(data_path, size=256, renderer=None):
    """Close-ups of the reconstruction subject's GT mesh in its first frame: palm, back, index fingertip."""
    from datasets.interhand import gt_mesh_path
    from utils.geometry.camera import look_at
    from utils.geometry.mesh import vertex_normals

    with np.load(gt_mesh_path(data_path, "test", "Capture0", RECON_SEQUENCE)) as data:
        verts = torch.as_tensor(data["verts"][0], dtype=torch.float32)
        faces = torch.as_tensor(data["faces"], dtype=torch.long)
        albedo = torch.as_tensor(data["albedo"], dtype=torch.float32)
        nail = torch.as_tensor(data["label_nail"].astype(np.float32))
        palm = 1.0 - torch.as_tensor(data["label_dorsal"].astype(np.float32))
        tip = int(data["tip_vertex"][FINGERS.index("index")])
    normals = vertex_normals(verts[None], faces)[0]
    centre = verts.mean(0)
    palm_dir = torch.nn.functional.normalize((normals * (palm > 0.9)[:, None]).sum(0), dim=0)
    near_tip = ((verts - verts[tip]).norm(dim=1) < 0.015) & (nail > 0.5)
    nail_dir = torch.nn.functional.normalize((normals * near_tip[:, None]).sum(0), dim=0)
    views = [(centre + 0.4 * palm_dir, centre, 2.0 * size), (centre - 0.4 * palm_dir, centre, 2.0 * size),
             (verts[tip] + 0.12 * nail_dir, verts[tip] - 0.008 * nail_dir, 3.5 * size)]
    out = []
    for eye, target, focal in views:
        d = torch.nn.functional.normalize(eye - target, dim=0)
        up = [0.0, -1.0, 0.0] if abs(float(d[1])) < 0.9 else [0.0, 0.0, 1.0]
        R, t = look_at(eye.tolist(), target.tolist(), up)
        K = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]])
        # Headlight-ish lighting: ambient plus a light from the camera.
        light = _to_sh_convention(_directional_sh(0.55, 0.45, d.numpy())[None])
        light = torch.as_tensor(light, dtype=torch.float32)
        img = render_views(verts, faces, albedo, K[None], R[None], t[None], (size, size), light,
                           supersample=2, renderer=renderer)["image"][0]
        out.append(img.numpy())
    return out
