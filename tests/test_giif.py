"""GIIF / LIIF, RDN, hourglass, coordinate helpers and the model registry (tiny CPU sizes)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models
from models.giif import GIIF, LIIF, GIIFFeatures, giif_spec
from models.hourglass import HGFilter
from models.rdn import RDN
from models.sr_coords import make_cell, make_coord, pixel_centre, pixel_index, sample_nearest, sample_queries

TINY_RDN = {"name": "rdn", "args": {"G0": 16, "kernel_size": 3, "D": 2, "C": 2, "G": 8}}
TINY_HG = {"name": "hg_filter", "args": {"n_feat": 16, "num_stack": 1, "depth": 1, "out_dim": 16}}


def tiny_giif(use_normal: bool = True, **kwargs) -> GIIF:
    args = {
        "encoder": TINY_RDN,
        "normal_encoder": TINY_HG if use_normal else None,
        "hidden_list": [32, 32],
        "use_normal": use_normal,
    }
    args.update(kwargs)
    return models.make({"name": "giif", "args": args})


def smooth_image(H: int, W: int) -> torch.Tensor:
    """A smooth RGB test image (1, 3, H, W) in [0.1, 0.9]."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    return torch.stack(
        [
            0.5 + 0.4 * torch.sin(6 * xx + 2 * yy),
            0.5 + 0.4 * torch.cos(5 * yy),
            0.5 + 0.3 * torch.sin(4 * (xx + yy)) * torch.cos(3 * xx),
        ]
    )[None]


def smooth_normals(H: int, W: int) -> torch.Tensor:
    """A unit normal map (1, 3, H, W) with a zero background border."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    n = F.normalize(torch.stack([torch.sin(3 * xx), torch.cos(2 * yy), torch.ones_like(xx)])[None], dim=1)
    mask = ((xx - 0.5).abs() < 0.4) & ((yy - 0.5).abs() < 0.4)
    return n * mask


class FirstChannels(nn.Module):
    """Stand-in decoder returning the first 3 MLP inputs (= the sampled grid feature's first channels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :3]


class Recorder(nn.Module):
    """Stand-in decoder recording its input and returning zeros."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last_input = x.detach().clone()
        return x.new_zeros(*x.shape[:-1], 3)


# ---------------------------------------------------------------------------- coordinates
def test_make_coord_hand_values():
    expected = torch.tensor([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    assert torch.allclose(make_coord((2, 2)), expected)
    # rows vary along [..., 0]: a 1 x 3 grid has constant row 0 and columns -2/3, 0, 2/3
    c = make_coord((1, 3), flatten=False)
    assert c.shape == (1, 3, 2)
    assert torch.allclose(c[0, :, 0], torch.zeros(3))
    assert torch.allclose(c[0, :, 1], torch.tensor([-2 / 3, 0.0, 2 / 3]))
    c = make_coord((2,), ranges=[(0.0, 1.0)])
    assert torch.allclose(c[:, 0], torch.tensor([0.25, 0.75]))


def test_make_cell_values():
    cell = make_cell(4, 8, batch=2)
    assert cell.shape == (2, 32, 2)
    assert torch.allclose(cell[1, 5], torch.tensor([0.5, 0.25]))


def test_pixel_index_and_centres_round_trip():
    coord = make_coord((3, 5))
    index = pixel_index(coord, 3, 5)
    assert torch.equal(index, torch.arange(15))
    assert torch.allclose(pixel_centre(index, 3, 5), coord)
    # outside [-1, 1] clamps to the border pixels
    assert pixel_index(torch.tensor([[-1.5, 1.5]]), 3, 5).item() == 4


def test_sample_nearest_matches_grid_sample():
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(2, 4, 5, 7, generator=g)
    coord = torch.rand(2, 50, 2, generator=g) * 2 - 1
    values, centres = sample_nearest(feat, coord)
    ref = F.grid_sample(feat, coord.flip(-1).unsqueeze(1), mode="nearest", align_corners=False)
    assert torch.allclose(values, ref[:, :, 0].transpose(1, 2))
    centre_grid = make_coord((5, 7), flatten=False).permute(2, 0, 1).expand(2, 2, 5, 7)
    ref_c = F.grid_sample(centre_grid, coord.flip(-1).unsqueeze(1), mode="nearest", align_corners=False)
    assert torch.allclose(centres, ref_c[:, :, 0].transpose(1, 2), atol=1e-6)


def test_sample_queries():
    hr = torch.rand(2, 3, 6, 5)
    coord, cell, gt = sample_queries(hr, 11, torch.Generator().manual_seed(0))
    assert coord.shape == cell.shape == (2, 11, 2) and gt.shape == (2, 11, 3)
    assert torch.allclose(cell, torch.tensor([2 / 6, 2 / 5]).expand(2, 11, 2))
    index = pixel_index(coord, 6, 5)
    assert all(len(set(row.tolist())) == 11 for row in index)  # no repeated pixel
    expected = hr.flatten(2).transpose(1, 2).gather(1, index.unsqueeze(-1).expand(2, 11, 3))
    assert torch.equal(gt, expected)
    coord_all, _, gt_all = sample_queries(hr, None)
    assert torch.allclose(coord_all[0], make_coord((6, 5)))
    assert torch.equal(gt_all[1], hr[1].reshape(3, -1).t())


# ---------------------------------------------------------------------------- encoders
def test_rdn_shape_and_input_range():
    rdn = RDN(G0=8, D=2, C=2, G=4)
    lr = torch.rand(2, 3, 5, 7)
    assert rdn(lr).shape == (2, 8, 5, 7)
    # [0,1] -> [-1,1] inside: the first conv sees 2*lr - 1
    x = torch.full((1, 3, 3, 3), 0.5)
    first = rdn.sfe1((x - 0.5) / 0.5)
    assert torch.allclose(first, rdn.sfe1.bias.view(1, -1, 1, 1).expand_as(first))


def test_hgfilter_shape_norms_and_renorm_flag():
    normals = smooth_normals(32, 32)
    for norm in ("group", "batch", "none"):
        hg = HGFilter(n_feat=16, num_stack=2, depth=2, out_dim=8, norm=norm)
        assert hg(normals).shape == (1, 8, 8, 8)
    hg = HGFilter(n_feat=16, num_stack=1, depth=1, out_dim=8)
    assert hg(torch.zeros(1, 3, 30, 22)).shape == (1, 8, 7, 5)  # odd intermediate sizes work
    torch.manual_seed(0)
    plain = HGFilter(n_feat=16, num_stack=1, depth=1, out_dim=8)
    renorm = HGFilter(n_feat=16, num_stack=1, depth=1, out_dim=8, normal_input_renorm=True)
    renorm.load_state_dict(plain.state_dict())
    assert torch.allclose(renorm(normals), plain((normals - 0.5) / 0.5))
    assert not torch.allclose(renorm(normals), plain(normals))
    with pytest.raises(ValueError):
        HGFilter(norm="instance")


# ---------------------------------------------------------------------------- query conventions
def test_giif_query_inputs_match_hand_computed_nearest_samples():
    torch.manual_seed(0)
    model = tiny_giif().eval()
    model.imnet = Recorder()
    lr, normals = torch.rand(1, 3, 4, 6), smooth_normals(32, 16)  # normal features 8 x 4
    feats = model.encode(lr, normals)
    coord = torch.tensor([[[0.1, -0.3], [-0.93, 0.77]]])
    cell = torch.tensor([[[2 / 40, 2 / 20], [2 / 40, 2 / 20]]])
    model.query(feats, coord, cell)
    x = model.imnet.last_input.view(4, 2, -1)  # (ensemble member, query, features)
    assert x.shape[-1] == 16 + 2 + 16 + 2 + 2
    Hf, Wf = 8, 4
    for k, (vy, vx) in enumerate([(-1, -1), (-1, 1), (1, -1), (1, 1)]):
        shifted = (coord + torch.tensor([vy / Hf + 1e-6, vx / Wf + 1e-6])).clamp(-1 + 1e-6, 1 - 1e-6)
        grid = shifted.flip(-1).unsqueeze(1)
        z_n = F.grid_sample(feats.normal_feat, grid, mode="nearest", align_corners=False)[0, :, 0].t()
        z_l = F.grid_sample(feats.lr_feat, grid, mode="nearest", align_corners=False)[0, :, 0].t()
        # hand-computed cell centres on the 8 x 4 normal grid and the 4 x 6 LR grid
        row_n = ((shifted[0, :, 0] + 1) * Hf / 2).floor()
        col_n = ((shifted[0, :, 1] + 1) * Wf / 2).floor()
        q_n = torch.stack([-1 + (2 * row_n + 1) / Hf, -1 + (2 * col_n + 1) / Wf], -1)
        row_l = ((shifted[0, :, 0] + 1) * 4 / 2).floor()
        col_l = ((shifted[0, :, 1] + 1) * 6 / 2).floor()
        q_l = torch.stack([-1 + (2 * row_l + 1) / 4, -1 + (2 * col_l + 1) / 6], -1)
        assert torch.allclose(x[k, :, :16], z_n, atol=1e-6)
        assert torch.allclose(x[k, :, 16:18], (coord[0] - q_n) * torch.tensor([Hf, Wf]), atol=1e-5)
        assert torch.allclose(x[k, :, 18:34], z_l, atol=1e-6)
        assert torch.allclose(x[k, :, 34:36], q_l, atol=1e-6)
        assert torch.allclose(x[k, :, 36:38], cell[0] * torch.tensor([Hf, Wf]))


@pytest.mark.parametrize("use_normal", [True, False])
def test_local_ensemble_is_bilinear_interpolation_of_the_grid(use_normal):
    """With a decoder that returns its grid feature, the area-weighted ensemble (with the diagonal swap)
    must reproduce bilinear interpolation between cell centres (border-clamped)."""
    torch.manual_seed(0)
    model = tiny_giif(use_normal=use_normal).eval()
    model.imnet = FirstChannels()
    lr, normals = torch.rand(2, 3, 5, 4), smooth_normals(24, 28)
    with torch.no_grad():
        feats = model.encode(lr, normals.expand(2, -1, -1, -1))
        grid_feat = feats.normal_feat if use_normal else feats.lr_feat
        coord = torch.rand(2, 64, 2) * 2 - 1
        out = model.query(feats, coord, make_cell(8, 8, 2)[:, :64])
    ref = F.grid_sample(
        grid_feat[:, :3],
        coord.flip(-1).unsqueeze(1),
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )[:, :, 0].transpose(1, 2)
    assert torch.allclose(out, ref * 0.5 + 0.5, atol=1e-4)


def test_liif_query_inputs_and_unfold():
    torch.manual_seed(0)
    model = tiny_giif(use_normal=False, feat_unfold=True).eval()
    assert model.imnet.layers[0].in_features == 16 * 9 + 2 + 2
    model.imnet = Recorder()
    lr = torch.rand(1, 3, 4, 4)
    feats = model.encode(lr, None)
    raw = model.encoder(lr)
    coord = torch.tensor([[[0.3, -0.2]]])  # in LR cell (2, 1) of the 4 x 4 grid
    model.query(feats, coord, torch.full((1, 1, 2), 0.125))
    x = model.imnet.last_input.view(4, -1)
    # ensemble member (+1, +1) samples at (0.55, 0.05): LR cell (3, 2), centre (0.75, 0.25);
    # unfolded channel k*9 + j = channel k at neighbour j of the zero-padded 3x3 neighbourhood
    neighbourhood = F.pad(raw, (1, 1, 1, 1))[0, :, 3:6, 2:5].reshape(16, 9)
    assert torch.allclose(x[3, : 16 * 9], neighbourhood.reshape(-1), atol=1e-6)
    assert torch.allclose(x[3, 144:146], torch.tensor([-1.8, -1.8]), atol=1e-6)
    assert torch.allclose(x[3, 146:148], torch.tensor([0.5, 0.5]))


# ---------------------------------------------------------------------------- factorised first layer
FACTORIZED_CASES = {
    "giif": dict(use_normal=True),
    "giif_unfold": dict(use_normal=True, feat_unfold=True),
    "giif_no_lr_coord": dict(use_normal=True, use_lr_coord=False),
    "giif_no_cell_no_ensemble": dict(use_normal=True, cell_decode=False, local_ensemble=False),
    "liif_unfold": dict(use_normal=False, feat_unfold=True),
    "liif_no_cell": dict(use_normal=False, cell_decode=False),
    "giif_residual_bilinear": dict(use_normal=True, residual="bilinear"),
    "liif_residual_bicubic": dict(use_normal=False, feat_unfold=True, residual="bicubic"),
}


def _query_values_and_grads(model, mode, lr, normals, coord, cell):
    """Output of ``model(lr, normals, coord, cell)`` in ``query_mode = mode`` and the gradients of a fixed
    scalar of it w.r.t. every parameter and every input (None for an input the model ignores)."""
    model.query_mode = mode
    model.zero_grad()
    inputs = [
        t.detach().clone().requires_grad_() if t is not None else None for t in (lr, normals, coord, cell)
    ]
    out = model(*inputs)
    weights = torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view_as(out)
    (out * weights).mean().backward()  # a weighted mean: gradients of order 1
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    grads.update(
        {
            name: t.grad
            for name, t in zip(("lr", "normals", "coord", "cell"), inputs, strict=True)
            if t is not None
        }
    )
    return out.detach(), grads


def _factorized_case(case, dtype=torch.float32, batch=2, queries=700):
    torch.manual_seed(0)
    kwargs = dict(FACTORIZED_CASES[case])
    model = tiny_giif(**kwargs).to(dtype)
    g = torch.Generator().manual_seed(1)
    lr = torch.rand(batch, 3, 5, 6, generator=g, dtype=dtype)
    normals = smooth_normals(20, 28).to(dtype).expand(batch, -1, -1, -1) if kwargs["use_normal"] else None
    coord = torch.rand(batch, queries, 2, generator=g, dtype=dtype) * 2 - 1
    coord[:, :4] = torch.tensor(
        [[-1.0, -1.0], [1.0, 1.0], [-0.999, 0.999], [0.0, 0.0]], dtype=dtype
    )  # borders
    cell = torch.rand(batch, queries, 2, generator=g, dtype=dtype) * 0.3 + 0.01
    return model, lr, normals, coord, cell


@pytest.mark.parametrize("case", list(FACTORIZED_CASES))
def test_factorized_query_equals_reference_in_values_and_gradients(case):
    """The per-cell first layer is the reference path (concatenated MLP input) in values and in gradients
    w.r.t. every parameter and input; 2 x 4 x 700 rows span several row blocks of the factorised path."""
    model, *inputs = _factorized_case(case)
    out_ref, grads_ref = _query_values_and_grads(model, "reference", *inputs)
    out_fac, grads_fac = _query_values_and_grads(model, "factorized", *inputs)
    assert (out_fac - out_ref).abs().max() < 1e-5
    assert grads_fac.keys() == grads_ref.keys()
    for name, ref in grads_ref.items():
        if ref is None:  # an input the model ignores (the cell without cell_decode)
            assert grads_fac[name] is None, name
            continue
        err = (grads_fac[name] - ref).abs().max()
        assert err < 1e-5 * max(1.0, ref.abs().max().item()), (name, err.item(), ref.abs().max().item())


@pytest.mark.parametrize(
    "case", ["giif", "giif_no_cell_no_ensemble", "liif_unfold", "giif_residual_bilinear"]
)
def test_factorized_query_equals_reference_float64(case):
    model, *inputs = _factorized_case(case, dtype=torch.float64, batch=2, queries=40)
    out_ref, grads_ref = _query_values_and_grads(model, "reference", *inputs)
    out_fac, grads_fac = _query_values_and_grads(model, "factorized", *inputs)
    assert (out_fac - out_ref).abs().max() < 1e-12
    for name, ref in grads_ref.items():
        assert (grads_fac[name] is None) if ref is None else (grads_fac[name] - ref).abs().max() < 1e-11, name


@pytest.mark.parametrize("use_normal", [True, False])
def test_factorized_query_gradcheck_float64(use_normal):
    """float64 gradcheck of the factorised query w.r.t. the feature maps, the coordinates, the cell and the
    first layer's weight (random coordinates are far from cell boundaries, where nearest sampling jumps)."""
    torch.manual_seed(0)
    model = tiny_giif(use_normal=use_normal, hidden_list=[6]).double()
    g = torch.Generator().manual_seed(2)
    lr_feat = torch.randn(1, 16, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    normal_feat = torch.randn(1, 16, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    coord = (torch.rand(1, 5, 2, generator=g, dtype=torch.float64) * 1.8 - 0.9).requires_grad_()
    cell = (torch.rand(1, 5, 2, generator=g, dtype=torch.float64) * 0.2).requires_grad_()
    first = model.imnet.layers[0]
    weight = first.weight.detach().clone().requires_grad_()

    def query(lr_feat, normal_feat, coord, cell, weight):
        del first.weight
        first.weight = weight  # a plain tensor for the duration of the call
        try:
            return model.query(GIIFFeatures(lr_feat, normal_feat if use_normal else None), coord, cell)
        finally:
            del first.weight
            first.weight = nn.Parameter(weight.detach().clone())

    assert model.query_mode == "factorized"
    assert torch.autograd.gradcheck(query, (lr_feat, normal_feat, coord, cell, weight))


def test_query_mode_is_not_part_of_the_spec_or_state_dict():
    """Checkpoints do not change: same state-dict keys and spec in both modes, and a model saved in one mode
    loads into the other with equal outputs."""
    torch.manual_seed(0)
    model = tiny_giif()
    assert model.query_mode == "factorized"
    spec = models.model_spec(model, with_sd=True)
    assert "query_mode" not in spec["args"]
    rebuilt = models.make(spec, load_sd=True, args={"query_mode": "reference"})
    assert rebuilt.query_mode == "reference" and "query_mode" not in models.model_spec(rebuilt)["args"]
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    lr, normals = torch.rand(1, 3, 4, 4), smooth_normals(16, 16)
    with torch.no_grad():
        out = model.decode(lr, normals, (19, 23))
        assert (rebuilt.decode(lr, normals, (19, 23)) - out).abs().max() < 1e-6
    with pytest.raises(ValueError, match="query_mode"):
        tiny_giif(query_mode="fast")


@pytest.mark.parametrize("use_normal", [True, False])
def test_factorized_decode_equals_reference_cpu_size(use_normal):
    """The CPU-size model (giif_spec('cpu')), a whole 64 x 48 image in chunks: factorised = reference."""
    torch.manual_seed(0)
    model = models.make(giif_spec("cpu", use_normal=use_normal)).eval()
    lr, normals = torch.rand(1, 3, 16, 12), smooth_normals(64, 48) if use_normal else None
    with torch.no_grad():
        model.query_mode = "reference"
        ref = model.decode(lr, normals, (64, 48), chunk=1000)
        model.query_mode = "factorized"
        fac = model.decode(lr, normals, (64, 48), chunk=1000)
    assert (fac - ref).abs().max() < 1e-5


# ---------------------------------------------------------------------------- decoding
def test_decode_arbitrary_sizes_and_non_integer_scales():
    torch.manual_seed(0)
    model = tiny_giif().eval()
    lr = torch.rand(2, 3, 5, 5)
    normals = smooth_normals(32, 32).expand(2, -1, -1, -1)
    with torch.no_grad():
        assert model.decode(lr, normals, (64, 64)).shape == (2, 3, 64, 64)  # x12.8
        assert model.decode(lr, normals, (37, 50)).shape == (2, 3, 37, 50)
        assert model.decode(lr, normals, (3, 4)).shape == (2, 3, 3, 4)  # downscaling also works
        out = model.decode(lr, normals, (20, 20), clamp=True)
    assert out.min() >= 0 and out.max() <= 1
    liif = models.make({"name": "liif", "args": {"encoder": TINY_RDN, "hidden_list": [16]}})
    with torch.no_grad():
        assert liif.decode(lr, None, (23, 64)).shape == (2, 3, 23, 64)


def test_decode_chunking_matches_single_chunk():
    torch.manual_seed(0)
    model = tiny_giif().eval()
    lr, normals = torch.rand(1, 3, 6, 6), smooth_normals(32, 32)
    with torch.no_grad():
        whole = model.decode(lr, normals, (30, 31), chunk=10**6)
        chunked = model.decode(lr, normals, (30, 31), chunk=97)
    assert torch.allclose(whole, chunked, atol=1e-6, rtol=0)


def test_decode_with_grad_reaches_imnet_only_when_encoders_frozen():
    torch.manual_seed(0)
    model = tiny_giif()
    lr, normals = torch.rand(1, 3, 4, 4), smooth_normals(16, 16)
    with torch.no_grad():
        feats = model.encode(lr, normals)
    out = model.decode_feats(feats, (16, 16), chunk=100)
    out.mean().backward()
    assert all(p.grad is not None for p in model.imnet.parameters())
    assert all(p.grad is None for p in model.encoder.parameters())


def test_input_checks():
    model = tiny_giif()
    with pytest.raises(ValueError, match="normal_map"):
        model.encode(torch.rand(1, 3, 4, 4), None)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.encode(torch.rand(3, 4, 4), torch.zeros(1, 3, 16, 16))
    feats = model.encode(torch.rand(1, 3, 4, 4), torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="cell"):
        model.query(feats, torch.zeros(1, 5, 2), None)
    with pytest.raises(ValueError, match="normal_encoder"):
        GIIF(TINY_RDN, None, use_normal=True)


# ---------------------------------------------------------------------------- learning
def _fit(model, lr, normals, hr, steps, sizes=None, learning_rate=1e-3, seed=0):
    """Adam (linearly decayed) on 256 random HR pixels per step; with ``sizes``, step k targets ``hr``
    resized to ``sizes[k % len(sizes)]`` (H, W), i.e. a different scale and cell."""
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / steps)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        target = hr
        if sizes is not None:
            target = F.interpolate(hr, size=sizes[step % len(sizes)], mode="bilinear", align_corners=False)
        coord, cell, gt = sample_queries(target, 256, g)
        loss = (model(lr, normals, coord, cell) - gt).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def test_constant_decoder_gives_the_constant_at_any_scale():
    """A decoder whose last layer is a constant makes the ensemble blend exactly that constant."""
    torch.manual_seed(0)
    model = tiny_giif().eval()
    value = torch.tensor([0.2, 0.6, 0.9])
    last = model.imnet.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(2 * value - 1)  # the decoder predicts in [-1, 1]
        out = model.decode(torch.rand(1, 3, 5, 5), smooth_normals(32, 32), (64, 41))
    assert torch.allclose(out, value.view(1, 3, 1, 1).expand_as(out), atol=1e-6)


def test_constant_image_is_learned_and_reproduced_at_unseen_scales():
    torch.manual_seed(0)
    model = tiny_giif()
    value = torch.tensor([0.2, 0.6, 0.9]).view(1, 3, 1, 1)
    hr = value.expand(1, 3, 32, 32)
    lr, normals = value.expand(1, 3, 8, 8), smooth_normals(32, 32)
    train_sizes = [(16, 24), (32, 16), (24, 32), (12, 12), (32, 32)]
    _fit(model, lr, normals, hr, steps=200, sizes=train_sizes, learning_rate=3e-3)
    with torch.no_grad():
        for size in [(40, 40), (13, 21), (64, 64)]:  # x5, x1.6/x2.6, x8: none seen in training
            err = (model.decode(lr, normals, size) - value).abs()
            assert err.mean() < 5e-3 and err.max() < 2.5e-2, (size, err.mean().item(), err.max().item())


@pytest.mark.parametrize("use_normal", [True, False])
def test_tiny_model_overfits_one_image(use_normal):
    torch.manual_seed(0)
    model = tiny_giif(use_normal=use_normal)
    hr = smooth_image(32, 32)
    lr = F.interpolate(hr, size=(8, 8), mode="area")
    normals = smooth_normals(32, 32) if use_normal else None
    with torch.no_grad():
        before = (model.decode(lr, normals, (32, 32)) - hr).abs().mean()
    _fit(model, lr, normals, hr, steps=200)
    with torch.no_grad():
        after = (model.decode(lr, normals, (32, 32)) - hr).abs().mean()
    assert after < before / 5, (before.item(), after.item())


# ---------------------------------------------------------------------------- registry
def test_registry_round_trip_with_state_dict():
    torch.manual_seed(0)
    model = tiny_giif().eval()
    spec = models.model_spec(model, with_sd=True)
    assert spec["name"] == "giif" and spec["args"]["encoder"] == TINY_RDN
    assert spec["args"]["feat_unfold"] is False  # defaults are recorded
    rebuilt = models.make(spec, load_sd=True).eval()
    assert models.model_spec(rebuilt) == models.model_spec(model)
    lr, normals = torch.rand(1, 3, 4, 4), smooth_normals(16, 16)
    with torch.no_grad():
        assert torch.equal(model.decode(lr, normals, (9, 9)), rebuilt.decode(lr, normals, (9, 9)))
    # the sub-encoders carry their own specs too, defaults filled in
    hg_spec = models.model_spec(model.normal_encoder)
    assert hg_spec["name"] == "hg_filter"
    assert hg_spec["args"] == {**hg_spec["args"], **TINY_HG["args"]}
    assert hg_spec["args"]["normal_input_renorm"] is False and hg_spec["args"]["norm"] == "group"


def test_registry_liif_name_overrides_and_errors():
    liif = models.make({"name": "liif", "args": {"encoder": TINY_RDN, "hidden_list": [8]}})
    assert isinstance(liif, LIIF) and not liif.use_normal and liif.normal_encoder is None
    spec = models.model_spec(liif)
    assert spec["name"] == "liif" and set(spec["args"]) == {
        "encoder",
        "hidden_list",
        "local_ensemble",
        "cell_decode",
        "feat_unfold",
        "residual",
    }
    narrow = models.make(spec, args={"hidden_list": [4]})
    assert narrow.imnet.layers[0].out_features == 4
    with pytest.raises(KeyError, match="did you mean 'giif'"):
        models.make({"name": "giiff"})
    with pytest.raises(TypeError):
        models.model_spec(nn.Linear(2, 2))
    assert {"giif", "liif", "rdn", "hg_filter", "unet_disc_sn"} <= set(models.registered_names())
    assert giif_spec("paper")["args"]["encoder"]["args"]["G0"] == 128


def test_registry_runtime_args_are_accepted_but_not_recorded(monkeypatch):
    from models import registry

    # a private registry, so the test network does not outlive the test
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @models.register("test_runtime_net", runtime=("chunk_size",))
    class Net(nn.Module):
        def __init__(self, width: int = 4, chunk_size: int | None = None):
            super().__init__()
            self.linear = nn.Linear(width, width)
            self.chunk_size = chunk_size

    net = Net(width=3, chunk_size=7)
    assert net.chunk_size == 7
    spec = models.model_spec(net, with_sd=True)
    assert spec["args"] == {"width": 3}  # the runtime argument is not part of what the network is
    rebuilt = models.make(spec, load_sd=True)
    assert rebuilt.chunk_size is None and torch.equal(rebuilt.linear.weight, net.linear.weight)
    chunked = models.make(spec, load_sd=True, args={"chunk_size": 2})
    assert chunked.chunk_size == 2 and models.model_spec(chunked)["args"] == {"width": 3}
    with pytest.raises(TypeError, match="not arguments of"):
        models.register("test_bad_runtime", runtime=("nope",))(Net)


def test_import_models_registers_every_network():
    # the network modules are imported by `import models` itself: no lazy list to keep in step
    code = (
        "import sys, models; assert {'giif', 'liif', 'rdn', 'hg_filter', 'unet_disc_sn'} <= "
        "set(models.registry._REGISTRY); assert 'models.avatar' not in sys.modules"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


def test_paper_size_parameter_count():
    # meta device: no memory or init cost for the 31.9 M parameters
    with torch.device("meta"):
        model = models.make(giif_spec("paper"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert model.imnet.layers[0].in_features == 262
    assert count(model.encoder) == 27_834_240
    assert count(model.normal_encoder) == 3_776_960
    assert math.isclose(count(model), 31.9e6, rel_tol=0.01)


# ---------------------------------------------------------------------------------------------- residual
@pytest.mark.parametrize("residual", ["bilinear", "bicubic"])
@pytest.mark.parametrize("use_normal", [True, False])
def test_residual_with_a_silent_mlp_is_the_interpolated_lr_image(residual, use_normal):
    """With the MLP's last layer zeroed the output is exactly ``F.interpolate(lr, mode)`` (align_corners=False,
    LIIF's pixel-centre convention) at any output size; without a residual it is the constant 0.5."""
    torch.manual_seed(0)
    lr = torch.rand(2, 3, 6, 5)
    normals = smooth_normals(24, 20).expand(2, -1, -1, -1) if use_normal else None
    for mode in (residual, "none"):
        model = tiny_giif(use_normal, residual=mode).eval()
        nn.init.zeros_(model.imnet.layers[-1].weight)
        nn.init.zeros_(model.imnet.layers[-1].bias)
        for size in ((24, 20), (13, 17)):
            with torch.no_grad():
                out = model.decode(lr, normals, size)
            expected = (
                torch.full_like(out, 0.5)
                if mode == "none"
                else F.interpolate(lr, size=size, mode=residual, align_corners=False)
            )
            assert (out - expected).abs().max() < 1e-5, (mode, size)


def test_residual_is_added_to_the_same_mlp_output():
    """Same weights, residual on vs off: the outputs differ by exactly ``sample_image(lr) - 0.5``."""
    from models.sr_coords import sample_image

    torch.manual_seed(0)
    plain = tiny_giif(True).eval()
    residual = tiny_giif(True, residual="bicubic").eval()
    residual.load_state_dict(plain.state_dict())  # a residual adds no parameter
    lr, normals = torch.rand(1, 3, 5, 7), smooth_normals(20, 28)
    coord = torch.rand(1, 300, 2) * 2 - 1
    cell = torch.full((1, 300, 2), 0.05)
    with torch.no_grad():
        diff = residual(lr, normals, coord, cell) - plain(lr, normals, coord, cell)
    assert (diff - (sample_image(lr, coord, "bicubic") - 0.5)).abs().max() < 1e-6


def test_sample_image_hand_values():
    """Bilinear at a point between four pixel centres is their mean; at a pixel centre both modes give it."""
    from models.sr_coords import sample_image

    img = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    centre_00, between = [-0.5, -0.5], [0.0, 0.0]
    coord = torch.tensor([[centre_00, between, [0.5, -0.5]]])  # (row, col)
    bilinear = sample_image(img, coord, "bilinear")[0, :, 0]
    assert torch.allclose(bilinear, torch.tensor([1.0, 2.5, 3.0]))
    assert torch.allclose(sample_image(img, coord[:, :1], "bicubic")[0, 0], torch.tensor([1.0]))
    with pytest.raises(ValueError, match="bilinear"):
        sample_image(img, coord, "nearest")


def test_residual_is_recorded_and_old_checkpoints_load_as_none():
    """The spec records the mode; a checkpoint entry without the key (written before it existed) rebuilds as
    ``none`` with the same outputs, passes the architecture check against a ``none`` config, and a residual
    config against it fails with a message naming the key."""
    from trainers.giif_trainer import check_giif_arch
    from utils.checkpoint import CheckpointError, build_model, make_checkpoint, model_entry

    torch.manual_seed(0)
    model = tiny_giif(True).eval()
    assert models.model_spec(model)["args"]["residual"] == "none"
    assert models.model_spec(tiny_giif(True, residual="bilinear"))["args"]["residual"] == "bilinear"
    old = make_checkpoint("giif", model_entry(model))
    del old["model"]["args"]["residual"]  # an entry written before issue 24
    rebuilt = build_model(old, models.make).eval()
    assert rebuilt.residual == "none"
    lr, normals = torch.rand(1, 3, 4, 4), smooth_normals(16, 16)
    with torch.no_grad():
        assert torch.equal(rebuilt.decode(lr, normals, (9, 9)), model.decode(lr, normals, (9, 9)))
    check_giif_arch(old["model"], tiny_giif(True), what="GIIF")  # none == absent: no error
    with pytest.raises(
        CheckpointError, match=r"residual: checkpoint='none' \(not recorded.*expected='bilinear'"
    ):
        check_giif_arch(old["model"], tiny_giif(True, residual="bilinear"), what="GIIF")


def test_residual_input_checks():
    with pytest.raises(ValueError, match="residual must be one of"):
        tiny_giif(True, residual="nearest")
    model = tiny_giif(True, residual="bilinear")
    feats = model.encode(torch.rand(1, 3, 4, 4), smooth_normals(16, 16))
    feats.lr_image = None
    with pytest.raises(ValueError, match="must carry the LR image"):
        model.query(feats, torch.zeros(1, 2, 2), torch.full((1, 2, 2), 0.1))


def test_masked_decode_of_a_residual_giif_equals_the_full_decode():
    """Fine-tuning's masked decode and the SR targets' full decode use the residual alike."""
    from trainers.srhand.giif_decode import giif_decode, giif_decode_masked

    torch.manual_seed(0)
    model = tiny_giif(True, residual="bilinear").eval()
    lr, normals = torch.rand(2, 3, 4, 4), smooth_normals(16, 16).expand(2, -1, -1, -1)
    mask = (torch.rand(2, 1, 16, 16) > 0.5).float()
    with torch.no_grad():
        full = giif_decode(model, lr, normals, (16, 16), chunk=50) * mask
        masked = giif_decode_masked(model, lr, normals, mask, chunk=50)
    assert (full - masked).abs().max() < 1e-5
