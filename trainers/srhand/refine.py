"""Joint MANO refinement (``refine.*``): the hand is reconstructed where it is, not where its annotation says.

The reference code (and XHand) keep every frame's MANO parameters at the annotation; an annotation's pose
error is then an error the avatar cannot remove (``benchmarks/diagnostic_exact_annotation.md``). Here the
parameters are part of the fit, as in UHM and HARP:

- :class:`MANORefinement` holds, beside the annotation, per-frame offsets of the global rotation ``(3,)``,
  the finger pose ``(45,)`` (axis-angle, radians) and the translation ``(3,)`` (metres), and one offset of
  the capture's shape ``(S,)``. One parameter per frame, so that Adam moves only the frames a step saw (a
  parameter without a gradient is skipped).
- :func:`refinement_terms` are its regularisers: squared offsets (a prior towards the annotation, in
  axis-angle space), squared differences of neighbouring frames' offsets (smoothness in frame-id order) and
  the squared shape offset.
- :func:`check_refinement` stops a diverging fit (:class:`RefinementDivergedError`) before it is saved.
- :func:`render_mano_normals` renders GIIF's normal-map input from the refined parameters (SR targets made
  after a refinement see the hand where it is); :func:`refined_mano_json` writes the parameters in the
  InterHand2.6M ``MANO_NeuralAnnot`` format; :func:`keypoint_errors` measures the 21 joints against the truth
  (synthetic captures).
- :func:`fit_pose` is the test-time fit of a held-out frame (UHM): pose, rotation and translation fitted to
  the frame's LR images with the avatar frozen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from trainers.srhand.settings import RefineSettings
from utils.errors import InputError


class RefinementDivergedError(InputError):
    """A refined MANO parameter moved beyond its configured bound from the annotation."""


class MANORefinement(nn.Module):
    """The MANO parameters of a capture's fitting frames: annotation + optimised offsets.

    Args:
        pose: ``(F, 48)`` annotated axis-angle poses (global rotation first, without the hand mean).
        trans: ``(F, 3)`` annotated translations, metres.
        shape: ``(F, S)`` annotated shapes; the capture's mean is the avatar's shape (``mean_shape``).
        frame_ids: the F frame numbers (their order defines the neighbours of the smoothness term).
        refine_shape: optimise the shape offset (else it stays 0 and gets no gradient).

    Buffers ``pose_annotated``, ``trans_annotated``, ``shape_annotated`` hold the annotation; parameters
    ``d_rot[f] (3,)``, ``d_pose[f] (45,)``, ``d_trans[f] (3,)`` and ``d_shape (S,)`` the offsets, all zero at
    the start.
    """

    def __init__(
        self,
        pose: torch.Tensor,
        trans: torch.Tensor,
        shape: torch.Tensor,
        frame_ids: Sequence[int],
        refine_shape: bool = True,
    ):
        super().__init__()
        num = pose.shape[0]
        if (
            pose.shape != (num, 48)
            or trans.shape != (num, 3)
            or shape.shape[0] != num
            or len(frame_ids) != num
        ):
            raise ValueError(
                f"pose (F, 48), trans (F, 3), shape (F, S) and F frame ids expected, got {tuple(pose.shape)}, "
                f"{tuple(trans.shape)}, {tuple(shape.shape)}, {len(frame_ids)}"
            )
        self.register_buffer("pose_annotated", pose.detach().float().clone())
        self.register_buffer("trans_annotated", trans.detach().float().clone())
        self.register_buffer("shape_annotated", shape.detach().float().clone())
        device = pose.device
        self.d_rot = nn.ParameterList([nn.Parameter(torch.zeros(3, device=device)) for _ in range(num)])
        self.d_pose = nn.ParameterList([nn.Parameter(torch.zeros(45, device=device)) for _ in range(num)])
        self.d_trans = nn.ParameterList([nn.Parameter(torch.zeros(3, device=device)) for _ in range(num)])
        self.d_shape = nn.Parameter(torch.zeros(shape.shape[1], device=device), requires_grad=refine_shape)
        self.frame_ids = [int(f) for f in frame_ids]
        order = sorted(range(num), key=lambda f: self.frame_ids[f])
        # neighbours[f]: the fitting frames before and after f in frame-id order
        self.neighbours = {f: [] for f in range(num)}
        for a, b in zip(order[:-1], order[1:], strict=True):
            self.neighbours[a].append(b)
            self.neighbours[b].append(a)

    @classmethod
    def from_entry(cls, entry: dict) -> MANORefinement:
        """Rebuild from a checkpoint entry ``{"frame_ids", "sd"}`` (``SRHandModels.mano_entry``)."""
        sd = entry["sd"]
        mano = cls(sd["pose_annotated"], sd["trans_annotated"], sd["shape_annotated"], entry["frame_ids"])
        mano.load_state_dict(sd)
        return mano

    @property
    def num_frames(self) -> int:
        return self.pose_annotated.shape[0]

    def pose(self, frame: int) -> torch.Tensor:
        """``(48,)`` refined pose of fitting frame ``frame`` (with the graph of its offsets)."""
        return self.pose_annotated[frame] + torch.cat([self.d_rot[frame], self.d_pose[frame]])

    def trans(self, frame: int) -> torch.Tensor:
        """``(3,)`` refined translation (metres) of fitting frame ``frame``."""
        return self.trans_annotated[frame] + self.d_trans[frame]

    def shape_offset(self) -> torch.Tensor:
        """``(S,)`` offset of the refined shape from the capture's mean annotated shape (the avatar's)."""
        return self.d_shape

    @torch.no_grad()
    def poses(self) -> torch.Tensor:
        """``(F, 48)`` refined poses, detached."""
        return torch.stack([self.pose(f) for f in range(self.num_frames)])

    @torch.no_grad()
    def translations(self) -> torch.Tensor:
        """``(F, 3)`` refined translations (metres), detached."""
        return torch.stack([self.trans(f) for f in range(self.num_frames)])

    @torch.no_grad()
    def shapes(self) -> torch.Tensor:
        """``(F, S)`` refined per-frame shapes: each frame's annotated shape + the shared offset."""
        return self.shape_annotated + self.d_shape

    def parameter_groups(self, settings: RefineSettings) -> list[dict]:
        """Adam parameter groups with the learning rates of ``refine.*``."""
        groups = [
            {"params": list(self.d_rot), "lr": settings.rot_learning_rate},
            {"params": list(self.d_pose), "lr": settings.pose_learning_rate},
            {"params": list(self.d_trans), "lr": settings.trans_learning_rate},
        ]
        if self.d_shape.requires_grad:
            groups.append({"params": [self.d_shape], "lr": settings.shape_learning_rate})
        return groups

    @torch.no_grad()
    def offset_sizes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F, 16)`` axis-angle offset angles in degrees (the global rotation, then the 15 finger joints) and
        ``(F,)`` translation offsets in mm."""
        rot = torch.stack(list(self.d_rot))[:, None]
        pose = torch.stack(list(self.d_pose)).reshape(-1, 15, 3)
        angles = torch.cat([rot, pose], dim=1).norm(dim=-1) * (180 / math.pi)
        return angles, torch.stack(list(self.d_trans)).norm(dim=-1) * 1000

    @torch.no_grad()
    def offset_summary(self) -> dict:
        """Sizes of the offsets: max and mean joint angle (degrees, over frames and the 15 finger joints),
        global rotation (degrees), translation (mm), the shape offset's norm."""
        angles, trans = self.offset_sizes()
        rot, pose = angles[:, 0], angles[:, 1:]
        return {
            "pose_deg_max": float(pose.max()),
            "pose_deg_mean": float(pose.mean()),
            "rot_deg_max": float(rot.max()),
            "rot_deg_mean": float(rot.mean()),
            "trans_mm_max": float(trans.max()),
            "trans_mm_mean": float(trans.mean()),
            "shape_offset_norm": float(self.d_shape.norm()),
        }


def squared_offsets(
    rot: torch.Tensor,
    pose: torch.Tensor,
    trans: torch.Tensor,
    rot_weight: float,
    pose_weight: float,
    trans_weight: float,
) -> torch.Tensor:
    """``rot_weight |rot|^2 + pose_weight |pose|^2`` (rad^2, summed over the joints) ``+ trans_weight |trans|^2``
    (mm^2; ``trans`` in metres)."""
    return (
        rot_weight * rot.pow(2).sum()
        + pose_weight * pose.pow(2).sum()
        + trans_weight * (1000.0 * trans).pow(2).sum()
    )


def offset_prior(
    rot: torch.Tensor, pose: torch.Tensor, trans: torch.Tensor, settings: RefineSettings
) -> torch.Tensor:
    """The prior towards the annotation of one frame's offsets: :func:`squared_offsets` with ``refine.rot_prior``,
    ``pose_prior`` and ``trans_prior``."""
    return squared_offsets(rot, pose, trans, settings.rot_prior, settings.pose_prior, settings.trans_prior)


def refinement_terms(
    refinement: MANORefinement, frame: int, settings: RefineSettings
) -> dict[str, torch.Tensor]:
    """The weighted regularisers of ``frame``'s offsets (``refine.*`` weights; a 0 weight drops the term).

    ``mano_prior``: ``rot_prior |d_rot|^2 + pose_prior |d_pose|^2`` (rad^2, summed over the joints) ``+
    trans_prior |d_trans|^2`` (mm^2); ``mano_smooth``: ``smooth`` x the same squared distances between the
    offsets of ``frame`` and its neighbours in frame-id order; ``shape_prior``: ``|d_shape|^2``.
    """
    s, r = settings, refinement
    terms = {}
    terms["mano_prior"] = offset_prior(r.d_rot[frame], r.d_pose[frame], r.d_trans[frame], s)
    if s.smooth and r.neighbours[frame]:
        terms["mano_smooth"] = (
            s.smooth
            * sum(
                squared_offsets(
                    r.d_rot[frame] - r.d_rot[n],
                    r.d_pose[frame] - r.d_pose[n],
                    r.d_trans[frame] - r.d_trans[n],
                    1.0,
                    1.0,
                    s.trans_prior,
                )
                for n in r.neighbours[frame]
            )
            / len(r.neighbours[frame])
        )
    if r.d_shape.requires_grad and s.shape_prior:
        terms["shape_prior"] = s.shape_prior * r.d_shape.pow(2).sum()
    return terms


@torch.no_grad()
def check_refinement(refinement: MANORefinement, settings: RefineSettings, frame_ids: Sequence[int]) -> None:
    """Raise :class:`RefinementDivergedError` when an offset is not finite or beyond ``refine.max_pose_deg``
    (a finger joint's or the global rotation's axis-angle offset) or ``refine.max_trans_mm``."""
    angles, trans = refinement.offset_sizes()  # (F, 16): global, then fingers; (F,) mm
    fix = (
        "the run keeps its last good checkpoint; lower refine.*_learning_rate, raise refine.pose_prior / "
        "refine.trans_prior, or check the frame's annotation and images"
    )
    if not (
        torch.isfinite(angles).all()
        and torch.isfinite(trans).all()
        and torch.isfinite(refinement.d_shape).all()
    ):
        raise RefinementDivergedError(f"MANO refinement: an offset is not finite; {fix}")
    worst = int(angles.max(dim=1).values.argmax())
    joint = int(angles[worst].argmax())
    if float(angles[worst, joint]) > settings.max_pose_deg:
        what = "global rotation" if joint == 0 else f"joint {joint}"
        raise RefinementDivergedError(
            f"MANO refinement diverged: frame {frame_ids[worst]}'s {what} moved "
            f"{float(angles[worst, joint]):.1f} deg from the annotation, beyond refine.max_pose_deg = "
            f"{settings.max_pose_deg:g}; {fix}"
        )
    worst = int(trans.argmax())
    if float(trans[worst]) > settings.max_trans_mm:
        raise RefinementDivergedError(
            f"MANO refinement diverged: frame {frame_ids[worst]}'s translation moved {float(trans[worst]):.1f} mm "
            f"from the annotation, beyond refine.max_trans_mm = {settings.max_trans_mm:g}; {fix}"
        )


@torch.no_grad()
def render_mano_normals(
    hand_model, poses: torch.Tensor, shapes: torch.Tensor, trans: torch.Tensor, data, normal_space: str
) -> torch.Tensor:
    """GIIF's normal maps ``(F, V, 3, Hn, Wn)`` of the MANO meshes of ``poses (F, 48)``, ``shapes (F, S)``,
    ``trans (F, 3)`` in ``data``'s crops (a :class:`trainers.srhand.sequence.SequenceData`: its cropped
    intrinsics, scaled to the normal maps' size, and extrinsics), in ``data.normal``'s dtype; the views that are
    not usable stay 0. Reads ``data``; changes nothing."""
    from datasets.preprocess import render_mask_and_normals

    out = torch.zeros_like(data.normal)
    height, width = data.size
    hn, wn = data.normal.shape[-2:]
    device = data.K.device
    scale = torch.diag(torch.tensor([wn / width, hn / height, 1.0], device=device))
    model_device = hand_model.v_template.device  # the capture's shared hand model stays where it is
    verts, _ = hand_model.forward(poses.to(model_device), shapes.to(model_device), trans.to(model_device))
    verts, faces = verts.to(device), hand_model.faces.to(device)
    for f in range(data.num_frames):
        views = data.usable_views(f, range(data.num_views))
        if not views:
            continue
        K = scale @ data.K[f, views]
        _, normals = render_mask_and_normals(
            verts[f].float()[None].expand(len(views), -1, -1),
            faces,
            K,
            data.R[views],
            data.t[views],
            (hn, wn),
            normal_space=normal_space,
        )
        out[f, views] = normals.to(out.dtype)
    return out


def refined_mano_json(refinement: MANORefinement, capture: str, hand: str, frame_ids: Sequence[int]) -> dict:
    """The refined parameters in InterHand2.6M's ``MANO_NeuralAnnot`` layout: ``{capture key: {frame id:
    {"right": {"pose": [48], "shape": [10], "trans": [3]} | None, "left": ...}}}`` (world, metres), the
    other hand None, so that tools reading InterHand annotations read it."""
    from datasets.interhand import capture_key

    other = "left" if hand == "right" else "right"
    poses, trans, shapes = (
        refinement.poses().cpu(),
        refinement.translations().cpu(),
        refinement.shapes().cpu(),
    )
    frames = {}
    for f, frame_id in enumerate(frame_ids):
        frames[str(int(frame_id))] = {
            hand: {
                "pose": [float(x) for x in poses[f]],
                "shape": [float(x) for x in shapes[f]],
                "trans": [float(x) for x in trans[f]],
            },
            other: None,
        }
    try:
        key = capture_key(capture)
    except InputError:
        key = str(capture)  # a Goliath capture name: kept as it is
    return {key: frames}


def hand_keypoints(
    hand_model, poses: torch.Tensor, shapes: torch.Tensor, trans: torch.Tensor
) -> torch.Tensor:
    """``(F, 21, 3)`` world keypoints (metres) of MANO parameters: the 16 joints and the 5 fingertip vertices
    (``datasets.capture.hand_joints`` order)."""
    from utils.geometry.mano import MANO_FINGERTIP_VERTEX_IDS

    with torch.no_grad():
        verts, joints = hand_model.forward(poses.cpu().float(), shapes.cpu().float(), trans.cpu().float())
    return torch.cat([joints.float(), verts[:, list(MANO_FINGERTIP_VERTEX_IDS.values())].float()], dim=1)


def true_keypoints(gt_mesh_path: str | None, frame_ids: Sequence[int]) -> torch.Tensor | None:
    """``(F, 21, 3)`` true keypoints of ``frame_ids`` from a synthetic capture's ground-truth file (the
    ``true_keypoints`` the generator writes), or None where there is no such file or entry."""
    if not gt_mesh_path:
        return None
    with np.load(gt_mesh_path) as data:
        if "true_keypoints" not in data.files:
            return None
        ids = [int(f) for f in data["frame_ids"]]
        keypoints = data["true_keypoints"]
    try:
        rows = [ids.index(int(f)) for f in frame_ids]
    except ValueError:
        return None
    return torch.from_numpy(np.asarray(keypoints[rows], dtype=np.float32))


def keypoint_errors(
    hand_model, truth: torch.Tensor, annotated: tuple[torch.Tensor, ...], refined: tuple[torch.Tensor, ...]
) -> dict:
    """MPJPE (mm, 21 keypoints) of the annotated and the refined ``(poses, shapes, trans)`` against ``truth
    (F, 21, 3)``: means and per-frame values."""
    from utils.metrics.geometry import mpjpe_mm

    before = mpjpe_mm(hand_keypoints(hand_model, *annotated), truth)
    after = mpjpe_mm(hand_keypoints(hand_model, *refined), truth)
    return {
        "mpjpe_annotation_mm": float(before.mean()),
        "mpjpe_refined_mm": float(after.mean()),
        "mpjpe_annotation_per_frame_mm": [round(float(x), 4) for x in before],
        "mpjpe_refined_per_frame_mm": [round(float(x), 4) for x in after],
    }


def fit_pose(
    avatar,
    pose: torch.Tensor,
    trans: torch.Tensor,
    shape_offset: torch.Tensor | None,
    cameras,
    sh_index: Sequence[int],
    images: torch.Tensor,
    mask: torch.Tensor,
    settings: RefineSettings,
    renderer,
    photometric_weight: float = 30.0,
    degradation: str = "nearest",
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Test-time fit of one held-out frame (UHM): its global rotation, finger pose and translation, from the
    annotation ``pose (48,)``, ``trans (3,)``, to its images with the avatar frozen.

    The avatar's fields (weights, albedo, displacement) are those of the annotated pose (the networks read the
    pose as a condition without a gradient; the fit moves the skeleton). Each step renders the B views at the
    crops' size and takes an Adam step on the L1 distance to ``images (B, 3, h, w)`` inside ``mask (B, 1, H,
    W)``, weighted by ``photometric_weight`` (the joint step's, ``train.losses.photometric``), plus the priors of
    ``refine.*`` (rotation, pose, translation; no smoothness: one frame). Images smaller than the crops (LR
    images) are compared with the render and the mask degraded as the LR images were (``degradation``, the
    data's: an area average against nearest-sampled images would shift every pixel by half an LR pixel).

    Returns:
        The fitted ``pose (48,)``, ``trans (3,)`` (detached) and ``{"loss_start", "loss_end", "steps"}``.
    """
    with torch.no_grad():
        fields = avatar.forward_geometry(pose, trans, shape_offset)
    d_rot = torch.zeros(3, device=pose.device, requires_grad=True)
    d_pose = torch.zeros(45, device=pose.device, requires_grad=True)
    d_trans = torch.zeros(3, device=pose.device, requires_grad=True)
    s = settings
    rate = s.test_learning_rate
    ratio = s.trans_learning_rate / s.pose_learning_rate if s.pose_learning_rate > 0 else 0.0
    optimizer = torch.optim.Adam(
        [{"params": [d_rot, d_pose], "lr": rate}, {"params": [d_trans], "lr": rate * ratio}]
    )
    from datasets.preprocess import degrade

    h, w = images.shape[-2:]
    low_res = (h, w) != tuple(mask.shape[-2:])

    def to_target(x: torch.Tensor) -> torch.Tensor:
        return degrade(x, size=(h, w), mode=degradation) if low_res else x

    weight = to_target(mask.float())
    denom = weight.sum().clamp_min(1.0) * 3
    losses = []
    for _ in range(s.test_steps + 1):
        posed = avatar.pose_vertices(
            fields["verts_canonical"],
            fields["weights"],
            pose + torch.cat([d_rot, d_pose]),
            trans + d_trans,
            shape_offset,
        )
        out = avatar.render(posed, fields["albedo"], cameras, sh_index, renderer=renderer)
        photometric = ((to_target(out["image"]) - images).abs() * weight).sum() / denom
        losses.append(float(photometric.detach()))
        if len(losses) > s.test_steps:
            break
        loss = photometric_weight * photometric + offset_prior(d_rot, d_pose, d_trans, s)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    fitted_pose = (pose + torch.cat([d_rot, d_pose])).detach()
    return (
        fitted_pose,
        (trans + d_trans).detach(),
        {
            "loss_start": losses[0],
            "loss_end": losses[-1],
            "steps": s.test_steps,
        },
    )


def frame_parameters(
    refinement: MANORefinement | None, data, frame: int, grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(pose (48,), trans (3,), shape_offset (S,) or None)`` of fitting frame ``frame``: the refined ones
    (with the graph of their offsets when ``grad``, else detached), or ``data``'s annotation without
    refinement."""
    if refinement is None:
        return data.pose[frame], data.trans[frame], None
    if grad:
        return refinement.pose(frame), refinement.trans(frame), refinement.shape_offset()
    with torch.no_grad():
        return refinement.pose(frame), refinement.trans(frame), refinement.shape_offset().detach().clone()


def fitted_poses(refinement: MANORefinement | None, data) -> torch.Tensor:
    """``(F, 48)`` the poses of the fitting frames: refined, or ``data``'s annotation without refinement."""
    return data.pose if refinement is None else refinement.poses()
