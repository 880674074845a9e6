"""Soft tissue and pose-dependent skin deformation: what takes a subject's surface out of MANO's space.

Two kinds of smooth offsets along the canonical (rest-pose, undisplaced) normal, both built from the
skeleton frame (:class:`~datasets.synthetic.skeleton.HandFrame`) and the skinning weights:

- :func:`soft_tissue` -- a static per-subject field (1-4 mm peaks): finger girth and taper, static
  knuckle bulges, fingertip pads, thenar and hypothenar eminences, palm thickness, raised nail plates
  and a low-frequency irregularity. Every peak amplitude is drawn per subject from
  :data:`TISSUE_RANGES` (mm).
- :class:`PoseDeformation` -- offsets that grow with the joint angles and that linear blend skinning
  does not give: dorsal skin stretching into a bulge over a flexed joint, palmar skin folding (two
  bulges either side of a deepening crease), and the thenar eminence bulging as the thumb opposes.
  Each is a per-subject spatial field times an activation of one joint angle (:data:`POSE_RANGES`).

The formulas (``a(theta) = 1 - cos(max(theta, 0))``, the profiles and their widths) are written out in
docs/data.md, section "Synthetic subjects v2". All draws come from the generator given (the generator
gives the subject-v2 stream its own child seed, so the v1 draws are untouched).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from datasets.synthetic._np import normalize, smoothstep, sum_of_sines
from datasets.synthetic.skeleton import FINGER_JOINTS, FINGERS, MANO_PARENTS, MM, HandFrame, finger_local

# Peak amplitudes (mm) of the static soft-tissue components, drawn uniformly per subject (per finger
# or per joint where that applies). Positive = outwards along the normal.
TISSUE_RANGES = {
    "girth": (-1.0, 2.5),  # per finger, uniform over the finger
    "taper": (-2.5, 0.0),  # per finger, tip minus base (negative: thinner towards the tip)
    "knuckle": (0.8, 1.8),  # per MCP/PIP joint, dorsal bump
    "pad": (1.0, 3.0),  # per finger, palmar fingertip pad
    "thenar": (2.0, 4.0),  # palmar bulge over the thumb metacarpal
    "hypothenar": (1.5, 3.0),  # palmar bulge along the ulnar edge of the palm
    "palm_palmar": (-0.5, 2.5),  # palm thickness, palmar side
    "palm_dorsal": (-0.5, 1.0),  # palm thickness, dorsal side
    "nail": (0.5, 1.0),  # nail plate raised above the surrounding skin
    "irregular": (0.4, 0.8),  # standard deviation of a 15-50 mm wavelength random field
}

# Pose-dependent components (mm at a(theta) = 1, i.e. 90 degrees of flexion; 45 degrees of opposition
# for the thenar bulge), drawn per joint / subject.
POSE_RANGES = {
    "dorsal_bulge": (1.0, 2.0),  # per finger joint, dorsal side over the joint
    "palmar_bulge": (0.8, 1.6),  # per finger joint, two bulges either side of the palmar crease
    "palmar_fold": (0.5, 1.0),  # per finger joint, the crease between them deepens
    "thenar_bulge": (1.5, 3.0),  # thumb opposition
}
THENAR_REF_ANGLE = math.radians(45.0)


def _segment_distance(v, a, b):
    ab = b - a
    t = np.clip((v - a) @ ab / max(float(ab @ ab), 1e-18), 0.0, 1.0)
    return np.linalg.norm(v - (a + t[:, None] * ab), axis=1)


def _gauss(x, sigma):
    return np.exp(-0.5 * (x / sigma) ** 2)


def soft_tissue(rng, v, normals, w, frame: HandFrame, nail) -> tuple:
    """Static soft-tissue offsets of a canonical subject.

    Args:
        rng: numpy Generator (the subject's v2 stream).
        v: (N, 3) canonical smooth (subdivided, undisplaced) vertices, metres.
        normals: (N, 3) their unit normals.
        w: (N, 16) skinning weights.
        frame: the subject's :class:`HandFrame`.
        nail: (N,) nail label in [0, 1] (``detail_fields``).
    Returns:
        ``offset (N,)`` metres along the normal, ``parts`` {component: (N,) metres} (their sum is
        ``offset``) and ``params`` {component: drawn peak amplitudes in mm} for the metadata.
    """
    U = lambda key, size=None: rng.uniform(*TISSUE_RANGES[key], size)  # noqa: E731  (mm)
    J = frame.joints
    N = len(v)
    parts = {
        k: np.zeros(N)
        for k in ("girth", "knuckle", "pad", "thenar", "hypothenar", "palm", "nail", "irregular")
    }
    params = {}
    # Fingers: girth + linear taper over the finger's skinning share, pads, static knuckles.
    girth, taper, pad = U("girth", 5), U("taper", 5), U("pad", 5)
    knuckle = U("knuckle", (5, 2))
    for k, finger in enumerate(FINGERS):
        a, b, c = FINGER_JOINTS[finger]
        share = w[:, a] + w[:, b] + w[:, c]
        along = normalize(frame.tips[k] - J[a])
        length = float(np.linalg.norm(frame.tips[k] - J[a]))
        u = np.clip((v - J[a]) @ along / length, 0.0, 1.0)
        parts["girth"] += MM * share * (girth[k] + taper[k] * u)
        s, cos_p, _ = finger_local(v, frame, c)
        sn = s / frame.bone_length[c]
        parts["pad"] += (
            MM
            * pad[k]
            * smoothstep(0.3, 0.7, w[:, c])
            * smoothstep(0.0, 0.6, cos_p)
            * _gauss(sn - 0.55, 0.25)
        )
        for i, j in enumerate((a, b)):
            if finger == "thumb" and j == a:
                continue  # the thumb's CMC sits inside the thenar eminence
            s, cos_p, lateral = finger_local(v, frame, j)
            region = smoothstep(0.2, 0.5, w[:, j] + w[:, MANO_PARENTS[j]])
            parts["knuckle"] += (
                MM
                * knuckle[k, i]
                * region
                * smoothstep(0.2, 0.8, -cos_p)
                * _gauss(s, 5 * MM)
                * _gauss(lateral, 7 * MM)
            )
    params.update(girth=girth.tolist(), taper=taper.tolist(), pad=pad.tolist(), knuckle=knuckle.tolist())

    # Palm: eminences (distance to a line segment, palmar side only) and thickness.
    palm_side = smoothstep(0.05, 0.5, normals @ frame.palm_normal)
    thumb_side = normalize(frame.palm_normal + 0.6 * frame.thumbward)
    thenar = U("thenar")
    parts["thenar"] = (
        MM
        * thenar
        * smoothstep(0.0, 0.5, normals @ thumb_side)
        * _gauss(
            _segment_distance(v, J[13] + 0.15 * (J[14] - J[13]), J[13] + 0.85 * (J[14] - J[13])), 11 * MM
        )
        * smoothstep(0.3, 0.6, w[:, 0] + w[:, 13] + w[:, 14])
    )
    hypo = U("hypothenar")
    ulnar = -frame.thumbward * 9 * MM
    parts["hypothenar"] = (
        MM
        * hypo
        * palm_side
        * smoothstep(0.5, 0.8, w[:, 0])
        * _gauss(
            _segment_distance(v, J[0] + 0.2 * (J[7] - J[0]) + ulnar, J[0] + 0.75 * (J[7] - J[0]) + ulnar),
            10 * MM,
        )
    )
    palm_palmar, palm_dorsal = U("palm_palmar"), U("palm_dorsal")
    palm = smoothstep(0.4, 0.8, w[:, 0])
    parts["palm"] = (
        MM
        * palm
        * (palm_palmar * palm_side + palm_dorsal * smoothstep(0.05, 0.5, -(normals @ frame.palm_normal)))
    )
    nail_raise = U("nail")
    parts["nail"] = MM * nail_raise * nail
    irregular = U("irregular")
    parts["irregular"] = MM * irregular * sum_of_sines(rng, v, 12, (15 * MM, 50 * MM))
    params.update(
        thenar=thenar,
        hypothenar=hypo,
        palm_palmar=palm_palmar,
        palm_dorsal=palm_dorsal,
        nail=nail_raise,
        irregular=irregular,
    )
    offset = sum(parts.values())
    return (
        offset,
        parts,
        {
            k: (np.round(v, 4).tolist() if isinstance(v, list) else round(float(v), 4))
            for k, v in params.items()
        },
    )


@dataclass
class PoseDeformation:
    """Pose-dependent offsets of one subject: spatial fields times joint-angle activations.

    ``joint_fields (N, 15)``: metres along the canonical normal at full activation of finger joint
    ``j + 1`` (MANO order; the dorsal bulge plus the palmar bulges and fold of that joint);
    ``thenar_field (N,)``: metres at full thumb opposition; ``flex_axis (15, 3)`` the joints' flexion
    axes, ``opposition_axis (3,)`` the thumb CMC's opposition axis (canonical frame, as
    :func:`datasets.synthetic.motion.make_articulation` builds the motion); ``normals (N, 3)``.
    """

    joint_fields: np.ndarray
    thenar_field: np.ndarray
    flex_axis: np.ndarray
    opposition_axis: np.ndarray
    normals: np.ndarray
    params: dict

    def activations(self, full_rotvec) -> tuple:
        """``a (F, 15)`` and ``a_thenar (F,)`` for full joint rotations ``(F, 16, 3)`` (pose + pose mean).

        ``theta_j = r_j . flex_axis_j`` (the flexion component of joint j's axis-angle), ``a =
        1 - cos(max(theta, 0))`` (0 at rest and for extension, 1 at 90 degrees); thumb opposition
        ``phi = r_13 . opposition_axis``, ``a_thenar = (1 - cos(max(phi, 0))) / (1 - cos 45 deg)``.
        """
        r = np.asarray(full_rotvec, dtype=np.float64)
        theta = np.einsum("fjc,jc->fj", r[:, 1:], self.flex_axis)
        a = 1.0 - np.cos(np.clip(theta, 0.0, math.pi))
        phi = r[:, 13] @ self.opposition_axis
        a_thenar = (1.0 - np.cos(np.clip(phi, 0.0, math.pi))) / (1.0 - math.cos(THENAR_REF_ANGLE))
        return a, a_thenar

    def offsets(self, full_rotvec) -> np.ndarray:
        """(F, N) metres along the canonical normal for full joint rotations ``(F, 16, 3)``."""
        a, a_thenar = self.activations(full_rotvec)
        return a @ self.joint_fields.T + a_thenar[:, None] * self.thenar_field[None]


def pose_deformation(rng, v, normals, w, frame: HandFrame) -> PoseDeformation:
    """Per-subject pose-dependent fields (see :class:`PoseDeformation` and docs/data.md).

    Per finger joint ``j`` with along-bone coordinate ``s`` (0 at the joint, towards the tip), dorsal
    weight ``D = smoothstep(0.2, 0.8, -cos_palmar)`` and palmar weight ``P = smoothstep(0.2, 0.8,
    cos_palmar)``, within the joint's skinning region:

    ``field_j = A_d D g(s, 5 mm) g(lat, 7 mm) + P [A_b (g(s - 4 mm, 2.5 mm) + g(s + 4 mm, 2.5 mm)) - A_f g(s, 1.5 mm)]``

    with ``g(x, sigma) = exp(-x^2 / 2 sigma^2)``. Thenar: ``A_t`` times a blob over the thumb
    metacarpal (palmar / thumbward side, 12 mm).
    """
    J = frame.joints
    N = len(v)
    fields = np.zeros((N, 15))
    U = lambda key, size=None: rng.uniform(*POSE_RANGES[key], size)  # noqa: E731  (mm)
    amp_d, amp_b, amp_f = U("dorsal_bulge", 15), U("palmar_bulge", 15), U("palmar_fold", 15)
    for finger in FINGERS:
        for j in FINGER_JOINTS[finger]:
            if j == 13:
                continue  # the thumb's CMC moves the thenar eminence (below), not a knuckle
            s, cos_p, lateral = finger_local(v, frame, j)
            region = smoothstep(0.2, 0.5, w[:, j] + w[:, MANO_PARENTS[j]])
            dorsal = smoothstep(0.2, 0.8, -cos_p)
            palmar = smoothstep(0.2, 0.8, cos_p)
            i = j - 1
            fields[:, i] = (
                MM
                * region
                * (
                    amp_d[i] * dorsal * _gauss(s, 5 * MM) * _gauss(lateral, 7 * MM)
                    + palmar
                    * (
                        amp_b[i] * (_gauss(s - 4 * MM, 2.5 * MM) + _gauss(s + 4 * MM, 2.5 * MM))
                        - amp_f[i] * _gauss(s, 1.5 * MM)
                    )
                )
            )
    thumb_side = normalize(frame.palm_normal + 0.6 * frame.thumbward)
    amp_t = U("thenar_bulge")
    thenar = (
        MM
        * amp_t
        * smoothstep(0.0, 0.5, normals @ thumb_side)
        * _gauss(_segment_distance(v, J[13] + 0.2 * (J[14] - J[13]), J[13] + 0.8 * (J[14] - J[13])), 12 * MM)
        * smoothstep(0.3, 0.6, w[:, 0] + w[:, 13] + w[:, 14])
    )
    opposition_axis = normalize(np.cross(frame.thumbward, frame.palm_normal))
    params = {
        "dorsal_bulge": np.round(amp_d, 4).tolist(),
        "palmar_bulge": np.round(amp_b, 4).tolist(),
        "palmar_fold": np.round(amp_f, 4).tolist(),
        "thenar_bulge": round(float(amp_t), 4),
    }
    return PoseDeformation(
        joint_fields=fields,
        thenar_field=thenar,
        flex_axis=frame.flex_axis[1:].copy(),
        opposition_axis=opposition_axis,
        normals=normals,
        params=params,
    )
