"""MANO parameters for Goliath dome hand captures, fitted to their registrations or scans and 3D keypoints.

The dome captures carry no MANO parameters (goliath issue #21: Meta's own hand model and topology).
:func:`fit_capture_mano` fits the project's hand model (``utils.geometry.mano_fit.fit_mano``) to each
frame's registration vertices (a point set in Meta's topology, so no correspondence) or scan mesh, plus the
3D keypoints when their joint order is given, and keeps the result in ``cache_dir`` keyed by the capture,
the target, the hand model and the fit settings, so a second run (or the evaluation of the same run) reads
it back and only frames not fitted before are fitted. Every frame's residual is measured here, the same
way whatever fitter produced it: mean distance (mm) from the target points to the MANO surface and from
the MANO vertices to the target, and the keypoint error when keypoints are used.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import torch

from datasets.goliath_files import MM, GoliathFormatError, read_ply_bytes, read_zip_member, target_member
from utils.errors import InputError
from utils.geometry.mano import MANO_FINGERTIP_VERTEX_IDS

CACHE_VERSION = 1
KEYPOINT_KEYS = ("keypoints", "keypoints_3d", "points", "joints")


def keypoint_rows(keypoint_order) -> list:
    """Row of the keypoint file for each of the 21 ``datasets.capture.hand_joints`` joints.

    ``"interhand"``: the file lists InterHand2.6M's 21 joints of one hand in its order (thumb tip..., wrist
    last); a sequence of 21 ints is taken as given.
    """
    if isinstance(keypoint_order, str):
        if keypoint_order != "interhand":
            raise InputError(f"keypoint_order must be 'interhand' or 21 row indices, got {keypoint_order!r}")
        from datasets.interhand import INTERHAND_FROM_MANO

        rows = []
        for j in range(21):
            want = j if j < 16 else ("tip", j - 16)
            rows.append(INTERHAND_FROM_MANO.index(want))
        return rows
    rows = [int(r) for r in keypoint_order]
    if len(rows) != 21:
        raise InputError(f"keypoint_order needs 21 row indices (hand_joints order), got {len(rows)}")
    return rows


def parse_keypoints(data: bytes, what: str, rows: list) -> np.ndarray:
    """(21, 3) keypoints in millimetres from one keypoint JSON, reordered by ``rows``.

    Accepted (the real schema is undocumented): a list of rows ``[x, y, z]`` or ``[x, y, z, score]``, or a
    dict holding such a list under one of ``keypoints``, ``keypoints_3d``, ``points``, ``joints``. Rows
    with a score <= 0 become NaN (the fit ignores them); fewer than 6 valid joints is an error.
    """
    try:
        obj = json.loads(data)
    except ValueError as err:
        raise GoliathFormatError(f"{what}: not JSON ({err})") from None
    if isinstance(obj, dict):
        found = [k for k in KEYPOINT_KEYS if isinstance(obj.get(k), list)]
        if len(found) != 1:
            raise GoliathFormatError(
                f"{what}: keypoint schema unconfirmed; expected a list of [x, y, z(, score)] "
                f"rows or a dict with one of {KEYPOINT_KEYS}, got keys {sorted(obj)}"
            )
        obj = obj[found[0]]
    try:
        table = np.asarray(obj, dtype=np.float64)
    except (TypeError, ValueError):
        table = None
    if table is None or table.ndim != 2 or table.shape[1] < 3:
        raise GoliathFormatError(f"{what}: expected rows of [x, y, z] or [x, y, z, score] (mm)")
    if max(rows) >= len(table):
        raise GoliathFormatError(
            f"{what}: keypoint_order uses row {max(rows)} but the file has {len(table)} rows"
        )
    picked = table[rows, :3].copy()
    if table.shape[1] >= 4:
        picked[table[rows, 3] <= 0] = np.nan
    if np.isfinite(picked).all(axis=1).sum() < 6:
        raise GoliathFormatError(
            f"{what}: fewer than 6 of the 21 keypoints used are valid (score > 0, finite)"
        )
    return picked


def _check_world_frame(points_m: np.ndarray, cameras, what: str) -> None:
    """A target read as millimetres must be hand-sized (3 cm to 2 m across) and its centroid seen (in
    front, inside the image) by most cameras."""
    points_m = points_m[np.isfinite(points_m).all(axis=1)]
    extent = float(np.linalg.norm(points_m.max(0) - points_m.min(0)))
    if not 0.03 <= extent <= 2.0:
        raise GoliathFormatError(
            f"{what}: the points span {extent / MM:.4g} units, read as millimetres that is "
            f"{extent:.4g} m: expected a hand (and forearm) in millimetres"
        )
    centroid = torch.as_tensor(points_m.mean(0), dtype=cameras.dtype)[None, None].expand(len(cameras), 1, 3)
    uv, z = cameras.project(centroid)
    H, W = cameras.image_size
    inside = (z[:, 0] > 0) & (uv[:, 0, 0] >= 0) & (uv[:, 0, 0] <= W) & (uv[:, 0, 1] >= 0) & (uv[:, 0, 1] <= H)
    if int(inside.sum()) * 2 < len(cameras):
        raise GoliathFormatError(
            f"{what}: the centroid {np.round(points_m.mean(0) / MM, 1).tolist()} (read as mm) is inside the image "
            f"of {int(inside.sum())} of {len(cameras)} cameras: expected millimetres in the calibration's world frame"
        )


def load_targets(capture_dir, frame_ids, target: str, cameras, keypoint_order=None) -> dict:
    """Fit targets in metres: ``points`` (list of (N_f, 3)), ``faces`` (list of (M_f, 3) or None) and
    ``joints`` ((F, 21, 3) or None)."""
    points, faces, joints = [], [], []
    rows = keypoint_rows(keypoint_order) if keypoint_order is not None else None
    for f in frame_ids:
        zpath, member = target_member(capture_dir, target, f)
        what = f"{zpath}:{member}"
        verts, tri = read_ply_bytes(read_zip_member(zpath, member), what)
        if target == "scan" and len(tri) == 0:
            raise GoliathFormatError(f"{what}: expected a scan mesh with faces")
        verts = verts * MM
        _check_world_frame(verts, cameras, what)
        points.append(verts)
        faces.append(tri if target == "scan" else None)
        if rows is not None:
            kpath, kmember = target_member(capture_dir, "keypoints", f)
            kwhat = f"{kpath}:{kmember}"
            kp = parse_keypoints(read_zip_member(kpath, kmember), kwhat, rows) * MM
            _check_world_frame(kp, cameras, kwhat)
            joints.append(kp)
    return {"points": points, "faces": faces, "joints": np.stack(joints) if rows is not None else None}


def residuals_mm(
    verts: torch.Tensor,
    faces_mano: torch.Tensor,
    points: np.ndarray,
    faces,
    joints_fit=None,
    joints_target=None,
) -> dict:
    """Per-frame residual of a fit, millimetres: target -> MANO surface, MANO vertices -> target, keypoints."""
    from scipy.spatial import cKDTree

    from utils.metrics.geometry import point_to_surface_distance

    v = verts.detach().double()
    pts = torch.as_tensor(points, dtype=torch.float64)
    out = {"target_to_mano": float(point_to_surface_distance(pts, v, faces_mano).mean()) / MM}
    if faces is not None:
        d = point_to_surface_distance(v, pts, torch.as_tensor(faces, dtype=torch.long))
    else:
        d = torch.as_tensor(cKDTree(points).query(v.numpy())[0])
    out["mano_to_target"] = float(d.mean()) / MM
    if joints_target is not None:
        err = np.linalg.norm(joints_fit.detach().double().numpy() - joints_target, axis=-1)
        out["keypoints"] = float(np.nanmean(err)) / MM  # NaN: joints the file marks invalid
    return out


def _model_id(hand_model) -> dict:
    path = getattr(hand_model, "source_path", None)
    ident = {"side": getattr(hand_model, "side", None), "path": os.path.basename(str(path)) if path else None}
    # Identify the model by content, not location: rest joints and template summarise it.
    ident["template"] = float(hand_model.v_template.double().abs().sum())
    return ident


def _settings_dict(settings) -> dict:
    if settings is None:
        return {}
    if isinstance(settings, dict):
        return dict(settings)
    import dataclasses

    return dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(vars(settings))


def cache_path(cache_dir, capture_dir, target: str, keypoint_order, hand_model, settings) -> str:
    """``<cache_dir>/mano_fit_<capture>_<hash>.npz``: one file per capture and fit configuration."""
    spec = {
        "version": CACHE_VERSION,
        "target": target,
        "keypoints": None if keypoint_order is None else keypoint_rows(keypoint_order),
        "model": _model_id(hand_model),
        "settings": _settings_dict(settings),
    }
    digest = hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]
    name = os.path.basename(os.path.normpath(os.fspath(capture_dir)))
    return os.path.join(os.fspath(cache_dir), f"mano_fit_{name}_{digest}.npz")


def _load_cache(path) -> dict:
    if not path or not os.path.isfile(path):
        return {}
    with np.load(path, allow_pickle=False) as data:
        res = json.loads(str(data["residuals"]))
        return {
            int(f): (
                data["pose"][i],
                data["shape"][i],
                data["trans"][i],
                res[str(int(f))],
                bool(data["converged"][i]),
            )
            for i, f in enumerate(data["frame_ids"])
        }


def _save_cache(path, entries: dict) -> None:
    from utils.checkpoint import atomic_write

    frames = sorted(entries)

    def write(handle):
        np.savez(
            handle,
            frame_ids=np.asarray(frames, dtype=np.int64),
            pose=np.stack([entries[f][0] for f in frames]).astype(np.float32),
            shape=np.stack([entries[f][1] for f in frames]).astype(np.float32),
            trans=np.stack([entries[f][2] for f in frames]).astype(np.float32),
            converged=np.asarray([entries[f][4] for f in frames], dtype=bool),
            residuals=np.asarray(json.dumps({str(f): entries[f][3] for f in frames})),
        )

    atomic_write(path, write)


def default_settings(target: str) -> dict:
    """Fit settings used when none are given: the fitter's defaults with a Geman-McClure loss on the surface
    distances (scale 5 mm), so that what MANO does not model (the forearm in the scans and, it is unconfirmed
    whether, in the registrations; stray scan geometry) stops pulling once it is far from the hand."""
    return {"robust": "geman_mcclure", "robust_scale_mm": 5.0}


def _fit(hand_model, points, faces, joints, settings):
    from utils.geometry.mano_fit import FitSettings, fit_mano

    if not isinstance(settings, FitSettings):
        settings = FitSettings(**_settings_dict(settings))
    return fit_mano(
        hand_model,
        target_verts=None if points is None else torch.as_tensor(points, dtype=torch.float32),
        target_faces=None if faces is None else torch.as_tensor(faces, dtype=torch.long),
        target_joints=None if joints is None else torch.as_tensor(joints, dtype=torch.float32),
        settings=settings,
    )


def fit_capture_mano(
    capture_dir,
    frame_ids,
    hand_model,
    cameras,
    target: str = "registration",
    keypoint_order=None,
    cache_dir=None,
    settings=None,
    log=None,
) -> dict:
    """MANO parameters of the given frames, fitted (or read from the cache).

    Registration targets of all new frames are fitted in one call (one shape for the subject); scans,
    whose vertex counts differ per frame, one frame per call.

    Returns:
        dict with ``pose (F,48)``, ``shape (F,10)``, ``trans (F,3)`` float32 numpy (world, metres,
        ``flat_hand_mean=False``) in ``frame_ids`` order and ``report``: ``target``, ``keypoints`` (used or
        not), ``residual_mm`` (means over the frames, per residual kind), ``per_frame_mm``
        ``{frame: {kind: mm}}``, ``converged`` (all frames), ``fitted`` / ``from_cache`` frame counts and
        ``cache`` (the file, or None).
    """
    log = log or (lambda *args, **kwargs: None)
    frame_ids = [int(f) for f in frame_ids]
    settings = default_settings(target) if settings is None else settings
    path = (
        cache_path(cache_dir, capture_dir, target, keypoint_order, hand_model, settings)
        if cache_dir
        else None
    )
    entries = _load_cache(path)
    missing = [f for f in frame_ids if f not in entries]
    if missing:
        log(
            f"fitting MANO to the {target} of {len(missing)} frame(s) of {os.path.basename(str(capture_dir))}"
        )
        targets = load_targets(capture_dir, missing, target, cameras, keypoint_order)
        joints = targets["joints"]
        if target == "registration":
            counts = {len(p) for p in targets["points"]}
            if len(counts) != 1:
                raise GoliathFormatError(
                    f"{capture_dir}: registration vertex counts differ between frames "
                    f"({sorted(counts)}): expected one fixed topology"
                )
            groups = [(list(range(len(missing))), np.stack(targets["points"]), None)]
        else:
            groups = [([i], targets["points"][i][None], targets["faces"][i]) for i in range(len(missing))]
        for idx, pts, tri in groups:
            with torch.enable_grad():  # the evaluation reads its frames under no_grad
                fit = _fit(hand_model, pts, tri, None if joints is None else joints[idx], settings)
            with torch.no_grad():
                shape = fit.shape.reshape(-1, 10)
                shape = shape.expand(len(idx), 10) if shape.shape[0] == 1 else shape
                verts, mano_joints = hand_model.forward(
                    fit.pose.reshape(-1, 48).float(), shape.float(), fit.trans.reshape(-1, 3).float()
                )
            fit_joints = torch.cat([mano_joints, verts[:, list(MANO_FINGERTIP_VERTEX_IDS.values())]], dim=1)
            converged = bool(fit.report.get("converged", True)) if isinstance(fit.report, dict) else True
            for k, i in enumerate(idx):
                res = residuals_mm(
                    verts[k],
                    hand_model.faces,
                    targets["points"][i],
                    targets["faces"][i],
                    fit_joints[k] if joints is not None else None,
                    joints[i] if joints is not None else None,
                )
                entries[missing[i]] = (
                    fit.pose.reshape(-1, 48)[k].detach().numpy(),
                    shape[k].detach().numpy(),
                    fit.trans.reshape(-1, 3)[k].detach().numpy(),
                    res,
                    converged,
                )
        if path:
            _save_cache(path, entries)
    rows = [entries[f] for f in frame_ids]
    per_frame = {f: entries[f][3] for f in frame_ids}
    kinds = sorted({k for r in per_frame.values() for k in r})
    report = {
        "target": target,
        "keypoints": keypoint_order is not None,
        "residual_mm": {k: float(np.mean([r[k] for r in per_frame.values() if k in r])) for k in kinds},
        "per_frame_mm": per_frame,
        "converged": all(r[4] for r in rows),
        "fitted": len(missing),
        "from_cache": len(frame_ids) - len(missing),
        "cache": path,
    }
    return {
        "pose": np.stack([r[0] for r in rows]).astype(np.float32),
        "shape": np.stack([r[1] for r in rows]).astype(np.float32),
        "trans": np.stack([r[2] for r in rows]).astype(np.float32),
        "report": report,
    }
