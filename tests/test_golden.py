"""Golden image: the procedural hand at rest, SH-shaded, from a fixed camera.

Regenerate after an intended change with ``SRHAND_UPDATE_GOLDEN=1 pytest tests/test_golden.py``; set
``SRHAND_DEBUG_IMAGES=DIR`` to write the rendered and golden images for inspection.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from utils.geometry.camera import Cameras, look_at
from utils.geometry.mano import HandModel, default_hand_model_path
from utils.geometry.sh import sh_shade
from utils.render import get_renderer
from utils.render.mesh_render import render_attributes

GOLDEN = Path(__file__).parent / "golden" / "procedural_hand_rest_64.png"
SIZE = 64


def render_rest_hand() -> np.ndarray:
    """``(64, 64, 3)`` uint8: grey albedo, fixed SH light, camera 40 cm in front of the palm."""
    hand = HandModel.from_file(default_hand_model_path("right"))
    verts, _ = hand(torch.zeros(1, 48), torch.zeros(1, 10), torch.zeros(1, 3))
    centre = verts[0].mean(0)
    R, t = look_at(
        eye=(centre + torch.tensor([0.0, -0.4, 0.0])).tolist(), target=centre.tolist(), up=(0.0, 0.0, 1.0)
    )
    focal = 1.5 * SIZE
    K = torch.tensor([[focal, 0.0, SIZE / 2], [0.0, focal, SIZE / 2], [0.0, 0.0, 1.0]])
    cams = Cameras(K=K[None], R=R[None], t=t[None], image_size=(SIZE, SIZE))
    from utils.geometry.mesh import vertex_normals

    normals = vertex_normals(verts, hand.faces)
    out = render_attributes(get_renderer("torch"), verts, hand.faces, cams, attrs={"normal": normals})
    n_world = torch.nn.functional.normalize(out["normal"], dim=-1)
    n_cam = torch.einsum("ij,bhwj->bhwi", R, n_world)
    sh = torch.zeros(1, 27)
    sh[:, [2, 11, 20]] = -0.3  # light from the camera side (camera-space -z faces the camera)
    shade = sh_shade(n_cam, sh) * 0.45 * out["valid"][..., None]
    return (shade[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def test_procedural_hand_golden_image():
    import cv2

    image = render_rest_hand()
    assert image.shape == (SIZE, SIZE, 3)
    if os.environ.get("SRHAND_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(GOLDEN), image[..., ::-1])
    golden = cv2.imread(str(GOLDEN), cv2.IMREAD_COLOR)[..., ::-1]
    if os.environ.get("SRHAND_DEBUG_IMAGES"):
        debug = Path(os.environ["SRHAND_DEBUG_IMAGES"])
        debug.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(debug / "rendered.png"), image[..., ::-1])
        cv2.imwrite(str(debug / "golden.png"), golden[..., ::-1])
    coverage = (image.sum(-1) > 0).mean()
    assert 0.05 < coverage < 0.8, f"hand covers {coverage:.2f} of the image"
    diff = np.abs(image.astype(np.int16) - golden.astype(np.int16))
    # Tolerate rounding and a few silhouette pixels flipping (float32 ties); anything more is a regression.
    assert (diff > 8).mean() < 0.005, f"{(diff > 8).mean():.4f} of the pixels differ from the golden image"
    assert diff.mean() < 1.0
