"""InterHand2.6M reader (and the writer the synthetic generator uses): the on-disk layout <-> CaptureSequence.

Layout (v1.0, 5 fps release; docs/data.md and ../shared/reference/interhand2.6m.md)::

    ROOT/images/{split}/Capture{N}/{seq_name}/cam{ID}/image{frame}.jpg
    ROOT/annotations/{split}/InterHand2.6M_{split}_{camera,MANO_NeuralAnnot,joint_3d,data}.json

Cameras: ``campos`` (world camera centre, mm) and ``camrot`` (world-to-camera R) become OpenCV
``R``, ``t = -R campos / 1000`` (metres). MANO NeuralAnnot parameters are world, metres, for
``flat_hand_mean=False``. What the real data gets wrong and how the reader copes:

- ``None`` MANO entries and missing frame keys: the frame is skipped, counted in ``report``;
- frames missing from some selected camera folders: skipped and counted (explicitly requested frames
  raise instead, naming the expected file);
- all-black images (issue #134): returned as they are and flagged (``is_black`` in samples,
  ``report["black_images"]``); the GIIF dataset skips them;
- ``cam400412`` stored rotated (issue #157): a camera whose images are transposed relative to the
  others is dropped and reported (``rotated_camera="drop"``), or turned back (``"ccw"``/``"cw"``),
  or refused (``"error"``);
- single-image sequence folders (issue #93): give a one-frame sequence;
- a missing annotation file, capture, camera or image folder: an error naming the path and what was
  expected there.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter

import numpy as np
import torch

from datasets.capture import CaptureSequence
from utils.errors import InputError

SPLITS = ("train", "val", "test")
ANNOTATION_KINDS = ("camera", "MANO_NeuralAnnot", "joint_3d", "data")
# Cameras hand-avatar work (HandAvatar, XHand, SRHand) drops from the 5 fps release.
DROP_CAMERAS = (
    "cam400006",
    "cam400008",
    "cam400015",
    "cam400035",
    "cam400049",
    "cam400323",
    "cam410015",
    "cam410018",
    "cam410028",
    "cam410062",
    "cam410063",
    "cam410068",
    "cam410210",
    "cam410211",
    "cam410216",
    "cam410218",
    "cam410236",
    "cam410238",
)
COLOR_CAMERA_PREFIX = "cam400"
_IMAGE_RE = re.compile(r"^image(\d+)\.jpg$")
_CAPTURE_RE = re.compile(r"^Capture(\d+)$")

# InterHand joint order for one hand (21): thumb4..1, index4..1, middle4..1, ring4..1, pinky4..1,
# wrist; "4" is the tip. As MANO joint ids (16 = tip of the finger given by TIP_FINGER_ORDER).
INTERHAND_FROM_MANO = (
    ("tip", 0),
    15,
    14,
    13,  # thumb (MANO 13 CMC, 14 MCP, 15 IP)
    ("tip", 1),
    3,
    2,
    1,  # index
    ("tip", 2),
    6,
    5,
    4,  # middle
    ("tip", 3),
    12,
    11,
    10,  # ring
    ("tip", 4),
    9,
    8,
    7,  # pinky
    0,  # wrist
)
TIP_FINGER_ORDER = ("thumb", "index", "middle", "ring", "pinky")


# ----------------------------------------------------------------------------------------------
# Paths, names, annotation files
# ----------------------------------------------------------------------------------------------


def capture_dirname(capture) -> str:
    """``3`` or ``"3"`` or ``"Capture3"`` -> ``"Capture3"``."""
    text = str(capture)
    return text if text.startswith("Capture") else f"Capture{int(text)}"


def capture_key(capture) -> str:
    """JSON key of a capture: ``"Capture3"`` -> ``"3"``."""
    m = _CAPTURE_RE.match(capture_dirname(capture))
    if not m:
        raise InputError(f"not a capture name: {capture!r} (expected CaptureN or N)")
    return str(int(m.group(1)))


def camera_key(camera: str) -> str:
    """JSON key of a camera: ``"cam400262"`` -> ``"400262"``."""
    return camera[3:] if camera.startswith("cam") else camera


def annotation_path(data_path, split: str, kind: str) -> str:
    """``ROOT/annotations/{split}/InterHand2.6M_{split}_{kind}.json``."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    if kind not in ANNOTATION_KINDS:
        raise ValueError(f"annotation kind must be one of {ANNOTATION_KINDS}, got {kind!r}")
    return os.path.join(os.fspath(data_path), "annotations", split, f"InterHand2.6M_{split}_{kind}.json")


def sequence_dir(data_path, split: str, capture, seq_name: str) -> str:
    return os.path.join(os.fspath(data_path), "images", split, capture_dirname(capture), seq_name)


def image_path(data_path, split: str, capture, seq_name: str, camera: str, frame_id: int) -> str:
    return os.path.join(
        sequence_dir(data_path, split, capture, seq_name), camera, f"image{int(frame_id)}.jpg"
    )


def segmentation_path(data_path, split: str, capture, seq_name: str, camera: str, frame_id: int) -> str:
    """Where a capture keeps its own foreground mask of an image: ``mask{frame}.png`` beside ``image{frame}.jpg``
    (InterHand2.6M has none; the synthetic generator writes them with ``--segmentation``)."""
    return os.path.join(sequence_dir(data_path, split, capture, seq_name), camera, f"mask{int(frame_id)}.png")


def gt_mesh_path(data_path, split: str, capture, seq_name: str) -> str:
    """Where the synthetic generator puts a sequence's ground-truth meshes (absent for real data)."""
    return os.path.join(os.fspath(data_path), "gt_meshes", split, capture_dirname(capture), f"{seq_name}.npz")


_JSON_CACHE: dict = {}


class NoUsableFrames(InputError):
    """A sequence exists but none of its frames passes the selection (e.g. two-hand frames only)."""


def load_annotation(data_path, split: str, kind: str) -> dict:
    """Load (and cache, keyed by path and modification time) one annotation JSON file.

    The real train-split MANO file is several hundred MB: it is parsed once per process.
    Raises FileNotFoundError naming the file when it is missing.
    """
    path = annotation_path(data_path, split, kind)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: expected the InterHand2.6M {split} {kind} annotation file")
    key = (os.path.abspath(path), os.path.getmtime(path))
    if key not in _JSON_CACHE:
        with open(path) as f:
            _JSON_CACHE[key] = json.load(f)
    return _JSON_CACHE[key]


def capture_annotation(data_path, split: str, kind: str, capture) -> tuple:
    """The ``kind`` annotation's entry for ``capture`` and the file's path.

    Raises:
        InputError: the file has no entry for the capture (naming the file and the capture).
    """
    data = load_annotation(data_path, split, kind)
    path = annotation_path(data_path, split, kind)
    key = capture_key(capture)
    if key not in data:
        raise InputError(f"{path}: no entry for capture '{key}' ({capture_dirname(capture)})")
    return data[key], path


def clear_annotation_cache() -> None:
    """Forget parsed annotation files and cached camera image sizes."""
    _JSON_CACHE.clear()
    _SIZE_CACHE.clear()


def _listdir(path: str, what: str) -> list:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: expected {what}")
    return sorted(os.listdir(path))


def list_captures(data_path, split: str) -> list:
    """Capture folders of a split, ordered by capture number (``Capture2`` before ``Capture10``)."""
    root = os.path.join(os.fspath(data_path), "images", split)
    what = f"the InterHand2.6M image folder of split '{split}'"
    names = [n for n in _listdir(root, what) if _CAPTURE_RE.match(n)]
    return sorted(names, key=lambda n: int(n[len("Capture") :]))


def list_sequences(data_path, split: str, capture) -> list:
    """Sequence folder names of one capture, sorted."""
    root = os.path.join(os.fspath(data_path), "images", split, capture_dirname(capture))
    return [
        n for n in _listdir(root, "a capture folder of sequences") if os.path.isdir(os.path.join(root, n))
    ]


def list_cameras(data_path, split: str, capture, seq_name: str) -> list:
    """Camera folder names (``cam400262`` ...) of one sequence, sorted."""
    root = sequence_dir(data_path, split, capture, seq_name)
    return [
        n
        for n in _listdir(root, "a sequence folder of cam* folders")
        if n.startswith("cam") and os.path.isdir(os.path.join(root, n))
    ]


def list_frames(camera_dir: str) -> list:
    """Frame numbers of the ``image{N}.jpg`` files in a camera folder, ascending."""
    return sorted(int(m.group(1)) for m in map(_IMAGE_RE.match, _listdir(camera_dir, "a camera folder")) if m)


def select_cameras(available, cameras=None, color_only: bool = True, drop=DROP_CAMERAS) -> list:
    """Choose cameras as the reference code does.

    Args:
        available: camera folder names present.
        cameras: None (every usable camera), an int N (the first N usable ones, sorted), or an
            explicit list of names (``cam400262`` or ``400262``), kept in the given order; every one
            must be present (ValueError naming the missing ones otherwise).
        color_only: keep only colour cameras (``cam400*``) when choosing automatically.
        drop: names excluded when choosing automatically (the 18-camera list by default).
    """
    available = sorted(available)
    if cameras is not None and not isinstance(cameras, (int, np.integer)):
        names = [c if str(c).startswith("cam") else f"cam{c}" for c in cameras]
        missing = [n for n in names if n not in available]
        if missing:
            raise InputError(f"requested camera(s) {missing} not found; available: {available}")
        return names
    drop = set(drop or ())
    usable = [n for n in available if n not in drop and (not color_only or n.startswith(COLOR_CAMERA_PREFIX))]
    if cameras is not None:
        if int(cameras) <= 0:
            raise InputError(f"camera count must be positive, got {cameras}")
        usable = usable[: int(cameras)]
    return usable


def cameras_left_out(available, chosen, cameras=None, color_only: bool = True, drop=DROP_CAMERAS) -> dict:
    """``{camera: why}`` for each camera folder of ``available`` that :func:`select_cameras` did not choose:
    on the drop list, not a colour camera (grey), or beyond the requested count."""
    if cameras is not None and not isinstance(cameras, (int, np.integer)):
        return {}  # an explicit list leaves out only what it does not name
    drop = set(drop or ())
    out = {}
    for name in sorted(set(available) - set(chosen)):
        if name in drop:
            out[name] = "on the drop list"
        elif color_only and not name.startswith(COLOR_CAMERA_PREFIX):
            out[name] = "not a colour camera (grey)"
        else:
            out[name] = f"beyond the first {int(cameras)} usable cameras"
    return out


def select_frames(frame_ids, num_frames=None, mode: str = "strided") -> list:
    """Pick frames from a sorted list.

    ``strided`` (reference fitting protocol): ``ids[::max(len // N, 1)][:N]``; ``first`` (reference
    evaluation): ``ids[:N]``; ``all`` or ``num_frames=None``: every frame.
    """
    ids = list(frame_ids)
    if mode == "all" or num_frames is None:
        return ids
    n = int(num_frames)
    if n <= 0:
        raise InputError(f"num_frames must be positive, got {num_frames}")
    if mode == "strided":
        return ids[:: max(len(ids) // n, 1)][:n]
    if mode == "first":
        return ids[:n]
    raise InputError(f"frame mode must be 'strided', 'first' or 'all', got {mode!r}")


_SIZE_CACHE: dict = {}


def _camera_image_size(data_path, split: str, capture: str, camera: str, path: str) -> tuple:
    """(H, W) of a camera's images, reading one file header per camera and capture (a camera's
    resolution does not change within a capture; the GIIF view reads thousands of sequences)."""
    key = (os.path.abspath(os.fspath(data_path)), split, capture, camera)
    if key not in _SIZE_CACHE:
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
        _SIZE_CACHE[key] = (h, w)
    return _SIZE_CACHE[key]


# ----------------------------------------------------------------------------------------------
# Reader
# ----------------------------------------------------------------------------------------------


def read_cameras(data_path, split: str, capture, names, image_size):
    """``Cameras`` (metres, OpenCV) of ``names`` in one capture from the camera JSON."""
    from utils.geometry.camera import Cameras, interhand_to_opencv

    cam, path = capture_annotation(data_path, split, "camera", capture)
    ck = capture_key(capture)
    for field_name in ("campos", "camrot", "focal", "princpt"):
        if field_name not in cam:
            raise InputError(f"{path}: capture '{ck}' lacks the '{field_name}' table")
    Ks, Rs, ts = [], [], []
    for name in names:
        key = camera_key(name)
        if any(key not in cam[f] for f in ("campos", "camrot", "focal", "princpt")):
            raise InputError(
                f"{path}: capture '{ck}' has no complete calibration for camera '{key}' ({name})"
            )
        R, t = interhand_to_opencv(
            torch.tensor(cam["campos"][key], dtype=torch.float64),
            torch.tensor(cam["camrot"][key], dtype=torch.float64),
        )
        fx, fy = cam["focal"][key]
        cx, cy = cam["princpt"][key]
        Ks.append(torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64))
        Rs.append(torch.as_tensor(R, dtype=torch.float64).reshape(3, 3))
        ts.append(torch.as_tensor(t, dtype=torch.float64).reshape(3))
    return Cameras(
        K=torch.stack(Ks).float(),
        R=torch.stack(Rs).float(),
        t=torch.stack(ts).float(),
        image_size=tuple(int(s) for s in image_size),
        names=list(names),
    )


def read_interhand_sequence(
    data_path,
    split: str,
    capture,
    seq_name: str,
    hand: str = "right",
    cameras=None,
    num_frames=None,
    frame_mode: str = "strided",
    frame_ids=None,
    drop_cameras=DROP_CAMERAS,
    color_only: bool = True,
    single_hand_only: bool = False,
    rotated_camera: str = "drop",
    mano_dir=None,
    verbose: bool = False,
):
    """Read one InterHand2.6M sequence as a :class:`CaptureSequence` (images stay on disk).

    Args:
        data_path: dataset root (holds ``images/`` and ``annotations/``).
        split, capture, seq_name: e.g. ``"test"``, ``"Capture0"`` (or 0), ``"ROM03_RT_No_Occlusion"``.
        hand: ``right``, ``left`` or ``both`` (returns ``{"right": seq, "left": seq}``; a side with no
            usable frame is omitted, and ValueError if neither has one).
        cameras: None (all usable colour cameras minus ``drop_cameras``), a count, or a list of names.
        num_frames, frame_mode: frame selection after filtering (see :func:`select_frames`).
        frame_ids: explicit frame numbers instead (missing images or MANO entries are errors).
        single_hand_only: keep only frames where the other hand has no MANO fit (the reference GIIF
            data uses right-hand-only frames).
        rotated_camera: what to do with a camera whose images are transposed (InterHand cam400412):
            ``drop`` (default; an explicitly requested camera raises instead), ``ccw``/``cw`` (turn
            back by a quarter turn), ``error``.
        mano_dir: folder with ``MANO_{RIGHT,LEFT}.pkl`` (default: ``$SRHAND_MANO_DIR`` or the shipped
            procedural hand, see ``utils.geometry.mano.resolve_hand_model_path``).
        verbose: print the sequence summary (skipped frames, dropped cameras).

    Returns:
        CaptureSequence (or a dict of them for ``hand="both"``).
    """
    if hand not in ("right", "left", "both"):
        raise InputError(f"hand must be 'right', 'left' or 'both', got {hand!r}")
    if rotated_camera not in ("drop", "ccw", "cw", "error"):
        raise InputError(f"rotated_camera must be drop, ccw, cw or error, got {rotated_camera!r}")
    capture = capture_dirname(capture)
    name = f"{split}/{capture}/{seq_name}"
    seq_root = sequence_dir(data_path, split, capture, seq_name)
    available = list_cameras(data_path, split, capture, seq_name)
    names = select_cameras(available, cameras, color_only, drop_cameras)
    if not names:
        raise InputError(f"{seq_root}: no usable camera folder (colour cameras minus the drop list)")

    # Frames on disk, per camera.
    frames_per_cam = {n: list_frames(os.path.join(seq_root, n)) for n in names}
    report = {
        "skipped_frames": {},
        "dropped_cameras": cameras_left_out(available, names, cameras, color_only, drop_cameras),
        "black_images": [],
    }
    for n in list(names):
        if not frames_per_cam[n]:
            if isinstance(cameras, (list, tuple)):
                raise FileNotFoundError(f"{os.path.join(seq_root, n)}: expected image*.jpg files")
            report["dropped_cameras"][n] = "no images"
            names.remove(n)
    if not names:
        raise FileNotFoundError(f"{seq_root}: no camera folder holds image*.jpg files")

    # Image size: the common one; transposed ones are the rotated camera.
    sizes = {
        n: _camera_image_size(
            data_path, split, capture, n, os.path.join(seq_root, n, f"image{frames_per_cam[n][0]}.jpg")
        )
        for n in names
    }
    common = Counter(sizes.values()).most_common(1)[0][0]
    rotations = {}
    for n in list(names):
        if sizes[n] == common:
            continue
        transposed = sizes[n] == common[::-1]
        if transposed and rotated_camera in ("ccw", "cw"):
            rotations[n] = 1 if rotated_camera == "ccw" else 3
            continue
        what = f"images are {sizes[n][1]}x{sizes[n][0]} (WxH), the other cameras {common[1]}x{common[0]}" + (
            " (stored rotated)" if transposed else ""
        )
        if rotated_camera == "error" or isinstance(cameras, (list, tuple)):
            hint = "; pass rotated_camera='ccw' or 'cw' to turn its images back" if transposed else ""
            raise InputError(f"{os.path.join(seq_root, n)}: {what}{hint}")
        report["dropped_cameras"][n] = what
        names.remove(n)
        del frames_per_cam[n]

    # Candidate frames: present in every selected camera.
    all_frames = sorted(set().union(*frames_per_cam.values()))
    if frame_ids is not None:
        wanted = [int(f) for f in frame_ids]
        for f in wanted:
            for n in names:
                if f not in frames_per_cam[n]:
                    raise FileNotFoundError(
                        f"{image_path(data_path, split, capture, seq_name, n, f)}: "
                        f"expected the image of requested frame {f}"
                    )
        candidates = wanted
    else:
        present = set.intersection(*(set(v) for v in frames_per_cam.values()))
        incomplete = [f for f in all_frames if f not in present]
        if incomplete:
            report["skipped_frames"]["image missing in some selected camera"] = incomplete
        candidates = [f for f in all_frames if f in present]

    # MANO entries.
    mano, mano_file = capture_annotation(data_path, split, "MANO_NeuralAnnot", capture)
    ck = capture_key(capture)
    sides = ("right", "left") if hand == "both" else (hand,)
    result = {}
    for side in sides:
        other = "left" if side == "right" else "right"
        side_report = {
            "skipped_frames": {k: list(v) for k, v in report["skipped_frames"].items()},
            "dropped_cameras": dict(report["dropped_cameras"]),
            "black_images": [],
        }
        usable, params = [], []
        for f in candidates:
            entry = mano.get(str(f))
            reason = None
            if entry is None:
                reason = "no MANO entry for the frame"
            elif entry.get(side) is None:
                reason = f"MANO fit of the {side} hand missing (None)"
            elif single_hand_only and entry.get(other) is not None:
                reason = f"{other} hand also present (single-hand frames only)"
            if reason is not None:
                if frame_ids is not None:
                    raise InputError(f"{mano_file}: capture '{ck}' frame '{f}': {reason}")
                side_report["skipped_frames"].setdefault(reason, []).append(f)
                continue
            p = entry[side]
            try:
                pose = np.asarray(p["pose"], dtype=np.float32).reshape(48)
                shape = np.asarray(p["shape"], dtype=np.float32).reshape(10)
                trans = np.asarray(p["trans"], dtype=np.float32).reshape(3)
            except (KeyError, ValueError, TypeError) as err:
                raise InputError(
                    f"{mano_file}: capture '{ck}' frame '{f}' {side}: expected pose (48), "
                    f"shape (10), trans (3): {err}"
                ) from None
            usable.append(f)
            params.append((pose, shape, trans))
        chosen = usable if frame_ids is not None else select_frames(usable, num_frames, frame_mode)
        if not chosen:
            if hand == "both":
                continue
            raise NoUsableFrames(
                f"{name}: no usable {side}-hand frame ({len(candidates)} candidate frame(s); "
                f"skipped: { {k: len(v) for k, v in side_report['skipped_frames'].items()} })"
            )
        index = {f: i for i, f in enumerate(usable)}
        pose = np.stack([params[index[f]][0] for f in chosen])
        shape = np.stack([params[index[f]][1] for f in chosen])
        trans = np.stack([params[index[f]][2] for f in chosen])
        cams = read_cameras(data_path, split, capture, names, common)
        gt_path = gt_mesh_path(data_path, split, capture, seq_name)
        # The capture's own segmentation is used only when every image of the selection has one.
        seg_paths = [
            [segmentation_path(data_path, split, capture, seq_name, n, f) for n in names] for f in chosen
        ]
        if not all(os.path.isfile(p) for row in seg_paths for p in row):
            seg_paths = []
        seq = CaptureSequence(
            cameras=cams,
            frame_ids=list(chosen),
            mano_pose=pose,
            mano_shape=shape,
            mano_trans=trans,
            hand_side=side,
            image_paths=[
                [image_path(data_path, split, capture, seq_name, n, f) for n in names] for f in chosen
            ],
            name=name,
            mano_file=mano_dir,
            gt_mesh_path=gt_path if os.path.isfile(gt_path) else None,
            segmentation_paths=seg_paths,
            image_rotations=rotations,
            report=side_report,
        )
        if verbose:
            print(seq.summary())
        result[side] = seq
    if hand == "both":
        if not result:
            raise NoUsableFrames(f"{name}: no usable frame for either hand")
        return result
    return result[hand]


def read_joints_3d(data_path, split: str, capture, frame_ids) -> dict:
    """InterHand joints of the given frames: ``{frame_id: (world (42,3) metres, valid (42,) bool)}``.

    Frames absent from the file are omitted.
    """
    data = load_annotation(data_path, split, "joint_3d")
    table = data.get(capture_key(capture), {})
    out = {}
    for f in frame_ids:
        entry = table.get(str(int(f)))
        if entry is None:
            continue
        world = np.asarray(entry["world_coord"], dtype=np.float32).reshape(42, 3) / 1000.0
        valid = np.asarray(entry["joint_valid"], dtype=np.float32).reshape(42) > 0
        out[int(f)] = (world, valid)
    return out


# ----------------------------------------------------------------------------------------------
# Writer (synthetic captures)
# ----------------------------------------------------------------------------------------------


class InterHandWriter:
    """Accumulate one split's annotations in InterHand2.6M format and write its JSON files.

    Images are written by the caller at :meth:`image_path` (``cv2.imwrite``), the writer records them
    in ``data.json``. Lengths given in metres are stored as InterHand does (``campos`` and
    ``joint_3d`` in mm, MANO ``trans`` in metres).
    """

    def __init__(self, root, split: str):
        if split not in SPLITS:
            raise InputError(f"split must be one of {SPLITS}, got {split!r}")
        self.root, self.split = os.fspath(root), split
        self.cameras: dict = {}
        self.mano: dict = {}
        self.joints: dict = {}
        self.images: list = []
        self.annotations: list = []

    def add_camera(self, capture, camera: str, K, R, t) -> None:
        """Calibration of one camera: ``K (3,3)`` pixels, world-to-camera ``R (3,3)``, ``t (3,)`` metres."""
        from utils.geometry.camera import opencv_to_interhand

        K = np.asarray(K, dtype=np.float64)
        campos, camrot = opencv_to_interhand(
            torch.as_tensor(np.asarray(R), dtype=torch.float64),
            torch.as_tensor(np.asarray(t), dtype=torch.float64),
        )
        cam = self.cameras.setdefault(
            capture_key(capture), {"campos": {}, "camrot": {}, "focal": {}, "princpt": {}}
        )
        key = camera_key(camera)
        cam["campos"][key] = np.asarray(campos, dtype=np.float64).reshape(3).tolist()
        cam["camrot"][key] = np.asarray(camrot, dtype=np.float64).reshape(3, 3).tolist()
        cam["focal"][key] = [float(K[0, 0]), float(K[1, 1])]
        cam["princpt"][key] = [float(K[0, 2]), float(K[1, 2])]

    def add_mano(self, capture, frame_id: int, hand: str, pose, shape, trans) -> None:
        """MANO NeuralAnnot entry (world, metres); the other hand is written as ``None``."""
        entry = self.mano.setdefault(capture_key(capture), {}).setdefault(
            str(int(frame_id)), {"right": None, "left": None}
        )
        entry[hand] = {
            "pose": np.asarray(pose, dtype=np.float64).reshape(48).tolist(),
            "shape": np.asarray(shape, dtype=np.float64).reshape(10).tolist(),
            "trans": np.asarray(trans, dtype=np.float64).reshape(3).tolist(),
        }

    def add_joints(self, capture, frame_id: int, hand: str, joints_world) -> None:
        """21 joints of one hand in InterHand order (world, metres); the other hand's are zero, invalid."""
        joints = np.asarray(joints_world, dtype=np.float64).reshape(21, 3) * 1000.0
        entry = self.joints.setdefault(capture_key(capture), {}).setdefault(
            str(int(frame_id)),
            {
                "world_coord": np.zeros((42, 3)).tolist(),
                "joint_valid": [0] * 42,
                "hand_type": hand,
                "hand_type_valid": 1,
            },
        )
        offset = 0 if hand == "right" else 21
        world = np.asarray(entry["world_coord"])
        world[offset : offset + 21] = joints
        entry["world_coord"] = world.tolist()
        entry["joint_valid"][offset : offset + 21] = [1] * 21
        entry["hand_type"] = hand if entry["hand_type"] == hand else "interacting"

    def image_path(self, capture, seq_name: str, camera: str, frame_id: int) -> str:
        """Absolute path of an image (its folder is created)."""
        path = image_path(self.root, self.split, capture, seq_name, camera, frame_id)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def add_image(
        self,
        capture,
        seq_name: str,
        camera: str,
        frame_id: int,
        width: int,
        height: int,
        subject: int,
        bbox,
        hand_type: str = "right",
    ) -> None:
        """COCO-style ``images[]`` and ``annotations[]`` entries (``bbox`` = [x, y, w, h] pixels)."""
        image_id = len(self.images)
        rel = os.path.join(capture_dirname(capture), seq_name, camera, f"image{int(frame_id)}.jpg")
        self.images.append(
            {
                "id": image_id,
                "file_name": rel,
                "width": int(width),
                "height": int(height),
                "capture": int(capture_key(capture)),
                "subject": int(subject),
                "seq_name": seq_name,
                "camera": camera_key(camera),
                "frame_idx": int(frame_id),
            }
        )
        valid = [1] * 21 + [0] * 21 if hand_type == "right" else [0] * 21 + [1] * 21
        self.annotations.append(
            {
                "id": image_id,
                "image_id": image_id,
                "bbox": [float(b) for b in bbox],
                "joint_valid": valid,
                "hand_type": hand_type,
                "hand_type_valid": 1,
            }
        )

    def write(self) -> list:
        """Write the four JSON files; returns their paths."""
        tables = {
            "camera": self.cameras,
            "MANO_NeuralAnnot": self.mano,
            "joint_3d": self.joints,
            "data": {"images": self.images, "annotations": self.annotations},
        }
        from utils.checkpoint import atomic_write_text

        paths = []
        for kind, table in tables.items():
            path = annotation_path(self.root, self.split, kind)
            atomic_write_text(path, json.dumps(table))
            paths.append(path)
        return paths
