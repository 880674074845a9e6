"""InterHand2.6M reader on a tiny hand-made tree holding each pitfall of the real data.

The tree is written with ``InterHandWriter`` (so the writer is exercised too) and then broken on
purpose: a ``None`` MANO fit, a frame without a MANO key, a frame missing from one camera, a grey
camera, a camera from the drop list, a rotated camera (cam400412), an all-black image and a
single-image sequence. Images are 16x24 random JPEGs; nothing here renders.
"""

import json
import os

import numpy as np
import pytest
import torch

from datasets import interhand
from datasets.interhand import InterHandWriter, read_interhand_sequence
from utils.errors import InputError

H, W = 24, 16
CAMS = ["cam400002", "cam400004", "cam400006", "cam410001", "cam400412"]
FRAMES = [100, 106, 112, 118, 130]


def _camera(i):
    from utils.geometry.camera import look_at

    R, t = look_at([0.6 * np.cos(i), 0.1 * i, 0.6 * np.sin(i)], [0.0, 0.0, 0.0], dtype=torch.float64)
    K = np.array([[30.0 + i, 0, W / 2], [0, 31.0 + i, H / 2], [0, 0, 1]])
    return K, R.numpy(), t.numpy()


def _write_jpeg(path, h, w, rng, black=False):
    import cv2

    img = np.zeros((h, w, 3), np.uint8) if black else rng.integers(40, 255, (h, w, 3), dtype=np.uint8)
    cv2.imwrite(path, img)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("interhand"))
    rng = np.random.default_rng(0)
    writer = InterHandWriter(root, "test")
    cams = {}
    for i, cam in enumerate(CAMS):
        cams[cam] = _camera(i)
        writer.add_camera("Capture0", cam, *cams[cam])
    pose = rng.normal(0, 0.1, (len(FRAMES), 48))
    for k, f in enumerate(FRAMES):
        if f == 130:
            continue  # no MANO key at all
        writer.add_mano("Capture0", f, "right", pose[k], np.zeros(10), [0.0, 0.0, 0.0])
        writer.add_joints("Capture0", f, "right", rng.normal(0, 0.05, (21, 3)))
    writer.add_mano("Capture0", 112, "left", pose[2], np.ones(10), [0.1, 0.0, 0.0])
    writer.mano["0"]["106"]["right"] = None  # a missing NeuralAnnot fit
    for cam in CAMS:
        h, w = (W, H) if cam == "cam400412" else (H, W)  # stored rotated
        for f in FRAMES:
            if cam == "cam400004" and f == 118:
                continue  # a frame missing from one camera
            path = writer.image_path("Capture0", "SEQ_A", cam, f)
            _write_jpeg(path, h, w, rng, black=(cam == "cam400002" and f == 112))
            writer.add_image("Capture0", "SEQ_A", cam, f, w, h, 0, [1, 1, 5, 5])
        _write_jpeg(writer.image_path("Capture0", "SINGLE", cam, 100), h, w, rng)
    writer.write()
    return {"root": root, "cams": cams, "pose": pose}


def test_writer_json_units(tree):
    root = tree["root"]
    with open(interhand.annotation_path(root, "test", "camera")) as f:
        cam = json.load(f)["0"]
    K, R, t = tree["cams"]["cam400004"]
    campos = np.asarray(cam["campos"]["400004"])
    assert np.allclose(campos, -R.T @ t * 1000.0)  # millimetres, world camera centre
    assert np.allclose(cam["camrot"]["400004"], R) and cam["focal"]["400004"] == [K[0, 0], K[1, 1]]
    with open(interhand.annotation_path(root, "test", "joint_3d")) as f:
        joints = json.load(f)["0"]["100"]
    assert np.asarray(joints["world_coord"]).shape == (42, 3) and joints["joint_valid"][21:] == [0] * 21
    with open(interhand.annotation_path(root, "test", "data")) as f:
        data = json.load(f)
    assert len(data["images"]) == len(data["annotations"]) == 5 * 5 - 1
    assert data["images"][0]["file_name"].startswith("Capture0/SEQ_A/cam")


def test_read_right_hand_skips_and_reports(tree):
    seq = read_interhand_sequence(tree["root"], "test", "Capture0", "SEQ_A")
    # colour cameras only, drop list applied, the rotated one dropped and reported
    assert seq.camera_names == ["cam400002", "cam400004"]
    assert "cam400412" in seq.report["dropped_cameras"]
    assert "rotated" in seq.report["dropped_cameras"]["cam400412"]
    assert seq.frame_ids == [100, 112]
    skipped = seq.report["skipped_frames"]
    assert skipped["image missing in some selected camera"] == [118]
    assert skipped["MANO fit of the right hand missing (None)"] == [106]
    assert skipped["no MANO entry for the frame"] == [130]
    assert "skipped 1 frame(s)" in seq.summary()
    # cameras and poses as written (metres, OpenCV)
    K, R, t = tree["cams"]["cam400004"]
    assert torch.allclose(seq.cameras.K[1].double(), torch.tensor(K), atol=1e-5)
    assert torch.allclose(seq.cameras.R[1].double(), torch.tensor(R), atol=1e-6)
    assert torch.allclose(seq.cameras.t[1].double(), torch.tensor(t), atol=1e-6)
    assert torch.allclose(seq.mano_pose[1].double(), torch.tensor(tree["pose"][2]), atol=1e-6)
    assert seq.cameras.image_size == (H, W)
    assert seq.image_paths[0][1].endswith(os.path.join("SEQ_A", "cam400004", "image100.jpg"))


def test_hand_selection(tree):
    root = tree["root"]
    only = read_interhand_sequence(root, "test", 0, "SEQ_A", single_hand_only=True)
    assert only.frame_ids == [100]
    assert only.report["skipped_frames"]["left hand also present (single-hand frames only)"] == [112]
    left = read_interhand_sequence(root, "test", "Capture0", "SEQ_A", hand="left")
    assert left.frame_ids == [112] and left.hand_side == "left"
    assert torch.allclose(left.mano_shape, torch.ones(1, 10))
    both = read_interhand_sequence(root, "test", "Capture0", "SEQ_A", hand="both")
    assert sorted(both) == ["left", "right"]


def test_camera_and_frame_selection(tree):
    root = tree["root"]
    assert read_interhand_sequence(root, "test", 0, "SEQ_A", cameras=1).camera_names == ["cam400002"]
    assert read_interhand_sequence(root, "test", 0, "SEQ_A", cameras=["400004"]).camera_names == ["cam400004"]
    with pytest.raises(ValueError, match="cam400099"):
        read_interhand_sequence(root, "test", 0, "SEQ_A", cameras=["cam400099"])
    # grey camera requested explicitly: allowed
    grey = read_interhand_sequence(root, "test", 0, "SEQ_A", cameras=["cam410001"])
    assert grey.frame_ids == [100, 112, 118]
    assert read_interhand_sequence(
        root, "test", 0, "SEQ_A", cameras=["cam410001"], num_frames=2, frame_mode="first"
    ).frame_ids == [100, 112]
    assert interhand.select_frames(list(range(10)), 3) == [0, 3, 6]
    assert interhand.select_frames(list(range(10)), 3, "first") == [0, 1, 2]
    assert interhand.select_frames([5], 20) == [5]
    assert interhand.select_cameras(CAMS, color_only=False) == [
        "cam400002",
        "cam400004",
        "cam400412",
        "cam410001",
    ]


def test_single_image_sequence(tree):
    seq = read_interhand_sequence(tree["root"], "test", "Capture0", "SINGLE", num_frames=20)
    assert seq.frame_ids == [100] and seq.num_views == 2


def test_rotated_camera_policies(tree):
    root = tree["root"]
    seq = read_interhand_sequence(
        root, "test", 0, "SEQ_A", cameras=["cam400002", "cam400412"], rotated_camera="ccw"
    )
    assert seq.image_rotations == {"cam400412": 1}
    assert seq.load_image(0, 1).shape == (H, W, 3)
    with pytest.raises(ValueError, match="cam400412.*stored rotated"):
        read_interhand_sequence(root, "test", 0, "SEQ_A", rotated_camera="error")
    with pytest.raises(ValueError, match="rotated_camera='ccw'"):
        read_interhand_sequence(root, "test", 0, "SEQ_A", cameras=["cam400002", "cam400412"])


def test_black_image_flagged(tree):
    seq = read_interhand_sequence(tree["root"], "test", 0, "SEQ_A")
    image = seq.load_image(seq.frame_index(112), 0)
    assert image.max() < 0.02
    assert seq.report["black_images"] == [(112, "cam400002")]
    assert "all-black" in seq.summary()
    assert seq.load_image(0, 0).max() > 0.1


def test_errors_name_what_is_missing(tree, tmp_path):
    root = tree["root"]
    with pytest.raises(FileNotFoundError, match=r"cam400004[/\\]image118\.jpg"):
        read_interhand_sequence(root, "test", 0, "SEQ_A", frame_ids=[118])
    with pytest.raises(InputError, match="MANO_NeuralAnnot.*'106'"):
        read_interhand_sequence(root, "test", 0, "SEQ_A", frame_ids=[106])
    with pytest.raises(FileNotFoundError, match="NOPE"):
        read_interhand_sequence(root, "test", 0, "NOPE")
    with pytest.raises(FileNotFoundError, match="InterHand2.6M_val_camera.json"):
        interhand.load_annotation(root, "val", "camera")
    with pytest.raises(InputError, match="split"):
        interhand.annotation_path(root, "training", "camera")
    # a camera folder without calibration
    os.makedirs(os.path.join(root, "images", "test", "Capture0", "SEQ_A", "cam400090"))
    _write_jpeg(
        os.path.join(root, "images", "test", "Capture0", "SEQ_A", "cam400090", "image100.jpg"),
        H,
        W,
        np.random.default_rng(1),
    )
    try:
        with pytest.raises(InputError, match="camera '400090'"):
            read_interhand_sequence(root, "test", 0, "SEQ_A", cameras=["cam400090"])
    finally:
        os.remove(os.path.join(root, "images", "test", "Capture0", "SEQ_A", "cam400090", "image100.jpg"))
        os.rmdir(os.path.join(root, "images", "test", "Capture0", "SEQ_A", "cam400090"))
    # a capture absent from the MANO file
    os.makedirs(os.path.join(root, "images", "test", "Capture5", "S", "cam400002"))
    _write_jpeg(
        os.path.join(root, "images", "test", "Capture5", "S", "cam400002", "image1.jpg"),
        H,
        W,
        np.random.default_rng(2),
    )
    with pytest.raises(InputError, match="capture '5'"):
        read_interhand_sequence(root, "test", 5, "S")
    # missing image at load time
    seq = read_interhand_sequence(root, "test", 0, "SINGLE")
    seq.image_paths[0][0] = str(tmp_path / "gone.jpg")
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        seq.load_image(0, 0)


def test_listing(tree):
    assert interhand.list_captures(tree["root"], "test")[0] == "Capture0"
    assert interhand.list_sequences(tree["root"], "test", "Capture0") == ["SEQ_A", "SINGLE"]
    assert interhand.capture_key("Capture12") == "12" and interhand.capture_dirname(3) == "Capture3"
