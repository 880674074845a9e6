"""Decoding GIIF over whole images, with or without gradient, and the selection of its fine-tuned parameters."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from models.sr_coords import make_coord
from utils.config import ConfigError

GIIF_PARTS = ("encoder", "normal_encoder", "imnet")


def _query_chunks(
    giif, feats, coord: torch.Tensor, cell: torch.Tensor, chunk: int, checkpoint: bool
) -> torch.Tensor:
    """``giif.query`` of ``coord``/``cell`` ``(B, Q, 2)`` in chunks of ``chunk`` queries: ``(B, Q, 3)``.

    With ``checkpoint`` (and gradient enabled) each chunk is recomputed in the backward pass instead of
    keeping its activations.
    """
    chunk = max(1, int(chunk))
    preds = []
    for start in range(0, coord.shape[1], chunk):
        c, ce = coord[:, start : start + chunk], cell[:, start : start + chunk]
        if checkpoint and torch.is_grad_enabled():
            preds.append(torch_checkpoint(giif.query, feats, c, ce, use_reentrant=False))
        else:
            preds.append(giif.query(feats, c, ce))
    return torch.cat(preds, dim=1)


def giif_decode(
    giif, lr: torch.Tensor, normal: torch.Tensor, size: Sequence[int], chunk: int, checkpoint: bool = False
) -> torch.Tensor:
    """GIIF output ``(B, 3, H, W)`` (not clamped) under the caller's grad mode.

    Like ``GIIF.decode`` but optionally with gradient checkpointing per chunk of queries, so that
    decoding with gradient (fine-tuning) needs the memory of one chunk plus the outputs.
    """
    feats = giif.encode(lr, normal if giif.use_normal else None)
    H, W = int(size[0]), int(size[1])
    B = lr.shape[0]
    coord = make_coord((H, W), device=lr.device, dtype=lr.dtype).unsqueeze(0).expand(B, H * W, 2)
    cell = coord.new_tensor([2.0 / H, 2.0 / W]).expand(B, H * W, 2)
    return _query_chunks(giif, feats, coord, cell, chunk, checkpoint).transpose(1, 2).reshape(B, 3, H, W)


def giif_decode_masked(
    giif,
    lr: torch.Tensor,
    normal: torch.Tensor,
    mask: torch.Tensor,
    chunk: int,
    checkpoint: bool = False,
    feats=None,
) -> torch.Tensor:
    """GIIF output ``(B, 3, H, W)`` queried only at the pixels where ``mask (B, 1, H, W) > 0``, 0 elsewhere.

    Equals ``giif_decode(giif, lr, normal, mask.shape[-2:], chunk, checkpoint) * mask`` for a {0, 1} mask
    (each query is independent; the values of the queried pixels differ at most by float rounding of the
    MLP's row blocks) at the cost of the masked pixels only. Views are padded to the largest mask of the
    batch; the padded queries are decoded and dropped. ``feats``: ``giif.encode(lr, normal)`` when already at
    hand.
    """
    B, _, H, W = mask.shape
    if feats is None:
        feats = giif.encode(lr, normal if giif.use_normal else None)
    inside = mask.reshape(B, H * W) > 0
    counts = inside.sum(1)
    width = max(1, int(counts.max()))  # one host sync per step
    order = torch.argsort((~inside).to(torch.uint8), dim=1, stable=True)[
        :, :width
    ]  # (B, Q) masked pixels first
    valid = torch.arange(width, device=mask.device)[None] < counts[:, None]  # (B, Q)
    coord = make_coord((H, W), device=lr.device, dtype=lr.dtype)[order]  # (B, Q, 2)
    cell = coord.new_tensor([2.0 / H, 2.0 / W]).expand(B, width, 2)
    pred = _query_chunks(giif, feats, coord, cell, chunk, checkpoint)  # (B, Q, 3)
    flat = (order + torch.arange(B, device=mask.device)[:, None] * (H * W))[valid]
    out = pred.new_zeros(B * H * W, pred.shape[-1]).index_copy(0, flat, pred[valid])
    return out.view(B, H, W, -1).permute(0, 3, 1, 2).contiguous()


def finetuned_parameter_names(giif, spec: str) -> list[str]:
    """Names of GIIF's parameters selected by ``finetune.params`` (``imnet``, ``all``, ``a+b``)."""
    if spec == "all":
        parts = [p for p in GIIF_PARTS if getattr(giif, p, None) is not None]
    else:
        parts = [p.strip() for p in spec.split("+") if p.strip()]
        bad = [p for p in parts if p not in GIIF_PARTS or getattr(giif, p, None) is None]
        if bad or not parts:
            present = [p for p in GIIF_PARTS if getattr(giif, p, None) is not None]
            raise ConfigError(
                f"finetune.params = {spec!r}: unknown GIIF part(s) {bad or [spec]}; "
                f"use 'all' or parts of {present} joined by '+'"
            )
    return [name for name, _ in giif.named_parameters() if name.split(".")[0] in parts]
