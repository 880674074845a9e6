"""models/avatar.py: ConditionNetwork init/renewal and HandAvatar geometry, rendering and gradients.

The HandAvatar tests use a self-made 16-joint "hand" (a small sphere with random skinning weights) so
they do not depend on MANO files; one test also runs the shipped procedural hand when present.
"""

import math
import os

import numpy as np
import pytest
import torch

from models.avatar import ConditionNetwork, HandAvatar
from trainers.losses import edge_stretch_loss, reconstruction_losses
from utils.geometry.camera import Cameras, look_at
from utils.geometry.lbs import pose_mesh
from utils.geometry.mano import HandModel, default_hand_model_path
from utils.render import get_renderer

MANO_PARENTS = [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]


# ---------------------------------------------------------------------------------------------
# ConditionNetwork
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weight_norm", [True, False])
def test_zero_init_starts_exactly_at_x_mean(weight_norm):
    torch.manual_seed(0)
    x_mean = torch.randn(7, 3)
    net = ConditionNetwork(x_mean, d_cond=5, width=16, depth=3, d_extra=2, weight_norm=weight_norm)
    out, code = net(torch.randn(5), torch.randn(7, 2))
    assert torch.equal(out, x_mean) and torch.equal(code, torch.zeros(7, 10))
    out.pow(2).sum().backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0  # the last layer (gain or weight) learns


def test_geometric_init_is_a_vertex_independent_offset():
    torch.manual_seed(0)
    x_mean = torch.randn(6, 3)
    net = ConditionNetwork(x_mean, d_cond=4, width=32, depth=4, init="geometric")
    out, _ = net(torch.full((4,), 0.3))
    shift = out - x_mean
    assert shift.abs().max() > 1e-3  # the reference init does not start at x_mean ...
    torch.testing.assert_close(shift, shift[:1].expand_as(shift))  # ... but shifts every vertex alike


def test_condition_network_checks_inputs():
    net = ConditionNetwork(torch.zeros(4, 2), d_cond=3, width=8, depth=1, d_extra=1)
    with pytest.raises(ValueError, match="cond"):
        net(torch.zeros(4))
    with pytest.raises(ValueError, match="extra"):
        net(torch.zeros(3))
    with pytest.raises(ValueError, match="init"):
        ConditionNetwork(torch.zeros(4, 2), init="xavier")


def _trained_net(seed=0):
    torch.manual_seed(seed)
    net = ConditionNetwork(torch.randn(5, 2), d_cond=3, width=8, depth=2)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net


def test_renew_mean_recentre_keeps_predictions():
    net = _trained_net()
    conds = torch.randn(4, 3)
    before = torch.stack([net(c)[0] for c in conds]).detach()
    net.renew_mean(before)
    after = torch.stack([net(c)[0] for c in conds]).detach()
    torch.testing.assert_close(after, before)
    torch.testing.assert_close(net.x_mean, before.mean(0))


def test_renew_mean_reference_double_counts():
    net = _trained_net()
    conds = torch.randn(4, 3)
    x_mean0 = net.x_mean.clone()
    before = torch.stack([net(c)[0] for c in conds]).detach()
    net.renew_mean(before, mode="reference")
    after = torch.stack([net(c)[0] for c in conds]).detach()
    torch.testing.assert_close(after, before + (before.mean(0) - x_mean0))
    with pytest.raises(ValueError, match="mode"):
        net.renew_mean(before, mode="other")


# ---------------------------------------------------------------------------------------------
# HandAvatar on a tiny self-made hand
# ---------------------------------------------------------------------------------------------


def tiny_hand(seed=0):
    """A 5 cm sphere (42 vertices) with 16 joints, MANO parents and random skinning."""
    import trimesh

    g = torch.Generator().manual_seed(seed)
    sphere = trimesh.creation.icosphere(subdivisions=1, radius=0.05)
    v = torch.tensor(sphere.vertices, dtype=torch.float32)
    num = v.shape[0]
    jreg = torch.rand(16, num, generator=g)
    return dict(
        v_template=v,
        shapedirs=0.002 * torch.randn(num, 3, 10, generator=g),
        J_regressor=jreg / jreg.sum(1, keepdim=True),
        parents=torch.tensor(MANO_PARENTS),
        pose_mean=0.1 * torch.randn(48, generator=g),
        faces=torch.tensor(sphere.faces, dtype=torch.long),
        lbs_weights=torch.softmax(3 * torch.randn(num, 16, generator=g), -1),
    )


def make_cameras(size=(32, 32), num=2):
    eyes = [(0.0, 0.0, -0.4), (0.3, 0.0, -0.3), (0.0, 0.3, -0.3)][:num]
    rts = [look_at(e) for e in eyes]
    f = 2.0 * size[1]
    K = torch.tensor([[f, 0.0, size[1] / 2], [0.0, f, size[0] / 2], [0.0, 0.0, 1.0]])
    return Cameras(
        K=K.expand(num, 3, 3),
        R=torch.stack([r for r, _ in rts]),
        t=torch.stack([t for _, t in rts]),
        image_size=size,
    )


def reference_lbs(verts, weights, joints, parents, pose):
    """Independent numpy LBS: G_i = G_parent [R_i | J_i - J_parent], A_i = G_i [I | -J_i]."""
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_rotvec(pose.reshape(16, 3)).as_matrix()
    glob = []
    for i in range(16):
        local = np.eye(4)
        local[:3, :3] = rot[i]
        local[:3, 3] = joints[i] - (joints[parents[i]] if parents[i] >= 0 else 0)
        glob.append(local if parents[i] < 0 else glob[parents[i]] @ local)
    rel = []
    for i in range(16):
        a = glob[i].copy()
        a[:3, 3] -= glob[i][:3, :3] @ joints[i]
        rel.append(a)
    per_vertex = np.einsum("vj,jab->vab", weights, np.stack(rel))
    return np.einsum("vab,vb->va", per_vertex[:, :3], np.concatenate([verts, np.ones((len(verts), 1))], 1))


def small_avatar(levels=1, **kw):
    torch.manual_seed(0)
    kw = dict(
        num_views=3,
        subdivision_levels=levels,
        lbs_width=16,
        lbs_depth=2,
        color_width=16,
        color_depth=2,
        delta_width=16,
        delta_depth=2,
        **kw,
    )
    return HandAvatar(**tiny_hand(), **kw)


def test_geometry_is_lbs_of_the_canonical_mesh():
    hand = tiny_hand()
    avatar = small_avatar(levels=1, mean_shape=torch.linspace(-1, 1, 10))
    assert avatar.verts_template.shape == (162, 3) and avatar.faces.shape == (320, 3)
    torch.testing.assert_close(avatar.weights_init.sum(-1), torch.ones(162))
    pose = 0.3 * torch.randn(48, generator=torch.Generator().manual_seed(1))
    trans = torch.tensor([0.01, -0.02, 0.03])
    out = avatar.forward_geometry(pose, trans)
    assert out["delta"].abs().max() == 0 and out["verts_canonical"].shape == (162, 3)
    torch.testing.assert_close(out["weights"], avatar.weights_init, atol=2e-5, rtol=0)
    torch.testing.assert_close(out["albedo"], torch.tensor([0.44127, 0.36127, 0.31997]).expand(162, 3))
    shaped = hand["v_template"] + torch.einsum("vcs,s->vc", hand["shapedirs"], torch.linspace(-1, 1, 10))
    joints = (hand["J_regressor"] @ shaped).numpy()
    expected = (
        reference_lbs(
            avatar.verts_template.double().numpy(),
            avatar.weights_init.double().numpy(),
            joints,
            MANO_PARENTS,
            (pose + hand["pose_mean"]).double().numpy(),
        )
        + trans.numpy()
    )
    torch.testing.assert_close(
        out["verts_posed"], torch.tensor(expected, dtype=torch.float32), atol=2e-6, rtol=0
    )
    # identity rotations (pose = -pose_mean): the posed mesh is the canonical mesh, translated
    ident = avatar.forward_geometry(-hand["pose_mean"], trans)
    torch.testing.assert_close(ident["verts_posed"], avatar.verts_template + trans, atol=1e-6, rtol=0)


def test_condition_is_rotations_over_pi():
    avatar = small_avatar(levels=0)
    cond = avatar.condition(-avatar.pose_mean)
    torch.testing.assert_close(cond, torch.eye(3).expand(16, 3, 3).reshape(-1) / math.pi)
    assert small_avatar(levels=0, use_rotpose=False).condition(torch.ones(48)).shape == (48,)


def test_set_prephase_and_renew_means():
    avatar = small_avatar(levels=0)
    num = avatar.num_verts
    delta = 0.001 * torch.randn(num, 3)
    albedo = torch.rand(num, 3) * 0.8 + 0.1
    avatar.set_prephase(delta=delta, albedo=albedo, sh_coeffs=torch.ones(3, 27))
    out = avatar.forward_geometry(torch.zeros(48), torch.zeros(3))
    torch.testing.assert_close(out["delta"], delta)
    torch.testing.assert_close(out["albedo"], albedo, atol=1e-5, rtol=0)
    with torch.no_grad():
        for p in avatar.parameters():
            p.add_(0.05 * torch.randn_like(p))
    poses = 0.2 * torch.randn(3, 48)
    before = [avatar.forward_geometry(p, torch.zeros(3))["verts_posed"].detach() for p in poses]
    avatar.renew_means(poses)
    after = [avatar.forward_geometry(p, torch.zeros(3))["verts_posed"].detach() for p in poses]
    for a, b in zip(after, before, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_render_shapes_and_mean_texture():
    avatar = small_avatar(levels=1)
    cams = make_cameras((32, 32), num=2)
    out = avatar(torch.zeros(48), torch.zeros(3), cams, [2, 0], renderer=get_renderer("torch"))
    num = avatar.num_verts
    assert out["image"].shape == (2, 3, 32, 32) and out["shading_only"].shape == (2, 3, 32, 32)
    assert out["mask"].shape == (2, 1, 32, 32) and out["normal"].shape == (2, 3, 32, 32)
    assert out["visible"].shape == (2, num) and out["visible"].dtype == torch.bool
    assert out["uv_pix"].shape == (2, num, 2) and out["verts_posed"].shape == (num, 3)
    assert out["coverage"].any() and 0 < out["visible"].sum() < 2 * num  # the far side is hidden
    assert out["image"].min() >= 0 and out["image"].max() <= 1
    # unit camera-space normals on the mesh; they face the camera (n_z < 0 in OpenCV camera space)
    n = out["normal"].permute(0, 2, 3, 1)[out["coverage"][:, 0]]
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(len(n)), atol=1e-4, rtol=0)
    assert (n[:, 2] < 0).float().mean() > 0.9
    # constant albedo (the initial mean hand colour): the mean-texture render equals the render
    torch.testing.assert_close(out["shading_only"], out["image"], atol=1e-6, rtol=0)
    # visible vertices project inside the image; a half-size raster halves uv_pix
    uv = out["uv_pix"][out["visible"]]
    assert (uv >= 0).all() and (uv <= 32).all()
    half = avatar(
        torch.zeros(48), torch.zeros(3), cams, [2, 0], resolution=(16, 16), renderer=get_renderer("torch")
    )
    torch.testing.assert_close(half["uv_pix"], out["uv_pix"] / 2)


def test_image_gradient_reaches_networks_and_sh():
    avatar = small_avatar(levels=1)
    with torch.no_grad():
        avatar.sh_coeffs.normal_(0, 0.1)
    out = avatar(
        torch.zeros(48), torch.zeros(3), make_cameras((24, 24)), [0, 1], renderer=get_renderer("torch")
    )
    target = torch.rand_like(out["image"])
    ((out["image"] - target).abs().mean() + (out["shading_only"] - target).abs().mean()).backward()

    def total(module):
        return sum(p.grad.abs().sum() for p in module.parameters() if p.grad is not None)

    assert total(avatar.delta_net) > 0
    assert total(avatar.color_net) > 0
    assert total(avatar.lbs_net) > 0
    assert avatar.sh_coeffs.grad[:2].abs().sum() > 0 and avatar.sh_coeffs.grad[2].abs().sum() == 0


def test_procedural_hand_if_present():
    path = default_hand_model_path("right")
    if not os.path.exists(path):
        pytest.skip("procedural hand asset not generated (scripts/make_procedural_hand.py)")
    hand = HandModel.from_file(path, side="right")
    avatar = HandAvatar.from_hand_model(
        hand,
        num_views=2,
        subdivision_levels=0,
        lbs_width=16,
        lbs_depth=1,
        color_width=16,
        color_depth=1,
        delta_width=16,
        delta_depth=1,
    )
    pose = 0.2 * torch.randn(48, generator=torch.Generator().manual_seed(0))
    out = avatar.forward_geometry(pose, torch.zeros(3))
    assert out["verts_posed"].shape == (778, 3)
    expected = pose_mesh(
        hand, avatar.verts_template, avatar.weights_init, pose[None], torch.zeros(1, 10), torch.zeros(1, 3)
    )
    torch.testing.assert_close(out["verts_posed"], expected.reshape(778, 3), atol=2e-6, rtol=0)


def test_mesh_operators_and_reconstruction_losses_end_to_end():
    avatar = small_avatar(levels=1)
    ops = avatar.mesh_operators()
    assert ops["edges"].shape == (480, 2) and ops["laplacian"].shape == (162, 162)
    assert edge_stretch_loss(avatar.verts_template, ops["edges"], ops["rest_sq_lengths"]).item() == 0.0
    assert avatar.mesh_operators() is ops  # cached
    out = avatar(
        0.1 * torch.ones(48), torch.zeros(3), make_cameras((24, 24)), [0, 1], renderer=get_renderer("torch")
    )
    sr = torch.rand_like(out["image"])
    valid = out["coverage"].float()
    terms = reconstruction_losses(
        out,
        sr,
        valid,
        laplacian=ops["laplacian"],
        edges=ops["edges"],
        rest_sq_lengths=ops["rest_sq_lengths"],
        weights_init=avatar.weights_init,
        delta_anchor=torch.zeros(avatar.num_verts, 3),
        perceptual=lambda a, b: (a - b).pow(2).mean(),
    )
    terms["total"].backward()
    assert torch.isfinite(terms["total"]) and avatar.sh_coeffs.grad.abs().sum() > 0


def test_shape_offset_moves_template_and_joints_as_the_hand_model():
    from utils.geometry.mesh import loop_subdivide

    hand = HandModel.from_file(default_hand_model_path("right"), side="right")
    mean = 0.5 * torch.randn(10, generator=torch.Generator().manual_seed(1))
    offset = torch.tensor([1.0, -0.8, 0.5, 0.0, 0.3, 0.0, 0.0, -0.4, 0.0, 0.2])
    small = dict(lbs_width=8, lbs_depth=1, color_width=8, color_depth=1, delta_width=8, delta_depth=1)
    exact = HandAvatar.from_hand_model(hand, num_views=1, subdivision_levels=0, mean_shape=mean, **small)
    target = hand.shaped_template(mean + offset).float()
    torch.testing.assert_close(
        exact.verts_template + exact.shape_displacement(offset), target, atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        exact.rest_joints(offset), hand.rest_joints(mean + offset).float(), atol=1e-6, rtol=0
    )

    # subdivided: the midpoint-upsampled directions against Loop subdivision of the shaped template
    avatar = HandAvatar.from_hand_model(hand, num_views=1, subdivision_levels=2, mean_shape=mean, **small)
    loop = torch.as_tensor(loop_subdivide(target, hand.faces, 2)[0]).float()
    moved = avatar.shape_displacement(offset)
    error = (avatar.verts_template + moved - loop).norm(dim=-1)
    assert float(error.max()) < 0.05 * float(moved.norm(dim=-1).max()), (
        float(error.max()),
        float(moved.norm(dim=-1).max()),
    )

    # posing with the offset equals posing the avatar with the offset baked in
    pose = 0.2 * torch.randn(48, generator=torch.Generator().manual_seed(2))
    trans = torch.tensor([0.01, 0.0, -0.02])
    with_offset = avatar.forward_geometry(pose, trans, offset)["verts_posed"]
    avatar.bake_shape_offset(offset)
    torch.testing.assert_close(
        avatar.forward_geometry(pose, trans)["verts_posed"], with_offset, atol=1e-6, rtol=0
    )
