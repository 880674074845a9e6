"""Linear blend skinning for MANO-style hands (pure PyTorch, any device, differentiable).

Frames and units: the *canonical* frame is the hand model's rest frame (MANO: a flat hand, wrist
near the origin); lengths are metres. A pose is 16 axis-angle vectors (radians) in MANO joint order
(0 wrist = global orientation, 1-3 index, 4-6 middle, 7-9 pinky, 10-12 ring, 13-15 thumb), each
rotating its bone relative to the parent, expressed in the rest frame. Posed vertices are in the
*world* frame: skinned, then translated by ``trans``.

``pose_mesh`` is the skinning used by XHand/SRHand (``repose.lbs_pose``): joints regressed from the
shaped 778-vertex template, rotations of ``pose + pose_mean``, no pose-corrective blend shapes by
default, then ``+ trans``; it skins any canonical vertices (e.g. a subdivided template) with any
weights. With the model's own template and weights it equals the MANO layer's forward (minus the
pose blend shapes, which are zero for the procedural hand).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["batch_rodrigues", "rigid_transforms", "linear_blend_skinning", "pose_mesh", "rotation_to_skew"]

_SMALL_ANGLE_SQ = 1e-8  # below this squared angle, Taylor series replace sin/cos ratios


def rotation_to_skew(vec: torch.Tensor) -> torch.Tensor:
    """Skew-symmetric cross-product matrices ``[v]_x``.

    Args:
        vec: (..., 3) vectors.
    Returns:
        (..., 3, 3) matrices with ``[v]_x @ w == cross(v, w)``.
    """
    x, y, z = vec.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(vec.shape + (3,))


def batch_rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from axis-angle vectors (Rodrigues' formula).

    ``R = I + a(θ) K + b(θ) K²`` with ``K = [ω]_x``, ``a = sin θ / θ``, ``b = (1 - cos θ) / θ²``; near
    ``θ = 0`` both ratios use their Taylor series, so values and gradients are exact and finite at
    the identity (the gradient of ``R`` w.r.t. ``ω`` at 0 is the skew basis).

    Args:
        axis_angle: (..., 3) rotation vectors, radians (direction = axis, norm = angle).
    Returns:
        (..., 3, 3) rotation matrices, same dtype and device.

    Example:
        >>> batch_rodrigues(torch.zeros(2, 3)).shape
        torch.Size([2, 3, 3])
    """
    if axis_angle.shape[-1] != 3:
        raise ValueError(
            f"batch_rodrigues expects (..., 3) axis-angle vectors, got {tuple(axis_angle.shape)}"
        )
    theta_sq = (axis_angle * axis_angle).sum(-1, keepdim=True)[..., None]  # (..., 1, 1)
    small = theta_sq < _SMALL_ANGLE_SQ
    # Keep the unused branch finite: sqrt and division never see 0.
    safe_sq = torch.where(small, torch.ones_like(theta_sq), theta_sq)
    theta = torch.sqrt(safe_sq)
    a_big = torch.sin(theta) / theta
    # (1 - cos t) / t^2 written with the half angle: no cancellation for small t in float32.
    b_big = 0.5 * (torch.sin(0.5 * theta) / (0.5 * theta)) ** 2
    a_small = 1.0 - theta_sq / 6.0 + theta_sq * theta_sq / 120.0
    b_small = 0.5 - theta_sq / 24.0 + theta_sq * theta_sq / 720.0
    a = torch.where(small, a_small, a_big)
    b = torch.where(small, b_small, b_big)
    k = rotation_to_skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a * k + b * (k @ k)


def _check_parents(parents: Sequence[int] | torch.Tensor, num_joints: int) -> list[int]:
    parents = [int(p) for p in (parents.tolist() if torch.is_tensor(parents) else parents)]
    if len(parents) != num_joints:
        raise ValueError(f"parents has {len(parents)} entries for {num_joints} joints")
    if parents[0] >= 0 or any(not (0 <= p < i) for i, p in enumerate(parents) if i > 0):
        raise ValueError(
            f"parents must start with the root (-1 or negative) and list every parent "
            f"before its children, got {parents}"
        )
    return parents


def rigid_transforms(rotmats: torch.Tensor, joints: torch.Tensor, parents, return_joints: bool = False):
    """Per-joint rigid transforms along the kinematic tree, in "rest joint removed" form.

    With ``G_0 = [R_0 | J_0]`` and ``G_i = G_parent(i) [R_i | J_i - J_parent(i)]`` (world transform of
    joint i's frame), the returned ``A_i = G_i [I | -J_i]`` maps a *rest-pose* point rigidly attached
    to bone i to its posed position: ``x' = A_i[:3,:3] x + A_i[:3,3]``.

    Args:
        rotmats: (B, J, 3, 3) local joint rotations (relative to the parent).
        joints: (B, J, 3) rest-pose joint positions, metres.
        parents: J parent indices (list or tensor), ``parents[0] < 0``, ``parents[i] < i``.
        return_joints: also return the posed joint positions.
    Returns:
        (B, J, 4, 4) transforms; with ``return_joints``, also (B, J, 3) posed joints.
    """
    if rotmats.dim() != 4 or rotmats.shape[-2:] != (3, 3):
        raise ValueError(f"rotmats must be (B, J, 3, 3), got {tuple(rotmats.shape)}")
    if joints.shape != rotmats.shape[:2] + (3,):
        raise ValueError(
            f"joints must be (B, J, 3) = {tuple(rotmats.shape[:2]) + (3,)}, got {tuple(joints.shape)}"
        )
    num_joints = rotmats.shape[1]
    par = _check_parents(parents, num_joints)
    rel = joints.clone()
    rel[:, 1:] = joints[:, 1:] - joints[:, par[1:]]
    local = torch.cat([rotmats, rel[..., None]], dim=-1)  # (B, J, 3, 4)
    bottom = torch.zeros_like(local[..., :1, :])
    bottom[..., 0, 3] = 1.0
    local = torch.cat([local, bottom], dim=-2)  # (B, J, 4, 4)
    chain = [local[:, 0]]
    for i in range(1, num_joints):
        chain.append(chain[par[i]] @ local[:, i])
    world = torch.stack(chain, dim=1)  # (B, J, 4, 4)
    posed_joints = world[..., :3, 3]
    # Remove the rest joint: translation t - R J.
    offset = (world[..., :3, :3] @ joints[..., None])[..., 0]
    transforms = torch.cat([world[..., :3, :3], (posed_joints - offset)[..., None]], dim=-1)
    transforms = torch.cat([transforms, world[..., 3:, :]], dim=-2)
    if return_joints:
        return transforms, posed_joints
    return transforms


def linear_blend_skinning(
    verts: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor
) -> torch.Tensor:
    """Skin vertices: ``x'_v = (Σ_j w_vj A_j) [x_v; 1]``.

    Args:
        verts: (B, V, 3) or (V, 3) canonical (rest-pose) vertices, metres.
        weights: (V, J) or (B, V, J) skinning weights (rows normally sum to 1).
        transforms: (B, J, 4, 4) relative joint transforms from :func:`rigid_transforms`.
    Returns:
        (B, V, 3) posed vertices (before any global translation).
    """
    if transforms.dim() != 4 or transforms.shape[-2:] != (4, 4):
        raise ValueError(f"transforms must be (B, J, 4, 4), got {tuple(transforms.shape)}")
    batch, num_joints = transforms.shape[:2]
    if verts.dim() == 2:
        verts = verts.unsqueeze(0).expand(batch, -1, -1)
    if verts.dim() != 3 or verts.shape[-1] != 3 or verts.shape[0] not in (1, batch):
        raise ValueError(f"verts must be (B, V, 3) or (V, 3) with B = {batch}, got {tuple(verts.shape)}")
    num_verts = verts.shape[1]
    if weights.shape[-2:] != (num_verts, num_joints) or weights.dim() not in (2, 3):
        raise ValueError(
            f"weights must be (V, J) or (B, V, J) = ({num_verts}, {num_joints}), "
            f"got {tuple(weights.shape)}"
        )
    if weights.dim() == 3 and weights.shape[0] not in (1, batch):
        raise ValueError(f"batched weights must have batch size 1 or {batch}, got {tuple(weights.shape)}")
    flat = transforms[:, :, :3, :].reshape(batch, num_joints, 12)
    if weights.dim() == 2:
        blended = torch.matmul(weights, flat)  # (B, V, 12)
    else:
        blended = torch.bmm(weights.expand(batch, -1, -1), flat)
    blended = blended.reshape(batch, num_verts, 3, 4)
    return (blended[..., :3] @ verts[..., None])[..., 0] + blended[..., 3]


def pose_mesh(
    hand_model,
    verts_canonical: torch.Tensor,
    weights: torch.Tensor,
    pose: torch.Tensor,
    shape: torch.Tensor | None = None,
    trans: torch.Tensor | None = None,
    use_pose_blendshapes: bool = False,
    return_joints: bool = False,
):
    """Pose canonical vertices with the hand model's skeleton (XHand/SRHand ``lbs_pose``).

    Joints are regressed from the shaped model template ``v_template + shapedirs · shape`` (the
    model's own 778 vertices, whatever ``verts_canonical`` is); rotations are
    ``batch_rodrigues(pose + pose_mean)``; vertices are skinned and then translated.

    Args:
        hand_model: a :class:`utils.geometry.mano.HandModel` (or anything with ``v_template (V0,3)``,
            ``shapedirs (V0,3,S)``, ``J_regressor (16,V0)``, ``parents (16,)``, ``pose_mean (48,)``
            and, for blend shapes, ``posedirs (V0,3,135)``).
        verts_canonical: (V, 3) or (B, V, 3) rest-pose vertices in the model frame, metres (e.g. the
            subdivided shaped template).
        weights: (V, 16) or (B, V, 16) skinning weights for ``verts_canonical``.
        pose: (B, 48) axis-angle, radians: global orientation then 15 finger joints, *relative to*
            ``pose_mean`` (zero pose = the model's mean pose).
        shape: (B, S) or (S,) shape coefficients for the joint regression; None = zeros (template).
        trans: (B, 3) world translation, metres; None = no translation.
        use_pose_blendshapes: add the model's pose-corrective offsets (needs V == V0).
        return_joints: also return the posed joints.
    Returns:
        (B, V, 3) posed vertices in the world frame, metres; with ``return_joints`` also
        (B, 16, 3) posed joints (translated too).
    """
    if pose.dim() != 2 or pose.shape[1] != 48:
        raise ValueError(f"pose must be (B, 48), got {tuple(pose.shape)}")
    batch = pose.shape[0]
    dtype, device = pose.dtype, pose.device
    v_template = hand_model.v_template.to(dtype)
    shapedirs = hand_model.shapedirs.to(dtype)
    num_betas = shapedirs.shape[-1]
    if shape is None:
        shape = torch.zeros(num_betas, dtype=dtype, device=device)
    if shape.dim() == 1:
        shape = shape.unsqueeze(0).expand(batch, -1)
    if shape.shape != (batch, num_betas):
        raise ValueError(
            f"shape must be (B, {num_betas}) or ({num_betas},) with B = {batch}, got {tuple(shape.shape)}"
        )
    v_shaped = v_template + torch.einsum("bl,vcl->bvc", shape.to(dtype), shapedirs)  # (B, V0, 3)
    joints = torch.einsum("jv,bvc->bjc", hand_model.J_regressor.to(dtype), v_shaped)
    full_pose = pose + hand_model.pose_mean.to(dtype)
    rotmats = batch_rodrigues(full_pose.reshape(batch, -1, 3))
    transforms, posed_joints = rigid_transforms(rotmats, joints, hand_model.parents, return_joints=True)
    verts = verts_canonical.to(dtype)
    if verts.dim() == 2:
        verts = verts.unsqueeze(0).expand(batch, -1, -1)
    if use_pose_blendshapes:
        if verts.shape[1] != v_template.shape[0]:
            raise ValueError(
                f"pose blend shapes need the model's own {v_template.shape[0]} vertices, "
                f"got {verts.shape[1]}"
            )
        eye = torch.eye(3, dtype=dtype, device=device)
        pose_feature = (rotmats[:, 1:] - eye).reshape(batch, -1)  # (B, 135)
        verts = verts + torch.einsum("bp,vcp->bvc", pose_feature, hand_model.posedirs.to(dtype))
    posed = linear_blend_skinning(verts, weights.to(dtype), transforms)
    if trans is not None:
        if trans.shape != (batch, 3):
            raise ValueError(f"trans must be (B, 3) with B = {batch}, got {tuple(trans.shape)}")
        posed = posed + trans[:, None].to(dtype)
        posed_joints = posed_joints + trans[:, None].to(dtype)
    if return_joints:
        return posed, posed_joints
    return posed
