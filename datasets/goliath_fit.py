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

FIT_POLICIES = ("error", "warn", "drop")
CACHE_VERSION = 2  # 2: one shape per capture, quality measures per frame
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


class GoliathFitError(InputError):
    """The MANO fit of some frames failed its quality check (``fit_policy = error``); the message names the
    frames, the checks and their values, and how to proceed."""


def fit_settings(settings=None):
    """``utils.geometry.mano_fit.FitSettings`` from None (the defaults of :func:`default_settings`), a dict of
    its fields or a FitSettings. One shape per capture: ``share_shape = False`` is refused."""
    import dataclasses

    from utils.geometry.mano_fit import FitSettings

    if settings is None:
        settings = default_settings()
    if isinstance(settings, dict):
        settings = FitSettings(**settings)
    if not isinstance(settings, FitSettings):
        raise TypeError(f"fit settings must be a FitSettings or a dict, got {type(settings).__name__}")
    if not settings.share_shape:
        raise InputError(
            "Goliath MANO fits use one shape per capture (docs/mano_fit.md, 'One shape per capture'): "
            "share_shape = False is not supported here"
        )
    return dataclasses.replace(settings, share_shape=True)  # a copy


def _settings_key(settings) -> dict:
    """The fit settings that decide the fitted parameters (the cache key): every field but the quality
    check limits, which are applied to the cached measures at each read (changing one does not fit again)."""
    import dataclasses

    from utils.geometry.mano_fit import CHECKS

    return {k: v for k, v in dataclasses.asdict(settings).items() if k not in CHECKS.values()}


def cache_path(cache_dir, capture_dir, target: str, keypoint_order, hand_model, settings) -> str:
    """``<cache_dir>/mano_fit_<capture>_<hash>.npz``: one file per capture and fit configuration."""
    spec = {
        "version": CACHE_VERSION,
        "target": target,
        "keypoints": None if keypoint_order is None else keypoint_rows(keypoint_order),
        "model": _model_id(hand_model),
        "settings": _settings_key(fit_settings(settings)),
    }
    digest = hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]
    name = os.path.basename(os.path.normpath(os.fspath(capture_dir)))
    return os.path.join(os.fspath(cache_dir), f"mano_fit_{name}_{digest}.npz")


def _load_cache(path) -> tuple[dict, dict | None]:
    """Frame entries ``{frame: {pose, trans, converged, residual_mm, quality, rescue}}`` and the capture's
    shape ``{"betas": (10,), "frames": [...]}`` (None before the first fit)."""
    if not path or not os.path.isfile(path):
        return {}, None
    with np.load(path, allow_pickle=False) as data:
        records = json.loads(str(data["records"]))
        entries = {
            int(f): {
                "pose": data["pose"][i],
                "trans": data["trans"][i],
                "converged": bool(data["converged"][i]),
                **records[str(int(f))],
            }
            for i, f in enumerate(data["frame_ids"])
        }
        shape = {"betas": data["shape"], "frames": [int(f) for f in data["shape_frames"]]}
    return entries, shape


def _save_cache(path, entries: dict, shape: dict) -> None:
    from utils.checkpoint import atomic_write

    frames = sorted(entries)
    records = {str(f): {k: entries[f][k] for k in ("residual_mm", "quality", "rescue")} for f in frames}

    def write(handle):
        np.savez(
            handle,
            frame_ids=np.asarray(frames, dtype=np.int64),
            pose=np.stack([entries[f]["pose"] for f in frames]).astype(np.float32),
            trans=np.stack([entries[f]["trans"] for f in frames]).astype(np.float32),
            converged=np.asarray([entries[f]["converged"] for f in frames], dtype=bool),
            shape=np.asarray(shape["betas"], dtype=np.float32),
            shape_frames=np.asarray(shape["frames"], dtype=np.int64),
            records=np.asarray(json.dumps(records)),
        )

    atomic_write(path, write)


def default_settings(target: str | None = None) -> dict:
    """Fit settings used when none are given: the fitter's defaults with a Geman-McClure loss on the surface
    distances (scale 5 mm), so that what MANO does not model (the forearm in the scans and, it is unconfirmed
    whether, in the registrations; stray scan geometry) stops pulling once it is far from the hand."""
    return {"robust": "geman_mcclure", "robust_scale_mm": 5.0}


def _fit(hand_model, points, faces, joints, settings, shape=None):
    """``fit_mano`` on the frames' targets; ``shape`` (10,): the capture's shape, held."""
    from utils.geometry.mano_fit import fit_mano

    return fit_mano(
        hand_model,
        target_verts=None if points is None else torch.as_tensor(points, dtype=torch.float32),
        target_faces=None if faces is None else torch.as_tensor(faces, dtype=torch.long),
        target_joints=None if joints is None else torch.as_tensor(joints, dtype=torch.float32),
        init=None if shape is None else {"shape": torch.as_tensor(shape, dtype=torch.float32)},
        settings=settings,
        fix_shape=shape is not None,
    )


def describe_checks(failed: dict) -> str:
    """``part_target_p95 index 25.6 mm > 8 mm, ...`` for a frame's failed checks."""
    return ", ".join(f"{name} {c['value']:.1f} mm > {c['limit']:g} mm" for name, c in failed.items())


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
    """MANO parameters of the given frames, fitted (or read from the cache), and their quality.

    One shape per capture: the first fit of a capture (registrations: all its frames in one call; scans:
    its first frame, then the others one by one) fits the shape, the cache keeps it, and every later frame
    is fitted with it held, so the training frames and the evaluation frames (read by a second call, or a
    later ``--eval`` run on the same cache) share one shape. Each new frame's residual and quality measures
    (``utils.geometry.mano_fit.quality_measures``) are computed here, whatever the fitter, and cached; the
    checks' limits (``settings``) are applied at every read.

    Returns:
        dict with ``pose (F,48)``, ``shape (F,10)``, ``trans (F,3)`` float32 numpy (world, metres,
        ``flat_hand_mean=False``) in ``frame_ids`` order and ``report``: ``target``, ``keypoints`` (used or
        not), ``residual_mm`` (means over the frames, per residual kind), ``per_frame_mm``
        ``{frame: {kind: mm}}``, ``quality`` ``{frame: measures}``, ``failed_frames``
        ``{frame: {check: {value, limit}}}``, ``rescued`` ``{frame: start kept}`` (frames whose first fit
        failed and another start was kept), ``rescue`` ``{frame: record}`` (every start tried, see
        ``utils.geometry.mano_fit``), ``shape_frames`` (the
        frames the shape was fitted with), ``converged`` (all frames), ``fitted`` / ``from_cache`` frame
        counts and ``cache`` (the file, or None).
    """
    from utils.geometry.mano_fit import failed_checks, quality_measures

    log = log or (lambda *args, **kwargs: None)
    frame_ids = [int(f) for f in frame_ids]
    settings = fit_settings(settings)
    path = (
        cache_path(cache_dir, capture_dir, target, keypoint_order, hand_model, settings)
        if cache_dir
        else None
    )
    entries, shape = _load_cache(path)
    missing = [f for f in frame_ids if f not in entries]
    if missing:
        held = "" if shape is None else f" with the capture's shape (fitted on frames {shape['frames']})"
        log(
            f"fitting MANO to the {target} of {len(missing)} frame(s) of "
            f"{os.path.basename(str(capture_dir))}{held}"
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
                fit = _fit(
                    hand_model,
                    pts,
                    tri,
                    None if joints is None else joints[idx],
                    settings,
                    None if shape is None else shape["betas"],
                )
            if shape is None:
                betas = fit.shape.reshape(-1, 10)[0].detach().float().numpy()
                shape = {"betas": betas, "frames": [missing[i] for i in idx]}
            betas = torch.as_tensor(shape["betas"]).float()
            with torch.no_grad():
                verts, mano_joints = hand_model.forward(
                    fit.pose.reshape(-1, 48).float(),
                    betas.expand(len(idx), 10),
                    fit.trans.reshape(-1, 3).float(),
                )
            fit_joints = torch.cat([mano_joints, verts[:, list(MANO_FINGERTIP_VERTEX_IDS.values())]], dim=1)
            converged = bool(fit.report.get("converged", True)) if isinstance(fit.report, dict) else True
            rescue = fit.report.get("rescue", {}) if isinstance(fit.report, dict) else {}
            quality = quality_measures(
                hand_model,
                verts,
                mano_joints,
                [targets["points"][i] for i in idx],
                [targets["faces"][i] for i in idx],
            )
            for k, i in enumerate(idx):
                entries[missing[i]] = {
                    "pose": fit.pose.reshape(-1, 48)[k].detach().numpy(),
                    "trans": fit.trans.reshape(-1, 3)[k].detach().numpy(),
                    "converged": converged,
                    "residual_mm": residuals_mm(
                        verts[k],
                        hand_model.faces,
                        targets["points"][i],
                        targets["faces"][i],
                        fit_joints[k] if joints is not None else None,
                        joints[i] if joints is not None else None,
                    ),
                    "quality": quality[k],
                    "rescue": rescue.get(str(k)),
                }
        if path:
            _save_cache(path, entries, shape)
    rows = [entries[f] for f in frame_ids]
    per_frame = {f: entries[f]["residual_mm"] for f in frame_ids}
    kinds = sorted({k for r in per_frame.values() for k in r})
    failed = {f: failed_checks(entries[f]["quality"], settings) for f in frame_ids}
    report = {
        "target": target,
        "keypoints": keypoint_order is not None,
        "residual_mm": {k: float(np.mean([r[k] for r in per_frame.values() if k in r])) for k in kinds},
        "per_frame_mm": per_frame,
        "quality": {f: entries[f]["quality"] for f in frame_ids},
        "failed_frames": {f: checks for f, checks in failed.items() if checks},
        "rescued": {
            f: entries[f]["rescue"]["kept"]
            for f in frame_ids
            if entries[f]["rescue"] and entries[f]["rescue"]["kept"] != "fit"
        },
        "rescue": {f: entries[f]["rescue"] for f in frame_ids if entries[f]["rescue"]},
        "shape_frames": list(shape["frames"]),
        "converged": all(r["converged"] for r in rows),
        "fitted": len(missing),
        "from_cache": len(frame_ids) - len(missing),
        "cache": path,
    }
    betas = np.asarray(shape["betas"], dtype=np.float32)
    return {
        "pose": np.stack([r["pose"] for r in rows]).astype(np.float32),
        "shape": np.repeat(betas[None], len(rows), axis=0),
        "trans": np.stack([r["trans"] for r in rows]).astype(np.float32),
        "report": report,
    }


# ----------------------------------------------------------------------------------------------
# What a failed quality check does, and the settings from the config
# ----------------------------------------------------------------------------------------------
def warning_callable(log, warn):
    """Where the reader's warnings go: ``warn``; else the ``warning`` method of ``log``'s owner (stage 3
    passes ``RunLogger.info``); else ``log`` with a ``WARNING:`` prefix; else Python's ``logging``."""
    if warn is not None:
        return warn
    owner = getattr(log, "__self__", None)  # stage 3 passes RunLogger.info: warn through its warning
    if callable(getattr(owner, "warning", None)):
        return owner.warning
    if log is not None:
        return lambda message: log(f"WARNING: {message}")
    import logging

    return logging.getLogger(__name__).warning


def apply_fit_policy(chosen: list, fit: dict, policy: str, report: dict, name: str, warn):
    """Log every frame whose MANO fit failed its quality check, then stop (``error``), keep it (``warn``)
    or leave it out (``drop``, recorded in ``report["skipped_frames"]``). Returns the frames and the fit."""
    failed = fit["report"]["failed_frames"]
    report["mano_fit"]["policy"] = policy
    for frame, checks in failed.items():
        warn(
            f"{name}: the MANO fit of frame {frame} failed its quality check: {describe_checks(checks)} "
            f"(fit_policy = {policy})"
        )
    if not failed or policy == "warn":
        return chosen, fit
    if policy == "error":
        lines = "\n".join(f"  frame {frame}: {describe_checks(checks)}" for frame, checks in failed.items())
        target = fit["report"]["target"]
        raise GoliathFitError(
            f"{name}: the MANO fit of {len(failed)} of {len(chosen)} frame(s) failed its quality check "
            f"(fit target: {target}, keypoints {'used' if fit['report']['keypoints'] else 'not used'}):\n"
            f"{lines}\n"
            "A finger was fitted onto another finger's surface, or the hand turned, after every start "
            "(docs/mano_fit.md, 'Quality check'). To proceed: give the 3D keypoints "
            "(data.goliath.keypoint_order), or, if the fit is right and the limits too strict for this data, "
            "raise them (data.goliath.fit.max_target_p99_mm, max_part_target_p95_mm, max_part_model_p95_mm, "
            "max_fingertip_mm; 0 turns a check off), or set data.goliath.fit_policy = drop (leave these "
            "frames out) or warn (keep them). The fits are cached "
            f"({fit['report']['cache'] or 'no cache'}): the policy and the limits apply without fitting again."
        )
    keep = [i for i, f in enumerate(chosen) if f not in failed]
    for frame, checks in failed.items():
        reason = f"MANO fit failed its quality check ({describe_checks(checks)})"
        report["skipped_frames"].setdefault(reason, []).append(frame)
    if not keep:
        raise GoliathFitError(
            f"{name}: fit_policy = drop left no frame: the MANO fit of every selected frame {chosen} failed its "
            "quality check (see the warnings above); give the 3D keypoints (data.goliath.keypoint_order) or "
            "raise the limits (data.goliath.fit.max_*_mm)"
        )
    fit = dict(fit, **{k: fit[k][keep] for k in ("pose", "shape", "trans")})
    return [chosen[i] for i in keep], fit


# data.goliath.fit keys that are not FitSettings fields of the same name: the stage iteration counts.
_ITERATION_KEYS = ("iterations_global", "iterations_pose", "iterations_all")


def fit_settings_from_config(section):
    """``utils.geometry.mano_fit.FitSettings`` from the ``data.goliath.fit`` section: each key is the field of
    the same name, ``iterations_global``/``_pose``/``_all`` the three stages' iteration counts."""
    import dataclasses

    from utils.geometry.mano_fit import FitSettings

    fields = {f.name for f in dataclasses.fields(FitSettings)}
    values = {}
    for key, value in section.items():
        if key in _ITERATION_KEYS:
            continue
        if key not in fields:
            raise InputError(f"data.goliath.fit.{key}: not a fit setting; expected one of {sorted(fields)}")
        values[key] = value
    values["iterations"] = tuple(int(section.get(k)) for k in _ITERATION_KEYS)
    try:
        return fit_settings(values)
    except InputError as err:
        raise InputError(f"data.goliath.fit: {err}") from None
