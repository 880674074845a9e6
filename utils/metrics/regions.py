"""Where on the hand a reconstruction is closer to or farther from the truth: the truth-to-reconstruction
distance of the synthetic generator's true vertices, averaged over regions of its surface.

The regions come from the ground-truth file that ``scripts/make_synthetic.py`` writes
(``gt_meshes/<split>/<capture>/<sequence>.npz``, docs/data.md): the skinning weights (palm = the root joint's
region, thumb = joints 13-15, fingers = the other twelve), the dorsal label, and the static soft tissue the
generator adds outward of the subject's MANO surface (``tissue``, metres): ``off-model tissue`` is where it
exceeds 2 mm (the thenar, hypothenar and fingertip pads: what a MANO-masked supervision cannot see).
"""

from __future__ import annotations

import numpy as np
import torch

THUMB_JOINTS = (
    13,
    14,
    15,
)  # MANO joint order: 0 root, 1-3 index, 4-6 middle, 7-9 pinky, 10-12 ring, 13-15 thumb
OFF_MODEL_TISSUE_M = 0.002


def truth_regions(gt: dict) -> dict[str, np.ndarray]:
    """Named ``(Vg,)`` bool masks of the true vertices from a ground-truth file's arrays (``weights``,
    ``label_dorsal``, ``tissue``): all, palm, thumb, fingers, dorsal, palmar, off-model tissue (> 2 mm)."""
    part = np.asarray(gt["weights"]).argmax(axis=1)
    dorsal = np.asarray(gt["label_dorsal"], dtype=np.float32) > 0.5
    thumb = np.isin(part, THUMB_JOINTS)
    return {
        "all": np.ones(len(part), dtype=bool),
        "palm": part == 0,
        "thumb": thumb,
        "fingers": (part != 0) & ~thumb,
        "dorsal": dorsal,
        "palmar": ~dorsal,
        "off-model tissue": np.asarray(gt["tissue"]) > OFF_MODEL_TISSUE_M,
    }


def distance_by_region(
    truth_verts: torch.Tensor, regions: dict[str, np.ndarray], verts: torch.Tensor, faces: torch.Tensor
) -> dict[str, float]:
    """Mean distance (mm) from the true vertices ``(Vg, 3)`` (metres) of each region to the mesh ``verts (N, 3)``,
    ``faces (M, 3)`` (exact point-to-triangle distances, :class:`utils.metrics.geometry.SurfaceDistanceIndex`)."""
    from utils.metrics.geometry import SurfaceDistanceIndex

    dist = SurfaceDistanceIndex(verts.double(), faces).distance(truth_verts.double()).numpy() * 1000.0
    return {name: float(dist[mask].mean()) if mask.any() else float("nan") for name, mask in regions.items()}
