"""A trained avatar as a skinned glTF 2.0 file (``scripts/export_avatar.py``), and how far the file's own
skinning lands from the avatar at the capture's poses.

The avatar's fields depend on the pose; a glTF skin cannot. The export takes their means over the fitted
frames: the canonical mesh ``template + mean displacement``, the mean albedo as vertex colours and the mean
skinning weights, cut to the 4 largest per vertex and renormalised (glTF's ``JOINTS_0``/``WEIGHTS_0``). The
skeleton is MANO's: 16 joints at the avatar's rest joints, the parent hierarchy, bind pose = the canonical
(zero-rotation) hand, and each joint node's default rotation = the hand mean (MANO pose 0), so a viewer
shows the relaxed hand. A MANO pose ``p`` is applied by setting joint ``j``'s node rotation to the
rotation of ``p_j + hands_mean_j`` and the root node's translation to ``rest_joint_0 + trans``.

Not carried: the pose-dependent displacement, albedo and weights (the networks), and the SH shading.
:func:`skinning_gap_mm` measures what that costs at the capture's poses.
"""

from __future__ import annotations

import numpy as np
import torch

from trainers.srhand.poses import PoseSequence
from utils.geometry.gltf_io import SkinAnimation, SkinnedMesh, read_skinned_glb, skin_vertices
from utils.geometry.rotations import axis_angle_to_quaternion

MANO_JOINT_NAMES = (
    "wrist",
    "index1",
    "index2",
    "index3",
    "middle1",
    "middle2",
    "middle3",
    "pinky1",
    "pinky2",
    "pinky3",
    "ring1",
    "ring2",
    "ring3",
    "thumb1",
    "thumb2",
    "thumb3",
)
INFLUENCES = 4  # joints per vertex in glTF's JOINTS_0 / WEIGHTS_0


@torch.no_grad()
def mean_fields(avatar, poses: PoseSequence) -> dict[str, torch.Tensor]:
    """The avatar's fields averaged over ``poses`` (CPU): ``delta (V, 3)`` metres, ``albedo (V, 3)`` RGB in
    [0, 1], ``weights (V, 16)`` (rows sum to 1)."""
    device = avatar.verts_template.device
    sums = {"delta": 0.0, "albedo": 0.0, "weights": 0.0}
    for i in range(len(poses)):
        geo = avatar.forward_geometry(poses.pose[i].to(device), poses.trans[i].to(device))
        for key in sums:
            sums[key] = sums[key] + geo[key].double().cpu()
    return {key: (value / len(poses)).float() for key, value in sums.items()}


def top_weights(weights: torch.Tensor, k: int = INFLUENCES) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest weights per vertex, renormalised: joint indices ``(V, k)`` and weights ``(V, k)``
    (float32 rows summing to 1 within float32 rounding)."""
    values, index = torch.topk(weights.double(), k, dim=-1)
    values = values / values.sum(-1, keepdim=True)
    return index.numpy().astype(np.int64), values.numpy().astype(np.float32)


def pose_animation(avatar, poses: PoseSequence, fps: float) -> SkinAnimation:
    """Keyframes of ``poses`` at ``fps`` for the skeleton of :func:`skinned_mesh` (:func:`gltf_pose` of each)."""
    keys = [gltf_pose(avatar, poses.pose[i], poses.trans[i]) for i in range(len(poses))]
    return SkinAnimation(
        times=np.arange(len(poses)) / float(fps),
        rotations=np.stack([rotations for rotations, _ in keys]),
        root_translations=np.stack([root for _, root in keys]),
        name=poses.source,
    )


def skinned_mesh(
    avatar, fields: dict[str, torch.Tensor], animation: SkinAnimation | None = None
) -> SkinnedMesh:
    """The glTF content of ``avatar`` with the (mean) ``fields`` of :func:`mean_fields` (and ``animation``)."""
    joints_idx, weights = top_weights(fields["weights"])
    pose_mean = avatar.pose_mean.detach().cpu().double().numpy().reshape(-1, 3)
    return SkinnedMesh(
        verts=(avatar.verts_template.cpu().double() + fields["delta"].double()).numpy(),
        faces=avatar.faces.cpu().numpy(),
        colors=fields["albedo"].double().numpy(),
        joints=avatar.joints_rest.cpu().double().numpy(),
        parents=avatar.parents.cpu().numpy().astype(np.int64),
        joint_names=list(MANO_JOINT_NAMES),
        skin_joints=joints_idx,
        skin_weights=weights,
        rest_rotations=axis_angle_to_quaternion(pose_mean),
        root_translation=np.zeros(3),
        animation=animation,
    )


def gltf_pose(avatar, pose: torch.Tensor, trans: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The glTF joint-node rotations ``(16, 4)`` (x, y, z, w) and root translation ``(3,)`` of a MANO pose
    ``(48,)`` without the hand mean and ``trans (3,)`` (metres)."""
    full = pose.detach().cpu().double().reshape(-1, 3) + avatar.pose_mean.detach().cpu().double().reshape(
        -1, 3
    )
    root = avatar.joints_rest[0].detach().cpu().double() + trans.detach().cpu().double().reshape(3)
    return axis_angle_to_quaternion(full.numpy()), root.numpy()


@torch.no_grad()
def skinning_gap_mm(path, avatar, poses: PoseSequence) -> dict:
    """Distances (mm) between the ``.glb`` at ``path`` skinned in NumPy (:func:`skin_vertices`) and the avatar's
    own mesh (``forward_geometry``, pose-dependent fields) at each pose of ``poses``.

    Returns:
        ``mean_mm`` (mean over frames of the mean vertex distance), ``max_mm`` (largest vertex distance over
        all frames), ``per_frame_mean_mm`` and ``per_frame_max_mm`` (by ``poses.labels``), ``frames``.
    """
    glb = read_skinned_glb(path)
    device = avatar.verts_template.device
    means, maxes = [], []
    for i in range(len(poses)):
        rotations, root = gltf_pose(avatar, poses.pose[i], poses.trans[i])
        ours = skin_vertices(glb, rotations, root)
        theirs = avatar.forward_geometry(poses.pose[i].to(device), poses.trans[i].to(device))["verts_posed"]
        dist = np.linalg.norm(ours - theirs.double().cpu().numpy(), axis=-1) * 1000.0
        means.append(float(dist.mean()))
        maxes.append(float(dist.max()))
    return {
        "frames": len(poses),
        "mean_mm": float(np.mean(means)),
        "max_mm": float(np.max(maxes)),
        "per_frame_mean_mm": dict(zip(poses.labels, means, strict=True)),
        "per_frame_max_mm": dict(zip(poses.labels, maxes, strict=True)),
    }
