"""A low-resolution camera as an HR -> LR degradation: optics blur, pixel integration, sensor noise, JPEG.

``datasets.preprocess.degrade(..., mode="camera")`` applies it; this module holds its settings, the random
parameters of one image and the steps. For one image of ``H x W`` HR pixels and an LR size ``h x w``:

1. **PSF**: a Gaussian blur of standard deviation ``psf_sigma`` LR pixels (``psf_sigma * H / h`` HR pixels
   vertically, ``* W / w`` horizontally), replicate padding: the lens and sensor's point spread function.
2. **Area sampling**: each LR pixel averages the HR pixels under its footprint (``degrade(mode="area")``):
   a pixel integrates light over its area.
3. **Poisson-Gaussian noise** (Foi et al. 2008's heteroscedastic model, the Poisson part in its Gaussian
   approximation): ``y = x + sqrt(poisson_gain * x + read_noise^2) * n``, ``n ~ N(0, 1)`` per pixel and
   channel, clamped to [0, 1]. ``poisson_gain`` is the shot-noise variance per unit intensity, ``read_noise``
   the signal-independent standard deviation, both in [0, 1] intensity units.
4. **JPEG** at ``jpeg_quality`` (OpenCV's encoder, 4:2:0 chroma subsampling, 8-bit): the file a camera
   writes.

Every parameter is drawn per image, uniformly in its configured ``[low, high]`` range
(``LRCamera``), from a ``torch.Generator`` that also draws the noise: training passes a generator per
image seeded from the run's seed and step (a resumed run sees the same images); evaluation seeds it from
the image's identity (``identity_seed``), so every evaluation of an image sees the same LR input.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from utils.errors import InputError


@dataclass(frozen=True, slots=True)
class LRCamera:
    """The ranges a camera degradation draws its parameters from (config group ``data.lr_camera``).

    Each field is a ``(low, high)`` pair, ``low <= high`` (the schema's ``range`` rules check the bounds).

    Attributes:
        psf_sigma: Gaussian PSF standard deviation, LR pixels.
        poisson_gain: shot-noise variance per unit intensity (variance ``poisson_gain * x``).
        read_noise: signal-independent noise standard deviation, [0, 1] intensity.
        jpeg_quality: JPEG quality, 1..100 (drawn as an integer).
    """

    psf_sigma: tuple = (0.3, 0.8)
    poisson_gain: tuple = (0.0, 0.002)
    read_noise: tuple = (0.001, 0.01)
    jpeg_quality: tuple = (60, 95)

    def __post_init__(self) -> None:
        for name in ("psf_sigma", "poisson_gain", "read_noise", "jpeg_quality"):
            value = getattr(self, name)
            if len(value) != 2 or not value[0] <= value[1] or value[0] < 0:
                raise InputError(
                    f"LRCamera.{name} must be a [low, high] pair with 0 <= low <= high, got {value}"
                )
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise InputError(f"LRCamera.jpeg_quality must lie in [1, 100], got {self.jpeg_quality}")

    def generators_for(self, identities: Sequence[tuple]) -> list[torch.Generator]:
        """One generator per image, seeded from its identity tuple (``identity_seed(*identity)``): the fixed,
        reproducible draw of an evaluation or of a capture's LR inputs."""
        return seeded_generators([identity_seed(*identity) for identity in identities])


@dataclass(frozen=True, slots=True)
class CameraParams:
    """The degradation parameters of one image (units as ``LRCamera``)."""

    psf_sigma: float
    poisson_gain: float
    read_noise: float
    jpeg_quality: int


def identity_seed(*parts) -> int:
    """A seed from an image's identity (capture, sequence, frame, camera, scale, ...): CRC-32 of the parts
    joined by ``/``, stable across processes and machines (unlike ``hash``)."""
    return zlib.crc32("/".join(str(p) for p in parts).encode("utf-8"))


def seeded_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU ``torch.Generator`` per seed."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def draw_params(camera: LRCamera, generator: torch.Generator) -> CameraParams:
    """Parameters of one image, each uniform in its range (JPEG quality: an integer, both ends included)."""
    u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()

    def lerp(pair: tuple, t: float) -> float:
        return float(pair[0]) + (float(pair[1]) - float(pair[0])) * t

    lo, hi = int(camera.jpeg_quality[0]), int(camera.jpeg_quality[1])
    return CameraParams(
        psf_sigma=lerp(camera.psf_sigma, u[0]),
        poisson_gain=lerp(camera.poisson_gain, u[1]),
        read_noise=lerp(camera.read_noise, u[2]),
        jpeg_quality=min(hi, lo + int(u[3] * (hi - lo + 1))),
    )


def gaussian_kernel1d(sigma: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised 1D Gaussian of standard deviation ``sigma`` pixels, radius ``ceil(3 sigma)``: ``(2r + 1,)``."""
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def gaussian_blur(image: torch.Tensor, sigma_yx: tuple[float, float]) -> torch.Tensor:
    """Separable Gaussian blur of ``image (B, C, H, W)`` with ``(sigma_y, sigma_x)`` pixels (0: that axis
    untouched), replicate padding. Returns ``(B, C, H, W)``."""
    B, C, H, W = image.shape
    out = image
    for axis, sigma in ((0, sigma_yx[0]), (1, sigma_yx[1])):
        if sigma <= 0:
            continue
        kernel = gaussian_kernel1d(sigma, image.dtype, image.device)
        r = kernel.numel() // 2
        if axis == 0:
            padded = F.pad(out, (0, 0, r, r), mode="replicate")
            weight = kernel.view(1, 1, -1, 1).expand(C, 1, -1, 1)
        else:
            padded = F.pad(out, (r, r, 0, 0), mode="replicate")
            weight = kernel.view(1, 1, 1, -1).expand(C, 1, 1, -1)
        out = F.conv2d(padded, weight, groups=C)
    return out


def jpeg_roundtrip(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode ``image (3, h, w)`` RGB in [0, 1] as JPEG at ``quality`` and decode it: ``(3, h, w)`` on the
    input's device and dtype (8-bit values)."""
    import cv2

    rgb = (image.detach().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    ok, encoded = cv2.imencode(
        ".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise RuntimeError(f"OpenCV could not JPEG-encode a {rgb.shape} image")
    bgr = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    decoded = torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1)
    return decoded.to(device=image.device, dtype=image.dtype) / 255.0


def camera_degrade(
    hr: torch.Tensor,
    size: tuple[int, int],
    camera: LRCamera,
    generators: Sequence[torch.Generator],
) -> tuple[torch.Tensor, list[CameraParams]]:
    """The camera degradation of a batch (module docstring), one parameter draw per image.

    Args:
        hr: ``(B, 3, H, W)`` RGB in [0, 1].
        size: LR ``(h, w)``.
        camera: the parameter ranges.
        generators: ``B`` CPU generators, one per image (parameters first, then the noise).

    Returns:
        ``(B, 3, h, w)`` LR images in [0, 1] on ``hr``'s device, and the parameters drawn per image.
    """
    from datasets.preprocess import degrade

    B, C, H, W = hr.shape
    if len(generators) != B:
        raise ValueError(
            f"camera_degrade needs one generator per image: {B} images, {len(generators)} generators"
        )
    if C != 3:
        raise ValueError(f"camera_degrade expects RGB images (B, 3, H, W), got {tuple(hr.shape)}")
    h, w = size
    outputs, drawn = [], []
    for b, generator in enumerate(generators):
        params = draw_params(camera, generator)
        x = hr[b : b + 1]
        x = gaussian_blur(x, (params.psf_sigma * H / h, params.psf_sigma * W / w))
        x = degrade(x, size=(h, w), mode="area")
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(
            device=x.device, dtype=x.dtype
        )
        std = (params.poisson_gain * x.clamp_min(0) + params.read_noise**2).sqrt()
        x = (x + std * noise).clamp(0.0, 1.0)
        outputs.append(jpeg_roundtrip(x[0], params.jpeg_quality))
        drawn.append(params)
    return torch.stack(outputs), drawn


__all__ = [
    "LRCamera",
    "CameraParams",
    "identity_seed",
    "seeded_generators",
    "draw_params",
    "gaussian_kernel1d",
    "gaussian_blur",
    "jpeg_roundtrip",
    "camera_degrade",
]
