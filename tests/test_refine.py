"""Joint MANO refinement (trainers/srhand/refine.py): the offsets, their regularisers and bounds, the recovery
of a known pose offset by the joint step's gradient and by the test-time fit, the normal maps of refined
parameters, and main.py end to end (refined_mano.json, metrics, bad inputs)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _hand_fixtures import one_thread  # noqa: F401  (autouse: one torch thread in this module)

from models.avatar import HandAvatar
from tests.test_srhand import assets, read_metrics, run, write_conf  # noqa: F401  (assets is a fixture)
from trainers.srhand.refine import (
    MANORefinement,
    RefinementDivergedError,
    check_refinement,
    fit_pose,
    refined_mano_json,
    refinement_terms,
    render_mano_normals,
)
from trainers.srhand.settings import RefineSettings
from utils.geometry.camera import Cameras
from utils.render import get_renderer


def settings(**overrides) -> RefineSettings:
    values = dict(
        enabled=True,
        start=0.0,
        shape=True,
        pose_learning_rate=1e-3,
        rot_learning_rate=1e-3,
        trans_learning_rate=2e-4,
        shape_learning_rate=1e-2,
        pose_prior=1.0,
        rot_prior=1.0,
        trans_prior=0.01,
        shape_prior=0.01,
        smooth=1.0,
        max_pose_deg=30.0,
        max_trans_mm=30.0,
        test_time_fit=True,
        test_target="sr",
        test_steps=60,
        test_learning_rate=2e-3,
    )
    values.update(overrides)
    return RefineSettings(**values)


def refinement(num: int = 3, frame_ids=None) -> MANORefinement:
    gen = torch.Generator().manual_seed(0)
    pose = 0.2 * torch.randn(num, 48, generator=gen)
    trans = 0.1 * torch.randn(num, 3, generator=gen)
    shape = torch.randn(num, 10, generator=gen)
    return MANORefinement(pose, trans, shape, frame_ids or [10 * (num - f) for f in range(num)])


def test_offsets_start_at_the_annotation_and_move_only_their_frame():
    r = refinement()
    for f in range(3):
        assert torch.equal(r.pose(f), r.pose_annotated[f]) and torch.equal(r.trans(f), r.trans_annotated[f])
    assert torch.equal(r.shapes(), r.shape_annotated)
    # neighbours follow frame ids (30, 20, 10): frame 1 sits between 0 and 2
    assert sorted(r.neighbours[1]) == [0, 2] and r.neighbours[0] == [1] and r.neighbours[2] == [1]
    optimizer = torch.optim.Adam(r.parameter_groups(settings()))
    r.pose(1).sum().backward()
    optimizer.step()
    assert torch.equal(r.d_pose[0], torch.zeros(45)) and torch.equal(r.d_pose[2], torch.zeros(45))
    assert float(r.d_pose[1].detach().abs().min()) > 0  # Adam's first step: lr in every component


def test_regularisers_have_their_analytic_values():
    r = refinement(frame_ids=[1, 2, 3])
    with torch.no_grad():
        r.d_rot[1].copy_(torch.tensor([0.1, 0.0, 0.0]))
        r.d_pose[1].fill_(0.01)
        r.d_trans[1].copy_(torch.tensor([0.002, 0.0, 0.0]))  # 2 mm
        r.d_trans[0].copy_(torch.tensor([0.001, 0.0, 0.0]))  # 1 mm
        r.d_shape.fill_(0.5)
    s = settings(pose_prior=2.0, rot_prior=3.0, trans_prior=0.5, smooth=4.0, shape_prior=0.25)
    terms = refinement_terms(r, 1, s)
    prior = 3.0 * 0.01 + 2.0 * 45 * 1e-4 + 0.5 * 4.0
    assert float(terms["mano_prior"].detach()) == pytest.approx(prior, rel=1e-5)
    # neighbours 0 and 2: offsets differ by (rot 0.01, pose 45e-4, trans 0.5 x 1 mm^2) and (0.01, 45e-4, 0.5 x 4)
    smooth = 4.0 * ((0.01 + 45e-4 + 0.5 * 1.0) + (0.01 + 45e-4 + 0.5 * 4.0)) / 2
    assert float(terms["mano_smooth"].detach()) == pytest.approx(smooth, rel=1e-5)
    assert float(terms["shape_prior"].detach()) == pytest.approx(0.25 * 10 * 0.25, rel=1e-6)


def test_a_diverging_offset_names_frame_joint_and_bound():
    r = refinement(frame_ids=[7, 8, 9])
    check_refinement(r, settings(), r.frame_ids)  # zero offsets pass
    with torch.no_grad():
        r.d_pose[2][3:6] = torch.tensor([0.0, math.radians(40), 0.0])  # joint 2
    with pytest.raises(RefinementDivergedError, match=r"frame 9's joint 2 moved 40.0 deg.*max_pose_deg = 30"):
        check_refinement(r, settings(), r.frame_ids)
    with torch.no_grad():
        r.d_pose[2].zero_()
        r.d_trans[0][2] = 0.05
    with pytest.raises(RefinementDivergedError, match=r"frame 7's translation moved 50.0 mm.*max_trans_mm"):
        check_refinement(r, settings(), r.frame_ids)
    with torch.no_grad():
        r.d_trans[0][2] = float("nan")
    with pytest.raises(RefinementDivergedError, match="not finite"):
        check_refinement(r, settings(), r.frame_ids)


def test_refined_mano_json_is_interhand_mano_annotation():
    r = refinement(num=2, frame_ids=[5, 9])
    with torch.no_grad():
        r.d_trans[1].fill_(0.01)
    out = refined_mano_json(r, "Capture3", "right", r.frame_ids)
    assert list(out) == ["3"] and list(out["3"]) == ["5", "9"]
    entry = out["3"]["9"]
    assert entry["left"] is None and len(entry["right"]["pose"]) == 48 and len(entry["right"]["shape"]) == 10
    assert entry["right"]["trans"] == pytest.approx((r.trans_annotated[1] + 0.01).tolist(), abs=1e-6)


# ---- the gradient reaches the pose: a known offset is recovered ------------------------------------------
@pytest.fixture(scope="module")
def hand_model(tiny_capture_root):
    """The hand model the synthetic captures use (the procedural one without MANO files)."""
    from utils.geometry.mano import HandModel, resolve_hand_model_path

    return HandModel.from_file(resolve_hand_model_path(None, "right"), side="right")


@pytest.fixture(scope="module")
def scene(hand_model):
    """A hand avatar at subdivision 1 with a textured albedo, 6 cameras around it, and its images at a
    'true' pose."""
    small = dict(lbs_width=16, lbs_depth=2, color_width=16, color_depth=2, delta_width=16, delta_depth=2)
    avatar = HandAvatar.from_hand_model(hand_model, num_views=6, subdivision_levels=1, **small).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        avatar.color_net.set_mean(torch.randn(avatar.num_verts, 3, generator=gen))
        avatar.sh_coeffs.zero_()
        avatar.sh_coeffs[:, 0::9] = 2.0  # ambient light in each colour channel
    pose = torch.zeros(48)
    pose[3:] = 0.15 * torch.randn(45, generator=gen)
    trans = torch.tensor([0.0, 0.0, 0.0])
    angles = torch.linspace(0, 2 * math.pi, 7)[:-1]
    R, t = [], []
    for a in angles:
        c, s = math.cos(a), math.sin(a)
        rot = torch.tensor([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])
        R.append(rot)
        t.append(torch.tensor([0.0, 0.0, 0.45]) - rot @ torch.tensor([0.0, 0.0, 0.0]))
    size = 64
    K = torch.tensor([[150.0, 0, 32], [0, 150.0, 32], [0, 0, 1]]).expand(6, 3, 3)
    cams = Cameras(K=K, R=torch.stack(R), t=torch.stack(t), image_size=(size, size))
    renderer = get_renderer("torch")
    with torch.no_grad():
        geo = avatar.forward_geometry(pose, trans)
        out = avatar.render(geo["verts_posed"], geo["albedo"], cams, list(range(6)), renderer=renderer)
    # the hand's centre near the origin: every camera sees it
    return {"avatar": avatar, "pose": pose, "trans": trans, "cams": cams, "renderer": renderer, **out}


def offset_pose(pose: torch.Tensor) -> torch.Tensor:
    """A known annotation error: 4 deg of global rotation, 6 deg at the index MCP."""
    wrong = pose.clone()
    wrong[:3] += torch.tensor([0.0, 0.0, math.radians(4)])
    wrong[3:6] += torch.tensor([0.0, 0.0, math.radians(6)])
    return wrong


def test_the_joint_step_gradient_recovers_a_known_pose_offset(scene):
    avatar, cams, renderer = scene["avatar"], scene["cams"], scene["renderer"]
    wrong = offset_pose(scene["pose"])
    shift = torch.tensor([0.004, -0.003, 0.0])  # 5 mm
    r = MANORefinement(
        torch.stack([wrong, wrong]),
        torch.stack([shift, shift]),
        torch.zeros(2, 10),
        [0, 1],
        refine_shape=False,
    )
    s = settings(rot_learning_rate=4e-3, pose_learning_rate=4e-3, trans_learning_rate=4e-4, smooth=0.0)
    optimizer = torch.optim.Adam(r.parameter_groups(s))
    target, mask = scene["image"], scene["coverage"].float()
    for _ in range(100):
        out = avatar(r.pose(0), r.trans(0), cams, list(range(6)), renderer=renderer)
        loss = 30 * ((out["image"] - target).abs() * mask).sum() / (mask.sum() * 3)
        loss = loss + sum(refinement_terms(r, 0, s).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    before = (wrong - scene["pose"])[:6].norm()
    after = (r.pose(0) - scene["pose"]).detach()[:6].norm()
    assert float(after) < 0.3 * float(before), (float(before), float(after))
    assert float((r.trans(0) - scene["trans"]).detach().norm()) < 0.3 * float(shift.norm())
    assert torch.equal(r.d_pose[1], torch.zeros(45))  # frame 1 saw no step


@pytest.mark.parametrize("target", ["nearest", "area", "full"])
def test_test_time_fit_recovers_a_known_pose_offset(scene, target):
    """To LR images degraded as the data's (nearest: the reference's sampling; area) or to full-size ones."""
    from datasets.preprocess import degrade

    avatar = scene["avatar"]
    wrong = offset_pose(scene["pose"])
    images = scene["image"] if target == "full" else degrade(scene["image"], size=16, mode=target)
    mask = scene["coverage"].float()
    s = settings(test_steps=80, test_learning_rate=4e-3)
    pose, trans, record = fit_pose(
        avatar,
        wrong,
        scene["trans"],
        None,
        scene["cams"],
        list(range(6)),
        images,
        mask,
        s,
        scene["renderer"],
        degradation="nearest" if target == "full" else target,
    )
    before = (wrong - scene["pose"])[:6].norm()
    after = (pose - scene["pose"])[:6].norm()
    assert float(after) < 0.4 * float(before), (float(before), float(after))
    assert record["loss_end"] < 0.5 * record["loss_start"]


def test_normal_maps_of_the_annotation_equal_the_readers(tmp_path, assets):  # noqa: F811
    from trainers.srhand.context import RunContext
    from trainers.srhand.sequence import load_fit_data
    from utils.config import load_config
    from utils.run_logging import RunLogger

    conf = load_config(write_conf(tmp_path, assets), schema="srhand")
    ctx = RunContext.create(conf, tmp_path / "run", "cpu", RunLogger(tmp_path / "run", use_tensorboard=False))
    fit = load_fit_data(ctx)
    data = fit.tensors
    normals = render_mano_normals(
        fit.seq.hand_model(), data.pose, data.shape, data.trans, data, ctx.settings.data.normal_space
    )
    usable = data.usable
    assert torch.allclose(normals[usable].float(), data.normal[usable].float(), atol=2e-3)


# ---- main.py ---------------------------------------------------------------------------------------------
def test_main_with_refinement_writes_the_refined_annotation_and_both_evaluations(tmp_path, assets):  # noqa: F811
    from datasets.interhand import capture_key

    conf = write_conf(tmp_path, assets, "refine { enabled = true, test_steps = 3 }\neval.num_frames = 2")
    run_dir = tmp_path / "refined"
    assert run(conf, "--out", run_dir) == 0
    ckpt = torch.load(run_dir / "model.pth", map_location="cpu", weights_only=False)
    entry = ckpt["mano_refinement"]
    sd = entry["sd"]
    moved = torch.stack([sd[f"d_trans.{f}"] for f in range(len(entry["frame_ids"]))])
    assert float(moved.abs().max()) > 0  # the joint steps moved the translations
    annotation = json.loads((run_dir / "refined_mano.json").read_text())
    meta = assets["meta"]
    frames = annotation[capture_key(meta["capture"])]
    assert sorted(frames) == sorted(str(f) for f in entry["frame_ids"])
    first = str(entry["frame_ids"][0])
    expected = (sd["trans_annotated"][0] + sd["d_trans.0"]).tolist()
    assert frames[first]["right"]["trans"] == pytest.approx(expected, abs=1e-6)
    assert frames[first]["left"] is None
    from trainers.srhand.poses import read_interhand_poses

    poses = read_interhand_poses(
        run_dir / "refined_mano.json", "right"
    )  # what scripts/animate.py --poses reads
    order = sorted(range(len(entry["frame_ids"])), key=lambda f: entry["frame_ids"][f])
    refined = torch.stack(
        [sd["pose_annotated"][f] + torch.cat([sd[f"d_rot.{f}"], sd[f"d_pose.{f}"]]) for f in order]
    )
    torch.testing.assert_close(poses.pose, refined, atol=1e-6, rtol=0)
    metrics = read_metrics(run_dir)
    refinement = metrics["refinement"]
    assert refinement["frames"] == len(entry["frame_ids"]) and refinement["offsets"]["trans_mm_max"] > 0
    keypoints = refinement["keypoints"]  # the synthetic capture has the true keypoints
    assert keypoints["mpjpe_annotation_mm"] > 0 and keypoints["mpjpe_refined_mm"] > 0
    ttf = metrics["test_time_fit"]
    assert ttf["steps"] == 3 and set(ttf["per_frame"]) == {str(f) for f in metrics["eval_frames"]}
    assert ttf["frames_not_fitted"] == []
    assert ttf["p2p_mm"] > 0 and ttf["p2p_mm_mano"] > 0 and "keypoints" in ttf
    assert ttf["p2p_mm_mano"] != metrics["p2p_mm_mano"]  # the fitted MANO mesh, not the annotation's
    # --eval of the saved run reads the refined shape and repeats the test-time fit
    assert run(conf, "--eval", "--model_path", run_dir, "--out", tmp_path / "again") == 0
    again = read_metrics(tmp_path / "again")
    assert again["p2p_mm"] == pytest.approx(metrics["p2p_mm"], abs=1e-6)
    assert again["test_time_fit"]["p2p_mm"] == pytest.approx(ttf["p2p_mm"], abs=1e-4)
    # the SR images decoded once for the three passes equal those evaluate decodes itself (no test-time fit)
    assert (
        run(
            conf,
            "--eval",
            "--model_path",
            run_dir,
            "--out",
            tmp_path / "no_fit",
            "--set",
            "refine.test_time_fit=false",
        )
        == 0
    )
    plain = read_metrics(tmp_path / "no_fit")
    assert "test_time_fit" not in plain
    assert plain["sr"]["all"] == pytest.approx(metrics["sr"]["all"], rel=1e-6)
    assert plain["inconsistency"]["sr"] == pytest.approx(metrics["inconsistency"]["sr"], rel=1e-6)


def test_refinement_bad_inputs(tmp_path, assets, capsys):  # noqa: F811
    conf = write_conf(tmp_path, assets, "refine.enabled = true\neval.after_training = false")
    assert run(conf, "--out", tmp_path / "one", "--set", "data.num_frames=1") == 2
    assert "refine.enabled = true needs at least 2 fitting frames" in capsys.readouterr().err
    assert not (tmp_path / "one").exists()
    run_dir = tmp_path / "diverged"
    assert run(conf, "--out", run_dir, "--set", "refine.max_trans_mm=1e-9") == 2
    err = capsys.readouterr().err
    assert "diverged" in err and "refine.max_trans_mm" in err and "last good checkpoint" in err
    last = torch.load(run_dir / "checkpoints" / "last.pth", map_location="cpu", weights_only=False)
    assert (last["phase"], last["epoch"]) == (
        "train",
        0,
    )  # saved at the phase change, not after the bad epoch


def test_resume_with_refinement_matches_the_uninterrupted_run(tmp_path, assets):  # noqa: F811
    from utils.checkpoint import load_checkpoint

    conf = write_conf(
        tmp_path, assets, "eval.after_training = false\nrefine.enabled = true\ntrain.epochs = 3"
    )
    straight, parts = tmp_path / "straight", tmp_path / "parts"
    assert run(conf, "--out", straight) == 0
    # stop after the first joint epoch (2 + 2 pre-phase epochs before it): offsets and their Adam carry over
    assert run(conf, "--out", parts, "--set", "stop_after_epochs=5") == 0
    mid = load_checkpoint(parts / "checkpoints" / "last.pth")
    assert (mid["phase"], mid["epoch"]) == ("train", 1) and "mano_optimizer" in mid
    assert run(conf, "--out", parts, "--r") == 0
    a = load_checkpoint(straight / "checkpoints" / "last.pth")
    b = load_checkpoint(parts / "checkpoints" / "last.pth")
    for key, value in a["mano_refinement"]["sd"].items():
        torch.testing.assert_close(b["mano_refinement"]["sd"][key], value, rtol=1e-5, atol=1e-7, msg=key)
    moved = a["mano_refinement"]["sd"]["d_pose.0"]
    assert float(moved.abs().max()) > 0
    # refinement cannot be dropped from a run that has it
    assert run(conf, "--out", parts, "--r", "--set", "refine.enabled=false") == 2
