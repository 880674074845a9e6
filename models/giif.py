"""GIIF: geometric-aware implicit image function (SRHand), and plain LIIF as its baseline.

GIIF = LIIF (Chen et al., CVPR 2021) with two feature sources:

* ``encoder`` (RDN) on the LR image ``(B, 3, h, w)`` -> LR features ``(B, C, h, w)``;
* ``normal_encoder`` (stacked hourglass) on a normal map ``(B, 3, Hn, Wn)`` rendered from the hand mesh
  at its own resolution (e.g. the HR size) -> normal features ``(B, Cn, Hf, Wf)``, ``Hf = Hn/4``;
* ``imnet``, an MLP decoding one RGB value per continuous query coordinate.

Both feature maps and the output image cover the same square ``[-1, 1]^2`` (coordinate conventions in
``models.sr_coords``: ``(row, col)`` order, pixel centres ``-1 + (2i + 1)/n``), so the LR size, the
normal-map size and the output size are independent: any output size and non-integer scale works.

Query (``use_normal=True``, SRHand's ``query_image``), for a coordinate ``x`` with cell ``c``:
the local ensemble runs over the NORMAL feature grid. For each ``(vy, vx)`` in ``{-1, 1}^2``,
``x' = clamp(x + (vy/Hf + eps, vx/Wf + eps))``; nearest-sample the normal features ``z_n`` and the LR
features ``z_l`` at ``x'``; ``q`` = centre of the normal cell, ``q_l`` = centre of the LR cell;
MLP input ``[z_n, (x - q) * (Hf, Wf), z_l, q_l (if use_lr_coord), c * (Hf, Wf) (if cell_decode)]``
(262-d at the paper sizes); the four predictions are blended with the area of the rectangle between
``x`` and the diagonally opposite cell centre (bilinear-like weights).

Query (``use_normal=False``): LIIF's ``query_rgb`` over the LR grid, MLP input
``[z_l (9C with feat_unfold), (x - q_l) * (h, w), c * (h, w)]``.

The MLP predicts in [-1, 1]; the output is ``pred * 0.5 + 0.5`` (targets in [0, 1]), not clamped unless
asked for (``decode(..., clamp=True)``, for evaluation).

Residual (``residual = "bilinear" | "bicubic"``; ``"none"``, the reference's behaviour, is the default): the
output is ``pred * 0.5 + up(lr)(x)``, the LR image interpolated at the query coordinate (``grid_sample``
with ``align_corners=False``, LIIF's coordinate convention, border padding), so the MLP predicts only the
residual to interpolation, in the same [-1, 1] units as before (``2 * out - 1 = pred + (2 * up(lr) - 1)``).
This is the skip connection of the arbitrary-scale SR models after LIIF (LTE, CLIT, SRNO); the reference
GIIF has it commented out. Low scales start at interpolation quality. The mode is part of the model spec, so
a checkpoint records it; specs written before it existed rebuild with the default ``"none"``.

First-layer factorisation (``query_mode = "factorized"``, the default). The first MLP layer is linear in its
input, and every feature term of that input is the vector of one feature-grid cell (nearest sampling, no
interpolation): ``W [z_n, r, z_l, q_l, c] + b = (W_n z_n + b) + (W_l z_l + W_q q_l) + W_r r + W_c c``. The
bracketed terms are computed once per cell of the normal grid and of the LR grid (a 1x1 convolution with
the first layer's own weight, so no new parameters) and gathered by the same indices the reference path
gathers features with; only the 2-d coordinate and cell terms are computed per query (the cell term once
per query, not per ensemble member). The MLP then runs in blocks of ``_ROW_BLOCK`` rows: a whole chunk's
``(B*4*Q, 256)`` activations are fresh allocations that page-fault and stream through main memory at every
layer, which cost the reference path about as much as its first layer. Equal to the reference path
(``query_mode = "reference"``, which builds the concatenated input) up to float rounding, in values and
gradients (``tests/test_giif.py``).

Deviations from the reference code: normal maps are fed as is (``HGFilter(normal_input_renorm=True)``
reproduces its ``(n - 0.5) / 0.5``); ``feat_unfold`` is implemented (on the LR features) instead of
being silently ignored; nearest sampling is an index gather (equal to ``grid_sample`` nearest except
exactly on cell boundaries, where the feature and its cell centre are still consistent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from models.registry import make, register
from models.sr_coords import (
    RESIDUAL_MODES,
    gather_pixels,
    make_coord,
    pixel_centre,
    pixel_index,
    sample_image,
)

# Reference sizes (SRHand: RDN config B with G0=128, 4-stack depth-2 hourglass of width 128).
PAPER_RDN_SPEC = {"name": "rdn", "args": {"G0": 128, "kernel_size": 3, "D": 16, "C": 8, "G": 64}}
PAPER_HG_SPEC = {
    "name": "hg_filter",
    "args": {"in_ch": 3, "num_stack": 4, "depth": 2, "n_feat": 128, "out_dim": 128, "norm": "group"},
}
# A CPU-trainable size (0.26 M parameters with the [64]*3 decoder of giif_spec("cpu")).
CPU_RDN_SPEC = {"name": "rdn", "args": {"G0": 32, "kernel_size": 3, "D": 4, "C": 3, "G": 16}}
CPU_HG_SPEC = {
    "name": "hg_filter",
    "args": {"in_ch": 3, "num_stack": 2, "depth": 2, "n_feat": 32, "out_dim": 32, "norm": "group"},
}

_ENSEMBLE_EPS = 1e-6  # nudges the shifted coordinate off cell boundaries (as LIIF)
_AREA_EPS = 1e-9
QUERY_MODES = ("factorized", "reference")
_ROW_BLOCK = 4096  # MLP rows per step of the factorized path (4 MB activations at width 256)


def giif_spec(size: str = "paper", use_normal: bool = True, residual: str = "none") -> dict:
    """A ``{"name": "giif", "args"}`` spec at ``size`` 'paper' (31.9 M parameters) or 'cpu', with the given
    ``residual`` mode (see the module docstring)."""
    rdn, hg = {"paper": (PAPER_RDN_SPEC, PAPER_HG_SPEC), "cpu": (CPU_RDN_SPEC, CPU_HG_SPEC)}[size]
    hidden = [256] * 4 if size == "paper" else [64] * 3
    return {
        "name": "giif",
        "args": {
            "encoder": rdn,
            "normal_encoder": hg if use_normal else None,
            "hidden_list": hidden,
            "use_normal": use_normal,
            "residual": residual,
        },
    }


class MLP(nn.Module):
    """``Linear-ReLU`` x len(hidden_list), then ``Linear -> out_dim`` (no output activation).

    Input ``(..., in_dim)`` -> ``(..., out_dim)``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_list: Sequence[int]):
        super().__init__()
        layers: list[nn.Module] = []
        last = in_dim
        for hidden in hidden_list:
            layers += [nn.Linear(last, hidden), nn.ReLU(inplace=True)]
            last = hidden
        layers.append(nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@dataclass
class GIIFFeatures:
    """Encoded inputs of one batch, reused by every ``query`` on it.

    Attributes:
        lr_feat: ``(B, C, h, w)`` LR features (``9C`` channels when feature unfolding is on).
        normal_feat: ``(B, Cn, Hf, Wf)`` normal features, or None without normals.
        lr_image: ``(B, 3, h, w)`` the LR input itself, kept for the residual's interpolation (None when the
            model has ``residual = "none"``).
        lr_flat / normal_flat: the same, channels-last ``(B, h*w, C)``, for gathering.
    """

    lr_feat: torch.Tensor
    normal_feat: torch.Tensor | None = None
    lr_image: torch.Tensor | None = None
    lr_flat: torch.Tensor = field(init=False, repr=False)
    normal_flat: torch.Tensor | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.lr_flat = self.lr_feat.flatten(2).transpose(1, 2).contiguous()
        self.normal_flat = (
            None if self.normal_feat is None else self.normal_feat.flatten(2).transpose(1, 2).contiguous()
        )


def _stack_tables(
    tables: list[torch.Tensor], indices: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-cell tables ``tables[k] (B, N_k, C)`` into one ``(sum_k B * N_k, C)`` table and turn their
    per-batch indices ``indices[k] (B, M)`` into rows of it, ``(B * M, K)``."""
    B = indices[0].shape[0]
    flat, rows, start = [], [], 0
    for table, index in zip(tables, indices, strict=True):
        N = table.shape[1]
        # table k, batch b starts at row start + b * N of the stacked table
        flat.append(index + (start + N * torch.arange(B, device=index.device)).unsqueeze(1))
        rows.append(table.reshape(B * N, -1))
        start += B * N
    stacked = rows[0] if len(rows) == 1 else torch.cat(rows)
    return stacked, torch.stack(flat, dim=-1).view(-1, len(flat))


def _gather_sum(stacked: torch.Tensor, bags: torch.Tensor) -> torch.Tensor:
    """``sum_k stacked[bags[:, k]]``: ``(R, C)``, ``(M, K)`` int64 -> ``(M, C)``, differentiable w.r.t. ``stacked``.

    ``embedding_bag`` (sum) gathers and sums in one pass over the output, which is what costs here (the
    table is small).
    """
    if bags.shape[1] == 1:
        return stacked.index_select(0, bags[:, 0])
    return F.embedding_bag(bags, stacked, mode="sum")


def _check_image(name: str, x: torch.Tensor, channels: int = 3) -> None:
    if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] != channels:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{name} must be a (B, {channels}, H, W) tensor, got {shape}")


@register("giif", runtime=("query_mode",))
class GIIF(nn.Module):
    """Geometric-aware implicit image function.

    Args:
        encoder: spec of the LR image encoder (e.g. ``PAPER_RDN_SPEC``); must expose ``out_dim``.
        normal_encoder: spec of the normal-map encoder (e.g. ``PAPER_HG_SPEC``); required when
            ``use_normal``, ignored (not built) otherwise.
        hidden_list: hidden widths of the MLP decoder ``imnet``.
        use_normal: condition on the normal map (GIIF); False gives plain LIIF on the LR features.
        local_ensemble: blend the 4 nearest cells (else: the single nearest cell).
        cell_decode: feed the relative query cell size to the MLP.
        feat_unfold: replace each LR feature by its 3x3 neighbourhood (zero padded), ``C -> 9C``.
        use_lr_coord: (GIIF only) feed the absolute centre of the sampled LR cell, as the reference does.
        residual: ``"none"`` (the reference: the MLP predicts the colour), ``"bilinear"`` or ``"bicubic"``
            (the MLP predicts the residual to the LR image interpolated at the query; module docstring).

    Sub-modules: ``encoder``, ``normal_encoder`` (None without normals), ``imnet``. Fine-tuning the decoder
    only = optimising ``imnet.parameters()``.

        query_mode: ``"factorized"`` (default) computes the first MLP layer's feature terms once per
            feature-grid cell and gathers them; ``"reference"`` feeds the concatenated per-query input to
            ``imnet`` as LIIF does. The same function (see the module docstring), so it is a runtime
            argument: not part of the model spec or the state dict, and checkpoints of either mode load
            into the other. A replaced ``imnet`` that is not an ``MLP`` always takes the reference path.
    """

    def __init__(
        self,
        encoder: dict,
        normal_encoder: dict | None = None,
        hidden_list: Sequence[int] = (256, 256, 256, 256),
        use_normal: bool = True,
        local_ensemble: bool = True,
        cell_decode: bool = True,
        feat_unfold: bool = False,
        use_lr_coord: bool = True,
        residual: str = "none",
        query_mode: str = "factorized",
    ):
        super().__init__()
        if query_mode not in QUERY_MODES:
            raise ValueError(f"query_mode must be one of {QUERY_MODES}, got {query_mode!r}")
        if residual not in RESIDUAL_MODES:
            raise ValueError(f"residual must be one of {RESIDUAL_MODES}, got {residual!r}")
        if use_normal and normal_encoder is None:
            raise ValueError("use_normal=True needs a normal_encoder spec (e.g. models.giif.PAPER_HG_SPEC)")
        self.use_normal = use_normal
        self.local_ensemble = local_ensemble
        self.cell_decode = cell_decode
        self.feat_unfold = feat_unfold
        self.use_lr_coord = use_lr_coord and use_normal
        self.residual = residual

        self.encoder = make(encoder)
        self.normal_encoder = make(normal_encoder) if use_normal else None
        lr_dim = self.encoder.out_dim * (9 if feat_unfold else 1)
        if use_normal:
            in_dim = self.normal_encoder.out_dim + 2 + lr_dim + (2 if self.use_lr_coord else 0)
        else:
            in_dim = lr_dim + 2
        in_dim += 2 if cell_decode else 0
        self.imnet = MLP(in_dim, 3, list(hidden_list))
        self.query_mode = query_mode

    # ------------------------------------------------------------------ encoding
    def encode(self, lr: torch.Tensor, normal_map: torch.Tensor | None = None) -> GIIFFeatures:
        """Encode the inputs once for any number of queries.

        Args:
            lr: ``(B, 3, h, w)`` LR image, RGB in [0, 1].
            normal_map: ``(B, 3, Hn, Wn)`` unit normals in [-1, 1], 0 on the background, covering the same
                image extent as ``lr`` (any resolution); required when ``use_normal``, ignored otherwise.

        Returns:
            ``GIIFFeatures`` with ``lr_feat (B, C, h, w)``, ``normal_feat (B, Cn, Hn/4, Wn/4)`` and, with a
            residual, ``lr_image = lr``.
        """
        _check_image("lr", lr)
        lr_feat = self.encoder(lr)
        if self.feat_unfold:
            B, C, h, w = lr_feat.shape
            # channel-major 3x3 neighbourhoods: channel k*9 + j = channel k at neighbour j (LIIF layout)
            lr_feat = F.unfold(lr_feat, 3, padding=1).view(B, C * 9, h, w)
        normal_feat = None
        if self.use_normal:
            if normal_map is None:
                raise ValueError("this GIIF has use_normal=True: encode() needs a normal_map")
            _check_image("normal_map", normal_map)
            if normal_map.shape[0] != lr.shape[0]:
                raise ValueError(
                    f"batch sizes differ: lr {tuple(lr.shape)}, normal_map {tuple(normal_map.shape)}"
                )
            normal_feat = self.normal_encoder(normal_map)
        return GIIFFeatures(lr_feat, normal_feat, lr if self.residual != "none" else None)

    # ------------------------------------------------------------------ querying
    def query(
        self, feats: GIIFFeatures, coord: torch.Tensor, cell: torch.Tensor | None = None
    ) -> torch.Tensor:
        """RGB at continuous coordinates.

        Args:
            feats: from ``encode``.
            coord: ``(B, Q, 2)`` query positions in [-1, 1], ``(row, col)`` order.
            cell: ``(B, Q, 2)`` target pixel sizes (``(2/H, 2/W)`` for an H x W output); required when
                ``cell_decode``.

        Returns:
            ``(B, Q, 3)`` RGB, nominally [0, 1], not clamped: ``0.5 * mlp + 0.5``, or with a residual
            ``0.5 * mlp + sample_image(lr, coord, residual)``.
        """
        if coord.dim() != 3 or coord.shape[-1] != 2:
            raise ValueError(f"coord must be (B, Q, 2), got {tuple(coord.shape)}")
        if self.cell_decode and (cell is None or cell.shape != coord.shape):
            got = None if cell is None else tuple(cell.shape)
            raise ValueError(f"cell must be (B, Q, 2) like coord {tuple(coord.shape)}, got {got}")
        B, Q, _ = coord.shape
        Hg, Wg = (feats.normal_feat if self.use_normal else feats.lr_feat).shape[-2:]
        grid_scale = coord.new_tensor([Hg, Wg])

        # Shifted query positions (B, S*Q, 2): S = 4 ensemble members ordered (-1,-1), (-1,1), (1,-1), (1,1)
        # in (row, col), or S = 1 without local ensemble.
        if self.local_ensemble:
            signs = coord.new_tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
            shifts = signs / grid_scale + _ENSEMBLE_EPS
        else:
            shifts = coord.new_zeros(1, 2)
        S = shifts.shape[0]
        shifted = (coord.unsqueeze(1) + shifts.view(1, S, 1, 2)).clamp(-1 + 1e-6, 1 - 1e-6)
        shifted = shifted.reshape(B, S * Q, 2)
        coord_rep = coord.repeat(1, S, 1)

        grid_index = pixel_index(shifted, Hg, Wg)
        rel_coord = (coord_rep - pixel_centre(grid_index, Hg, Wg, coord.dtype)) * grid_scale
        lr_index = pixel_index(shifted, *feats.lr_feat.shape[-2:]) if self.use_normal else None
        cell_rel = cell * grid_scale if self.cell_decode else None
        if self.query_mode == "factorized" and isinstance(self.imnet, MLP):
            pred = self._decode_factorized(feats, grid_index, rel_coord, lr_index, cell_rel, S)
        else:
            pred = self._decode_reference(feats, grid_index, rel_coord, lr_index, cell_rel, S)
        pred = pred.view(B, S, Q, -1)

        if self.local_ensemble:
            area = (rel_coord[..., 0] * rel_coord[..., 1]).abs().view(B, S, Q) + _AREA_EPS
            # each prediction is weighted by the area towards the diagonally opposite cell centre
            weight = area.flip(1)
            ret = (pred * weight.unsqueeze(-1)).sum(1) / weight.sum(1).unsqueeze(-1)
        else:
            ret = pred[:, 0]
        if self.residual == "none":
            return ret * 0.5 + 0.5
        if feats.lr_image is None:
            raise ValueError(
                f"this GIIF has residual={self.residual!r}: its features must carry the LR image "
                "(build them with encode())"
            )
        return ret * 0.5 + sample_image(feats.lr_image, coord, self.residual)

    def _decode_reference(
        self,
        feats: GIIFFeatures,
        grid_index: torch.Tensor,
        rel_coord: torch.Tensor,
        lr_index: torch.Tensor | None,
        cell_rel: torch.Tensor | None,
        S: int,
    ) -> torch.Tensor:
        """``imnet`` on the concatenated MLP input (LIIF's way): ``(B, S*Q, in_dim) -> (B, S*Q, 3)``.

        ``grid_index`` / ``lr_index`` ``(B, S*Q)`` flat cells of the ensemble grid / LR grid,
        ``rel_coord (B, S*Q, 2)``, ``cell_rel (B, Q, 2)`` (cell in ensemble-grid units) or None.
        """
        grid_flat = feats.normal_flat if self.use_normal else feats.lr_flat
        parts = [gather_pixels(grid_flat, grid_index), rel_coord]
        if self.use_normal:
            h, w = feats.lr_feat.shape[-2:]
            parts.append(gather_pixels(feats.lr_flat, lr_index))
            if self.use_lr_coord:
                parts.append(pixel_centre(lr_index, h, w, rel_coord.dtype))
        if self.cell_decode:
            parts.append(cell_rel.repeat(1, S, 1))
        return self.imnet(torch.cat(parts, dim=-1))

    def _decode_factorized(
        self,
        feats: GIIFFeatures,
        grid_index: torch.Tensor,
        rel_coord: torch.Tensor,
        lr_index: torch.Tensor | None,
        cell_rel: torch.Tensor | None,
        S: int,
    ) -> torch.Tensor:
        """``imnet`` with its first layer split into per-cell and per-query terms; same arguments and
        result as ``_decode_reference``."""
        first = self.imnet.layers[0]
        weight, bias = first.weight, first.bias  # (hidden, in_dim), (hidden,)
        grid_flat = feats.normal_flat if self.use_normal else feats.lr_flat
        # column blocks of the first layer, in the order _decode_reference concatenates its input
        widths = [grid_flat.shape[-1], 2]
        if self.use_normal:
            widths.append(feats.lr_flat.shape[-1])
            widths += [2] if self.use_lr_coord else []
        widths += [2] if self.cell_decode else []
        blocks = list(weight.split(widths, dim=1))
        w_grid, w_rel = blocks.pop(0), blocks.pop(0)

        # per-cell terms (B, cells, hidden), the bias added once here
        tables = [torch.addmm(bias, grid_flat.flatten(0, 1), w_grid.t()).view(*grid_flat.shape[:2], -1)]
        indices = [grid_index]
        if self.use_normal:
            h, w = feats.lr_feat.shape[-2:]
            lr_table = feats.lr_flat @ blocks.pop(0).t()
            if self.use_lr_coord:
                centres = pixel_centre(torch.arange(h * w, device=lr_index.device), h, w, lr_table.dtype)
                lr_table = lr_table + centres @ blocks.pop(0).t()
            tables.append(lr_table)
            indices.append(lr_index)
        stacked, bags = _stack_tables(tables, indices)  # (rows, hidden), (B*S*Q, 1 or 2)

        # per-query terms (2-d relative coordinate, 2-d cell): one K = 2 or 4 product added in place
        per_query = rel_coord
        if self.cell_decode:
            w_rel = torch.cat([w_rel, blocks.pop(0)], dim=1)
            per_query = torch.cat([rel_coord, cell_rel.repeat(1, S, 1)], dim=-1)
        per_query = per_query.reshape(-1, per_query.shape[-1])
        w_query = w_rel.t()

        # Row blocks keep each activation small: one full-size (B*S*Q, hidden) tensor per layer would be a
        # fresh allocation (page faults) and a pass through main memory at every step.
        relu, rest = self.imnet.layers[1], self.imnet.layers[2:]
        preds = []
        for start in range(0, bags.shape[0], _ROW_BLOCK):
            rows = slice(start, start + _ROW_BLOCK)
            hidden = _gather_sum(stacked, bags[rows]).addmm_(per_query[rows], w_query)
            preds.append(rest(relu(hidden)))
        return torch.cat(preds).view(*grid_index.shape, -1)

    def forward(
        self,
        lr: torch.Tensor,
        normal_map: torch.Tensor | None,
        coord: torch.Tensor,
        cell: torch.Tensor | None,
    ) -> torch.Tensor:
        """``encode`` + ``query``: ``(B, 3, h, w)``, ``(B, 3, Hn, Wn)`` or None, ``(B, Q, 2)``, ``(B, Q, 2)``
        -> ``(B, Q, 3)``."""
        return self.query(self.encode(lr, normal_map), coord, cell)

    # ------------------------------------------------------------------ full images
    def decode_feats(
        self,
        feats: GIIFFeatures,
        out_size: Sequence[int],
        chunk: int = 30000,
        clamp: bool = False,
    ) -> torch.Tensor:
        """Render every pixel centre of an ``out_size = (H, W)`` image, ``chunk`` queries at a time.

        Runs under the caller's grad mode: wrap in ``torch.no_grad()`` for evaluation (memory then stays
        bounded by ``chunk`` x batch); with grad every chunk's graph is kept for the backward.

        Returns:
            ``(B, 3, H, W)``, clamped to [0, 1] only when ``clamp``.
        """
        H, W = int(out_size[0]), int(out_size[1])
        B = feats.lr_feat.shape[0]
        device, dtype = feats.lr_feat.device, feats.lr_feat.dtype
        coord = make_coord((H, W), device=device, dtype=dtype).unsqueeze(0).expand(B, H * W, 2)
        cell = coord.new_tensor([2.0 / H, 2.0 / W]).expand(B, H * W, 2)
        chunk = max(1, int(chunk))
        preds = [
            self.query(feats, coord[:, start : start + chunk], cell[:, start : start + chunk])
            for start in range(0, H * W, chunk)
        ]
        out = torch.cat(preds, dim=1).transpose(1, 2).reshape(B, 3, H, W)
        return out.clamp(0, 1) if clamp else out

    def decode(
        self,
        lr: torch.Tensor,
        normal_map: torch.Tensor | None,
        out_size: Sequence[int],
        chunk: int = 30000,
        clamp: bool = False,
    ) -> torch.Tensor:
        """Super-resolve ``lr (B, 3, h, w)`` to ``(B, 3, H, W)`` with ``out_size = (H, W)`` (any size/scale).

        ``normal_map (B, 3, Hn, Wn)`` is used at its own resolution. See ``decode_feats`` for ``chunk``,
        grad mode and ``clamp`` (pass ``clamp=True`` for evaluation images).
        """
        return self.decode_feats(self.encode(lr, normal_map), out_size, chunk=chunk, clamp=clamp)


@register("liif", runtime=("query_mode",))
class LIIF(GIIF):
    """LIIF (the baseline): ``GIIF`` without the normal branch.

    Same encoder, decoder and query as ``GIIF(use_normal=False)``; ``feat_unfold`` defaults to True as in
    the original LIIF. ``encode``/``decode`` take ``normal_map=None`` (ignored if given).
    """

    def __init__(
        self,
        encoder: dict,
        hidden_list: Sequence[int] = (256, 256, 256, 256),
        local_ensemble: bool = True,
        cell_decode: bool = True,
        feat_unfold: bool = True,
        residual: str = "none",
        query_mode: str = "factorized",
    ):
        super().__init__(
            encoder,
            None,
            hidden_list=hidden_list,
            use_normal=False,
            local_ensemble=local_ensemble,
            cell_decode=cell_decode,
            feat_unfold=feat_unfold,
            use_lr_coord=False,
            residual=residual,
            query_mode=query_mode,
        )
