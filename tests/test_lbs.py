"""Skinning (utils.geometry.lbs): Rodrigues, kinematic chain, LBS and pose_mesh against smplx."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _hand_fixtures import fake_mano_dict, procedural_model, write_chumpy_mano_pickle

from utils.geometry.lbs import (
    batch_rodrigues,
    linear_blend_skinning,
    pose_mesh,
    rigid_transforms,
    rotation_to_skew,
)
from utils.geometry.mano import MANO_PARENTS, HandModel
from utils.geometry.mesh import loop_subdivide, subdivided_hand

torch.set_num_threads(1)
F64 = torch.float64


# ----------------------------------------------------------------------------------------------
# batch_rodrigues
# ----------------------------------------------------------------------------------------------
def test_rodrigues_matches_scipy_and_is_a_rotation():
    from scipy.spatial.transform import Rotation

    torch.manual_seed(0)
    vecs = torch.cat(
        [
            torch.randn(20, 3, dtype=F64) * 1.5,
            torch.randn(5, 3, dtype=F64) * 1e-6,
            torch.zeros(1, 3, dtype=F64),
            torch.tensor([[np.pi - 1e-3, 0.0, 0.0]], dtype=F64),
        ]
    )
    rot = batch_rodrigues(vecs)
    expected = Rotation.from_rotvec(vecs.numpy()).as_matrix()
    np.testing.assert_allclose(rot.numpy(), expected, atol=1e-12)
    torch.testing.assert_close(rot @ rot.transpose(-1, -2), torch.eye(3, dtype=F64).expand(len(vecs), 3, 3))
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(len(vecs), dtype=F64))
    assert batch_rodrigues(torch.zeros(2, 4, 3)).shape == (2, 4, 3, 3)
    with pytest.raises(ValueError, match="axis-angle"):
        batch_rodrigues(torch.zeros(4, 2))


def test_rodrigues_matches_smplx_in_float32():
    from smplx.lbs import batch_rodrigues as smplx_rodrigues

    vecs = torch.randn(50, 3) * 0.8
    torch.testing.assert_close(batch_rodrigues(vecs), smplx_rodrigues(vecs), atol=1e-6, rtol=0)


def test_rodrigues_gradient_at_zero_is_the_skew_basis():
    zero = torch.zeros(3, dtype=F64, requires_grad=True)
    jac = torch.autograd.functional.jacobian(batch_rodrigues, zero)  # (3, 3, 3): dR_ij / dw_k
    for k in range(3):
        basis = torch.zeros(3, dtype=F64)
        basis[k] = 1.0
        torch.testing.assert_close(jac[..., k], rotation_to_skew(basis))
    assert torch.isfinite(jac).all()


def test_rodrigues_gradcheck():
    torch.manual_seed(1)
    for scale in (1.0, 1e-5):
        vecs = (torch.randn(4, 3, dtype=F64) * scale).requires_grad_()
        assert torch.autograd.gradcheck(batch_rodrigues, (vecs,), eps=1e-7 if scale < 1 else 1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# rigid_transforms and linear_blend_skinning
# ----------------------------------------------------------------------------------------------
def _reference_transforms(rotmats, joints, parents):
    """Slow, obvious reference: explicit 4x4 products along the chain, per batch item."""
    out = torch.zeros(rotmats.shape[:2] + (4, 4), dtype=rotmats.dtype)
    for b in range(rotmats.shape[0]):
        world = []
        for i, p in enumerate(parents):
            local = torch.eye(4, dtype=rotmats.dtype)
            local[:3, :3] = rotmats[b, i]
            local[:3, 3] = joints[b, i] - (joints[b, p] if p >= 0 else 0.0)
            world.append(local if p < 0 else world[p] @ local)
            remove = torch.eye(4, dtype=rotmats.dtype)
            remove[:3, 3] = -joints[b, i]
            out[b, i] = world[i] @ remove
    return out


def test_rigid_transforms_match_reference_and_smplx():
    from smplx.lbs import batch_rigid_transform

    torch.manual_seed(2)
    rotmats = batch_rodrigues(torch.randn(2, 16, 3, dtype=F64) * 0.5)
    joints = torch.randn(2, 16, 3, dtype=F64) * 0.05
    transforms, posed = rigid_transforms(rotmats, joints, MANO_PARENTS, return_joints=True)
    torch.testing.assert_close(transforms, _reference_transforms(rotmats, joints, MANO_PARENTS))
    posed_ref, transforms_ref = batch_rigid_transform(rotmats, joints, torch.tensor(MANO_PARENTS), dtype=F64)
    torch.testing.assert_close(transforms, transforms_ref)
    torch.testing.assert_close(posed, posed_ref)
    eye = torch.eye(3, dtype=F64).expand(2, 16, 3, 3)
    torch.testing.assert_close(
        rigid_transforms(eye, joints, MANO_PARENTS), torch.eye(4, dtype=F64).expand(2, 16, 4, 4)
    )
    with pytest.raises(ValueError, match="parents"):
        rigid_transforms(eye, joints, [0] + list(MANO_PARENTS[1:]))


def _reference_lbs(verts, weights, transforms):
    out = torch.zeros_like(verts)
    for b in range(verts.shape[0]):
        for v in range(verts.shape[1]):
            w = weights[b, v] if weights.dim() == 3 else weights[v]
            blended = (w[:, None, None] * transforms[b]).sum(0)
            out[b, v] = blended[:3, :3] @ verts[b, v] + blended[:3, 3]
    return out


def test_lbs_matches_reference_identity_and_broadcasting():
    torch.manual_seed(3)
    batch, num_verts, num_joints = 2, 7, 4
    verts = torch.randn(batch, num_verts, 3, dtype=F64)
    weights = torch.rand(num_verts, num_joints, dtype=F64)
    weights = weights / weights.sum(1, keepdim=True)
    rotmats = batch_rodrigues(torch.randn(batch, num_joints, 3, dtype=F64))
    transforms = rigid_transforms(rotmats, torch.randn(batch, num_joints, 3, dtype=F64), [-1, 0, 1, 0])
    out = linear_blend_skinning(verts, weights, transforms)
    torch.testing.assert_close(out, _reference_lbs(verts, weights, transforms))
    torch.testing.assert_close(linear_blend_skinning(verts, weights.expand(batch, -1, -1), transforms), out)
    identity = torch.eye(4, dtype=F64).expand(batch, num_joints, 4, 4)
    torch.testing.assert_close(linear_blend_skinning(verts, weights, identity), verts)
    torch.testing.assert_close(
        linear_blend_skinning(verts[0], weights, identity), verts[:1].expand(batch, -1, -1)
    )
    with pytest.raises(ValueError, match="weights"):
        linear_blend_skinning(verts, weights[:, :3], transforms)


def test_lbs_gradcheck():
    torch.manual_seed(4)
    verts = torch.randn(1, 5, 3, dtype=F64, requires_grad=True)
    weights = torch.rand(5, 3, dtype=F64)
    weights = (weights / weights.sum(1, keepdim=True)).requires_grad_()
    axis_angle = (torch.randn(1, 3, 3, dtype=F64) * 0.7).requires_grad_()
    joints = torch.randn(1, 3, 3, dtype=F64, requires_grad=True)

    def skin(v, w, aa, j):
        return linear_blend_skinning(v, w, rigid_transforms(batch_rodrigues(aa), j, [-1, 0, 1]))

    assert torch.autograd.gradcheck(skin, (verts, weights, axis_angle, joints), atol=1e-6)


# ----------------------------------------------------------------------------------------------
# pose_mesh
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flat_hand_mean", [False, True])
def test_pose_mesh_equals_smplx_forward(flat_hand_mean):
    model = procedural_model("right", flat_hand_mean)
    torch.manual_seed(5)
    pose, shape, trans = torch.randn(3, 48) * 0.4, torch.randn(3, 10), torch.randn(3, 3) * 0.1
    verts_ref, joints_ref = model(pose, shape, trans)
    verts, joints = pose_mesh(
        model, model.shaped_template(shape), model.lbs_weights, pose, shape, trans, return_joints=True
    )
    assert (verts - verts_ref).abs().max() < 1e-5 and (joints - joints_ref).abs().max() < 1e-5
    # One canonical template (a mean shape) for the whole batch, as SRHand uses it.
    mean_shape = shape.mean(0)
    verts_mean = pose_mesh(
        model, model.shaped_template(mean_shape), model.lbs_weights, pose, mean_shape, trans
    )
    verts_ref, _ = model(pose, mean_shape.expand(3, -1), trans)
    assert (verts_mean - verts_ref).abs().max() < 1e-5


def test_pose_mesh_with_pose_blendshapes_equals_smplx(tmp_path):
    path = tmp_path / "MANO_RIGHT.pkl"
    write_chumpy_mano_pickle(str(path), fake_mano_dict(posedirs_scale=2e-3))
    model = HandModel.from_file(path, dtype=F64)
    torch.manual_seed(6)
    pose, shape, trans = (
        torch.randn(2, 48, dtype=F64) * 0.4,
        torch.randn(2, 10, dtype=F64),
        torch.randn(2, 3, dtype=F64),
    )
    verts_ref, _ = model(pose, shape, trans)
    canonical = model.shaped_template(shape)
    with_bs = pose_mesh(model, canonical, model.lbs_weights, pose, shape, trans, use_pose_blendshapes=True)
    torch.testing.assert_close(with_bs, verts_ref)
    without = pose_mesh(model, canonical, model.lbs_weights, pose, shape, trans)
    assert (without - verts_ref).abs().max() > 1e-4  # the blend shapes matter for this model
    with pytest.raises(ValueError, match="pose blend shapes"):
        pose_mesh(
            model, canonical[0, :100], model.lbs_weights[:100], pose, shape, trans, use_pose_blendshapes=True
        )


def test_pose_mesh_identity_returns_the_input():
    model = procedural_model("right", False, F64)
    verts = torch.randn(2, 50, 3, dtype=F64) * 0.05
    weights = torch.softmax(torch.randn(50, 16, dtype=F64), dim=1)
    pose = -model.pose_mean.expand(2, 48)  # cancels the mean pose: every rotation is the identity
    trans = torch.tensor([[0.1, 0.2, 0.3], [0.0, -0.1, 0.0]], dtype=F64)
    torch.testing.assert_close(pose_mesh(model, verts, weights, pose, None, trans), verts + trans[:, None])
    torch.testing.assert_close(pose_mesh(model, verts[0], weights, pose[:1]), verts[:1])


def test_pose_mesh_on_the_subdivided_template():
    model = procedural_model("right", False)
    verts_sub, faces_sub, weights_sub = subdivided_hand(model, level=1)
    torch.manual_seed(7)
    pose, trans = torch.randn(2, 48) * 0.3, torch.randn(2, 3) * 0.1
    posed_sub = pose_mesh(model, verts_sub, weights_sub, pose, None, trans)
    posed, _ = model(pose, torch.zeros(2, 10), trans)
    assert posed_sub.shape == (2, 3093, 3) and faces_sub.shape == (6152, 3)
    # Posing the subdivided template is close to subdividing the posed mesh (equal for rigid parts).
    for b in range(2):
        subdivided_posed, _, _ = loop_subdivide(posed[b], model.faces, 1)
        gap = (subdivided_posed - posed_sub[b]).norm(dim=1)
        assert gap.max() < 0.005 and gap.mean() < 5e-4
    with pytest.raises(ValueError, match="pose must be"):
        pose_mesh(model, verts_sub, weights_sub, pose[:, :45])
