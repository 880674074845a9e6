"""Annotations as a real dataset has them, and how far the annotated MANO mesh is from the truth.

InterHand2.6M's MANO parameters (NeuralAnnot) are fits to triangulated keypoints: millimetres away
from the true surface. ``annotation="fit"`` reproduces that: the truth's 21 keypoints (the skeleton
joints that posed the subject and the fingertip points of the true surface) get Gaussian noise of
``noise_mm`` per coordinate (the triangulation error) and the hand model is fitted to them with
:func:`utils.geometry.mano_fit.fit_mano`: all frames of a subject at once, one shared shape, from the
mean hand. ``annotation="exact"`` writes the parameters that posed the subject (the v1 data).

:func:`surface_distances_mm` measures the annotated MANO mesh against the truth by P2P with i.i.d. samples
(the estimator ``utils.metrics.geometry.p2p_mm`` used before issue 26, kept here so that the generated data
and its recorded "input MANO" P2P do not change), keeping the per-point distances for percentiles.
"""

from __future__ import annotations

import numpy as np
import torch

ANNOTATIONS = ("fit", "exact")
DEFAULT_NOISE_MM = 3.0


def fit_settings(**overrides):
    """The generator's :class:`~utils.geometry.mano_fit.FitSettings`: few iterations, float32, a shape prior.

    Adam stages ``global`` / ``pose`` / ``all`` (30 / 80 / 80 steps, no early stop), no
    Levenberg-Marquardt: on 21 keypoints Adam is cheap (one batched forward of all frames per step,
    ~2.5 s CPU for 24 frames) while LM's per-frame Jacobians cost ~20 s; the Adam fit reaches the
    noise level (keypoint residual ~ 0.8 x the noise's RMS norm). ``weight_shape_prior = 1`` (against
    the mean squared joint error in mm², summed over frames) keeps the betas plausible: with the
    fitter's default 1e-3 the fit explains keypoint noise with extreme betas (|beta| > 5).
    """
    from utils.geometry.mano_fit import FitSettings

    values = dict(
        stages=("global", "pose", "all"),
        iterations=(30, 80, 80),
        optimizer="adam",
        refine_iterations=0,
        tolerance=1e-9,
        dtype="float32",
        weight_shape_prior=1.0,
        weight_pose_prior=1e-3,
    )
    values.update(overrides)
    return FitSettings(**values)


def true_keypoints(joints16: torch.Tensor, gt_verts: torch.Tensor) -> torch.Tensor:
    """``(F, 21, 3)`` keypoints of the truth in ``datasets.capture.hand_joints`` order.

    The 16 skeleton joints that posed the subject (soft tissue does not move them) and the true
    surface at the fingertip vertices ``MANO_FINGERTIP_VERTEX_IDS`` (the first 778 vertices of the
    subdivided mesh are the coarse ones).
    """
    from utils.geometry.mano import MANO_FINGERTIP_VERTEX_IDS

    return torch.cat([joints16, gt_verts[:, list(MANO_FINGERTIP_VERTEX_IDS.values())]], dim=1)


def annotate(
    hand_model,
    keypoints: torch.Tensor,
    rng: np.random.Generator,
    noise_mm: float = DEFAULT_NOISE_MM,
    settings=None,
) -> dict:
    """MANO parameters fitted to noisy keypoints of the truth, as a dataset's annotation.

    Args:
        hand_model: :class:`utils.geometry.mano.HandModel`.
        keypoints: ``(F, 21, 3)`` true keypoints, metres (:func:`true_keypoints`).
        rng: numpy Generator of the noise (the subject's annotation stream).
        noise_mm: standard deviation of the keypoint noise per coordinate, mm (0: none).
        settings: :class:`~utils.geometry.mano_fit.FitSettings` (None: :func:`fit_settings`).
    Returns:
        dict with ``pose (F,48)``, ``shape (10,)``, ``trans (F,3)`` (float64 numpy, as ``HandModel``
        takes them), ``verts (F,778,3)`` and ``joints (F,21,3)`` (float32 tensors) of the fit,
        ``noisy_keypoints (F,21,3)`` (the fit's targets) and the fitter's ``report``.
    """
    from utils.geometry.mano_fit import fit_mano

    if not noise_mm >= 0:
        raise ValueError(f"annotation noise must be >= 0 mm, got {noise_mm}")
    noise = rng.normal(0.0, noise_mm * 1e-3, tuple(keypoints.shape))
    target = keypoints.double() + torch.as_tensor(noise)
    fit = fit_mano(hand_model, target_joints=target.float(), settings=settings or fit_settings())
    return {
        "pose": fit.pose.double().numpy(),
        "shape": fit.shape.double().numpy(),
        "trans": fit.trans.double().numpy(),
        "verts": fit.verts.float(),
        "joints": fit.joints.float(),
        "noisy_keypoints": target.float(),
        "report": fit.report,
    }


def surface_distances_mm(pred_verts, pred_faces, gt_verts, gt_faces, num_samples: int = 2000, seed: int = 0):
    """Per-point distances of the i.i.d. P2P estimate, in mm.

    ``num_samples`` points by area on the prediction, then on the truth (a generator seeded with ``seed``),
    exact distances: ``(d_pred.mean() + d_gt.mean()) / 2`` is the P2P estimate.

    Returns:
        ``d_pred (num_samples,)`` prediction points to the truth, ``d_gt (num_samples,)`` truth points
        to the prediction, numpy float64, mm.
    """
    from utils.metrics.geometry import point_to_surface_distance, sample_surface

    generator = torch.Generator().manual_seed(seed)
    pred_verts, gt_verts = (
        torch.as_tensor(pred_verts).detach().double(),
        torch.as_tensor(gt_verts).detach().double(),
    )
    pred_faces, gt_faces = torch.as_tensor(pred_faces), torch.as_tensor(gt_faces)
    pts_pred = sample_surface(pred_verts, pred_faces, num_samples, generator)
    pts_gt = sample_surface(gt_verts, gt_faces, num_samples, generator)
    d_pred = point_to_surface_distance(pts_pred, gt_verts, gt_faces).numpy() * 1000.0
    d_gt = point_to_surface_distance(pts_gt, pred_verts, pred_faces).numpy() * 1000.0
    return d_pred, d_gt


def input_mano_error(mano_verts, mano_faces, gt_verts, gt_faces, frames, num_samples: int = 2000) -> dict:
    """Input-MANO-to-truth P2P on the frames ``frames`` (indices): per frame and the pooled distances.

    Returns:
        ``{"frames": [...], "p2p_mm": [per frame], "distances_mm": (2 * num_samples * len(frames),)}``.
    """
    p2p, pooled = [], []
    for f in frames:
        d_pred, d_gt = surface_distances_mm(mano_verts[f], mano_faces, gt_verts[f], gt_faces, num_samples)
        p2p.append(float((d_pred.mean() + d_gt.mean()) / 2))
        pooled += [d_pred, d_gt]
    return {"frames": [int(f) for f in frames], "p2p_mm": p2p, "distances_mm": np.concatenate(pooled)}


def split_summary(entries: list, mpjpe: list) -> dict:
    """Per-split numbers for ``synthetic_meta.json`` from :func:`input_mano_error` results and per-frame MPJPEs.

    ``input_mano_p2p_mm``: mean of the per-frame P2P; ``input_mano_p2p_p90_mm``: 90th percentile of the
    per-point distances pooled over both directions and the measured frames; ``annotation_mpjpe_mm``:
    mean over all frames of the annotated joints' MPJPE (21 joints) to the true keypoints.
    """
    p2p = [v for e in entries for v in e["p2p_mm"]]
    dist = np.concatenate([e["distances_mm"] for e in entries])
    return {
        "input_mano_p2p_mm": round(float(np.mean(p2p)), 4),
        "input_mano_p2p_p90_mm": round(float(np.percentile(dist, 90)), 4),
        "annotation_mpjpe_mm": round(float(np.mean(mpjpe)), 4),
        "num_p2p_frames": len(p2p),
    }
