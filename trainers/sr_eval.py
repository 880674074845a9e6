"""Super-resolution evaluation shared by main_giif.py, main_disc.py, main.py and the benchmarks.

One protocol, one place:

* the ground truth is the MANO-masked HR crop (black background), as in the reference protocol;
* the LR input is ``degrade(gt, scale=s, mode)`` for every scale ``s`` of the table (non-integer
  scales such as 12.8 give ``round(H / s)`` LR pixels); the ``camera`` degradation draws its random
  parameters and noise from a generator seeded by the image's identity and the scale
  (``eval_lr``), so every evaluation of a model sees the same LR images;
* the prediction is decoded at the HR size and clamped to [0, 1]; **bicubic** upsampling of the same
  LR image is evaluated in the same loop, so both rows of the table see identical inputs;
* every metric is reported twice: ``masked`` (PSNR/SSIM over the MANO mask pixels; the perceptual
  distance between ``pred * mask`` and the masked GT) and ``full`` (the whole image).

The perceptual column carries the name of the network that produced it (``LPIPS`` or ``ST-LPIPS``,
see ``utils.metrics.perceptual``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from datasets.lr_camera import LRCamera, identity_seed, seeded_generators
from datasets.preprocess import degrade
from utils.errors import InputError
from utils.image_io import make_grid, write_image
from utils.metrics import image as metrics

DEFAULT_SCALES = (4.0, 8.0, 12.8, 16.0)


def bicubic_upsample(lr: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bicubic upsampling of ``lr (B,3,h,w)`` to ``size = (H, W)``, clamped to [0, 1]."""
    return F.interpolate(lr, size=tuple(size), mode="bicubic", align_corners=False).clamp(0.0, 1.0)


def normal_to_rgb(normal_map: torch.Tensor) -> torch.Tensor:
    """Visualise unit normals ``(B,3,H,W)`` in [-1, 1] as colours ``0.5 + 0.5 n`` (black background)."""
    valid = (normal_map.abs().sum(1, keepdim=True) > 0).to(normal_map.dtype)
    return (0.5 + 0.5 * normal_map) * valid


def _scale_key(scale: float) -> str:
    return f"x{scale:g}"


IDENTITY_KEYS = ("capture", "sequence", "frame_id", "camera")  # what names an image of a GiifDataset batch


def eval_lr(
    hr: torch.Tensor, scale: float, degradation: str, batch: dict, camera: LRCamera | None = None
) -> torch.Tensor:
    """The evaluation LR input of ``hr (B, 3, H, W)`` at ``scale``: ``degrade(hr, scale=scale, mode=degradation)``,
    with, for ``camera``, one generator per image seeded from ``batch``'s identity entries (``IDENTITY_KEYS``,
    lists of length B) and the scale.

    Raises:
        InputError: ``camera`` with a batch that does not name its images.
    """
    generators = None
    if degradation == "camera":
        missing = [k for k in IDENTITY_KEYS if k not in batch]
        if missing:
            raise InputError(
                f"the camera degradation seeds each evaluation image from its identity, but the batch has no "
                f"{missing} (a GiifDataset batch has them)"
            )
        ids = zip(*(batch[k] for k in IDENTITY_KEYS), strict=True)
        generators = seeded_generators([identity_seed(*i, _scale_key(scale)) for i in ids])
    return degrade(
        hr, scale=float(scale), mode=degradation, camera=camera or LRCamera(), generators=generators
    )


@torch.no_grad()
def evaluate_sr(
    predict: Callable[[torch.Tensor, torch.Tensor, tuple[int, int]], torch.Tensor],
    batches: Iterable[dict],
    scales: Sequence[float] = DEFAULT_SCALES,
    degradation: str = "nearest",
    camera: LRCamera | None = None,
    perceptual: metrics.PerceptualMetric | None = None,
    device: torch.device | str = "cpu",
    vis_dir: str | Path | None = None,
    max_vis: int = 8,
    method_name: str = "giif",
) -> dict:
    """Evaluate an SR predictor and bicubic upsampling at several scales.

    Args:
        predict: ``predict(lr (B,3,h,w), normal_map (B,3,Hn,Wn), out_size (H, W)) -> (B,3,H,W)`` in [0, 1].
        batches: dicts with ``hr (B,3,H,W)`` (masked GT), ``mask (B,1,H,W)``, ``normal_map``.
        scales: HR/LR factors; any positive float.
        degradation: ``nearest`` (reference), ``area``, ``bicubic`` or ``camera`` (see
            ``datasets.preprocess.degrade``; ``camera`` is seeded per image, see ``eval_lr``).
        camera: the ranges of the ``camera`` degradation (None: ``LRCamera()``'s defaults).
        perceptual: the perceptual metric (None skips that column).
        device: where the predictor runs.
        vis_dir: when given, writes grids ``{scale}_{index}.png``: LR (nearest-upsampled), bicubic,
            prediction, GT, normal map.
        max_vis: number of grids per scale.
        method_name: the row name of the predictor in the returned table.

    Returns:
        ``{"scales": [...], "perceptual": name, "num_images": N, "results": {method: {scale_key:
        {"psnr_masked", "psnr_full", "ssim_masked", "ssim_full", "<perc>_masked", "<perc>_full"}}}}``
        with ``method`` in ``(method_name, "bicubic")``; every value is the mean over images.
    """
    perc_key = perceptual.name.lower().replace("-", "") if perceptual is not None else None
    sums: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
    num_images = 0
    vis_written: dict = defaultdict(int)
    for batch in batches:
        hr = batch["hr"].to(device)
        mask = batch["mask"].to(device)
        normal_map = batch["normal_map"].to(device)
        size = tuple(hr.shape[-2:])
        num_images += hr.shape[0]
        reference = perceptual.reference(hr) if perceptual is not None else None
        for scale in scales:
            lr = eval_lr(hr, scale, degradation, batch, camera)
            outputs = {
                method_name: predict(lr, normal_map, size).clamp(0, 1),
                "bicubic": bicubic_upsample(lr, size),
            }
            for method, pred in outputs.items():  # hr's perceptual features: once per batch (reference)
                row = sums[method][_scale_key(scale)]
                for region, m in (("masked", mask), ("full", None)):
                    row[f"psnr_{region}"] += float(metrics.psnr(pred, hr, mask=m, reduction="none").sum())
                    row[f"ssim_{region}"] += float(metrics.ssim(pred, hr, mask=m, reduction="none").sum())
                    if perceptual is not None:
                        shown = pred * mask if region == "masked" else pred
                        row[f"{perc_key}_{region}"] += float(
                            perceptual(shown, reference, reduction="none").sum()
                        )
            if vis_dir is not None and vis_written[scale] < max_vis:
                vis_dir = Path(vis_dir)
                for b in range(hr.shape[0]):
                    if vis_written[scale] >= max_vis:
                        break
                    lr_up = F.interpolate(lr[b : b + 1], size=size, mode="nearest")[0]
                    grid = make_grid(
                        [
                            lr_up,
                            outputs["bicubic"][b],
                            outputs[method_name][b],
                            hr[b],
                            normal_to_rgb(normal_map[b : b + 1])[0],
                        ],
                        labels=[f"LR {_scale_key(scale)}", "bicubic", method_name, "GT", "normal map"],
                    )
                    write_image(vis_dir / f"{_scale_key(scale)}_{vis_written[scale]:03d}.png", grid)
                    vis_written[scale] += 1
    if num_images == 0:
        raise InputError("evaluate_sr got no images (is the validation set empty?)")
    results = {
        method: {scale: {k: v / num_images for k, v in row.items()} for scale, row in by_scale.items()}
        for method, by_scale in sums.items()
    }
    return {
        "scales": [float(s) for s in scales],
        "perceptual": perceptual.label if perceptual is not None else None,
        "num_images": num_images,
        "degradation": degradation,
        "results": results,
    }


def format_sr_table(report: dict) -> str:
    """A plain-text table (one row per method and scale) of an ``evaluate_sr`` report."""
    perc = report.get("perceptual")
    first = next(iter(report["results"].values()))
    columns = list(next(iter(first.values())).keys())
    header = ["method", "scale"] + columns
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for method, by_scale in report["results"].items():
        for scale, row in by_scale.items():
            lines.append(
                " | ".join(
                    [method, scale]
                    + [f"{row[c]:.4f}" if "psnr" not in c else f"{row[c]:.2f}" for c in columns]
                )
            )
    note = f"{report['num_images']} images, degradation {report['degradation']}"
    if perc:
        note += f", perceptual metric: {perc}"
    return "\n".join(lines) + f"\n({note})"
