"""Crop box, warp + intrinsics, LR degradations, masks and normal maps (datasets/preprocess.py)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datasets import preprocess


def test_square_crop_box_fills_ratio():
    uv = np.array([[10.0, 20.0], [50.0, 30.0], [30.0, 40.0]])
    x0, y0, side = preprocess.square_crop_box(uv, ratio=0.8)
    assert side == pytest.approx(40.0 / 0.8)
    assert x0 + side / 2 == pytest.approx(30.0) and y0 + side / 2 == pytest.approx(30.0)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        preprocess.square_crop_box(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="ratio"):
        preprocess.square_crop_box(uv, ratio=1.5)


def _blob(h, w, u, v, sigma=1.5):
    """Gaussian blob centred at continuous pixel (u, v) (pixel centres at +0.5)."""
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    return np.exp(-0.5 * ((xx - u) ** 2 + (yy - v) ** 2) / sigma**2).astype(np.float32)


def _centroid(img):
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]] + 0.5
    return (img * xx).sum() / img.sum(), (img * yy).sum() / img.sum()


@pytest.mark.parametrize("out_size", [(64, 64), (48, 80)])
def test_warp_and_intrinsics_agree(out_size):
    """A 3D point projected with the cropped K lands where the warp put its image."""
    K = torch.tensor([[120.0, 0, 70.0], [0, 110.0, 52.0], [0, 0, 1]], dtype=torch.float64)
    X = torch.tensor([0.05, -0.02, 1.0], dtype=torch.float64)
    uv = (K @ X)[:2] / X[2]
    raw = _blob(100, 140, float(uv[0]), float(uv[1]), sigma=2.0)
    box = preprocess.square_crop_box(np.array([[uv[0] - 15, uv[1] - 10], [uv[0] + 25, uv[1] + 12]]))
    crop = preprocess.warp_to_crop(raw, box, out_size)
    assert crop.shape == out_size
    Kc = preprocess.crop_intrinsics(K, box, out_size)
    uv_c = (Kc @ X)[:2] / X[2]
    cu, cv = _centroid(crop)
    assert cu == pytest.approx(float(uv_c[0]), abs=0.1) and cv == pytest.approx(float(uv_c[1]), abs=0.1)


def test_warp_keeps_channels_and_black_border():
    img = np.ones((20, 20, 1), np.float32)
    out = preprocess.warp_to_crop(img, (-10.0, -10.0, 40.0), (16, 16))
    assert out.shape == (16, 16, 1)
    assert out[0, 0, 0] == 0.0 and out[8, 8, 0] == pytest.approx(1.0)
    out_area = preprocess.warp_to_crop(
        np.ones((64, 64, 3), np.float32), (0, 0, 64), (8, 8), interpolation="area"
    )
    assert out_area.shape == (8, 8, 3)
    with pytest.raises(ValueError, match="interpolation"):
        preprocess.warp_to_crop(img, (0, 0, 20), 8, interpolation="lanczos")


def test_degrade_modes_and_sizes():
    torch.manual_seed(0)
    hr = torch.rand(2, 3, 32, 32)
    nearest = preprocess.degrade(hr, size=8)
    assert torch.equal(nearest, F.interpolate(hr, size=(8, 8)))  # the reference code's LR
    area = preprocess.degrade(hr, size=(8, 8), mode="area")
    assert torch.allclose(area, F.avg_pool2d(hr, 4), atol=1e-6)
    bicubic = preprocess.degrade(hr, scale=4, mode="bicubic")
    assert bicubic.shape == (2, 3, 8, 8) and bicubic.min() >= 0 and bicubic.max() <= 1
    # Non-integer scales: any size, mean preserved by the exact area filter.
    odd = preprocess.degrade(hr[0], scale=2.7, mode="area")
    assert odd.shape == (3, 12, 12)
    assert torch.allclose(odd.mean((1, 2)), hr[0].mean((1, 2)), atol=1e-5)
    assert preprocess.degrade(hr, size=(7, 11), mode="bicubic").shape == (2, 3, 7, 11)
    assert preprocess.lr_size_for_scale((256, 256), 16) == (16, 16)
    assert preprocess.lr_size_for_scale((256, 200), 3.3) == (78, 61)


def test_degrade_bad_arguments():
    hr = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="exactly one"):
        preprocess.degrade(hr)
    with pytest.raises(ValueError, match="exactly one"):
        preprocess.degrade(hr, size=4, scale=2)
    with pytest.raises(ValueError, match="mode"):
        preprocess.degrade(hr, size=4, mode="lanczos")
    with pytest.raises(ValueError, match="shape"):
        preprocess.degrade(torch.rand(8, 8), size=4)
    with pytest.raises(ValueError, match="positive"):
        preprocess.degrade(hr, scale=0)


def test_area_matrix_rows_sum_to_one():
    for n_in, n_out in ((10, 3), (7, 7), (5, 12)):
        A = preprocess.area_resample_matrix(n_in, n_out, dtype=torch.float64)
        assert A.shape == (n_out, n_in)
        assert torch.allclose(A.sum(1), torch.ones(n_out, dtype=torch.float64))


def _sphere(radius=0.1):
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    return torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces, dtype=torch.long)


def test_mask_and_normals_of_a_sphere():
    """Unit normals inside the mask, camera space facing the camera, world = R^T camera."""
    from utils.geometry.camera import look_at

    verts, faces = _sphere()
    R, t = look_at([0.3, -0.2, -0.5], [0.0, 0.0, 0.0])
    K = torch.tensor([[90.0, 0, 32], [0, 90.0, 32], [0, 0, 1]])
    mask, n_cam = preprocess.render_mask_and_normals(verts[None], faces, K[None], R[None], t[None], (64, 64))
    _, n_world = preprocess.render_mask_and_normals(
        verts[None], faces, K[None], R[None], t[None], (64, 64), normal_space="world"
    )
    assert mask.shape == (1, 1, 64, 64) and n_cam.shape == (1, 3, 64, 64)
    inside = mask[0, 0] > 0
    assert 0.1 < inside.float().mean() < 0.9
    length = n_cam[0].norm(dim=0)
    assert torch.allclose(length[inside], torch.ones(()), atol=1e-4)
    assert (length[~inside] == 0).all()
    assert (n_cam[0, 2][inside] < 0.05).all()  # visible surfaces face the camera (-z)
    back = torch.einsum("ji,jhw->ihw", R, n_cam[0])
    assert torch.allclose(back, n_world[0], atol=1e-4)
    with pytest.raises(ValueError, match="normal_space"):
        preprocess.render_mask_and_normals(
            verts[None], faces, K[None], R[None], t[None], 8, normal_space="ndc"
        )
