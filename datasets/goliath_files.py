"""Goliath dome captures on disk: paths, zip members, decoding, calibration, light patterns, splits.

The file-format layer under :mod:`datasets.goliath` (which builds the sequence and documents the layout and
what the reader does with each fact). Everything here reads one file and returns numpy in the file's own
units (millimetres, full-sensor K), checked against what the public material says the file holds; a file
that does not match raises :class:`GoliathFormatError` naming the file and the expectation.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import zipfile

import numpy as np

from utils.errors import InputError

CAPTURE_RE = re.compile(
    r"^m--\d+--\d+--(?P<subject>[A-Za-z0-9]+)--pilot--ProjectGoliath--Hands--(?P<side>left|right)$"
)
SPLITS = ("train", "test", "all")
# Goliath's loader reads hand images at half the calibrated resolution (get_camera_parameters(ds=2)):
# the calibration is for the 4096 x 2668 sensor, the released images are 2048 x 1334.
IMAGE_SCALE = 2.0
# Goliath's hand batch filter (ca_code/utils/dataloader.py): the images are not white balanced.
BLACK_LEVEL = (2.0, 1.0, 2.0)
WHITE_BALANCE = (1.4, 1.1, 1.6)
IMAGE_EXTENSIONS = (".avif", ".png", ".jpg", ".jpeg")
MM = 1e-3
_MEMBER_RE = re.compile(r"^cam(?P<cam>[^/]+)/(?P<frame>\d+)(?P<ext>\.[A-Za-z]+)$")


class GoliathFormatError(InputError):
    """A Goliath file exists but does not hold what the reader expects (the message names file and fact)."""


# ----------------------------------------------------------------------------------------------
# Paths and zip members
# ----------------------------------------------------------------------------------------------


def capture_info(capture_dir) -> dict:
    """``{"name", "subject", "side"}`` from a capture folder name (side None when the name is not Goliath's)."""
    name = os.path.basename(os.path.normpath(os.fspath(capture_dir)))
    m = CAPTURE_RE.match(name)
    return {
        "name": name,
        "subject": m.group("subject") if m else None,
        "side": m.group("side") if m else None,
    }


def image_zip(capture_dir, camera: str) -> str:
    return os.path.join(os.fspath(capture_dir), "image", f"{camera}.zip")


def segmentation_zip(capture_dir, camera: str) -> str:
    return os.path.join(os.fspath(capture_dir), "segmentation_fgbg", f"{camera}.zip")


TARGET_FILES = {
    # kind -> (zip relative to the capture, member name pattern)
    "registration": (
        os.path.join("kinematic_tracking", "registration_vertices.zip"),
        "registration_vertices/{:06d}.ply",
    ),
    "scan": (os.path.join("scan_mesh", "scan_mesh.zip"), "{:06d}.ply"),
    "keypoints": (os.path.join("keypoints_3d", "keypoints_3d.zip"), "{:06d}.json"),
}


def target_member(capture_dir, kind: str, frame_id: int) -> tuple[str, str]:
    """``(zip path, member)`` of a per-frame fit target (``registration``, ``scan``, ``keypoints``)."""
    rel, pattern = TARGET_FILES[kind]
    return os.path.join(os.fspath(capture_dir), rel), pattern.format(int(frame_id))


def member_path(zip_path: str, member: str) -> str:
    """The path the sequence stores for a zip member: ``<zip>/<member>`` (read by :func:`read_zip_member`)."""
    return os.path.join(zip_path, *member.split("/"))


def split_member_path(path: str) -> tuple[str, str] | None:
    """``(zip path, member)`` of a :func:`member_path`, or None for a plain file."""
    parts = os.fspath(path).split(os.sep)
    for i in range(len(parts) - 1, 0, -1):
        if parts[i - 1].endswith(".zip"):
            zip_path = os.sep.join(parts[:i])
            if os.path.isfile(zip_path):
                return zip_path, "/".join(parts[i:])
    return None


_ZIPS: dict = {}
_NAMES: dict = {}


def _open_zip(zip_path: str) -> zipfile.ZipFile:
    # One open handle per zip and process (DataLoader workers fork: the pid keys them apart). Parsing
    # the central directory of a 10k-member zip for every image would cost more than the decode.
    key = (os.path.abspath(zip_path), os.getpid())
    if key not in _ZIPS:
        if not os.path.isfile(zip_path):
            raise FileNotFoundError(f"{zip_path}: expected a zip file")
        try:
            _ZIPS[key] = zipfile.ZipFile(zip_path, "r")
        except zipfile.BadZipFile as err:
            raise GoliathFormatError(f"{zip_path}: not a readable zip file ({err})") from None
    return _ZIPS[key]


def zip_names(zip_path: str) -> set:
    """Member names of a zip (cached per path and modification time)."""
    key = (os.path.abspath(zip_path), os.path.getmtime(zip_path))
    if key not in _NAMES:
        _NAMES[key] = set(_open_zip(zip_path).namelist())
    return _NAMES[key]


def read_zip_member(zip_path: str, member: str) -> bytes:
    """Bytes of one zip member; FileNotFoundError naming the zip and the member when absent."""
    zf = _open_zip(zip_path)
    try:
        return zf.read(member)
    except KeyError:
        raise FileNotFoundError(f"{zip_path}: expected member {member}") from None


def clear_caches() -> None:
    """Close the cached zip handles and forget member lists."""
    for zf in _ZIPS.values():
        zf.close()
    _ZIPS.clear()
    _NAMES.clear()


def camera_frames(zip_path: str, camera: str) -> dict:
    """``{frame_id: member}`` of the images (or PNG segmentations) of one camera's zip."""
    out = {}
    for name in zip_names(zip_path):
        m = _MEMBER_RE.match(name)
        if m and f"cam{m.group('cam')}" == camera and m.group("ext").lower() in IMAGE_EXTENSIONS:
            out[int(m.group("frame"))] = name
    return out


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------


def _require_avif(what: str) -> None:
    import PIL
    from PIL import features

    if what.lower().endswith(".avif") and not features.check("avif"):
        raise RuntimeError(
            f"{what}: this Pillow ({PIL.__version__}) cannot decode AVIF; install "
            "pillow>=11.3 (its wheels include libavif; see requirements.txt)"
        )


def _pil_image(data: bytes, what: str):
    from PIL import Image, UnidentifiedImageError

    _require_avif(what)
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as err:
        raise GoliathFormatError(f"{what}: cannot decode the image ({err})") from None
    return image


def decode_rgb(data: bytes, what: str) -> np.ndarray:
    """``(H, W, 3)`` float32 RGB in [0, 1] from the bytes of an AVIF, PNG or JPEG file (``what`` names it)."""
    image = _pil_image(data, what)
    if image.mode in ("I;16", "I;16B", "I"):
        return np.repeat((np.asarray(image, dtype=np.float32) / 65535.0)[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def decode_mask(data: bytes, what: str) -> np.ndarray:
    """``(H, W)`` bool foreground of a segmentation PNG: any channel != 0 (palette images by index)."""
    array = np.asarray(_pil_image(data, what))
    return array.any(axis=2) if array.ndim == 3 else array != 0


def image_size(zip_path: str, member: str) -> tuple[int, int]:
    """``(H, W)`` of one zipped image, from its header."""
    from PIL import Image

    what = f"{zip_path}:{member}"
    _require_avif(what)
    try:
        with Image.open(io.BytesIO(read_zip_member(zip_path, member))) as im:
            w, h = im.size
    except OSError as err:
        raise GoliathFormatError(f"{what}: cannot read the image header ({err})") from None
    return int(h), int(w)


def correct_colors(image: np.ndarray) -> np.ndarray:
    """Goliath's hand colour correction of an RGB image in [0, 1]: black level, then white balance."""
    black = np.asarray(BLACK_LEVEL, dtype=np.float32) / 255.0
    gains = np.asarray(WHITE_BALANCE, dtype=np.float32)
    return np.clip((image - black) * gains, 0.0, 1.0).astype(np.float32)


def uncorrect_colors(image: np.ndarray) -> np.ndarray:
    """Inverse of :func:`correct_colors` where it is invertible (for writing fixtures)."""
    black = np.asarray(BLACK_LEVEL, dtype=np.float32) / 255.0
    gains = np.asarray(WHITE_BALANCE, dtype=np.float32)
    return np.clip(image / gains + black, 0.0, 1.0).astype(np.float32)


def read_ply_bytes(data: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``verts (V, 3) float64`` and ``faces (F, 3) int64`` (``(0, 3)`` when the PLY has none) of PLY bytes."""
    from utils.geometry.mesh_io import load_ply

    try:
        verts, faces, _ = load_ply(io.BytesIO(data), name=what)
    except InputError as err:
        raise GoliathFormatError(str(err)) from None
    return verts, faces


# ----------------------------------------------------------------------------------------------
# Calibration, lights, splits
# ----------------------------------------------------------------------------------------------


def read_calibration(capture_dir, distortion: str = "error") -> dict:
    """Cameras of ``camera_calibration.json`` as stored: ``{"cam<ID>": (K_full (3,3), R (3,3), t_mm (3,))}``.

    ``K`` and ``T`` are transposed back (and checked to have been stored transposed: the last column
    of the stored K must be (0, 0, 1) and the stored T must end in a row ``[t, 1]``).

    Args:
        distortion: ``error`` (default) refuses a camera with non-zero distortion coefficients (whether the
            hand captures carry any is unconfirmed; this reader is pinhole only); ``ignore`` drops them,
            as Goliath's own loader does.
    """
    if distortion not in ("error", "ignore"):
        raise InputError(f"distortion must be 'error' or 'ignore', got {distortion!r}")
    path = os.path.join(os.fspath(capture_dir), "camera_calibration.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: expected the Goliath camera calibration (camera_calibration.json)")
    with open(path) as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or not isinstance(data.get("KRT"), list):
        raise GoliathFormatError(f'{path}: expected {{"KRT": [{{"cameraId", "K", "T"}}, ...]}}')
    cams = {}
    for i, entry in enumerate(data["KRT"]):
        try:
            cid = str(entry["cameraId"])
            K_stored = np.asarray(entry["K"], dtype=np.float64).reshape(3, 3)
            T_stored = np.asarray(entry["T"], dtype=np.float64).reshape(4, 4)
        except (KeyError, TypeError, ValueError) as err:
            raise GoliathFormatError(f"{path}: KRT[{i}] needs cameraId, K (3x3) and T (4x4): {err}") from None
        name = cid if cid.startswith("cam") else f"cam{cid}"
        if not (np.allclose(K_stored[:2, 2], 0.0) and np.isclose(K_stored[2, 2], 1.0) and K_stored[2, 0] > 0):
            raise GoliathFormatError(
                f"{path}: camera {cid}: K = {K_stored.tolist()} is not a transposed intrinsic matrix (expected "
                "[[fx, 0, 0], [s, fy, 0], [cx, cy, 1]], as Goliath's loader reads it with K.T)"
            )
        if not (np.allclose(T_stored[:3, 3], 0.0) and np.isclose(T_stored[3, 3], 1.0)):
            raise GoliathFormatError(
                f"{path}: camera {cid}: T is not a transposed 4x4 world-to-camera matrix (expected its last "
                f"column (0, 0, 0, 1) and its last row [t, 1]), got {T_stored.tolist()}"
            )
        Rt = T_stored.T[:3, :4]
        R, t_mm = Rt[:, :3], Rt[:, 3]
        if not (np.allclose(R @ R.T, np.eye(3), atol=1e-4) and np.linalg.det(R) > 0):
            raise GoliathFormatError(f"{path}: camera {cid}: T.T[:3, :3] is not a rotation")
        coeffs = [
            c
            for key in ("distortion", "distortionCoeffs", "dist", "D")
            if key in entry
            for c in np.ravel(np.asarray(entry[key], dtype=np.float64))
        ]
        if distortion == "error" and any(abs(c) > 0 for c in coeffs):
            model = entry.get("distortionModel", "unknown model")
            raise GoliathFormatError(
                f"{path}: camera {cid} has lens distortion ({model}, coefficients {coeffs}); this reader is "
                "pinhole only. Goliath's own loader ignores distortion: pass distortion='ignore' "
                "(data.goliath.distortion = ignore) to do the same"
            )
        cams[name] = (K_stored.T.copy(), R, t_mm)
    if not cams:
        raise GoliathFormatError(f"{path}: KRT lists no camera")
    return cams


def scale_intrinsics(K_full: np.ndarray, scale: float) -> np.ndarray:
    """Full-sensor K -> K of images ``scale`` times smaller, pixel centres at +0.5.

    Goliath's K puts pixel centres at integers (its loader maps ``c -> (c + 0.5) / s - 0.5``); here a
    pixel's centre is at +0.5, so the same point is ``(c + 0.5) / s``. Focal lengths and skew are divided.
    """
    K = np.array(K_full, dtype=np.float64)
    K[:2, :2] /= scale
    K[:2, 2] = (K[:2, 2] + 0.5) / scale
    return K


def read_light_patterns(capture_dir) -> tuple[dict, dict | None, str]:
    """``({frame: pattern}, metadata or None, path)`` from ``lights/``; pattern 0 is fully lit."""
    path = os.path.join(os.fspath(capture_dir), "lights", "light_pattern_per_frame.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: expected the per-frame light patterns ([[frame, pattern], ...]); "
            "only fully-lit frames (pattern 0) carry segmentations and fit targets"
        )
    with open(path) as fh:
        data = json.load(fh)
    try:
        patterns = {int(f): int(p) for f, p in data}
    except (TypeError, ValueError):
        raise GoliathFormatError(f"{path}: expected a list of [frame, pattern] pairs") from None
    meta_path = os.path.join(os.fspath(capture_dir), "lights", "light_pattern_metadata.json")
    meta = None
    if os.path.isfile(meta_path):
        with open(meta_path) as fh:
            meta = json.load(fh)
    return patterns, meta, path


def lights_on(meta, pattern: int):
    try:
        return len(meta["light_patterns"][pattern]["light_index_durations"])
    except (TypeError, KeyError, IndexError):
        return None


def read_frame_splits(capture_dir) -> dict:
    """``{frame: split}`` from ``frame_splits_list.csv`` (columns ``frame``, ``split``)."""
    path = os.path.join(os.fspath(capture_dir), "frame_splits_list.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: expected the train/test frame split (columns frame, split)")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"frame", "split"} <= set(reader.fieldnames):
            raise GoliathFormatError(f"{path}: expected columns 'frame' and 'split', got {reader.fieldnames}")
        try:
            return {int(row["frame"]): row["split"].strip() for row in reader}
        except (TypeError, ValueError) as err:
            raise GoliathFormatError(f"{path}: a 'frame' value is not an integer ({err})") from None
