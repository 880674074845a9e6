"""Continuous image coordinates for implicit super-resolution (LIIF conventions).

An image of H x W pixels spans [-1, 1] x [-1, 1]; pixel ``i`` of an axis of length ``n`` covers
``[-1 + 2i/n, -1 + 2(i+1)/n)`` and its centre is ``-1 + (2i + 1)/n``. This is the same convention as
``F.grid_sample(..., align_corners=False)`` and the OpenCV "pixel centres at +0.5" rule of the camera code
(``coord = 2 * (pixel + 0.5) / n - 1``).

Coordinates are ordered ``(row / y, col / x)``, i.e. ``coord[..., 0]`` indexes the height axis;
``grid_sample`` wants ``(x, y)`` and needs ``coord.flip(-1)``. A flattened grid is row-major, matching
``img.reshape(C, H * W)``. A query's ``cell`` is the size of its target pixel in these units,
``(2/H, 2/W)`` for an H x W output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def make_coord(
    shape: Sequence[int],
    ranges: Sequence[Sequence[float]] | None = None,
    flatten: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Pixel-centre coordinates of a grid.

    Args:
        shape: grid size per axis, e.g. ``(H, W)``.
        ranges: ``[(lo, hi), ...]`` per axis; default ``(-1, 1)`` for each.
        flatten: return ``(prod(shape), ndim)`` instead of ``(*shape, ndim)``.

    Returns:
        coordinates with ``[..., k]`` along axis ``k`` (``(row, col)`` for 2-D):
        ``lo + (hi - lo) * (2i + 1) / (2 n)``. Example: ``make_coord((2, 2))`` =
        ``[[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]]``.
    """
    axes = []
    for k, n in enumerate(shape):
        lo, hi = (-1.0, 1.0) if ranges is None else ranges[k]
        half = (hi - lo) / (2 * n)
        axes.append(lo + half + 2 * half * torch.arange(n, device=device, dtype=dtype))
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    return grid.reshape(-1, grid.shape[-1]) if flatten else grid


def make_cell(
    H: int,
    W: int,
    batch: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Cell sizes for every pixel of an H x W output: ``(batch, H*W, 2)`` filled with ``(2/H, 2/W)``."""
    cell = torch.tensor([2.0 / H, 2.0 / W], device=device, dtype=dtype)
    return cell.expand(batch, H * W, 2).clone()


def pixel_index(coord: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Flat index ``row * W + col`` of the pixel of an H x W grid containing each coordinate.

    Args:
        coord: ``(..., 2)`` in ``(row, col)`` order; values outside [-1, 1] are clamped to the border
            pixels (as ``grid_sample(mode='nearest', padding_mode='border')``).

    Returns:
        ``(...)`` int64. Pixel ``i`` holds ``[-1 + 2i/n, -1 + 2(i+1)/n)``; ``grid_sample`` nearest agrees
        except on the exact pixel boundaries (measure zero; it rounds half to even there).
    """
    row = ((coord[..., 0] + 1) * (H / 2)).floor().long().clamp_(0, H - 1)
    col = ((coord[..., 1] + 1) * (W / 2)).floor().long().clamp_(0, W - 1)
    return row * W + col


def pixel_centre(index: torch.Tensor, H: int, W: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Centres ``(..., 2)`` in ``(row, col)`` order of the pixels with flat indices ``index`` (``(...)``)."""
    row = torch.div(index, W, rounding_mode="floor")
    col = index - row * W
    return torch.stack([-1 + (2 * row + 1).to(dtype) / H, -1 + (2 * col + 1).to(dtype) / W], dim=-1)


def gather_pixels(feat_flat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather rows of a channels-last flattened map.

    Args:
        feat_flat: ``(B, H*W, C)``.
        index: ``(B, Q)`` int64 flat pixel indices.

    Returns:
        ``(B, Q, C)``; differentiable w.r.t. ``feat_flat``.
    """
    B, Q = index.shape
    return feat_flat.gather(1, index.unsqueeze(-1).expand(B, Q, feat_flat.shape[-1]))


def sample_nearest(feat: torch.Tensor, coord: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-pixel sampling of a feature map at continuous coordinates.

    Args:
        feat: ``(B, C, H, W)``.
        coord: ``(B, Q, 2)`` in ``(row, col)`` order, [-1, 1].

    Returns:
        ``values (B, Q, C)`` (= ``grid_sample(feat, coord.flip(-1), 'nearest', align_corners=False)``
        away from pixel boundaries) and ``centres (B, Q, 2)``, the centre of the pixel each value came from.
    """
    B, C, H, W = feat.shape
    index = pixel_index(coord, H, W)
    values = gather_pixels(feat.flatten(2).transpose(1, 2), index)
    return values, pixel_centre(index, H, W, dtype=coord.dtype)


RESIDUAL_MODES = ("none", "bilinear", "bicubic")


def sample_image(img: torch.Tensor, coord: torch.Tensor, mode: str) -> torch.Tensor:
    """Interpolate an image at continuous coordinates (``grid_sample``, ``align_corners=False``, border padding).

    Args:
        img: ``(B, C, h, w)``.
        coord: ``(B, Q, 2)`` in ``(row, col)`` order, [-1, 1] (pixel centres at ``-1 + (2i + 1)/n``).
        mode: ``"bilinear"`` or ``"bicubic"`` (``grid_sample``'s cubic convolution, ``a = -0.75``, not
            clamped: it may overshoot the input's range near edges).

    Returns:
        ``(B, Q, C)``; differentiable w.r.t. ``img``. At a pixel centre of ``img`` both modes return that
        pixel's value exactly.
    """
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"mode must be 'bilinear' or 'bicubic', got {mode!r}")
    grid = coord.flip(-1).unsqueeze(1).to(img.dtype)  # (B, 1, Q, 2) in grid_sample's (x, y) order
    sampled = F.grid_sample(img, grid, mode=mode, padding_mode="border", align_corners=False)
    return sampled[:, :, 0].transpose(1, 2)  # (B, C, 1, Q) -> (B, Q, C)


def to_pixel_samples(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All pixels of ``img (B, C, H, W)`` as ``coord (B, H*W, 2)`` and ``values (B, H*W, C)`` (row-major)."""
    B, C, H, W = img.shape
    coord = make_coord((H, W), device=img.device, dtype=img.dtype).expand(B, H * W, 2)
    return coord, img.flatten(2).transpose(1, 2)


def sample_queries(
    hr: torch.Tensor,
    num_queries: int | None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random HR pixels as training queries (without replacement, independently per batch element).

    Args:
        hr: ``(B, C, H, W)`` target image (typically RGB in [0, 1]).
        num_queries: pixels per image; ``None`` or ``>= H*W`` takes every pixel in row-major order.
        generator: a ``torch.Generator`` on the CPU (indices are drawn on the CPU for reproducibility
            across devices, then moved to ``hr.device``).

    Returns:
        ``coord (B, N, 2)`` pixel centres in ``(row, col)`` order, ``cell (B, N, 2)`` = ``(2/H, 2/W)``,
        ``gt (B, N, C)`` the pixel values, same range as ``hr``.
    """
    B, C, H, W = hr.shape
    coord_all, values_all = to_pixel_samples(hr)
    if num_queries is None or num_queries >= H * W:
        index = None
        coord, gt = coord_all.contiguous(), values_all.contiguous()
    else:
        index = torch.stack([torch.randperm(H * W, generator=generator)[:num_queries] for _ in range(B)])
        index = index.to(hr.device)
        coord = gather_pixels(coord_all, index)
        gt = gather_pixels(values_all, index)
    cell = torch.tensor([2.0 / H, 2.0 / W], device=hr.device, dtype=hr.dtype).expand_as(coord).clone()
    return coord, cell, gt
