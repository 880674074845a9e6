"""Order-2 SH shading: constants, hand-computed values, least-squares recovery, gradients."""

import math

import pytest
import torch

from utils.geometry.sh import A1C1, A2C2, Y0, SHShading, fit_sh_coeffs, sh_basis, sh_render, sh_shade


def _unit(v):
    v = torch.as_tensor(v, dtype=torch.float64)
    return v / v.norm(dim=-1, keepdim=True)


def test_constants_match_reference():
    assert math.isclose(Y0, 0.8862, abs_tol=1e-4)
    assert math.isclose(A1C1, math.sqrt(math.pi), rel_tol=1e-12) and math.isclose(A1C1, 1.7725, abs_tol=1e-4)
    assert math.isclose(A2C2, 2.4270, abs_tol=1e-4)
    assert math.isclose(A2C2 / (2 * math.sqrt(3)), 0.7006, abs_tol=1e-4)
    assert math.isclose(A2C2 / 2, 1.2135, abs_tol=1e-4)


def test_basis_hand_computed():
    b = sh_basis(_unit([0.0, 0.0, 1.0]))
    expect = torch.tensor([Y0, 0, A1C1, 0, 0, 0, A2C2 / (2 * math.sqrt(3)) * 2, 0, 0], dtype=torch.float64)
    assert torch.allclose(b, expect)
    n = _unit([1.0, 2.0, 2.0])  # (1, 2, 2) / 3
    x, y, z = 1 / 3, 2 / 3, 2 / 3
    expect = torch.tensor(
        [
            Y0,
            -A1C1 * y,
            A1C1 * z,
            -A1C1 * x,
            A2C2 * x * y,
            -A2C2 * y * z,
            A2C2 / (2 * math.sqrt(3)) * (3 * z * z - 1),
            -A2C2 * x * z,
            A2C2 / 2 * (x * x - y * y),
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(sh_basis(n), expect)
    assert sh_basis(torch.zeros(2, 5, 3)).shape == (2, 5, 9)


def test_shade_single_coefficient_and_ambient():
    n = _unit([[[0.0, 0.0, 1.0]]])  # (B=1, N=1, 3)
    zero = torch.zeros(1, 27, dtype=torch.float64)
    # All-zero coefficients: the ambient on DC only.
    assert torch.allclose(sh_shade(n, zero), torch.full((1, 1, 3), 0.8 * Y0, dtype=torch.float64))
    assert torch.allclose(sh_shade(n, zero, ambient=0.0), torch.zeros(1, 1, 3, dtype=torch.float64))
    # Coefficient 2 (the z term) of the green channel only: layout is channel-major (G = 9..17).
    coeffs = zero.clone()
    coeffs[0, 9 + 2] = 0.5
    out = sh_shade(n, coeffs, ambient=0.0)
    assert torch.allclose(out, torch.tensor([[[0.0, 0.5 * A1C1, 0.0]]], dtype=torch.float64))
    # Blue channel's x*y term at n = (1, 1, 0)/sqrt2: A2C2 * 1/2.
    coeffs = zero.clone()
    coeffs[0, 18 + 4] = 1.0
    out = sh_shade(_unit([[[1.0, 1.0, 0.0]]]), coeffs, ambient=0.0)
    assert torch.allclose(out, torch.tensor([[[0.0, 0.0, A2C2 / 2]]], dtype=torch.float64))


def test_shade_shapes_module_and_render_clip():
    g = torch.Generator().manual_seed(0)
    n = _unit(torch.randn(2, 4, 5, 3, generator=g, dtype=torch.float64))
    coeffs = 0.3 * torch.randn(2, 27, generator=g, dtype=torch.float64)
    out = sh_shade(n, coeffs)
    assert out.shape == (2, 4, 5, 3)
    # Per-view coefficients: view 1's image depends only on view 1's coefficients.
    assert torch.allclose(sh_shade(n[1:], coeffs[1:]), out[1:])
    assert torch.allclose(SHShading(0.8)(n, coeffs), out)
    img = sh_render(torch.full_like(n, 2.0), n, coeffs)
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0


def test_least_squares_recovers_coefficients():
    g = torch.Generator().manual_seed(1)
    n = _unit(torch.randn(3, 200, 3, generator=g, dtype=torch.float64))
    coeffs = 0.4 * torch.randn(3, 27, generator=g, dtype=torch.float64)
    fitted = fit_sh_coeffs(n, sh_shade(n, coeffs))
    assert torch.allclose(fitted, coeffs, atol=1e-9)


def test_gradcheck_and_bad_input():
    g = torch.Generator().manual_seed(2)
    n = _unit(torch.randn(1, 4, 3, generator=g, dtype=torch.float64)).requires_grad_(True)
    coeffs = torch.randn(1, 27, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: sh_shade(a, b), (n, coeffs))
    with pytest.raises(ValueError, match=r"sh_coeffs must have shape \(B, 27\)"):
        sh_shade(n, torch.zeros(1, 9, dtype=torch.float64))
    with pytest.raises(ValueError, match="same batch size"):
        sh_shade(n, torch.zeros(2, 27, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"normals must have shape \(\.\.\., 3\)"):
        sh_basis(torch.zeros(4, 2))
