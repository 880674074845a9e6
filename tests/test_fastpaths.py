"""Fast paths of the training steps (``utils.fastpaths``) against their reference paths: values and gradients.

Gradient comparisons run in float64 where the network has ReLU-type kinks: in float32 a rounding
difference can move a pre-activation across 0 and change one pixel's gradient legitimately.
"""

import pytest
import torch

from models.avatar import ConditionNetwork
from models.discriminator import UNetDiscriminatorSN
from trainers import losses as L
from trainers.srhand.setup import ResizedPerceptual
from utils import fastpaths
from utils.geometry.sh import sh_shade
from utils.metrics.perceptual import PerceptualLoss, PreparedTarget, build_stlpips
from utils.metrics.perceptual_fast import FastSTLPIPS, _FirstConv, supports


def images(seed, shape=(2, 3, 64, 64), dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(*shape, generator=gen, dtype=dtype)
    b = (a + 0.3 * torch.randn(*shape, generator=gen, dtype=dtype)).clamp(0, 1)
    return a, b


@pytest.fixture(scope="module")
def stlpips_alex():
    return build_stlpips("alex").eval().requires_grad_(False)


def test_switches():
    assert all(fastpaths.enabled(n) for n in fastpaths.FAST_PATHS)
    with fastpaths.reference_paths("sh_matmul"):
        assert not fastpaths.enabled("sh_matmul") and fastpaths.enabled("perceptual_trunk")
        with fastpaths.reference_paths():
            assert not any(fastpaths.enabled(n) for n in fastpaths.FAST_PATHS)
        assert not fastpaths.enabled("sh_matmul") and fastpaths.enabled("perceptual_trunk")
    assert all(fastpaths.enabled(n) for n in fastpaths.FAST_PATHS)
    with pytest.raises(KeyError, match="unknown fast path"):
        fastpaths.enabled("nope")
    with pytest.raises(KeyError, match="unknown fast paths"):
        with fastpaths.reference_paths("nope"):
            pass


def test_switches_from_environment(monkeypatch):
    assert fastpaths.from_environment(None) == frozenset()
    assert fastpaths.from_environment("all") == frozenset(fastpaths.FAST_PATHS)
    assert fastpaths.from_environment(" sh_matmul, perceptual_trunk ") == {"sh_matmul", "perceptual_trunk"}
    with pytest.raises(ValueError, match="SRHAND_REFERENCE_PATHS.*unknown fast paths \\['shmatmul'\\]"):
        fastpaths.from_environment("shmatmul")
    monkeypatch.setattr(fastpaths, "_from_env", None)
    monkeypatch.setenv("SRHAND_REFERENCE_PATHS", "sh_matmul")
    with pytest.warns(UserWarning, match="reference paths for sh_matmul"):
        assert not fastpaths.enabled("sh_matmul")
    assert fastpaths.enabled("perceptual_trunk")
    monkeypatch.setattr(fastpaths, "_from_env", None)
    monkeypatch.delenv("SRHAND_REFERENCE_PATHS")
    assert fastpaths.enabled("sh_matmul")


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
    loss_fn = PerceptualLoss("stlpips")
    target, pred = images(3)
    pred.requires_grad_(True)
    with fastpaths.reference_paths("perceptual_trunk"):
        ref = loss_fn(pred, target)
        prepared_ref = loss_fn.prepare(target)
        assert prepared_ref.features is None and torch.equal(loss_fn(pred, prepared_ref), ref)
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
    cfg = {k: 0.0 for k in L.RECON_WEIGHTS if k not in ("photometric", "photometric_l1",
                                                          "photometric_perceptual", "mean_texture")}
    kwargs = dict(laplacian=None, edges=None, rest_sq_lengths=None, weights_init=None, perceptual=perceptual,
                  cfg=cfg)
    fast = L.reconstruction_losses(out, sr, valid, **kwargs)
    assert calls == [(2, 3, 48, 48)]
    with fastpaths.reference_paths():
        ref = L.reconstruction_losses(out, sr, valid, **kwargs)
    assert calls == [(2, 3, 48, 48)]
    assert set(fast) == set(ref) == {"photometric", "mean_texture", "total"}
    for key in ref:
        assert torch.allclose(fast[key], ref[key], rtol=1e-5), key
    calls.clear()
    L.reconstruction_losses(out, sr, valid, **{**kwargs, "cfg": {**cfg, "mean_texture_grayscale": True}})
    assert calls == []  # the grayscale mean-texture term has its own target


@pytest.mark.parametrize("d_extra", [0, 3])
def test_condition_network_first_layer(d_extra):
    torch.manual_seed(0)
    net = ConditionNetwork(torch.randn(50, 4), d_cond=7, width=16, depth=3, d_extra=d_extra,
                           init="geometric").double()
    cond = torch.randn(7, dtype=torch.float64)
    extra = torch.randn(50, d_extra, dtype=torch.float64) if d_extra else None
    params = list(net.parameters())

    def run():
        out, code = net(cond, extra)
        return out, code, torch.autograd.grad((out.sin().sum() + code.sum()), params)

    with fastpaths.reference_paths("condition_first_layer"):
        ref = run()
    new = run()
    assert torch.allclose(new[0], ref[0], rtol=1e-12) and torch.allclose(new[1], ref[1], rtol=1e-12)
    for g_new, g_ref in zip(new[2], ref[2]):
        assert torch.allclose(g_new, g_ref, rtol=1e-10, atol=1e-14)


def test_sh_shade_matmul():
    gen = torch.Generator().manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(3, 5, 7, 3, generator=gen, dtype=torch.float64), dim=-1)
    coeffs = torch.randn(3, 27, generator=gen, dtype=torch.float64)
    normals.requires_grad_(True)
    coeffs.requires_grad_(True)
    with fastpaths.reference_paths("sh_matmul"):
        ref = sh_shade(normals, coeffs)
        ref_grads = torch.autograd.grad(ref.pow(2).sum(), (normals, coeffs))
    new = sh_shade(normals, coeffs)
    grads = torch.autograd.grad(new.pow(2).sum(), (normals, coeffs))
    assert new.shape == (3, 5, 7, 3) and torch.allclose(new, ref, rtol=1e-12)
    assert all(torch.allclose(a, b, rtol=1e-12) for a, b in zip(grads, ref_grads))
    assert torch.autograd.gradcheck(lambda n, c: sh_shade(n, c), (normals[:1, :2, :2], coeffs[:1]))


def test_discriminator_channels_last():
    torch.manual_seed(0)
    disc = UNetDiscriminatorSN(num_feat=8).double().eval().requires_grad_(False)
    x = torch.rand(2, 3, 32, 24, dtype=torch.float64, requires_grad=True)
    with fastpaths.reference_paths("disc_channels_last"):
        ref = disc(x)
        (ref_grad,) = torch.autograd.grad(ref.sum(), x)
    out = disc(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert out.shape == (2, 1, 32, 24)
    assert torch.allclose(out, ref, rtol=1e-10, atol=1e-12)
    assert torch.allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)
