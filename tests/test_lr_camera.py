"""The low-resolution camera degradation (datasets/lr_camera.py) and its use by degrade / the SR evaluation."""

import math

import pytest
import torch

from datasets import lr_camera
from datasets.lr_camera import LRCamera, seeded_generators
from datasets.preprocess import degrade
from utils.errors import InputError

CLEAN = LRCamera(
    psf_sigma=(0.0, 0.0), poisson_gain=(0.0, 0.0), read_noise=(0.0, 0.0), jpeg_quality=(100, 100)
)


def test_gaussian_blur_of_an_impulse_has_the_analytic_moments():
    """The blur of a delta sums to 1, is centred on it and has variance sigma^2 per axis."""
    img = torch.zeros(1, 3, 61, 61)
    img[..., 30, 30] = 1.0
    out = lr_camera.gaussian_blur(img, (2.0, 3.5))[0, 0]
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)
    idx = torch.arange(61, dtype=torch.float64) - 30
    rows, cols = out.double().sum(1), out.double().sum(0)
    assert (rows * idx).sum().item() == pytest.approx(0.0, abs=1e-6)
    assert (rows * idx**2).sum().item() == pytest.approx(2.0**2, rel=2e-2)  # the 3-sigma cut loses ~1 %
    assert (cols * idx**2).sum().item() == pytest.approx(3.5**2, rel=2e-2)
    assert torch.equal(lr_camera.gaussian_blur(img, (0.0, 0.0)), img)


def test_clean_camera_is_area_sampling_up_to_8_bit_jpeg():
    """No blur, no noise, JPEG at quality 100: the area-sampled image within JPEG's rounding error."""
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    hr = torch.stack([0.5 + 0.3 * torch.sin(4 * xx), 0.4 + 0.3 * yy, 0.3 + 0.2 * xx * yy])[None]
    out = degrade(hr, scale=4, mode="camera", camera=CLEAN, generators=seeded_generators([0]))
    area = degrade(hr, scale=4, mode="area")
    assert out.shape == area.shape == (1, 3, 16, 16)
    assert (out - area).abs().mean() < 2 / 255 and (out - area).abs().max() < 8 / 255


def test_noise_has_the_poisson_gaussian_standard_deviation():
    """A flat grey image: the LR pixels' spread is sqrt(gain * x + read^2) (JPEG at 100 adds ~1/255 rounding)."""
    gain, read, level = 0.004, 0.02, 0.5
    camera = LRCamera(
        psf_sigma=(0.0, 0.0), poisson_gain=(gain, gain), read_noise=(read, read), jpeg_quality=(100, 100)
    )
    hr = torch.full((1, 3, 128, 128), level)
    out = degrade(hr, size=128, mode="camera", camera=camera, generators=seeded_generators([3]))
    expected = math.sqrt(gain * level + read**2)
    # JPEG keeps luma at full resolution (chroma is subsampled, which averages its noise away): the luma of
    # independent per-channel noise has std expected * |(0.299, 0.587, 0.114)|.
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    luma = (out * weights).sum(1)
    assert luma.std().item() == pytest.approx(expected * weights.norm().item(), rel=0.1)
    assert out.mean().item() == pytest.approx(level, abs=0.01)


def test_parameters_are_drawn_in_their_ranges_with_both_jpeg_ends():
    camera = LRCamera(
        psf_sigma=(0.2, 0.9), poisson_gain=(0.0, 0.01), read_noise=(0.005, 0.02), jpeg_quality=(70, 72)
    )
    gen = torch.Generator().manual_seed(0)
    draws = [lr_camera.draw_params(camera, gen) for _ in range(300)]
    assert all(0.2 <= d.psf_sigma <= 0.9 and 0.0 <= d.poisson_gain <= 0.01 for d in draws)
    assert all(0.005 <= d.read_noise <= 0.02 for d in draws)
    assert {d.jpeg_quality for d in draws} == {70, 71, 72}
    with pytest.raises(InputError, match="psf_sigma"):
        LRCamera(psf_sigma=(1.0, 0.5))


def test_camera_degradation_is_reproducible_per_generator_and_differs_across_seeds():
    hr = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    a = degrade(hr, scale=4, mode="camera", camera=LRCamera(), generators=seeded_generators([1, 2]))
    b = degrade(hr, scale=4, mode="camera", camera=LRCamera(), generators=seeded_generators([1, 2]))
    c = degrade(hr, scale=4, mode="camera", camera=LRCamera(), generators=seeded_generators([1, 5]))
    assert torch.equal(a, b)
    assert torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])  # each image has its own draw
    assert lr_camera.identity_seed("Capture1", "seq", 3, "cam1", "x4") == lr_camera.identity_seed(
        "Capture1", "seq", 3, "cam1", "x4"
    )
    with pytest.raises(ValueError, match="needs camera"):
        degrade(hr, scale=4, mode="camera")
    with pytest.raises(ValueError, match="one generator per image"):
        degrade(hr, scale=4, mode="camera", camera=LRCamera(), generators=seeded_generators([1]))


def test_evaluation_lr_is_seeded_by_image_identity_and_scale():
    """The SR evaluation's camera input depends only on the image's identity and the scale, not on the
    batch it comes in; the other degradations need no identity."""
    from trainers.sr_eval import eval_lr

    hr = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    batch = {"capture": ["C1", "C1"], "sequence": ["s", "s"], "frame_id": [0, 1], "camera": ["a", "a"]}
    both = eval_lr(hr, 4.0, "camera", batch)
    alone = eval_lr(hr[1:], 4.0, "camera", {k: v[1:] for k, v in batch.items()})
    assert torch.equal(both[1:], alone)
    assert not torch.equal(eval_lr(hr, 8.0, "camera", batch)[0], degrade(hr, scale=8.0, mode="area")[0])
    assert torch.equal(eval_lr(hr, 4.0, "nearest", {}), degrade(hr, scale=4.0, mode="nearest"))
    with pytest.raises(InputError, match="identity"):
        eval_lr(hr, 4.0, "camera", {})
