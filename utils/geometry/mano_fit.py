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

import numpy as np
import torch

from utils.errors import InputError
from utils.geometry.closest_point import PointCloudSearch
from utils.geometry.mano import MANO_FINGERTIP_VERTEX_IDS
from utils.geometry.mano_fit_solver import (
    _STAGE_PARAMS,
    _TRANS_UNIT,
    ARTICULATION_PRESETS,
    FINGER_CHAINS,
    ChamferScore,
    _copy_into,
    _Objective,
    _run_adam,
    _run_gauss_newton,
    finger_candidates,
    model_joints,
    preset_articulation,
    rigid_icp,
    search_fingers,
)

__all__ = ["FitSettings", "ManoFit", "failed_checks", "fit_mano", "model_joints", "quality_measures"]

ROBUST_LOSSES = ("none", "huber", "geman_mcclure")
STAGES = ("global", "pose", "all")
ALIGN_MODES = ("auto", "joints", "pca", "none")
# Wrist, the four finger bases and the thumb base: almost rigid, so good for the first alignment.
_PALM_JOINTS = (0, 1, 4, 7, 10, 13)
# The quality checks: measure -> the FitSettings field holding its limit (mm).
CHECKS = {
    "target_p99": "max_target_p99_mm",
    "part_target_p95": "max_part_target_p95_mm",
    "part_model_p95": "max_part_model_p95_mm",
    "fingertip": "max_fingertip_mm",
}
PARTS = ("palm", *FINGER_CHAINS)
# A rescue start whose every check is below this fraction of its limit ends the rescue. A wrong fit can
# pass the checks (crossed fingers fitted swapped: every measure about 3 mm, 0.4 of the limits), a
# right one sits at the target's noise (0.6-0.8 mm at 0.3 mm noise, 0.1 of the limits); between the
# two the remaining starts are fitted and the best kept.
_CLEAR_PASS = 0.25


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
        rescue_starts: a frame whose fit fails the quality check (below; surface targets only) is
            fitted again from this many further starts (whole-hand alignments of a few articulation
            presets, then a per-finger search), the best by the check kept; 0 never does.
        max_target_p99_mm: quality check: the 99th percentile of the distances from the target points
            (those of the hand: distal of the fitted wrist) to the fitted surface.
        max_part_target_p95_mm: quality check, per part (palm and each finger): the 95th percentile of
            the distances of the target points whose closest fitted point lies on that part.
        max_part_model_p95_mm: quality check, per part: the 95th percentile of the distances from the
            part's model vertices to the target.
        max_fingertip_mm: quality check: each fingertip vertex's distance to the target.
            (A check whose limit is 0 is off; :func:`quality_measures`, ``docs/mano_fit.md``.)
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
    rescue_starts: int = 3
    max_target_p99_mm: float = 0.0
    max_part_target_p95_mm: float = 8.0
    max_part_model_p95_mm: float = 8.0
    max_fingertip_mm: float = 6.0

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
            "rescue_starts",
            "align_iterations",
            *CHECKS.values(),
        ):
            if not getattr(self, name) >= 0:
                raise InputError(f"FitSettings.{name} must be >= 0, got {getattr(self, name)}")
        if not self.robust_anneal >= 1:
            raise InputError(f"FitSettings.robust_anneal must be >= 1, got {self.robust_anneal}")
        if any(n < 0 for n in self.iterations):
            raise InputError(f"FitSettings.iterations must be >= 0, got {self.iterations}")
        for name in (
            "learning_rate",
            "learning_rate_final",
            "robust_scale_mm",
            "max_target_points",
            "max_joint_angle",
        ):
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
# Quality check
# ----------------------------------------------------------------------------------------------
def _part_labels(hand_model) -> tuple[torch.Tensor, torch.Tensor]:
    """Part index (into :data:`PARTS`) of every model vertex ``(V,)`` and face ``(F,)``: the part whose
    joints carry most of the skinning weight (of the face's three corners)."""
    weights = hand_model.lbs_weights.detach().double().cpu()
    group = torch.zeros(weights.shape[1], dtype=torch.long)
    for k, chain in enumerate(FINGER_CHAINS.values(), start=1):
        group[list(chain)] = k
    by_part = torch.zeros(weights.shape[0], len(PARTS), dtype=torch.float64).index_add_(1, group, weights)
    return by_part.argmax(1), by_part[hand_model.faces.cpu()].sum(1).argmax(1)


def distance_to_points(query: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Distance ``(Q,)`` from each query point to the surface that ``points (N, 3)`` sample (no faces),
    and the sampling gap.

    A point on a surface is up to the sampling gap away from the nearest sample (5 mm on 1500 points over a
    hand). The gap is the 95th percentile of the samples' distances to their nearest other sample (on the
    procedural hand sampled with 800 to 8000 points it matches the 95th percentile of the right fit's
    vertex distances within 0.4 mm); the distance is the one to the nearest sample less that gap.
    """
    from scipy.spatial import cKDTree

    target = points.detach().cpu().double().numpy()
    tree = cKDTree(target)
    gap = float(np.percentile(tree.query(target, k=2)[0][:, 1], 95)) if len(target) > 1 else 0.0
    nearest = tree.query(query.detach().cpu().double().numpy())[0]
    return torch.as_tensor(np.maximum(nearest - gap, 0.0)), gap


def _quantile(values: torch.Tensor, q: float, minimum: int = 1):
    return float(torch.quantile(values, q)) if values.numel() >= minimum else None


def quality_measures(hand_model, verts, joints, points, faces=None) -> list[dict]:
    """Per-frame measures of how well a fitted hand explains a target surface, in millimetres.

    The mean residual hides a finger fitted onto its neighbour's surface: that finger's own target is
    left about a finger width away while almost every other point fits. These measures look at the
    tail and at each part (palm and each finger) separately, both ways:

    - ``target_p99``: 99th percentile of the distances from the target points to the fitted surface;
    - ``part_target_p95`` ``{part: mm}``: per part, the 95th percentile of those distances over the
      target points whose closest fitted point lies on the part (None below 20 such points);
    - ``part_model_p95`` ``{part: mm}``: per part, the 95th percentile of the distances from its model
      vertices to the target (its triangles when ``faces`` are given, else its nearest point less the
      target's sampling gap: :func:`distance_to_points`);
    - ``fingertip`` ``{finger: mm}``: each fingertip vertex's distance to the target (as above);
    - ``sampling_gap``: the gap subtracted above (0 with ``faces``).

    Only target points of the hand count on the target side: those distal of the fitted wrist (the plane
    normal to the wrist -> middle-base direction through the model's most proximal vertex, as
    ``datasets.goliath.crop_to_hand``) and within twice the hand's radius of its centre, so a forearm
    or stray geometry in a scan is not taken for a bad fit.

    Args:
        hand_model: the fitted :class:`utils.geometry.mano.HandModel` (its faces and skinning weights).
        verts: ``(F, V, 3)`` fitted vertices, metres. joints: ``(F, >=16, 3)`` fitted joints (MANO order).
        points: ``(F, N, 3)`` or a list of ``(N_f, 3)``: the target points, metres.
        faces: ``(M, 3)`` (or a list, one per frame) making the points a surface, or None.
    Returns:
        one dict per frame with the keys above (plain floats, JSON-ready).
    """
    from utils.geometry.closest_point import TriangleMeshSearch

    vert_part, face_part = _part_labels(hand_model)
    model_faces = hand_model.faces.cpu()
    tips = list(MANO_FINGERTIP_VERTEX_IDS.items())
    out = []
    for f in range(len(verts)):
        v = verts[f].detach().cpu().double()
        j = joints[f].detach().cpu().double()
        target = torch.as_tensor(points[f]).detach().cpu().double()
        tri = faces[f] if isinstance(faces, (list, tuple)) else faces
        axis = torch.nn.functional.normalize(j[4] - j[0], dim=0)
        centre = v.mean(0)
        radius = 2 * float((v - centre).norm(dim=1).max())
        hand = ((target - j[0]) @ axis >= float(((v - j[0]) @ axis).min())) & (
            (target - centre).norm(dim=1) <= radius
        )
        face_idx, _, to_model = TriangleMeshSearch(v, model_faces).query(target[hand])
        to_model = to_model * 1000
        gap = 0.0
        if tri is not None:
            _, _, to_target = TriangleMeshSearch(target, torch.as_tensor(tri).long().cpu()).query(v)
        else:
            to_target, gap = distance_to_points(v, target[hand])
        to_target = to_target * 1000
        on_part = face_part[face_idx]
        out.append(
            {
                "target_p99": _quantile(to_model, 0.99),
                "part_target_p95": {
                    name: _quantile(to_model[on_part == k], 0.95, minimum=20) for k, name in enumerate(PARTS)
                },
                "part_model_p95": {
                    name: _quantile(to_target[vert_part == k], 0.95) for k, name in enumerate(PARTS)
                },
                "fingertip": {name: float(to_target[i]) for name, i in tips},
                "sampling_gap": gap * 1000,
            }
        )
    return out


def failed_checks(measures: dict, settings: FitSettings) -> dict:
    """The checks of one frame's :func:`quality_measures` above their limits in ``settings``:
    ``{"<measure>" or "<measure> <part>": {"value": mm, "limit": mm}}`` (empty: the frame passes)."""
    failed = {}
    for measure, field in CHECKS.items():
        limit = getattr(settings, field)
        value = measures.get(measure)
        if not limit or value is None:
            continue
        for part, v in value.items() if isinstance(value, dict) else [(None, value)]:
            if v is not None and v > limit:
                failed[measure if part is None else f"{measure} {part}"] = {"value": v, "limit": limit}
    return failed


def _quality_rank(measures: dict, settings: FitSettings) -> tuple:
    """Sort key of a frame's fits: the largest value / limit over the checks, then the mean of them."""
    ratios = []
    for measure, field in CHECKS.items():
        limit, value = getattr(settings, field), measures.get(measure)
        if not limit or value is None:
            continue
        values = value.values() if isinstance(value, dict) else [value]
        ratios += [v / limit for v in values if v is not None]
    return (max(ratios), sum(ratios) / len(ratios)) if ratios else (0.0, 0.0)


# ----------------------------------------------------------------------------------------------
# Schedule and the rescue of failed frames
# ----------------------------------------------------------------------------------------------
def _run_schedule(objective, params, settings, fix_shape: bool):
    """The stages of ``settings`` (robust scale annealed), then the refinement; shape held with
    ``fix_shape``. Returns ``({stage: steps}, converged)``."""
    stage_iterations, converged = {}, False
    run = _run_gauss_newton if settings.optimizer == "lm" else _run_adam
    last = len(settings.stages) - 1
    for k, (stage, iterations) in enumerate(zip(settings.stages, settings.iterations, strict=True)):
        names = tuple(n for n in _STAGE_PARAMS[stage] if not (fix_shape and n == "shape"))
        # Robust losses start wide (a far-off fit is not all outliers) and end at their scale.
        objective.robust_scale_mm = settings.robust_scale_mm * settings.robust_anneal ** (last - k)
        steps, converged = run(objective, params, names, iterations, settings)
        key, repeat = stage, 2
        while key in stage_iterations:  # a stage listed twice
            key, repeat = f"{stage}_{repeat}", repeat + 1
        stage_iterations[key] = steps
    objective.robust_scale_mm = settings.robust_scale_mm
    if settings.refine_iterations > 0:
        names = tuple(n for n in _STAGE_PARAMS["all"] if not (fix_shape and n == "shape"))
        steps, converged = _run_gauss_newton(objective, params, names, settings.refine_iterations, settings)
        stage_iterations["refine"] = steps
    return stage_iterations, converged


def _frame_quality(model, objective, params, targets) -> list[dict]:
    with torch.no_grad():
        verts, joints = objective.forward(params)
    return quality_measures(model, verts, joints, targets["points_all"], targets["faces"])


def _rescue(model, objective, targets, params, failed, quality, settings, fix_shape: bool) -> dict:
    """:func:`_rescue_frame` for each failed frame, then the shape: ``params`` updated in place.

    The starts hold the shape given (``fix_shape``) or the one fitted together with frames that pass; a
    shape fitted to failed frames alone is as wrong as they are, so without a passing frame (or with one
    shape per frame) each rescue fits its own from the mean shape, and the shared shape becomes their
    mean. When the shared shape is free it is then fitted again with every frame (``all`` stage).

    Returns:
        ``{frame: record}`` (see :func:`_rescue_frame`), plus ``all_frames_steps`` / ``all_frames_converged``
        when the shape was fitted again.
    """
    shared = objective.shape_rows == 1
    hold = fix_shape or (shared and len(failed) < objective.num_frames)
    out, shapes = {}, []
    for f in failed:
        row = 0 if shared else f
        shape = params["shape"][row].detach().clone()
        if not hold:
            shape.zero_()
        out[f], trial = _rescue_frame(model, targets, params, f, quality[f], settings, shape, hold)
        if trial is not None and not hold:
            shapes.append(trial["shape"][0])
            if not shared:
                params["shape"].data[f] = trial["shape"][0]
    if shared and shapes and not hold:
        params["shape"].data[0] = torch.stack(shapes).mean(0)
    rescued = any(r["kept"] != "fit" for r in out.values())
    if rescued and shared and not fix_shape and "all" in settings.stages and objective.num_frames > 1:
        objective.robust_scale_mm = settings.robust_scale_mm
        out["all_frames_steps"], out["all_frames_converged"] = _run_gauss_newton(
            objective, params, _STAGE_PARAMS["all"], settings.iterations[-1], settings
        )
    return out


def _rescue_frame(model, targets, params, f: int, measures: dict, settings, shape, hold: bool):
    """Fit frame ``f`` again from further starts, the shape at ``shape (B,)`` (held with ``hold``, else
    fitted from there); keep the best by the quality check.

    Starts: the fitted orientation and a whole-hand alignment (principal axes, then rigid ICP) of each
    articulation preset (mean, half curled, fist); from each, a search over every finger's curl and
    spread (:func:`utils.geometry.mano_fit_solver.search_fingers`, cheap nearest-point scores). The
    ``rescue_starts`` best distinct results are fitted with the schedule in turn, until one is clearly
    right (every check below ``_CLEAR_PASS`` of its limit); the frame keeps the fit whose worst check
    (value / limit) is lowest, the first fit included. The frame's pose and translation in ``params``
    are updated in place.

    Returns:
        ``{"starts": {name: {"search_mm", "worst_ratio", "failed"}}, "kept": name}`` (``fit``: the
        first fit was kept) and the kept trial's parameters (None for the first fit).
    """
    dtype, device = params["orient"].dtype, params["orient"].device
    frame_targets = {
        key: (None if targets[key] is None else targets[key][f : f + 1])
        for key in ("points_all", "points", "joints")
    }
    frame_targets["faces"] = targets["faces"]
    objective = _Objective(model, settings, frame_targets, 1, 1)
    shape = shape.reshape(1, -1)
    points = targets["points_all"][f].detach().double().cpu()
    score = ChamferScore(points)
    hands_mean = model.hands_mean.detach().double().cpu()
    candidates = {chain: finger_candidates(model, chain) for chain in FINGER_CHAINS.values()}

    def posed(pose, trans):
        n = pose.shape[0]
        with torch.no_grad():
            verts, joints = model(
                pose.to(dtype=dtype, device=device),
                shape.expand(n, -1),
                trans.to(dtype=dtype, device=device).expand(n, 3),
            )
        return verts.double().cpu(), joints.double().cpu()

    zero = torch.zeros(3, dtype=torch.float64)
    fitted_trans = params["trans"][f].detach().double().cpu() * _TRANS_UNIT
    starts = [("fit", params["orient"][f].detach().double().cpu(), fitted_trans, tuple(ARTICULATION_PRESETS))]
    for name in ARTICULATION_PRESETS:
        verts, joints = posed(torch.cat([zero, preset_articulation(model, name)])[None], zero)
        verts, root = verts[0], joints[0, 0]
        aligned = []
        for rot in _pca_rotations(verts, points):
            rot, shift = rigid_icp(verts, score, rot)
            aligned.append((float(score((verts @ rot.T + shift)[None])[0]), len(aligned), rot, shift))
        _, _, rot, shift = min(aligned)
        # The model turns about its root joint: R (x - J0) + J0 + trans = R x + shift.
        starts.append((f"align_{name}", _rotvec(rot), shift + rot @ root - root, (name,)))
    searched = []
    for name, orient, trans, presets in starts:
        for preset in presets:
            pose = torch.cat([orient, preset_articulation(model, preset)])
            pose, value = search_fingers(
                lambda p, t=trans: posed(p, t)[0], pose, score, hands_mean, candidates
            )
            searched.append((value, f"{name}/{preset}", pose, trans))
    chosen = []
    for item in sorted(searched, key=lambda item: item[0]):
        if all(float((item[2] - other[2]).abs().max()) > 0.05 for other in chosen):
            chosen.append(item)
    record = {
        "fit": {
            "worst_ratio": _quality_rank(measures, settings)[0],
            "failed": sorted(failed_checks(measures, settings)),
        }
    }
    best_rank, best = _quality_rank(measures, settings), None
    for value, name, pose, trans in chosen[: settings.rescue_starts]:
        pose = pose.to(dtype=dtype, device=device)
        trial = {
            "orient": pose[None, :3].clone(),
            "articulation": pose[None, 3:].clone(),
            "trans": (trans / _TRANS_UNIT).to(dtype=dtype, device=device)[None].clone(),
            "shape": shape.clone(),
        }
        _run_schedule(objective, trial, settings, fix_shape=hold)
        trial_measures = _frame_quality(model, objective, trial, frame_targets)[0]
        rank = _quality_rank(trial_measures, settings)
        record[name] = {
            "search_mm": value,
            "worst_ratio": rank[0],
            "failed": sorted(failed_checks(trial_measures, settings)),
        }
        if rank < best_rank:
            best_rank, best = rank, (name, trial)
        if rank[0] <= _CLEAR_PASS:
            break  # clearly right: the later starts rank lower in the search
    if best is not None:
        with torch.no_grad():
            for key in ("orient", "articulation", "trans"):
                params[key][f] = best[1][key][0]
    return {"starts": record, "kept": "fit" if best is None else best[0]}, None if best is None else best[1]


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
    fix_shape: bool = False,
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
        fix_shape: hold the shape at ``init['shape']`` (e.g. the subject's shape fitted before on other
            frames): the ``all`` stage then moves pose and translation only.
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
    if fix_shape and init.get("shape") is None:
        raise InputError("fit_mano: fix_shape=True needs the shape to hold in init['shape']")

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

    stage_iterations, converged = _run_schedule(objective, params, settings, fix_shape)
    quality, rescue = [], {}
    if target_verts is not None:
        quality = _frame_quality(model, objective, params, targets)
        failed = [f for f in range(num_frames) if failed_checks(quality[f], settings)]
        if failed and settings.rescue_starts > 0:
            rescue = _rescue(model, objective, targets, params, failed, quality, settings, fix_shape)
            if "all_frames_steps" in rescue:
                stage_iterations["rescue_all"] = rescue.pop("all_frames_steps")
                converged = rescue.pop("all_frames_converged")
            quality = _frame_quality(model, objective, params, targets)
    for p in params.values():
        p.requires_grad_(False)

    with torch.no_grad():
        loss, per_frame_loss = objective(params, exact=True)
        verts, joints = objective.forward(params)
    overall, frames = _residual_report(objective, params)
    for f, frame in enumerate(frames):
        frame["frame"] = f
        frame["loss"] = float(per_frame_loss[f])
        if quality:
            frame["quality"] = quality[f]
            frame["failed_checks"] = failed_checks(quality[f], settings)
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
        "failed_frames": [f["frame"] for f in frames if f.get("failed_checks")],
        "rescue": {str(f): r for f, r in rescue.items()},
        "fixed_shape": fix_shape,
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
