"""Cameras and camera-convention conversions: round trips, conventions, bad input."""

import math

import numpy as np
import pytest
import torch

from utils.geometry.camera import (
    Cameras,
    clip_to_pixel,
    crop_affine_cv2,
    crop_intrinsics,
    interhand_to_opencv,
    look_at,
    opencv_to_interhand,
    pixel_to_clip,
)


def _random_rotations(n, generator):
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - z * w),
            2 * (x * z + y * w),
            2 * (x * y + z * w),
            1 - 2 * (x * x + z * z),
            2 * (y * z - x * w),
            2 * (x * z - y * w),
            2 * (y * z + x * w),
            1 - 2 * (x * x + y * y),
        ],
        -1,
    ).view(n, 3, 3)


def _cameras(n=3, size=(40, 30), seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = size
    K = torch.zeros(n, 3, 3, dtype=torch.float64)
    K[:, 0, 0] = 50 + 10 * torch.rand(n, generator=g, dtype=torch.float64)
    K[:, 1, 1] = 50 + 10 * torch.rand(n, generator=g, dtype=torch.float64)
    K[:, 0, 1] = 0.5 * torch.rand(n, generator=g, dtype=torch.float64)  # skew
    K[:, 0, 2] = w / 2 + torch.rand(n, generator=g, dtype=torch.float64)
    K[:, 1, 2] = h / 2 + torch.rand(n, generator=g, dtype=torch.float64)
    K[:, 2, 2] = 1
    centres = torch.randn(n, 3, generator=g, dtype=torch.float64)
    centres = 1.5 * centres / centres.norm(dim=-1, keepdim=True)
    # Cameras on a sphere looking at the origin, rolled by a random "up".
    ups = torch.randn(n, 3, generator=g, dtype=torch.float64)
    R = torch.stack(
        [
            look_at(c.tolist(), up=u.tolist(), dtype=torch.float64)[0]
            for c, u in zip(centres, ups, strict=True)
        ]
    )
    t = -torch.einsum("nij,nj->ni", R, centres)
    return Cameras(K=K, R=R, t=t, image_size=size, names=[f"cam{i}" for i in range(n)]), centres


def test_interhand_round_trip():
    g = torch.Generator().manual_seed(1)
    camrot = _random_rotations(5, g)
    campos = 1000 * torch.randn(5, 3, generator=g, dtype=torch.float64)
    R, t = interhand_to_opencv(campos, camrot)
    assert torch.allclose(R, camrot)
    assert torch.allclose(t, -torch.einsum("nij,nj->ni", camrot, campos) / 1000)
    campos2, camrot2 = opencv_to_interhand(R, t)
    assert torch.allclose(campos2, campos, atol=1e-9) and torch.allclose(camrot2, camrot)
    # The camera centre in metres is campos / 1000.
    cams = Cameras(K=torch.eye(3, dtype=torch.float64).expand(5, 3, 3), R=R, t=t, image_size=(8, 8))
    assert torch.allclose(cams.centres(), campos / 1000, atol=1e-12)


def test_interhand_accepts_numpy_and_rejects_bad_shapes():
    R, t = interhand_to_opencv(np.array([0.0, 0.0, -1000.0]), np.eye(3))
    assert torch.allclose(t.double(), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="campos_mm"):
        interhand_to_opencv(torch.zeros(2, 3), torch.eye(3))


def test_project_unproject_round_trip_and_world_cam():
    cams, _ = _cameras()
    g = torch.Generator().manual_seed(2)
    x = 0.2 * torch.randn(3, 7, 3, generator=g, dtype=torch.float64)
    uv, depth = cams.project(x)
    assert uv.shape == (3, 7, 2) and depth.shape == (3, 7)
    assert torch.allclose(cams.unproject(uv, depth), x, atol=1e-10)
    assert torch.allclose(cams.cam_to_world(cams.world_to_cam(x)), x, atol=1e-12)
    # (V, 3) broadcasts to every camera.
    uv1, _ = cams.project(x[0])
    assert torch.allclose(uv1[1], cams[1].project(x[0])[0][0])


def test_principal_point_and_pixel_centre_convention():
    # A point on the optical axis projects to the principal point; with cx = W/2, cy = H/2 that is the
    # corner shared by the four central pixels; with cx = 2.5 it lies in the centre of column 2.
    K = torch.tensor([[[100.0, 0, 2.5], [0, 100.0, 0.5], [0, 0, 1]]])
    cams = Cameras(K=K, R=torch.eye(3)[None], t=torch.zeros(1, 3), image_size=(4, 6))
    uv, depth = cams.project(torch.tensor([[[0.0, 0.0, 2.0]]]))
    assert torch.allclose(uv, torch.tensor([[[2.5, 0.5]]])) and float(depth) == 2.0
    # +y (down in the camera) moves down the image: larger v, i.e. a larger row index.
    uv_down, _ = cams.project(torch.tensor([[[0.0, 0.02, 2.0]]]))
    assert uv_down[0, 0, 1] > uv[0, 0, 1]
    # Clip space: the centre of pixel (row 0, col 2) sits at x_ndc = (2*2+1)/W - 1, y_ndc = 1/H - 1 (top).
    clip = cams.to_clip(torch.tensor([[[0.0, 0.0, 2.0]]]), near=0.1)
    ndc = clip[..., :3] / clip[..., 3:]
    assert torch.allclose(ndc[0, 0, :2], torch.tensor([5 / 6 - 1, 1 / 4 - 1]))
    assert torch.allclose(ndc[0, 0, 2], torch.tensor(1 - 2 * 0.1 / 2.0))
    assert float(clip[0, 0, 3]) == 2.0


def test_clip_round_trips():
    cams, _ = _cameras()
    g = torch.Generator().manual_seed(3)
    x = 0.2 * torch.randn(3, 11, 3, generator=g, dtype=torch.float64)
    near = 0.05
    clip = cams.to_clip(x, near=near)
    uv, depth = cams.project(x)
    uv2, z_ndc = clip_to_pixel(clip, cams.image_size)
    assert torch.allclose(uv2, uv, atol=1e-10)
    assert torch.allclose(z_ndc, 1 - 2 * near / depth, atol=1e-12)
    assert torch.allclose(pixel_to_clip(uv, depth, cams.image_size, near=near), clip, atol=1e-10)
    # Matrices agree with the direct path.
    xh = torch.cat([x, torch.ones_like(x[..., :1])], -1)
    clip_m = torch.einsum("nij,nvj->nvi", cams.world_to_clip_matrix(near), xh)
    assert torch.allclose(clip_m, clip, atol=1e-10)


def test_crop_intrinsics_round_trip_and_cv2_warp():
    cv2 = pytest.importorskip("cv2")
    K = torch.tensor([[300.0, 0.0, 160.0], [0.0, 310.0, 250.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    box = (100.5, 180.25, 120.0)
    out = (64, 48)  # (h, w): a square crop stretched to a non-square output
    K2 = crop_intrinsics(K, box, out)
    x = torch.tensor([[0.01, -0.02, 0.9], [0.03, 0.01, 1.1]], dtype=torch.float64)
    uv = (x @ K.T)[:, :2] / x[:, 2:]
    uv2 = (x @ K2.T)[:, :2] / x[:, 2:]
    expect = torch.stack([(uv[:, 0] - box[0]) * out[1] / box[2], (uv[:, 1] - box[1]) * out[0] / box[2]], -1)
    assert torch.allclose(uv2, expect)
    # Round trip: cropping the crop back to the full frame restores K.
    sx, sy = out[1] / box[2], out[0] / box[2]
    assert torch.allclose(
        torch.diag(torch.tensor([1 / sx, 1 / sy, 1.0], dtype=torch.float64)) @ K2
        + torch.tensor([[0, 0, box[0]], [0, 0, box[1]], [0, 0, 0]], dtype=torch.float64),
        K,
    )
    # Batched boxes.
    Kb = crop_intrinsics(K.expand(2, 3, 3), torch.tensor([box, box], dtype=torch.float64), out)
    assert torch.allclose(Kb[1], K2)
    # The cv2 warp matrix moves a bright pixel to where K2 projects its centre.
    img = np.zeros((400, 400), np.float32)
    img[200, 150] = 1.0  # continuous centre (150.5, 200.5)
    box_sq = (120.0, 170.0, 60.0)
    warped = cv2.warpAffine(img, crop_affine_cv2(box_sq, 60), (60, 60), flags=cv2.INTER_LINEAR)
    rows, cols = np.nonzero(warped > 0.5)
    assert (rows[0] + 0.5, cols[0] + 0.5) == (200.5 - 170.0, 150.5 - 120.0)


def test_cameras_indexing_to_and_look_at():
    cams, centres = _cameras(4)
    sub = cams[[1, 3]]
    assert len(sub) == 2 and sub.names == ["cam1", "cam3"]
    assert torch.allclose(sub.K, cams.K[[1, 3]])
    assert len(cams[2]) == 1 and cams[2].names == ["cam2"]
    assert cams[1:3].names == ["cam1", "cam2"]
    assert cams.to(dtype=torch.float32).K.dtype == torch.float32
    assert torch.allclose(cams.centres(), centres, atol=1e-12)
    R, t = look_at((0.0, 0.0, -2.0))
    assert torch.allclose(R, torch.eye(3)) and torch.allclose(t, torch.tensor([0.0, 0.0, 2.0]))
    R, t = look_at((1.0, 2.0, 3.0), (0.1, 0.2, 0.3))
    assert torch.allclose(R @ R.T, torch.eye(3), atol=1e-6) and math.isclose(
        float(torch.det(R)), 1.0, rel_tol=1e-6
    )
    target_cam = R @ torch.tensor([0.1, 0.2, 0.3]) + t
    assert torch.allclose(target_cam[:2], torch.zeros(2), atol=1e-6) and target_cam[2] > 0


def test_bad_input_errors():
    with pytest.raises(ValueError, match=r"Cameras.K must have shape \(\*, 3, 3\), got \(3, 3\)"):
        Cameras(K=torch.eye(3), R=torch.eye(3), t=torch.zeros(3), image_size=(4, 4))
    with pytest.raises(ValueError, match=r"Cameras.t must have shape \(2, 3\)"):
        Cameras(
            K=torch.eye(3).expand(2, 3, 3),
            R=torch.eye(3).expand(2, 3, 3),
            t=torch.zeros(1, 3),
            image_size=(4, 4),
        )
    with pytest.raises(ValueError, match="names"):
        Cameras(
            K=torch.eye(3)[None],
            R=torch.eye(3)[None],
            t=torch.zeros(1, 3),
            image_size=(4, 4),
            names=["a", "b"],
        )
    with pytest.raises(ValueError, match="image size"):
        Cameras(K=torch.eye(3)[None], R=torch.eye(3)[None], t=torch.zeros(1, 3), image_size=(0, 4))
    cams, _ = _cameras(2)
    with pytest.raises(ValueError, match=r"x_world must have shape"):
        cams.project(torch.zeros(3, 5, 3))
    # A mesh entirely behind camera 1's near plane: the error names that camera.
    verts = torch.zeros(2, 4, 3, dtype=torch.float64)
    verts[1] = cams.centres()[1]
    with pytest.raises(ValueError, match=r"camera 1 \('cam1'\).*Z <= near"):
        cams.to_clip(verts)
    with pytest.raises(ValueError, match="side"):
        crop_intrinsics(torch.eye(3), (0.0, 0.0, 0.0), 8)
    with pytest.raises(ValueError, match=r"clip must have shape"):
        clip_to_pixel(torch.zeros(3, 3), (4, 4))
