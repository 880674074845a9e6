"""Second-order spherical-harmonics (SH) irradiance shading, as in XHand's ``compute_color``.

Per view 27 coefficients, laid out as 3 colour channels (R, G, B) x 9 basis functions, so that
``coeffs.view(B, 3, 9)[:, c, k]`` multiplies basis ``k`` for channel ``c``. A constant ``ambient``
(0.8 in the reference, its ``init_lit``) is added to the DC coefficient of every channel, so all-zero
coefficients shade a surface with a uniform ``0.8 * Y0 = 0.709``.

Basis for a unit normal ``n = (x, y, z)`` (reference A4.4; ``a = [pi, 2 pi / sqrt 3, 2 pi / sqrt 8]``,
``c = [1 / sqrt(4 pi), sqrt 3 / sqrt(4 pi), 3 sqrt 5 / sqrt(12 pi)]``, i.e. the Ramamoorthi-Hanrahan
irradiance convolution folded into real SH)::

    Y0 = a0 c0 = 0.8862
    Y1 = -a1 c1 y      Y2 = a1 c1 z        Y3 = -a1 c1 x          (a1 c1 = sqrt(pi) = 1.7725)
    Y4 = a2 c2 x y     Y5 = -a2 c2 y z     Y6 = a2 c2 / (2 sqrt 3) (3 z^2 - 1)
    Y7 = -a2 c2 x z    Y8 = a2 c2 / 2 (x^2 - y^2)                 (a2 c2 = 2.4270)

Normals are taken in whatever frame the coefficients were fitted in (camera space for per-view SH).
"""

from __future__ import annotations

import math

import torch
from torch import nn

SH_A = (math.pi, 2 * math.pi / math.sqrt(3), 2 * math.pi / math.sqrt(8))
SH_C = (
    1 / math.sqrt(4 * math.pi),
    math.sqrt(3) / math.sqrt(4 * math.pi),
    3 * math.sqrt(5) / math.sqrt(12 * math.pi),
)
Y0 = SH_A[0] * SH_C[0]  # 0.8862
A1C1 = SH_A[1] * SH_C[1]  # sqrt(pi) = 1.7725
A2C2 = SH_A[2] * SH_C[2]  # 2.4270
NUM_SH_COEFFS = 27
DEFAULT_AMBIENT = 0.8


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """The 9 order-2 SH irradiance basis values of unit normals.

    Args:
        normals: (..., 3) unit vectors ``(x, y, z)`` (not re-normalised here).
    Returns:
        (..., 9) basis values ``Y0..Y8`` (module docstring).
    """
    if normals.shape[-1] != 3:
        raise ValueError(f"normals must have shape (..., 3), got {tuple(normals.shape)}")
    x, y, z = normals.unbind(-1)
    return torch.stack(
        [
            torch.full_like(x, Y0),
            -A1C1 * y,
            A1C1 * z,
            -A1C1 * x,
            A2C2 * x * y,
            -A2C2 * y * z,
            A2C2 / (2 * math.sqrt(3)) * (3 * z * z - 1),
            -A2C2 * x * z,
            A2C2 / 2 * (x * x - y * y),
        ],
        dim=-1,
    )


def _coeff_matrix(sh_coeffs: torch.Tensor, ambient: float) -> torch.Tensor:
    """(B, 27) coefficients -> (B, 3, 9) with ``ambient`` added to each channel's DC term."""
    if sh_coeffs.dim() != 2 or sh_coeffs.shape[-1] != NUM_SH_COEFFS:
        raise ValueError(f"sh_coeffs must have shape (B, 27), got {tuple(sh_coeffs.shape)}")
    gamma = sh_coeffs.view(-1, 3, 9)
    offset = torch.zeros(9, dtype=gamma.dtype, device=gamma.device)
    offset[0] = ambient
    return gamma + offset


def sh_shade(
    normals: torch.Tensor, sh_coeffs: torch.Tensor, ambient: float = DEFAULT_AMBIENT
) -> torch.Tensor:
    """Per-channel SH irradiance ``sum_k Y_k(n) * gamma[c, k]``.

    Args:
        normals: (B, ..., 3) unit normals, channels last (e.g. (B, H, W, 3) or (B, N, 3)).
        sh_coeffs: (B, 27) coefficients, channel-major (R 0-8, G 9-17, B 18-26).
        ambient: added to the DC coefficient of every channel.
    Returns:
        (B, ..., 3) irradiance per RGB channel (unclipped; multiply by albedo, then clip).

    Example:
        >>> sh_shade(torch.tensor([[[0.0, 0.0, 1.0]]]), torch.zeros(1, 27))  # doctest: +ELLIPSIS
        tensor([[[0.7090, 0.7090, 0.7090]]])
    """
    if normals.dim() < 2 or normals.shape[0] != sh_coeffs.shape[0]:
        raise ValueError(
            f"normals (B, ..., 3) and sh_coeffs (B, 27) need the same batch size, got "
            f"{tuple(normals.shape)} and {tuple(sh_coeffs.shape)}"
        )
    gamma = _coeff_matrix(sh_coeffs, ambient).to(normals.dtype)  # (B, 3, 9)
    basis = sh_basis(normals)  # (B, ..., 9)
    # One (N, 9) x (9, 3) product per view: the nine multiply-adds of sh_shade_reference, with a backward
    # that does not fill a (B, N, 1, 9) zero tensor per coefficient.
    out = torch.bmm(basis.reshape(basis.shape[0], -1, 9), gamma.transpose(1, 2))
    return out.reshape(*normals.shape[:-1], 3)  # (B, ..., 3)


def sh_shade_reference(
    normals: torch.Tensor, sh_coeffs: torch.Tensor, ambient: float = DEFAULT_AMBIENT
) -> torch.Tensor:
    """:func:`sh_shade` written as the sum it is, nine broadcast multiply-adds: the plain reference the
    tests compare it with (values and gradients), not used in training."""
    gamma = _coeff_matrix(sh_coeffs, ambient).to(normals.dtype)  # (B, 3, 9)
    flat = sh_basis(normals).reshape(normals.shape[0], -1, 1, 9)
    out = flat[..., 0] * gamma[:, None, :, 0]
    for k in range(1, 9):
        out = out + flat[..., k] * gamma[:, None, :, k]
    return out.reshape(*normals.shape[:-1], 3)  # (B, ..., 3)


def sh_render(
    albedo: torch.Tensor, normals: torch.Tensor, sh_coeffs: torch.Tensor, ambient: float = DEFAULT_AMBIENT
) -> torch.Tensor:
    """Shaded colour ``clip(albedo * sh_shade(normals), 0, 1)``; albedo and normals (B, ..., 3) RGB."""
    return (albedo * sh_shade(normals, sh_coeffs, ambient)).clamp(0.0, 1.0)


def fit_sh_coeffs(
    normals: torch.Tensor, irradiance: torch.Tensor, ambient: float = DEFAULT_AMBIENT
) -> torch.Tensor:
    """Least-squares SH coefficients reproducing a per-channel irradiance (inverse of :func:`sh_shade`).

    Args:
        normals: (B, N, 3) unit normals; irradiance: (B, N, 3) target values.
        ambient: the constant :func:`sh_shade` will add (subtracted from the fitted DC terms).
    Returns:
        (B, 27) coefficients.
    """
    if normals.dim() != 3 or irradiance.shape != normals.shape:
        raise ValueError(
            f"normals and irradiance must both be (B, N, 3), got {tuple(normals.shape)} and "
            f"{tuple(irradiance.shape)}"
        )
    basis = sh_basis(normals)  # (B, N, 9)
    gamma = torch.linalg.lstsq(basis, irradiance).solution  # (B, 9, 3)
    gamma = gamma.transpose(1, 2).clone()  # (B, 3, 9)
    gamma[..., 0] -= ambient
    return gamma.reshape(-1, NUM_SH_COEFFS)


class SHShading(nn.Module):
    """Module form of :func:`sh_shade` with a fixed ``ambient`` (no parameters)."""

    def __init__(self, ambient: float = DEFAULT_AMBIENT):
        super().__init__()
        self.ambient = float(ambient)

    def forward(self, normals: torch.Tensor, sh_coeffs: torch.Tensor) -> torch.Tensor:
        return sh_shade(normals, sh_coeffs, self.ambient)

    def extra_repr(self) -> str:
        return f"ambient={self.ambient}"


__all__ = [
    "SH_A",
    "SH_C",
    "Y0",
    "A1C1",
    "A2C2",
    "NUM_SH_COEFFS",
    "DEFAULT_AMBIENT",
    "sh_basis",
    "sh_shade",
    "sh_render",
    "fit_sh_coeffs",
    "SHShading",
]
