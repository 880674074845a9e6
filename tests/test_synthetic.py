"""Synthetic captures: generation, InterHand round trip, crops, masks, normals, GIIF samples.

One tiny capture (3 subjects, 3 fitting views + 1 held-out, 2 fitting frames + 2 held-out, 64x64 raw
images; the defaults: v2 surfaces, fitted annotations) is generated once per module into a temporary
folder. The v1 path (``surface="mano"``, ``annotation="exact"``) is checked against a digest of the
data the generator wrote before v2 (``tests/_synthetic_digest.py``).
"""

import json
import os

import numpy as np
import pytest
import torch

from datasets import synthetic
from datasets.interhand import read_interhand_sequence, read_joints_3d
from datasets.synthetic._np import vertex_normals_np

RECON = ("test", "Capture0", synthetic.RECON_SEQUENCE)


def _cli():
    import importlib.util

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(repo, "scripts", "make_synthetic.py")
    spec = importlib.util.spec_from_file_location("make_synthetic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """The CLI, as a user runs it (plus --save_vis and --save_gt_normals)."""
    root = str(tmp_path_factory.mktemp("synthetic") / "out")
    meta = _cli().main(
        [
            "--out",
            root,
            "--seed",
            "7",
            "--raw-size",
            "64",
            "--hr-size",
            "48",
            "--num-views",
            "3",
            "--num-heldout-views",
            "1",
            "--num-frames",
            "2",
            "--num-subjects",
            "3",
            "--no-progress",
            "--save_vis",
            "--save_gt_normals",
        ]
    )
    return root, synthetic.SyntheticConfig(**meta["config"]), meta


def test_layout_and_metadata(capture):
    root, config, meta = capture
    roles = {(s["split"], s["capture"], s["role"]) for s in meta["subjects"]}
    assert roles == {
        ("test", "Capture0", "reconstruction"),
        ("val", "Capture0", "sr_val"),
        ("train", "Capture0", "sr_train"),
    }
    assert meta["num_images"] == 4 * 4 + 2 * 3 * 2
    recon = meta["subjects"][0]
    assert recon["fit_cameras"] == ["cam400101", "cam400102", "cam400103"]
    assert recon["heldout_cameras"] == ["cam400201"]
    assert len(recon["fit_frame_ids"]) == 2 and len(recon["heldout_frame_ids"]) == 2
    for split in ("train", "val", "test"):
        for kind in ("camera", "MANO_NeuralAnnot", "joint_3d", "data"):
            assert os.path.isfile(
                os.path.join(root, "annotations", split, f"InterHand2.6M_{split}_{kind}.json")
            )
    with open(os.path.join(root, "annotations", "test", "InterHand2.6M_test_data.json")) as f:
        data = json.load(f)
    assert len(data["images"]) == 16
    assert all(os.path.isfile(os.path.join(root, "images", "test", im["file_name"])) for im in data["images"])
    with open(os.path.join(root, "synthetic_meta.json")) as f:
        assert json.load(f)["config"]["seed"] == 7
    assert os.path.getsize(os.path.join(root, "vis_synthetic.png")) > 1000
    normal = os.path.join(root, "gt_normals", *RECON, "cam400101", "normal10000.png")
    assert os.path.isfile(normal)


def test_reader_round_trip(capture):
    """Same cameras, poses and (within JPEG tolerance) images as generated."""
    root, config, meta = capture
    recon = meta["subjects"][0]
    seq = read_interhand_sequence(root, *RECON)
    assert seq.camera_names == recon["cameras"] and seq.frame_ids == recon["frame_ids"]
    assert seq.cameras.image_size == (64, 64)
    assert torch.allclose(seq.cameras.K, torch.tensor(recon["K"], dtype=torch.float32), atol=1e-4)
    assert torch.allclose(seq.cameras.R, torch.tensor(recon["R"], dtype=torch.float32), atol=1e-6)
    assert torch.allclose(seq.cameras.t, torch.tensor(recon["t"], dtype=torch.float32), atol=1e-6)
    with np.load(seq.gt_mesh_path) as gt:
        assert torch.allclose(seq.mano_pose, torch.from_numpy(gt["mano_pose"]), atol=1e-6)
        assert torch.allclose(seq.mano_trans, torch.from_numpy(gt["mano_trans"]), atol=1e-7)
        assert gt["verts"].shape == (4, 49281, 3) and gt["faces"].shape == (98432, 3)
        albedo = torch.from_numpy(gt["albedo"])
    # the fitting protocol of the reference: first V cameras, strided frames
    fit = read_interhand_sequence(root, *RECON, cameras=3, num_frames=2)
    assert fit.camera_names == recon["fit_cameras"] and fit.frame_ids == recon["fit_frame_ids"]
    # re-render one frame and compare with the JPEG
    verts, faces = seq.gt_mesh(1)
    cams = seq.cameras
    out = synthetic.render_views(
        verts,
        faces,
        albedo,
        cams.K,
        cams.R,
        cams.t,
        (64, 64),
        torch.tensor(recon["sh_coeffs"], dtype=torch.float32),
        supersample=2,
    )
    for v in range(seq.num_views):
        diff = np.abs(seq.load_image(1, v) - out["image"][v].numpy())
        assert diff.mean() < 0.02, (v, diff.mean())


def test_fitted_annotation(capture):
    """The default annotation is a fit to noisy keypoints: millimetres from the truth, in the documented band."""
    root, config, meta = capture
    assert (config.surface, config.annotation, config.annotation_noise_mm) == ("v2", "fit", 3.0)
    seq = read_interhand_sequence(root, *RECON)
    verts_mano, joints = seq.mano_forward()
    with np.load(seq.gt_mesh_path) as gt:
        true_kp = torch.from_numpy(gt["true_keypoints"])
        assert (
            str(gt["surface"]) == "v2" and str(gt["annotation"]) == "fit" and gt["tissue"].shape == (49281,)
        )
        gt_verts = torch.from_numpy(gt["verts"])
        true_pose = torch.from_numpy(gt["true_mano_pose"])
    assert not torch.allclose(seq.mano_pose, true_pose, atol=1e-3)  # fitted, not the generating parameters
    # The subdivided GT keeps the coarse vertices first: the fitted mesh is millimetres away, not centimetres.
    dist = (gt_verts[:, :778] - verts_mano).norm(dim=-1).mean() * 1000
    assert 0.5 < dist < 6.0, dist
    from datasets.capture import hand_joints

    mpjpe = (hand_joints(seq) - true_kp).norm(dim=-1).mean() * 1000
    assert 1.0 < mpjpe < 8.0, mpjpe
    # joint_3d holds the noisy keypoints the annotation was fitted to (InterHand: triangulated keypoints)
    world, valid = read_joints_3d(root, "test", "Capture0", seq.frame_ids)[seq.frame_ids[0]]
    assert valid[:21].all() and not valid[21:].any()
    assert (
        0.3 < np.linalg.norm(world[20] - true_kp[0, 0].numpy()) * 1000 < 20
    )  # wrist, metres after the reader
    for split in ("test", "val", "train"):
        m = meta[split]
        assert set(m) >= {"input_mano_p2p_mm", "input_mano_p2p_p90_mm", "annotation_mpjpe_mm"}
        assert 1.0 < m["input_mano_p2p_mm"] < 4.5 and m["input_mano_p2p_p90_mm"] > m["input_mano_p2p_mm"], m
        assert 1.0 < m["annotation_mpjpe_mm"] < 8.0, m
    recon = meta["subjects"][0]
    assert recon["annotation"]["mode"] == "fit" and len(recon["annotation"]["fitted_betas"]) == 10
    assert set(recon["tissue_mm"]) == set(synthetic.TISSUE_RANGES)


def test_surface_distances_match_p2p():
    """The metadata's per-point distances average to the i.i.d. P2P estimate exactly (the estimator of before
    issue 26, kept for the data: ``p2p_parts_mm(..., estimator="iid")``)."""
    from datasets.synthetic.annotate import surface_distances_mm
    from utils.metrics.geometry import p2p_parts_mm

    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]) * 0.05
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    w = v + torch.tensor([0.001, 0.002, 0.003]) * torch.rand(4, 1, generator=torch.Generator().manual_seed(0))
    d_pred, d_gt = surface_distances_mm(v, f, w, f, num_samples=300)
    iid = p2p_parts_mm(v, f, w, f, num_samples=300, estimator="iid")["symmetric"]
    assert (d_pred.mean() + d_gt.mean()) / 2 == pytest.approx(iid, rel=1e-12)


def test_v1_path_reproduces_the_old_data(tmp_path):
    """``surface="mano"`` + ``annotation="exact"`` writes what the generator wrote before v2 (same seed)."""
    from tests._synthetic_digest import GOLDEN_CONFIG, digest

    config = synthetic.SyntheticConfig(**GOLDEN_CONFIG, surface="mano", annotation="exact")
    synthetic.generate(config, tmp_path, progress=False, log=lambda *a, **k: None)
    with open(os.path.join(os.path.dirname(__file__), "golden", "synthetic_v1_digest.json")) as f:
        golden = json.load(f)
    got = digest(tmp_path)
    assert sorted(got) == sorted(golden)
    for key, values in golden.items():
        tol = 0.05 if key.endswith("/images") else 1e-4  # JPEG decoding; float32 sums
        np.testing.assert_allclose(got[key], values, rtol=1e-5, atol=tol, err_msg=key)
    seq = read_interhand_sequence(tmp_path, *RECON)
    verts_mano, joints = seq.mano_forward()
    gt, _ = seq.gt_mesh(0)
    # The exact parameters reproduce the coarse hand: the subdivided GT's coarse vertices within a few mm.
    assert (gt[:778] - verts_mano[0]).norm(dim=1).mean() < 0.003
    world, _ = read_joints_3d(tmp_path, "test", "Capture0", seq.frame_ids)[seq.frame_ids[0]]
    assert np.allclose(world[20], joints[0, 0].numpy(), atol=1e-5)  # wrist, metres after the reader
    with open(os.path.join(tmp_path, "synthetic_meta.json")) as f:
        assert json.load(f)["test"]["input_mano_p2p_mm"] < 1.0


def test_soft_tissue_within_documented_ranges():
    from datasets.synthetic.tissue import POSE_RANGES, TISSUE_RANGES
    from utils.geometry.mano import HandModel, default_hand_model_path

    hand = HandModel.from_file(default_hand_model_path("right"))
    subject = synthetic.make_subject(
        hand, np.random.default_rng(3), levels=1, surface="v2", tissue_rng=np.random.default_rng(4)
    )
    for key, value in subject.tissue_params.items():
        lo, hi = TISSUE_RANGES[key]
        assert np.all((np.asarray(value) >= lo) & (np.asarray(value) <= hi)), (key, value)
    parts = {k: v * 1000 for k, v in subject.tissue_parts.items()}  # mm
    peak = {
        "girth": max(
            abs(TISSUE_RANGES["girth"][0]) + abs(TISSUE_RANGES["taper"][0]), TISSUE_RANGES["girth"][1]
        ),
        "knuckle": TISSUE_RANGES["knuckle"][1],
        "pad": TISSUE_RANGES["pad"][1],
        "thenar": TISSUE_RANGES["thenar"][1],
        "hypothenar": TISSUE_RANGES["hypothenar"][1],
        "palm": TISSUE_RANGES["palm_palmar"][1] + TISSUE_RANGES["palm_dorsal"][1],
        "nail": TISSUE_RANGES["nail"][1],
        "irregular": 3.5 * TISSUE_RANGES["irregular"][1],
    }
    for key, values in parts.items():
        assert np.abs(values).max() <= peak[key] * 1.05, (key, np.abs(values).max())
    # the named bulges reach their drawn amplitude somewhere (they are not silently empty)
    for key in ("pad", "thenar", "nail"):
        assert parts[key].max() > 0.8 * np.min(subject.tissue_params[key]), key
    total = subject.tissue * 1000
    assert 2.0 < np.abs(total).max() < 9.0 and 0.4 < np.abs(total).mean() < 3.0
    assert np.allclose(
        subject.verts,
        subject.verts_smooth
        + (subject.displacement + subject.tissue)[:, None]
        * vertex_normals_np(subject.verts_smooth, subject.faces),
    )
    for key, value in subject.pose_deformation.params.items():
        lo, hi = POSE_RANGES[key]
        assert np.all((np.asarray(value) >= lo) & (np.asarray(value) <= hi)), key
    # same generators, same subject
    again = synthetic.make_subject(
        hand, np.random.default_rng(3), levels=1, surface="v2", tissue_rng=np.random.default_rng(4)
    )
    assert np.array_equal(again.verts, subject.verts)
    v1 = synthetic.make_subject(hand, np.random.default_rng(3), levels=1)
    assert np.array_equal(v1.albedo, subject.albedo) and np.array_equal(v1.displacement, subject.displacement)


def test_pose_deformation_zero_at_rest_and_grows_with_flexion():
    from utils.geometry.mano import HandModel, default_hand_model_path

    hand = HandModel.from_file(default_hand_model_path("right"))
    subject = synthetic.make_subject(
        hand, np.random.default_rng(5), levels=1, surface="v2", tissue_rng=np.random.default_rng(6)
    )
    deform = subject.pose_deformation
    assert np.abs(deform.offsets(np.zeros((1, 16, 3)))).max() == 0.0
    # extension and spread leave it at zero: only flexion (and opposition) activate it
    spread = np.zeros((1, 16, 3))
    spread[0, 2] = -0.5 * subject.frame.flex_axis[2]
    spread[0, 4] = 0.3 * subject.frame.spread_axis[4]
    assert np.abs(deform.offsets(spread)).max() == 0.0
    frame = subject.frame
    angles = np.radians([0, 20, 45, 70, 95])
    full = np.zeros((len(angles), 16, 3))
    full[:, 2] = angles[:, None] * frame.flex_axis[2]  # index PIP
    off = deform.offsets(full) * 1000  # (5, N) mm
    near = np.linalg.norm(subject.verts_smooth - frame.joints[2], axis=1) < 0.012
    dorsal = near & (vertex_normals_np(subject.verts_smooth, subject.faces) @ frame.palmar[2] < -0.5)
    bulge = off[:, dorsal].max(1)
    assert bulge[0] == 0 and np.all(np.diff(bulge) > 0), bulge
    assert 0.5 < bulge[-1] < 2.5  # mm at 95 degrees: A_d (1-2 mm) x (1 - cos 95 deg)
    assert (
        np.abs(off[:, ~(np.linalg.norm(subject.verts_smooth - frame.joints[2], axis=1) < 0.03)]).max() < 1e-6
    )
    # thenar bulge with thumb opposition
    axis = deform.opposition_axis
    opp = np.zeros((3, 16, 3))
    opp[:, 13] = np.radians([0, 25, 45])[:, None] * axis
    t = (deform.offsets(opp) * 1000).max(1)
    assert t[0] == 0 and t[1] < t[2] and 1.0 < t[2] < 3.5
    # posing: the rest pose (pose = -pose_mean) gives the canonical surface, flexion moves the GT
    rest = -hand.pose_mean[None].float()
    gt = synthetic.pose_subject(hand, subject, rest, torch.zeros(1, 3), levels=1)
    v1 = synthetic.pose_subject(
        hand,
        synthetic.make_subject(hand, np.random.default_rng(5), levels=1),
        rest,
        torch.zeros(1, 3),
        levels=1,
    )
    assert torch.allclose(
        gt - v1,
        torch.as_tensor(
            subject.verts
            - subject.verts_smooth
            - subject.displacement[:, None] * vertex_normals_np(subject.verts_smooth, subject.faces),
            dtype=torch.float32,
        )[None],
        atol=1e-6,
    )


def test_crops_masks_and_normals(capture):
    """Projected joints inside the crops; MANO masks agree with the rendered silhouettes; unit normals."""
    root, _, _ = capture
    seq = read_interhand_sequence(root, *RECON)
    from datasets.preprocess import warp_to_crop
    from utils.image_io import read_image

    for f in range(seq.num_frames):
        for v in range(seq.num_views):
            s = seq.sample(f, v, size=48)
            x_cam = s["joints_world"] @ s["R"].T + s["t"]
            uv = x_cam[:, :2] / x_cam[:, 2:] @ s["K"][:2, :2].T + s["K"][:2, 2]
            assert (uv > 0).all() and (uv < 48).all()
            gt_mask = read_image(
                os.path.join(root, "gt_masks", *RECON, seq.camera_names[v], f"mask{seq.frame_ids[f]}.png"),
                on_black="ignore",
            )[..., 0]
            gt_crop = warp_to_crop(gt_mask, s["box"].numpy(), (48, 48)) > 0.5
            mask = s["mask"][0].numpy() > 0
            iou = (mask & gt_crop).sum() / (mask | gt_crop).sum()
            assert iou > 0.8, (f, v, iou)
            inside = s["mask"][0] > 0
            norm = s["normal_map"].norm(dim=0)
            assert torch.allclose(norm[inside], torch.ones(()), atol=1e-4) and (norm[~inside] == 0).all()
            # the hand is not centred in the raw image: the crop box moves around
            assert s["image"].shape == (3, 48, 48) and not s["is_black"]


def test_giif_dataset_and_capture_split(capture):
    root, _, _ = capture
    from datasets.giif_data import GiifDataset, split_captures

    ds = GiifDataset(root, split="train", size=32, normal_size=16)
    assert len(ds) == 2 * 3
    item = ds[0]
    assert item["hr"].shape == (3, 32, 32) and item["normal_map"].shape == (3, 16, 16)
    assert (item["hr"] * (1 - item["mask"])).abs().max() == 0
    assert item["capture"] == "Capture0" and item["camera"].startswith("cam400")
    import pickle

    clone = pickle.loads(pickle.dumps(ds))  # what DataLoader workers get
    assert torch.equal(clone[3]["hr"], ds[3]["hr"])
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["hr"].shape == (2, 3, 32, 32)
    train, val = split_captures([f"Capture{i}" for i in (0, 1, 2, 10, 11)], num_val=2)
    assert train == ["Capture0", "Capture1", "Capture2"] and val == ["Capture10", "Capture11"]
    train, val = split_captures([f"Capture{i}" for i in (0, 1, 2, 10, 11)], num_val=2, order="lexicographic")
    assert val == ["Capture11", "Capture2"]
    assert split_captures(["Capture0", "Capture1"], val_captures=[1]) == (["Capture0"], ["Capture1"])
    with pytest.raises(ValueError, match="Capture9"):
        split_captures(["Capture0"], val_captures=["Capture9"])


def test_determinism_and_detail_placement():
    """Same seed, same subject and motion; creases sit at joints, nails at fingertips."""
    from utils.geometry.mano import HandModel, default_hand_model_path

    hand = HandModel.from_file(default_hand_model_path("right"))
    a = synthetic.make_subject(hand, np.random.default_rng(3), levels=1)
    b = synthetic.make_subject(hand, np.random.default_rng(3), levels=1)
    c = synthetic.make_subject(hand, np.random.default_rng(4), levels=1)
    assert np.array_equal(a.albedo, b.albedo) and not np.allclose(a.albedo, c.albedo)
    frame = a.frame
    nail = a.labels["nail"] > 0.5
    assert nail.any()
    owner = a.weights[nail].argmax(1)
    assert np.isin(owner, [3, 6, 9, 12, 15]).mean() > 0.95  # on the distal phalanges
    tip_dist = np.linalg.norm(a.verts_smooth[nail][:, None] - frame.tips[None], axis=-1).min(1)
    assert tip_dist.max() < 0.03
    normals = vertex_normals_np(a.verts_smooth, a.faces)
    assert (normals[nail] @ frame.palm_normal < 0).mean() > 0.9  # facing away from the palm
    crease = a.labels["crease"] > 0.5
    joint_dist = np.linalg.norm(a.verts_smooth[crease][:, None] - frame.joints[None, 1:], axis=-1).min(1)
    assert np.median(joint_dist) < 0.015
    pose_a, drift_a, _ = synthetic.make_articulation(
        np.random.default_rng(1), frame, 5, hand.pose_mean.numpy()
    )
    pose_b, drift_b, _ = synthetic.make_articulation(
        np.random.default_rng(1), frame, 5, hand.pose_mean.numpy()
    )
    assert np.array_equal(pose_a, pose_b) and np.array_equal(drift_a, drift_b)
    assert np.abs(np.diff(pose_a, axis=0)).max() < 1.0  # smooth: no jumps between frames


def test_bad_config(capture):
    root, _, _ = capture
    with pytest.raises(ValueError, match="num_subjects"):
        synthetic.SyntheticConfig(num_subjects=2)
    with pytest.raises(ValueError, match="preset"):
        synthetic.SyntheticConfig.preset("gpu")
    with pytest.raises(FileExistsError, match="overwrite"):
        synthetic.generate(synthetic.SyntheticConfig(), root, progress=False)


def test_gt_posing_matches_the_hand_model_with_pose_blend_shapes():
    """With pose correctives (real MANO has them) the GT posing still reproduces HandModel.forward."""
    from dataclasses import replace

    from utils.geometry.mano import HandModel, default_hand_model_path, load_mano_dict

    data = load_mano_dict(default_hand_model_path("right"))
    data["posedirs"] = np.random.default_rng(0).normal(0.0, 2e-3, data["posedirs"].shape)
    hand = HandModel(data, side="right")
    subject = synthetic.make_subject(hand, np.random.default_rng(1), levels=0)
    subject = replace(subject, verts=subject.verts_smooth)  # no displacement: the coarse mesh itself
    pose = torch.as_tensor(np.random.default_rng(2).normal(0.0, 0.3, (3, 48)), dtype=torch.float32)
    trans = torch.full((3, 3), 0.1)
    gt = synthetic.pose_subject(hand, subject, pose, trans, levels=0)
    verts, _ = hand.forward(pose, torch.as_tensor(subject.betas, dtype=torch.float32).expand(3, -1), trans)
    assert (gt - verts).abs().max() < 1e-5


def test_left_hand_capture(tmp_path):
    config = synthetic.SyntheticConfig(
        seed=1,
        raw_size=(48, 48),
        num_views=2,
        num_heldout_views=0,
        num_frames=1,
        num_subjects=3,
        subdivision_levels=1,
        hand_side="left",
    )
    synthetic.generate(config, tmp_path, progress=False, log=lambda *a: None)
    seq = read_interhand_sequence(tmp_path, *RECON, hand="left")
    assert seq.hand_side == "left" and seq.num_frames == 2
    with pytest.raises(ValueError, match="no usable right-hand frame"):
        read_interhand_sequence(tmp_path, *RECON, hand="right")
    s = seq.sample(0, 0, size=32)
    assert s["mask"].sum() > 50
    # The --save_vis picture reads the left hand too (it used to ask the reader for a right hand).
    from datasets.synthetic.visualise import save_visualisation

    path = save_visualisation(tmp_path, tmp_path / "vis.png", hr_size=32, num_views=2, num_frames=1)
    assert os.path.getsize(path) > 1000


def test_annotation_is_deterministic_and_near_the_keypoints():
    """Same noise stream, same fitted parameters; the fit lands near the (noisy) keypoints."""
    from datasets.synthetic.annotate import annotate, true_keypoints
    from utils.geometry.mano import HandModel, default_hand_model_path

    hand = HandModel.from_file(default_hand_model_path("right"))
    subject = synthetic.make_subject(
        hand, np.random.default_rng(8), levels=0, surface="v2", tissue_rng=np.random.default_rng(9)
    )
    pose, drift, _ = synthetic.make_articulation(
        np.random.default_rng(10), subject.frame, 3, hand.pose_mean.numpy()
    )
    pose_t, trans_t = torch.as_tensor(pose, dtype=torch.float32), torch.as_tensor(drift, dtype=torch.float32)
    gt = synthetic.pose_subject(hand, subject, pose_t, trans_t, levels=0)
    _, joints = hand.forward(
        pose_t, torch.as_tensor(subject.betas, dtype=torch.float32).expand(3, -1), trans_t
    )
    keypoints = true_keypoints(joints, gt)
    a = annotate(hand, keypoints, np.random.default_rng(11), noise_mm=2.0)
    b = annotate(hand, keypoints, np.random.default_rng(11), noise_mm=2.0)
    assert np.array_equal(a["pose"], b["pose"]) and np.array_equal(a["shape"], b["shape"])
    assert a["report"]["residual_mm"]["joints_mean"] < 5.0
    error = (a["joints"] - keypoints).norm(dim=-1).mean() * 1000
    assert 0.5 < error < 6.0, error
    with pytest.raises(ValueError, match="noise"):
        annotate(hand, keypoints, np.random.default_rng(11), noise_mm=-1.0)
