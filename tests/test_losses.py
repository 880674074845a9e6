"""trainers/losses/: hand-computed values and gradient paths of every SRHand loss term."""

import pytest
import torch
import torch.nn as nn

from trainers import losses as L


def mse(a, b):
    return ((a - b) ** 2).mean()


def cycle_laplacian(n):
    """Dense uniform Laplacian D^-1 A - I of an n-cycle."""
    lap = -torch.eye(n)
    for i in range(n):
        lap[i, (i - 1) % n] += 0.5
        lap[i, (i + 1) % n] += 0.5
    return lap


class TinyImnet(nn.Module):
    """Stand-in for GIIF's imnet: a per-pixel MLP from fixed features to RGB in [0, 1]."""

    def __init__(self, size=(8, 8), seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("feat", torch.randn(1, size[0], size[1], 4, generator=g))
        self.mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, batch=2):
        out = torch.sigmoid(self.mlp(self.feat)).permute(0, 3, 1, 2)
        return out.expand(batch, -1, -1, -1)


def grad_norm(module):
    return sum(p.grad.abs().sum() for p in module.parameters() if p.grad is not None)


# ---------------------------------------------------------------------------------------------
# reconstruction terms
# ---------------------------------------------------------------------------------------------


def test_masked_l1_and_photometric():
    pred = torch.zeros(1, 3, 2, 2)
    target = torch.ones(1, 3, 2, 2)
    target[..., 0, 0] = 3.0
    valid = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    assert L.masked_l1(pred, target, valid).item() == pytest.approx((3 + 1) / 2)
    assert L.masked_l1(pred, target).item() == pytest.approx((3 + 1 + 1 + 1) / 4)
    assert L.masked_l1(pred, target, torch.zeros_like(valid)).item() == 0.0
    # perceptual sees the target masked by `valid`: target*valid = 3,0,1,0 per channel -> mse 2.5
    value = L.photometric_loss(pred, target, valid, perceptual=mse, l1_weight=0.8, perceptual_weight=0.2)
    assert value.item() == pytest.approx(0.8 * 2.0 + 0.2 * 2.5)
    with pytest.raises(ValueError, match="differ"):
        L.masked_l1(pred, target[:, :2])


def test_laplacian_norms_on_a_cycle():
    lap = cycle_laplacian(4)
    x = torch.tensor([[0.0], [0.0], [1.0], [0.0]])
    torch.testing.assert_close(L.laplacian_norms(x, lap), torch.tensor([0.0, 0.5, 1.0, 0.5]))
    torch.testing.assert_close(L.laplacian_norms(x, lap.to_sparse()), torch.tensor([0.0, 0.5, 1.0, 0.5]))
    assert L.laplacian_loss(x, lap).item() == pytest.approx(2.0 / 4)


def test_part_aware_laplacian_quantile_mask():
    # With L = -I, s_v = |x_v| = 1, 2, 3, 4; the 25% quantile is 1.75 (linear interpolation).
    lap = -torch.eye(4)
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, -4.0]], requires_grad=True)
    upper = L.part_aware_laplacian_loss(x, lap, 0.25, "upper")
    assert upper.item() == pytest.approx((2 + 3 + 4) / 4)
    assert L.part_aware_laplacian_loss(x, lap, 0.25, "lower").item() == pytest.approx(1 / 4)
    weights = torch.tensor([1.0, 0.5, 0.5, 0.0])
    assert L.part_aware_laplacian_loss(x, lap, 0.25, vertex_weights=weights).item() == pytest.approx(2.5 / 4)
    upper.backward()
    assert x.grad[0].abs().sum() == 0  # the exempt (smoothest) vertex gets no gradient
    assert (x.grad[1:].abs().sum(-1) > 0).all()
    with pytest.raises(ValueError, match="keep"):
        L.part_aware_laplacian_loss(x, lap, keep="middle")


def test_edge_stretch_only_penalises_stretching():
    verts = torch.tensor([[0.0, 0, 0], [2, 0, 0], [0, 0.5, 0]])
    edges = torch.tensor([[0, 1], [0, 2]])
    rest = torch.tensor([1.0, 1.0])  # |e|^2 = 4 (stretched by 3 -> clamped to 1) and 0.25 (shorter -> 0)
    assert L.edge_stretch_loss(verts, edges, rest).item() == pytest.approx(0.5)
    assert L.edge_stretch_loss(verts, edges, rest, max_value=10.0).item() == pytest.approx(1.5)
    assert L.edge_stretch_loss(verts[None].expand(2, -1, -1), edges, rest).item() == pytest.approx(0.5)


def test_weight_anchor_and_albedo_priors():
    w = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    w0 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert L.skinning_weight_loss(w, w0).item() == pytest.approx(0.5 * 0.25)
    d = torch.tensor([[0.001, -0.002, 0.0]])
    assert L.displacement_anchor_loss(d, torch.zeros(1, 3)).item() == pytest.approx(0.001)
    prior = torch.tensor(L.MEAN_HAND_ALBEDO_RGB)
    albedo = torch.stack([prior + 0.1, prior - 0.1])  # mean equals the prior
    assert L.mean_albedo_prior(albedo).item() == pytest.approx(0.0, abs=1e-12)
    assert L.mean_albedo_prior(albedo, per_vertex=True).item() == pytest.approx(0.01)


def test_mean_texture_and_mask_loss():
    shading = torch.full((1, 3, 2, 2), 0.5)
    sr = torch.zeros(1, 3, 2, 2)
    sr[:, 0] = 0.9
    mask = torch.ones(1, 1, 2, 2)
    mask[..., 0, 0] = 0
    l1 = lambda a, b: (a - b).abs().mean()  # noqa: E731
    # RGB: channel 0 differs by .4 where masked-in, .5 at the masked pixel; channels 1, 2 by .5
    expected_rgb = ((0.4 * 3 + 0.5) / 4 + 0.5 + 0.5) / 3
    assert L.mean_texture_loss(shading, sr, l1, mask).item() == pytest.approx(expected_rgb)
    # grayscale compares channel means: 0.5 vs 0.3 where masked-in, 0.5 vs 0 at the masked pixel
    assert L.mean_texture_loss(shading, sr, l1, mask, grayscale=True).item() == pytest.approx(
        (0.2 * 3 + 0.5) / 4
    )
    assert L.mask_loss(torch.full((1, 1, 2, 2), 0.5), mask).item() == pytest.approx(0.25)


# ---------------------------------------------------------------------------------------------
# fine-tuning terms
# ---------------------------------------------------------------------------------------------


def test_wavelet_loss_values():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g)
    assert L.wavelet_loss(x, x).item() == 0.0
    # A constant offset c lives in the low band only: 3 Haar levels scale a constant by 2^3.
    c = 0.05
    assert L.wavelet_loss(x + c, x).item() == pytest.approx(0.2 * 8 * c, rel=1e-5)
    assert L.wavelet_loss(x + c, x, wave="db1", low_weight=1.0).item() == pytest.approx(8 * c, rel=1e-5)


def test_wavelet_loss_is_per_sample():
    # Opposite high-frequency perturbations of two images cancel in the reference's batch-summed
    # high bands; per sample they do not.
    checker = (
        ((torch.arange(16)[:, None] + torch.arange(16)[None]) % 2).float()[None, None].expand(1, 3, -1, -1)
    )
    base = torch.full((2, 3, 16, 16), 0.5)
    sr = base + 0.1 * torch.cat([checker, -checker]) - 0.1 * torch.cat([checker, -checker]).mean()
    loss = L.wavelet_loss(sr, base, low_weight=0.0)
    assert loss.item() > 1e-3


def brute_stats(sr, uv, vis):
    """Explicit loops: bilinear sample with pixel centres at +0.5, then mean / summed variance."""
    b, _, h, w = sr.shape
    v = uv.shape[1]
    colors = torch.zeros(b, v, 3)
    for i in range(b):
        for j in range(v):
            x, y = uv[i, j, 0].item() - 0.5, uv[i, j, 1].item() - 0.5
            x0, y0 = int(torch.floor(torch.tensor(x))), int(torch.floor(torch.tensor(y)))
            fx, fy = x - x0, y - y0
            for dy, wy in ((0, 1 - fy), (1, fy)):
                for dx, wx in ((0, 1 - fx), (1, fx)):
                    yy, xx = min(max(y0 + dy, 0), h - 1), min(max(x0 + dx, 0), w - 1)
                    colors[i, j] += wy * wx * sr[i, :, yy, xx]
    mean = torch.zeros(v, 3)
    var = torch.zeros(v)
    count = vis.float().sum(0)
    for j in range(v):
        seen = [i for i in range(b) if vis[i, j]]
        if seen:
            mean[j] = torch.stack([colors[i, j] for i in seen]).mean(0)
            var[j] = torch.stack([((colors[i, j] - mean[j]) ** 2).sum() for i in seen]).mean()
    return mean, var, count


def test_vertex_color_stats_matches_brute_force_and_has_gradient():
    g = torch.Generator().manual_seed(0)
    sr = torch.rand(3, 3, 6, 7, generator=g, requires_grad=True)
    uv = torch.rand(3, 5, 2, generator=g) * torch.tensor([7.0, 6.0])
    vis = torch.rand(3, 5, generator=g) > 0.4
    vis[:, 0] = False  # unseen vertex
    vis[:, 1] = torch.tensor([True, False, False])  # seen once
    vis[:, 2] = True
    mean, var, count = L.vertex_color_stats(sr, uv, vis)
    m_ref, v_ref, c_ref = brute_stats(sr.detach(), uv, vis)
    torch.testing.assert_close(mean, m_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(var, v_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(count, c_ref)
    assert mean[0].abs().sum() == 0 and var[0] == 0 and var[1] == 0
    (g_mean,) = torch.autograd.grad(mean.sum(), sr, retain_graph=True)
    (g_var,) = torch.autograd.grad(var.sum(), sr)
    assert g_mean.abs().sum() > 0 and g_var.abs().sum() > 0


def consistent_views(num_views=3, num_verts=6, size=8, seed=0):
    """SR images in which each vertex has the same colour in every view that sees it."""
    g = torch.Generator().manual_seed(seed)
    vertex_colors = torch.rand(num_verts, 3, generator=g)
    sr = torch.rand(num_views, 3, size, size, generator=g)
    uv = torch.zeros(num_views, num_verts, 2)
    for b in range(num_views):
        pixels = torch.randperm(size * size, generator=g)[:num_verts]
        rows, cols = pixels // size, pixels % size
        uv[b] = torch.stack([cols, rows], -1).float() + 0.5  # pixel centres
        sr[b, :, rows, cols] = vertex_colors.T
    vis = torch.rand(num_views, num_verts, generator=g) > 0.3
    return sr, uv, vis


def test_unconfidence_zero_for_consistent_views():
    sr, uv, vis = consistent_views()
    mean, var, count = L.vertex_color_stats(sr, uv, vis)
    torch.testing.assert_close(var, torch.zeros_like(var), atol=1e-12, rtol=0)
    unconf = L.unconfidence_map(var, uv, vis, sr.shape[-2:])
    assert unconf.shape == (3, 1, 8, 8) and unconf.abs().max() < 1e-10  # bilinear rounding only
    assert L.consistency_loss(torch.rand_like(sr), sr, unconf).item() < 1e-10


def test_unconfidence_map_splat_values():
    var = torch.tensor([0.001, 0.02, 0.004], requires_grad=True)
    uv = torch.tensor([[[0.2, 0.7], [3.9, 1.1], [0.9, 0.3]], [[1.5, 1.5], [0.5, 0.5], [2.5, 2.5]]])
    vis = torch.tensor([[True, True, True], [True, False, True]])
    unconf = L.unconfidence_map(var, uv, vis, (4, 4))
    expected = torch.zeros(2, 1, 4, 4)
    expected[0, 0, 0, 0] = 0.4  # vertices 0 (0.1) and 2 (0.4) share pixel (0, 0): max
    expected[0, 0, 1, 3] = 1.0  # 100 * 0.02 = 2, clamped
    expected[1, 0, 1, 1] = 0.1
    expected[1, 0, 2, 2] = 0.4
    torch.testing.assert_close(unconf, expected)
    unconf.sum().backward()
    assert var.grad[2] > 0 and var.grad[1] == 0  # clamped value: no gradient
    assert L.unconfidence_map(var, uv, vis, (4, 4), detach=True).requires_grad is False


def test_consistency_loss_value():
    render = torch.zeros(1, 3, 2, 2)
    sr = torch.ones(1, 3, 2, 2)
    unconf = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]])
    assert L.consistency_loss(render, sr, unconf).item() == pytest.approx(1.5 / 4)


def test_pose_consistency_value_and_mask():
    mean = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5], [0.9, 0.9, 0.9]])
    prev = torch.tensor([[0.2, 0.2, 0.2], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    count = torch.tensor([2.0, 0.0, 1.0])
    count_prev = torch.tensor([1.0, 3.0, 0.0])
    assert L.pose_consistency_loss(mean, prev, count, count_prev).item() == pytest.approx(0.2 / 3)
    zero = L.pose_consistency_loss(mean.requires_grad_(), prev, count, torch.zeros(3))
    assert zero.item() == 0.0 and zero.requires_grad


def test_pose_consistency_alone_reaches_the_imnet():
    net = TinyImnet()
    sr_prev = net(2).detach()
    uv = torch.rand(2, 10, 2, generator=torch.Generator().manual_seed(1)) * 8
    vis = torch.ones(2, 10, dtype=torch.bool)
    mean_prev, _, count_prev = L.vertex_color_stats(sr_prev + 0.1, uv, vis)
    mean, _, count = L.vertex_color_stats(net(2), uv, vis)
    L.pose_consistency_loss(mean, mean_prev, count, count_prev).backward()
    assert grad_norm(net) > 0


def test_disc_loss_alone_reaches_the_imnet_and_freezes_disc():
    from models.discriminator import UNetDiscriminatorSN

    torch.manual_seed(0)
    net = TinyImnet()
    disc = UNetDiscriminatorSN(num_feat=4).train()
    before = {k: v.clone() for k, v in disc.state_dict().items()}
    mask = torch.zeros(2, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    loss = L.discriminator_loss(disc, net(2), mask)
    loss.backward()
    assert grad_norm(net) > 0
    assert all(p.grad is None for p in disc.parameters())
    assert all(p.requires_grad for p in disc.parameters()) and disc.training
    for k, v in disc.state_dict().items():  # no spectral-norm power iteration ran
        torch.testing.assert_close(v, before[k])
    # default targets: 1 in the hand, 0.5 outside, BCE on logits
    with torch.no_grad():
        disc.eval()
        logits = disc(net(2))
    target = mask + 0.5 * (1 - mask)
    expected = nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_finetune_losses_combination():
    net = TinyImnet()
    sr = net(2)
    sr_orig = sr.detach() + 0.01
    render = torch.rand_like(sr)
    g = torch.Generator().manual_seed(2)
    uv = torch.rand(2, 12, 2, generator=g) * 8
    vis = torch.rand(2, 12, generator=g) > 0.2
    first = L.finetune_losses(sr, sr_orig, render, uv, vis)
    assert first["pose_consistency"].item() == 0.0 and "disc" not in first
    out = L.finetune_losses(
        sr, sr_orig, render, uv, vis, prev_mean=first["vertex_mean"] + 0.05, prev_count=first["vertex_count"]
    )
    loss_keys = ["wavelet", "consistency", "pose_consistency"]
    torch.testing.assert_close(out["total"], sum(out[k] for k in loss_keys))
    assert out["pose_consistency"].item() == pytest.approx(10 * 0.1 * 0.05, rel=1e-4)
    assert out["wavelet"].item() == pytest.approx(2 * 0.2 * 8 * 0.01, rel=1e-3)
    assert out["unconfidence"].shape == (2, 1, 8, 8) and not out["unconfidence"].requires_grad
    out["total"].backward()
    assert grad_norm(net) > 0
    with pytest.raises(KeyError, match="wavelet_weight"):
        L.finetune_losses(sr, sr_orig, render, uv, vis, cfg={"wavelet_weight": 1.0})


def test_reconstruction_losses_combination():
    num_verts = 4
    lap = cycle_laplacian(num_verts)
    edges = torch.tensor([[0, 1], [1, 2], [2, 3], [3, 0]])
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    delta = torch.full((num_verts, 3), 0.01, requires_grad=True)
    out = {
        "image": torch.rand(1, 3, 4, 4, requires_grad=True),
        "shading_only": torch.rand(1, 3, 4, 4),
        "mask": torch.rand(1, 1, 4, 4),
        "albedo": torch.rand(num_verts, 3),
        "delta": delta,
        "weights": torch.softmax(torch.rand(num_verts, 16), -1),
        "verts_canonical": verts + delta,
    }
    sr = torch.rand(1, 3, 4, 4)
    valid = torch.ones(1, 1, 4, 4)
    terms = L.reconstruction_losses(
        out,
        sr,
        valid,
        laplacian=lap,
        edges=edges,
        rest_sq_lengths=torch.ones(4),
        weights_init=torch.full((num_verts, 16), 1 / 16),
        delta_anchor=torch.zeros(num_verts, 3),
        perceptual=mse,
        mask=valid,
        cfg={"mask": 1.0},
    )
    expected_keys = {
        "photometric",
        "mean_texture",
        "lap_delta",
        "lap_albedo",
        "lap_weights",
        "skinning",
        "edge",
        "delta_anchor",
        "albedo_prior",
        "mask",
        "total",
    }
    assert set(terms) == expected_keys
    torch.testing.assert_close(terms["total"], sum(v for k, v in terms.items() if k != "total"))
    assert terms["delta_anchor"].item() == pytest.approx(0.01)
    terms["total"].backward()
    assert delta.grad.abs().sum() > 0
    with pytest.raises(KeyError, match="lap_weight"):
        L.reconstruction_losses(
            out,
            sr,
            valid,
            laplacian=lap,
            edges=edges,
            rest_sq_lengths=torch.ones(4),
            weights_init=out["weights"],
            cfg={"lap_weight": 1},
        )


def test_float64_gradcheck_of_statistics_and_wavelet():
    g = torch.Generator().manual_seed(4)
    sr = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    uv = torch.rand(2, 3, 2, generator=g, dtype=torch.float64) * 3 + 0.5
    vis = torch.tensor([[True, True, False], [True, False, True]])

    def stats(x):
        mean, var, _ = L.vertex_color_stats(x, uv, vis)
        return mean, var

    assert torch.autograd.gradcheck(stats, (sr,))
    orig = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    x = (orig + 0.1 * torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda y: L.wavelet_loss(y, orig, levels=2), (x,))
