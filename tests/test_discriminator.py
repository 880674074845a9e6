"""U-Net discriminator with spectral norm and the masked GAN targets/losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

import models
from models.discriminator import UNetDiscriminatorSN, disc_targets, gan_loss


def test_output_shape_is_per_pixel_logits():
    torch.manual_seed(0)
    for skip in (True, False):
        disc = UNetDiscriminatorSN(num_feat=8, skip_connection=skip)
        out = disc(torch.rand(2, 3, 32, 24))
        assert out.shape == (2, 1, 32, 24)
    assert not any(isinstance(m, torch.nn.Sigmoid) for m in disc.modules())


def test_rejects_sizes_not_divisible_by_8():
    disc = UNetDiscriminatorSN(num_feat=8)
    with pytest.raises(ValueError, match="divisible by 8"):
        disc(torch.rand(1, 3, 30, 32))


def test_spectral_norm_layout_and_parameter_count():
    disc = UNetDiscriminatorSN(num_feat=8)
    for i in range(1, 9):
        conv = getattr(disc, f"conv{i}")
        assert parametrize.is_parametrized(conv, "weight"), i
        assert conv.bias is None
    for name in ("conv0", "conv9"):
        assert not parametrize.is_parametrized(getattr(disc, name))
    assert disc.conv1.stride == (2, 2) and disc.conv1.kernel_size == (4, 4)
    with torch.device("meta"):
        full = UNetDiscriminatorSN()
    assert sum(p.numel() for p in full.parameters()) == 4_376_897  # ~4.38 M


def test_spectral_norm_bounds_the_weight():
    torch.manual_seed(0)
    disc = UNetDiscriminatorSN(num_feat=8)
    for _ in range(30):  # power iterations run in training-mode forwards
        disc(torch.rand(1, 3, 16, 16))
    disc.eval()
    w = disc.conv2.weight.detach().flatten(1)
    assert math.isclose(torch.linalg.matrix_norm(w, ord=2).item(), 1.0, rel_tol=0.05)


def test_disc_targets_hand_checked():
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    assert torch.equal(disc_targets(mask, "real"), torch.tensor([[[[1.0, 0.5], [0.5, 1.0]]]]))
    assert torch.equal(disc_targets(mask, "fake"), torch.tensor([[[[0.0, 0.5], [0.5, 0.0]]]]))
    assert torch.equal(disc_targets(mask, "generator"), torch.tensor([[[[1.0, 0.5], [0.5, 1.0]]]]))
    with pytest.raises(ValueError):
        disc_targets(mask, "true")


def test_gan_loss_hand_checked():
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 0.0]]]])
    target = torch.tensor([[[[1.0, 0.5], [0.0, 0.5]]]])
    # BCE(sigmoid(x), t) = softplus(x) - t * x
    expected = (
        math.log(2) + (math.log1p(math.exp(2.0)) - 1.0) + math.log1p(math.exp(-1.0)) + math.log(2)
    ) / 4
    assert math.isclose(gan_loss(logits, target, "bce").item(), expected, rel_tol=1e-6)
    # identical to the reference: nn.BCELoss on the sigmoid output
    assert torch.allclose(gan_loss(logits, target), F.binary_cross_entropy(torch.sigmoid(logits), target))
    # least squares on the raw output: ((0-1)^2 + (2-0.5)^2 + (-1-0)^2 + (0-0.5)^2) / 4
    assert math.isclose(gan_loss(logits, target, "lsgan").item(), (1 + 2.25 + 1 + 0.25) / 4, rel_tol=1e-6)
    assert math.isclose(gan_loss(logits, 1.0).item(), F.softplus(-logits).mean().item(), rel_tol=1e-6)
    with pytest.raises(ValueError):
        gan_loss(logits, target, "hinge")


def test_gan_loss_is_finite_for_saturated_logits():
    logits = torch.tensor([[[[200.0, -200.0]]]], requires_grad=True)
    loss = gan_loss(logits, torch.tensor([[[[0.0, 1.0]]]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_registry_round_trip_keeps_spectral_norm_state():
    torch.manual_seed(0)
    disc = models.make({"name": "unet_disc_sn", "args": {"num_feat": 8}})
    x = torch.rand(1, 3, 16, 16)
    disc(x)  # one power iteration: u, v buffers differ from a fresh init
    disc.eval()
    spec = models.model_spec(disc, with_sd=True)
    assert spec["args"] == {"num_in_ch": 3, "num_feat": 8, "skip_connection": True}
    rebuilt = models.make(spec, load_sd=True).eval()
    with torch.no_grad():
        assert torch.equal(disc(x), rebuilt(x))


def test_disc_accuracy_counts_hand_pixels_only():
    from trainers.disc_trainer import disc_accuracy

    logits = torch.tensor([2.0, -1.0, 0.5, -3.0]).reshape(1, 1, 2, 2)
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0]).reshape(1, 1, 2, 2)  # the last pixel is background
    # bce: real when the logit > 0 -> pixels 0 and 2 of the three hand pixels.
    assert float(disc_accuracy(logits, mask, "real", "bce")) == pytest.approx(2 / 3)
    assert float(disc_accuracy(logits, mask, "fake", "bce")) == pytest.approx(1 / 3)
    # lsgan regresses 1 / 0: real when the output > 0.5 -> pixel 0 only.
    assert float(disc_accuracy(logits, mask, "real", "lsgan")) == pytest.approx(1 / 3)


def test_summarise_history_quarters_and_series():
    from trainers.disc_trainer import summarise_history

    history = [
        {
            "step": s,
            "d_acc_real": s / 10,
            "d_acc_fake": 0.5,
            "grad_norm_adv": 1.0,
            "grad_norm_l1": 2.0,
            "grad_ratio_adv_l1": 0.5,
        }
        for s in range(1, 9)
    ]
    summary = summarise_history(history, max_points=3)
    assert summary["records"] == 8
    assert summary["first_quarter"]["d_acc_real"] == pytest.approx(0.15)  # steps 1, 2
    assert summary["last_quarter"]["d_acc_real"] == pytest.approx(0.75)  # steps 7, 8
    assert [r["step"] for r in summary["series"]] == [1, 4, 7, 8]
    assert summarise_history([]) == {}
