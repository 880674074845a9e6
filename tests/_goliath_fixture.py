"""A tiny Goliath dome hand capture written in the real layout (goliath.md section 5), with known truth.

``write_goliath_capture(root)`` writes ``m--20990101--0000--TST001--pilot--ProjectGoliath--Hands--right/``:

- ``camera_calibration.json``: 4 cameras, K and T stored transposed, T's translation in millimetres, K for
  a sensor ``IMAGE_SCALE`` (2) times the image size with Goliath's integer pixel centres; camera
  ``cam400004`` has no image zip;
- ``image/cam400001..3.zip`` -> ``cam<ID>/<frame:06d>.avif`` (or ``.png``): the procedural hand (the
  project's MANO stand-in) posed with known parameters, rendered by the project's renderer, shaded, on a
  grey dome background, with Goliath's colour correction undone (the reader applies it);
- ``segmentation_fgbg/`` for cam400001 and cam400002 only, fully-lit frames only, foreground value 1;
  frame 9's segmentation is missing from cam400002;
- ``lights/``: frames 0, 3, 6, 9 fully lit (pattern 0), the others a 5-light pattern (rendered darker);
- ``frame_splits_list.csv``: frames 0-8 test, 9-11 train;
- ``kinematic_tracking/pose.zip`` (60 zeros), ``registration_vertices.zip`` (the posed hand's surface,
  midpoint-subdivided and shuffled: another topology, no correspondence; or, with ``registration_points``,
  that many points drawn on the surface, with ``registration_noise_mm`` Gaussian noise),
  ``scan_mesh/scan_mesh.zip`` (the subdivided surface plus a forearm box behind the wrist),
  ``keypoints_3d/keypoints_3d.zip`` (the 21 joints in InterHand2.6M's order, ``{"keypoints": [[x, y, z, 1],
  ...]}``), all in millimetres, fully-lit frames only.

``hard_frame``: that frame holds :func:`hard_pose` (a fist: fingers curled and pressed together) instead.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile

import numpy as np
import torch

CAPTURE = "m--20990101--0000--TST001--pilot--ProjectGoliath--Hands--right"
IMAGE_HW = (80, 52)
IMAGE_SCALE = 2.0
CAMERAS = ("cam400001", "cam400002", "cam400003", "cam400004")
SEGMENTED = ("cam400001", "cam400002")
NO_ZIP = "cam400004"
FRAMES = tuple(range(12))
FULLY_LIT = (0, 3, 6, 9)
TEST_FRAMES = tuple(range(9))
SEG_MISSING = ("cam400002", 9)
HARD_FRAME = 6  # the fully-lit test frame that write_goliath_capture(hard_frame=HARD_FRAME) makes a fist
SHAPE = (0.6, -0.4, 0.3, 0.0, 0.2, 0.0, -0.1, 0.0, 0.0, 0.1)
SKIN = (0.78, 0.58, 0.48)
DOME = 0.35


def true_parameters(model, frame: int):
    """Known pose (48,), shape (10,), trans (3,) of a frame: a slowly curling, turning hand near the origin."""
    from tests._hand_fixtures import curl_pose

    k = frame / len(FRAMES)
    curl = {
        j: (0.15 + 0.5 * k) * a
        for chain in ((1, 2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12))
        for j, a in zip(chain, (0.8, 1.0, 0.6), strict=True)
    }
    curl.update({13: 0.2, 14: 0.3 * (1 + k), 15: 0.3})
    pose = curl_pose(model, curl).numpy() - model.pose_mean.double().numpy()  # model adds hands_mean
    pose[:3] = [0.3 + 0.4 * k, -0.2, 0.1]
    shape = np.asarray(SHAPE, dtype=np.float64)
    with torch.no_grad():  # centre the hand on the world origin (the dome's centre), then drift 1 cm
        verts, _ = model.forward(torch.tensor(pose)[None].float(), torch.tensor(shape)[None].float())
    trans = -verts[0].double().mean(0).numpy() + np.array([0.01 * k, 0.0, 0.0])
    return pose.astype(np.float64), shape, trans


def hard_pose(model):
    """Pose (48,), shape (10,), trans (3,) of a fist: every finger curled 1.5 / 1.7 / 1.0 rad at its three
    joints and pressed against its neighbours, the thumb across them (``typical_poses``' fist), turned and
    centred like :func:`true_parameters`. The fit from the mean hand fails on it (docs/mano_fit.md)."""
    from tests._hand_fixtures import typical_poses

    pose = typical_poses(model)["fist"].numpy() - model.pose_mean.double().numpy()  # from the flat hand
    pose[:3] = [0.3, -0.2, 0.1]
    shape = np.asarray(SHAPE, dtype=np.float64)
    with torch.no_grad():
        verts, _ = model.forward(torch.tensor(pose)[None].float(), torch.tensor(shape)[None].float())
    return pose, shape, -verts[0].double().numpy().mean(0)


def surface_samples(
    verts: np.ndarray, faces: np.ndarray, count: int, noise_mm: float, seed: int
) -> np.ndarray:
    """``count`` points drawn uniformly (by area) on a triangle mesh, plus Gaussian noise (metres)."""
    rng = np.random.default_rng(seed)
    tris = verts[faces]
    area = np.linalg.norm(np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]), axis=1)
    pick = rng.choice(len(faces), size=count, p=area / area.sum())
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    t = tris[pick]
    points = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
    return points + rng.normal(0.0, noise_mm * 1e-3, points.shape)


def _cameras():
    from utils.geometry.camera import look_at

    H, W = IMAGE_HW
    eyes = [(0.0, -0.15, -0.55), (0.45, -0.1, -0.35), (-0.4, 0.1, -0.4), (0.1, 0.5, -0.3)]
    out = {}
    for i, (name, eye) in enumerate(zip(CAMERAS, eyes, strict=True)):
        R, t = look_at(eye, (0.0, 0.0, 0.0), up=(0.0, -1.0, 0.0), dtype=torch.float64)
        K = np.array([[95.0 + 3 * i, 0.0, W / 2 + 1.5 * i], [0.0, 96.0 + 3 * i, H / 2 - i], [0.0, 0.0, 1.0]])
        out[name] = (K, R.numpy(), t.numpy())
    return out


def full_sensor_K(K_image: np.ndarray, scale: float = IMAGE_SCALE) -> np.ndarray:
    """The calibration K Goliath stores for images ``scale`` times smaller (inverse of the reader's halving)."""
    K = np.array(K_image, dtype=np.float64)
    K[:2, :2] *= scale
    K[:2, 2] = K[:2, 2] * scale - 0.5
    return K


def _encode(image: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    im = Image.fromarray(np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    if fmt == "avif":
        im.save(buf, format="AVIF", quality=90)
    else:
        im.save(buf, format="PNG")
    return buf.getvalue()


def _mask_png(mask: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8)).save(buf, format="PNG")  # foreground = 1, i.e. != 0
    return buf.getvalue()


def _ply(verts_mm: np.ndarray, faces=None) -> bytes:
    """Binary PLY bytes; vertices only when ``faces`` is None (as Goliath's registration files)."""
    header = [
        "ply",
        "format binary_little_endian 1.0",
        f"element vertex {len(verts_mm)}",
        "property float x",
        "property float y",
        "property float z",
    ]
    body = np.asarray(verts_mm, dtype="<f4").tobytes()
    if faces is not None:
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
        rows = np.empty(len(faces), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
        rows["n"], rows["idx"] = 3, faces
        body += rows.tobytes()
    return ("\n".join(header + ["end_header"]) + "\n").encode() + body


def _forearm_box(joints: np.ndarray):
    """A 12-triangle box 2-10 cm behind the wrist along the wrist -> middle-MCP axis (metres)."""
    axis = joints[4] - joints[0]
    axis /= np.linalg.norm(axis)
    side = np.cross(axis, [0.0, 0.0, 1.0])
    side /= np.linalg.norm(side)
    up = np.cross(axis, side)
    corners = []
    for a in (-0.10, -0.03):
        for s in (-0.03, 0.03):
            for u in (-0.02, 0.02):
                corners.append(joints[0] + a * axis + s * side + u * up)
    faces = np.array(
        [
            [0, 1, 3],
            [0, 3, 2],
            [4, 6, 7],
            [4, 7, 5],
            [0, 4, 5],
            [0, 5, 1],
            [2, 3, 7],
            [2, 7, 6],
            [0, 2, 6],
            [0, 6, 4],
            [1, 5, 7],
            [1, 7, 3],
        ]
    )
    return np.asarray(corners), faces


def write_goliath_capture(
    root,
    image_format: str = "avif",
    distortion=None,
    hard_frame=None,
    registration_points=None,
    registration_noise_mm: float = 0.0,
) -> dict:
    """Write the capture under ``root`` and return its truth (see the module docstring).

    Args:
        image_format: ``avif`` or ``png``.
        distortion: optional coefficients written into every camera's calibration entry.
        hard_frame: a frame holding :func:`hard_pose`, or None.
        registration_points: None (the registrations are the subdivided surface) or a number of points
            drawn on the surface per frame; registration_noise_mm: their noise.

    Returns:
        dict: ``capture_dir``, ``cameras`` ``{name: (K_image (3,3) pixels with centres at +0.5, R, t metres)}``,
        ``full_K`` ``{name: K as stored, untransposed}``, ``params`` ``{frame: (pose, shape, trans)}`` and
        ``verts``/``joints21`` ``{frame: (778,3) / (21,3) metres}`` for the fully-lit frames, ``faces``.
    """
    import trimesh

    from datasets.goliath import uncorrect_colors
    from datasets.interhand import INTERHAND_FROM_MANO
    from datasets.preprocess import render_mask_and_normals
    from tests._hand_fixtures import procedural_model
    from utils.geometry.camera import Cameras
    from utils.geometry.mano import MANO_FINGERTIP_VERTEX_IDS

    cap = os.path.join(os.fspath(root), CAPTURE)
    for sub in ("image", "segmentation_fgbg", "lights", "kinematic_tracking", "scan_mesh", "keypoints_3d"):
        os.makedirs(os.path.join(cap, sub), exist_ok=True)
    model = procedural_model("right")
    faces = model.faces
    cams = _cameras()
    H, W = IMAGE_HW

    krt = []
    for name, (K, R, t) in cams.items():
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, t * 1000.0
        entry = {"cameraId": name[3:], "K": full_sensor_K(K).T.tolist(), "T": T.T.tolist()}
        if distortion is not None:
            entry.update(distortionModel="RadialAndTangential", distortion=list(distortion))
        krt.append(entry)
    with open(os.path.join(cap, "camera_calibration.json"), "w") as fh:
        json.dump({"KRT": krt}, fh)

    with open(os.path.join(cap, "lights", "light_pattern_per_frame.json"), "w") as fh:
        json.dump([[f, 0 if f in FULLY_LIT else 1 + f % 2] for f in FRAMES], fh)
    all_lights = [[i, 5555] for i in range(40)]
    meta = {
        "light_positions": [[float(i), 0.0, 1000.0] for i in range(40)],
        "light_patterns": [
            {"light_index_durations": all_lights},
            {"light_index_durations": all_lights[:5]},
            {"light_index_durations": all_lights[5:10]},
        ],
    }
    with open(os.path.join(cap, "lights", "light_pattern_metadata.json"), "w") as fh:
        json.dump(meta, fh)
    with open(os.path.join(cap, "frame_splits_list.csv"), "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["frame", "split"])
        for f in FRAMES:
            writer.writerow([f, "test" if f in TEST_FRAMES else "train"])

    truth = {
        "capture_dir": cap,
        "cameras": {},
        "full_K": {},
        "params": {},
        "verts": {},
        "joints21": {},
        "faces": faces,
    }
    names = [n for n in CAMERAS if n != NO_ZIP]
    cameras = Cameras(
        K=torch.tensor(np.stack([cams[n][0] for n in names])).float(),
        R=torch.tensor(np.stack([cams[n][1] for n in names])).float(),
        t=torch.tensor(np.stack([cams[n][2] for n in names])).float(),
        image_size=IMAGE_HW,
        names=names,
    )
    images = {n: {} for n in names}
    masks = {n: {} for n in names}
    skin = torch.tensor(SKIN)
    tip_ids = list(MANO_FINGERTIP_VERTEX_IDS.values())
    perm = np.random.default_rng(0).permutation
    reg_zip = zipfile.ZipFile(os.path.join(cap, "kinematic_tracking", "registration_vertices.zip"), "w")
    pose_zip = zipfile.ZipFile(os.path.join(cap, "kinematic_tracking", "pose.zip"), "w")
    scan_zip = zipfile.ZipFile(os.path.join(cap, "scan_mesh", "scan_mesh.zip"), "w")
    kp_zip = zipfile.ZipFile(os.path.join(cap, "keypoints_3d", "keypoints_3d.zip"), "w")
    for f in FRAMES:
        pose, shape, trans = hard_pose(model) if f == hard_frame else true_parameters(model, f)
        with torch.no_grad():
            verts, joints = model.forward(
                torch.tensor(pose)[None].float(),
                torch.tensor(shape)[None].float(),
                torch.tensor(trans)[None].float(),
            )
        mask, n_cam = render_mask_and_normals(
            verts.expand(len(names), -1, -1),
            faces,
            cameras.K,
            cameras.R,
            cameras.t,
            IMAGE_HW,
            normal_space="camera",
            backend="torch",
        )
        mask, n_cam = mask.permute(0, 2, 3, 1), n_cam.permute(0, 2, 3, 1)  # (V, H, W, 1), (V, H, W, 3)
        shade = (0.35 + 0.65 * (-n_cam[..., 2:]).clamp(min=0)) * (1.0 if f in FULLY_LIT else 0.3)
        rgb = (mask * shade * skin + (1 - mask) * DOME).numpy()
        for v, n in enumerate(names):
            images[n][f] = _encode(uncorrect_colors(rgb[v].astype(np.float32)), image_format)
            masks[n][f] = mask[v, ..., 0].numpy() > 0
        if f not in FULLY_LIT:
            continue
        v_m, j_m = verts[0].double().numpy(), joints[0].double().numpy()
        joints21 = np.concatenate([j_m, v_m[tip_ids]])
        truth["params"][f] = (pose, shape, trans)
        truth["verts"][f], truth["joints21"][f] = v_m, joints21
        dense_v, dense_f = trimesh.remesh.subdivide(v_m, faces.numpy())
        if registration_points is None:
            reg_v = dense_v[perm(len(dense_v))]
        else:
            reg_v = surface_samples(v_m, faces.numpy(), registration_points, registration_noise_mm, seed=f)
        reg_zip.writestr(f"registration_vertices/{f:06d}.ply", _ply(reg_v * 1000.0))
        box_v, box_f = _forearm_box(j_m)
        scan_v = np.concatenate([dense_v, box_v])
        scan_f = np.concatenate([dense_f, box_f + len(dense_v)])
        scan_zip.writestr(f"{f:06d}.ply", _ply(scan_v * 1000.0, scan_f))
        pose_zip.writestr(f"pose/{f:06d}.txt", "\n".join(["0.0"] * 60) + "\n")
        rows = [joints21[j if not isinstance(j, tuple) else 16 + j[1]] for j in INTERHAND_FROM_MANO]
        kp_zip.writestr(f"{f:06d}.json", json.dumps({"keypoints": [[*(p * 1000.0), 1.0] for p in rows]}))
    for zf in (reg_zip, pose_zip, scan_zip, kp_zip):
        zf.close()

    for n in names:
        with zipfile.ZipFile(os.path.join(cap, "image", f"{n}.zip"), "w") as zf:
            for f in FRAMES:
                zf.writestr(f"{n}/{f:06d}.{image_format}", images[n][f])
        if n in SEGMENTED:
            with zipfile.ZipFile(os.path.join(cap, "segmentation_fgbg", f"{n}.zip"), "w") as zf:
                for f in FULLY_LIT:
                    if (n, f) != SEG_MISSING:
                        zf.writestr(f"{n}/{f:06d}.png", _mask_png(masks[n][f]))
    for n, (K, R, t) in cams.items():
        truth["cameras"][n] = (K, R, t)
        truth["full_K"][n] = full_sensor_K(K)
    return truth
