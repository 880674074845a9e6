"""The ``--save_vis`` picture: the reconstruction sequence as the reader sees it, close-ups of the
ground-truth mesh (palm, back, index fingertip) rendered with the subject's albedo, and the truth
beside the annotated MANO mesh (tinted by its distance to the truth)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from datasets.synthetic.config import RECON_SEQUENCE
from datasets.synthetic.render import render_views
from datasets.synthetic.rig import directional_sh, to_sh_convention
from datasets.synthetic.skeleton import FINGERS


def save_visualisation(
    data_path, path, hr_size: int = 128, num_views: int = 4, num_frames: int = 2, mano_dir=None
) -> str:
    """Picture of the reconstruction sequence as the reader sees it, plus detail close-ups.

    Rows: HR crops (``num_views`` views x ``num_frames`` frames), their MANO masks over the crop,
    camera-space MANO normal maps; last row: close-ups of the GT mesh (palm, back, fingertips)
    rendered at 256x256 with the subject's albedo, then the truth and the annotated MANO mesh of the
    first frame side by side (grey; MANO tinted red where it is up to 5 mm off the truth).
    """
    from datasets.interhand import read_interhand_sequence
    from utils.image_io import make_grid, write_image

    meta = json.loads((Path(data_path) / "synthetic_meta.json").read_text())
    side = meta["config"].get("hand_side", "right")
    seq = read_interhand_sequence(data_path, "test", "Capture0", RECON_SEQUENCE, hand=side, mano_dir=mano_dir)
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
    close = _closeups(data_path, size=hr_size * 2) + _truth_vs_annotation(seq, size=hr_size * 2)
    up = lambda im: np.kron(im, np.ones((2, 2, 1)))  # noqa: E731
    tiles = [up(c) for c in crops] + [up(c) for c in masks] + [up(c) for c in normals] + close
    labels = (
        [f"f{seq.frame_ids[f]} {seq.cameras.names[v]}" for f in frames for v in views]
        + ["MANO mask"] * n
        + ["MANO normals (cam)"] * n
        + ["GT close-up"] * (len(close) - 2)
        + ["truth", "annotated MANO (red: 5 mm off)"]
    )
    grid = make_grid(tiles, labels=labels, ncols=n)
    write_image(path, grid)
    return os.fspath(path)


def _truth_vs_annotation(seq, size=256, frame_index=0):
    """The true surface and the annotated MANO mesh of one frame, side by side, from the first camera.

    Both grey and headlit; the MANO mesh is tinted red by its vertices' distance to the truth (full red
    at 5 mm), so where the annotation misses the truth shows.
    """
    from utils.geometry.camera import look_at
    from utils.metrics.geometry import point_to_surface_distance

    gt_verts, gt_faces = seq.gt_mesh(frame_index)
    mano_verts, _ = seq.mano_forward()
    mano_verts, mano_faces = mano_verts[frame_index].float(), seq.faces
    dist = point_to_surface_distance(mano_verts.double(), gt_verts.double(), gt_faces).float()
    red = (dist / 0.005).clamp(0, 1)[:, None]
    grey = torch.tensor([0.7, 0.7, 0.7])
    mano_albedo = grey * (1 - red) + torch.tensor([0.9, 0.15, 0.1]) * red
    centre = gt_verts.mean(0)
    cam_centre = -seq.cameras.R[0].T @ seq.cameras.t[0]
    d = torch.nn.functional.normalize(cam_centre - centre, dim=0)
    eye = centre + 0.45 * d
    up = [0.0, -1.0, 0.0] if abs(float(d[1])) < 0.9 else [0.0, 0.0, 1.0]
    R, t = look_at(eye.tolist(), centre.tolist(), up)
    K = torch.tensor([[1.6 * size, 0, size / 2], [0, 1.6 * size, size / 2], [0, 0, 1.0]])
    light = torch.as_tensor(
        to_sh_convention(directional_sh(0.55, 0.45, d.numpy())[None]), dtype=torch.float32
    )
    out = []
    for verts, faces, albedo in (
        (gt_verts, gt_faces, grey.expand(len(gt_verts), 3)),
        (mano_verts, mano_faces, mano_albedo),
    ):
        img = render_views(
            verts, faces, albedo.contiguous(), K[None], R[None], t[None], (size, size), light, supersample=2
        )["image"][0]
        out.append(img.numpy())
    return out


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
    views = [
        (centre + 0.4 * palm_dir, centre, 2.0 * size),
        (centre - 0.4 * palm_dir, centre, 2.0 * size),
        (verts[tip] + 0.12 * nail_dir, verts[tip] - 0.008 * nail_dir, 3.5 * size),
    ]
    out = []
    for eye, target, focal in views:
        d = torch.nn.functional.normalize(eye - target, dim=0)
        up = [0.0, -1.0, 0.0] if abs(float(d[1])) < 0.9 else [0.0, 0.0, 1.0]
        R, t = look_at(eye.tolist(), target.tolist(), up)
        K = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]])
        # Headlight-ish lighting: ambient plus a light from the camera.
        light = to_sh_convention(directional_sh(0.55, 0.45, d.numpy())[None])
        light = torch.as_tensor(light, dtype=torch.float32)
        img = render_views(
            verts,
            faces,
            albedo,
            K[None],
            R[None],
            t[None],
            (size, size),
            light,
            supersample=2,
            renderer=renderer,
        )["image"][0]
        out.append(img.numpy())
    return out
