"""Rotations (axis-angle <-> quaternion, slerp) and the skinned glTF writer/reader of
``utils.geometry.gltf_io``, against the project's own LBS (``utils.geometry.lbs``) and an independent reader
(trimesh)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from utils.geometry.gltf_io import (
    SkinAnimation,
    SkinnedMesh,
    read_skinned_glb,
    skin_vertices,
    write_skinned_glb,
)
from utils.geometry.lbs import batch_rodrigues, linear_blend_skinning, rigid_transforms
from utils.geometry.rotations import (
    axis_angle_to_quaternion,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    slerp,
)


def test_rotation_round_trips_and_matrices():
    rng = np.random.default_rng(0)
    aa = rng.normal(size=(50, 3))
    aa *= rng.uniform(0, np.pi - 1e-3, size=(50, 1)) / np.linalg.norm(aa, axis=1, keepdims=True)
    aa = np.concatenate([aa, np.zeros((1, 3)), [[1e-12, 0, 0]]])
    np.testing.assert_allclose(quaternion_to_axis_angle(axis_angle_to_quaternion(aa)), aa, atol=1e-10)
    q = axis_angle_to_quaternion(aa)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    expected = batch_rodrigues(torch.from_numpy(aa)).numpy()
    np.testing.assert_allclose(quaternion_to_matrix(q), expected, atol=1e-6)
    # q and -q are the same rotation
    np.testing.assert_allclose(quaternion_to_axis_angle(-q), aa, atol=1e-10)


def test_slerp_endpoints_constant_speed_and_shorter_arc():
    q0 = axis_angle_to_quaternion(np.array([0.0, 0.0, 0.2]))
    q1 = axis_angle_to_quaternion(np.array([0.0, 0.0, 1.4]))
    np.testing.assert_allclose(slerp(q0, q1, 0.0), q0, atol=1e-12)
    np.testing.assert_allclose(slerp(q0, q1, 1.0), q1, atol=1e-12)
    for t in (0.25, 0.5, 0.9):
        np.testing.assert_allclose(
            quaternion_to_axis_angle(slerp(q0, q1, t)), [0, 0, 0.2 + 1.2 * t], atol=1e-10
        )
    # -q1 is the same rotation: the result does not take the long way round
    np.testing.assert_allclose(quaternion_to_axis_angle(slerp(q0, -q1, 0.5)), [0, 0, 0.8], atol=1e-10)
    # nearly equal quaternions
    q2 = axis_angle_to_quaternion(np.array([0.0, 0.0, 0.2 + 1e-9]))
    assert np.isfinite(slerp(q0, q2, 0.5)).all()


def _chain_mesh() -> SkinnedMesh:
    """Three joints in a chain (root, child, grandchild) along x and a few vertices with up to 4 weights."""
    rng = np.random.default_rng(1)
    joints = np.array([[0.0, 0.0, 0.0], [0.05, 0.0, 0.0], [0.1, 0.01, 0.0]])
    verts = rng.uniform(-0.02, 0.12, size=(7, 3))
    skin_joints = np.array([[0, 1, 2, 0]] * 7)
    weights = rng.uniform(size=(7, 3))
    weights = np.concatenate([weights / weights.sum(1, keepdims=True), np.zeros((7, 1))], axis=1)
    return SkinnedMesh(
        verts=verts,
        faces=np.array([[0, 1, 2], [2, 3, 4], [4, 5, 6]]),
        colors=rng.uniform(size=(7, 3)),
        joints=joints,
        parents=np.array([-1, 0, 1]),
        joint_names=["a", "b", "c"],
        skin_joints=skin_joints,
        skin_weights=weights.astype(np.float32),
        rest_rotations=axis_angle_to_quaternion(rng.normal(scale=0.3, size=(3, 3))),
        root_translation=np.array([0.3, -0.1, 0.5]),
    )


def test_glb_round_trip_and_skinning_equals_the_projects_lbs(tmp_path):
    import trimesh

    mesh = _chain_mesh()
    path = write_skinned_glb(tmp_path / "chain.glb", mesh)
    glb = read_skinned_glb(path)
    np.testing.assert_allclose(glb["verts"], mesh.verts, atol=1e-7)
    np.testing.assert_array_equal(glb["faces"], mesh.faces)
    np.testing.assert_allclose(glb["colors"], mesh.colors, atol=1e-6)  # linear in the file, sRGB back
    np.testing.assert_array_equal(glb["parents"], mesh.parents)
    assert glb["joint_names"] == ["a", "b", "c"]
    np.testing.assert_allclose(glb["inverse_bind"][:, :3, 3], -mesh.joints, atol=1e-7)
    np.testing.assert_allclose(glb["inverse_bind"][:, :3, :3], np.tile(np.eye(3), (3, 1, 1)), atol=0)
    # an independent reader sees the mesh
    scene = trimesh.load(path)
    (geometry,) = scene.geometry.values()
    assert geometry.vertices.shape == (7, 3) and geometry.faces.shape == (3, 3)

    # the glTF skinning at a pose equals the project's LBS about the rest joints with the same weights
    pose = np.random.default_rng(2).normal(scale=0.5, size=(3, 3))
    trans = np.array([0.01, 0.02, -0.03])
    posed = skin_vertices(glb, axis_angle_to_quaternion(pose), mesh.joints[0] + trans)
    dense = np.zeros((7, 3))
    np.put_along_axis(dense, mesh.skin_joints[:, :3], mesh.skin_weights[:, :3].astype(np.float64), axis=1)
    transforms = rigid_transforms(
        batch_rodrigues(torch.from_numpy(pose))[None],
        torch.from_numpy(mesh.joints)[None],
        torch.tensor([-1, 0, 1]),
    )
    ref = linear_blend_skinning(torch.from_numpy(mesh.verts)[None], torch.from_numpy(dense), transforms)[0]
    np.testing.assert_allclose(posed, ref.numpy() + trans, atol=1e-6)
    # the file's default pose is its rest rotations at the root translation
    default = skin_vertices(glb)
    same = skin_vertices(glb, mesh.rest_rotations, mesh.joints[0] + mesh.root_translation)
    np.testing.assert_allclose(default, same, atol=1e-7)


def test_skinned_mesh_rejects_children_before_parents():
    mesh = _chain_mesh()
    with pytest.raises(ValueError, match="parents before children"):
        SkinnedMesh(
            **{**{k: getattr(mesh, k) for k in SkinnedMesh.__slots__}, "parents": np.array([-1, 2, 0])}
        )


def test_animation_clip_round_trip(tmp_path):
    mesh = _chain_mesh()
    rng = np.random.default_rng(3)
    clip = SkinAnimation(
        times=np.arange(4) / 10.0,
        rotations=axis_angle_to_quaternion(rng.normal(scale=0.4, size=(4, 3, 3))),
        root_translations=rng.normal(scale=0.05, size=(4, 3)),
        name="clip",
    )
    fields = {k: getattr(mesh, k) for k in SkinnedMesh.__slots__}
    glb = read_skinned_glb(
        write_skinned_glb(tmp_path / "anim.glb", SkinnedMesh(**{**fields, "animation": clip}))
    )
    anim = glb["animation"]
    np.testing.assert_allclose(anim["times"], clip.times, atol=1e-7)
    np.testing.assert_allclose(anim["rotations"], clip.rotations, atol=1e-7)
    np.testing.assert_allclose(anim["root_translations"], clip.root_translations, atol=1e-7)
    assert read_skinned_glb(write_skinned_glb(tmp_path / "still.glb", mesh))["animation"] is None
    with pytest.raises(ValueError, match="increasing"):
        SkinAnimation(times=np.zeros(2), rotations=np.zeros((2, 3, 4)), root_translations=np.zeros((2, 3)))
