"""Synthetic multi-view hand captures with high-frequency detail and ground-truth meshes.

A *subject* is a hand model (the shipped procedural hand, or real MANO files) with its own shape
(betas), skin tone and a detailed surface on the 3x Loop-subdivided mesh (49,281 vertices for MANO
topology): creases, knuckle wrinkles, palm lines, nails, freckles, skin texture; albedo per vertex,
grooves as small displacements along the normal. A *sequence* poses the subject over F frames with
a smooth articulation, sees it from V cameras spread over the sphere and lights each camera with
its own 2nd-order spherical harmonics. Images are rendered supersampled and box-filtered, black
background, and written as JPEG in the InterHand2.6M layout with the four annotation JSONs, so
:mod:`datasets.interhand` reads them like the real data; ground-truth meshes, masks (and normal
maps) are written beside the tree.

Subjects v2 (the default, ``surface="v2"``) leave MANO's space: per-subject soft tissue (1-4 mm:
finger girth and taper, knuckles, fingertip pads, thenar/hypothenar, palm thickness, raised nails)
and pose-dependent deformation (dorsal knuckle bulges and palmar folds growing with flexion, a thenar
bulge with thumb opposition) applied before linear blend skinning. The MANO parameters written to
``MANO_NeuralAnnot.json`` are, by default (``annotation="fit"``), fitted to noisy keypoints of the
truth (as InterHand's are fits), so the annotated MANO mesh is millimetres from the truth;
``annotation="exact"`` writes the parameters that posed the subject, and with ``surface="mano"`` the
generator writes the v1 data (the subdivided MANO mesh plus detail, posed by plain LBS).

Everything is deterministic given the seed (numpy ``SeedSequence`` per subject; the v1 draws happen
in a fixed order: subject, articulation, cameras, lighting; soft tissue and annotation noise come
from two child streams). See docs/data.md for the layout, splits, presets and the v2 formulas.

What lives here, in dependency order:

- ``_np``: small numpy helpers (normalise, smoothstep, random fields, mesh normals and spacing).
- ``skeleton``: MANO joint constants and :class:`HandFrame` (directions derived from the skeleton).
- ``detail``: detail fields, skin tone, albedo and displacement of a subject's canonical surface.
- ``tissue``: soft-tissue fields and :class:`PoseDeformation` (pose-dependent offsets).
- ``subject``: :class:`Subject` and :func:`make_subject` (shape + subdivided, detailed canonical mesh).
- ``posing``: :func:`pose_subject` (ground-truth posed meshes for MANO parameters).
- ``motion``: :func:`make_articulation` (smooth MANO pose sequences).
- ``annotate``: MANO annotations fitted to noisy keypoints, input-MANO-to-truth distances.
- ``rig``: :func:`make_camera_rig` and :func:`make_sh_lighting`.
- ``render``: :func:`render_views` (supersampled SH-shaded rendering).
- ``config``: :class:`SyntheticConfig`, :data:`PRESETS`, the sequence names.
- ``generate``: :func:`generate` (the whole capture set, written to disk).
- ``visualise``: :func:`save_visualisation` (the ``--save_vis`` picture).

Imports allowed: ``utils.geometry``, ``utils.metrics``, ``utils.render``, ``utils.image_io``,
``utils.checkpoint``, ``utils.errors`` and ``datasets.interhand``; besides numpy, torch and scipy (inside functions).
``utils.geometry`` includes ``mano_fit``; :mod:`datasets.interhand` (the writer/reader) is imported inside
functions. A module imports only the modules listed above it; nothing here imports ``models`` or
``trainers``, and importing the package loads no file.
"""

from datasets.synthetic.annotate import ANNOTATIONS, annotate
from datasets.synthetic.config import PRESETS, RECON_SEQUENCE, SR_SEQUENCE, SyntheticConfig
from datasets.synthetic.generate import generate
from datasets.synthetic.motion import make_articulation
from datasets.synthetic.posing import pose_subject
from datasets.synthetic.render import render_views
from datasets.synthetic.rig import make_camera_rig, make_sh_lighting
from datasets.synthetic.skeleton import FINGER_JOINTS, FINGERS, MANO_PARENTS, MM, HandFrame, hand_frame
from datasets.synthetic.subject import SURFACES, Subject, make_subject
from datasets.synthetic.tissue import POSE_RANGES, TISSUE_RANGES, PoseDeformation
from datasets.synthetic.visualise import save_visualisation

__all__ = [
    "ANNOTATIONS",
    "POSE_RANGES",
    "PoseDeformation",
    "SURFACES",
    "TISSUE_RANGES",
    "annotate",
    "FINGERS",
    "FINGER_JOINTS",
    "HandFrame",
    "MANO_PARENTS",
    "MM",
    "PRESETS",
    "RECON_SEQUENCE",
    "SR_SEQUENCE",
    "Subject",
    "SyntheticConfig",
    "generate",
    "hand_frame",
    "make_articulation",
    "make_camera_rig",
    "make_sh_lighting",
    "make_subject",
    "pose_subject",
    "render_views",
    "save_visualisation",
]
