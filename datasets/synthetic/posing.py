"""Posing a subject: the ground-truth detailed meshes for given MANO parameters.

The MANO parameters that pose a subject come from :mod:`datasets.synthetic.motion`; here they are
applied to the subject's detailed canonical mesh (linear blend skinning, plus the hand model's pose
blend shapes carried to the subdivided mesh when it has any). A v2 subject first gets its
pose-dependent offsets (:class:`~datasets.synthetic.tissue.PoseDeformation`: knuckle bulges, palmar
folds, thenar bulge) along the canonical normal, as pose correctives are applied before skinning.
"""

from __future__ import annotations

import torch

from datasets.synthetic.subject import Subject


def pose_subject(
    hand_model, subject: Subject, pose: torch.Tensor, trans: torch.Tensor, levels: int = 3
) -> torch.Tensor:
    """Ground-truth posed meshes ``(F, N, 3)`` (world, metres) for MANO ``pose (F,48)``, ``trans (F,3)``.

    Linear blend skinning of the detailed canonical mesh with the subdivided weights
    (``utils.geometry.lbs.pose_mesh``). When the hand model has pose blend shapes (real MANO; the procedural
    hand has none), its per-frame corrective offsets are carried to the subdivided mesh the way the
    skinning weights are (edge midpoints average their endpoints), so the GT agrees with
    ``HandModel.forward`` as closely as without them.

    A v2 subject (``subject.pose_deformation`` set) also gets its pose-dependent offsets, functions of
    the full joint rotations ``pose + pose_mean``, before skinning (zero at the flat rest pose).
    """
    from utils.geometry.lbs import batch_rodrigues, pose_mesh

    verts = torch.as_tensor(subject.verts, dtype=torch.float32)
    weights = torch.as_tensor(subject.weights, dtype=torch.float32)
    shape = torch.as_tensor(subject.betas, dtype=torch.float32)
    if subject.pose_deformation is not None:
        full = (pose.detach().double().cpu() + hand_model.pose_mean.double().cpu()).reshape(len(pose), 16, 3)
        offsets = subject.pose_deformation.offsets(full.numpy())  # (F, N) metres
        normals = subject.pose_deformation.normals
        verts = verts[None] + torch.as_tensor(offsets[..., None] * normals[None], dtype=torch.float32)
    posedirs = hand_model.posedirs.detach().float().cpu()
    if float(posedirs.abs().max()) > 0:
        from utils.geometry.mesh import loop_subdivide

        rotmats = batch_rodrigues((pose + hand_model.pose_mean.float().cpu()).reshape(len(pose), 16, 3))
        feature = (rotmats[:, 1:] - torch.eye(3)).reshape(len(pose), -1)  # (F, 135)
        offsets = torch.einsum("fp,vcp->vfc", feature, posedirs).reshape(posedirs.shape[0], -1)  # (778, 3F)
        _, _, offsets_sub = loop_subdivide(
            torch.as_tensor(subject.verts_coarse), hand_model.faces.cpu(), levels, weights=offsets.double()
        )
        verts = verts + offsets_sub.float().reshape(-1, len(pose), 3).permute(1, 0, 2)
    return pose_mesh(hand_model, verts, weights, pose, shape, trans).float()
