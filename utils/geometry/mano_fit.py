"""Fit the hand model (MANO or the procedural hand) to posed surfaces and/or 3D joints.

:func:`fit_mano` finds, per frame, the pose (global orientation + 45 articulation values), the
translation and the shape (one shape shared by all frames by default) whose posed mesh best
matches the target. The target is a surface (points, with or without faces), 3D joints, or both.

Conventions (those of :class:`utils.geometry.mano.HandModel`): metres, world frame; ``pose (F, 48)``
is exactly what ``HandModel.forward`` takes, i.e. *without* ``pose_mean``: with
``flat_hand_mean=False`` the model adds ``hands_mean``, so a zero articulation is the mean hand and
the pose prior ``|pose[3:]|²`` pulls towards it. Joints: 16 MANO joints, or the 21 of
:func:`datasets.capture.hand_joints` (16 MANO joints, then the fingertip vertices thumb, index,
middle, ring, pinky).

Objective, per frame, lengths in millimetres::

    w_s2t · mean_v ρ(d(v, target)²)         model vertices to the target surface (or nearest points)
  + w_t2s · mean_q ρ(d(q, model surface)²)  target points to the model's triangles
  + w_j   · mean_j |J_j - J*_j|²            joints (NaN target joints are ignored)
  + w_pose · |pose[3:]|² + w_limit · Σ_j relu(|θ_j + mean_j| - max_angle)²
  + w_shape · |β|²                          (once per shape vector)

with ``ρ`` the identity, Huber or Geman-McClure on the distance (scale in mm). Distances are exact
point-to-triangle distances (:mod:`utils.geometry.closest_point`): correspondences are searched
without gradients and the closest point is rebuilt from barycentric weights, which gives the exact
gradient. Schedule: an initial rigid alignment (Kabsch on the palm joints, or centroid + principal
axes of the surface), Adam stages (``global``: orientation + translation; ``pose``: + articulation;
``all``: + shape) and a Levenberg-Marquardt (Gauss-Newton) refinement of everything; convergence is a relative loss change below
``tolerance``. See ``docs/mano_fit.md``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass

import torch

from utils.errors import InputError
from utils.geometry.closest_point import PointCloudSearch
from utils.geometry.mano_fit_solver import (
    _STAGE_PARAMS,
    _TRANS_UNIT,
    _copy_into,
    _Objective,
    _run_adam,
    _run_gauss_newton,
    model_joints,
)

__all__ = ["FitSettings", "ManoFit", "fit_mano", "model_joints"]

ROBUST_LOSSES = ("none", "huber", "geman_mcclure")
STAGES = ("global", "pose", "all")
ALIGN_MODES = ("auto", "joints", "pca", "none")
# Wrist, the four finger bases and the thumb base: almost rigid, so good for the first alignment.
_PALM_JOINTS = (0, 1, 4, 7, 10, 13)


@dataclass
class FitSettings:
    """How :func:`fit_mano` fits (every field has a working default).

    Attributes:
        stages: optimisation stages in order, from ``global`` (orientation + translation), ``pose``
            (+ the 45 articulation values), ``all`` (+ shape; without it the shape stays at ``init``).
        iterations: maximum iterations of each stage (same length as ``stages``).
        optimizer: ``lm`` (Levenberg-Marquardt: Gauss-Newton on exact closest-point
            correspondences, robust losses by reweighting; converges to tight tolerances in tens of
            steps) or ``adam`` (first-order, with the schedule below).
        learning_rate: Adam step at the start of each stage (radians, betas and centimetres), decaying
            exponentially to ``learning_rate_final`` at the stage's last iteration.
        learning_rate_final: see ``learning_rate``.
        refine_iterations: Levenberg-Marquardt steps over every parameter after the stages (for
            ``optimizer = adam``; 0 skips them).
        weight_surface_to_target: model vertices -> target surface term (0 for partial scans, which
            do not cover the whole hand).
        weight_target_to_surface: target points -> model surface term.
        weight_joints: joint term.
        weight_pose_prior: on ``|pose[3:]|²`` (radians²; the articulation relative to the model's
            mean pose), in the loss unit mm².
        weight_shape_prior: on ``|shape|²``.
        weight_angle_limit: soft joint-angle limit: ``Σ relu(|θ_j + mean_j| - max_joint_angle)²``
            over the 15 finger joints (0 disables it).
        max_joint_angle: radians, see ``weight_angle_limit``.
        robust: ``none`` (squared distance), ``huber`` or ``geman_mcclure`` on the surface distances.
        robust_scale_mm: the robust loss's scale: distances well below it count as squared,
            Huber grows linearly beyond it, Geman-McClure saturates at ``scale²``.
        robust_anneal: the scale of stage ``k`` of ``n`` is ``robust_scale_mm * robust_anneal **
            (n - 1 - k)`` (wide first, so a rough start is not mistaken for outliers; 1 disables).
        share_shape: one shape for all frames (the same hand) or one per frame.
        tolerance: converged when the relative loss change of a step is below this.
        align: first alignment: ``auto`` (skipped when ``init`` gives pose and trans, else joints
            if given, else the surface), ``joints`` (Kabsch on the palm joints), ``pca`` (centroid
            and principal axes of the surface points; the best of the four axis sign choices),
            ``none`` (start from ``init``).
        align_iterations: steps of the short rigid fit (``optimizer``) that ranks several alignment
            candidates (the four principal-axis choices of ``pca``); the best is kept per frame.
        max_target_points: target points used by the target -> model term per frame (a fixed
            seeded subset when there are more; the report uses all).
        exact_search: exact correspondences in the Adam stages too (always exact in the
            refinement and the report); False takes the best of 8 candidate triangles.
        seed: for the point subset.
        device: where to fit (None: the hand model's device).
        dtype: ``float64`` (tight convergence; the model is copied) or ``float32``.
    """

    stages: tuple = ("global", "pose", "all")
    iterations: tuple = (15, 30, 40)
    optimizer: str = "lm"
    learning_rate: float = 0.03
    learning_rate_final: float = 0.003
    refine_iterations: int = 0
    weight_surface_to_target: float = 1.0
    weight_target_to_surface: float = 1.0
    weight_joints: float = 1.0
    weight_pose_prior: float = 1e-3
    weight_shape_prior: float = 1e-3
    weight_angle_limit: float = 10.0
    max_joint_angle: float = 2.2
    robust: str = "none"
    robust_scale_mm: float = 5.0
    robust_anneal: float = 3.0
    share_shape: bool = True
    tolerance: float = 1e-6
    align: str = "auto"
    align_iterations: int = 3
    max_target_points: int = 5000
    exact_search: bool = False
    seed: int = 0
    device: str | None = None
    dtype: str = "float64"

    def __post_init__(self):
        self.stages, self.iterations = tuple(self.stages), tuple(int(n) for n in self.iterations)
        bad = [s for s in self.stages if s not in STAGES]
        if bad:
            raise InputError(f"FitSettings.stages: unknown stage(s) {bad}; choose from {STAGES}")
        if len(self.iterations) != len(self.stages):
            raise InputError(
                f"FitSettings.iterations must give one count per stage: stages {self.stages}, "
                f"iterations {self.iterations}"
            )
        if self.robust not in ROBUST_LOSSES:
            raise InputError(f"FitSettings.robust must be one of {ROBUST_LOSSES}, got {self.robust!r}")
        if self.align not in ALIGN_MODES:
            raise InputError(f"FitSettings.align must be one of {ALIGN_MODES}, got {self.align!r}")
        if self.optimizer not in ("lm", "adam"):
            raise InputError(f"FitSettings.optimizer must be 'lm' or 'adam', got {self.optimizer!r}")
        if self.dtype not in ("float64", "float32"):
            raise InputError(f"FitSettings.dtype must be 'float64' or 'float32', got {self.dtype!r}")
        for name in (
            "weight_surface_to_target",
            "weight_target_to_surface",
            "weight_joints",
            "weight_pose_prior",
            "weight_shape_prior",
            "weight_angle_limit",
            "refine_iterations",
            "tolerance",
        ):
            if not getattr(self, name) >= 0:
                raise InputError(f"FitSettings.{name} must be >= 0, got {getattr(self, name)}")
        if not self.robust_anneal >= 1:
            raise InputError(f"FitSettings.robust_anneal must be >= 1, got {self.robust_anneal}")
        for name in ("learning_rate", "learning_rate_final", "robust_scale_mm", "max_target_points"):
            if not getattr(self, name) > 0:
                raise InputError(f"FitSettings.{name} must be > 0, got {getattr(self, name)}")


@dataclass
class ManoFit:
    """The result of :func:`fit_mano` (tensors detached, on the hand model's device and dtype).

    Attributes:
        pose: ``(F, 48)`` axis-angle, radians, as ``HandModel.forward`` takes it (without ``pose_mean``).
        shape: ``(10,)`` when shared, else ``(F, 10)``.
        trans: ``(F, 3)`` metres.
        verts: ``(F, V, 3)`` the fitted mesh, world, metres.
        joints: ``(F, 21, 3)`` 16 MANO joints + 5 fingertips (``datasets.capture.hand_joints`` order).
        report: iterations, convergence, residuals in mm overall and per frame (see ``docs/mano_fit.md``).
    """

    pose: torch.Tensor
    shape: torch.Tensor
    trans: torch.Tensor
    verts: torch.Tensor
    joints: torch.Tensor
    report: dict


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------
def _shape_str(x) -> str:
    return str(tuple(x.shape)) if torch.is_tensor(x) else type(x).__name__


def _as_tensor(name: str, value, dtype, device) -> torch.Tensor:
    if not torch.is_tensor(value):
        try:
            value = torch.as_tensor(value)
        except Exception as err:
            raise TypeError(f"fit_mano: {name} must be a tensor, got {type(value).__name__}") from err
    if not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"fit_mano: {name} must hold numbers, got dtype {value.dtype}")
    return value.detach().to(device=device, dtype=dtype)


def _check_inputs(hand_model, target_verts, target_faces, target_joints, init, settings, dtype, device):
    """Validate and convert; returns (verts, faces, joints, init dict, num_frames)."""
    if target_verts is None and target_joints is None:
        raise ValueError(
            "fit_mano: give target_verts (F, N, 3), target_joints (F, 21, 3) or both; got neither"
        )
    frames = {}
    if target_verts is not None:
        target_verts = _as_tensor("target_verts", target_verts, dtype, device)
        if target_verts.dim() != 3 or target_verts.shape[-1] != 3 or target_verts.shape[1] < 1:
            raise InputError(
                f"fit_mano: target_verts must be (F, N, 3) points in metres (one row of N >= 1 "
                f"points per frame), got {_shape_str(target_verts)}"
            )
        if not torch.isfinite(target_verts).all():
            raise InputError("fit_mano: target_verts holds NaN or inf values")
        frames["target_verts"] = target_verts.shape[0]
    if target_faces is not None:
        if target_verts is None:
            raise ValueError("fit_mano: target_faces given without target_verts")
        target_faces = torch.as_tensor(target_faces)
        if target_faces.dim() != 2 or target_faces.shape[1] != 3 or target_faces.shape[0] < 1:
            raise InputError(
                f"fit_mano: target_faces must be (M, 3) vertex indices, got {_shape_str(target_faces)}"
            )
        if target_faces.is_floating_point():
            raise TypeError(f"fit_mano: target_faces must be integer indices, got dtype {target_faces.dtype}")
        target_faces = target_faces.long().cpu()
        num = target_verts.shape[1]
        if int(target_faces.min()) < 0 or int(target_faces.max()) >= num:
            raise InputError(
                f"fit_mano: target_faces index vertices {int(target_faces.min())}..{int(target_faces.max())} "
                f"but target_verts has N = {num} points per frame"
            )
    if target_joints is not None:
        target_joints = _as_tensor("target_joints", target_joints, dtype, device)
        if target_joints.dim() != 3 or target_joints.shape[1:] not in ((21, 3), (16, 3)):
            raise InputError(
                f"fit_mano: target_joints must be (F, 21, 3) (16 MANO joints + 5 fingertips, "
                f"datasets.capture.hand_joints order) or (F, 16, 3), got {_shape_str(target_joints)}"
            )
        if torch.isinf(target_joints).any():
            raise InputError("fit_mano: target_joints holds inf values (use NaN for missing joints)")
        if not torch.isfinite(target_joints).all(-1).any(-1).all():
            raise InputError("fit_mano: a frame of target_joints has no finite joint")
        frames["target_joints"] = target_joints.shape[0]
    if len(set(frames.values())) > 1:
        raise InputError(
            "fit_mano: frame counts differ: " + ", ".join(f"{k} has F = {v}" for k, v in frames.items())
        )
    num_frames = next(iter(frames.values()))
    if num_frames < 1:
        raise InputError("fit_mano: the targets have no frame (F = 0)")

    betas = hand_model.num_betas
    out = {}
    if init is not None:
        if not isinstance(init, dict):
            raise TypeError(f"fit_mano: init must be a dict with pose/shape/trans, got {type(init).__name__}")
        unknown = sorted(set(init) - {"pose", "shape", "trans"})
        if unknown:
            raise InputError(f"fit_mano: init has unknown key(s) {unknown}; expected pose, shape, trans")
        expected = {
            "pose": [(num_frames, 48), (48,)],
            "shape": [(betas,), (num_frames, betas)],
            "trans": [(num_frames, 3), (3,)],
        }
        for key, value in init.items():
            if value is None:
                continue
            value = _as_tensor(f"init['{key}']", value, dtype, device)
            if tuple(value.shape) not in expected[key]:
                raise InputError(
                    f"fit_mano: init['{key}'] must be "
                    + " or ".join(map(str, expected[key]))
                    + f" (F = {num_frames}), got {_shape_str(value)}"
                )
            out[key] = value
    return target_verts, target_faces, target_joints, out, num_frames


# ----------------------------------------------------------------------------------------------
# Alignment
# ----------------------------------------------------------------------------------------------
def _kabsch(source, target) -> torch.Tensor:
    """Rotation R (3,3) minimising Σ |R (s - s̄) - (t - t̄)|² (float64)."""
    s, t = source - source.mean(0), target - target.mean(0)
    u, _, vh = torch.linalg.svd(t.T @ s)
    d = torch.sign(torch.det(u @ vh))
    return u @ torch.diag(torch.stack([torch.ones_like(d), torch.ones_like(d), d])) @ vh


def _pca_rotations(source, target):
    """The four proper rotations taking the principal axes of ``source`` onto those of ``target``."""

    def axes(x):
        _, _, vh = torch.linalg.svd(x - x.mean(0), full_matrices=False)
        return vh.T  # columns: principal axes, largest variance first

    a_s, a_t = axes(source), axes(target)
    out = []
    for signs in ((1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)):
        flipped = a_t * torch.tensor(signs, dtype=a_t.dtype)
        rot = flipped @ a_s.T
        if torch.det(rot) < 0:
            rot = flipped * torch.tensor([1, 1, -1], dtype=a_t.dtype) @ a_s.T
        out.append(rot)
    return out


def _rotvec(matrix: torch.Tensor) -> torch.Tensor:
    from scipy.spatial.transform import Rotation

    return torch.as_tensor(Rotation.from_matrix(matrix.detach().cpu().double().numpy()).as_rotvec())


def _rotmat(rotvec: torch.Tensor) -> torch.Tensor:
    from scipy.spatial.transform import Rotation

    return torch.as_tensor(Rotation.from_rotvec(rotvec.detach().cpu().double().numpy()).as_matrix())


def _alignment_candidates(params, targets, mode, forward):
    """Rigid starting guesses per frame: a list (one per frame) of ``(orient (3,), trans (3,))``
    candidates (translation in the optimiser's unit), best first. Joints give one (Kabsch on the
    palm joints); a surface gives four (principal axes matched with each proper sign choice)."""
    with torch.no_grad():
        verts, joints = forward(params, zero_trans=True)
    out = []
    for f in range(params["orient"].shape[0]):
        old_rot = _rotmat(params["orient"][f])
        root = joints[f, 0].detach().cpu().double()
        if mode == "joints":
            tj = targets["joints"][f].detach().cpu().double()
            mj = joints[f, : tj.shape[0]].detach().cpu().double()
            valid = torch.isfinite(tj).all(-1)
            palm = torch.zeros_like(valid)
            palm[list(_PALM_JOINTS)] = True
            use = valid & palm if int((valid & palm).sum()) >= 3 else valid
            # With fewer than 3 joints only the centroid moves.
            rots = [_kabsch(mj[use], tj[use]) if int(use.sum()) >= 3 else torch.eye(3, dtype=torch.float64)]
            src_centre, dst_centre = mj[use].mean(0), tj[use].mean(0)
        else:
            tp = targets["points_all"][f].detach().cpu().double()
            mv = verts[f].detach().cpu().double()
            src_centre, dst_centre = mv.mean(0), tp.mean(0)
            target_tree = PointCloudSearch(tp)
            scored = []
            for rot in _pca_rotations(mv, tp):
                moved = (mv - src_centre) @ rot.T + dst_centre
                scored.append(
                    (
                        float(
                            target_tree.query(moved)[1].mean() + PointCloudSearch(moved).query(tp)[1].mean()
                        ),
                        len(scored),
                        rot,
                    )
                )
            rots = [rot for _, _, rot in sorted(scored)]
        candidates = []
        for rot in rots:
            # The global rotation turns the hand about its root joint J0: a model point at the current
            # orientation is R_old (x0 - J0) + J0, after the alignment R_new (x0 - J0) + J0 + trans;
            # trans puts the aligned source centre on the target centre.
            new_rot = rot @ old_rot
            src0 = old_rot.T @ (src_centre - root)
            trans = dst_centre - (new_rot @ src0 + root)
            candidates.append(
                (_rotvec(new_rot).to(params["orient"]), (trans / _TRANS_UNIT).to(params["trans"]))
            )
        out.append(candidates)
    return out


def _align(objective, params, targets, mode, settings):
    """Set orientation and translation of every frame (in place) from the best alignment candidate;
    several candidates are each refined by a short rigid fit and the best per frame is kept."""
    candidates = _alignment_candidates(params, targets, mode, objective.forward)
    num = max(len(c) for c in candidates)
    best_loss = torch.full((objective.num_frames,), math.inf)
    best = {"orient": params["orient"].detach().clone(), "trans": params["trans"].detach().clone()}
    for k in range(num):
        trial = {key: value.detach().clone() for key, value in params.items()}
        for f, options in enumerate(candidates):
            trial["orient"][f], trial["trans"][f] = options[min(k, len(options) - 1)]
        if num > 1 and settings.align_iterations > 0:
            run = _run_gauss_newton if settings.optimizer == "lm" else _run_adam
            run(objective, trial, _STAGE_PARAMS["global"], settings.align_iterations, settings)
        with torch.no_grad():
            _, per_frame = objective(trial)
        better = per_frame.cpu() < best_loss
        best_loss = torch.where(better, per_frame.cpu(), best_loss)
        for key in best:
            best[key][better.to(best[key].device)] = trial[key].detach()[better.to(best[key].device)]
    _copy_into(params, best)
    return num


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def _stats(values: torch.Tensor | None, prefix: str) -> dict:
    if values is None or values.numel() == 0:
        return {f"{prefix}_mean": None, f"{prefix}_p90": None, f"{prefix}_max": None}
    v = values.detach().double().cpu()
    return {
        f"{prefix}_mean": float(v.mean()),
        f"{prefix}_p90": float(torch.quantile(v, 0.9)),
        f"{prefix}_max": float(v.max()),
    }


def _residual_report(objective, params):
    """Exact residuals in mm, overall and per frame."""
    with torch.no_grad():
        verts, joints = objective.forward(params)
        frames = [{} for _ in range(objective.num_frames)]
        pooled = {"surface_to_target": [], "target_to_surface": [], "joints": []}
        if objective.target_search is not None:
            for f, (s2t, t2s) in enumerate(objective.surface_residuals(verts, exact=True, use_all=True)):
                s2t, t2s = s2t.sqrt(), t2s.sqrt()
                frames[f].update(_stats(s2t, "surface_to_target"))
                frames[f].update(_stats(t2s, "target_to_surface"))
                pooled["surface_to_target"].append(s2t)
                pooled["target_to_surface"].append(t2s)
        if objective.targets["joints"] is not None:
            sq, valid = objective.joint_residuals(joints)
            for f in range(objective.num_frames):
                dist = sq[f][valid[f]].sqrt()
                frames[f].update(_stats(dist, "joints"))
                pooled["joints"].append(dist)
        overall = {}
        for key, chunks in pooled.items():
            overall.update(_stats(torch.cat(chunks) if chunks else None, key))
            for frame in frames:
                frame.setdefault(f"{key}_mean", None)
                frame.setdefault(f"{key}_p90", None)
                frame.setdefault(f"{key}_max", None)
        surface = pooled["surface_to_target"] + pooled["target_to_surface"]
        overall["p90"] = float(torch.quantile(torch.cat(surface).double().cpu(), 0.9)) if surface else None
    return overall, frames


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------
def fit_mano(
    hand_model,
    target_verts=None,
    target_faces=None,
    target_joints=None,
    init=None,
    settings: FitSettings | None = None,
) -> ManoFit:
    """Fit pose, shape and translation of ``hand_model`` to target surfaces and/or joints.

    Args:
        hand_model: :class:`utils.geometry.mano.HandModel` (procedural or real MANO, either side).
        target_verts: ``(F, N, 3)`` metres, world: points of the target surface per frame (scan
            vertices, a mesh's vertices), or None.
        target_faces: ``(M, 3)`` long, optional: faces over ``target_verts`` (same for every frame);
            model vertices then get their exact distance to the target triangles, else to the
            nearest target point.
        target_joints: ``(F, 21, 3)`` metres (16 MANO joints + 5 fingertips, the order of
            ``datasets.capture.hand_joints``) or ``(F, 16, 3)``; NaN rows are missing joints; or None.
        init: optional ``dict(pose=(F,48), shape=(10,) or (F,10), trans=(F,3))`` to start from
            (pose as ``HandModel.forward`` takes it).
        settings: :class:`FitSettings` (None: defaults).
    Returns:
        :class:`ManoFit` with ``pose (F,48)``, ``shape (10,)`` (shared) or ``(F,10)``, ``trans (F,3)``,
        ``verts (F,V,3)``, ``joints (F,21,3)`` and ``report``.
    Raises:
        ValueError / TypeError naming the argument and the shape received for malformed inputs.
    """
    settings = settings if settings is not None else FitSettings()
    if not isinstance(settings, FitSettings):
        raise TypeError(f"fit_mano: settings must be a FitSettings, got {type(settings).__name__}")
    if not hasattr(hand_model, "num_betas") or not hasattr(hand_model, "faces"):
        raise TypeError(
            f"fit_mano: hand_model must be a utils.geometry.mano.HandModel, got {type(hand_model).__name__}"
        )
    start_time = time.perf_counter()
    out_dtype, out_device = hand_model.v_template.dtype, hand_model.v_template.device
    device = torch.device(settings.device) if settings.device else out_device
    dtype = torch.float64 if settings.dtype == "float64" else torch.float32
    target_verts, target_faces, target_joints, init, num_frames = _check_inputs(
        hand_model, target_verts, target_faces, target_joints, init, settings, dtype, device
    )

    model = hand_model
    if dtype != out_dtype or device != out_device:
        model = copy.deepcopy(hand_model).to(device=device, dtype=dtype)

    points = target_verts
    if target_verts is not None and target_verts.shape[1] > settings.max_target_points:
        generator = torch.Generator().manual_seed(settings.seed)
        keep = torch.randperm(target_verts.shape[1], generator=generator)[: settings.max_target_points]
        points = target_verts[:, keep.to(device)]
    targets = {"points_all": target_verts, "points": points, "faces": target_faces, "joints": target_joints}

    shape_rows = 1 if settings.share_shape else num_frames
    init_pose = init.get("pose")
    if init_pose is not None and init_pose.dim() == 1:
        init_pose = init_pose.expand(num_frames, 48)
    init_shape = init.get("shape")
    if init_shape is not None:
        init_shape = init_shape.reshape(-1, model.num_betas)
        init_shape = (
            init_shape.mean(0, keepdim=True) if shape_rows == 1 else init_shape.expand(num_frames, -1)
        )
    init_trans = init.get("trans")
    if init_trans is not None and init_trans.dim() == 1:
        init_trans = init_trans.expand(num_frames, 3)
    zeros = lambda *size: torch.zeros(*size, dtype=dtype, device=device)  # noqa: E731
    params = {
        "orient": (init_pose[:, :3] if init_pose is not None else zeros(num_frames, 3)).clone(),
        "articulation": (init_pose[:, 3:] if init_pose is not None else zeros(num_frames, 45)).clone(),
        "shape": (init_shape if init_shape is not None else zeros(shape_rows, model.num_betas)).clone(),
        "trans": (init_trans / _TRANS_UNIT if init_trans is not None else zeros(num_frames, 3)).clone(),
    }
    objective = _Objective(model, settings, targets, num_frames, shape_rows)

    align = settings.align
    if align == "auto":
        given = init_pose is not None and init_trans is not None
        align = "none" if given else ("joints" if target_joints is not None else "pca")
    if align == "joints" and target_joints is None:
        raise InputError("fit_mano: FitSettings.align = 'joints' needs target_joints")
    if align == "pca" and target_verts is None:
        raise InputError("fit_mano: FitSettings.align = 'pca' needs target_verts")
    hypotheses = 0
    objective.robust_scale_mm = settings.robust_scale_mm * settings.robust_anneal ** max(
        len(settings.stages) - 1, 0
    )
    if align != "none":
        hypotheses = _align(objective, params, targets, align, settings)

    stage_iterations, converged = {}, False
    for k, (stage, iterations) in enumerate(zip(settings.stages, settings.iterations, strict=True)):
        names = _STAGE_PARAMS[stage]
        # Robust losses start wide (a far-off fit is not all outliers) and end at their scale.
        objective.robust_scale_mm = settings.robust_scale_mm * settings.robust_anneal ** (
            len(settings.stages) - 1 - k
        )
        run = _run_gauss_newton if settings.optimizer == "lm" else _run_adam
        steps, converged = run(objective, params, names, iterations, settings)
        key, repeat = stage, 2
        while key in stage_iterations:  # a stage listed twice
            key, repeat = f"{stage}_{repeat}", repeat + 1
        stage_iterations[key] = steps
    objective.robust_scale_mm = settings.robust_scale_mm
    if settings.refine_iterations > 0:
        steps, converged = _run_gauss_newton(
            objective, params, _STAGE_PARAMS["all"], settings.refine_iterations, settings
        )
        stage_iterations["refine"] = steps
    for p in params.values():
        p.requires_grad_(False)

    with torch.no_grad():
        loss, per_frame_loss = objective(params, exact=True)
        verts, joints = objective.forward(params)
    overall, frames = _residual_report(objective, params)
    for f, frame in enumerate(frames):
        frame["frame"] = f
        frame["loss"] = float(per_frame_loss[f])
    elapsed = time.perf_counter() - start_time
    report = {
        "iterations": int(sum(stage_iterations.values())),
        "stage_iterations": stage_iterations,
        "converged": bool(converged),
        "loss": float(loss),
        "residual_mm": overall,
        "per_frame": frames,
        "num_frames": num_frames,
        "target": {
            "surface": None if target_verts is None else ("mesh" if target_faces is not None else "points"),
            "num_points": None if target_verts is None else int(target_verts.shape[1]),
            "joints": None if target_joints is None else int(target_joints.shape[1]),
        },
        "alignment": align,
        "alignment_hypotheses": hypotheses,
        "shared_shape": settings.share_shape,
        "objective_evaluations": objective.evaluations,
        "time_s": elapsed,
        "time_per_frame_s": elapsed / num_frames,
        "settings": dataclasses.asdict(settings),
    }

    def out(x):
        return x.detach().to(device=out_device, dtype=out_dtype)

    pose = torch.cat([params["orient"], params["articulation"]], 1)
    shape = params["shape"][0] if shape_rows == 1 else params["shape"]
    return ManoFit(
        pose=out(pose),
        shape=out(shape),
        trans=out(params["trans"] * _TRANS_UNIT),
        verts=out(verts),
        joints=out(joints),
        report=report,
    )
