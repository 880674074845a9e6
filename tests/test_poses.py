"""Pose sequences that drive a trained avatar (``trainers.srhand.poses``): readers, slerp in-betweens and
the messages bad pose files give."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trainers.srhand.poses import (
    PoseFileError,
    PoseSequence,
    interpolate_poses,
    read_interhand_poses,
    read_npz_poses,
)
from utils.geometry.rotations import axis_angle_to_quaternion, quaternion_to_matrix


def _sequence(n: int = 3, seed: int = 0) -> PoseSequence:
    rng = np.random.default_rng(seed)
    pose = torch.from_numpy(rng.normal(scale=0.3, size=(n, 48)).astype(np.float32))
    trans = torch.from_numpy(rng.normal(scale=0.1, size=(n, 3)).astype(np.float32))
    return PoseSequence(pose=pose, trans=trans, labels=[f"frame {i}" for i in range(n)], source="test")


def test_interpolation_is_slerp_of_the_applied_rotations():
    base = _sequence()
    mean = torch.from_numpy(np.random.default_rng(1).normal(scale=0.2, size=48).astype(np.float32))
    out = interpolate_poses(base, mean, inbetween=3)
    assert len(out) == 2 * 3 and out.labels[0] == "frame 0 -> frame 1 at 0.25"
    np.testing.assert_allclose(
        out.trans[1].numpy(), (0.5 * base.trans[0] + 0.5 * base.trans[1]).numpy(), atol=1e-6
    )
    # the midpoint rotation of each joint is the geodesic midpoint of pose + mean: R(mid) = R0 (R0^T R1)^(1/2)
    full = (base.pose + mean).double().numpy().reshape(3, 16, 3)
    mid = (out.pose[1] + mean).double().numpy().reshape(16, 3)
    r0, r1, rm = (quaternion_to_matrix(axis_angle_to_quaternion(a)) for a in (full[0], full[1], mid))
    half = np.einsum("jki,jkl->jil", r0, rm)  # R0^T Rm
    np.testing.assert_allclose(
        np.einsum("jik,jkl->jil", half, half), np.einsum("jki,jkl->jil", r0, r1), atol=1e-5
    )
    # with the ends kept the sequence passes through the base poses
    kept = interpolate_poses(base, mean, inbetween=1, keep_ends=True)
    assert len(kept) == 5 and kept.labels[::2] == base.labels
    np.testing.assert_allclose(
        quaternion_to_matrix(axis_angle_to_quaternion((kept.pose[2] + mean).double().numpy().reshape(16, 3))),
        quaternion_to_matrix(axis_angle_to_quaternion(full[1])),
        atol=1e-5,
    )
    with pytest.raises(PoseFileError, match="at least 2"):
        interpolate_poses(_sequence(1), mean, 2)


def test_npz_round_trip_and_messages(tmp_path):
    seq = _sequence()
    seq.save_npz(tmp_path / "p.npz")
    back = read_npz_poses(tmp_path / "p.npz")
    assert (
        torch.equal(back.pose, seq.pose) and torch.equal(back.trans, seq.trans) and back.labels == seq.labels
    )
    np.savez(tmp_path / "joints.npz", pose=np.zeros((2, 16, 3)), trans=np.zeros((2, 3)))
    assert read_npz_poses(tmp_path / "joints.npz").pose.shape == (2, 48)
    np.savez(tmp_path / "short.npz", pose=np.zeros((2, 63)), trans=np.zeros((2, 3)))
    with pytest.raises(PoseFileError, match=r"\(2, 63\) \(21 joints x 3\); expected \(N, 48\)"):
        read_npz_poses(tmp_path / "short.npz")
    np.savez(tmp_path / "trans.npz", pose=np.zeros((2, 48)), trans=np.zeros((3, 3)))
    with pytest.raises(PoseFileError, match=r"trans has shape \(3, 3\); expected \(2, 3\)"):
        read_npz_poses(tmp_path / "trans.npz")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_npz_poses(tmp_path / "missing.npz")


def test_interhand_json_of_one_or_many_captures(tmp_path):
    fit = {"pose": [0.1] * 48, "shape": [0.0] * 10, "trans": [0.0, 0.1, 0.2]}
    frames = {"20": {"right": fit, "left": None}, "3": {"right": fit, "left": None}, "7": {"right": None}}
    (tmp_path / "one.json").write_text(json.dumps(frames))
    seq = read_interhand_poses(tmp_path / "one.json", "right")
    assert seq.labels == ["frame 3", "frame 20"] and seq.pose.shape == (2, 48)
    (tmp_path / "many.json").write_text(json.dumps({"0": frames, "1": frames}))
    with pytest.raises(PoseFileError, match="choose one with --pose_capture"):
        read_interhand_poses(tmp_path / "many.json", "right")
    assert len(read_interhand_poses(tmp_path / "many.json", "right", capture="Capture1")) == 2
    with pytest.raises(PoseFileError, match="has no left-hand MANO fit"):
        read_interhand_poses(tmp_path / "one.json", "left")
    bad = {"5": {"right": {**fit, "pose": [0.0] * 45}}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(PoseFileError, match=r"pose has 45 values \(15 joints x 3\)"):
        read_interhand_poses(tmp_path / "bad.json", "right")
