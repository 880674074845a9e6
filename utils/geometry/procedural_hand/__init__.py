"""The procedural stand-in hand (NOT MANO), built in the MANO v1.2 pickle format.

The project must build, test and demo without the licensed MANO files, so it ships a hand model
built here and written by ``scripts/make_procedural_hand.py``:
``assets/procedural_hand/PROCEDURAL_HAND_{RIGHT,LEFT}.pkl``. Each pickle has exactly the keys,
dtypes and shapes of ``MANO_{RIGHT,LEFT}.pkl`` (except that ``shapedirs`` is a plain array instead
of a chumpy object) and is loaded through the same code path (``utils.geometry.mano.load_mano_dict``
and ``utils.geometry.mano.HandModel``). It is a synthetic hand built from tubes, with hand-designed
skinning weights, joint regressor, shape directions and pose space; none of its numbers come from
MANO, and results obtained with it say nothing about MANO.

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

What lives here, in dependency order: ``skeleton`` (design constants, :class:`HandParams`, the digit
chains), ``surface`` (the mesh), ``rig`` (skinning weights, joint regressor, pose space), ``build``
(:func:`build_hand`, :func:`mirror_to_left`, :func:`write_hand`), ``checks`` (:func:`check_hand`,
self-intersections, winding numbers, :func:`render_preview`).

Imports allowed: ``utils.checkpoint``; only its atomic writer, inside the functions that write files; numpy,
and scipy, trimesh and cv2 inside the functions that need them. Nothing here imports torch, the rest of
``utils``, ``models``, ``datasets`` or ``trainers``; importing the package loads no file.
"""

from utils.geometry.procedural_hand.build import build_hand, mirror_to_left, write_hand
from utils.geometry.procedural_hand.checks import (
    check_hand,
    find_self_intersections,
    render_preview,
    winding_numbers,
)
from utils.geometry.procedural_hand.skeleton import (
    FINGERTIP_VERTEX_IDS,
    TARGET_NUM_VERTS,
    WRIST_RING,
    HandParams,
)

__all__ = [
    "FINGERTIP_VERTEX_IDS",
    "HandParams",
    "TARGET_NUM_VERTS",
    "WRIST_RING",
    "build_hand",
    "check_hand",
    "find_self_intersections",
    "mirror_to_left",
    "render_preview",
    "winding_numbers",
    "write_hand",
]
