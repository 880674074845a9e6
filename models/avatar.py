"""XHand-style explicit hand avatar of SRHand (paper sec. 3.2, eq. 5-6).

A Loop-subdivided MANO template in canonical (rest) space carries three pose-conditioned per-vertex
fields, each predicted by a :class:`ConditionNetwork`:

* skinning weights ``W = softmax(lbs_net(c))`` (V, 16),
* albedo ``a = sigmoid(color_net(c))`` (V, 3), RGB in [0, 1],
* displacement ``d = delta_scale * delta_net(c, a.detach())`` (V, 3), metres, canonical space. Feeding
  the (detached) predicted albedo to the displacement network is SRHand's geometric enhancement
  (``use_enh``); without it the model is XHand's.

The canonical mesh ``T + d`` is posed by linear blend skinning with ``W`` (joints regressed from the
778-vertex shaped template, rotations of ``pose + pose_mean``, no pose blend shapes) and shaded with
second-order spherical harmonics, one 27-vector per camera, on **camera-space** normals. The
condition ``c`` is the 16 rotation matrices of ``pose + pose_mean``, flattened and divided by pi
(144-d).

Frames: ``verts_posed`` are world coordinates (metres); ``uv_pix`` are pixel coordinates of the
rendered resolution (pixel centres at +0.5); ``normal`` images are unit camera-space normals (0 on
the background). See ``docs/srhand_model.md`` for the differences from the reference code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from utils.geometry.lbs import batch_rodrigues, linear_blend_skinning, rigid_transforms
from utils.geometry.mesh import loop_subdivide, uniform_laplacian, unique_edges, vertex_normals
from utils.geometry.sh import sh_shade
from utils.render import get_renderer

__all__ = ["ConditionNetwork", "HandAvatar", "MEAN_HAND_ALBEDO_RGB", "rotation_condition"]

# Mean hand albedo of the reference code (its BGR constant converted to RGB).
MEAN_HAND_ALBEDO_RGB = (0.44127, 0.36127, 0.31997)


class ConditionNetwork(nn.Module):
    """Per-vertex MLP with a mean-plus-code output head (XHand's feature-embedding module).

    For every vertex ``v``: ``h_v = MLP([cond, z_v, extra_v])`` (``d_code`` outputs) and
    ``out_v = x_mean_v + h_v @ softmax(S, dim=0) - offset_v``, where ``z`` is a learnable per-vertex
    latent (V, ``d_latent``, zeros), ``S`` a learnable static code (``d_code``, ``d_out``, zeros, so
    the softmax starts uniform), ``x_mean`` a frozen buffer and ``offset`` a frozen buffer used by
    :meth:`renew_mean` (zeros until then).

    Args:
        x_mean: ``(N, d_out)`` initial mean output (pre-activation).
        d_cond: size of the shared per-frame condition.
        d_out: output size; defaults to ``x_mean.shape[1]``.
        d_latent: per-vertex latent size. d_code: MLP output (code) size.
        width, depth: hidden width and number of hidden layers (``depth + 1`` Linear layers).
        d_extra: size of an optional extra per-vertex input (e.g. 3 for the detached albedo).
        init: ``"zero"``: zero last layer, so the output starts exactly at ``x_mean`` (default);
            ``"geometric"``: the reference's IDR-style init (last-layer weights
            ``N(-sqrt(pi)/sqrt(width), 1e-4)``, bias 1), which starts at ``x_mean`` plus a
            vertex-independent offset -- a rigid shift of the hand for the displacement network.
        weight_norm: weight-normalised Linear layers. Activation: Softplus(beta=100).
    """

    def __init__(
        self,
        x_mean: torch.Tensor,
        d_cond: int = 144,
        d_out: int | None = None,
        d_latent: int = 10,
        d_code: int = 10,
        width: int = 128,
        depth: int = 5,
        d_extra: int = 0,
        init: str = "zero",
        weight_norm: bool = True,
    ):
        super().__init__()
        if x_mean.ndim != 2:
            raise ValueError(f"x_mean must be (N, d_out), got {tuple(x_mean.shape)}")
        d_out = x_mean.shape[1] if d_out is None else d_out
        if x_mean.shape[1] != d_out:
            raise ValueError(f"x_mean has {x_mean.shape[1]} channels, d_out is {d_out}")
        if init not in ("zero", "geometric"):
            raise ValueError(f"init must be 'zero' or 'geometric', got {init!r}")
        num = x_mean.shape[0]
        self.d_cond, self.d_extra, self.d_out = d_cond, d_extra, d_out
        self.register_buffer("x_mean", x_mean.detach().clone().float())
        self.register_buffer("offset", torch.zeros_like(self.x_mean))
        self.latent = nn.Parameter(torch.zeros(num, d_latent))
        self.static_code = nn.Parameter(torch.zeros(d_code, d_out))

        dims = [d_cond + d_latent + d_extra] + [width] * depth + [d_code]
        layers = []
        for i, (d_in, d_next) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            layer = nn.Linear(d_in, d_next)
            last = i == len(dims) - 2
            if init == "geometric":
                with torch.no_grad():
                    if last:
                        layer.weight.normal_(-math.sqrt(math.pi) / math.sqrt(d_in), 1e-4)
                        layer.bias.fill_(1.0)
                    else:
                        layer.weight.normal_(0.0, math.sqrt(2.0) / math.sqrt(d_next))
                        layer.bias.zero_()
            if weight_norm:
                layer = _weight_norm(layer)
            if init == "zero" and last:
                with torch.no_grad():
                    layer.bias.zero_()
                    if weight_norm:
                        # w = g * v / |v|: a zero gain gives w = 0 with finite gradients (v stays random).
                        layer.parametrizations.weight.original0.zero_()
                    else:
                        layer.weight.zero_()
            layers.append(layer)
        self.layers = nn.ModuleList(layers)
        self.activation = nn.Softplus(beta=100)

    @property
    def num_points(self) -> int:
        return self.x_mean.shape[0]

    def code(self, cond: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """The MLP output ``h`` ``(N, d_code)`` for condition ``cond (d_cond,)``."""
        if cond.shape != (self.d_cond,):
            raise ValueError(f"cond must be ({self.d_cond},), got {tuple(cond.shape)}")
        cond = cond.to(self.latent.dtype)
        per_vertex = [self.latent]
        if self.d_extra:
            if extra is None or extra.shape != (self.num_points, self.d_extra):
                got = None if extra is None else tuple(extra.shape)
                raise ValueError(f"extra must be ({self.num_points}, {self.d_extra}), got {got}")
            per_vertex.append(extra.to(self.latent.dtype))
        first = self.layers[0]
        # The first layer is linear in [cond, latent, extra] and cond is the same for every vertex: its
        # part is one (width, d_cond) matrix-vector product, broadcast as the bias (code_reference
        # feeds the concatenated input instead; same values and gradients).
        weight = first.weight
        shared = F.linear(cond, weight[:, : self.d_cond], first.bias)
        x = torch.addmm(shared, torch.cat(per_vertex, dim=-1), weight[:, self.d_cond :].t())
        return self._hidden(x)

    def code_reference(self, cond: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`code` with the condition repeated for every vertex and concatenated to its inputs, as
        the MLP is written: the plain reference the tests compare it with, not used in training."""
        per_vertex = [self.latent] + ([extra.to(self.latent.dtype)] if self.d_extra else [])
        x = self.layers[0](
            torch.cat([cond.to(self.latent.dtype).expand(self.num_points, -1), *per_vertex], dim=-1)
        )
        return self._hidden(x)

    def _hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The layers after the first, from the first layer's output ``x (N, width)``."""
        for layer in self.layers[1:]:
            x = layer(self.activation(x))
        return x

    def forward(
        self, cond: torch.Tensor, extra: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-vertex output for one frame.

        Args:
            cond: ``(d_cond,)`` shared condition. extra: ``(N, d_extra)`` or ``None``.
        Returns:
            ``out (N, d_out)`` (pre-activation) and ``code (N, d_code)``.
        """
        code = self.code(cond, extra)
        out = self.x_mean + code @ torch.softmax(self.static_code, dim=0) - self.offset
        return out, code

    @torch.no_grad()
    def renew_mean(self, preds_over_frames: torch.Tensor, mode: str = "recentre") -> None:
        """Move the frame-average prediction into ``x_mean``.

        Args:
            preds_over_frames: ``(F, N, d_out)`` outputs of :meth:`forward` over the training frames.
            mode: ``"recentre"`` (default): ``x_mean <- mean_f out_f`` and ``offset`` absorbs the
                same amount, so every prediction is unchanged and ``x_mean`` becomes the
                sequence-average field (pose-independent part; exportable canonical displacement).
                ``"reference"``: the reference's ``x_mean <- mean_f out_f`` alone. Since
                ``out = x_mean + g``, that is ``x_mean += mean_f g``: every prediction jumps by the
                frame-average residual, which is then counted twice.
        """
        if preds_over_frames.ndim != 3 or preds_over_frames.shape[1:] != self.x_mean.shape:
            raise ValueError(
                f"preds_over_frames must be (F, {self.num_points}, {self.d_out}), got {tuple(preds_over_frames.shape)}"
            )
        shift = preds_over_frames.mean(0).to(self.x_mean) - self.x_mean
        self.x_mean += shift
        if mode == "recentre":
            self.offset += shift
        elif mode != "reference":
            raise ValueError(f"mode must be 'recentre' or 'reference', got {mode!r}")

    @torch.no_grad()
    def set_mean(self, x_mean: torch.Tensor) -> None:
        """Replace ``x_mean`` (e.g. by the pre-phase result) and clear ``offset``."""
        self.x_mean.copy_(x_mean)
        self.offset.zero_()


def rotation_condition(pose: torch.Tensor, pose_mean: torch.Tensor) -> torch.Tensor:
    """The 144-d pose condition: rotation matrices of ``pose + pose_mean`` ``(16, 3, 3)`` flattened / pi."""
    rotmats = batch_rodrigues((pose + pose_mean).reshape(-1, 3))
    return rotmats.reshape(-1) / math.pi


class HandAvatar(nn.Module):
    """SRHand's explicit hand: subdivided MANO template + pose-conditioned weights/albedo/displacement.

    Build it with :meth:`from_hand_model` (a ``utils.geometry.mano.HandModel``) or from the MANO tensors.
    Subdivision happens once here; ``verts_template`` ``(V, 3)``, ``faces`` ``(F, 3)`` and
    ``weights_init`` ``(V, 16)`` are buffers.

    Args:
        v_template: ``(778, 3)`` MANO template (metres). shapedirs: ``(778, 3, S)``.
        J_regressor: ``(16, 778)`` (dense or sparse). parents: ``(16,)``. pose_mean: ``(48,)``.
        faces: ``(1538, 3)``. lbs_weights: ``(778, 16)``.
        num_views: number of training cameras (one SH vector each).
        mean_shape: ``(S,)`` sequence-mean shape; zeros if ``None``.
        subdivision_levels: Loop subdivisions (3 in the paper: 49,281 vertices).
        use_enh: condition the displacement network on the detached albedo (SRHand) or not (XHand).
        use_rotpose: 144-d rotation-matrix condition (reference) or 48-d axis-angle ``pose / pi``.
        delta_scale: factor on the displacement network output (0.5 in the reference).
        init, weight_norm, d_latent, d_code: :class:`ConditionNetwork` options.
        lbs_width/depth, color_width/depth, delta_width/depth: network sizes (128x5, 128x5, 512x8).
        mean_albedo_detach: stop gradients through the mean albedo of the ``shading_only`` render.
    """

    def __init__(
        self,
        v_template: torch.Tensor,
        shapedirs: torch.Tensor,
        J_regressor: torch.Tensor,
        parents: torch.Tensor,
        pose_mean: torch.Tensor,
        faces: torch.Tensor,
        lbs_weights: torch.Tensor,
        *,
        num_views: int,
        mean_shape: torch.Tensor | None = None,
        subdivision_levels: int = 3,
        use_enh: bool = True,
        use_rotpose: bool = True,
        delta_scale: float = 0.5,
        init: str = "zero",
        weight_norm: bool = True,
        d_latent: int = 10,
        d_code: int = 10,
        lbs_width: int = 128,
        lbs_depth: int = 5,
        color_width: int = 128,
        color_depth: int = 5,
        delta_width: int = 512,
        delta_depth: int = 8,
        mean_albedo_detach: bool = True,
    ):
        super().__init__()
        v_template = torch.as_tensor(v_template).float()
        shapedirs = torch.as_tensor(shapedirs).float()
        if mean_shape is None:
            mean_shape = torch.zeros(shapedirs.shape[-1])
        mean_shape = torch.as_tensor(mean_shape).float().reshape(-1)
        v_shaped = v_template + torch.einsum("vcs,s->vc", shapedirs[..., : mean_shape.numel()], mean_shape)
        J_regressor = J_regressor.to_dense() if J_regressor.is_sparse else torch.as_tensor(J_regressor)
        joints = J_regressor.float() @ v_shaped  # (16, 3) rest joints of the shaped 778-vertex template

        # Shape blend directions ride along with the skinning weights: midpoint-upsampled (Loop smoothing of
        # the old vertices is not applied to them: a smooth field; tests/test_avatar.py bounds the difference).
        lbs_weights = torch.as_tensor(lbs_weights).float()
        num_betas = mean_shape.numel()
        dirs = shapedirs[..., :num_betas]
        verts, faces_sub, attributes = loop_subdivide(
            v_shaped,
            torch.as_tensor(faces).long(),
            subdivision_levels,
            weights=torch.cat([lbs_weights, dirs.reshape(-1, 3 * num_betas)], dim=1),
        )
        attributes = torch.as_tensor(attributes).float()
        verts, weights = torch.as_tensor(verts).float(), attributes[:, : lbs_weights.shape[1]]
        dirs_sub = attributes[:, lbs_weights.shape[1] :].reshape(-1, 3, num_betas)
        self.register_buffer("verts_template", verts)  # (V, 3) canonical subdivided template
        self.register_buffer("faces", torch.as_tensor(faces_sub).long())  # (F, 3)
        self.register_buffer("weights_init", weights)  # (V, 16) upsampled MANO weights
        self.register_buffer("joints_rest", joints)  # (16, 3)
        self.register_buffer("parents", torch.as_tensor(parents).long())
        self.register_buffer("pose_mean", torch.as_tensor(pose_mean).float().reshape(-1))
        # For a shape offset from mean_shape (MANO refinement): the template's and the rest joints' shape
        # directions. Derived from the hand model, so not checkpointed.
        self.register_buffer("shapedirs_sub", dirs_sub, persistent=False)  # (V, 3, S)
        self.register_buffer(
            "joint_shapedirs", torch.einsum("jv,vcs->jcs", J_regressor.float(), dirs), persistent=False
        )  # (16, 3, S)
        self.use_enh, self.use_rotpose = use_enh, use_rotpose
        self.delta_scale, self.mean_albedo_detach = delta_scale, mean_albedo_detach

        num_verts = verts.shape[0]
        d_cond = 144 if use_rotpose else 48
        net_kw = dict(d_cond=d_cond, d_latent=d_latent, d_code=d_code, init=init, weight_norm=weight_norm)
        self.lbs_net = ConditionNetwork(
            torch.log(1000.0 * (weights + 1e-6)), width=lbs_width, depth=lbs_depth, **net_kw
        )
        albedo0 = torch.tensor(MEAN_HAND_ALBEDO_RGB).expand(num_verts, 3)
        self.color_net = ConditionNetwork(
            torch.logit(albedo0), width=color_width, depth=color_depth, **net_kw
        )
        self.delta_net = ConditionNetwork(
            torch.zeros(num_verts, 3),
            width=delta_width,
            depth=delta_depth,
            d_extra=3 if use_enh else 0,
            **net_kw,
        )
        self.sh_coeffs = nn.Parameter(torch.zeros(num_views, 27))

    @classmethod
    def from_hand_model(cls, hand_model, **kwargs) -> HandAvatar:
        """Build from a ``utils.geometry.mano.HandModel`` (its ``v_template``, ``shapedirs``, ``J_regressor``,
        ``parents``, ``pose_mean``, ``faces``, ``lbs_weights``); ``kwargs`` go to the constructor."""
        return cls(
            hand_model.v_template,
            hand_model.shapedirs,
            hand_model.J_regressor,
            hand_model.parents,
            hand_model.pose_mean,
            hand_model.faces,
            hand_model.lbs_weights,
            **kwargs,
        )

    # ------------------------------------------------------------------------------------------
    # geometry
    # ------------------------------------------------------------------------------------------

    @property
    def num_verts(self) -> int:
        return self.verts_template.shape[0]

    def condition(self, pose: torch.Tensor) -> torch.Tensor:
        """Per-frame condition ``(144,)`` (or ``(48,)`` without ``use_rotpose``) from ``pose (48,)``."""
        pose = pose.reshape(-1).to(self.pose_mean)
        if self.use_rotpose:
            return rotation_condition(pose, self.pose_mean)
        return pose / math.pi

    def set_prephase(
        self,
        delta: torch.Tensor | None = None,
        albedo: torch.Tensor | None = None,
        sh_coeffs: torch.Tensor | None = None,
    ) -> None:
        """Start the networks at the pre-phase (albedo / shape-from-shading) results.

        Args:
            delta: ``(V, 3)`` canonical displacement in metres; ``delta_net``'s mean becomes
                ``delta / delta_scale``, so the applied displacement starts at ``delta``.
            albedo: ``(V, 3)`` RGB albedo in (0, 1); stored as logits.
            sh_coeffs: ``(num_views, 27)``.
        """
        with torch.no_grad():
            if delta is not None:
                self.delta_net.set_mean(delta.to(self.verts_template) / self.delta_scale)
            if albedo is not None:
                self.color_net.set_mean(torch.logit(albedo.to(self.verts_template).clamp(1e-4, 1 - 1e-4)))
            if sh_coeffs is not None:
                self.sh_coeffs.copy_(sh_coeffs)

    def fields(self, pose: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw network outputs for one frame: ``lbs_logits``, ``albedo_logits``, ``delta_raw`` and codes.

        The networks read the pose as a condition without passing a gradient to it: a refined pose
        (:mod:`trainers.srhand.refine`) moves the skeleton, not what the networks predict.
        """
        cond = self.condition(pose.detach())
        lbs_logits, lbs_code = self.lbs_net(cond)
        albedo_logits, color_code = self.color_net(cond)
        extra = torch.sigmoid(albedo_logits).detach() if self.use_enh else None
        delta_raw, delta_code = self.delta_net(cond, extra)
        return dict(
            lbs_logits=lbs_logits,
            albedo_logits=albedo_logits,
            delta_raw=delta_raw,
            lbs_code=lbs_code,
            color_code=color_code,
            delta_code=delta_code,
        )

    def rest_joints(self, shape_offset: torch.Tensor | None = None) -> torch.Tensor:
        """``(16, 3)`` rest joints of the template at ``mean_shape + shape_offset (S,)`` (None: at the mean)."""
        if shape_offset is None:
            return self.joints_rest
        return self.joints_rest + torch.einsum(
            "jcs,s->jc", self.joint_shapedirs, shape_offset.to(self.pose_mean)
        )

    @torch.no_grad()
    def bake_shape_offset(self, shape_offset: torch.Tensor) -> None:
        """Move the template and the rest joints to ``mean_shape + shape_offset (S,)`` (a refined shape), so that
        the avatar poses at that shape without an offset (animation, export). Changes ``verts_template`` and
        ``joints_rest``."""
        offset = torch.as_tensor(shape_offset).to(self.pose_mean)
        self.verts_template.add_(self.shape_displacement(offset))
        self.joints_rest.copy_(self.rest_joints(offset))
        self.__dict__.pop("_operators", None)  # rest edge lengths of the old template

    def shape_displacement(self, shape_offset: torch.Tensor) -> torch.Tensor:
        """``(V, 3)`` canonical displacement of the subdivided template by ``shape_offset (S,)`` (metres)."""
        return torch.einsum("vcs,s->vc", self.shapedirs_sub, shape_offset.to(self.pose_mean))

    def pose_vertices(
        self,
        verts_canonical: torch.Tensor,
        weights: torch.Tensor,
        pose: torch.Tensor,
        trans: torch.Tensor,
        shape_offset: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """LBS of canonical vertices ``(V, 3)`` with weights ``(V, 16)``: rotations of
        ``pose + pose_mean`` about the rest joints (at ``mean_shape + shape_offset``), then ``+ trans``.
        Returns world ``(V, 3)``. ``verts_canonical`` already holds the shape offset's displacement."""
        pose = pose.reshape(-1).to(self.pose_mean)
        rotmats = batch_rodrigues((pose + self.pose_mean).reshape(-1, 3))[None]  # (1, 16, 3, 3)
        transforms = rigid_transforms(rotmats, self.rest_joints(shape_offset)[None], self.parents)
        posed = linear_blend_skinning(verts_canonical[None], weights, transforms)[0]
        return posed + trans.reshape(1, 3).to(posed)

    def forward_geometry(
        self, pose: torch.Tensor, trans: torch.Tensor, shape_offset: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Fields and posed mesh of one frame, without rendering.

        Args:
            pose: ``(48,)`` MANO axis-angle pose without the hand mean. trans: ``(3,)`` metres.
            shape_offset: ``(S,)`` MANO shape offset from the avatar's ``mean_shape`` (refined shape), or None.
        Returns:
            dict with ``weights (V, 16)``, ``albedo (V, 3)``, ``delta (V, 3)`` (metres, applied),
            ``verts_canonical (V, 3)`` (= template + delta), ``verts_posed (V, 3)`` (world) and the
            raw outputs of :meth:`fields`.
        """
        out = self.fields(pose)
        weights = torch.softmax(out["lbs_logits"], dim=-1)
        albedo = torch.sigmoid(out["albedo_logits"])
        delta = self.delta_scale * out["delta_raw"]
        verts_canonical = self.verts_template + delta
        if shape_offset is not None:
            verts_canonical = verts_canonical + self.shape_displacement(shape_offset)
        out.update(
            weights=weights,
            albedo=albedo,
            delta=delta,
            verts_canonical=verts_canonical,
            verts_posed=self.pose_vertices(verts_canonical, weights, pose, trans, shape_offset),
        )
        return out

    def mesh_operators(self) -> dict[str, torch.Tensor]:
        """Constant operators of the template for the regularisers (computed once per device).

        Returns:
            ``edges (E, 2)`` unique edges, ``rest_sq_lengths (E,)`` their squared lengths on
            ``verts_template`` (m^2) and ``laplacian`` ``(V, V)`` sparse uniform Laplacian.
        """
        device = self.verts_template.device
        cache = self.__dict__.setdefault("_operators", {})
        if device not in cache:
            edges = torch.as_tensor(unique_edges(self.faces)).long().to(device)
            e = self.verts_template[edges[:, 0]] - self.verts_template[edges[:, 1]]
            cache[device] = dict(
                edges=edges,
                rest_sq_lengths=e.pow(2).sum(-1),
                laplacian=uniform_laplacian(self.num_verts, self.faces).to(device),
            )
        return cache[device]

    @torch.no_grad()
    def renew_means(self, poses: torch.Tensor, mode: str = "recentre") -> None:
        """Renew the three networks' means from the frames ``poses (F, 48)`` (reference ``update_mean``).

        See :meth:`ConditionNetwork.renew_mean` for ``mode``. The displacement network sees the
        post-sigmoid albedo, as in :meth:`forward` (the reference feeds it logits here).
        """
        outs = [self.fields(p) for p in poses]
        self.lbs_net.renew_mean(torch.stack([o["lbs_logits"] for o in outs]), mode)
        self.color_net.renew_mean(torch.stack([o["albedo_logits"] for o in outs]), mode)
        self.delta_net.renew_mean(torch.stack([o["delta_raw"] for o in outs]), mode)

    # ------------------------------------------------------------------------------------------
    # rendering
    # ------------------------------------------------------------------------------------------

    def render(
        self,
        verts_posed: torch.Tensor,
        albedo: torch.Tensor,
        cameras,
        view_ids: torch.Tensor | Sequence[int],
        resolution: tuple[int, int] | None = None,
        renderer=None,
        sh_coeffs: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Rasterise and SH-shade a posed mesh in B views.

        Usable on its own (pre-phases with free per-vertex tensors) and by :meth:`forward`.

        Args:
            verts_posed: ``(V, 3)`` world. albedo: ``(V, 3)`` RGB in [0, 1].
            cameras: ``utils.geometry.camera.Cameras`` with B views. view_ids: ``(B,)`` indices into
                ``sh_coeffs`` (the training-camera index of each view).
            resolution: ``(H, W)`` raster size; the cameras' ``image_size`` if ``None``.
            renderer: ``utils.render`` renderer; ``get_renderer("auto")`` if ``None``.
            sh_coeffs: ``(num_views, 27)`` override of ``self.sh_coeffs``.
        Returns:
            dict: ``clip (B, V, 4)``, ``rast (B, H, W, 4)``, ``coverage (B, 1, H, W)`` (hard, bool),
            ``image (B, 3, H, W)`` (SH-shaded, clamped to [0, 1], antialiased), ``mask (B, 1, H, W)``
            (antialiased coverage), ``shading_only (B, 3, H, W)`` (mean albedo, antialiased),
            ``normal (B, 3, H, W)`` (unit camera-space normals, 0 off the mesh), ``visible (B, V)``
            and ``uv_pix (B, V, 2)`` (pixels of ``resolution``).
        """
        if renderer is None:
            renderer = get_renderer("auto")
        cam_h, cam_w = cameras.image_size
        height, width = (cam_h, cam_w) if resolution is None else resolution
        num = cameras.R.shape[0]
        view_ids = torch.as_tensor(view_ids, device=verts_posed.device).long().reshape(-1)
        if view_ids.numel() != num:
            raise ValueError(f"{view_ids.numel()} view ids for {num} cameras")
        sh = (self.sh_coeffs if sh_coeffs is None else sh_coeffs)[view_ids]  # (B, 27)
        faces = self.faces

        verts_b = verts_posed[None].expand(num, -1, -1)
        clip = cameras.to_clip(verts_b)
        rast = renderer.rasterize(clip, faces, (height, width))
        covered = rast[..., 3:4] > 0  # (B, H, W, 1)

        # Shade on camera-space normals: x_cam = R x_world + t, so n_cam = R n_world.
        normals_world = vertex_normals(verts_posed[None], faces)[0]
        normals_cam = torch.einsum("bij,vj->bvi", cameras.R.to(normals_world), normals_world)
        attrs = torch.cat([albedo[None].expand(num, -1, -1), normals_cam], dim=-1)
        pix = renderer.interpolate(attrs, rast, faces, clip)
        albedo_pix, normal_pix = pix[..., :3], F.normalize(pix[..., 3:6], dim=-1)
        normal_pix = torch.where(covered, normal_pix, torch.zeros_like(normal_pix))
        shading = sh_shade(normal_pix, sh)  # (B, H, W, 3) irradiance

        mean_albedo = albedo.mean(0)
        if self.mean_albedo_detach:
            mean_albedo = mean_albedo.detach()
        mask_f = covered.to(shading.dtype)
        color = (albedo_pix * shading).clamp(0.0, 1.0) * mask_f
        mean_color = (mean_albedo * shading).clamp(0.0, 1.0) * mask_f
        shaded = renderer.antialias(torch.cat([color, mean_color, mask_f], dim=-1), rast, clip, faces)

        uv_pix, _ = cameras.project(verts_b)
        if (height, width) != (cam_h, cam_w):
            uv_pix = uv_pix * uv_pix.new_tensor([width / cam_w, height / cam_h])

        def chw(x: torch.Tensor) -> torch.Tensor:
            return x.permute(0, 3, 1, 2)

        return dict(
            clip=clip,
            rast=rast,
            coverage=chw(covered),
            image=chw(shaded[..., :3]),
            shading_only=chw(shaded[..., 3:6]),
            mask=chw(shaded[..., 6:7]),
            normal=chw(normal_pix),
            visible=renderer.visible_vertices(rast, faces, verts_posed.shape[0]),
            uv_pix=uv_pix,
        )

    def forward(
        self,
        pose: torch.Tensor,
        trans: torch.Tensor,
        cameras,
        view_ids: torch.Tensor | Sequence[int],
        resolution: tuple[int, int] | None = None,
        renderer=None,
        shape_offset: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One frame in B views: :meth:`forward_geometry` then :meth:`render`.

        Args:
            pose: ``(48,)``. trans: ``(3,)``. cameras: B-view ``Cameras``. view_ids: ``(B,)``.
            resolution: ``(H, W)``. renderer: see :meth:`render`. shape_offset: see :meth:`forward_geometry`.
        Returns:
            The union of both dicts (see their docstrings).
        """
        out = self.forward_geometry(pose, trans, shape_offset)
        out.update(self.render(out["verts_posed"], out["albedo"], cameras, view_ids, resolution, renderer))
        return out
