"""Evaluation of the SRHand stage on held-out frames (and cameras): rendered and SR image metrics, P2P
against ground-truth meshes, inconsistency, panels and the text report written to ``metrics.json``.

:func:`evaluate` takes a :class:`FittedAvatar` (the avatar with the GIIF and records of its fit, from the
training just done or loaded by :func:`load_fitted_avatar`) and an :class:`EvalSelection`
(:func:`select_evaluation`); it changes nothing but the files it writes.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from datasets.capture import check_hand_model_for_data, describe_hand_model
from trainers import losses as L
from trainers.sr_eval import bicubic_upsample, normal_to_rgb
from trainers.srhand.bundle import build_avatar, check_hand_model, hand_model_for, load_giif
from trainers.srhand.context import RunContext
from trainers.srhand.refine import MANORefinement, fit_pose, keypoint_errors, true_keypoints
from trainers.srhand.sequence import (
    SRHandInputError,
    camera_centres,
    mano_noise_report,
    read_capture,
    sample_frame,
    synthetic_meta_entry,
)
from trainers.srhand.state import FitProgress, FitRecord, read_model_checkpoint
from trainers.srhand.targets import sr_batch
from trainers.srhand.visuals import surface_unconfidence
from utils.geometry.camera import Cameras
from utils.metrics import image as metrics

REFERENCE_WINDOW = 8  # frames per inconsistency window in the reference's evaluation


def format_report(report: dict) -> str:
    """A plain-text table of an :func:`evaluate` report."""
    perc, pk = report.get("perceptual"), report.get("perceptual_key")
    cfg = report["config"]
    lines = [
        f"sr_source={cfg['sr_source']} use_enh={cfg['use_enh']} x{cfg['scale']:g} "
        f"({cfg['lr_size']} -> {cfg['hr_size']}), {report['num_samples']} images "
        f"({len(report['eval_frames'])} frames x {len(report['eval_cameras'])} cameras)"
    ]
    header = ["rows", "group", "PSNR", "SSIM"] + ([perc] if perc else []) + ["PSNR full", "SSIM full"]
    lines += [" | ".join(header), " | ".join("---" for _ in header)]
    for name in ("render", "sr", "sr_bicubic"):
        block = report.get(name)
        if not block:
            continue
        for group, row in block.items():
            cells = [name, group, f"{row['psnr_masked']:.2f}", f"{row['ssim_masked']:.4f}"]
            if perc:
                cells.append(f"{row[f'{pk}_masked']:.4f}")
            cells += [f"{row['psnr_full']:.2f}", f"{row['ssim_full']:.4f}"]
            lines.append(" | ".join(cells))
    if report.get("p2p_mm") is not None:
        lines.append(
            f"P2P {report['p2p_mm']:.3f} mm (estimator SE {report.get('p2p_se_mm') or 0:.4f} mm, "
            f"{report.get('p2p_frames', '?')} frames; MANO input: {report['p2p_mm_mano']:.3f} mm; "
            f"ground truth: {report['gt_mesh_source']})"
        )
    if report.get("p2p_pseudo_gt_mm") is not None:
        lines.append(
            f"P2P to the pseudo ground truth {report['p2p_pseudo_gt_mm']:.3f} mm (estimator SE "
            f"{report.get('p2p_pseudo_gt_se_mm') or 0:.4f} mm; MANO input: {report['p2p_pseudo_gt_mm_mano']:.3f} mm; "
            f"meshes: {report['pseudo_gt_mesh_source']})"
        )
    inc = report["inconsistency"]
    lines.append(
        f"inconsistency: SR {inc['sr']:.6f}, GT HR {inc['gt_hr']:.6f}, bicubic {inc['bicubic']:.6f}"
        + (f" (window {inc['window']})" if inc["window"] else "")
    )
    if report.get("sh_substitutes"):
        lines.append(
            "SH of the nearest fitted camera used for: "
            + ", ".join(f"{k} <- {v}" for k, v in report["sh_substitutes"].items())
        )
    paper = report.get("paper_protocol")
    if paper:
        cells = [f"render PSNR {paper['render']['psnr']:.2f}", f"SSIM {paper['render']['ssim']:.4f}"]
        if perc:
            cells.append(f"{perc} {paper['render'][pk]:.4f}")
        if paper.get("sr"):
            cells += [f"SR PSNR {paper['sr']['psnr']:.2f}", f"SR SSIM {paper['sr']['ssim']:.4f}"]
        cells.append(
            f"inconsistency (window {paper['inconsistency_window']}) {paper['inconsistency_windowed']:.6f}"
        )
        if paper.get("p2p_truth_to_recon_mm") is not None:
            cells.append(
                f"P2P truth->recon {paper['p2p_truth_to_recon_mm']:.3f} mm "
                f"(MANO input {paper['p2p_mano_truth_to_recon_mm']:.3f} mm)"
            )
        lines.append(
            "paper protocol (full image, GT masked by the predicted silhouette): " + ", ".join(cells)
        )
    if perc:
        lines.append(
            f"(perceptual metric: {perc}; masked = inside the GT MANO silhouette, full = whole image)"
        )
    return "\n".join(lines)


def paper_protocol(report: dict, p2p: dict, p2p_mano: dict, incon_windowed: dict, window: int) -> dict:
    """The reference code's evaluation protocol, next to ours (``docs/srhand_model.md``, "Evaluation").

    ``render``: full-image metrics of the render against the raw HR crop, both masked by the predicted
    silhouette (``predmask`` rows); ``sr``: full-image metrics of the SR images against the MANO-masked
    GT (``full`` rows); ``inconsistency_windowed``: per-vertex SR colour variance over windows of
    ``window`` consecutive frames of one view, mean over views; P2P from the truth to the
    reconstruction only (one-sided), and the reverse direction for completeness.
    """

    def mean_dir(values: dict, key: str):
        return frame_mean(values, key)[0]

    def se_dir(values: dict, key: str):
        return frame_mean(values, key)[1]

    pk = report.get("perceptual_key")
    render = report["render"]["all"]
    out = {"render": {"psnr": render["psnr_predmask"], "ssim": render["ssim_predmask"]}}
    if pk:
        out["render"][pk] = render[f"{pk}_predmask"]
    if report.get("sr"):
        sr = report["sr"]["all"]
        out["sr"] = {"psnr": sr["psnr_full"], "ssim": sr["ssim_full"]}
        if pk:
            out["sr"][pk] = sr[f"{pk}_full"]
    out.update(
        {
            "inconsistency_windowed": incon_windowed["sr"],
            "inconsistency_windowed_all": dict(incon_windowed),
            "inconsistency_window": window,
            "p2p_truth_to_recon_mm": mean_dir(p2p, "gt_to_pred"),
            "p2p_recon_to_truth_mm": mean_dir(p2p, "pred_to_gt"),
            "p2p_mano_truth_to_recon_mm": mean_dir(p2p_mano, "gt_to_pred"),
            "p2p_mano_recon_to_truth_mm": mean_dir(p2p_mano, "pred_to_gt"),
            "p2p_truth_to_recon_se_mm": se_dir(p2p, "gt_to_pred"),
            "p2p_mano_truth_to_recon_se_mm": se_dir(p2p_mano, "gt_to_pred"),
        }
    )
    return out


def inconsistency_jackknife_se(
    colours: list[torch.Tensor],
    visibility: list[torch.Tensor],
    batch_frames: list[int],
    window: int | None,
) -> float | None:
    """Jackknife standard error over the evaluated frames of the pooled inconsistency: how much the statistic
    depends on which frames were evaluated (None with fewer than 2 frames).

    Args:
        colours, visibility: the per-batch colours ``(B, V, 3)`` and visibility ``(B, V)`` that
            ``utils.metrics.geometry.inconsistency`` pools. batch_frames: each batch's frame.
        window: as for the pooled statistic.
    """
    from utils.metrics.geometry import inconsistency

    frames = sorted(set(batch_frames))
    if len(frames) < 2:
        return None
    values = []
    for left_out in frames:
        keep = [i for i, f in enumerate(batch_frames) if f != left_out]
        vis = torch.cat([visibility[i] for i in keep])
        values.append(
            inconsistency(
                torch.cat([colours[i] for i in keep]), vis, window=window and min(window, vis.shape[0])
            )
        )
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    return float(np.sqrt((n - 1) / n * np.sum((values - values.mean()) ** 2)))


def frame_mean(values: dict, key: str) -> tuple[float | None, float | None]:
    """The mean over frames of ``values[frame][key]`` and the estimator's standard error of that mean
    (from each frame's ``<key>_se``, independent samples per frame); ``(None, None)`` without frames."""
    if not values:
        return None, None
    rows = list(values.values())
    mean = float(np.mean([r[key] for r in rows]))
    se = float(np.sqrt(sum(r[f"{key}_se"] ** 2 for r in rows)) / len(rows))
    return mean, se


def p2p_report(p2p: dict, p2p_mano: dict, samples: int, estimator: str) -> dict:
    """The P2P entries of ``metrics.json``: the means over frames (reconstruction and input MANO mesh), the
    estimator's standard errors (``_se_mm``: the sampling noise of the metric itself, from the stratified
    samples of :func:`utils.metrics.geometry.p2p_parts_mm`), the standard error over frames
    (``p2p_frame_se_mm``: how much the frames evaluated differ), the number of frames and per-frame values."""
    mean, se = frame_mean(p2p, "symmetric")
    mano, mano_se = frame_mean(p2p_mano, "symmetric")
    per_frame = [v["symmetric"] for v in p2p.values()]
    return {
        "p2p_mm": mean,
        "p2p_se_mm": se,
        "p2p_mm_mano": mano,
        "p2p_se_mm_mano": mano_se,
        "p2p_frames": len(per_frame),
        "p2p_frame_se_mm": float(np.std(per_frame, ddof=1) / np.sqrt(len(per_frame)))
        if len(per_frame) > 1
        else None,
        "p2p_mm_per_frame": {str(k): v["symmetric"] for k, v in p2p.items()},
        "p2p_se_mm_per_frame": {str(k): v["symmetric_se"] for k, v in p2p.items()},
        "p2p_estimator": {"method": ESTIMATORS[estimator], "samples_per_surface": samples},
    }


ESTIMATORS = {
    "stratified": "stratified: 2 points in each of samples/2 equal-area, Morton-ordered strata per surface",
    "iid": "i.i.d.: samples points by area per surface (the estimate before issue 26)",
}


@dataclass(frozen=True, slots=True)
class FittedAvatar:
    """A fitted avatar and what its evaluation needs with it.

    Attributes:
        avatar: the avatar (put in eval mode by :func:`evaluate`). avatar_args: its constructor record.
        giif: the SR network whose images are evaluated (None for bicubic / hr supervision).
        sr_source: how the SR images are made (``--implicit_path`` turns bicubic / hr into giif_finetuned).
        record: what it was fitted to. progress: how far its fit went.
        mano: the fitting frames' refined MANO parameters (``refine.enabled``), else None; the evaluated
            frames use its shape offset.
    """

    avatar: torch.nn.Module
    avatar_args: dict
    giif: torch.nn.Module | None
    sr_source: str
    record: FitRecord
    progress: FitProgress
    mano: MANORefinement | None = None

    def shape_offset(self) -> torch.Tensor | None:
        """The refined shape's offset from the avatar's mean shape ``(S,)``, detached, or None."""
        return None if self.mano is None else self.mano.shape_offset().detach()


@dataclass(frozen=True, slots=True)
class EvalSelection:
    """The frames and cameras evaluated.

    Attributes:
        frames: frame ids. cameras: camera names.
        substitutes: camera not fitted -> the fitted camera whose SH lighting it uses (the nearest one).
        seq: the ``CaptureSequence`` of those frames and cameras (MANO noise applied).
        noise_mpjpe: frame id -> MPJPE (mm) of the perturbed MANO parameters (empty without noise).
    """

    frames: list
    cameras: list
    substitutes: dict
    seq: object
    noise_mpjpe: dict


def load_fitted_avatar(
    ctx: RunContext, model_path: str | Path, implicit_path: str | None = None
) -> tuple[FittedAvatar, Path]:
    """The avatar of ``model_path/model.pth`` and its fine-tuned GIIF (``implicit_model.pth`` beside it, or
    ``implicit_path``) for ``--eval``, and the folder it came from."""
    ckpt, path = read_model_checkpoint(model_path)
    record = FitRecord.from_checkpoint(ckpt)
    noise = ctx.settings.data.mano_noise.record()
    if record.mano_noise != noise:
        ctx.log.warning(
            "%s was fitted with data.mano_noise = %s, evaluated with %s (set data.mano_noise to "
            "evaluate on the parameters it was fitted with)",
            path,
            record.mano_noise,
            noise,
        )
    if record.hand_side != ctx.settings.data.hand:
        raise SRHandInputError(f"{path} is a {record.hand_side} hand, data.hand = {ctx.settings.data.hand!r}")
    hand_model = hand_model_for(ctx, record.hand_side)
    ctx.log.info("hand model: %s", describe_hand_model(hand_model))
    check_hand_model_for_data(
        hand_model.source_path, ctx.settings.data.data_path, ctx.settings.data.allow_procedural_hand
    )
    avatar = build_avatar(ckpt["model"], hand_model).to(ctx.device).eval()
    avatar_args = ckpt["model"]["args"]
    check_hand_model(avatar, hand_model, torch.tensor(avatar_args["mean_shape"]), str(path))
    sr_source = record.sr_source or ctx.settings.sr_source
    giif = None
    if implicit_path or sr_source in ("giif", "giif_finetuned"):
        gpath = implicit_path or str(path.parent / "implicit_model.pth")
        giif = load_giif(ctx, gpath, "--implicit_path" if implicit_path else "implicit_model.pth")
        if implicit_path and sr_source not in ("giif", "giif_finetuned"):
            sr_source = "giif_finetuned"
    ctx.log.info(
        "evaluating %s (phase %s, epoch %d, sr_source %s)", path, ckpt.get("phase"), ckpt["epoch"], sr_source
    )
    mano = None
    if ckpt.get("mano_refinement") is not None:
        mano = MANORefinement.from_entry(ckpt["mano_refinement"]).to(ctx.device)
    fitted = FittedAvatar(
        avatar=avatar,
        avatar_args=avatar_args,
        giif=giif,
        sr_source=sr_source,
        record=record,
        progress=FitProgress.from_checkpoint(ckpt),
        mano=mano,
    )
    return fitted, path.parent


def select_evaluation(ctx: RunContext, record: FitRecord, known_mpjpe: dict | None = None) -> EvalSelection:
    """The frames and cameras to evaluate (``eval.*``) for a fit of ``record``, read from the capture.

    Frames: ``eval.frames``, else the held-out frames of the synthetic metadata or every frame, the first
    ``eval.num_frames``, without the fitting frames (``eval.exclude_fit_frames``). Cameras: ``eval.cameras``
    or the fitted ones (plus the held-out ones with ``eval.include_heldout_cameras``). ``known_mpjpe``: the
    MANO-noise MPJPE of frames read before (the fit's), completed by this read.
    """
    e, d = ctx.settings.eval, ctx.settings.data
    meta = synthetic_meta_entry(d.data_path, d.split, d.capture, d.sequence)
    cameras = [str(c) for c in e.cameras] or list(record.cameras)
    if e.include_heldout_cameras and meta:
        cameras += [c for c in meta.get("heldout_cameras", []) if c not in cameras]
    full, mpjpe = read_capture(ctx, cameras, num_frames=None)
    frames = [int(f) for f in e.frames]
    if not frames:
        candidates = (
            list(meta["heldout_frame_ids"])
            if meta and meta.get("heldout_frame_ids")
            else list(full.frame_ids)
        )
        if e.num_frames > 0:
            candidates = candidates[: e.num_frames]
        exclude = set(record.frame_ids) if e.exclude_fit_frames else set()
        frames = [f for f in candidates if f not in exclude]
    if not frames:
        raise SRHandInputError(
            "no frame to evaluate: every candidate frame was used for fitting (set eval.frames)"
        )
    seq = full.select(frames=[full.frame_index(f) for f in frames])
    centres = camera_centres(full.cameras.R, full.cameras.t)
    substitutes = {}
    for v, name in enumerate(cameras):
        if name not in record.cameras:
            nearest = int((record.camera_centres - centres[v]).norm(dim=-1).argmin())
            substitutes[name] = record.cameras[nearest]
    return EvalSelection(
        frames=frames,
        cameras=cameras,
        substitutes=substitutes,
        seq=seq,
        noise_mpjpe={**(known_mpjpe or {}), **mpjpe},
    )


def mesh_from_dir(folder: str, frame_id: int, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``<folder>/<frame_id>.obj``: ``verts (N, 3)`` float32 (metres, world) and ``faces (M, 3)``.

    Raises:
        FileNotFoundError: naming the config ``key`` that gave ``folder``, the missing file and the fix.
    """
    from utils.geometry.mesh_io import load_obj

    path = Path(folder) / f"{frame_id}.obj"
    if not path.is_file():
        raise FileNotFoundError(
            f"{key} = {folder!r}: no mesh for frame {frame_id} ({path}); "
            "export one with an sr_source = hr run and eval.export_meshes = true (and eval.frames covering it)"
        )
    verts, faces = load_obj(path)[:2]
    return torch.as_tensor(verts, dtype=torch.float32), torch.as_tensor(faces, dtype=torch.long)


def gt_mesh(ctx: RunContext, seq, frame_index: int, frame_id: int):
    """The ground-truth mesh of a frame: ``eval.gt_mesh_dir/<frame_id>.obj`` or the capture's own.

    Returns ``(verts (N, 3), faces (M, 3), source)`` or ``(None, None, None)`` when there is none.
    """
    gt_dir = ctx.settings.eval.gt_mesh_dir
    if gt_dir:
        return (*mesh_from_dir(gt_dir, frame_id, "eval.gt_mesh_dir"), str(gt_dir))
    if seq.gt_mesh_path:
        verts, faces = seq.gt_mesh(frame_index)
        return verts, faces, seq.gt_mesh_path
    return None, None, None


def p2p_against(
    target_v: torch.Tensor, target_f: torch.Tensor, meshes: list, num_samples: int, estimator: str
):
    """P2P parts (:func:`utils.metrics.geometry.p2p_parts_mm`, mm) of each ``(verts, faces)`` of ``meshes`` to
    one target mesh. With the stratified estimator all meshes share one set of target samples and one distance
    index, so their differences (a reconstruction against its input MANO mesh) are free of the target's
    sampling noise."""
    from utils.metrics.geometry import SurfaceDistanceIndex, p2p_parts_mm, stratified_surface_samples

    shared = {"num_samples": num_samples, "estimator": estimator}
    if estimator == "stratified":
        strata = max(1, num_samples // 2)
        shared["gt_index"] = SurfaceDistanceIndex(target_v, target_f)
        shared["gt_samples"] = stratified_surface_samples(
            target_v, target_f, strata, torch.Generator().manual_seed(1)
        )
    return [p2p_parts_mm(v, f, target_v, target_f, **shared) for v, f in meshes]


def pseudo_gt_report(p2p: dict, p2p_mano: dict, folder: str) -> dict:
    """``metrics.json`` keys of the paper's P2P protocol: the symmetric distance to the pseudo-ground-truth
    meshes of ``eval.pseudo_gt_mesh_dir`` (an ``sr_source = hr`` run's), mean over frames with the estimator's
    standard error, that of the input MANO mesh, and per frame; ``{}`` when it was not measured."""
    if not p2p:
        return {}
    mean, se = frame_mean(p2p, "symmetric")
    mano, mano_se = frame_mean(p2p_mano, "symmetric")
    return {
        "p2p_pseudo_gt_mm": mean,
        "p2p_pseudo_gt_se_mm": se,
        "p2p_pseudo_gt_mm_mano": mano,
        "p2p_pseudo_gt_se_mm_mano": mano_se,
        "p2p_pseudo_gt_frames": len(p2p),
        "p2p_pseudo_gt_mm_per_frame": {str(k): v["symmetric"] for k, v in p2p.items()},
        "pseudo_gt_mesh_source": str(folder),
    }


@torch.no_grad()
def evaluate(
    ctx: RunContext,
    fitted: FittedAvatar,
    selection: EvalSelection,
    save_vis: bool = False,
    timing: dict | None = None,
    poses: dict | None = None,
    sr_images: Mapping[int, torch.Tensor] | None = None,
    sr_metrics: bool = True,
) -> dict:
    """Metrics of ``fitted`` on ``selection``: see the module docstring and docs/srhand_model.md.

    ``timing``: the training's timing summary, reported with the metrics. ``poses``: frame id -> ``(pose (48,),
    trans (3,))`` replacing the annotation (the test-time fit, :func:`test_time_fit`); the "input MANO" P2P is
    then that of the MANO mesh of those parameters, and no mesh is exported. ``sr_images``: the SR images of
    :func:`decode_eval_sr` (decoded here, batch by batch, when None). ``sr_metrics``: False leaves out the
    image metrics of the SR and bicubic images (``sr``, ``sr_bicubic``: None), which do not depend on the pose;
    their colours still enter the inconsistency. Writes meshes
    (``eval.export_meshes`` or ``save_vis``) and, with ``save_vis``, panels and a GIF; changes nothing else (the
    networks are put in eval mode). Returns the report (:func:`format_report`).
    """
    from utils.geometry.mesh_io import save_obj
    from utils.image_io import make_grid, save_gif, write_image
    from utils.metrics.geometry import (
        inconsistency,
        sample_at_pixels,
        windowed_inconsistency,
    )

    start, cpu_start = time.time(), time.process_time()
    e, dconf = ctx.settings.eval, ctx.settings.data
    frames, cameras, substitutes, seq = (
        selection.frames,
        selection.cameras,
        selection.substitutes,
        selection.seq,
    )
    fit_cams = fitted.record.cameras
    sh_index = [fit_cams.index(substitutes.get(c, c)) for c in cameras]
    for cam, sub in substitutes.items():
        ctx.log.info(
            "camera %s was not fitted: its SH lighting is that of the nearest fitted camera %s", cam, sub
        )
    perceptual = None
    if e.perceptual != "none":
        perceptual = metrics.PerceptualMetric(e.perceptual, net="alex", device=ctx.device)
    perc_key = perceptual.name.lower().replace("-", "") if perceptual is not None else None
    avatar = fitted.avatar.eval()
    batch = max(1, e.batch_size)
    records: list[dict] = []
    skipped: list[list] = []  # [frame id, camera] of the black views, left out of every metric
    batch_frames: list[int] = []  # the frame (index) of each batch of colours and visibility
    colours = defaultdict(list)
    visibility = []
    p2p, p2p_mano = {}, {}  # frame id -> {symmetric, pred_to_gt, gt_to_pred} in mm
    p2p_pseudo, p2p_pseudo_mano = {}, {}  # the same against eval.pseudo_gt_mesh_dir
    gt_source = None
    vis_frames = e.max_vis_frames if save_vis else 0
    gif_frames = []
    export = (e.export_meshes or save_vis) and poses is None
    giif = fitted.giif.eval() if fitted.giif is not None else None
    shape_offset = fitted.shape_offset()
    for fi, frame_id in ctx.log.progress(list(enumerate(frames)), desc="evaluate"):
        pose, trans = poses[frame_id] if poses is not None else (seq.mano_pose[fi], seq.mano_trans[fi])
        geo = avatar.forward_geometry(pose.to(ctx.device), trans.to(ctx.device), shape_offset)
        panel_rows = []
        for k in range(0, len(cameras), batch):
            views = list(range(k, min(k + batch, len(cameras))))
            s = {
                key: v.to(ctx.device) for key, v in sample_frame(seq, fi, views, dconf, with_raw=True).items()
            }
            size = tuple(s["hr"].shape[-2:])
            black = s["is_black"].cpu()
            cams = Cameras(K=s["K"], R=s["R"], t=s["t"], image_size=size, names=[cameras[v] for v in views])
            out = avatar.render(
                geo["verts_posed"], geo["albedo"], cams, [sh_index[v] for v in views], renderer=ctx.renderer
            )
            render, mask = out["image"], s["mask"]
            pred_mask = (out["mask"] > 0.5).to(mask.dtype)
            if sr_images is not None:
                sr = sr_images[frame_id][k : k + len(views)].to(ctx.device)
            else:
                sr = sr_batch(
                    giif, fitted.sr_source, s["lr"], s["normal"], mask, s["hr"], ctx.settings.decode_chunk
                )
            bicubic = bicubic_upsample(s["lr"], size) * mask
            gt = perceptual.reference(s["hr"]) if perceptual is not None else s["hr"]  # features once
            rows = _image_metrics(render, gt, mask, pred_mask, s["raw"], perceptual, perc_key)
            sr_rows = (
                _sr_metrics(sr, gt, mask, perceptual, perc_key)
                if sr_metrics and fitted.sr_source != "hr"
                else None
            )
            bic_rows = _sr_metrics(bicubic, gt, mask, perceptual, perc_key) if sr_metrics else None
            for b, v in enumerate(views):
                if black[b]:
                    skipped.append([int(frame_id), cameras[v]])
                    continue
                rec = {
                    "frame_id": frame_id,
                    "camera": cameras[v],
                    "fitted_camera": cameras[v] in fit_cams,
                    "render": rows[b],
                }
                if bic_rows is not None:
                    rec["sr_bicubic"] = bic_rows[b]
                if sr_rows is not None:
                    rec["sr"] = sr_rows[b]
                records.append(rec)
            visible = out["visible"] & ~black[:, None].to(out["visible"].device)  # black views: no colours
            visibility.append(visible.cpu())
            batch_frames.append(fi)
            for name, images in (("sr", sr), ("gt_hr", s["hr"]), ("bicubic", bicubic)):
                colours[name].append(sample_at_pixels(images, out["uv_pix"]).cpu())
            if fi < vis_frames and not bool(black.all()):
                albedo_img = ctx.renderer.interpolate(
                    geo["albedo"][None].expand(len(views), -1, -1), out["rast"], avatar.faces
                ).permute(0, 3, 1, 2)
                lr_up = F.interpolate(s["lr"], size=size, mode="nearest")
                keep = (~black).nonzero()[:, 0].to(ctx.device)
                row = {
                    "lr": lr_up,
                    "sr": sr,
                    "render": render,
                    "shading": out["shading_only"],
                    "normal": normal_to_rgb(out["normal"]),
                    "albedo": albedo_img,
                    "gt": s["hr"],
                    "uv": out["uv_pix"],
                    "visible": visible,
                    "rast": out["rast"],
                }
                panel_rows.append({key: value.index_select(0, keep) for key, value in row.items()})
            if k == 0 and save_vis:
                gif_frames.append(
                    make_grid(
                        [s["hr"][0], render[0], out["shading_only"][0]],
                        [f"GT {frame_id}", "render", "geometry"],
                    )
                )
        # geometry
        mano_verts = seq.verts_world(fi)
        if poses is not None:  # the MANO mesh of the test-time-fitted parameters
            mano_verts = mano_mesh(seq.hand_model(), pose, seq.mano_shape[fi], trans, shape_offset)
        meshes = [(geo["verts_posed"].cpu(), avatar.faces.cpu()), (mano_verts, seq.faces)]
        gt_v, gt_f, gt_source = gt_mesh(ctx, seq, fi, frame_id)
        if gt_v is not None:
            p2p[frame_id], p2p_mano[frame_id] = p2p_against(
                gt_v, gt_f, meshes, e.p2p_samples, e.p2p_estimator
            )
        if e.pseudo_gt_mesh_dir:  # the paper's protocol, beside the truth's
            pseudo_v, pseudo_f = mesh_from_dir(e.pseudo_gt_mesh_dir, frame_id, "eval.pseudo_gt_mesh_dir")
            p2p_pseudo[frame_id], p2p_pseudo_mano[frame_id] = p2p_against(
                pseudo_v, pseudo_f, meshes, e.p2p_samples, e.p2p_estimator
            )
        if export:
            save_obj(
                ctx.run_dir / "meshes" / f"{frame_id}.obj",
                geo["verts_posed"].cpu(),
                avatar.faces.cpu(),
                geo["albedo"].cpu(),
            )
        if panel_rows:
            _write_panel(ctx, avatar, panel_rows, frame_id, make_grid, write_image)
    if gif_frames:
        save_gif(ctx.run_dir / "vis" / f"{cameras[0]}.gif", gif_frames, fps=e.gif_fps)
    if skipped:
        ctx.log.warning(
            "%d black view(s) left out of the evaluation (frame, camera): %s",
            len(skipped),
            ", ".join(f"({f}, {c})" for f, c in skipped),
        )
    if not records:
        raise SRHandInputError(
            f"every evaluated view is black ({len(skipped)} views of frames {frames}): choose other frames "
            "(eval.frames, eval.num_frames) or cameras (eval.cameras)"
        )

    window = e.inconsistency_window or None
    vis_all = torch.cat(visibility)
    if window is not None:
        window = min(window, vis_all.shape[0])
    incon = {name: inconsistency(torch.cat(c), vis_all, window=window) for name, c in colours.items()}
    # The reference's protocol: windows of REFERENCE_WINDOW consecutive frames of one view.
    incon_windowed = {
        name: windowed_inconsistency(torch.cat(c), vis_all, len(cameras), REFERENCE_WINDOW)
        for name, c in colours.items()
    }
    incon_se = {
        name: inconsistency_jackknife_se(c, visibility, batch_frames, window) for name, c in colours.items()
    }
    if fitted.sr_source == "hr":
        incon["sr"] = incon["gt_hr"]
        incon_windowed["sr"] = incon_windowed["gt_hr"]
        incon_se["sr"] = incon_se["gt_hr"]
    report = _report(
        ctx,
        fitted,
        selection,
        records,
        p2p,
        p2p_mano,
        gt_source,
        incon,
        incon_se,
        window,
        perceptual,
        time.time() - start,
        timing,
    )
    report.update(pseudo_gt_report(p2p_pseudo, p2p_pseudo_mano, e.pseudo_gt_mesh_dir))
    report["paper_protocol"] = paper_protocol(
        report, p2p, p2p_mano, incon_windowed, min(REFERENCE_WINDOW, len(frames))
    )
    report["data"] = {
        "fit": fitted.record.data_report,
        "eval": {**seq.data_report(), "views_left_out": skipped},
    }
    report["eval_cpu_seconds"] = time.process_time() - cpu_start
    return report


def _image_metrics(render, hr, mask, pred_mask, raw, perceptual, perc_key) -> list[dict]:
    """Per-image metrics of the render: ``masked`` (both images masked by the GT MANO silhouette, statistics
    inside it), ``full`` (whole image, GT masked by the MANO silhouette) and ``predmask`` (the reference
    protocol: both images masked by the predicted silhouette, whole image). ``hr``: the GT or its
    :meth:`~utils.metrics.image.PerceptualMetric.reference`."""
    pairs = {
        "masked": (render * mask, hr, mask),
        "full": (render, hr, None),
        "predmask": (render * pred_mask, raw * pred_mask, None),
    }
    return _metrics_rows(pairs, perceptual, perc_key)


def _sr_metrics(sr, hr, mask, perceptual, perc_key) -> list[dict]:
    """``masked`` and ``full`` metrics of SR (or bicubic) images, masked already: their perceptual distances are
    one computation (the same two images)."""
    return _metrics_rows({"masked": (sr, hr, mask), "full": (sr, hr, None)}, perceptual, perc_key)


def _metrics_rows(pairs: dict, perceptual, perc_key) -> list[dict]:
    """Per-image PSNR, SSIM and perceptual distance of each ``region: (pred, gt, mask)`` of ``pairs``; ``gt`` may
    be a perceptual reference of the ground truth (its features computed once for several predictions), and a
    pair that repeats an earlier one's images reuses its perceptual distance."""
    rows, seen = None, {}
    for region, (pred, gt, m) in pairs.items():
        image = gt.image if isinstance(gt, metrics.PerceptualReference) else gt
        values = {
            f"psnr_{region}": metrics.psnr(pred, image, mask=m, reduction="none"),
            f"ssim_{region}": metrics.ssim(pred, image, mask=m, reduction="none"),
        }
        if perceptual is not None:
            if (id(pred), id(gt)) not in seen:
                seen[(id(pred), id(gt))] = perceptual(pred, gt, reduction="none").cpu().numpy()
            values[f"{perc_key}_{region}"] = seen[(id(pred), id(gt))]
        if rows is None:
            rows = [{} for _ in range(pred.shape[0])]
        for key, vals in values.items():
            for b, value in enumerate(vals):
                rows[b][key] = float(value)
    return rows


def _write_panel(ctx: RunContext, avatar, rows: list[dict], frame_id: int, make_grid, write_image) -> None:
    """``vis/frame_<id>.png``: LR, SR, render, geometry, normals, albedo, GT and unconfidence per view."""
    scale = ctx.settings.eval.unconf_vis_scale
    cat = {k: torch.cat([r[k] for r in rows]) for k in rows[0]}
    _, var, _ = L.vertex_color_stats(cat["sr"], cat["uv"], cat["visible"])
    unconf = surface_unconfidence(ctx.renderer, var, cat["rast"], avatar.faces, scale)
    tiles, labels = [], []
    names = ["LR", "SR", "render", "geometry", "normals", "albedo", "GT", "unconfidence"]
    for b in range(min(ctx.settings.eval.max_vis_views, cat["sr"].shape[0])):
        tiles += [
            cat["lr"][b],
            cat["sr"][b],
            cat["render"][b],
            cat["shading"][b],
            cat["normal"][b],
            cat["albedo"][b],
            cat["gt"][b],
            unconf[b],
        ]
        labels += names
    write_image(ctx.run_dir / "vis" / f"frame_{frame_id}.png", make_grid(tiles, labels, ncols=len(names)))


def _report(
    ctx: RunContext,
    fitted: FittedAvatar,
    selection: EvalSelection,
    records,
    p2p,
    p2p_mano,
    gt_source,
    incon,
    incon_se,
    window,
    perceptual,
    seconds,
    timing,
) -> dict:
    def mean_of(rows: list[dict]) -> dict:
        keys = rows[0].keys() if rows else []
        return {k: float(np.mean([r[k] for r in rows])) for k in keys}

    def se_of(records: list[dict], part: str) -> dict:
        """Standard error over frames of each image metric (views of one frame are not independent)."""
        by_frame = defaultdict(list)
        for r in records:
            by_frame[r["frame_id"]].append(r[part])
        means = [mean_of(rows) for rows in by_frame.values()]
        if len(means) < 2:
            return {k: None for k in means[0]} if means else {}
        return {k: float(np.std([m[k] for m in means], ddof=1) / np.sqrt(len(means))) for k in means[0]}

    groups = {
        "all": records,
        "fitted_cameras": [r for r in records if r["fitted_camera"]],
        "other_cameras": [r for r in records if not r["fitted_camera"]],
    }
    groups = {k: v for k, v in groups.items() if v}
    fit, progress, sr_source = fitted.record, fitted.progress, fitted.sr_source
    with_sr, with_bicubic = "sr" in records[0], "sr_bicubic" in records[0]  # (evaluate's sr_metrics)
    report = {
        "config": {
            "sr_source": sr_source,
            "use_enh": bool(fitted.avatar.use_enh),
            "scale": fit.hr_size / fit.lr_size,
            "hr_size": fit.hr_size,
            "lr_size": fit.lr_size,
            "degradation": fit.degradation,
            "subdivision_levels": fitted.avatar_args["subdivision_levels"],
            "num_vertices": fitted.avatar.num_verts,
            "sequence": fit.sequence,
            "fit_frames": len(fit.frame_ids),
            "fit_views": len(fit.cameras),
            "epoch": progress.epoch,
            "phase": progress.phase,
        },
        "eval_frames": selection.frames,
        "eval_cameras": selection.cameras,
        "sh_substitutes": selection.substitutes,
        "num_samples": len(records),
        "perceptual": perceptual.label if perceptual is not None else None,
        "perceptual_key": perceptual.name.lower().replace("-", "") if perceptual is not None else None,
        "render": {k: mean_of([r["render"] for r in v]) for k, v in groups.items()},
        "sr": ({k: mean_of([r["sr"] for r in v]) for k, v in groups.items()} if with_sr else None),
        "sr_bicubic": (
            {k: mean_of([r["sr_bicubic"] for r in v]) for k, v in groups.items()} if with_bicubic else None
        ),
        "counts": {
            k: {"images": len(v), "frames": len({r["frame_id"] for r in v})} for k, v in groups.items()
        },
        "render_se": {k: se_of(v, "render") for k, v in groups.items()},
        "sr_se": {k: se_of(v, "sr") for k, v in groups.items()} if with_sr else None,
        **p2p_report(p2p, p2p_mano, ctx.settings.eval.p2p_samples, ctx.settings.eval.p2p_estimator),
        "gt_mesh_source": gt_source,
        "inconsistency": {
            "sr": incon["sr"],
            "gt_hr": incon["gt_hr"],
            "bicubic": incon["bicubic"],
            "window": window,
            "se": {"sr": incon_se["sr"], "gt_hr": incon_se["gt_hr"], "bicubic": incon_se["bicubic"]},
        },
        "finetune_rounds": progress.history,
        "mano_noise": mano_noise_report(
            ctx.settings.data.mano_noise, selection.noise_mpjpe, fit.frame_ids, selection.frames
        ),
        "eval_seconds": seconds,
    }
    if timing:
        report["timing"] = timing
    return report


def mano_mesh(hand_model, pose, shape, trans, shape_offset=None) -> torch.Tensor:
    """``(778, 3)`` world MANO vertices (CPU, float32) of one frame's parameters (+ a shape offset)."""
    shape = shape.cpu().float() + (0 if shape_offset is None else shape_offset.cpu().float())
    with torch.no_grad():
        verts, _ = hand_model.forward(pose.cpu().float()[None], shape[None], trans.cpu().float()[None])
    return verts[0].float()


@torch.no_grad()
def decode_eval_sr(
    ctx: RunContext, fitted: FittedAvatar, selection: EvalSelection
) -> dict[int, torch.Tensor]:
    """The SR images of every evaluated view: frame id -> ``(V, 3, H, W)`` on the CPU, V the cameras of
    ``selection`` in its order, decoded in :func:`evaluate`'s batches of views (so that either gives the same
    values). For an evaluation that looks at the same images more than once (:func:`evaluate_fit`: the
    evaluation, the test-time fit, the evaluation at the fitted poses); the decoder is put in eval mode."""
    giif = fitted.giif.eval() if fitted.giif is not None else None
    seq, cameras, batch = selection.seq, selection.cameras, max(1, ctx.settings.eval.batch_size)
    images = {}
    for fi, frame_id in enumerate(selection.frames):
        parts = []
        for k in range(0, len(cameras), batch):
            views = list(range(k, min(k + batch, len(cameras))))
            s = {key: v.to(ctx.device) for key, v in sample_frame(seq, fi, views, ctx.settings.data).items()}
            parts.append(
                sr_batch(
                    giif,
                    fitted.sr_source,
                    s["lr"],
                    s["normal"],
                    s["mask"],
                    s["hr"],
                    ctx.settings.decode_chunk,
                ).cpu()
            )
        images[frame_id] = torch.cat(parts)
    return images


def test_time_fit(
    ctx: RunContext,
    fitted: FittedAvatar,
    selection: EvalSelection,
    sr_images: Mapping[int, torch.Tensor] | None = None,
) -> tuple[dict, dict]:
    """Fit the pose, rotation and translation of every evaluated frame to its images (``refine.test_target``:
    the SR images of the fit's ``sr_source``, or the LR images) with the avatar frozen
    (:func:`trainers.srhand.refine.fit_pose`; UHM's test-time fitting), from the annotation. ``sr_images``:
    the SR images of :func:`decode_eval_sr` (decoded here when None).

    Returns frame id -> ``(pose (48,), trans (3,))`` and a record: per-frame losses before and after, seconds,
    the frames left at their annotation because every view is black (``frames_not_fitted``, logged), and
    (synthetic captures) the MPJPE of the annotated and the fitted keypoints against the truth.
    """
    s, seq = ctx.settings, selection.seq
    fit_cams = fitted.record.cameras
    sh_index = [fit_cams.index(selection.substitutes.get(c, c)) for c in selection.cameras]
    avatar = fitted.avatar.eval()
    giif = fitted.giif.eval() if fitted.giif is not None else None
    shape_offset = fitted.shape_offset()
    weight = float(s.train.losses.get("photometric", 30.0))
    poses, losses, not_fitted = {}, {}, []
    start = time.time()
    for fi, frame_id in ctx.log.progress(list(enumerate(selection.frames)), desc="test-time fit"):
        views = list(range(len(selection.cameras)))
        sample = {k: v.to(ctx.device) for k, v in sample_frame(seq, fi, views, s.data).items()}
        keep = [v for v in views if not bool(sample["is_black"][v])]
        if not keep:  # every view black: nothing to fit to, the annotation stays (reported)
            poses[frame_id] = (seq.mano_pose[fi], seq.mano_trans[fi])
            not_fitted.append(int(frame_id))
            ctx.log.warning(
                "test-time fit: frame %d has no usable view; it keeps its annotated pose", frame_id
            )
            continue
        size = tuple(sample["hr"].shape[-2:])
        cams = Cameras(
            K=sample["K"][keep],
            R=sample["R"][keep],
            t=sample["t"][keep],
            image_size=size,
            names=[selection.cameras[v] for v in keep],
        )
        if s.refine.test_target == "lr":
            images = sample["lr"][keep]
        elif sr_images is not None:
            images = sr_images[frame_id][keep].to(ctx.device)
        else:  # what the avatar is supervised by
            images = sr_batch(
                giif,
                fitted.sr_source,
                sample["lr"][keep],
                sample["normal"][keep],
                sample["mask"][keep],
                sample["hr"][keep],
                s.decode_chunk,
            )
        pose, trans, record = fit_pose(
            avatar,
            seq.mano_pose[fi].to(ctx.device),
            seq.mano_trans[fi].to(ctx.device),
            shape_offset,
            cams,
            [sh_index[v] for v in keep],
            images,
            sample["mask"][keep],
            s.refine,
            ctx.renderer,
            photometric_weight=weight,
            degradation=s.data.degradation,
        )
        poses[frame_id] = (pose.cpu(), trans.cpu())
        losses[str(frame_id)] = record
    out = {
        "seconds": time.time() - start,
        "steps": s.refine.test_steps,
        "per_frame": losses,
        "frames_not_fitted": not_fitted,
    }
    truth = true_keypoints(seq.gt_mesh_path, selection.frames)
    if truth is not None:
        offset = 0 if shape_offset is None else shape_offset.cpu()
        shapes = seq.mano_shape.cpu().float()
        out["keypoints"] = keypoint_errors(
            seq.hand_model(),
            truth,
            (seq.mano_pose, shapes, seq.mano_trans),
            (
                torch.stack([poses[f][0] for f in selection.frames]),
                shapes + offset,
                torch.stack([poses[f][1] for f in selection.frames]),
            ),
        )
    return poses, out


TEST_TIME_FIT_KEYS = (
    "p2p_pseudo_gt_mm",
    "p2p_pseudo_gt_mm_mano",
    "render",
    "render_se",
    "p2p_mm",
    "p2p_se_mm",
    "p2p_mm_mano",
    "p2p_se_mm_mano",
    "p2p_frames",
    "p2p_frame_se_mm",
    "p2p_mm_per_frame",
    "p2p_se_mm_per_frame",
    "inconsistency",
)


def refinement_report(fitted: FittedAvatar, selection: EvalSelection) -> dict:
    """What the joint refinement did to the fitting frames: the offsets' sizes and (synthetic captures) the
    MPJPE of the annotated and the refined keypoints against the truth."""
    mano = fitted.mano
    out = {"offsets": mano.offset_summary(), "frames": len(mano.frame_ids)}
    truth = true_keypoints(selection.seq.gt_mesh_path, mano.frame_ids)
    if truth is not None:
        hand_model = selection.seq.hand_model()
        out["keypoints"] = keypoint_errors(
            hand_model,
            truth,
            (mano.pose_annotated.cpu(), mano.shape_annotated.cpu(), mano.trans_annotated.cpu()),
            (mano.poses().cpu(), mano.shapes().cpu(), mano.translations().cpu()),
        )
    return out


def evaluate_fit(
    ctx: RunContext,
    fitted: FittedAvatar,
    selection: EvalSelection,
    save_vis: bool = False,
    timing: dict | None = None,
) -> dict:
    """:func:`evaluate` at the annotated poses; for a fit with MANO refinement its ``refinement`` record; and for
    a fit with refinement, or any avatar evaluated with ``refine.enabled``, with ``refine.test_time_fit`` the
    ``test_time_fit`` block: the same metrics (render, P2P of the avatar and of the fitted MANO mesh,
    inconsistency) at the test-time-fitted poses (:func:`test_time_fit`). The SR images are decoded once for
    the three (:func:`decode_eval_sr`), and the SR and bicubic image metrics, which do not depend on the pose,
    are measured once."""
    r = ctx.settings.refine
    fit_poses = (fitted.mano is not None or r.enabled) and r.test_time_fit and r.test_steps > 0
    start = time.time()
    sr_images = decode_eval_sr(ctx, fitted, selection) if fit_poses else None
    decode_seconds = time.time() - start
    report = evaluate(ctx, fitted, selection, save_vis=save_vis, timing=timing, sr_images=sr_images)
    if sr_images is not None:
        report["eval_seconds"] += decode_seconds  # the decoding evaluate would otherwise have done
    if fitted.mano is not None:
        report["refinement"] = refinement_report(fitted, selection)
    if fit_poses:
        poses, record = test_time_fit(ctx, fitted, selection, sr_images=sr_images)
        fitted_report = evaluate(ctx, fitted, selection, poses=poses, sr_images=sr_images, sr_metrics=False)
        report["test_time_fit"] = {
            **record,
            **{k: fitted_report[k] for k in TEST_TIME_FIT_KEYS if k in fitted_report},
        }
    return report


def training_timing(folder: Path) -> dict | None:
    """The ``timing.json`` a training run wrote in ``folder``, or None."""
    path = folder / "timing.json"
    return json.loads(path.read_text()) if path.is_file() else None


def write_metrics(ctx: RunContext, report: dict) -> Path:
    """``metrics.json`` of ``report`` in the run folder, and its table in the log."""
    from utils.checkpoint import atomic_write_text

    path = atomic_write_text(ctx.run_dir / "metrics.json", json.dumps(report, indent=2))
    ctx.log.info("SRHand evaluation:\n%s", format_report(report))
    ctx.log.info("metrics written to %s", path)
    return path
