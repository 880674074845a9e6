"""Where the reconstruction's supervision compares pixels: the mask sources of ``data.mask_source``.

The reference code (and ``mano``, the default) masks every target by the annotated MANO silhouette and
compares a render with it only where both cover the pixel, so tissue outside that silhouette, and a hand
that sits beside its annotation, are invisible to every loss. The other two sources widen the
supervised region (``support``) and explain the pixels in it that the hand does not cover by a
background colour, over which the render is composited: its antialiased silhouette then gets a
gradient from the images, and the surface can grow or move to where the hand is.

- ``capture``: the capture's own foreground segmentation. Target = crop x segmentation (background black),
  support = the union of segmentation and MANO silhouette, dilated by the margin; background colour 0.
- ``dilated``: for captures without segmentation (InterHand2.6M). Support = the MANO silhouette dilated by
  the margin; target = crop x support (the real background stays in the ring); background colour: one
  per view, the median over frames of the median colour of the ring (support minus MANO silhouette) of
  each image (:func:`ring_colour`, :func:`view_background`). The median is the estimate because the ring
  also holds the tissue that the annotation misses; it holds less of it than of the background while
  the margin is wider than the annotation's error.

All masks are ``(B, 1, H, W)`` bool on the crop's pixels; images ``(B, 3, H, W)`` in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainers.srhand.settings import MASK_SOURCES


def margin_pixels(margin: float, size: int) -> int:
    """The dilation radius in pixels of a ``size``-pixel crop for ``margin`` (a fraction of the crop side)."""
    return int(round(margin * size))


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """``mask (B, 1, H, W)`` bool dilated by a disc of ``radius`` pixels (pixel centres within ``radius``)."""
    if radius <= 0:
        return mask.bool()
    r = torch.arange(-radius, radius + 1, dtype=torch.float32, device=mask.device)
    disc = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2 + 1e-6).float()[None, None]
    hits = F.conv2d(mask.float(), disc, padding=radius)
    return hits > 0.5


def supervision_targets(
    source: str, raw: torch.Tensor, mano_mask: torch.Tensor, segmentation: torch.Tensor | None, radius: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The HR target and the support of one batch of crops under ``source``.

    Args:
        source: one of :data:`MASK_SOURCES`.
        raw: ``(B, 3, H, W)`` unmasked crops. mano_mask: ``(B, 1, H, W)`` annotated MANO silhouettes.
        segmentation: ``(B, 1, H, W)`` the capture's foreground (``capture`` only; else ignored).
        radius: dilation radius in pixels (:func:`margin_pixels`; ``capture`` and ``dilated``).
    Returns:
        ``hr (B, 3, H, W)``: the crop where the target keeps it, 0 elsewhere; ``support (B, 1, H, W)`` bool:
        the pixels the losses compare.
    Raises:
        ValueError: an unknown source, or ``capture`` without a segmentation.
    """
    mano_mask = mano_mask.bool()
    if source == "mano":
        return raw * mano_mask, mano_mask
    if source == "capture":
        if segmentation is None:
            raise ValueError("mask source 'capture' needs the capture's segmentation")
        fg = segmentation.bool()
        return raw * fg, dilate(fg | mano_mask, radius)
    if source == "dilated":
        support = dilate(mano_mask, radius)
        return raw * support, support
    raise ValueError(f"mask source must be one of {MASK_SOURCES}, got {source!r}")


def ring_colour(raw: torch.Tensor, mano_mask: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Per image, the median colour ``(B, 3)`` of the ring ``support & ~mano_mask`` of ``raw (B, 3, H, W)``;
    NaN where an image's ring is empty."""
    ring = (support.bool() & ~mano_mask.bool())[:, 0]  # (B, H, W)
    out = torch.full((raw.shape[0], 3), math.nan, dtype=torch.float32)
    for b in range(raw.shape[0]):
        if ring[b].any():
            out[b] = raw[b][:, ring[b]].float().median(dim=1).values.cpu()
    return out


def view_background(ring_colours: torch.Tensor, usable: torch.Tensor | None = None) -> torch.Tensor:
    """One background colour per view ``(V, 3)``: the median over frames of ``ring_colours (F, V, 3)``
    (:func:`ring_colour`), skipping NaN and the views ``usable (F, V)`` marks False; 0 where none is left."""
    values = ring_colours.clone()
    if usable is not None:
        values[~usable.bool()] = math.nan
    median = values.nanmedian(dim=0).values
    return torch.nan_to_num(median, nan=0.0)


def compared_images(
    out: dict, support: torch.Tensor, background: torch.Tensor | None, source: str
) -> tuple[dict, torch.Tensor]:
    """What the losses compare with a target: the render (composited over ``background`` unless ``source`` is
    ``mano``) and the valid mask.

    Args:
        out: ``HandAvatar.render`` / ``forward`` dict (``image``, ``shading_only``: premultiplied by the
            antialiased ``mask``; ``coverage``: hard, bool).
        support: ``(B, 1, H, W)`` bool, the pixels the source supervises (``SequenceData.support``).
        background: ``(B, 3)`` colours of the views (``SequenceData.background``); ignored for ``mano``.
        source: one of :data:`MASK_SOURCES`.
    Returns:
        ``out`` with ``image`` and ``shading_only`` composited (a new dict; ``out`` is not changed), and
        ``valid (B, 1, H, W)``: ``mano``: support AND coverage (the reference: a pixel counts only where the
        mesh covers it); otherwise the whole support, since the background explains the uncovered pixels.
    """
    if source == "mano":
        return out, support.to(out["image"].dtype) * out["coverage"].to(out["image"].dtype)
    alpha = out["mask"]  # antialiased coverage: the silhouette's gradient comes through it
    bg = background.to(out["image"])[:, :, None, None] * (1.0 - alpha)
    composited = dict(out, image=out["image"] + bg, shading_only=out["shading_only"] + bg)
    return composited, support.to(out["image"].dtype)
