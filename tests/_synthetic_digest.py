"""A compact numeric digest of a generated synthetic tree, to check that the v1 path (``surface="mano"``,
``annotation="exact"``) still writes the data it wrote before the v2 subjects.

``tests/golden/synthetic_v1_digest.json`` was written by :func:`golden_config` run through the
generator at commit e874021 (before v2), with ``python tests/_synthetic_digest.py OUT_JSON`` from that
tree. Only numpy and the standard library are used here, so the same file runs against old trees.
"""

from __future__ import annotations

import glob
import json
import os
import sys

import numpy as np

GOLDEN_CONFIG = dict(
    seed=5,
    raw_size=(48, 48),
    hr_size=32,
    num_views=2,
    num_heldout_views=1,
    num_frames=2,
    num_subjects=3,
    supersample=1,
    subdivision_levels=1,
)
ARRAYS = ("verts", "verts_canonical", "albedo", "displacement", "mano_pose", "mano_shape", "mano_trans")


def digest(root) -> dict:
    """{name: list of floats}: MANO annotations, camera and joint JSONs, GT mesh arrays and image statistics."""
    from PIL import Image

    out = {}
    for split in ("test", "val", "train"):
        for kind in ("MANO_NeuralAnnot", "camera", "joint_3d"):
            path = os.path.join(root, "annotations", split, f"InterHand2.6M_{split}_{kind}.json")
            with open(path) as f:
                out[f"{split}/{kind}"] = _flatten(json.load(f))
        for path in sorted(glob.glob(os.path.join(root, "gt_meshes", split, "*", "*.npz"))):
            with np.load(path) as data:
                for key in ARRAYS:
                    a = data[key].astype(np.float64).ravel()
                    out[f"{os.path.relpath(path, root)}/{key}"] = [
                        float(a.sum()),
                        float(np.abs(a).sum()),
                        float((a * np.cos(np.arange(a.size))).sum()),
                    ]
        images = sorted(glob.glob(os.path.join(root, "images", split, "**", "*.jpg"), recursive=True))
        means = [float(np.asarray(Image.open(p), dtype=np.float64).mean()) for p in images]
        out[f"{split}/images"] = [len(images)] + means
    return out


def _flatten(obj) -> list:
    if isinstance(obj, dict):
        return [v for k in sorted(obj) for v in _flatten(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [v for x in obj for v in _flatten(x)]
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return [float(obj)]
    return []


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, os.getcwd())
    from datasets.synthetic import SyntheticConfig, generate

    with tempfile.TemporaryDirectory() as tmp:
        generate(SyntheticConfig(**GOLDEN_CONFIG), tmp, progress=False, log=lambda *a, **k: None)
        with open(sys.argv[1], "w") as f:
            json.dump(digest(tmp), f)
