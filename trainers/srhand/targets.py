"""The SR targets of stage 3: the images that supervise the avatar, made by GIIF, bicubic upsampling or the
HR images themselves (``sr_source``), and regenerated after each fine-tuning round."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainers.sr_eval import bicubic_upsample
from trainers.srhand.giif_decode import giif_decode
from trainers.srhand.sequence import SequenceData


@dataclass(slots=True)
class SRTargets:
    """SR images of every (frame, view) of the fit, in the storage dtype of the fit's images.

    Attributes:
        current: ``(F, V, 3, H, W)`` the targets of the avatar's losses; replaced (never modified in place)
            after each fine-tuning round.
        original: ``(F, V, 3, H, W)`` the targets GIIF made before its first round, the reference of the
            fine-tuning's wavelet loss (``sr_source = giif_finetuned`` only; may be the same tensor as
            ``current`` until a round replaces that).
    """

    current: torch.Tensor
    original: torch.Tensor | None = None


@torch.no_grad()
def sr_batch(
    giif,
    source: str,
    lr: torch.Tensor,
    normal: torch.Tensor,
    mask: torch.Tensor,
    hr: torch.Tensor,
    chunk: int,
) -> torch.Tensor:
    """SR images ``(B, 3, H, W)`` of one batch for ``source``, masked by ``mask``.

    Args:
        giif: the SR network (``source`` giif or giif_finetuned). lr: ``(B, 3, h, w)``. normal: GIIF's normal
            maps. mask: ``(B, 1, H, W)``: the MANO silhouette, or the fit's support (``SequenceData.support``,
            the pixels the losses compare under ``data.mask_source``). hr: ``(B, 3, H, W)`` masked HR crops
            (``source = hr``; gives the size).
        chunk: GIIF queries per image decoded at once.
    """
    size = hr.shape[-2:]
    if source == "hr":
        return hr
    if source == "bicubic":
        return bicubic_upsample(lr, size) * mask
    return giif_decode(giif, lr, normal, size, chunk).clamp(0.0, 1.0) * mask


@torch.no_grad()
def generate_sr(giif, source: str, data: SequenceData, batch: int, chunk: int) -> torch.Tensor:
    """SR targets of every usable (frame, view) of ``data``: ``(F, V, 3, H, W)`` in its storage dtype, 0 for the
    views that are not usable (black images: never fitted).

    ``batch`` views are decoded at once (``eval.batch_size``); ``giif`` is put in eval mode.
    """
    out = torch.zeros_like(data.hr)
    if giif is not None:
        giif.eval()
    batch = max(1, batch)
    for f in range(data.num_frames):
        usable = data.usable_views(f, range(data.num_views))
        for k in range(0, len(usable), batch):
            views = usable[k : k + batch]
            sr = sr_batch(
                giif,
                source,
                data.get("lr", f, views),
                data.get("normal", f, views),
                data.get("support", f, views),
                data.get("hr", f, views),
                chunk,
            )
            out[f, views] = sr.to(out.dtype)
    return out


def make_targets(giif, giif_orig, source: str, data: SequenceData, batch: int, chunk: int) -> SRTargets:
    """The SR targets of a fit from ``giif`` and, for ``source = giif_finetuned``, the original targets from
    ``giif_orig`` (the same tensor when GIIF has not been fine-tuned yet)."""
    current = generate_sr(giif, source, data, batch, chunk)
    original = None
    if source == "giif_finetuned":
        named = dict(giif.named_parameters())
        unchanged = all(torch.equal(named[n], p) for n, p in giif_orig.named_parameters())
        original = current if unchanged else generate_sr(giif_orig, source, data, batch, chunk)
    return SRTargets(current=current, original=original)
