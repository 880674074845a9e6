"""utils.metrics.image / utils.metrics.perceptual: hand-computed PSNR, SSIM, offline perceptual metric and loss."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch

from utils.metrics import perceptual
from utils.metrics.image import PerceptualMetric, psnr, psnr_reference, ssim
from utils.metrics.perceptual import PerceptualLoss, PerceptualUnavailableError


def test_psnr_constant_error_is_20db():
    gt = np.full((2, 8, 8, 3), 0.5)
    assert psnr(gt + 0.1, gt) == pytest.approx(20.0)
    gt_t = torch.full((2, 3, 8, 8), 0.5)
    assert psnr(gt_t + 0.1, gt_t) == pytest.approx(20.0, abs=1e-4)  # float32 input
    assert psnr(gt, gt) == math.inf
    # per-image values, averaged in dB: errors 0.1 and 0.01 -> 20 and 40 dB -> 30
    pred = gt.copy()
    pred[0] += 0.1
    pred[1] += 0.01
    np.testing.assert_allclose(psnr(pred, gt, reduction="none"), [20.0, 40.0])
    assert psnr(pred, gt) == pytest.approx(30.0)


def test_psnr_masked_and_reference_variant():
    gt = np.full((4, 4, 3), 0.5)
    pred = gt + 0.1
    mask = np.zeros((4, 4))
    mask[:2, :2] = 1
    assert psnr(pred, gt, mask) == pytest.approx(20.0)  # inside the mask the error is 0.1
    # authors' variant: whole-image error (16 px * 3 ch * 0.01) / (3 * 4 mask px) = 0.04
    assert psnr_reference(pred, gt, mask) == pytest.approx(-10 * math.log10(0.04))
    assert psnr_reference(pred, gt) == pytest.approx(psnr(pred, gt))
    pred_out = gt.copy()
    pred_out[3, 3] = 1.0  # error only outside the mask
    assert psnr(pred_out, gt, mask) == math.inf and math.isfinite(psnr_reference(pred_out, gt, mask))
    assert psnr(gt + 0.7, gt) == pytest.approx(-20 * math.log10(0.5))  # prediction clipped to 1
    with pytest.raises(ValueError, match="no valid pixel"):
        psnr(pred, gt, np.zeros((4, 4)))
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(pred, gt[:2])


def test_ssim_identical_masked_and_tensor():
    rng = np.random.default_rng(0)
    gt = rng.random((24, 24, 3))
    assert ssim(gt, gt) == pytest.approx(1.0)
    noisy = np.clip(gt + rng.normal(0, 0.1, gt.shape), 0, 1)
    value = ssim(noisy, gt)
    assert 0.0 < value < 0.99
    assert ssim(noisy, gt, np.ones((24, 24))) == pytest.approx(value, abs=1e-9)
    tensor_value = ssim(
        torch.from_numpy(noisy).permute(2, 0, 1)[None], torch.from_numpy(gt).permute(2, 0, 1)[None]
    )
    assert tensor_value == pytest.approx(value, abs=1e-9)
    half = np.zeros((24, 24))
    half[:, :12] = 1
    partly = gt.copy()
    partly[:, 12:] = 0  # only outside the mask
    assert ssim(partly, gt, half) > ssim(partly, gt)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, an empty torch hub cache, and a fresh 'announced once' registry."""

    def no_network(*args, **kwargs):
        raise AssertionError("a network access was attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(perceptual, "_announced", set())
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def images(seed=0, size=64):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(2, 3, size, size, generator=gen)
    b = (a + 0.3 * torch.randn(2, 3, size, size, generator=gen)).clamp(0, 1)
    return a, b


def test_perceptual_metric_offline_falls_back_to_stlpips(offline, capsys):
    metric = PerceptualMetric()
    assert metric.name == "ST-LPIPS" and metric.label == "ST-LPIPS-alex"
    out = capsys.readouterr().out
    assert "ST-LPIPS" in out and "alexnet-owt-7be5be79.pth" in out and "not comparable" in out
    a, b = images()
    assert metric(a, a) == pytest.approx(0.0, abs=1e-6)
    assert metric(a, b) > 1e-3
    assert metric(a, b, reduction="none").shape == (2,)
    assert metric(a[0].permute(1, 2, 0).numpy(), b[0].permute(1, 2, 0).numpy()) > 0
    PerceptualMetric()
    assert capsys.readouterr().out == ""  # announced once per process
    with pytest.raises(PerceptualUnavailableError, match="never downloads"):
        PerceptualMetric(kind="lpips")


def test_perceptual_metric_uses_cached_lpips_trunk(offline):
    from utils.compat import import_torchvision

    tv = import_torchvision()
    features = tv.models.alexnet().features.state_dict()  # stand-in for the ImageNet file
    offline.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in features.items()}, offline / "alexnet-owt-7be5be79.pth")
    metric = PerceptualMetric()
    assert metric.name == "LPIPS" and str(offline) in metric.reason
    assert torch.equal(metric.module.net.slice1[0].weight, features["0.weight"])
    assert torch.equal(metric.module.state_dict()["net.slice5.10.bias"], features["10.bias"])
    a, b = images()
    assert metric(a, a) == pytest.approx(0.0, abs=1e-6) and metric(a, b) > 0


@pytest.mark.parametrize("kind", ["stlpips", "lpips"])
def test_perceptual_reference_gives_the_networks_own_values(offline, kind):
    """A reference (ground-truth features computed once) gives exactly what the (ST-)LPIPS module's own forward
    gives for each prediction; a prediction of another shape is refused."""
    if kind == "lpips":  # the LPIPS trunk from a stand-in weights file in the offline cache
        from utils.compat import import_torchvision

        features = import_torchvision().models.alexnet().features.state_dict()
        offline.mkdir(parents=True)
        torch.save({f"features.{k}": v for k, v in features.items()}, offline / "alexnet-owt-7be5be79.pth")
    metric = PerceptualMetric(kind=kind)
    a, b = images(size=48)
    c = (1.0 - a).clamp(0, 1)
    reference = metric.reference(a)
    assert reference.features is not None  # the split path, not the whole-module fallback
    for pred in (a, b, c):
        own = metric.module(pred.clamp(0, 1) * 2 - 1, a * 2 - 1).reshape(-1)
        assert torch.equal(metric(pred, reference, reduction="none"), own)
        assert torch.equal(metric(pred, a, reduction="none"), own)
    with pytest.raises(ValueError, match="differ in shape"):
        metric(b[:1], reference)


def test_perceptual_loss(offline):
    with pytest.raises(PerceptualUnavailableError):
        PerceptualLoss("lpips_vgg")
    with pytest.warns(UserWarning, match="ST-LPIPS"):
        loss_fn = PerceptualLoss("auto")
    assert loss_fn.name == "ST-LPIPS-alex"
    assert list(loss_fn.parameters()) == [] and loss_fn.state_dict() == {}
    a, b = images(1, size=48)
    pred = b.clone().requires_grad_(True)
    loss = loss_fn(pred, a)
    assert loss.ndim == 0 and loss.item() > 0
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert loss_fn(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert PerceptualLoss("none")(a, b).item() == 0.0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_perceptual_on_cuda(offline):
    a, b = (x.cuda() for x in images(2, size=48))
    loss_fn = PerceptualLoss("stlpips")
    pred = b.clone().requires_grad_(True)
    loss = loss_fn(pred, a)
    loss.backward()
    assert loss.device.type == "cuda" and pred.grad.abs().sum() > 0
    metric = PerceptualMetric(kind="stlpips")
    assert metric(a, b) == pytest.approx(metric(a.cpu(), b.cpu()), rel=1e-3)
