"""Hand model loading (utils.geometry.mano) and the procedural stand-in hand (assets/procedural_hand)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from _hand_fixtures import (
    FINGER_CHAINS,
    REPO,
    fake_mano_dict,
    generator_module,
    procedural_model,
    typical_poses,
    write_chumpy_mano_pickle,
)

from utils.geometry.mano import (
    MANO_ENV_VAR,
    MANO_FINGERTIP_VERTEX_IDS,
    MANO_PARENTS,
    HandModel,
    HandModelFileNotFoundError,
    HandModelFormatError,
    default_hand_model_path,
    is_procedural_hand,
    load_mano_dict,
    resolve_hand_model_path,
)
from utils.geometry.mesh import uniform_laplacian

torch.set_num_threads(1)

MANO_KEYS = {
    "v_template",
    "f",
    "J",
    "J_regressor",
    "weights",
    "posedirs",
    "shapedirs",
    "hands_components",
    "hands_coeffs",
    "hands_mean",
    "kintree_table",
    "bs_style",
    "bs_type",
}


# ----------------------------------------------------------------------------------------------
# The file format
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["right", "left"])
def test_procedural_pickle_has_the_mano_format(side):
    import scipy.sparse

    path = default_hand_model_path(side)
    assert is_procedural_hand(path) and os.path.basename(path) == f"PROCEDURAL_HAND_{side.upper()}.pkl"
    assert os.path.getsize(path) < 4e6
    with open(path, "rb") as fh:
        raw = pickle.load(fh, encoding="latin1")
    assert set(raw) == MANO_KEYS
    assert raw["v_template"].shape == (778, 3) and raw["v_template"].dtype == np.float64
    assert raw["f"].shape == (1538, 3) and raw["f"].dtype == np.uint32
    assert isinstance(raw["J_regressor"], scipy.sparse.csc_matrix) and raw["J_regressor"].shape == (16, 778)
    assert raw["J"].shape == (16, 3) and raw["weights"].shape == (778, 16)
    assert raw["posedirs"].shape == (778, 3, 135) and raw["shapedirs"].shape == (778, 3, 10)
    assert raw["hands_components"].shape == (45, 45) and raw["hands_mean"].shape == (45,)
    assert raw["hands_coeffs"].shape == (1554, 45)
    assert raw["kintree_table"].dtype == np.int64
    assert raw["kintree_table"][0, 0] == 4294967295
    assert raw["kintree_table"][0, 1:].tolist() == list(MANO_PARENTS[1:])
    assert raw["bs_style"] == "lbs" and raw["bs_type"] == "lrotmin"
    np.testing.assert_allclose(raw["J"], raw["J_regressor"] @ raw["v_template"], atol=1e-12)


def test_load_mano_dict_returns_validated_arrays():
    data = load_mano_dict(default_hand_model_path("right"))
    assert data["f"].dtype == np.int64 and isinstance(data["J_regressor"], np.ndarray)
    np.testing.assert_allclose(data["J_regressor"].sum(1), 1.0, atol=1e-9)
    assert (data["J_regressor"] >= 0).all()
    np.testing.assert_allclose(data["weights"].sum(1), 1.0, atol=1e-9)
    assert (data["weights"] >= 0).all()


def test_chumpy_pickle_loads_without_chumpy(tmp_path):
    data = fake_mano_dict()
    path = tmp_path / "MANO_RIGHT.pkl"
    expected = write_chumpy_mano_pickle(str(path), data)
    with open(path, "rb") as fh:
        assert b"chumpy.reordering" in fh.read()
    assert "chumpy" not in sys.modules
    loaded = load_mano_dict(path)
    assert "chumpy" not in sys.modules
    assert loaded["shapedirs"].shape == (778, 3, 10)
    np.testing.assert_array_equal(loaded["shapedirs"], expected)
    np.testing.assert_array_equal(loaded["v_template"], data["v_template"])
    np.testing.assert_array_equal(loaded["J_regressor"], data["J_regressor"].toarray())
    model = HandModel.from_file(path)
    np.testing.assert_allclose(model.shapedirs.numpy(), expected, rtol=1e-6, atol=1e-9)


def test_missing_file_is_a_clear_error(tmp_path):
    path = tmp_path / "nowhere" / "MANO_RIGHT.pkl"
    with pytest.raises(HandModelFileNotFoundError) as err:
        load_mano_dict(path)
    assert isinstance(err.value, FileNotFoundError)
    message = str(err.value)
    assert str(path) in message and "mano.is.tue.mpg.de" in message and "procedural" in message


def test_truncated_file_is_a_clear_error(tmp_path):
    blob = Path(default_hand_model_path("right")).read_bytes()
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(HandModelFormatError) as err:
        load_mano_dict(path)
    assert isinstance(err.value, ValueError)
    assert str(path) in str(err.value) and "truncated" in str(err.value)
    path.write_bytes(b"")
    with pytest.raises(HandModelFormatError):
        load_mano_dict(path)


def test_non_mano_pickles_are_clear_errors(tmp_path):
    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps({"weights": np.zeros((3, 16)), "vertices": np.zeros((3, 3))}, protocol=2))
    with pytest.raises(HandModelFormatError, match="not a MANO model pickle: missing keys"):
        load_mano_dict(path)
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(HandModelFormatError, match="holds a list"):
        load_mano_dict(path)
    # A pickle that would run code is refused, not executed.
    path.write_bytes(b"cos\nsystem\n(S'echo owned'\ntR.")
    with pytest.raises(HandModelFormatError, match="refusing to load the global 'os.system'"):
        load_mano_dict(path)


def test_wrong_shapes_name_the_key(tmp_path):
    data = fake_mano_dict()
    data.pop("_shapedirs_full")
    data["weights"] = data["weights"][:, :15]
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(HandModelFormatError, match="'weights' has shape \\(778, 15\\)"):
        load_mano_dict(path)
    data = fake_mano_dict()
    data.pop("_shapedirs_full")
    data["kintree_table"] = np.zeros((2, 16), dtype=np.int64)
    path.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(HandModelFormatError, match="parents"):
        load_mano_dict(path)


# ----------------------------------------------------------------------------------------------
# Paths
# ----------------------------------------------------------------------------------------------
def test_resolve_hand_model_path(tmp_path, monkeypatch):
    monkeypatch.delenv(MANO_ENV_VAR, raising=False)
    assert resolve_hand_model_path(None, "left") == default_hand_model_path("left")
    assert os.path.isfile(default_hand_model_path("left"))
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(b"x")
    assert resolve_hand_model_path(tmp_path, "right") == str(tmp_path / "MANO_RIGHT.pkl")
    assert resolve_hand_model_path(tmp_path / "MANO_RIGHT.pkl", "right") == str(tmp_path / "MANO_RIGHT.pkl")
    with pytest.raises(HandModelFileNotFoundError, match="MANO_LEFT.pkl"):
        resolve_hand_model_path(tmp_path, "left")
    monkeypatch.setenv(MANO_ENV_VAR, str(tmp_path))
    assert resolve_hand_model_path(None, "right") == str(tmp_path / "MANO_RIGHT.pkl")
    monkeypatch.setenv(MANO_ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(HandModelFileNotFoundError, match=MANO_ENV_VAR):
        resolve_hand_model_path(None, "right")
    with pytest.raises(ValueError, match="side"):
        default_hand_model_path("both")


def test_imports_load_nothing():
    code = (
        "import sys, utils.geometry.mano, utils.geometry.lbs, utils.geometry.mesh, utils.geometry.mesh_io\n"
        "heavy = [m for m in ('smplx', 'trimesh', 'scipy.sparse', 'cv2') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


# ----------------------------------------------------------------------------------------------
# HandModel
# ----------------------------------------------------------------------------------------------
def test_hand_model_forward_and_buffers():
    model = procedural_model("right", False)
    assert list(model.parameters()) == []
    assert model.faces.dtype == torch.long and model.faces.shape == (1538, 3)
    assert model.parents.tolist() == list(MANO_PARENTS)
    assert model.lbs_weights.shape == (778, 16) and model.J_regressor.shape == (16, 778)
    assert model.shapedirs.shape == (778, 3, 10) and model.posedirs.shape == (778, 3, 135)
    assert model.pose_mean.shape == (48,) and (model.pose_mean[:3] == 0).all()
    torch.testing.assert_close(model.pose_mean[3:], model.hands_mean)
    batch = 3
    pose, shape, trans = torch.randn(batch, 48) * 0.2, torch.randn(batch, 10), torch.randn(batch, 3) * 0.1
    verts, joints = model(pose, shape, trans)
    assert verts.shape == (batch, 778, 3) and joints.shape == (batch, 16, 3)
    verts0, joints0 = model(pose, shape)
    torch.testing.assert_close(verts, verts0 + trans[:, None])
    torch.testing.assert_close(joints, joints0 + trans[:, None])
    with pytest.raises(ValueError, match="pose must be"):
        model(torch.zeros(2, 45), torch.zeros(2, 10))


def test_flat_zero_pose_is_the_template():
    model = procedural_model("right", True, torch.float64)
    verts, joints = model(torch.zeros(1, 48, dtype=torch.float64), torch.zeros(1, 10, dtype=torch.float64))
    torch.testing.assert_close(verts[0], model.v_template)
    torch.testing.assert_close(joints[0], model.J_regressor @ model.v_template)
    assert (model.pose_mean == 0).all()


@pytest.mark.parametrize("side", ["right", "left"])
def test_left_hand_is_the_mirror_of_the_right(side):
    right = procedural_model("right", False, torch.float64)
    left = procedural_model("left", False, torch.float64)
    assert not left.shapedirs_fixed  # the procedural left hand is built correctly
    mirror = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(left.v_template, right.v_template * mirror)
    torch.manual_seed(0)
    pose = torch.randn(2, 48, dtype=torch.float64) * 0.3
    shape = torch.randn(2, 10, dtype=torch.float64)
    pose_mirrored = pose * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64).repeat(16)
    v_right, j_right = right(pose, shape)
    v_left, j_left = left(pose_mirrored, shape)
    torch.testing.assert_close(v_left, v_right * mirror)
    torch.testing.assert_close(j_left, j_right * mirror)
    # Outward normals on both sides: face normals point away from the joints' centroid on average.
    for model in (right, left):
        v, f = model.v_template, model.faces
        n = torch.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=1)
        centre_dir = v[f].mean(1) - model.rest_joints().mean(0)
        assert ((n * centre_dir).sum(1) > 0).double().mean() > 0.8


def test_left_shapedirs_fix(tmp_path):
    right = load_mano_dict(default_hand_model_path("right"))
    with open(default_hand_model_path("left"), "rb") as fh:
        left_raw = pickle.load(fh)
    # Reproduce MANO's bug: the left x-components equal the right ones instead of their negation.
    left_raw["shapedirs"] = left_raw["shapedirs"].copy()
    left_raw["shapedirs"][:, 0, :] = right["shapedirs"][:, 0, :]
    (tmp_path / "MANO_LEFT.pkl").write_bytes(pickle.dumps(left_raw, protocol=2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        unchecked = HandModel.from_file(tmp_path / "MANO_LEFT.pkl", side="left")
    assert not unchecked.shapedirs_fixed and any("shapedirs" in str(w.message) for w in caught)
    fixed = HandModel.from_file(
        tmp_path / "MANO_LEFT.pkl", side="left", left_path_for_fix=default_hand_model_path("right")
    )
    assert fixed.shapedirs_fixed
    np.testing.assert_allclose(fixed.shapedirs[:, 0].numpy(), -right["shapedirs"][:, 0], rtol=1e-6, atol=1e-9)
    # The right file beside the left one is found automatically (MANO ships them together).
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(Path(default_hand_model_path("right")).read_bytes())
    assert HandModel.from_file(tmp_path / "MANO_LEFT.pkl", side="left").shapedirs_fixed


# ----------------------------------------------------------------------------------------------
# The procedural hand: geometry, rig, shape and pose spaces
# ----------------------------------------------------------------------------------------------
def test_procedural_mesh_is_a_clean_disc():
    gen = generator_module()
    data = load_mano_dict(default_hand_model_path("right"))
    summary = gen.check_hand({"v_template": data["v_template"], "f": data["f"], "J": data["J"]})
    assert summary["num_verts"] == 778 and summary["num_faces"] == 1538 and summary["num_edges"] == 2315
    assert summary["euler"] == 1 and summary["boundary_loops"] == [16]
    assert summary["winding_consistent"] and summary["max_faces_per_edge"] == 2
    assert summary["self_intersections"] == 0
    assert min(summary["joints_inside"]) > 0.9  # every joint inside the (wrist-closed) surface


def test_procedural_hand_dimensions_and_fingertips():
    model = procedural_model("right", True, torch.float64)
    joints = model.rest_joints().numpy()
    verts = model.v_template.numpy()
    assert np.linalg.norm(joints[0]) < 0.005  # wrist at the origin
    palm_length = np.linalg.norm(joints[4] - joints[0])
    assert 0.08 < palm_length < 0.10
    extent = verts.max(0) - verts.min(0)
    assert 0.17 < extent.max() < 0.22  # hand length
    for name, (mcp, pip, dip) in FINGER_CHAINS.items():
        tip = verts[MANO_FINGERTIP_VERTEX_IDS[name]]
        length = (
            np.linalg.norm(joints[pip] - joints[mcp])
            + np.linalg.norm(joints[dip] - joints[pip])
            + np.linalg.norm(tip - joints[dip])
        )
        assert 0.05 < length < 0.11, (name, length)
        # The fingertip vertex is the extreme vertex of the last bone's skin along that bone.
        direction = (joints[dip] - joints[pip]) / np.linalg.norm(joints[dip] - joints[pip])
        on_bone = model.lbs_weights[:, dip].numpy() > 0.5
        along = np.where(on_bone, verts @ direction, -np.inf)
        assert along[MANO_FINGERTIP_VERTEX_IDS[name]] > along.max() - 5e-4, name
    # The thumb sits on the radial side and in front of the palm (opposition).
    assert joints[15, 2] > joints[1, 2] and joints[15, 1] < joints[1, 1]


def test_joint_regressor_is_convex_and_follows_shape():
    model = procedural_model("right", True, torch.float64)
    regressor = model.J_regressor
    assert (regressor >= 0).all()
    torch.testing.assert_close(regressor.sum(1), torch.ones(16, dtype=torch.float64))
    assert ((regressor > 0).sum(1) <= 80).all()  # a ring of vertices per joint, not the whole hand
    rest = model.rest_joints()
    bigger = model.rest_joints(torch.tensor([2.0] + [0.0] * 9, dtype=torch.float64))
    # Direction 0 is the overall size (+5 % per unit about the wrist): joints scale with it.
    torch.testing.assert_close(bigger, rest * 1.10, atol=1e-4, rtol=0)
    longer_index = model.rest_joints(torch.tensor([0.0] * 5 + [2.0] + [0.0] * 4, dtype=torch.float64))
    moved = (longer_index - rest).norm(dim=1)
    assert moved[[2, 3]].min() > 0.003 and moved[[0, 4, 5, 6, 7, 13, 14, 15]].max() < 1e-3


def test_shape_directions_are_smooth_and_plausible():
    model = procedural_model("right", True, torch.float64)
    sd = model.shapedirs  # (V, 3, 10)
    per_direction = sd.norm(dim=1).max(0).values
    assert (per_direction > 5e-4).all() and (per_direction < 0.02).all()
    # Smooth: each vertex moves like the mean of its neighbours (no spikes); a radial thickening of
    # a 10-sided finger ring alone gives about 0.2 here.
    laplacian = uniform_laplacian(778, model.faces, dtype=torch.float64)
    roughness = torch.stack([torch.sparse.mm(laplacian, sd[:, :, k]) for k in range(10)], -1)
    assert (roughness.norm(dim=1).max(0).values < 0.35 * per_direction).all()
    for beta in (-3.0, 3.0):
        for k in range(10):
            shape = torch.zeros(10, dtype=torch.float64)
            shape[k] = beta
            verts = model.shaped_template(shape)
            assert torch.isfinite(verts).all()
            extent = verts.max(0).values - verts.min(0).values
            assert 0.15 < extent.max() < 0.25


def test_pose_space_is_orthonormal_and_mild():
    model = procedural_model("right", False, torch.float64)
    components = model.hands_components
    torch.testing.assert_close(components @ components.T, torch.eye(45, dtype=torch.float64))
    mean = model.hands_mean.reshape(15, 3).norm(dim=1)
    assert (mean < 0.5).all() and mean.max() > 0.05


def test_poses_stay_plausible():
    model = procedural_model("right", True, torch.float64)
    edges = torch.tensor(
        generator_module().find_self_intersections(model.v_template.numpy(), model.faces.numpy())[1]
    )
    rest_len = (model.v_template[edges[:, 0]] - model.v_template[edges[:, 1]]).norm(dim=1)
    poses = typical_poses(model)
    verts, joints = model(torch.stack(list(poses.values())), torch.zeros(len(poses), 10, dtype=torch.float64))
    tips = torch.tensor([MANO_FINGERTIP_VERTEX_IDS[n] for n in ("index", "middle", "ring", "pinky")])
    palm_centre = joints[:, [0, 1, 4, 7, 10]].mean(1)
    tip_dist = (verts[:, tips] - palm_centre[:, None]).norm(dim=-1)
    for k, name in enumerate(poses):
        ratio = (verts[k, edges[:, 0]] - verts[k, edges[:, 1]]).norm(dim=1) / rest_len
        assert ratio.min() > 0.15 and ratio.max() < 3.0, (name, ratio.min(), ratio.max())
        assert (verts[k] - model.v_template).norm(dim=1).max() < 0.2, name
    fist = list(poses).index("fist")
    assert (tip_dist[fist] < 0.5 * tip_dist[0]).all()


def test_joints_follow_the_kinematic_tree():
    model = procedural_model("right", True, torch.float64)
    parents = MANO_PARENTS
    descendants = {j: {j} for j in range(16)}
    for j in range(15, 0, -1):
        descendants[parents[j]] |= descendants[j]
    torch.manual_seed(1)
    base = torch.randn(48, dtype=torch.float64) * 0.2
    _, joints0 = model(base[None], torch.zeros(1, 10, dtype=torch.float64))
    for k in range(1, 16):
        pose = base.clone()
        pose[3 * k : 3 * k + 3] += torch.tensor([0.3, -0.2, 0.4], dtype=torch.float64)
        _, joints = model(pose[None], torch.zeros(1, 10, dtype=torch.float64))
        moved = {j for j in range(16) if (joints[0, j] - joints0[0, j]).norm() > 1e-9}
        assert moved == descendants[k] - {k}, (k, moved)
    rest = model.rest_joints()
    bones = [(j, parents[j]) for j in range(1, 16)]
    _, posed = model(torch.randn(4, 48, dtype=torch.float64), torch.zeros(4, 10, dtype=torch.float64))
    for j, p in bones:
        torch.testing.assert_close(
            (posed[:, j] - posed[:, p]).norm(dim=-1), (rest[j] - rest[p]).norm().expand(4)
        )


def test_generator_reproduces_the_shipped_pickles():
    gen = generator_module()
    right = gen.build_hand("right")
    for side, built in (("right", right), ("left", gen.mirror_to_left(right))):
        shipped = load_mano_dict(default_hand_model_path(side))
        for key in ("v_template", "weights", "shapedirs", "hands_mean", "hands_components", "J"):
            np.testing.assert_allclose(
                built[key],
                shipped[key],
                atol=1e-9,
                err_msg=f"{side} {key}: " "regenerate with scripts/make_procedural_hand.py",
            )
        np.testing.assert_array_equal(built["f"], shipped["f"])
        np.testing.assert_allclose(built["J_regressor"].toarray(), shipped["J_regressor"], atol=1e-9)
