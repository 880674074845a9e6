"""Goliath dome hand reader on the fixture of ``tests/_goliath_fixture.py`` (goliath.md section 5).

Checks: the transposed mm calibration and the halving of K (known 3D points land on the pixels the
fixture rendered them at), the camera without segmentation and the one without an image zip dropped and
reported, partially-lit frames and a frame with a missing segmentation skipped and reported, the colour
correction and segmentation on load, the scan as P2P ground truth (cropped to the hand), errors for the
facts goliath.md leaves unconfirmed, and the MANO fit against the fixture's truth (with its cache).
"""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
from _hand_fixtures import one_thread  # noqa: F401  (autouse: one torch thread in this module)

from datasets import goliath
from datasets.goliath import GoliathFormatError, read_goliath_sequence
from tests import _goliath_fixture as fx


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    return fx.write_goliath_capture(tmp_path_factory.mktemp("goliath"))


@pytest.fixture(scope="module")
def png_capture(tmp_path_factory):
    return fx.write_goliath_capture(tmp_path_factory.mktemp("goliath_png"), image_format="png")


@pytest.fixture(scope="module")
def hard_capture(tmp_path_factory):
    """Frame 6 a fist; registrations: 1500 points drawn on the surface with 0.3 mm noise (no correspondence)."""
    return fx.write_goliath_capture(
        tmp_path_factory.mktemp("goliath_hard"),
        image_format="png",
        hard_frame=fx.HARD_FRAME,
        registration_points=1500,
        registration_noise_mm=0.3,
    )


def truth_params(capture, frames=None):
    frames = fx.FULLY_LIT if frames is None else frames
    return {f: capture["params"][f] for f in frames}


def read(capture, **kwargs):
    kwargs.setdefault("mano_params", truth_params(capture))
    return read_goliath_sequence(capture["capture_dir"], **kwargs)


def copy_capture(capture, tmp_path):
    dst = tmp_path / fx.CAPTURE
    shutil.copytree(capture["capture_dir"], dst)
    goliath.clear_caches()
    return dict(capture, capture_dir=str(dst))


# ----------------------------------------------------------------------------------------------
# Layout, cameras, frames
# ----------------------------------------------------------------------------------------------


def test_cameras_frames_and_report(capture):
    seq = read(capture)
    assert seq.hand_side == "right" and seq.cameras.image_size == fx.IMAGE_HW
    assert seq.camera_names == list(fx.SEGMENTED)
    dropped = seq.report["dropped_cameras"]
    assert dropped == {"cam400003": "no segmentation_fgbg zip", "cam400004": "no image zip"}
    assert seq.frame_ids == [0, 3, 6]  # fully-lit test frames
    skipped = seq.report["skipped_frames"]
    assert skipped["not fully lit (light pattern 1, 5 lights)"] == [2, 4, 8]
    assert skipped["not fully lit (light pattern 2, 5 lights)"] == [1, 5, 7]
    text = seq.summary()
    assert (
        "left out 1 camera(s): no segmentation_fgbg zip: cam400003" in text and "skipped 3 frame(s)" in text
    )
    with pytest.raises(
        ValueError, match=r"no usable train frame.*'segmentation missing in some selected camera': 1"
    ):
        read(capture, split="train")  # frame 9 has no segmentation in cam400002, 10 and 11 are partially lit


def test_frame_and_camera_selection(capture):
    assert read(capture, num_frames=2).frame_ids == [0, 3]
    assert read(capture, num_frames=2, frame_mode="first", split="all").frame_ids == [0, 3]
    assert read(capture, cameras=["400002"]).camera_names == ["cam400002"]
    assert read(capture, cameras=["cam400001"], split="train").frame_ids == [9]
    with pytest.raises(ValueError, match="cam400003.*no segmentation_fgbg zip"):
        read(capture, cameras=["cam400003"])
    with pytest.raises(ValueError, match="requested frame 1: not fully lit"):
        read(capture, frame_ids=[0, 1])
    with pytest.raises(ValueError, match="right-hand capture, hand = 'left'"):
        read(capture, hand="left")


def test_units_and_k_halving(capture):
    seq = read(capture)
    for v, name in enumerate(seq.camera_names):
        K, R, t = capture["cameras"][name]
        full = capture["full_K"][name]
        # f / 2 and Goliath's (c + 0.5) / 2 - 0.5 for integer pixel centres, + 0.5 for ours
        assert np.allclose(seq.cameras.K[v].double().numpy(), K, atol=1e-4)
        assert np.isclose(seq.cameras.K[v, 0, 0].item(), full[0, 0] / 2, atol=1e-4)
        assert np.isclose(seq.cameras.K[v, 0, 2].item(), (full[0, 2] + 0.5) / 2 - 0.5 + 0.5, atol=1e-4)
        assert np.allclose(seq.cameras.R[v].double().numpy(), R, atol=1e-6)
        assert np.allclose(seq.cameras.t[v].double().numpy(), t, atol=1e-6)  # mm -> m
    with open(os.path.join(capture["capture_dir"], "camera_calibration.json")) as fh:
        stored = json.load(fh)["KRT"][0]
    assert abs(stored["T"][3][2]) > 100  # the file holds millimetres, in the transposed T's last row


def test_known_points_project_to_rendered_pixels(capture):
    """World points projected with the reader's cameras land where the fixture's own pinhole cameras put
    them, and the hand re-rendered with the reader's cameras covers the fixture's segmentations."""
    from datasets.preprocess import render_mask_and_normals

    seq = read(capture)
    points = np.array([[0.0, 0.0, 0.0], [0.03, -0.02, 0.01], [-0.05, 0.04, -0.02]])
    for v, name in enumerate(seq.camera_names):
        K, R, t = capture["cameras"][name]
        x_cam = points @ R.T + t
        expected = (x_cam @ K.T)[:, :2] / x_cam[:, 2:]
        uv, z = seq.project(torch.as_tensor(points, dtype=torch.float32), v)
        assert np.allclose(uv.numpy(), expected, atol=1e-3) and np.allclose(z.numpy(), x_cam[:, 2], atol=1e-6)
    for fi, frame in enumerate(seq.frame_ids):
        verts = torch.as_tensor(capture["verts"][frame], dtype=torch.float32)[None].expand(
            seq.num_views, -1, -1
        )
        mask, _ = render_mask_and_normals(
            verts,
            seq.faces,
            seq.cameras.K,
            seq.cameras.R,
            seq.cameras.t,
            seq.cameras.image_size,
            backend="torch",
        )
        for v in range(seq.num_views):
            seg = seq.load_segmentation(fi, v)
            ours = mask[v, 0].numpy() > 0
            assert (seg & ours).sum() / (seg | ours).sum() > 0.97
            image = seq.load_image(fi, v)
            assert image.shape == (*fx.IMAGE_HW, 3)
            assert np.all(image[~seg] == 0)  # background removed by the segmentation


def test_color_correction_and_formats(capture, png_capture):
    seq = read(png_capture)
    assert seq.image_paths[0][0].endswith(os.path.join("cam400001.zip", "cam400001", "000000.png"))
    raw = read(png_capture, color_correction=False, apply_segmentation=False).load_image(0, 0)
    corrected = seq.load_image(0, 0)
    mask = seq.load_segmentation(0, 0)
    assert np.allclose(raw[0, 0], goliath.uncorrect_colors(np.full(3, fx.DOME, np.float32)), atol=1 / 255)
    assert np.allclose(corrected[mask].max(0), fx.SKIN, atol=0.03)  # PNG: exact up to 8 bits
    avif = read(capture).load_image(0, 0)
    assert np.abs(avif - corrected).mean() < 0.02  # lossy AVIF of the same render


def test_sample_and_select(capture):
    seq = read(capture)
    s = seq.sample(1, 1, size=32)
    assert s["image"].shape == (3, 32, 32) and s["mask"].sum() > 50
    sub = seq.select(frames=[2], views=["cam400002"])
    assert isinstance(sub, goliath.GoliathSequence) and sub.frame_ids == [6]
    assert sub.segmentation_paths[0][0].endswith("000006.png")
    assert np.array_equal(sub.load_image(0, 0), seq.load_image(2, 1))
    import pickle

    copy = pickle.loads(pickle.dumps(sub))  # DataLoader workers: no open zip or hand model travels
    assert isinstance(copy, goliath.GoliathSequence) and np.array_equal(
        copy.load_image(0, 0), sub.load_image(0, 0)
    )


def test_scan_ground_truth_is_cropped_to_the_hand(capture):
    from utils.metrics.geometry import p2p_mm

    seq = read(capture)
    scan_v, scan_f = seq.scan(0)
    gt_v, gt_f = seq.gt_mesh(0)
    assert len(gt_f) == len(scan_f) - 12  # the forearm box is gone, the hand is whole
    verts = torch.as_tensor(capture["verts"][0], dtype=torch.float32)
    assert p2p_mm(verts, seq.faces, gt_v, gt_f, num_samples=2000) < 0.5  # same surface, metres
    assert float(scan_v.abs().max()) < 1.0


# ----------------------------------------------------------------------------------------------
# Unconfirmed facts fail with a clear message
# ----------------------------------------------------------------------------------------------


def _edit_calibration(capture, edit):
    path = os.path.join(capture["capture_dir"], "camera_calibration.json")
    with open(path) as fh:
        data = json.load(fh)
    edit(data["KRT"])
    with open(path, "w") as fh:
        json.dump(data, fh)


def test_calibration_errors(capture, tmp_path):
    def untransposed(krt):
        for e in krt:
            e["K"] = np.asarray(e["K"]).T.tolist()

    def metres(krt):
        for e in krt:
            T = np.asarray(e["T"])
            T[3, :3] /= 1000.0
            e["T"] = T.tolist()

    for edit, match in (
        (untransposed, "not a transposed intrinsic matrix"),
        (metres, "expected a dome of about a metre"),
    ):
        cap = copy_capture(capture, tmp_path / edit.__name__)
        _edit_calibration(cap, edit)
        with pytest.raises(GoliathFormatError, match=match) as err:
            read(cap)
        assert "camera_calibration.json" in str(err.value)
    with pytest.raises(GoliathFormatError, match="image_scale"):
        read(capture, image_scale=0.5)


def test_distortion_is_refused_unless_ignored(tmp_path):
    cap = fx.write_goliath_capture(tmp_path, image_format="png", distortion=[0.01, 0.0, 0.0, 0.0])
    with pytest.raises(GoliathFormatError, match="distortion='ignore'"):
        read(cap)
    assert read(cap, distortion="ignore").num_views == 2


def test_keypoint_schema_errors(capture):
    from datasets.goliath_fit import keypoint_rows, parse_keypoints

    rows = keypoint_rows("interhand")
    assert rows[0] == 20 and rows[16] == 0  # MANO wrist = InterHand row 20, thumb tip = row 0
    data = goliath.read_zip_member(*goliath.target_member(capture["capture_dir"], "keypoints", 0))
    kp = parse_keypoints(data, "kp.json", rows) / 1000.0
    assert np.allclose(kp, capture["joints21"][0], atol=1e-5)
    table = json.loads(data)["keypoints"]
    table[3][3] = 0.0  # an invalid row (score 0) is a missing joint for the fit
    kp = parse_keypoints(json.dumps(table).encode(), "kp.json", rows)
    assert np.isnan(kp[rows.index(3)]).all() and np.isfinite(np.delete(kp, rows.index(3), 0)).all()
    with pytest.raises(GoliathFormatError, match="fewer than 6"):
        parse_keypoints(json.dumps([[0, 0, 0, 0]] * 21).encode(), "kp.json", rows)
    with pytest.raises(GoliathFormatError, match="schema unconfirmed"):
        parse_keypoints(json.dumps({"a": 1}).encode(), "kp.json", rows)
    with pytest.raises(ValueError, match="21 row indices"):
        keypoint_rows([0, 1, 2])
    seq = read(capture)
    assert "keypoints_3d not used" not in seq.summary()  # given parameters: no fit, no note


def test_missing_files_are_named(capture, tmp_path):
    cap = copy_capture(capture, tmp_path)
    os.remove(os.path.join(cap["capture_dir"], "lights", "light_pattern_per_frame.json"))
    with pytest.raises(FileNotFoundError, match="light_pattern_per_frame.json"):
        read(cap)
    with pytest.raises(FileNotFoundError, match="expected a Goliath capture folder"):
        read_goliath_sequence(tmp_path / "nothing")


# ----------------------------------------------------------------------------------------------
# MANO fit: the cache and the residuals (a stub fitter), then the project's fitter against the truth
# ----------------------------------------------------------------------------------------------


def test_fit_cache_and_residuals(capture, tmp_path, monkeypatch):
    """The reader fits only frames not in the cache, measures the residual itself and reports it."""
    from types import SimpleNamespace

    from datasets import goliath_fit

    calls, held = [], []

    def truth_fit(hand_model, points, faces, joints, settings, shape=None):
        frames = pending.pop(0)  # the frames this call should see, in the reader's order
        assert len(points) == len(frames) and joints is None or len(joints) == len(frames)
        calls.append(frames)
        held.append(None if shape is None else np.asarray(shape).tolist())
        stack = [np.stack([capture["params"][f][i] for f in frames]) for i in range(3)]
        return SimpleNamespace(
            pose=torch.tensor(stack[0]).float(),
            shape=torch.tensor(fx.SHAPE).float(),
            trans=torch.tensor(stack[2]).float(),
            report={"converged": True},
        )

    monkeypatch.setattr(goliath_fit, "_fit", truth_fit)
    pending = [[0, 3, 6]]
    seq = read_goliath_sequence(capture["capture_dir"], keypoint_order="interhand", fit_cache_dir=tmp_path)
    fit = seq.report["mano_fit"]
    assert calls == [[0, 3, 6]] and fit["fitted"] == 3 and fit["from_cache"] == 0 and fit["keypoints"]
    assert os.path.isfile(fit["cache"]) and os.path.dirname(fit["cache"]) == str(tmp_path)
    # the truth reproduces the targets: residuals are float round-off (micrometres)
    assert set(fit["residual_mm"]) == {"target_to_mano", "mano_to_target", "keypoints"}
    assert all(v < 0.01 for v in fit["residual_mm"].values()), fit["residual_mm"]
    assert "MANO fitted to registration: residual (mm)" in seq.summary()
    assert torch.allclose(seq.mano_pose[1].double(), torch.tensor(capture["params"][3][0]), atol=1e-6)

    again = read_goliath_sequence(capture["capture_dir"], keypoint_order="interhand", fit_cache_dir=tmp_path)
    assert calls == [[0, 3, 6]] and again.report["mano_fit"]["from_cache"] == 3
    assert torch.equal(again.mano_pose, seq.mano_pose)
    pending.append([9])
    more = read_goliath_sequence(
        capture["capture_dir"],
        keypoint_order="interhand",
        fit_cache_dir=tmp_path,
        split="all",
        cameras=["cam400001"],
    )
    assert more.frame_ids == [0, 3, 6, 9] and calls[-1] == [9]
    assert more.report["mano_fit"]["fitted"] == 1 and more.report["mano_fit"]["from_cache"] == 3
    # one shape per capture: the first call fits it, the later frame is fitted with it held
    assert held[0] is None and np.allclose(held[-1], fx.SHAPE, atol=1e-6)
    assert more.report["mano_fit"]["shape_frames"] == [0, 3, 6]
    assert torch.equal(more.mano_shape, seq.mano_shape[:1].expand(4, 10))
    assert more.report["mano_fit"]["failed_frames"] == {} and set(more.report["mano_fit"]["quality"]) == {
        0,
        3,
        6,
        9,
    }
    # another fit configuration is another cache file
    pending.append([0, 3, 6])
    read_goliath_sequence(capture["capture_dir"], fit_cache_dir=tmp_path)
    assert len(list(tmp_path.glob("mano_fit_*.npz"))) == 2


def test_fit_targets_must_be_in_the_world_frame_in_mm(capture, tmp_path, monkeypatch):
    from datasets import goliath_fit

    monkeypatch.setattr(goliath_fit, "_fit", lambda *a: pytest.fail("fitted a target in the wrong units"))
    cap = copy_capture(capture, tmp_path)
    zpath, member = goliath.target_member(cap["capture_dir"], "registration", 0)
    verts, _ = goliath.read_ply_bytes(goliath.read_zip_member(zpath, member), member)
    import zipfile

    with zipfile.ZipFile(zpath, "w") as zf:  # metres instead of millimetres
        for f in fx.FULLY_LIT:
            zf.writestr(f"registration_vertices/{f:06d}.ply", fx._ply(verts / 1000.0))
    goliath.clear_caches()
    with pytest.raises(
        GoliathFormatError,
        match="registration_vertices.zip:registration_vertices/000000.ply: .* expected a hand .* in millimetres",
    ):
        read_goliath_sequence(cap["capture_dir"])


def test_scan_target_is_fitted_frame_by_frame(capture, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from datasets import goliath_fit

    seen = []

    def truth_fit(hand_model, points, faces, joints, settings, shape=None):
        assert (shape is None) == (not seen)  # the first frame fits the capture's shape, the others hold it
        frame = fx.FULLY_LIT[len(seen)]
        seen.append((points.shape, faces.shape))
        p = capture["params"][frame]
        return SimpleNamespace(
            pose=torch.tensor(p[0])[None].float(),
            shape=torch.tensor(p[1]).float(),
            trans=torch.tensor(p[2])[None].float(),
            report={"converged": True},
        )

    monkeypatch.setattr(goliath_fit, "_fit", truth_fit)
    seq = read_goliath_sequence(capture["capture_dir"], fit_target="scan", fit_cache_dir=tmp_path)
    assert len(seen) == 3 and all(points[0] == 1 and faces[0] > 3000 for points, faces in seen)
    res = seq.report["mano_fit"]["residual_mm"]
    assert (
        res["mano_to_target"] < 0.01 and res["target_to_mano"] > 0.05
    )  # the forearm box (8 of 3101 points) is in the scan
    assert "keypoints_3d not used" in seq.summary()


def test_fitted_mano_is_close_to_the_truth(capture, tmp_path):
    """The project's fitter on the fixture's registrations and keypoints recovers the posed hand."""
    pytest.importorskip("utils.geometry.mano_fit")
    seq = read_goliath_sequence(
        capture["capture_dir"], keypoint_order="interhand", fit_cache_dir=tmp_path, num_frames=2
    )
    verts, _ = seq.mano_forward()
    for fi, frame in enumerate(seq.frame_ids):
        err_mm = np.linalg.norm(verts[fi].double().numpy() - capture["verts"][frame], axis=1).mean() * 1000
        assert err_mm < 2.0, (frame, err_mm)  # about 0.6 mm with the fitter's defaults
    res = seq.report["mano_fit"]["residual_mm"]
    assert res["target_to_mano"] < 2.0 and res["keypoints"] < 3.0, res
    # the scan, forearm box included, without keypoints (a robust loss by default)
    scan = read_goliath_sequence(capture["capture_dir"], fit_target="scan", frame_ids=[3])
    err_mm = (
        np.linalg.norm(scan.mano_forward()[0][0].double().numpy() - capture["verts"][3], axis=1).mean() * 1000
    )
    assert err_mm < 2.0, err_mm  # about 0.9 mm


def _fist_at_frame_6(capture, calls: list):
    """A stub fitter for the fixture's frames 0, 3, 6: the truth, but frame 6's fingers curled into a fist
    (the truth is nearly open): a fit that fails the quality check. Appends each call's frame count."""
    from types import SimpleNamespace

    from tests._hand_fixtures import procedural_model

    fist = fx.hard_pose(procedural_model("right"))[0]

    def wrong_fit(hand_model, points, faces, joints, settings, shape=None):
        calls.append(len(points))
        pose = np.stack([capture["params"][f][0] for f in (0, 3, 6)])
        pose[2, 3:] = fist[3:]
        return SimpleNamespace(
            pose=torch.tensor(pose).float(),
            shape=torch.tensor(fx.SHAPE).float(),
            trans=torch.tensor(np.stack([capture["params"][f][2] for f in (0, 3, 6)])).float(),
            report={"converged": True},
        )

    return wrong_fit


def test_fit_policy_on_a_failed_quality_check(capture, tmp_path, monkeypatch):
    """A fit that fails the quality check (a stub fitter curls frame 6's fingers into a fist; the truth is
    nearly open): ``error`` stops naming the frame, its checks and values and how to proceed; ``warn``
    keeps it with a warning; ``drop`` leaves it out with the reason. The fit is cached once: neither the
    policy nor the check limits fit again."""
    from datasets import goliath_fit
    from utils.errors import InputError

    calls = []
    wrong_fit = _fist_at_frame_6(capture, calls)
    monkeypatch.setattr(goliath_fit, "_fit", wrong_fit)
    warnings = []
    with pytest.raises(goliath.GoliathFitError) as info:
        read_goliath_sequence(capture["capture_dir"], fit_cache_dir=tmp_path, warn=warnings.append)
    message = str(info.value)
    assert isinstance(info.value, InputError) and "1 of 3 frame(s)" in message
    assert re.search(r"frame 6: .*part_target_p95 \w+ [\d.]+ mm > 8 mm", message), message
    for advice in ("keypoint_order", "max_part_target_p95_mm", "fit_policy = drop", "warn"):
        assert advice in message, advice
    assert len(warnings) == 1 and "frame 6" in warnings[0] and "fit_policy = error" in warnings[0]

    seq = read_goliath_sequence(
        capture["capture_dir"], fit_cache_dir=tmp_path, fit_policy="warn", warn=warnings.append
    )
    assert seq.frame_ids == [0, 3, 6] and "frame 6" in warnings[-1] and "fit_policy = warn" in warnings[-1]
    failed = seq.report["mano_fit"]["failed_frames"]
    assert list(failed) == [6] and all(c["value"] > c["limit"] for c in failed[6].values())
    assert "1 of 3 frame(s) failed" in seq.summary()

    dropped = read_goliath_sequence(
        capture["capture_dir"], fit_cache_dir=tmp_path, fit_policy="drop", warn=warnings.append
    )
    assert dropped.frame_ids == [0, 3] and dropped.num_frames == 2 and dropped.mano_pose.shape == (2, 48)
    (reason,) = [r for r in dropped.report["skipped_frames"] if r.startswith("MANO fit failed")]
    assert dropped.report["skipped_frames"][reason] == [6] and "part_target_p95" in reason

    loose = {**goliath_fit.default_settings(), "max_part_target_p95_mm": 0.0, "max_part_model_p95_mm": 0.0}
    loose["max_fingertip_mm"] = 0.0  # every check off
    ok = read_goliath_sequence(capture["capture_dir"], fit_cache_dir=tmp_path, fit_settings=loose)
    assert ok.report["mano_fit"]["failed_frames"] == {} and ok.report["mano_fit"]["quality"][6]
    assert calls == [3]  # one fit; the policies and the limits apply to the cached measures
    with pytest.raises(ValueError, match="fit_policy must be one of"):
        read_goliath_sequence(capture["capture_dir"], fit_cache_dir=tmp_path, fit_policy="ignore")


def test_main_stops_on_a_failed_fit(capture, tmp_path, monkeypatch, capsys):
    """main.py with the default data.goliath.fit_policy: a frame whose fit fails the check stops the run
    with exit status 2 before any training, the message naming the frame and the way on."""
    from datasets import goliath_fit
    from trainers.run import main_guard, run_srhand

    monkeypatch.setattr(goliath_fit, "_fit", _fist_at_frame_6(capture, []))
    sets = {
        "exp_name": "failed_fit",
        "out_root": tmp_path / "runs",
        "use_tensorboard": "false",
        "sr_source": "bicubic",  # no SR checkpoint needed to reach the fit
        "data.allow_procedural_hand": "true",  # the fixture's hands are the procedural stand-in's
        "data.data_path": capture["capture_dir"],
        "data.num_views": 2,
        "data.num_frames": 3,
    }
    args = ["--conf", "conf/goliath_GIIF_16_256.conf", "--device", "cpu"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert main_guard(lambda: run_srhand("main.py", args)) == 2
    err = capsys.readouterr().err
    assert "frame 6: part_" in err and "data.goliath.fit_policy = drop" in err, err


def test_hard_pose_without_keypoints_is_recovered_and_later_frames_share_the_shape(hard_capture, tmp_path):
    """The default fit (registrations only, no keypoints) of two training frames, one a fist: the fist's fit
    from the mean hand fails the quality check, another start (with the shape fitted with both frames)
    passes it and recovers the joints; a second read, as the evaluation's, fits its new frame with the
    capture's shape held."""
    cap, fist = hard_capture, fx.HARD_FRAME

    def joint_error_mm(seq):
        _, joints = seq.mano_forward()
        return {
            f: float(
                np.linalg.norm(joints[i].double().numpy() - cap["joints21"][f][:16], axis=1).max() * 1000
            )
            for i, f in enumerate(seq.frame_ids)
        }

    train = read_goliath_sequence(cap["capture_dir"], frame_ids=[3, fist], fit_cache_dir=tmp_path)
    fit = train.report["mano_fit"]
    record = fit["rescue"][fist]
    assert record["starts"]["fit"]["failed"], record  # the first fit failed the check ...
    assert fit["rescued"] == {fist: record["kept"]} and fit["failed_frames"] == {}  # ... another passed
    errors = joint_error_mm(train)
    assert max(errors.values()) < 3.0, errors  # about 2.6 mm (frame 3) and 1.3 mm (the fist)

    evaluation = read_goliath_sequence(cap["capture_dir"], frame_ids=[0, 3, fist], fit_cache_dir=tmp_path)
    report = evaluation.report["mano_fit"]
    assert report["fitted"] == 1 and report["from_cache"] == 2 and report["shape_frames"] == [3, fist]
    assert torch.equal(evaluation.mano_shape, train.mano_shape[:1].expand(3, 10))  # one shape
    errors = joint_error_mm(evaluation)
    assert errors[0] < 3.0 and report["failed_frames"] == {}, errors  # about 1.7 mm


# ----------------------------------------------------------------------------------------------
# main.py end to end on the fixture
# ----------------------------------------------------------------------------------------------

TINY_GIIF = {
    "name": "giif",
    "args": {
        "encoder": {"name": "rdn", "args": {"G0": 8, "kernel_size": 3, "D": 1, "C": 1, "G": 4}},
        "normal_encoder": {
            "name": "hg_filter",
            "args": {"in_ch": 3, "num_stack": 1, "depth": 1, "n_feat": 8, "out_dim": 8, "norm": "group"},
        },
        "hidden_list": [16],
    },
}


def test_main_runs_on_the_fixture(capture, tmp_path):
    """main.py --conf conf/goliath_GIIF_16_256.conf with tiny overrides: fits MANO to the registrations (cached
    in the run folder), trains on 2 views x 2 fully-lit frames, evaluates on the third with P2P against the
    fixture's scan; --eval --r reads the fit back from the cache."""
    pytest.importorskip("utils.geometry.mano_fit")
    from models import registry
    from trainers.run import main_guard, run_srhand
    from utils.checkpoint import make_checkpoint, model_entry, save_atomic

    torch.manual_seed(0)
    config = {"data": {"normal_space": "camera", "normal_size": 32}}
    save_atomic(
        make_checkpoint("giif", model_entry(registry.make(TINY_GIIF)), config=config), tmp_path / "giif.pth"
    )
    save_atomic(
        make_checkpoint(
            "disc",
            model_entry(registry.make({"name": "unet_disc_sn", "args": {"num_feat": 4}})),
            config=config,
        ),
        tmp_path / "disc.pth",
    )
    sets = {
        "exp_name": "tiny_goliath",
        "out_root": tmp_path / "runs",
        "use_tensorboard": "false",
        "giif_model": tmp_path / "giif.pth",
        "disc_model": tmp_path / "disc.pth",
        "log_every": 4,
        "data.data_path": capture["capture_dir"],
        "data.num_views": 2,
        "data.num_frames": 2,
        "data.hr_size": 32,
        "data.lr_size": 8,
        "data.normal_size": 32,
        "data.goliath.keypoint_order": "interhand",
        "data.allow_procedural_hand": "true",  # the fixture's hands are the procedural stand-in's
        "model.subdivision_levels": 1,
        "model.lbs_width": 16,
        "model.lbs_depth": 2,
        "model.color_width": 16,
        "model.color_depth": 2,
        "model.delta_width": 16,
        "model.delta_depth": 2,
        "albedo.epochs": 2,
        "albedo.batch_size": 2,
        "sfs.epochs": 2,
        "sfs.batch_size": 2,
        "train.epochs": 2,
        "train.batch_size": 2,
        "train.perceptual": "none",
        "train.renew_means_every": 1,
        "finetune.update_term": 1,
        "finetune.inner_epochs": 2,
        "finetune.batch_size": 2,
        "finetune.checkpoint_chunks": "false",
        "eval.perceptual": "none",
        "eval.p2p_samples": 300,
        "eval.num_frames": 3,  # the first 3 fully-lit test frames (0, 3, 6) minus the fitting ones
    }
    args = ["--conf", "conf/goliath_GIIF_16_256.conf", "--device", "cpu"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        assert main_guard(lambda: run_srhand("main.py", args)) == 0
        run_dir = tmp_path / "runs" / "tiny_goliath"
        report = json.loads((run_dir / "metrics.json").read_text())
        assert report["eval_frames"] == [6] and report["eval_cameras"] == list(fx.SEGMENTED)
        assert report["gt_mesh_source"].endswith("scan_mesh.zip")
        assert 0 < report["p2p_mm_mano"] < 5  # the fitted MANO against the scan
        assert 0 < report["p2p_mm"] < 50
        caches = list((run_dir / "goliath_mano").glob("mano_fit_*.npz"))
        assert len(caches) == 1
        with np.load(caches[0]) as data:  # the training frames fitted the shape, the evaluation's held it
            assert data["frame_ids"].tolist() == [0, 3, 6] and data["shape"].shape == (10,)
            assert data["shape_frames"].tolist() == [0, 3]
        (run_dir / "metrics.json").unlink()
        assert (
            main_guard(lambda: run_srhand("main.py", args + ["--eval", "--r", "--model_path", str(run_dir)]))
            == 0
        )
        again = json.loads((run_dir / "metrics.json").read_text())
        assert again["p2p_mm"] == pytest.approx(report["p2p_mm"], rel=1e-4)
    finally:
        os.chdir(cwd)
