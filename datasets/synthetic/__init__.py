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

The MANO parameters written to ``MANO_NeuralAnnot.json`` are the ones that posed the subject:
``HandModel.forward(pose, shape, trans)`` gives the coarse (778-vertex) hand; the ground truth is
the same pose applied by linear blend skinning (``utils.geometry.lbs.pose_mesh``, no pose blend
shapes, as the XHand/SRHand template) to the detailed subdivided mesh.

Everything is deterministic given the seed (numpy ``SeedSequence`` per subject; the draws happen in
a fixed order: subject, articulation, cameras, lighting). See docs/data.md for the layout, splits
and presets.

What lives here, in dependency order:

- ``_np``: small numpy helpers (normalise, smoothstep, random fields, mesh normals and spacing).
- ``skeleton``: MANO joint constants and :class:`HandFrame` (directions derived from the skeleton).
- ``detail``: detail fields, skin tone, albedo and displacement of a subject's canonical surface.
- ``subject``: :class:`Subject` and :func:`make_subject` (shape + subdivided, detailed canonical mesh).
- ``posing``: :func:`pose_subject` (ground-truth posed meshes for MANO parameters).
- ``motion``: :func:`make_articulation` (smooth MANO pose sequences).
- ``rig``: :func:`make_camera_rig` and :func:`make_sh_lighting`.
- ``render``: :func:`render_views` (supersampled SH-shaded rendering).
- ``config``: :class:`SyntheticConfig`, :data:`PRESETS`, the sequence names.
- ``generate``: :func:`generate` (the whole capture set, written to disk).
- ``visualise``: :func:`save_visualisation` (the ``--save_vis`` picture).

Imports allowed: numpy, torch, scipy (inside functions), ``utils`` (``utils.geometry``,
``utils.render``, ``utils.image_io``) and :mod:`datasets.interhand` (writer/reader, inside
functions). A module imports only the modules listed above it; nothing here imports ``models`` or
``trainers``, and importing the package loads no file.
"""

from datasets.synthetic.config import PRESETS, RECON_SEQUENCE, SR_SEQUENCE, SyntheticConfig
from datasets.synthetic.generate import generate
from datasets.synthetic.motion import make_articulation
from datasets.synthetic.posing import pose_subject
from datasets.synthetic.render import render_views
from datasets.synthetic.rig import make_camera_rig, make_sh_lighting
from datasets.synthetic.skeleton import FINGER_JOINTS, FINGERS, MANO_PARENTS, MM, HandFrame, hand_frame
from datasets.synthetic.subject import Subject, make_subject
from datasets.synthetic.visualise import save_visualisation

__all__ = [
    "FINGERS", "FINGER_JOINTS", "HandFrame", "MANO_PARENTS", "MM", "PRESETS", "RECON_SEQUENCE", "SR_SEQUENCE",
    "Subject", "SyntheticConfig", "generate", "hand_frame", "make_articulation", "make_camera_rig",
    "make_sh_lighting", "make_subject", "pose_subject", "render_views", "save_visualisation",
]
