"""Goliath (Codec Avatar Studio) dome hand captures -> CaptureSequence.

One capture is one folder ``m--<date>--<time>--<SID>--pilot--ProjectGoliath--Hands--<left|right>``
(docs/data.md, ../shared/reference/goliath.md). What the reader reads and how it turns it into the
project's conventions (metres, OpenCV cameras with pixel centres at +0.5, RGB in [0, 1]):

- ``camera_calibration.json`` ``{"KRT": [{cameraId, K, T}]}``: K (3x3) and T (4x4) stored transposed;
  ``T.T[:3, :4]`` is world-to-camera ``[R | t]`` with ``t`` in millimetres; K is for the full sensor.
  The images are ``image_scale`` (2) times smaller: ``f' = f / s`` and, since Goliath's loader uses
  pixel centres at integers (its ``c' = (c + 0.5) / s - 0.5``), ``c' = (c + 0.5) / s`` here.
- ``image/cam<ID>.zip`` -> ``cam<ID>/<frame:06d>.avif`` (PNG/JPEG members are accepted too). Images are
  decoded straight from the zip, one at a time (AVIF by Pillow >= 11.3, see requirements.txt) and colour
  corrected as Goliath's own hand loader does (black level -(2, 1, 2), gains (1.4, 1.1, 1.6)).
- ``segmentation_fgbg/cam<ID>.zip`` -> ``cam<ID>/<frame:06d>.png``, foreground = pixel != 0; the image
  is multiplied by it (the hand model then masks the rest with its own silhouette).
- ``lights/light_pattern_per_frame.json`` ``[[frame, pattern], ...]``: pattern 0 is fully lit.
- ``frame_splits_list.csv`` (``frame``, ``split``).
- ``kinematic_tracking/registration_vertices.zip``, ``scan_mesh/scan_mesh.zip``,
  ``keypoints_3d/keypoints_3d.zip``: targets of the MANO fit (:mod:`datasets.goliath_fit`; the dome
  captures carry no MANO parameters) and, for the scans, the P2P ground truth.

What the real data gets wrong or leaves open, and what the reader does (``report`` / ``summary()``):

- cameras in the calibration without an image zip (about 10 of 172): dropped with a reason, as
  Goliath's loader does; cameras without a ``segmentation_fgbg`` zip (10-15 more): dropped with a
  reason; an explicitly requested camera that lacks either is an error;
- partially-lit frames (2 of every 3) and frames without a light-pattern entry: skipped with the
  pattern; frames missing from some selected camera's image or segmentation zip, or without the fit
  targets: skipped and counted (explicitly requested frames raise instead);
- facts the public material leaves unconfirmed fail with a message naming the file and what was
  expected rather than being guessed: K/T not stored transposed, a principal point that does not land
  in the images after the ``image_scale`` division, camera centres not at a dome's distance in
  millimetres, non-zero lens distortion (``distortion="ignore"`` does what Goliath's loader does),
  fit targets not in the cameras' world frame, and the 3D keypoint schema and joint order (the
  keypoints are used only with an explicit ``keypoint_order``);
- a MANO fit that fails its quality check (a finger fitted onto another's surface; checked for every
  frame, :mod:`datasets.goliath_fit`): ``fit_policy`` ``error`` (default) stops naming the frames, checks
  and values, ``warn`` keeps them, ``drop`` leaves them out; every failed check is logged by frame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from datasets.capture import CaptureSequence, is_black, read_rgb
from datasets.goliath_files import (  # noqa: F401 (the file-format names are part of this module's API)
    CAPTURE_RE,
    IMAGE_SCALE,
    MM,
    SPLITS,
    GoliathFormatError,
    camera_frames,
    capture_info,
    clear_caches,
    correct_colors,
    decode_mask,
    decode_rgb,
    image_size,
    image_zip,
    lights_on,
    member_path,
    read_calibration,
    read_frame_splits,
    read_light_patterns,
    read_ply_bytes,
    read_zip_member,
    scale_intrinsics,
    segmentation_zip,
    split_member_path,
    target_member,
    uncorrect_colors,
    zip_names,
)
from datasets.goliath_fit import (  # noqa: F401 (GoliathFitError is part of this module's API)
    FIT_POLICIES,
    GoliathFitError,
    apply_fit_policy,
    describe_checks,
    fit_capture_mano,
    fit_settings_from_config,
    warning_callable,
)
from datasets.interhand import select_frames
from utils.errors import InputError
from utils.geometry.mano import HandModel, resolve_hand_model_path

# ----------------------------------------------------------------------------------------------
# The sequence
# ----------------------------------------------------------------------------------------------


@dataclass
class GoliathSequence(CaptureSequence):
    """A :class:`CaptureSequence` whose images, segmentations and scans live in Goliath's zips.

    Extra attributes (``segmentation_paths`` holds ``<zip>/<member>`` paths of the ``segmentation_fgbg`` PNGs):
        scan_paths: F ``<zip>/<member>`` paths of the scans (None where a frame has none).
        color_correction: apply Goliath's hand colour correction (:func:`correct_colors`) on load.
        apply_segmentation: multiply loaded images by their foreground segmentation.
        scan_crop_radius: :meth:`gt_mesh` keeps the scan within this distance (metres) of the MANO
            hand's centre and not behind its wrist end (UHM's evaluation keeps 15 cm); 0 keeps it all.
    """

    scan_paths: list = field(default_factory=list)
    color_correction: bool = True
    apply_segmentation: bool = True
    scan_crop_radius: float = 0.15

    def __post_init__(self):
        super().__post_init__()
        F_ = self.num_frames
        if self.scan_paths and len(self.scan_paths) != F_:
            raise ValueError(f"{self.name}: scan_paths must hold {F_} paths")

    @staticmethod
    def _read(path: str) -> tuple[bytes, str]:
        loc = split_member_path(path)
        if loc is None:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path}: expected a file or a zip member")
            with open(path, "rb") as fh:
                return fh.read(), path
        return read_zip_member(*loc), f"{loc[0]}:{loc[1]}"

    def load_segmentation(self, frame_index: int, view_index: int) -> np.ndarray:
        """``(H, W)`` bool foreground of one view (nearest-upsampled when stored at an integer fraction)."""
        if not self.segmentation_paths:
            raise FileNotFoundError(f"{self.name}: this sequence has no segmentations")
        data, what = self._read(self.segmentation_paths[frame_index][view_index])
        mask = decode_mask(data, what)
        H, W = self.cameras.image_size
        if mask.shape != (H, W):
            fy, fx = H / mask.shape[0], W / mask.shape[1]
            if fy != fx or fy != int(fy):
                raise GoliathFormatError(
                    f"{what}: segmentation is {mask.shape[1]}x{mask.shape[0]} (WxH), the "
                    f"images {W}x{H}: expected the same size or an integer fraction of it"
                )
            mask = np.repeat(np.repeat(mask, int(fy), axis=0), int(fx), axis=1)
        return mask

    def load_image(self, frame_index: int, view_index: int) -> np.ndarray:
        """Raw image ``(H, W, 3)`` float32 RGB in [0, 1], colour corrected and segmented as configured."""
        path = self.image_paths[frame_index][view_index]
        if split_member_path(path) is None:
            image = read_rgb(path)
            what = path
        else:
            data, what = self._read(path)
            image = decode_rgb(data, what)
        H, W = self.cameras.image_size
        if image.shape[:2] != (H, W):
            raise InputError(
                f"{what}: image is {image.shape[1]}x{image.shape[0]} (WxH) but camera "
                f"{self.cameras.names[view_index]} of {self.name} expects {W}x{H}"
            )
        if self.color_correction:
            image = correct_colors(image)
        if self.apply_segmentation and self.segmentation_paths:
            image = image * self.load_segmentation(frame_index, view_index)[:, :, None]
        if is_black(image):
            key = (int(self.frame_ids[frame_index]), self.cameras.names[view_index])
            if key not in self.report["black_images"]:
                self.report["black_images"].append(key)
        return image

    def scan(self, frame_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole scan of one frame: ``verts (V, 3)`` metres (world) and ``faces (F, 3)``."""
        path = self.scan_paths[frame_index] if self.scan_paths else None
        if path is None:
            raise FileNotFoundError(f"{self.name}: no scan mesh for frame {self.frame_ids[frame_index]}")
        data, what = self._read(path)
        verts, faces = read_ply_bytes(data, what)
        if len(faces) == 0:
            raise GoliathFormatError(f"{what}: expected a scan mesh with faces")
        return torch.from_numpy(verts * MM).float(), torch.from_numpy(faces).long()

    def gt_mesh(self, frame_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """P2P ground truth: the frame's scan (metres), cropped to the hand (``scan_crop_radius``)."""
        verts, faces = self.scan(frame_index)
        if self.scan_crop_radius > 0:
            verts, faces = crop_to_hand(verts, faces, *self.mano_frame(frame_index), self.scan_crop_radius)
        return verts, faces

    def select(self, frames=None, views=None) -> GoliathSequence:
        sub = super().select(frames, views)
        fi = list(range(self.num_frames)) if frames is None else [int(f) for f in frames]
        out = GoliathSequence(
            **{f.name: getattr(sub, f.name) for f in fields(CaptureSequence)},
            scan_paths=[self.scan_paths[f] for f in fi] if self.scan_paths else [],
            color_correction=self.color_correction,
            apply_segmentation=self.apply_segmentation,
            scan_crop_radius=self.scan_crop_radius,
        )
        out._cache.update({k: v for k, v in sub._cache.items() if k == "hand_model"})
        return out

    def summary(self) -> str:
        lines = [super().summary()]
        fit = self.report.get("mano_fit")
        if fit:
            res = fit.get("residual_mm", {})
            text = ", ".join(f"{k} {v:.2f}" for k, v in res.items() if isinstance(v, (int, float)))
            lines.append(
                f"  MANO fitted to {fit.get('target')}: residual (mm) {text or '?'}"
                f"{' (cache ' + fit['cache'] + ')' if fit.get('cache') else ''}"
            )
            lines.append(
                f"  MANO quality check: {len(fit.get('failed_frames', {}))} of {len(fit.get('quality', {}))} "
                f"frame(s) failed (fit_policy = {fit.get('policy')}); rescued by another start: "
                f"{fit.get('rescued') or 'none'}; one shape, fitted on frames {fit.get('shape_frames')}"
            )
            for frame, checks in fit.get("failed_frames", {}).items():
                lines.append(f"    frame {frame}: {describe_checks(checks)}")
        for note in self.report.get("notes", []):
            lines.append(f"  note: {note}")
        return "\n".join(lines)


def crop_to_hand(
    verts: torch.Tensor,
    faces: torch.Tensor,
    mano_verts: torch.Tensor,
    mano_joints: torch.Tensor,
    radius: float = 0.15,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The part of a scan that the MANO hand covers: faces whose vertices all lie within ``radius``
    (metres) of the MANO vertices' mean and distal of the MANO mesh's wrist end (the plane, normal to
    the wrist -> middle-MCP direction, through the MANO vertex farthest towards the forearm).

    Args:
        verts: (V, 3), faces (F, 3): the scan, metres, world.
        mano_verts: (778, 3), mano_joints: (16, 3) of the same frame.
    Returns:
        verts (V', 3), faces (F', 3) with unused vertices removed.
    """
    centre = mano_verts.mean(0)
    axis = mano_joints[4] - mano_joints[0]  # wrist -> middle MCP (MANO joint order)
    axis = axis / axis.norm().clamp_min(1e-9)
    cut = ((mano_verts - mano_joints[0]) @ axis).min()
    keep_v = ((verts - centre).norm(dim=1) < radius) & (((verts - mano_joints[0]) @ axis) >= cut)
    keep_f = keep_v[faces].all(dim=1)
    faces = faces[keep_f]
    if len(faces) == 0:
        raise InputError(
            "crop_to_hand: no scan face lies near the MANO hand (scan and MANO in different frames?)"
        )
    used = torch.unique(faces)
    remap = torch.full((len(verts),), -1, dtype=torch.long)
    remap[used] = torch.arange(len(used))
    return verts[used], remap[faces]


# ----------------------------------------------------------------------------------------------
# The reader
# ----------------------------------------------------------------------------------------------


def _select_cameras(available: list, cameras, report: dict, capture_dir) -> list:
    if cameras is None:
        return list(available)
    if isinstance(cameras, (int, np.integer)):
        if int(cameras) <= 0:
            raise InputError(f"camera count must be positive, got {cameras}")
        return list(available)[: int(cameras)]
    names = [c if str(c).startswith("cam") else f"cam{c}" for c in cameras]
    for n in names:
        if n not in available:
            why = report["dropped_cameras"].get(n, "not in camera_calibration.json")
            raise InputError(
                f"{capture_dir}: requested camera {n} is not usable ({why}); usable: {available}"
            )
    return names


def build_cameras(calibration: dict, names: list, image_hw: tuple, scale: float, path: str):
    """``Cameras`` (metres, pixel centres at +0.5) of the named calibration entries for ``image_hw`` images."""
    from utils.geometry.camera import Cameras

    H, W = image_hw
    Ks, Rs, ts = [], [], []
    for n in names:
        K_full, R, t_mm = calibration[n]
        K = scale_intrinsics(K_full, scale)
        if not (0 < K[0, 2] < W and 0 < K[1, 2] < H):
            raise GoliathFormatError(
                f"{path}: camera {n}: the principal point ({K_full[0, 2]:.1f}, {K_full[1, 2]:.1f}) divided by "
                f"image_scale = {scale:g} is ({K[0, 2]:.1f}, {K[1, 2]:.1f}), outside the {W}x{H} (WxH) images: "
                f"expected a calibration for images {scale:g}x larger (Goliath: 4096x2668 sensor, 2048x1334 "
                "images); set image_scale to the ratio of your calibration to your images"
            )
        Ks.append(K)
        Rs.append(R)
        ts.append(t_mm * MM)
    cams = Cameras(
        K=torch.as_tensor(np.stack(Ks)).float(),
        R=torch.as_tensor(np.stack(Rs)).float(),
        t=torch.as_tensor(np.stack(ts)).float(),
        image_size=(H, W),
        names=list(names),
    )
    centres = cams.centres().double()
    if len(names) >= 2:
        radius = float((centres - centres.mean(0)).norm(dim=1).median())
        if not 0.1 <= radius <= 20.0:
            raise GoliathFormatError(
                f"{path}: camera centres lie {radius:.4g} m from their centroid after reading T's translation as "
                "millimetres: expected a dome of about a metre (translations in mm)"
            )
    return cams


def read_goliath_sequence(
    capture_dir,
    split: str = "test",
    hand: str | None = None,
    cameras=None,
    num_frames=None,
    frame_mode: str = "strided",
    frame_ids=None,
    image_scale: float = IMAGE_SCALE,
    distortion: str = "error",
    color_correction: bool = True,
    apply_segmentation: bool = True,
    fit_target: str = "registration",
    keypoint_order=None,
    fit_cache_dir=None,
    fit_settings=None,
    fit_policy: str = "error",
    mano_params=None,
    mano_dir=None,
    scan_crop_radius: float = 0.15,
    log=None,
    warn=None,
    verbose: bool = False,
) -> GoliathSequence:
    """Read one Goliath dome hand capture as a :class:`GoliathSequence` with fitted MANO parameters.

    Args:
        capture_dir: the ``m--...--Hands--<side>`` folder.
        split: frames of ``frame_splits_list.csv`` to use: ``train``, ``test`` or ``all``.
        hand: ``right``/``left``; None takes it from the folder name (an error if the name does not say).
        cameras: None (every usable camera, sorted), a count (the first N), or names (``cam401645`` or
            ``401645``), kept in the given order.
        num_frames, frame_mode: frame selection after filtering (``datasets.interhand.select_frames``).
        frame_ids: explicit frame numbers (anything missing or not fully lit is an error).
        image_scale: full-sensor calibration size / image size (2 for the released 2048x1334 images).
        distortion: ``error`` or ``ignore`` (see :func:`read_calibration`).
        color_correction, apply_segmentation: see :class:`GoliathSequence`.
        fit_target: what the MANO fit follows besides the keypoints: ``registration`` (the registered
            surface, as a point set) or ``scan``.
        keypoint_order: None (keypoints not used: their schema and joint order are unconfirmed), the
            name ``"interhand"`` (the files list InterHand2.6M's 21 joints in its order) or 21 row indices
            of the file giving ``datasets.capture.hand_joints``' order (16 MANO joints, then fingertips).
        fit_cache_dir: where fitted MANO parameters are kept between runs (None: not kept).
        fit_settings: ``utils.geometry.mano_fit.FitSettings`` or a dict of its fields (None: the defaults of
            ``datasets.goliath_fit.default_settings``), quality-check limits included.
        fit_policy: what a frame whose MANO fit fails its quality check does: ``error`` (stop with a
            :class:`GoliathFitError` naming the frames, checks and values), ``warn`` (keep it, with a
            warning) or ``drop`` (leave it out; ``report["skipped_frames"]`` gives the checks). Every failed
            check is logged by frame whatever the policy.
        mano_params: ``{frame: (pose (48,), shape (10,), trans (3,))}`` to use instead of fitting (e.g. the
            caller's own fits); frames without an entry are skipped.
        mano_dir: hand model (default: ``$SRHAND_MANO_DIR`` or the procedural hand).
        scan_crop_radius: see :class:`GoliathSequence`.
        log: callable for progress lines (default: silent).
        warn: callable for warnings (default: the ``warning`` method of ``log``'s owner when ``log`` is a
            logger's ``info``, as stage 3 passes it; else ``log``; else Python's ``logging``).
        verbose: print the summary.
    """
    capture_dir = os.fspath(capture_dir)
    if not os.path.isdir(capture_dir):
        raise FileNotFoundError(f"{capture_dir}: expected a Goliath capture folder (m--...--Hands--<side>)")
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    if fit_target not in ("registration", "scan"):
        raise InputError(f"fit_target must be 'registration' or 'scan', got {fit_target!r}")
    if fit_policy not in FIT_POLICIES:
        raise InputError(f"fit_policy must be one of {FIT_POLICIES}, got {fit_policy!r}")
    info = capture_info(capture_dir)
    if hand is None:
        if info["side"] is None:
            raise InputError(
                f"{capture_dir}: the folder name does not end in --Hands--right or --Hands--left; "
                "pass hand='right' or 'left'"
            )
        hand = info["side"]
    elif info["side"] is not None and hand != info["side"]:
        raise InputError(f"{capture_dir} is a {info['side']}-hand capture, hand = {hand!r}")
    report = {"skipped_frames": {}, "dropped_cameras": {}, "black_images": [], "notes": []}

    # Cameras: calibrated, with an image zip, with a segmentation zip.
    calibration = read_calibration(capture_dir, distortion)
    calib_path = os.path.join(capture_dir, "camera_calibration.json")
    image_dir = os.path.join(capture_dir, "image")
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"{image_dir}: expected the per-camera image zips (cam<ID>.zip)")
    zips = sorted(n[:-4] for n in os.listdir(image_dir) if n.startswith("cam") and n.endswith(".zip"))
    for n in zips:
        if n not in calibration:
            report["dropped_cameras"][n] = "image zip but no entry in camera_calibration.json"
    usable = []
    for n in sorted(calibration):
        if n not in zips:
            report["dropped_cameras"][n] = "no image zip"
        elif not os.path.isfile(segmentation_zip(capture_dir, n)):
            report["dropped_cameras"][n] = "no segmentation_fgbg zip"
        else:
            usable.append(n)
    names = _select_cameras(usable, cameras, report, capture_dir)
    if not names:
        raise InputError(
            f"{capture_dir}: no usable camera (calibrated, with image and segmentation zips); "
            f"dropped: {report['dropped_cameras']}"
        )

    # Frames: the split, fully lit, present in every selected camera, with the fit targets.
    splits = read_frame_splits(capture_dir)
    patterns, light_meta, lights_path = read_light_patterns(capture_dir)
    images = {n: camera_frames(image_zip(capture_dir, n), n) for n in names}
    segs = {n: camera_frames(segmentation_zip(capture_dir, n), n) for n in names}
    kinds = (
        []
        if mano_params is not None
        else [fit_target] + (["keypoints"] if keypoint_order is not None else [])
    )
    targets = {}
    for kind in set(kinds) | {"scan"}:
        zpath, _ = target_member(capture_dir, kind, 0)
        targets[kind] = zip_names(zpath) if os.path.isfile(zpath) else None
        if targets[kind] is None and kind in kinds:
            raise FileNotFoundError(f"{zpath}: expected the {kind} zip (the MANO fit target)")
    if keypoint_order is None and mano_params is None:
        report["notes"].append(
            "keypoints_3d not used: their schema and joint order are unconfirmed "
            "(set keypoint_order to use them)"
        )

    def reason(f):
        if f not in patterns:
            return f"no entry in {os.path.relpath(lights_path, capture_dir)}"
        if patterns[f] != 0:
            lights = lights_on(light_meta, patterns[f])
            return f"not fully lit (light pattern {patterns[f]}{f', {lights} lights' if lights else ''})"
        for n in names:
            if f not in images[n]:
                return "image missing in some selected camera"
            if f not in segs[n]:
                return "segmentation missing in some selected camera"
        if mano_params is not None:
            return None if f in mano_params else "no MANO parameters given for the frame"
        for kind in kinds:
            if target_member(capture_dir, kind, f)[1] not in targets[kind]:
                return f"no {kind} for the frame"
        return None

    if frame_ids is not None:
        chosen = [int(f) for f in frame_ids]
        for f in chosen:
            why = "not in frame_splits_list.csv" if f not in splits else reason(f)
            if why:
                raise InputError(f"{capture_dir}: requested frame {f}: {why}")
    else:
        candidates = sorted(f for f, s in splits.items() if split == "all" or s == split)
        usable_frames = []
        for f in candidates:
            why = reason(f)
            if why:
                report["skipped_frames"].setdefault(why, []).append(f)
            else:
                usable_frames.append(f)
        chosen = select_frames(usable_frames, num_frames, frame_mode)
        if not chosen:
            raise InputError(
                f"{capture_dir}: no usable {split} frame ({len(candidates)} candidate(s); skipped: "
                f"{ {k: len(v) for k, v in report['skipped_frames'].items()} })"
            )

    first = names[0]
    H, W = image_size(image_zip(capture_dir, first), images[first][chosen[0]])
    cams = build_cameras(calibration, names, (H, W), float(image_scale), calib_path)

    model_path = resolve_hand_model_path(mano_dir, hand)
    hand_model = HandModel.from_file(model_path, side=hand)
    if mano_params is not None:
        fit = {
            k: np.stack([np.asarray(mano_params[f][i], dtype=np.float32).reshape(n) for f in chosen])
            for i, (k, n) in enumerate((("pose", 48), ("shape", 10), ("trans", 3)))
        }
        report["notes"].append("MANO parameters given by the caller (not fitted)")
    else:
        fit = fit_capture_mano(
            capture_dir,
            chosen,
            hand_model,
            cams,
            target=fit_target,
            keypoint_order=keypoint_order,
            cache_dir=fit_cache_dir,
            settings=fit_settings,
            log=log,
        )
        report["mano_fit"] = fit["report"]
        chosen, fit = apply_fit_policy(
            chosen, fit, fit_policy, report, f"goliath/{info['name']}", warning_callable(log, warn)
        )

    scan_zip = target_member(capture_dir, "scan", 0)[0]
    scan_paths = [
        member_path(scan_zip, target_member(capture_dir, "scan", f)[1])
        if targets["scan"] is not None and target_member(capture_dir, "scan", f)[1] in targets["scan"]
        else None
        for f in chosen
    ]
    seq = GoliathSequence(
        cameras=cams,
        frame_ids=list(chosen),
        mano_pose=fit["pose"],
        mano_shape=fit["shape"],
        mano_trans=fit["trans"],
        hand_side=hand,
        image_paths=[[member_path(image_zip(capture_dir, n), images[n][f]) for n in names] for f in chosen],
        name=f"goliath/{info['name']}",
        mano_file=mano_dir,
        gt_mesh_path=scan_zip if all(scan_paths) else None,
        report=report,
        segmentation_paths=[
            [member_path(segmentation_zip(capture_dir, n), segs[n][f]) for n in names] for f in chosen
        ],
        scan_paths=scan_paths,
        color_correction=color_correction,
        apply_segmentation=apply_segmentation,
        scan_crop_radius=scan_crop_radius,
    )
    seq._cache["hand_model"] = hand_model
    if verbose:
        print(seq.summary())
    return seq


def read_from_config(
    conf,
    run_dir,
    cameras=None,
    frame_ids=None,
    num_frames=None,
    frame_mode: str = "strided",
    log=None,
    warn=None,
) -> GoliathSequence:
    """:func:`read_goliath_sequence` for main.py's config with ``data.dataset = goliath``.

    ``data.data_path`` is the capture folder; ``data.split`` a split of its ``frame_splits_list.csv`` (train,
    test or all); ``data.hand``, ``data.mano_dir`` as for InterHand; ``data.goliath.*`` the reader's options.
    The MANO fit cache is ``data.goliath.fit_cache`` or, when empty, ``<run_dir>/goliath_mano``; the fitter's
    settings are ``data.goliath.fit.*`` (:func:`fit_settings_from_config`), ``data.goliath.fit_policy`` what a
    failed quality check does; ``log`` and ``warn`` as for :func:`read_goliath_sequence`.

    The evaluation reads the whole split (``num_frames`` and ``frame_ids`` None) and keeps the first
    ``eval.num_frames`` frames of it: with ``eval.frames`` empty, only those are read, so MANO is not fitted
    to frames the evaluation drops.
    """
    d = conf.get_config("data")
    g = d.get_config("goliath")
    rows = [int(r) for r in g.get_list("keypoint_rows")]
    order = rows or g.get_string("keypoint_order") or None
    cache = g.get_string("fit_cache") or os.path.join(os.fspath(run_dir), "goliath_mano")
    settings = fit_settings_from_config(g.get_config("fit"))
    if frame_ids is None and num_frames is None and not conf.get_list("eval.frames", []):
        limit = conf.get_int("eval.num_frames", -1)
        if limit > 0:
            num_frames, frame_mode = limit, "first"
    return read_goliath_sequence(
        d.get_string("data_path"),
        split=d.get_string("split"),
        hand=d.get_string("hand"),
        cameras=cameras,
        num_frames=num_frames,
        frame_mode=frame_mode,
        frame_ids=frame_ids,
        image_scale=g.get_float("image_scale"),
        distortion=g.get_string("distortion"),
        color_correction=g.get_bool("color_correction"),
        apply_segmentation=g.get_bool("apply_segmentation"),
        fit_target=g.get_string("fit_target"),
        keypoint_order=order,
        fit_cache_dir=cache,
        fit_settings=settings,
        fit_policy=g.get_string("fit_policy"),
        mano_dir=d.get_string("mano_dir") or None,
        scan_crop_radius=g.get_float("scan_crop_radius"),
        log=log,
        warn=warn,
    )
