"""Pose sequences that drive a trained avatar (``scripts/animate.py``): read from a ``.npz``, an InterHand
MANO annotation file or a capture folder, or blended from a capture's own poses.

A :class:`PoseSequence` holds per-frame MANO parameters in the avatar's convention: ``pose (N, 48)``
axis-angle (3 global + 15 joints x 3, MANO joint order, **without** the hand mean, as InterHand's
NeuralAnnot and ``CaptureSequence.mano_pose`` store it) and ``trans (N, 3)`` in metres, world frame of the
capture. The shape is not per frame: the avatar was built at its capture's mean shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from utils.errors import InputError
from utils.geometry.rotations import axis_angle_to_quaternion, quaternion_to_axis_angle, slerp

NUM_JOINTS = 16  # MANO: the wrist (global rotation) and 15 finger joints
POSE_DIM = 3 * NUM_JOINTS


class PoseFileError(InputError):
    """A pose file or pose source cannot drive the avatar (wrong shape, joint count, missing entries)."""


@dataclass(frozen=True, slots=True)
class PoseSequence:
    """MANO poses of N frames.

    Attributes:
        pose: ``(N, 48)`` float32 axis-angle (radians), without the hand mean.
        trans: ``(N, 3)`` float32 translation, metres.
        labels: N strings naming where each pose comes from (``"frame 12"``, ``"12 -> 20 at 0.40"``).
        source: what the sequence was read or made from.
    """

    pose: torch.Tensor
    trans: torch.Tensor
    labels: list
    source: str

    def __post_init__(self):
        n = self.pose.shape[0]
        if self.pose.shape != (n, POSE_DIM) or self.trans.shape != (n, 3) or len(self.labels) != n:
            raise ValueError(
                f"PoseSequence: pose {tuple(self.pose.shape)}, trans {tuple(self.trans.shape)}, "
                f"{len(self.labels)} labels: expected (N, {POSE_DIM}), (N, 3), N"
            )

    def __len__(self) -> int:
        return self.pose.shape[0]

    def save_npz(self, path: str | Path, **extra) -> Path:
        """Write ``pose``, ``trans``, ``labels`` and ``source`` (and ``extra`` arrays) as ``.npz`` (atomic); the
        file reads back with :func:`read_npz_poses`."""
        from utils.checkpoint import atomic_write

        arrays = {
            "pose": self.pose.numpy(),
            "trans": self.trans.numpy(),
            "labels": np.asarray(self.labels, dtype=str),
            "source": np.asarray(self.source),
            **extra,
        }

        def write(handle) -> None:
            np.savez(handle, **arrays)

        return atomic_write(path, write)


def check_pose_array(pose, trans, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``pose (N, 48)`` and ``trans (N, 3)`` float32 tensors from arrays, or a :class:`PoseFileError` naming
    ``where``, the shape received and the one expected. ``(N, 16, 3)`` poses are accepted and flattened."""
    pose = np.asarray(pose, dtype=np.float32)
    trans = np.asarray(trans, dtype=np.float32)
    if pose.ndim == 3 and pose.shape[1:] == (NUM_JOINTS, 3):
        pose = pose.reshape(len(pose), POSE_DIM)
    if pose.ndim != 2 or pose.shape[1] != POSE_DIM:
        joints = f" ({pose.shape[-1] / 3:g} joints x 3)" if pose.ndim == 2 else ""
        raise PoseFileError(
            f"{where}: pose has shape {pose.shape}{joints}; expected (N, {POSE_DIM}) = {NUM_JOINTS} MANO joints x 3 "
            "axis-angle (global rotation + 15 finger joints, without the hand mean) or (N, 16, 3)"
        )
    if trans.shape != (len(pose), 3):
        raise PoseFileError(
            f"{where}: trans has shape {trans.shape}; expected ({len(pose)}, 3) metres, one per pose"
        )
    if len(pose) == 0:
        raise PoseFileError(f"{where}: no pose")
    if not (np.isfinite(pose).all() and np.isfinite(trans).all()):
        raise PoseFileError(f"{where}: pose or trans holds NaN or inf")
    return torch.from_numpy(pose.copy()), torch.from_numpy(trans.copy())


def read_npz_poses(path: str | Path) -> PoseSequence:
    """A ``.npz`` with ``pose (N, 48)`` (or ``(N, 16, 3)``) and ``trans (N, 3)`` (metres); optional ``labels``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--poses {path}: no such file")
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in ("pose", "trans") if k not in data.files]
        if missing:
            raise PoseFileError(
                f"{path}: no {' and no '.join(missing)} array (found {data.files}); expected pose (N, 48) and "
                "trans (N, 3)"
            )
        pose, trans = check_pose_array(data["pose"], data["trans"], str(path))
        labels = [str(s) for s in data["labels"]] if "labels" in data.files else []
    if len(labels) != len(pose):
        labels = [f"{path.name}[{i}]" for i in range(len(pose))]
    return PoseSequence(pose=pose, trans=trans, labels=labels, source=str(path))


def read_interhand_poses(path: str | Path, side: str, capture: str | None = None) -> PoseSequence:
    """The ``side`` hand's MANO fits of one capture of an InterHand2.6M ``MANO_NeuralAnnot`` file
    (``{capture: {frame: {"right"|"left": {"pose", "shape", "trans"} or None}}}``, or one capture's
    ``{frame: {...}}`` as ``scripts/fit_mano.py`` writes it), frames in id order.

    Args:
        capture: the capture key (``"0"`` or ``Capture0``); may be left out when the file holds one capture.
    Frames whose fit of ``side`` is missing (None) are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--poses {path}: no such file")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not data:
        raise PoseFileError(
            f"{path}: expected an InterHand MANO annotation ({{capture: {{frame: {{side: ...}}}}}})"
        )
    if all(isinstance(v, dict) and set(v) & {"right", "left"} for v in data.values()):
        data = {"0": data}  # one capture's frames, as scripts/fit_mano.py writes them
        capture = None
    if capture is None:
        if len(data) != 1:
            raise PoseFileError(f"{path} holds captures {sorted(data)[:8]}: choose one with --pose_capture")
        capture = next(iter(data))
    key = str(capture).removeprefix("Capture")
    if key not in data:
        raise PoseFileError(f"{path}: no capture {key!r} (captures: {sorted(data)[:8]})")
    frames = data[key]
    poses, trans, labels = [], [], []
    for frame in sorted(frames, key=lambda f: int(f) if str(f).isdigit() else f):
        entry = frames[frame]
        fit = entry.get(side) if isinstance(entry, dict) else None
        if fit is None:
            continue
        try:
            poses.append(np.asarray(fit["pose"], dtype=np.float32).reshape(-1))
            trans.append(np.asarray(fit["trans"], dtype=np.float32).reshape(-1))
        except (KeyError, TypeError, ValueError) as err:
            raise PoseFileError(
                f"{path}: capture {key} frame {frame} {side}: expected pose and trans ({err})"
            ) from None
        if poses[-1].shape != (POSE_DIM,) or trans[-1].shape != (3,):
            raise PoseFileError(
                f"{path}: capture {key} frame {frame} {side}: pose has {poses[-1].size} values "
                f"({poses[-1].size / 3:g} joints x 3), trans {trans[-1].size}; expected {POSE_DIM} "
                f"({NUM_JOINTS} MANO joints x 3) and 3"
            )
        labels.append(f"frame {frame}")
    if not poses:
        raise PoseFileError(f"{path}: capture {key} has no {side}-hand MANO fit")
    pose, tr = check_pose_array(np.stack(poses), np.stack(trans), str(path))
    return PoseSequence(pose=pose, trans=tr, labels=labels, source=f"{path} capture {key} ({side} hand)")


def capture_poses(seq, source: str) -> PoseSequence:
    """The MANO poses of every frame of a ``CaptureSequence``."""
    pose, trans = check_pose_array(seq.mano_pose, seq.mano_trans, source)
    return PoseSequence(pose=pose, trans=trans, labels=[f"frame {f}" for f in seq.frame_ids], source=source)


def read_capture_folder_poses(folder: str | Path, side: str) -> PoseSequence:
    """The ``side`` hand's poses of every frame of an InterHand-layout sequence folder
    ``ROOT/images/{split}/Capture{N}/{sequence}`` (another capture's, for ``--poses capture:PATH``)."""
    from datasets.interhand import read_interhand_sequence

    folder = Path(folder).resolve()
    parts = folder.parts
    if len(parts) < 5 or parts[-4] != "images" or not parts[-2].startswith("Capture"):
        raise PoseFileError(
            f"capture:{folder}: expected an InterHand sequence folder ROOT/images/<split>/Capture<N>/<sequence>"
        )
    if not folder.is_dir():
        raise FileNotFoundError(f"capture:{folder}: no such folder")
    root = Path(*parts[:-4])
    seq = read_interhand_sequence(root, parts[-3], parts[-2], parts[-1], hand=side)
    return capture_poses(seq, f"capture {folder}")


def interpolate_poses(
    base: PoseSequence, pose_mean: torch.Tensor, inbetween: int, keep_ends: bool = False
) -> PoseSequence:
    """New poses between consecutive poses of ``base``: per joint, slerp of the joint rotation
    ``pose + pose_mean`` (the rotation the avatar applies), linear in the translation.

    Args:
        base: ``N >= 2`` poses. pose_mean: ``(48,)`` the hand mean the avatar adds to every pose.
        inbetween: poses made strictly between each consecutive pair, at ``t = k / (inbetween + 1)``.
        keep_ends: also keep ``base``'s own poses (then the sequence passes through them).
    Returns:
        ``(N - 1) * inbetween`` poses (``+ N`` with ``keep_ends``), in order. Each joint's axis-angle is the
        slerped rotation's with an angle in [0, pi], minus the hand mean: the same rotation as any other
        spelling, which is what the avatar's rotation-matrix condition (``model.use_rotpose``) sees.
    """
    if len(base) < 2:
        raise PoseFileError(f"interpolate: {base.source} has {len(base)} pose(s); at least 2 are needed")
    if inbetween < 1:
        raise PoseFileError(f"interpolate: in-between poses per pair must be >= 1, got {inbetween}")
    mean = pose_mean.detach().cpu().double().numpy().reshape(NUM_JOINTS, 3)
    full = base.pose.double().numpy().reshape(-1, NUM_JOINTS, 3) + mean
    quats = axis_angle_to_quaternion(full)  # (N, 16, 4)
    trans = base.trans.double().numpy()
    poses, trs, labels = [], [], []
    for i in range(len(base) - 1):
        if keep_ends:
            poses.append(full[i] - mean)
            trs.append(trans[i])
            labels.append(base.labels[i])
        for k in range(1, inbetween + 1):
            t = k / (inbetween + 1)
            poses.append(quaternion_to_axis_angle(slerp(quats[i], quats[i + 1], t)) - mean)
            trs.append((1 - t) * trans[i] + t * trans[i + 1])
            labels.append(f"{base.labels[i]} -> {base.labels[i + 1]} at {t:.2f}")
    if keep_ends:
        poses.append(full[-1] - mean)
        trs.append(trans[-1])
        labels.append(base.labels[-1])
    pose, tr = check_pose_array(np.stack(poses).reshape(-1, POSE_DIM), np.stack(trs), "interpolate")
    what = f"{inbetween} slerp in-between pose(s) per pair of {base.source}"
    return PoseSequence(
        pose=pose, trans=tr, labels=labels, source=what + (" and its poses" if keep_ends else "")
    )


def resolve_poses(
    spec: str, seq, side: str, pose_mean: torch.Tensor, inbetween: int = 4, pose_capture: str | None = None
) -> PoseSequence:
    """The pose sequence ``--poses spec`` names.

    Args:
        spec: ``interpolate`` (``inbetween`` slerp poses between each pair of consecutive frames of the run's
            capture, none of them a capture pose), ``capture`` (the capture's own poses), ``capture:PATH``
            (another InterHand sequence folder's), a ``.npz`` (:func:`read_npz_poses`) or an InterHand MANO
            ``.json`` (:func:`read_interhand_poses`, ``pose_capture`` choosing the capture).
        seq: the run's capture (``CaptureSequence``). side: the avatar's hand. pose_mean: its hand mean.
    """
    if spec == "interpolate":
        return interpolate_poses(capture_poses(seq, f"capture {seq.name}"), pose_mean, inbetween)
    if spec == "capture":
        return capture_poses(seq, f"capture {seq.name}")
    if spec.startswith("capture:"):
        return read_capture_folder_poses(spec[len("capture:") :], side)
    suffix = Path(spec).suffix.lower()
    if suffix == ".npz":
        return read_npz_poses(spec)
    if suffix == ".json":
        return read_interhand_poses(spec, side, pose_capture)
    raise PoseFileError(
        f"--poses {spec}: expected interpolate, capture, capture:PATH (an InterHand sequence folder), a .npz "
        "with pose (N, 48) and trans (N, 3), or an InterHand MANO .json"
    )
