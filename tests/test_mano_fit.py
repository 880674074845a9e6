"""MANO fitting (utils.geometry.mano_fit, utils.geometry.closest_point, scripts/fit_mano.py).

Known cases on the shipped procedural hand: a mesh posed with known parameters is fitted back from
scratch and must match to micrometres; joints alone, several frames with one shape, a noisy target
with outliers; malformed inputs fail with errors that name the argument and the shape received.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from _hand_fixtures import REPO, curl_pose, procedural_model

from utils.geometry.closest_point import PointCloudSearch, TriangleMeshSearch, closest_point_barycentric
from utils.geometry.mano import MANO_FINGERTIP_VERTEX_IDS
from utils.geometry.mano_fit import FitSettings, ManoFit, fit_mano
from utils.metrics.geometry import point_to_surface_distance_brute, point_triangle_distance

torch.set_num_threads(1)
TIPS = list(MANO_FINGERTIP_VERTEX_IDS.values())


def _pose(model, seed: int, orient_scale: float = 0.4, noise: float = 0.05) -> torch.Tensor:
    """(48,) a moderately bent hand: curled fingers plus small noise, a random global orientation."""
    gen = torch.Generator().manual_seed(seed)
    pose = torch.zeros(48)
    pose[:3] = torch.randn(3, generator=gen) * orient_scale
    curl = curl_pose(model, {1: 0.5, 2: 0.4, 4: 0.7, 5: 0.3, 7: 0.2, 10: 0.6, 13: 0.3, 14: 0.4}).float()
    pose[3:] = curl[3:] + noise * torch.randn(45, generator=gen)
    return pose


@pytest.fixture(scope="module")
def hand():
    """The procedural hand, three poses with one shape, their meshes and 21 joints (metres)."""
    model = procedural_model()
    shape = torch.randn(10, generator=torch.Generator().manual_seed(0)) * 0.5
    pose = torch.stack([_pose(model, s) for s in (1, 3, 5)])
    trans = torch.tensor([[0.02, -0.01, 0.35], [0.0, 0.03, 0.4], [-0.05, 0.0, 0.3]])
    with torch.no_grad():
        verts, joints = model(pose, shape, trans)
    return {
        "model": model,
        "pose": pose,
        "shape": shape,
        "trans": trans,
        "verts": verts,
        "joints": torch.cat([joints, verts[:, TIPS]], 1),
    }


def _template_error_mm(model, shape_a, shape_b) -> float:
    """Largest rest-pose vertex difference of two shapes (betas with tiny blend shapes are weakly
    determined, the surface they make is what must agree)."""
    return float((model.shaped_template(shape_a) - model.shaped_template(shape_b)).norm(dim=-1).max() * 1000)


# ----------------------------------------------------------------------------------------------
# Closest points
# ----------------------------------------------------------------------------------------------
def test_closest_point_search_matches_brute_force():
    model = procedural_model()
    verts, faces = model.v_template.double(), model.faces
    gen = torch.Generator().manual_seed(0)
    for spread in (0.0005, 0.005, 0.05):  # on the surface, near it, far away
        points = verts[torch.randint(0, 778, (500,), generator=gen)] + spread * torch.randn(
            500, 3, generator=gen, dtype=torch.float64
        )
        face_idx, bary, dist = TriangleMeshSearch(verts, faces).query(points)
        expected = point_to_surface_distance_brute(points, verts, faces)
        torch.testing.assert_close(dist, expected, atol=1e-12, rtol=0)
        closest = (bary[:, :, None] * verts[faces[face_idx]]).sum(1)
        torch.testing.assert_close((points - closest).norm(dim=-1), expected, atol=1e-12, rtol=0)
        assert (bary >= -1e-12).all() and torch.allclose(bary.sum(1), torch.ones(500, dtype=torch.float64))
        _, _, approx = TriangleMeshSearch(verts, faces).query(points, exact=False)
        assert (approx >= expected - 1e-12).all()  # an upper bound
    idx, dist = PointCloudSearch(verts).query(verts[:10] + 1e-4)
    assert idx.tolist() == list(range(10)) and torch.allclose(
        dist, torch.full((10,), 3**0.5 * 1e-4, dtype=torch.float64)
    )


def test_closest_point_barycentric_matches_the_metric_and_handles_degenerate_triangles():
    gen = torch.Generator().manual_seed(1)
    tris = torch.randn(2000, 3, 3, generator=gen, dtype=torch.float64)
    tris[:50, 2] = tris[:50, 0] + 0.3 * (tris[:50, 1] - tris[:50, 0])  # zero area (collinear corners)
    tris[50:60, 1] = tris[50:60, 0]  # two equal corners
    points = torch.randn(2000, 3, generator=gen, dtype=torch.float64) * 1.5
    bary = closest_point_barycentric(points, tris)
    closest = (bary[:, :, None] * tris).sum(1)
    torch.testing.assert_close(
        (points - closest).norm(dim=-1), point_triangle_distance(points, tris), atol=1e-10, rtol=0
    )
    with pytest.raises(ValueError, match=r"points \(P,3\) and tris \(P,3,3\)"):
        closest_point_barycentric(points, tris[:10])


# ----------------------------------------------------------------------------------------------
# Known cases
# ----------------------------------------------------------------------------------------------
def test_recovers_generating_parameters_from_an_exact_mesh(hand):
    model = hand["model"]
    fit = fit_mano(model, target_verts=hand["verts"][:1], target_faces=model.faces)
    assert isinstance(fit, ManoFit)
    assert fit.pose.shape == (1, 48) and fit.shape.shape == (10,) and fit.trans.shape == (1, 3)
    assert (
        fit.verts.shape == (1, 778, 3) and fit.joints.shape == (1, 21, 3) and fit.pose.dtype == torch.float32
    )
    vertex_error = (fit.verts - hand["verts"][:1]).norm(dim=-1) * 1000
    assert vertex_error.max() < 0.1, vertex_error.max()
    assert ((fit.joints - hand["joints"][:1]).norm(dim=-1) * 1000).max() < 0.1
    assert (fit.pose - hand["pose"][:1]).abs().max() < 0.01  # radians
    assert ((fit.trans - hand["trans"][:1]).norm() * 1000) < 0.1
    assert _template_error_mm(model, fit.shape, hand["shape"]) < 0.1
    report = fit.report
    assert report["converged"] and report["iterations"] == sum(report["stage_iterations"].values())
    residual = report["residual_mm"]
    assert residual["surface_to_target_mean"] < 0.02 and residual["target_to_surface_mean"] < 0.02
    assert residual["p90"] < 0.05 and residual["joints_mean"] is None
    assert len(report["per_frame"]) == 1 and report["per_frame"][0]["frame"] == 0
    assert report["failed_frames"] == [] and report["rescue"] == {}  # the quality check passes
    assert report["per_frame"][0]["failed_checks"] == {} and report["per_frame"][0]["quality"]["fingertip"]
    json.dumps(report)  # plain JSON types only
    # The pose is what HandModel.forward takes (pose_mean not included).
    with torch.no_grad():
        again, _ = model(fit.pose, fit.shape, fit.trans)
    torch.testing.assert_close(again, fit.verts)


def test_joints_only_fit_recovers_the_joints(hand):
    model = hand["model"]
    fit = fit_mano(model, target_joints=hand["joints"][1:2])
    joint_error = (fit.joints - hand["joints"][1:2]).norm(dim=-1) * 1000
    assert joint_error.max() < 0.1, joint_error
    assert fit.report["converged"] and fit.report["residual_mm"]["joints_mean"] < 0.05
    assert fit.report["residual_mm"]["surface_to_target_mean"] is None and fit.report["alignment"] == "joints"
    # 16 MANO joints and missing (NaN) joints.
    partial = hand["joints"][1:2, :16].clone()
    partial[0, 7:10] = float("nan")
    fit16 = fit_mano(model, target_joints=partial)
    valid = torch.isfinite(partial).all(-1)
    assert ((fit16.joints[:, :16][valid] - partial[valid]).norm(dim=-1) * 1000).max() < 0.2


def test_several_frames_share_one_shape(hand):
    model = hand["model"]
    fit = fit_mano(
        model, target_verts=hand["verts"][:2], target_faces=model.faces, target_joints=hand["joints"][:2]
    )
    assert fit.shape.shape == (10,) and fit.pose.shape == (2, 48) and fit.report["shared_shape"]
    assert ((fit.verts - hand["verts"][:2]).norm(dim=-1) * 1000).max() < 0.1
    assert _template_error_mm(model, fit.shape, hand["shape"]) < 0.1
    assert len(fit.report["per_frame"]) == 2 and all(f["joints_mean"] < 0.05 for f in fit.report["per_frame"])
    per_frame = fit_mano(model, target_joints=hand["joints"][:2], settings=FitSettings(share_shape=False))
    assert per_frame.shape.shape == (2, 10)


def test_noisy_target_with_outliers_stays_stable(hand):
    """1.5 mm Gaussian noise on every target point and 3% outliers 3 cm away, as a point cloud."""
    model = hand["model"]
    gen = torch.Generator().manual_seed(5)
    noisy = hand["verts"][:1] + 0.0015 * torch.randn(1, 778, 3, generator=gen)
    outliers = torch.rand(778, generator=gen) < 0.03
    noisy[0, outliers] += 0.03 * torch.nn.functional.normalize(
        torch.randn(int(outliers.sum()), 3, generator=gen), dim=-1
    )
    fit = fit_mano(model, target_verts=noisy, settings=FitSettings(robust="geman_mcclure"))
    vertex_error = (fit.verts - hand["verts"][:1]).norm(dim=-1) * 1000
    assert vertex_error.mean() < 1.0 and torch.quantile(vertex_error, 0.9) < 2.0, vertex_error
    assert fit.report["converged"]
    # The residual of the inliers is the noise: their mean distance to the surface ~ sigma.
    with torch.no_grad():
        inlier_dist = (
            point_to_surface_distance_brute(noisy[0, ~outliers].double(), fit.verts[0].double(), model.faces)
            * 1000
        )
    assert 0.7 < float(inlier_dist.mean()) < 1.8


# ----------------------------------------------------------------------------------------------
# Quality check
# ----------------------------------------------------------------------------------------------
def _crossed_fingers(model) -> torch.Tensor:
    """(48,) a hard pose as ``HandModel.forward`` takes it: ring and pinky curled into the palm and
    pressed together, the middle finger crossed over the index, the thumb curled."""
    curls = {1: 0.3, 4: 0.2, 7: 1.4, 8: 1.6, 9: 1.0, 10: 1.4, 11: 1.6, 12: 1.0, 13: 0.6, 14: 0.9, 15: 0.8}
    pose = curl_pose(model, curls).float()
    pose[3 * 4 + 1] += 0.45  # middle across the index
    pose[3 * 1 + 1] -= 0.25
    pose[3:] -= model.pose_mean[3:]
    pose[:3] = torch.tensor([0.3, -0.2, 0.1])
    return pose


def test_quality_check_flags_a_wrong_fit_that_the_mean_residual_passes():
    """Crossed fingers as 1500 points drawn on the surface (0.3 mm noise, no correspondence): the fit from
    the mean hand (no further starts) converges with the fingers on their neighbours' surfaces, a mean
    residual of about 1.2 mm and 17 mm vertex error, and the quality check names the frame and the part;
    the true pose passes the same check; the further starts recover the pose."""
    from _goliath_fixture import surface_samples

    from utils.geometry.mano_fit import failed_checks, quality_measures

    model = procedural_model()
    shape = torch.tensor([0.6, -0.4, 0.3, 0.0, 0.2, 0.0, -0.1, 0.0, 0.0, 0.1])
    with torch.no_grad():
        verts, joints = model(_crossed_fingers(model)[None], shape, torch.tensor([[0.01, 0.0, 0.0]]))
    points = surface_samples(verts[0].double().numpy(), model.faces.numpy(), 1500, 0.3, seed=0)
    settings = FitSettings(robust="geman_mcclure", robust_scale_mm=5.0, rescue_starts=0)
    fit = fit_mano(model, target_verts=torch.tensor(points)[None].float(), settings=settings)
    residual = fit.report["residual_mm"]
    assert fit.report["converged"] and residual["target_to_surface_mean"] < 1.5, residual
    assert ((fit.verts - verts).norm(dim=-1) * 1000).mean() > 5.0  # wrong by far more than the residual
    assert fit.report["failed_frames"] == [0] and fit.report["rescue"] == {}
    failed = fit.report["per_frame"][0]["failed_checks"]
    assert any(
        name.startswith("part_target_p95 ") and c["value"] > 2 * c["limit"] for name, c in failed.items()
    )
    truth = quality_measures(model, verts, joints, torch.tensor(points)[None])[0]
    assert failed_checks(truth, settings) == {} and max(truth["part_target_p95"].values()) < 1.0, truth

    # The further starts (the default) recover it: from the failed fit, as a first fit would end.
    init = {"pose": fit.pose, "shape": fit.shape, "trans": fit.trans}
    again = fit_mano(
        model,
        target_verts=torch.tensor(points)[None].float(),
        init=init,
        settings=FitSettings(robust="geman_mcclure", robust_scale_mm=5.0),
    )
    assert again.report["failed_frames"] == [] and again.report["rescue"]["0"]["kept"] != "fit"
    targets = torch.cat([joints, verts[:, TIPS]], 1)
    assert ((again.joints - targets).norm(dim=-1) * 1000).max() < 4.0  # about 2.3 mm


def test_quality_helpers():
    """The sampling gap makes the vertex -> point-set distance independent of the sampling density; the
    rigid ICP of the rescue starts recovers a turned, shifted copy; the finger candidates are well formed."""
    from _goliath_fixture import surface_samples

    from utils.geometry.mano_fit import distance_to_points
    from utils.geometry.mano_fit_solver import ChamferScore, finger_candidates, preset_articulation, rigid_icp

    model = procedural_model()
    verts = model.v_template.double()
    for count in (800, 3000):
        points = torch.tensor(surface_samples(verts.numpy(), model.faces.numpy(), count, 0.0, seed=1))
        dist, gap = distance_to_points(verts, points)
        assert 1e-3 < gap < 1e-2 and float(torch.quantile(dist, 0.95)) < 1e-3, (count, gap)
        above = verts + torch.tensor([0.0, 0.1, 0.0], dtype=torch.float64)  # 10 cm off the palm
        assert float(distance_to_points(above, points)[0].median()) > 0.05
    angle = torch.tensor(0.3)
    rot = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, angle.cos(), -angle.sin()], [0.0, angle.sin(), angle.cos()]],
        dtype=torch.float64,
    )
    moved = verts @ rot.T + torch.tensor([0.01, -0.02, 0.03], dtype=torch.float64)
    found, shift = rigid_icp(verts, ChamferScore(moved), torch.eye(3, dtype=torch.float64), iterations=30)
    assert float((verts @ found.T + shift - moved).norm(dim=-1).max()) < 1e-4
    assert finger_candidates(model, (1, 2, 3)).shape == (21, 9)
    assert preset_articulation(model, "mean").abs().max() == 0 and preset_articulation(
        model, "fist"
    ).shape == (45,)


# ----------------------------------------------------------------------------------------------
# Inputs and settings
# ----------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors(hand):
    model, verts, joints = hand["model"], hand["verts"], hand["joints"]
    cases = [
        ({}, r"give target_verts .* got neither"),
        ({"target_verts": verts[0]}, r"target_verts must be \(F, N, 3\).*got \(778, 3\)"),
        ({"target_verts": verts[:, :, :2]}, r"target_verts must be \(F, N, 3\).*got \(3, 778, 2\)"),
        ({"target_joints": joints[:, :20]}, r"target_joints must be \(F, 21, 3\).*got \(3, 20, 3\)"),
        (
            {"target_verts": verts[:2], "target_joints": joints},
            r"frame counts differ: target_verts has F = 2, " r"target_joints has F = 3",
        ),
        (
            {"target_verts": verts, "target_faces": model.faces[:, :2]},
            r"target_faces must be \(M, 3\).*got \(1538, 2\)",
        ),
        (
            {"target_verts": verts[:, :100], "target_faces": model.faces},
            r"target_faces index vertices 0..777 but " r"target_verts has N = 100",
        ),
        ({"target_faces": model.faces, "target_joints": joints}, r"target_faces given without target_verts"),
        (
            {"target_joints": joints, "init": {"pose": torch.zeros(2, 48)}},
            r"init\['pose'\] must be \(3, 48\).*got \(2, 48\)",
        ),
        ({"target_joints": joints, "init": {"betas": torch.zeros(10)}}, r"unknown key\(s\) \['betas'\]"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            fit_mano(model, **kwargs)
    nan_verts = verts.clone()
    nan_verts[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="target_verts holds NaN"):
        fit_mano(model, target_verts=nan_verts)
    with pytest.raises(TypeError, match="target_faces must be integer"):
        fit_mano(model, target_verts=verts, target_faces=model.faces.float())
    with pytest.raises(TypeError, match="settings must be a FitSettings"):
        fit_mano(model, target_joints=joints, settings={"robust": "huber"})
    with pytest.raises(ValueError, match=r"FitSettings.robust must be one of"):
        FitSettings(robust="cauchy")
    with pytest.raises(ValueError, match=r"one count per stage"):
        FitSettings(stages=("global", "pose"), iterations=(5,))
    with pytest.raises(ValueError, match=r"unknown stage"):
        FitSettings(stages=("rigid",), iterations=(5,))
    with pytest.raises(ValueError, match="align = 'pca' needs target_verts"):
        fit_mano(model, target_joints=joints, settings=FitSettings(align="pca"))


def test_init_is_used_and_adam_runs(hand):
    """Starting at the answer stays there (no re-alignment); the Adam schedule also runs."""
    model = hand["model"]
    init = {"pose": hand["pose"][:1], "shape": hand["shape"], "trans": hand["trans"][:1]}
    fit = fit_mano(
        model, target_joints=hand["joints"][:1], init=init, settings=FitSettings(stages=(), iterations=())
    )
    assert fit.report["alignment"] == "none" and fit.report["iterations"] == 0
    assert fit.report["residual_mm"]["joints_max"] < 1e-3
    torch.testing.assert_close(fit.pose, hand["pose"][:1])
    fit = fit_mano(model, target_joints=hand["joints"][:1], init=init)
    assert ((fit.joints - hand["joints"][:1]).norm(dim=-1) * 1000).max() < 0.05
    settings = FitSettings(
        optimizer="adam", stages=("global", "pose"), iterations=(20, 20), refine_iterations=0
    )
    adam = fit_mano(model, target_joints=hand["joints"][:1], settings=settings)
    assert adam.report["stage_iterations"] == {"global": 20, "pose": 20} or not adam.report["converged"]
    assert adam.report["residual_mm"]["joints_mean"] < 10.0


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def test_cli_round_trip_on_an_obj(tmp_path, capsys):
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    try:
        import fit_mano as cli
    finally:
        sys.path.pop(0)
    from utils.geometry.mesh_io import save_obj

    model = procedural_model()
    pose = torch.zeros(1, 48)
    pose[0, :3] = torch.tensor([0.2, 0.1, -0.3])
    pose[0, 3:] = curl_pose(model, {1: 0.4, 4: 0.5}).float()[3:]
    trans = torch.tensor([[0.0, 0.01, 0.3]])
    with torch.no_grad():
        verts, _ = model(pose, None, trans)
    save_obj(tmp_path / "scan_0012.obj", verts[0] * 1000, model.faces)  # millimetres on disk
    out = tmp_path / "fit" / "mano.json"
    assert cli.main(["--mesh", str(tmp_path / "scan_0012.obj"), "--units", "mm", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "converged: True" in printed and "frame 12" in printed
    params = json.loads(out.read_text())
    assert list(params) == ["12"] and params["12"]["left"] is None
    entry = params["12"]["right"]
    assert (len(entry["pose"]), len(entry["shape"]), len(entry["trans"])) == (48, 10, 3)
    with torch.no_grad():
        again, _ = model(
            torch.tensor([entry["pose"]]), torch.tensor(entry["shape"]), torch.tensor([entry["trans"]])
        )
    assert float((again - verts).norm(dim=-1).max()) * 1000 < 0.1
    report = json.loads((tmp_path / "fit" / "mano_report.json").read_text())
    assert report["converged"] and report["frame_ids"] == ["12"] and report["residual_mm"]["p90"] < 0.05
    assert report["failed_frames"] == [] and "WARNING" not in captured.err
    with pytest.raises(SystemExit, match="--set 'bogus=1'"):
        cli.main(["--mesh", str(tmp_path / "scan_0012.obj"), "--out", str(out), "--set", "bogus=1"])
    np.testing.assert_equal(np.asarray(entry["trans"]).shape, (3,))


def test_least_squares_rows_match_the_loss_and_their_jacobian_matches_autodiff():
    """Gauss-Newton rows: their squared sum is the loss (robust none), their Jacobian (forward mode
    through the hand model, then linear maps) equals plain forward-mode autodiff of the rows."""
    import copy

    from utils.geometry import mano_fit_solver as solver

    model = copy.deepcopy(procedural_model()).double()
    pose, shape = (
        _pose(model, 1).double(),
        torch.randn(10, generator=torch.Generator().manual_seed(0)).double() * 0.5,
    )
    with torch.no_grad():
        verts, joints = model(pose[None], shape, torch.tensor([[0.02, -0.01, 0.35]], dtype=torch.float64))
    target_joints = torch.cat([joints, verts[:, TIPS]], 1)
    target_joints[0, 3] = float("nan")
    x = torch.cat([pose * 0.9, torch.tensor([2.0, -1.0, 35.0], dtype=torch.float64), shape])  # trans in cm
    params = {
        "orient": x[None, :3],
        "articulation": x[None, 3:48],
        "trans": x[None, 48:51],
        "shape": x[None, 51:],
    }
    for faces in (model.faces, None):
        targets = {
            "points_all": verts + 0.001,
            "points": verts + 0.001,
            "faces": faces,
            "joints": target_joints,
        }
        objective = solver._Objective(model, FitSettings(exact_search=True), targets, 1, 1)
        with torch.no_grad():
            posed, _ = objective.forward(params)
            loss, _ = objective(params, exact=True)
        rows = solver._FrameResiduals(objective, 0, posed[0])
        shape_prior = FitSettings().weight_shape_prior * shape.pow(2).sum()
        torch.testing.assert_close(rows(x).pow(2).sum() + shape_prior, loss, rtol=1e-6, atol=1e-9)
        free = torch.tensor([0, 1, 2, 10, 30, 48, 49, 50, 51, 55])
        torch.testing.assert_close(
            rows.jacobian(x, free), torch.func.jacfwd(rows)(x)[:, free], rtol=1e-9, atol=1e-9
        )
