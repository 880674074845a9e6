"""The CaptureSequence data model: validation, lazy images, subsets, pickling, samples."""

import pickle

import numpy as np
import pytest
import torch

from datasets.capture import CaptureSequence, is_black
from utils.errors import InputError


def _cameras(n=2, size=(40, 30)):
    from utils.geometry.camera import Cameras, look_at

    Rs, ts = zip(
        *[look_at([0.5 * np.cos(i), 0.0, 0.5 * np.sin(i) - 0.5], [0.0, 0.0, 0.0]) for i in range(n)],
        strict=True,
    )
    K = torch.tensor([[60.0, 0, size[1] / 2], [0, 60.0, size[0] / 2], [0, 0, 1]]).expand(n, 3, 3)
    return Cameras(
        K=K, R=torch.stack(Rs), t=torch.stack(ts), image_size=size, names=[f"cam40000{i}" for i in range(n)]
    )


def _sequence(tmp_path, num_frames=3, size=(40, 30), **kw):
    import cv2

    cams = _cameras(size=size)
    paths = []
    for f in range(num_frames):
        row = []
        for v in range(len(cams)):
            p = str(tmp_path / f"f{f}_v{v}.jpg")
            cv2.imwrite(p, np.full((size[0], size[1], 3), 0 if (f, v) == (1, 1) else 120, np.uint8))
            row.append(p)
        paths.append(row)
    args = dict(
        cameras=cams,
        frame_ids=[10 * f for f in range(num_frames)],
        mano_pose=np.zeros((num_frames, 48)),
        mano_shape=np.zeros((num_frames, 10)),
        mano_trans=np.zeros((num_frames, 3)),
        hand_side="right",
        image_paths=paths,
        name="test/Capture0/X",
    )
    args.update(kw)
    return CaptureSequence(**args)


def test_validation_errors(tmp_path):
    with pytest.raises(ValueError, match=r"mano_pose must have shape \(3, 48\)"):
        _sequence(tmp_path, mano_pose=np.zeros((3, 45)))
    with pytest.raises(ValueError, match="hand_side"):
        _sequence(tmp_path, hand_side="both")
    with pytest.raises(ValueError, match="image_paths"):
        _sequence(tmp_path, image_paths=[["a", "b"]])


def test_lazy_images_select_and_pickle(tmp_path):
    seq = _sequence(tmp_path)
    assert len(seq) == 6 and seq.num_frames == 3 and seq.num_views == 2
    assert seq.mano_pose.dtype == torch.float32
    image = seq.load_image(0, 1)
    assert image.shape == (40, 30, 3) and image.dtype == np.float32 and abs(image.mean() - 120 / 255) < 0.02
    assert seq.report["black_images"] == []
    assert is_black(seq.load_image(1, 1)) and seq.report["black_images"] == [(10, "cam400001")]
    sub = seq.select(frames=[2, 0], views=["cam400001"])
    assert sub.frame_ids == [20, 0] and sub.camera_names == ["cam400001"]
    assert sub.image_paths[0][0] == seq.image_paths[2][1]
    assert seq.frame_index(20) == 2
    with pytest.raises(ValueError, match="frame 7"):
        seq.frame_index(7)
    seq._cache["verts"] = torch.zeros(3, 778, 3)
    clone = pickle.loads(pickle.dumps(seq))
    assert clone._cache == {} and clone.frame_ids == seq.frame_ids


def test_wrong_image_size_and_missing_gt(tmp_path):
    seq = _sequence(tmp_path, size=(40, 30))
    seq.cameras.image_size = (30, 40)
    with pytest.raises(ValueError, match="expects 40x30"):
        seq.load_image(0, 0)
    with pytest.raises(FileNotFoundError, match="no ground-truth"):
        seq.gt_mesh(0)
    seq.gt_mesh_path = str(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        seq.gt_mesh(0)


def test_gt_mesh_lookup(tmp_path):
    path = tmp_path / "gt.npz"
    verts = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    np.savez(path, frame_ids=np.array([20, 0]), faces=np.array([[0, 1, 2]], np.int32), verts=verts)
    seq = _sequence(tmp_path, gt_mesh_path=str(path))
    v, f = seq.gt_mesh(0)
    assert torch.equal(v, torch.from_numpy(verts[1])) and f.dtype == torch.long
    with pytest.raises(InputError, match="frame 10"):
        seq.gt_mesh(1)


def test_sample_on_the_procedural_hand(tmp_path):
    """Crop around the projected MANO hand: joints inside, mask non-empty, unit normals, K consistent."""
    from utils.geometry.camera import Cameras, look_at
    from utils.geometry.mano import HandModel, default_hand_model_path

    hand = HandModel.from_file(default_hand_model_path("right"), side="right")
    pose = torch.zeros(1, 48)
    verts, joints = hand.forward(pose, torch.zeros(1, 10), torch.zeros(1, 3))
    centre = verts[0].mean(0)
    R, t = look_at((centre + torch.tensor([0.03, -0.4, 0.05])).tolist(), centre.tolist())
    K = torch.tensor([[150.0, 0, 60], [0, 150.0, 40], [0, 0, 1]])
    cams = Cameras(K=K[None], R=R[None], t=t[None], image_size=(90, 100), names=["cam400001"])
    import cv2

    path = str(tmp_path / "img.jpg")
    cv2.imwrite(path, np.full((90, 100, 3), 200, np.uint8))
    seq = CaptureSequence(
        cameras=cams,
        frame_ids=[0],
        mano_pose=pose,
        mano_shape=np.zeros((1, 10)),
        mano_trans=np.zeros((1, 3)),
        hand_side="right",
        image_paths=[[path]],
    )
    s = seq.sample(0, 0, size=64, normal_size=32)
    assert s["image"].shape == (3, 64, 64) and s["mask"].shape == (1, 64, 64)
    assert s["normal_map"].shape == (3, 32, 32)
    uvw = (s["K"] @ (joints[0] @ s["R"].T + s["t"]).T).T
    uv = uvw[:, :2] / uvw[:, 2:]
    assert (uv > 0).all() and (uv < 64).all()
    inside = s["mask"][0] > 0
    assert 0.2 < inside.float().mean() < 0.8
    # the hand fills 80 % of the crop side
    ys, xs = torch.nonzero(inside, as_tuple=True)
    extent = max(int(xs.max() - xs.min()), int(ys.max() - ys.min())) + 1
    assert abs(extent / 64 - 0.8) < 0.06
    n32 = s["normal_map"].norm(dim=0)
    assert ((n32 - 1).abs() < 1e-3).sum() > 100
    assert not s["is_black"]


def test_perturb_mano_is_per_frame_deterministic_and_measured(tmp_path):
    from datasets.capture import hand_joints, perturb_mano
    from utils.metrics.geometry import mpjpe_mm

    seq = _sequence(tmp_path, num_frames=4, mano_trans=np.tile([0.0, 0.0, 0.4], (4, 1)))
    same = perturb_mano(seq)
    assert torch.equal(same.mano_pose, seq.mano_pose) and torch.equal(same.mano_trans, seq.mano_trans)

    noisy = perturb_mano(seq, pose_std=0.05, shape_std=0.3, trans_std=0.004, seed=3)
    assert not torch.equal(noisy.mano_pose, seq.mano_pose) and torch.equal(seq.mano_pose, torch.zeros(4, 48))
    # A frame's noise depends on (seed, frame number) only: perturbing a subset gives the same parameters.
    sub = perturb_mano(seq.select(frames=[3, 1]), pose_std=0.05, shape_std=0.3, trans_std=0.004, seed=3)
    for key in ("mano_pose", "mano_shape", "mano_trans"):
        assert torch.equal(getattr(sub, key), getattr(noisy, key)[[3, 1]]), key
    # One shape per subject; another seed, other noise.
    assert torch.equal(noisy.mano_shape, noisy.mano_shape[:1].expand(4, 10))
    other = perturb_mano(seq, pose_std=0.05, seed=4)
    assert not torch.allclose(other.mano_pose, noisy.mano_pose)
    # Translation noise moves every joint by the same vector: MPJPE = |delta t|, per frame.
    moved = perturb_mano(seq, trans_std=0.01, seed=1)
    expected = 1000 * (moved.mano_trans - seq.mano_trans).norm(dim=-1)
    joints = hand_joints(seq)
    assert joints.shape == (4, 21, 3)
    assert torch.allclose(mpjpe_mm(hand_joints(moved), joints).float(), expected, atol=1e-3)
    with pytest.raises(ValueError, match="pose_std must be >= 0"):
        perturb_mano(seq, pose_std=-1.0)


def test_procedural_hand_on_real_data_needs_the_config_key(tmp_path):
    """The shipped procedural stand-in hand (NOT MANO) runs on this project's synthetic captures; on any other
    capture it is refused unless ``data.allow_procedural_hand``, and a MANO file is always accepted."""
    from datasets.capture import check_hand_model_for_data
    from utils.errors import InputError
    from utils.geometry.mano import default_hand_model_path

    procedural = default_hand_model_path("right")
    real, synthetic = tmp_path / "interhand", tmp_path / "synthetic"
    real.mkdir()
    synthetic.mkdir()
    (synthetic / "synthetic_meta.json").write_text("{}")
    with pytest.raises(
        InputError, match=r"data.mano_dir .*\$SRHAND_MANO_DIR.*data.allow_procedural_hand = true"
    ):
        check_hand_model_for_data(procedural, real, allow_procedural=False)
    check_hand_model_for_data(procedural, real, allow_procedural=True)
    check_hand_model_for_data(procedural, synthetic, allow_procedural=False)
    check_hand_model_for_data(str(tmp_path / "MANO_RIGHT.pkl"), real, allow_procedural=False)
