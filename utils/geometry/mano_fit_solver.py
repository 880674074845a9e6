"""The objective and the optimisers of :func:`utils.geometry.mano_fit.fit_mano` (internal).

``_Objective`` evaluates the fitting loss (surface terms both directions with exact
point-to-triangle correspondences, joints, priors) and the exact residuals; ``_FrameResiduals``
writes one frame's loss as least-squares rows for Gauss-Newton; ``_run_gauss_newton``
(Levenberg-Marquardt) and ``_run_adam`` optimise a stage's free parameters. Parameters are a dict
``orient (F,3)``, ``articulation (F,45)``, ``trans (F,3)`` in centimetres, ``shape (1 or F, B)``.
"""

from __future__ import annotations

import math

import torch

from utils.geometry.closest_point import PointCloudSearch, TriangleMeshSearch

# The optimiser moves the translation in centimetres, so one step is comparable for radians,
# betas and translation (a 0.01 rad rotation moves a fingertip by about 1 mm).
_TRANS_UNIT = 0.01

_STAGE_PARAMS = {
    "global": ("orient", "trans"),
    "pose": ("orient", "trans", "articulation"),
    "all": ("orient", "trans", "articulation", "shape"),
}


def model_joints(hand_model, verts: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
    """``(F, 21, 3)``: the 16 MANO joints and the 5 fingertip vertices (``hand_joints`` order)."""
    from utils.geometry.mano import MANO_FINGERTIP_VERTEX_IDS

    return torch.cat([joints, verts[:, list(MANO_FINGERTIP_VERTEX_IDS.values())]], dim=1)


# ----------------------------------------------------------------------------------------------
# Objective
# ----------------------------------------------------------------------------------------------
def _robust(sq_mm: torch.Tensor, kind: str, scale: float) -> torch.Tensor:
    """ρ of squared distances in mm²; every ρ is ≈ the squared distance for small distances."""
    if kind == "none":
        return sq_mm
    if kind == "geman_mcclure":
        return scale * scale * sq_mm / (sq_mm + scale * scale)
    dist = sq_mm.clamp_min(1e-30).sqrt()
    return torch.where(dist <= scale, sq_mm, 2 * scale * dist - scale * scale)


class _Objective:
    """Evaluates the fitting loss and the exact residuals for the current parameters."""

    def __init__(self, model, settings, targets, num_frames, shape_rows):
        self.model, self.settings, self.targets = model, settings, targets
        self.num_frames, self.shape_rows = num_frames, shape_rows
        self.faces = model.faces.cpu()
        self.target_search = None
        if targets["points_all"] is not None:
            faces = targets["faces"]
            self.target_search = [
                TriangleMeshSearch(p, faces) if faces is not None else PointCloudSearch(p)
                for p in targets["points_all"]
            ]
        self.evaluations = 0
        self.robust_scale_mm = settings.robust_scale_mm  # annealed by the stages

    def forward(self, params, zero_trans: bool = False):
        pose = torch.cat([params["orient"], params["articulation"]], dim=1)
        shape = params["shape"].expand(self.num_frames, -1) if self.shape_rows == 1 else params["shape"]
        trans = torch.zeros_like(params["trans"]) if zero_trans else params["trans"] * _TRANS_UNIT
        verts, joints = self.model(pose, shape, trans)
        return verts, model_joints(self.model, verts, joints)

    def surface_residuals(self, verts, exact: bool, use_all: bool = False):
        """Per frame: squared distances (mm²) model -> target and target -> model (differentiable)."""
        out = []
        device = verts.device
        for f in range(self.num_frames):
            v = verts[f]
            s2t = t2s = None
            if self.target_search is not None:
                search = self.target_search[f]
                if isinstance(search, TriangleMeshSearch):
                    face_idx, bary, _ = search.query(v, exact=exact)
                    closest = (bary[:, :, None] * search.tris[face_idx]).sum(1).to(v)
                else:
                    idx, _ = search.query(v)
                    closest = self.targets["points_all"][f][idx.to(device)]
                s2t = ((v - closest) * 1000).pow(2).sum(-1)
                points = self.targets["points_all" if use_all else "points"][f]
                face_idx, bary, _ = TriangleMeshSearch(v, self.faces).query(points, exact=exact)
                corners = v[self.faces[face_idx].to(device)]  # (P, 3, 3), differentiable
                closest = (bary.to(v)[:, :, None] * corners).sum(1)
                t2s = ((points - closest) * 1000).pow(2).sum(-1)
            out.append((s2t, t2s))
        return out

    def joint_residuals(self, joints):
        """(F, J) squared joint distances (mm²), 0 where the target joint is missing, and the mask."""
        target = self.targets["joints"]
        valid = torch.isfinite(target).all(-1)
        diff = (joints[:, : target.shape[1]] - torch.nan_to_num(target)) * 1000
        return diff.pow(2).sum(-1) * valid, valid

    def __call__(self, params, stage_weights=True, exact=False):
        """Total loss (scalar tensor) and per-frame losses (F,) float."""
        self.evaluations += 1
        s = self.settings
        verts, joints = self.forward(params)
        per_frame = torch.zeros(self.num_frames, dtype=verts.dtype, device=verts.device)
        if self.target_search is not None:
            rows = []
            for s2t, t2s in self.surface_residuals(verts, exact=exact):
                rows.append(
                    s.weight_surface_to_target * _robust(s2t, s.robust, self.robust_scale_mm).mean()
                    + s.weight_target_to_surface * _robust(t2s, s.robust, self.robust_scale_mm).mean()
                )
            per_frame = per_frame + torch.stack(rows)
        if self.targets["joints"] is not None and s.weight_joints > 0:
            sq, valid = self.joint_residuals(joints)
            per_frame = per_frame + s.weight_joints * sq.sum(1) / valid.sum(1).clamp_min(1)
        articulation = params["articulation"]
        per_frame = per_frame + s.weight_pose_prior * articulation.pow(2).sum(1)
        if s.weight_angle_limit > 0:
            full = (articulation + self.model.hands_mean.to(articulation)).view(self.num_frames, 15, 3)
            excess = torch.relu(full.norm(dim=-1) - s.max_joint_angle)
            per_frame = per_frame + s.weight_angle_limit * excess.pow(2).sum(1)
        total = per_frame.sum() + s.weight_shape_prior * params["shape"].pow(2).sum()
        return total, per_frame.detach()


# ----------------------------------------------------------------------------------------------
# Optimisation
# ----------------------------------------------------------------------------------------------
def _relative_change(previous: float, current: float) -> float:
    return abs(previous - current) / max(abs(current), 1e-12)


def _run_adam(objective, params, names, iterations, settings):
    """Adam on ``names``; returns (iterations run, converged)."""
    chosen = [params[n] for n in names]
    for p in params.values():
        p.requires_grad_(any(p is c for c in chosen))
    optimiser = torch.optim.Adam(chosen, lr=settings.learning_rate)
    decay = (settings.learning_rate_final / settings.learning_rate) ** (1.0 / max(iterations - 1, 1))
    previous, calm = None, 0
    for step in range(iterations):
        for group in optimiser.param_groups:
            group["lr"] = settings.learning_rate * decay**step
        optimiser.zero_grad(set_to_none=True)
        loss, _ = objective(params, exact=settings.exact_search)
        loss.backward()
        optimiser.step()
        value = float(loss.detach())
        calm = (
            calm + 1 if previous is not None and _relative_change(previous, value) < settings.tolerance else 0
        )
        previous = value
        if calm >= 3:
            return step + 1, True
    return iterations, False


def _robust_weight(sq_mm: torch.Tensor, kind: str, scale: float) -> torch.Tensor:
    """dρ/d(d²): the iteratively reweighted least-squares weight of each squared distance."""
    if kind == "none":
        return torch.ones_like(sq_mm)
    if kind == "geman_mcclure":
        return (scale * scale / (sq_mm + scale * scale)).pow(2)
    dist = sq_mm.clamp_min(1e-30).sqrt()
    return torch.where(dist <= scale, torch.ones_like(dist), scale / dist)


def _unit(diff: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """Directions of ``diff`` (P,3); the given normals where ``diff`` is (numerically) zero."""
    length = diff.norm(dim=-1, keepdim=True)
    return torch.where(length > 1e-12, diff / length.clamp_min(1e-300), normals)


def _tri_normals(tris: torch.Tensor) -> torch.Tensor:
    n = torch.linalg.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-300)


class _FrameResiduals:
    """Residual rows of one frame for Gauss-Newton, with the correspondences of the current fit fixed.

    A distance ``d = |a - b|`` becomes the row ``u · (a - b)`` with ``u`` the current unit direction
    held fixed: equal to ``d`` at the current point and with the same derivative (the closest point
    minimises the distance), so the rows' squared sum is the loss and its gradient is exact.
    """

    def __init__(self, objective, f, verts):
        s, t = objective.settings, objective.targets
        self.objective, self.f = objective, f
        self.model_faces = objective.faces.to(verts.device)
        dtype, device = verts.dtype, verts.device
        self.s2t = self.t2s = None
        if objective.target_search is not None:
            v = verts.detach()
            search = objective.target_search[f]
            if isinstance(search, TriangleMeshSearch):
                face_idx, bary, _ = search.query(v, exact=s.exact_search)
                tris = search.tris[face_idx]
                target = (bary[:, :, None] * tris).sum(1).to(v)
                direction = _unit(v - target, _tri_normals(tris).to(v))
            else:
                idx, _ = search.query(v)
                target, direction = t["points_all"][f][idx.to(device)], None
            sq = ((v - target) * 1000).pow(2).sum(-1)
            scale = (
                s.weight_surface_to_target
                / v.shape[0]
                * _robust_weight(sq, s.robust, objective.robust_scale_mm)
            ).sqrt()
            self.s2t = (target, direction, scale)

            points = t["points"][f]
            face_idx, bary, _ = TriangleMeshSearch(v, objective.faces).query(points, exact=s.exact_search)
            face_idx, bary = face_idx.to(device), bary.to(dtype=dtype, device=device)
            tris = v[self.model_faces[face_idx]]
            closest = (bary[:, :, None] * tris).sum(1)
            direction = _unit(points - closest, _tri_normals(tris))
            sq = ((points - closest) * 1000).pow(2).sum(-1)
            scale = (
                s.weight_target_to_surface
                / points.shape[0]
                * _robust_weight(sq, s.robust, objective.robust_scale_mm)
            ).sqrt()
            self.t2s = (points, face_idx, bary, direction, scale)
        self.joints = None
        if t["joints"] is not None and s.weight_joints > 0:
            target = t["joints"][f]
            valid = torch.isfinite(target).all(-1)
            self.joints = (target[valid], valid, (s.weight_joints / valid.sum().clamp_min(1)).sqrt())

    def _model(self, x: torch.Tensor):
        """Vertices (V, 3) and the 21 joints (21, 3) for ``x = [pose 48, trans 3 (cm), shape B]``."""
        model = self.objective.model
        verts, joints = model(x[None, :48], x[None, 51:], x[None, 48:51] * _TRANS_UNIT)
        return verts[0], model_joints(model, verts, joints)[0]

    def _data_rows(self, verts: torch.Tensor, joints: torch.Tensor, offset: bool = True) -> torch.Tensor:
        """Surface and joint rows: linear in ``verts (..., V, 3)`` and ``joints (..., 21, 3)``, so
        ``offset=False`` applied to their Jacobians (a leading tangent dimension) gives the rows'
        Jacobian."""
        rows = []
        if self.s2t is not None:
            target, direction, scale = self.s2t
            diff = (verts - target if offset else verts) * 1000
            rows.append(
                (scale[:, None] * diff).flatten(-2)
                if direction is None
                else scale * (direction * diff).sum(-1)
            )
            points, face_idx, bary, direction, scale = self.t2s
            closest = (bary[:, :, None] * verts[..., self.model_faces[face_idx], :]).sum(-2)
            rows.append(scale * (direction * ((points - closest) if offset else -closest) * 1000).sum(-1))
        if self.joints is not None:
            target, valid, scale = self.joints
            chosen = joints[..., : valid.shape[0], :][..., valid, :]
            rows.append(scale * ((chosen - target) if offset else chosen).flatten(-2) * 1000)
        return torch.cat(rows, -1) if rows else verts.new_zeros(verts.shape[:-2] + (0,))

    def _prior_rows(self, x: torch.Tensor) -> torch.Tensor:
        s = self.objective.settings
        articulation = x[3:48]
        rows = [math.sqrt(s.weight_pose_prior) * articulation]
        if s.weight_angle_limit > 0:
            full = (articulation + self.objective.model.hands_mean.to(x)).view(15, 3)
            angle = (full.pow(2).sum(-1) + 1e-20).sqrt()
            rows.append(math.sqrt(s.weight_angle_limit) * torch.relu(angle - s.max_joint_angle))
        return torch.cat(rows)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Rows (R,) for the frame's parameters ``x = [pose 48, trans 3 (cm), shape B]``."""
        return torch.cat([self._data_rows(*self._model(x)), self._prior_rows(x)])

    def jacobian(self, x: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
        """``(R, len(free))``: the rows' Jacobian along the entries ``free`` of ``x``. Forward mode
        through the hand model only; the data rows are linear in its outputs."""
        embed = torch.zeros(x.numel(), free.numel(), dtype=x.dtype, device=x.device)
        embed[free, torch.arange(free.numel(), device=x.device)] = 1.0
        fixed = x.index_fill(0, free, 0.0)
        z = x[free]
        jac_verts, jac_joints = torch.func.jacfwd(lambda z: self._model(fixed + embed @ z))(
            z
        )  # (V,3,T), (21,3,T)
        data = self._data_rows(
            jac_verts.permute(2, 0, 1), jac_joints.permute(2, 0, 1), offset=False
        )  # (T, Rd)
        prior = torch.func.jacfwd(lambda z: self._prior_rows(fixed + embed @ z))(z)  # (Rp, T)
        return torch.cat([data.T, prior], 0)


def _run_gauss_newton(objective, params, names, iterations, settings):
    """Levenberg-Marquardt on the parameters ``names`` (robust losses by reweighting); returns
    (steps run, converged)."""
    num_frames, shape_rows = objective.num_frames, objective.shape_rows
    betas = params["shape"].shape[1]
    per_frame = 51  # pose 48 + trans 3
    size = per_frame * num_frames + betas * shape_rows
    free = torch.zeros(num_frames, per_frame, dtype=torch.bool)
    free[:, :3] = "orient" in names
    free[:, 3:48] = "articulation" in names
    free[:, 48:] = "trans" in names
    free = torch.cat([free.reshape(-1), torch.full((betas * shape_rows,), "shape" in names)])
    is_free = free.to(params["orient"].device)
    free = free.nonzero().squeeze(1).to(params["orient"].device)

    def pack(p):
        frame = torch.cat([p["orient"], p["articulation"], p["trans"]], 1).reshape(-1)
        return torch.cat([frame, p["shape"].reshape(-1)])

    def unpack(x):
        frame = x[: per_frame * num_frames].view(num_frames, per_frame)
        return {
            "orient": frame[:, :3],
            "articulation": frame[:, 3:48],
            "trans": frame[:, 48:51],
            "shape": x[per_frame * num_frames :].view(shape_rows, betas),
        }

    for p in params.values():
        p.requires_grad_(False)
    x = pack(params)
    current = float(objective(unpack(x), exact=settings.exact_search)[0])
    damping = 1e-4
    for step in range(iterations):  # noqa: B007 (its value after a break is the count returned)
        hessian = torch.zeros(size, size, dtype=x.dtype, device=x.device)
        gradient = torch.zeros(size, dtype=x.dtype, device=x.device)
        p = unpack(x)
        with torch.no_grad():
            verts, _ = objective.forward(p)
        for f in range(num_frames):
            shape_slot = 0 if shape_rows == 1 else f
            cols = torch.cat(
                [
                    torch.arange(per_frame * f, per_frame * (f + 1)),
                    per_frame * num_frames + betas * shape_slot + torch.arange(betas),
                ]
            ).to(x.device)
            local = is_free[cols]  # this frame's free columns
            if not bool(local.any()):
                continue
            rows_fn = _FrameResiduals(objective, f, verts[f])
            xf = torch.cat([p["orient"][f], p["articulation"][f], p["trans"][f], p["shape"][shape_slot]])
            local_idx = local.nonzero().squeeze(1)
            jac = rows_fn.jacobian(xf, local_idx)  # (R, free)
            res = rows_fn(xf)
            sub = cols[local_idx]
            hessian[sub[:, None], sub[None, :]] += jac.T @ jac
            gradient[sub] += jac.T @ res
        shape_cols = slice(per_frame * num_frames, size)
        hessian[shape_cols, shape_cols] += settings.weight_shape_prior * torch.eye(
            betas * shape_rows, dtype=x.dtype, device=x.device
        )
        gradient[shape_cols] += settings.weight_shape_prior * x[shape_cols]
        hessian, gradient = hessian[free[:, None], free[None, :]], gradient[free]
        diagonal = hessian.diagonal().clamp_min(1e-9)
        accepted = False
        for _ in range(12):
            system = hessian + damping * torch.diag(diagonal)
            delta = torch.zeros_like(x).index_put((free,), torch.linalg.solve(system, -gradient))
            value = float(objective(unpack(x + delta), exact=settings.exact_search)[0])
            if math.isfinite(value) and value < current:
                accepted = True
                break
            damping *= 4.0
        if not accepted:  # no decrease in the descent direction even with heavy damping: a minimum
            break
        x = x + delta
        damping = max(damping / 3.0, 1e-9)
        change = _relative_change(current, value)
        current = value
        if change < settings.tolerance or current < 1e-12:
            break
    else:
        _copy_into(params, unpack(x))
        return iterations, False
    _copy_into(params, unpack(x))
    return step + 1, True


def _copy_into(params, values):
    with torch.no_grad():
        for key, value in values.items():
            params[key].copy_(value)


# ----------------------------------------------------------------------------------------------
# Starts for a frame that failed the quality check (correspondence-free targets)
# ----------------------------------------------------------------------------------------------
# MANO joint chains of the fingers (base, middle, tip joint).
FINGER_CHAINS = {
    "thumb": (13, 14, 15),
    "index": (1, 2, 3),
    "middle": (4, 5, 6),
    "ring": (10, 11, 12),
    "pinky": (7, 8, 9),
}
# Whole-hand starting articulations: flexion (radians) of the (base, middle, tip) joints of the four
# fingers and of the thumb, from the flat hand; "mean" is the model's mean pose.
ARTICULATION_PRESETS = {
    "mean": None,
    "half": ((0.8, 0.9, 0.5), (0.3, 0.5, 0.5)),
    "fist": ((1.4, 1.6, 1.0), (0.5, 0.9, 1.0)),
}
# One finger's candidates in the search: flexion of the base joint (the middle and tip joints follow
# in the ratio _CURL_RATIO) times a spread of the base joint, radians.
_CURLS = (-0.3, 0.0, 0.3, 0.6, 0.9, 1.2, 1.5)
_SPREADS = (-0.3, 0.0, 0.3)
_CURL_RATIO = (1.0, 1.1, 0.7)
# Distances in the search score are capped (mm): a point far from everything counts once, not by how far.
_SCORE_CAP_MM = 20.0


def finger_axes(model) -> tuple[torch.Tensor, torch.Tensor]:
    """Flexion and spread axes ``(16, 3)`` float64 of every joint, from the model's rest joints.

    Flexion turns a bone towards the palm side (-y of the rest frame, as in MANO and the procedural
    hand, either side); spread turns it sideways (normal to the bone and the flexion axis).
    """
    joints = model.rest_joints().detach().double().cpu()
    parents = model.parents.tolist()
    children = {p: j for j, p in enumerate(parents) if p > 0}
    flex = torch.zeros(16, 3, dtype=torch.float64)
    spread = torch.zeros(16, 3, dtype=torch.float64)
    palm_side = torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)
    for j in range(1, 16):
        bone = joints[children[j]] - joints[j] if j in children else joints[j] - joints[parents[j]]
        flex[j] = torch.nn.functional.normalize(torch.linalg.cross(bone, palm_side), dim=0)
        spread[j] = torch.nn.functional.normalize(torch.linalg.cross(flex[j], bone), dim=0)
    return flex, spread


def preset_articulation(model, name: str) -> torch.Tensor:
    """``(45,)`` float64 articulation of :data:`ARTICULATION_PRESETS` ``name`` as the fit's parameters
    (relative to the model's mean pose, which ``HandModel.forward`` adds)."""
    full = torch.zeros(16, 3, dtype=torch.float64)
    preset = ARTICULATION_PRESETS[name]
    if preset is None:
        return torch.zeros(45, dtype=torch.float64)
    flex, _ = finger_axes(model)
    fingers, thumb = preset
    for finger, chain in FINGER_CHAINS.items():
        for joint, angle in zip(chain, thumb if finger == "thumb" else fingers, strict=True):
            full[joint] = angle * flex[joint]
    return full[1:].reshape(45) - model.hands_mean.detach().double().cpu()


def finger_candidates(model, chain) -> torch.Tensor:
    """``(K, 9)`` float64: the candidate rotations (axis-angle, from the flat hand) of one finger's three
    joints tried by :func:`search_fingers`."""
    flex, spread = finger_axes(model)
    out = []
    for curl in _CURLS:
        for side in _SPREADS:
            rows = [curl * ratio * flex[j] for ratio, j in zip(_CURL_RATIO, chain, strict=True)]
            rows[0] = rows[0] + side * spread[chain[0]]
            out.append(torch.cat(rows))
    return torch.stack(out)


class ChamferScore:
    """Symmetric, capped nearest-point distance (mm) between model vertices and a target point set.

    ``score(verts (K, V, 3)) -> (K,)``: mean over the target points of the distance to the nearest model
    vertex plus mean over the model vertices of the distance to the nearest target point, each capped at
    ``_SCORE_CAP_MM``. Cheap (KD-trees, no triangles): it ranks starts, the fit then refines them.
    """

    def __init__(self, points: torch.Tensor):
        from scipy.spatial import cKDTree

        self.points = points.detach().cpu().double().numpy()
        self.tree = cKDTree(self.points)

    def __call__(self, verts: torch.Tensor) -> torch.Tensor:
        import numpy as np
        from scipy.spatial import cKDTree

        scores = []
        for v in verts.detach().cpu().double().numpy():
            to_target = np.minimum(self.tree.query(v)[0] * 1000, _SCORE_CAP_MM).mean()
            to_model = np.minimum(cKDTree(v).query(self.points)[0] * 1000, _SCORE_CAP_MM).mean()
            scores.append(to_target + to_model)
        return torch.tensor(scores, dtype=torch.float64)


def rigid_icp(source: torch.Tensor, score: ChamferScore, rotation: torch.Tensor, iterations: int = 15):
    """Rigid point-to-point ICP of ``source (V, 3)`` onto the target of ``score``, from ``rotation``
    about the centroids; pairs farther than 3x their median are left out. Returns ``R (3, 3)``, ``t (3,)``
    float64 with ``R x + t`` the aligned source."""
    src = source.detach().cpu().double()
    target = torch.as_tensor(score.points)
    centre = src.mean(0)
    rot, trans = rotation.double(), target.mean(0) - rotation.double() @ centre
    for _ in range(iterations):
        moved = src @ rot.T + trans
        dist, idx = score.tree.query(moved.numpy())
        keep = torch.as_tensor(dist <= 3 * max(float(torch.as_tensor(dist).median()), 1e-6))
        a, b = src[keep], target[torch.as_tensor(idx)[keep]]
        a_c, b_c = a - a.mean(0), b - b.mean(0)
        u, _, vh = torch.linalg.svd(b_c.T @ a_c)
        fix = torch.diag(torch.tensor([1.0, 1.0, torch.sign(torch.det(u @ vh))], dtype=torch.float64))
        rot = u @ fix @ vh
        trans = b.mean(0) - rot @ a.mean(0)
    return rot, trans


def search_fingers(
    verts_of, pose: torch.Tensor, score: ChamferScore, hands_mean, candidates, passes: int = 2
):
    """Coordinate search over the fingers: each finger in turn takes the candidate configuration of its
    three joints that lowers ``score`` most, the others held; ``passes`` rounds.

    Args:
        verts_of: ``pose (K, 48) -> verts (K, V, 3)`` (shape and translation fixed by the caller).
        pose: ``(48,)`` the start (as ``HandModel.forward`` takes it).
        hands_mean: ``(45,)`` the model's mean articulation (candidates are from the flat hand).
        candidates: ``{chain: (K, 9)}`` from :func:`finger_candidates`.
    Returns:
        the best pose ``(48,)`` and its score (mm).
    """
    pose = pose.detach().clone().double()
    best = float(score(verts_of(pose[None]))[0])
    for _ in range(passes):
        for chain, options in candidates.items():
            trial = pose.expand(options.shape[0], 48).clone()
            cols = torch.cat([torch.arange(3 * j, 3 * j + 3) for j in chain])
            trial[:, cols] = options - hands_mean[cols - 3]
            values = score(verts_of(trial))
            k = int(values.argmin())
            if float(values[k]) < best - 1e-9:
                best, pose = float(values[k]), trial[k].clone()
    return pose, best
