"""Fast computations of the training steps against their plain references: values and gradients.

Two kinds. Where a choice remains, the object takes an argument and both settings are compared
(``PerceptualLoss(fast=...)``, ``UNetDiscriminatorSN(channels_last=...)``; GIIF's ``query_mode`` in
tests/test_giif.py, the masked GIIF decode in tests/test_srhand_decode.py). Where none does, the library
uses the fast function only and its plain reference function lives beside it for these tests
(``sh_shade_reference``, ``ConditionNetwork.code_reference``; the shared perceptual target against the two
separate terms).

Gradient comparisons run in float64 where the network has ReLU-type kinks: in float32 a rounding
difference can move a pre-activation across 0 and change one pixel's gradient legitimately.
"""

import pytest
import torch

from models.avatar import ConditionNetwork
from models.discriminator import UNetDiscriminatorSN
from trainers import losses as L
from utils.geometry.sh import sh_shade, sh_shade_reference
from utils.metrics.perceptual import PerceptualLoss, PreparedTarget, ResizedPerceptual, build_stlpips
from utils.metrics.perceptual_fast import FastSTLPIPS, _FirstConv, supports


def images(seed, shape=(2, 3, 64, 64), dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(*shape, generator=gen, dtype=dtype)
    b = (a + 0.3 * torch.randn(*shape, generator=gen, dtype=dtype)).clamp(0, 1)
    return a, b


@pytest.fixture(scope="module")
def stlpips_alex():
    return build_stlpips("alex").eval().requires_grad_(False)


def test_first_conv_gradcheck():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(5, 3, 11, 11, generator=gen, dtype=torch.float64)
    bias = torch.randn(5, generator=gen, dtype=torch.float64)
    x = torch.randn(2, 3, 13, 15, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _FirstConv.apply(t, weight, bias, 2), (x,))
    expect = torch.nn.functional.conv2d(x, weight, bias, padding=2)
    assert torch.allclose(_FirstConv.apply(x, weight, bias, 2), expect)


@pytest.mark.parametrize("shape", [(3, 3, 64, 64), (2, 3, 40, 56)])
def test_fast_stlpips_equals_package(stlpips_alex, shape):
    assert supports(stlpips_alex)
    fast = FastSTLPIPS(stlpips_alex)
    target, pred = images(1, shape)
    pred = (pred * 2 - 1).requires_grad_(True)
    ref = stlpips_alex(pred, target * 2 - 1)
    (ref_grad,) = torch.autograd.grad(ref.sum(), pred)
    out = fast(pred, target * 2 - 1)
    (grad,) = torch.autograd.grad(out.sum(), pred)
    assert out.shape == ref.shape == (shape[0], 1, 1, 1)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-7)
    # float32 + another summation order: a max-pool tie or a ReLU input near 0 can flip and move one
    # pixel's gradient, so the field is compared as a whole here and element by element in float64 below.
    assert (grad - ref_grad).norm() <= 1e-3 * ref_grad.norm()


def test_fast_stlpips_gradient_float64():
    model = build_stlpips("alex").double().eval().requires_grad_(False)
    fast = FastSTLPIPS(model)
    target, pred = images(2, (2, 3, 48, 48), torch.float64)
    pred = (pred * 2 - 1).requires_grad_(True)
    (ref_grad,) = torch.autograd.grad(model(pred, target * 2 - 1).sum(), pred)
    (grad,) = torch.autograd.grad(fast(pred, target * 2 - 1).sum(), pred)
    assert torch.allclose(grad, ref_grad, rtol=1e-9, atol=1e-12)


def test_fast_stlpips_rejects_other_networks(stlpips_alex):
    trainable = build_stlpips("alex")
    with pytest.raises(ValueError, match="frozen"):
        FastSTLPIPS(trainable)
    assert not supports(torch.nn.Conv2d(3, 3, 1))


def test_perceptual_loss_prepared_target():
    loss_fn, package = PerceptualLoss("stlpips"), PerceptualLoss("stlpips", fast=False)
    target, pred = images(3)
    pred.requires_grad_(True)
    ref = package(pred, target)
    prepared_ref = package.prepare(target)
    assert prepared_ref.features is None and torch.equal(package(pred, prepared_ref), ref)
    prepared = loss_fn.prepare(target)
    assert isinstance(prepared, PreparedTarget) and len(prepared.features) == 5
    assert not any(f.requires_grad for f in prepared.features)
    fast = loss_fn(pred, prepared)
    assert torch.allclose(fast, ref, rtol=1e-5) and torch.equal(fast, loss_fn(pred, target))
    (grad,) = torch.autograd.grad(fast, pred)
    assert grad.abs().sum() > 0
    with pytest.raises(ValueError, match="differ in shape"):
        loss_fn(pred[:1], prepared)


def test_resized_perceptual_prepared_target():
    resized = ResizedPerceptual(PerceptualLoss("stlpips"), 32)
    target, pred = images(4)
    prepared = resized.prepare(target)
    assert prepared.image.shape[-2:] == (32, 32)
    assert torch.equal(resized(pred, prepared), resized(pred, target))


def test_reconstruction_losses_share_the_perceptual_target():
    """Both perceptual terms use ``sr * valid``: encoded once, same values as the two separate calls."""
    calls = []

    class Counting(ResizedPerceptual):
        def prepare(self, target):
            calls.append(tuple(target.shape))
            return super().prepare(target)

    perceptual = Counting(PerceptualLoss("stlpips"), 32)
    sr, image = images(5, (2, 3, 48, 48))
    shading = images(6, (2, 3, 48, 48))[1]
    valid = (torch.rand(2, 1, 48, 48, generator=torch.Generator().manual_seed(7)) > 0.3).float()
    out = {"image": image, "shading_only": shading}
    cfg = {
        k: 0.0
        for k in L.RECON_WEIGHTS
        if k not in ("photometric", "photometric_l1", "photometric_perceptual", "mean_texture")
    }
    kwargs = dict(
        laplacian=None, edges=None, rest_sq_lengths=None, weights_init=None, perceptual=perceptual, cfg=cfg
    )
    fast = L.reconstruction_losses(out, sr, valid, **kwargs)
    assert calls == [(2, 3, 48, 48)]
    # the reference: each term encodes its own target
    w = {**L.RECON_WEIGHTS, **cfg}
    photometric = w["photometric"] * L.photometric_loss(
        image, sr, valid, perceptual, w["photometric_l1"], w["photometric_perceptual"]
    )
    mean_texture = w["mean_texture"] * L.mean_texture_loss(shading, sr, perceptual, valid)
    assert calls == [(2, 3, 48, 48)]
    assert set(fast) == {"photometric", "mean_texture", "total"}
    assert torch.allclose(fast["photometric"], photometric, rtol=1e-5)
    assert torch.allclose(fast["mean_texture"], mean_texture, rtol=1e-5)
    assert torch.allclose(fast["total"], photometric + mean_texture, rtol=1e-5)
    calls.clear()
    L.reconstruction_losses(out, sr, valid, **{**kwargs, "cfg": {**cfg, "mean_texture_grayscale": True}})
    assert calls == []  # the grayscale mean-texture term has its own target


@pytest.mark.parametrize("d_extra", [0, 3])
def test_condition_network_first_layer(d_extra):
    torch.manual_seed(0)
    net = ConditionNetwork(
        torch.randn(50, 4), d_cond=7, width=16, depth=3, d_extra=d_extra, init="geometric"
    ).double()
    cond = torch.randn(7, dtype=torch.float64)
    extra = torch.randn(50, d_extra, dtype=torch.float64) if d_extra else None
    params = list(net.parameters())

    def run(code_fn):
        code = code_fn(cond, extra)
        return code, torch.autograd.grad(code.sin().sum(), params, allow_unused=True)

    ref = run(net.code_reference)
    new = run(net.code)
    out, code = net(cond, extra)
    assert torch.equal(code, new[0])  # forward goes through code
    for g_new, g_ref in zip(new[1], ref[1], strict=True):
        assert (g_new is None) == (g_ref is None)
        if g_ref is not None:
            assert torch.allclose(g_new, g_ref, rtol=1e-10, atol=1e-14)
    assert torch.allclose(new[0], ref[0], rtol=1e-12)


def test_sh_shade_matmul():
    gen = torch.Generator().manual_seed(0)
    normals = torch.nn.functional.normalize(
        torch.randn(3, 5, 7, 3, generator=gen, dtype=torch.float64), dim=-1
    )
    coeffs = torch.randn(3, 27, generator=gen, dtype=torch.float64)
    normals.requires_grad_(True)
    coeffs.requires_grad_(True)
    ref = sh_shade_reference(normals, coeffs)
    ref_grads = torch.autograd.grad(ref.pow(2).sum(), (normals, coeffs))
    new = sh_shade(normals, coeffs)
    grads = torch.autograd.grad(new.pow(2).sum(), (normals, coeffs))
    assert new.shape == (3, 5, 7, 3) and torch.allclose(new, ref, rtol=1e-12)
    assert all(torch.allclose(a, b, rtol=1e-12) for a, b in zip(grads, ref_grads, strict=True))
    assert torch.autograd.gradcheck(lambda n, c: sh_shade(n, c), (normals[:1, :2, :2], coeffs[:1]))


def test_discriminator_channels_last():
    torch.manual_seed(0)
    disc = UNetDiscriminatorSN(num_feat=8).double().eval().requires_grad_(False)
    nchw = UNetDiscriminatorSN(num_feat=8, channels_last=False).double().eval().requires_grad_(False)
    nchw.load_state_dict(disc.state_dict())
    assert disc.channels_last and not nchw.channels_last
    x = torch.rand(2, 3, 32, 24, dtype=torch.float64, requires_grad=True)
    ref = nchw(x)
    (ref_grad,) = torch.autograd.grad(ref.sum(), x)
    out = disc(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert out.shape == (2, 1, 32, 24)
    assert torch.allclose(out, ref, rtol=1e-10, atol=1e-12)
    assert torch.allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)


def _tiny_giif_inputs():
    from _hand_fixtures import TINY_GIIF

    from models import registry

    torch.manual_seed(0)
    giif = registry.make(TINY_GIIF).eval()
    gen = torch.Generator().manual_seed(8)
    lr = torch.rand(2, 3, 8, 8, generator=gen)
    normal = torch.nn.functional.normalize(torch.randn(2, 3, 32, 32, generator=gen), dim=1)
    mask = torch.zeros(2, 1, 32, 32)
    mask[0, :, 4:20, 6:30] = 1  # views with masks of different sizes: the batch is padded to the larger one
    mask[1, :, 10:14, 3:9] = 1
    return giif, lr, normal, mask


def test_masked_decode_equals_full_decode_times_mask():
    """``finetune.masked_decode``: GIIF queried at the masked pixels only = every pixel decoded, then masked,
    in values and in the gradients of GIIF's decoder (chunked and gradient-checkpointed alike)."""
    from trainers.srhand.giif_decode import giif_decode, giif_decode_masked

    giif, lr, normal, mask = _tiny_giif_inputs()
    params = list(giif.imnet.parameters())
    weights = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    results = []
    for decode in (
        lambda: giif_decode(giif, lr, normal, (32, 32), 100) * mask,
        lambda: giif_decode_masked(giif, lr, normal, mask, 100),
        lambda: giif_decode_masked(giif, lr, normal, mask, 37, checkpoint=True),
    ):
        out = decode()
        results.append((out.detach(), torch.autograd.grad((out * weights).sum(), params)))
    (ref, ref_grads), *others = results
    assert ref.abs().sum() > 0 and torch.equal(ref * mask, ref)
    for out, grads in others:
        assert torch.allclose(out, ref, atol=1e-6) and torch.equal(out * mask, out)
        for g, r in zip(grads, ref_grads, strict=True):
            assert torch.allclose(g, r, rtol=1e-4, atol=1e-6)


def test_giif_feature_cache():
    """The cache gives the encoder's features while the encoders are frozen, recomputes them after an
    encoder changes, refuses while an encoder is trained, and stops storing beyond its bound."""
    from trainers.srhand.finetune import GiifFeatureCache

    giif, lr, normal, _ = _tiny_giif_inputs()
    giif.requires_grad_(False)
    cache = GiifFeatureCache(max_mib=1)
    first = cache.features(giif, 0, [0, 1], lr, normal)
    fresh = giif.encode(lr, normal)
    assert torch.equal(first.lr_feat, fresh.lr_feat) and torch.equal(first.normal_feat, fresh.normal_feat)
    assert cache.features(giif, 0, [0, 1], lr, normal) is first  # a second visit: the stored entry
    with torch.no_grad():
        next(giif.encoder.parameters()).add_(0.1)  # an update of an encoder invalidates the entry
    second = cache.features(giif, 0, [0, 1], lr, normal)
    assert second is not first and not torch.equal(second.lr_feat, first.lr_feat)
    next(giif.normal_encoder.parameters()).requires_grad_(True)
    assert cache.features(giif, 0, [0, 1], lr, normal) is None  # fine-tuned encoders: no cache
    next(giif.normal_encoder.parameters()).requires_grad_(False)
    full = GiifFeatureCache(max_mib=0)
    full.features(giif, 0, [0], lr[:1], normal[:1])  # stored: the cache was empty
    full.features(giif, 1, [0], lr[:1], normal[:1])  # over the bound: returned, not stored
    assert list(full._entries) == [(0, (0,))]
