"""Evaluation of the SRHand stage on held-out frames (and cameras): rendered and SR image metrics, P2P
against ground-truth meshes, inconsistency, panels and the text report written to ``metrics.json``.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from trainers import losses as L
from trainers.sr_eval import bicubic_upsample, normal_to_rgb
from trainers.srhand.sequence import SRHandInputError, camera_centres, sample_frame, synthetic_meta_entry
from trainers.srhand.setup import surface_unconfidence
from utils.checkpoint import (
    make_checkpoint,
)
from utils.geometry.camera import Cameras
from utils.metrics import image as metrics

REFERENCE_WINDOW = 8  # frames per inconsistency window in the reference's evaluation


def format_report(report: dict) -> str:
    """A plain-text table of an :meth:`SRHandTrainer.evaluate` report."""
    perc, pk = report.get("perceptual"), report.get("perceptual_key")
    cfg = report["config"]
    lines = [f"sr_source={cfg['sr_source']} use_enh={cfg['use_enh']} x{cfg['scale']:g} "
             f"({cfg['lr_size']} -> {cfg['hr_size']}), {report['num_samples']} images "
             f"({len(report['eval_frames'])} frames x {len(report['eval_cameras'])} cameras)"]
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
        lines.append(f"P2P {report['p2p_mm']:.3f} mm (MANO input: {report['p2p_mm_mano']:.3f} mm; "
                     f"ground truth: {report['gt_mesh_source']})")
    inc = report["inconsistency"]
    lines.append(f"inconsistency: SR {inc['sr']:.6f}, GT HR {inc['gt_hr']:.6f}, bicubic {inc['bicubic']:.6f}"
                 + (f" (window {inc['window']})" if inc["window"] else ""))
    if report.get("sh_substitutes"):
        lines.append("SH of the nearest fitted camera used for: "
                     + ", ".join(f"{k} <- {v}" for k, v in report["sh_substitutes"].items()))
    paper = report.get("paper_protocol")
    if paper:
        cells = [f"render PSNR {paper['render']['psnr']:.2f}", f"SSIM {paper['render']['ssim']:.4f}"]
        if perc:
            cells.append(f"{perc} {paper['render'][pk]:.4f}")
        if paper.get("sr"):
            cells += [f"SR PSNR {paper['sr']['psnr']:.2f}", f"SR SSIM {paper['sr']['ssim']:.4f}"]
        cells.append(f"inconsistency (window {paper['inconsistency_window']}) {paper['inconsistency_windowed']:.6f}")
        if paper.get("p2p_truth_to_recon_mm") is not None:
            cells.append(f"P2P truth->recon {paper['p2p_truth_to_recon_mm']:.3f} mm "
                         f"(MANO input {paper['p2p_mano_truth_to_recon_mm']:.3f} mm)")
        lines.append("paper protocol (full image, GT masked by the predicted silhouette): " + ", ".join(cells))
    if perc:
        lines.append(f"(perceptual metric: {perc}; masked = inside the GT MANO silhouette, full = whole image)")
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
        return float(np.mean([v[key] for v in values.values()])) if values else None

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
    out.update({
        "inconsistency_windowed": incon_windowed["sr"],
        "inconsistency_windowed_all": dict(incon_windowed),
        "inconsistency_window": window,
        "p2p_truth_to_recon_mm": mean_dir(p2p, "gt_to_pred"),
        "p2p_recon_to_truth_mm": mean_dir(p2p, "pred_to_gt"),
        "p2p_mano_truth_to_recon_mm": mean_dir(p2p_mano, "gt_to_pred"),
        "p2p_mano_recon_to_truth_mm": mean_dir(p2p_mano, "pred_to_gt"),
    })
    return out


class EvaluationMixin:
    """Methods of :class:`trainers.srhand.SRHandTrainer` (evaluation); state lives on the trainer."""

    def eval_selection(self) -> tuple[list[int], list[str], dict]:
        """Frames and cameras to evaluate and, for cameras not fitted, the fitted camera whose SH they use."""
        e = self.conf.get_config("eval")
        d = self.conf.get_config("data")
        ckpt = self.eval_ckpt
        fit = ckpt["fit"]
        meta = synthetic_meta_entry(d.get_string("data_path"), d.get_string("split"), d.get_string("capture"),
                                    d.get_string("sequence"))
        cameras = [str(c) for c in e.get_list("cameras")] or list(fit["cameras"])
        if e.get_bool("include_heldout_cameras") and meta:
            cameras += [c for c in meta.get("heldout_cameras", []) if c not in cameras]
        full = self._read_sequence(cameras, num_frames=None)
        frames = [int(f) for f in e.get_list("frames")]
        if not frames:
            candidates = list(meta["heldout_frame_ids"]) if meta and meta.get("heldout_frame_ids") else list(full.frame_ids)
            if e.get_int("num_frames") > 0:
                candidates = candidates[:e.get_int("num_frames")]
            exclude = set(fit["frame_ids"]) if e.get_bool("exclude_fit_frames") else set()
            frames = [f for f in candidates if f not in exclude]
        if not frames:
            raise SRHandInputError("no frame to evaluate: every candidate frame was used for fitting (set eval.frames)")
        positions = [full.frame_index(f) for f in frames]
        self.eval_seq = full.select(frames=positions)
        centres = camera_centres(full.cameras.R, full.cameras.t)
        fit_centres = fit["camera_centres"]
        substitutes = {}
        for v, name in enumerate(cameras):
            if name not in fit["cameras"]:
                nearest = int((fit_centres - centres[v]).norm(dim=-1).argmin())
                substitutes[name] = fit["cameras"][nearest]
        return frames, cameras, substitutes

    def _gt_mesh(self, frame_index: int, frame_id: int):
        gt_dir = self.conf.get_string("eval.gt_mesh_dir")
        if gt_dir:
            from utils.geometry.mesh_io import load_obj

            path = Path(gt_dir) / f"{frame_id}.obj"
            if not path.is_file():
                raise FileNotFoundError(f"eval.gt_mesh_dir = {gt_dir!r}: no mesh for frame {frame_id} ({path}); "
                                        "export one with an sr_source = hr run and eval.export_meshes = true")
            verts, faces = load_obj(path)[:2]
            return torch.as_tensor(verts, dtype=torch.float32), torch.as_tensor(faces, dtype=torch.long), str(gt_dir)
        if self.eval_seq.gt_mesh_path:
            verts, faces = self.eval_seq.gt_mesh(frame_index)
            return verts, faces, self.eval_seq.gt_mesh_path
        return None, None, None

    @torch.no_grad()
    def evaluate(self, save_vis: bool = False) -> dict:
        """Metrics on held-out frames (and cameras): see the module docstring and docs/srhand_model.md."""
        from utils.geometry.mesh_io import save_obj
        from utils.image_io import make_grid, save_gif, write_image
        from utils.metrics.geometry import (
            inconsistency,
            p2p_parts_mm,
            sample_at_pixels,
            windowed_inconsistency,
        )

        start, cpu_start = time.time(), time.process_time()
        e = self.conf.get_config("eval")
        dconf = self.conf.get_config("data")
        frames, cameras, substitutes = self.eval_selection()
        fit_cams = self.eval_ckpt["fit"]["cameras"]
        sh_index = [fit_cams.index(substitutes.get(c, c)) for c in cameras]
        for cam, sub in substitutes.items():
            self.log.info("camera %s was not fitted: its SH lighting is that of the nearest fitted camera %s", cam, sub)
        perceptual = None
        if e.get_string("perceptual") != "none":
            perceptual = metrics.PerceptualMetric(e.get_string("perceptual"), net="alex", device=self.device)
        perc_key = perceptual.name.lower().replace("-", "") if perceptual is not None else None
        avatar = self.avatar.eval()
        batch = max(1, e.get_int("batch_size"))
        records: list[dict] = []
        colours = defaultdict(list)
        visibility = []
        p2p, p2p_mano = {}, {}  # frame id -> {symmetric, pred_to_gt, gt_to_pred} in mm
        gt_source = None
        vis_frames = e.get_int("max_vis_frames") if save_vis else 0
        gif_frames = []
        export = e.get_bool("export_meshes") or save_vis
        giif = self.giif.eval() if self.giif is not None else None
        bar = self.log.progress(list(enumerate(frames)), desc="evaluate")
        for fi, frame_id in bar:
            geo = avatar.forward_geometry(self.eval_seq.mano_pose[fi].to(self.device),
                                          self.eval_seq.mano_trans[fi].to(self.device))
            panel_rows = []
            for k in range(0, len(cameras), batch):
                views = list(range(k, min(k + batch, len(cameras))))
                s = {key: v.to(self.device) for key, v in
                     sample_frame(self.eval_seq, fi, views, dconf, with_raw=True).items()}
                size = tuple(s["hr"].shape[-2:])
                cams = Cameras(K=s["K"], R=s["R"], t=s["t"], image_size=size, names=[cameras[v] for v in views])
                out = avatar.render(geo["verts_posed"], geo["albedo"], cams, [sh_index[v] for v in views],
                                    renderer=self.renderer)
                render, mask = out["image"], s["mask"]
                pred_mask = (out["mask"] > 0.5).to(mask.dtype)
                sr = self._sr_batch(giif, self.sr_source, s["lr"], s["normal"], mask, s["hr"])
                bicubic = bicubic_upsample(s["lr"], size) * mask
                rows = self._image_metrics(render, s["hr"], mask, pred_mask, s["raw"], perceptual, perc_key)
                sr_rows = self._sr_metrics(sr, s["hr"], mask, perceptual, perc_key) if self.sr_source != "hr" else None
                bic_rows = self._sr_metrics(bicubic, s["hr"], mask, perceptual, perc_key)
                for b, v in enumerate(views):
                    rec = {"frame_id": frame_id, "camera": cameras[v], "fitted_camera": cameras[v] in fit_cams,
                           "render": rows[b], "sr_bicubic": bic_rows[b]}
                    if sr_rows is not None:
                        rec["sr"] = sr_rows[b]
                    records.append(rec)
                visible = out["visible"]
                visibility.append(visible.cpu())
                for name, images in (("sr", sr), ("gt_hr", s["hr"]), ("bicubic", bicubic)):
                    colours[name].append(sample_at_pixels(images, out["uv_pix"]).cpu())
                if fi < vis_frames:
                    albedo_img = self.renderer.interpolate(geo["albedo"][None].expand(len(views), -1, -1), out["rast"],
                                                           avatar.faces).permute(0, 3, 1, 2)
                    lr_up = F.interpolate(s["lr"], size=size, mode="nearest")
                    panel_rows.append({"lr": lr_up, "sr": sr, "render": render, "shading": out["shading_only"],
                                       "normal": normal_to_rgb(out["normal"]), "albedo": albedo_img, "gt": s["hr"],
                                       "uv": out["uv_pix"], "visible": visible, "rast": out["rast"]})
                if k == 0 and save_vis:
                    gif_frames.append(make_grid([s["hr"][0], render[0], out["shading_only"][0]],
                                                [f"GT {frame_id}", "render", "geometry"]))
            # geometry
            gt_v, gt_f, gt_source = self._gt_mesh(fi, frame_id)
            if gt_v is not None:
                p2p[frame_id] = p2p_parts_mm(geo["verts_posed"].cpu(), avatar.faces.cpu(), gt_v, gt_f,
                                             num_samples=e.get_int("p2p_samples"))
                p2p_mano[frame_id] = p2p_parts_mm(self.eval_seq.verts_world(fi), self.eval_seq.faces, gt_v, gt_f,
                                                  num_samples=e.get_int("p2p_samples"))
            if export:
                save_obj(self.run_dir / "meshes" / f"{frame_id}.obj", geo["verts_posed"].cpu(), avatar.faces.cpu(),
                         geo["albedo"].cpu())
            if panel_rows:
                self._write_panel(panel_rows, frame_id, e.get_int("max_vis_views"), make_grid, write_image)
        if gif_frames:
            save_gif(self.run_dir / "vis" / f"{cameras[0]}.gif", gif_frames, fps=e.get_float("gif_fps"))

        window = e.get_int("inconsistency_window") or None
        vis_all = torch.cat(visibility)
        if window is not None:
            window = min(window, vis_all.shape[0])
        incon = {name: inconsistency(torch.cat(c), vis_all, window=window) for name, c in colours.items()}
        # The reference's protocol: windows of REFERENCE_WINDOW consecutive frames of one view.
        incon_windowed = {name: windowed_inconsistency(torch.cat(c), vis_all, len(cameras), REFERENCE_WINDOW)
                          for name, c in colours.items()}
        if self.sr_source == "hr":
            incon["sr"] = incon["gt_hr"]
            incon_windowed["sr"] = incon_windowed["gt_hr"]
        report = self._report(records, frames, cameras, substitutes, p2p, p2p_mano, gt_source, incon, window,
                              perceptual, time.time() - start)
        report["paper_protocol"] = paper_protocol(report, p2p, p2p_mano, incon_windowed, min(REFERENCE_WINDOW,
                                                                                            len(frames)))
        report["eval_cpu_seconds"] = time.process_time() - cpu_start
        return report

    def _image_metrics(self, render, hr, mask, pred_mask, raw, perceptual, perc_key) -> list[dict]:
        """Per-image metrics of the render: ``masked`` (both images masked by the GT MANO silhouette, statistics
        inside it), ``full`` (whole image, GT masked by the MANO silhouette) and ``predmask`` (the reference
        protocol: both images masked by the predicted silhouette, whole image)."""
        pairs = {"masked": (render * mask, hr, mask), "full": (render, hr, None),
                 "predmask": (render * pred_mask, raw * pred_mask, None)}
        return self._metrics_rows(pairs, perceptual, perc_key)

    def _sr_metrics(self, sr, hr, mask, perceptual, perc_key) -> list[dict]:
        return self._metrics_rows({"masked": (sr, hr, mask), "full": (sr, hr, None)}, perceptual, perc_key)

    @staticmethod
    def _metrics_rows(pairs: dict, perceptual, perc_key) -> list[dict]:
        rows = None
        for region, (pred, gt, m) in pairs.items():
            values = {f"psnr_{region}": metrics.psnr(pred, gt, mask=m, reduction="none"),
                      f"ssim_{region}": metrics.ssim(pred, gt, mask=m, reduction="none")}
            if perceptual is not None:
                values[f"{perc_key}_{region}"] = perceptual(pred, gt, reduction="none").cpu().numpy()
            if rows is None:
                rows = [{} for _ in range(pred.shape[0])]
            for key, vals in values.items():
                for b, value in enumerate(vals):
                    rows[b][key] = float(value)
        return rows

    def _write_panel(self, rows: list[dict], frame_id: int, max_views: int, make_grid, write_image) -> None:
        scale = self.conf.get_float("eval.unconf_vis_scale")
        cat = {k: torch.cat([r[k] for r in rows]) for k in rows[0]}
        _, var, _ = L.vertex_color_stats(cat["sr"], cat["uv"], cat["visible"])
        unconf = surface_unconfidence(self.renderer, var, cat["rast"], self.avatar.faces, scale)
        tiles, labels = [], []
        names = ["LR", "SR", "render", "geometry", "normals", "albedo", "GT", "unconfidence"]
        for b in range(min(max_views, cat["sr"].shape[0])):
            tiles += [cat["lr"][b], cat["sr"][b], cat["render"][b], cat["shading"][b], cat["normal"][b],
                      cat["albedo"][b], cat["gt"][b], unconf[b]]
            labels += names
        write_image(self.run_dir / "vis" / f"frame_{frame_id}.png", make_grid(tiles, labels, ncols=len(names)))

    def _report(self, records, frames, cameras, substitutes, p2p, p2p_mano, gt_source, incon, window, perceptual,
                seconds) -> dict:
        def mean_of(rows: list[dict]) -> dict:
            keys = rows[0].keys() if rows else []
            return {k: float(np.mean([r[k] for r in rows])) for k in keys}

        groups = {"all": records, "fitted_cameras": [r for r in records if r["fitted_camera"]],
                  "other_cameras": [r for r in records if not r["fitted_camera"]]}
        groups = {k: v for k, v in groups.items() if v}
        ckpt = self.eval_ckpt
        fit = ckpt["fit"]
        report = {
            "config": {"sr_source": self.sr_source, "use_enh": bool(self.avatar.use_enh),
                       "scale": fit["hr_size"] / fit["lr_size"], "hr_size": fit["hr_size"], "lr_size": fit["lr_size"],
                       "degradation": fit["degradation"], "subdivision_levels": self.avatar_args["subdivision_levels"],
                       "num_vertices": self.avatar.num_verts, "sequence": fit["sequence"],
                       "fit_frames": len(fit["frame_ids"]), "fit_views": len(fit["cameras"]),
                       "epoch": ckpt["epoch"], "phase": ckpt.get("phase")},
            "eval_frames": frames, "eval_cameras": cameras, "sh_substitutes": substitutes,
            "num_samples": len(records),
            "perceptual": perceptual.label if perceptual is not None else None,
            "perceptual_key": perceptual.name.lower().replace("-", "") if perceptual is not None else None,
            "render": {k: mean_of([r["render"] for r in v]) for k, v in groups.items()},
            "sr": ({k: mean_of([r["sr"] for r in v]) for k, v in groups.items()} if self.sr_source != "hr" else None),
            "sr_bicubic": {k: mean_of([r["sr_bicubic"] for r in v]) for k, v in groups.items()},
            "p2p_mm": float(np.mean([v["symmetric"] for v in p2p.values()])) if p2p else None,
            "p2p_mm_mano": float(np.mean([v["symmetric"] for v in p2p_mano.values()])) if p2p_mano else None,
            "p2p_mm_per_frame": {str(k): v["symmetric"] for k, v in p2p.items()},
            "gt_mesh_source": gt_source,
            "inconsistency": {"sr": incon["sr"], "gt_hr": incon["gt_hr"], "bicubic": incon["bicubic"],
                              "window": window},
            "finetune_rounds": ckpt.get("history", self.history),
            "mano_noise": self.mano_noise_report(fit["frame_ids"], frames),
            "eval_seconds": seconds,
        }
        if self.timing:
            report["timing"] = self.timing_summary()
        elif getattr(self, "model_folder", None) is not None and (self.model_folder / "timing.json").is_file():
            report["timing"] = json.loads((self.model_folder / "timing.json").read_text())  # of the training run
        return report

    def run_eval(self, save_vis: bool = False) -> dict:
        """``--eval``: :meth:`evaluate`, then ``metrics.json`` and a console table."""
        report = self.evaluate(save_vis=save_vis)
        path = self.run_dir / "metrics.json"
        path.write_text(json.dumps(report, indent=2))
        self.log.info("SRHand evaluation:\n%s", format_report(report))
        self.log.info("metrics written to %s", path)
        return report

    def prepare_eval_from_training(self) -> None:
        """Evaluate the avatar just trained in this process (no reload)."""
        self.eval_ckpt = make_checkpoint(self.stage, self._avatar_entry(), epoch=self.epoch, phase=self.phase,
                                         history=self.history, **self._provenance())
        self.avatar.eval()
