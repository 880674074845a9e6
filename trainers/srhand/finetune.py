"""Adaptive fine-tuning of GIIF (paper sec. 3.4.2): every ``finetune.update_term`` epochs of the configured
window, render the current hand, decode SR with gradient, apply the consistency, wavelet and
discriminator losses, step GIIF, then regenerate every SR target.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Sequence

import numpy as np
import torch

from trainers import losses as L
from trainers.srhand.setup import giif_decode, giif_decode_masked, jet, round_epoch, surface_unconfidence
from utils.config import conf_to_dict
from utils.run_logging import check_finite
from utils.seeding import keyed_generator


class FinetuneMixin:
    """Methods of :class:`trainers.srhand.SRHandTrainer` (finetune); state lives on the trainer.

    ``finetune_masked_decode`` (default True): the fine-tuning step decodes GIIF at the MANO-masked pixels
    only (:func:`giif_decode_masked`); False decodes every pixel and masks afterwards (the reference path,
    kept for ``scripts/benchmark_srhand_step.py --reference`` and the equality checks).
    """

    finetune_masked_decode = True
    finetune_cache_features = True
    finetune_feature_cache_mib = 2048  # bound on the cached GIIF features (paper size: ~40 MiB per view)

    def _frozen_giif_features(self, frame: int, views: list[int], lr: torch.Tensor, normal: torch.Tensor):
        """GIIF's encoding of ``views`` of ``frame``, kept between steps while its encoders are not fine-tuned.

        With ``finetune.params = imnet`` (the default) the encoders and their inputs never change, so their
        features are the same at every visit of a (frame, views) batch; the entry is keyed on the encoders'
        parameter versions, so a load or an update recomputes it. Returns None (encode in the step) when
        ``finetune_cache_features`` is off or an encoder is trained.
        """
        giif = self.giif
        encoders = [p for n, p in giif.named_parameters() if n.split(".")[0] in ("encoder", "normal_encoder")]
        if not self.finetune_cache_features or any(p.requires_grad for p in encoders):
            return None
        versions = tuple(p._version for p in encoders)
        cache = self.__dict__.setdefault("_giif_feature_cache", {})
        key = (frame, tuple(views))
        if key not in cache or cache[key][0] != versions:
            with torch.no_grad():
                feats = giif.encode(lr, normal if giif.use_normal else None)
            held = sum(t.numel() * t.element_size() for _, f in cache.values()
                       for t in (f.lr_feat, f.lr_flat, f.normal_feat, f.normal_flat) if t is not None)
            if key not in cache and held > self.finetune_feature_cache_mib * 2**20:
                return feats  # full: this batch is encoded at every visit
            cache[key] = (versions, feats)
        return cache[key][1]

    # ---- joint training -----------------------------------------------------------------------
    def finetune_epochs(self, epochs: int | None = None) -> list[int]:
        """The 1-based training epochs at whose start a GIIF fine-tuning round runs."""
        if self.sr_source != "giif_finetuned":
            return []
        f = self.conf.get_config("finetune")
        epochs = self.conf.get_int("train.epochs") if epochs is None else epochs
        term = f.get_int("update_term")
        if term <= 0 or f.get_int("inner_epochs") <= 0:
            return []
        lo, hi = round_epoch(f.get_float("start"), epochs), round_epoch(f.get_float("stop"), epochs)
        return [i for i in range(1, epochs + 1) if lo <= i < hi and i % term == 0]

    # ---- GIIF fine-tuning ---------------------------------------------------------------------
    @torch.no_grad()
    def target_unconfidence(self, frames: Sequence[int] | None = None) -> dict:
        """Per-vertex colour variance of the current SR targets across the views of each frame.

        Returns ``{"mean_var": float, "var": (V,) mean over frames of the vertices seen twice or more}``.
        """
        d = self.data
        frames = range(d.num_frames) if frames is None else frames
        total = torch.zeros(self.avatar.num_verts, device=self.device)
        count = torch.zeros_like(total)
        values = []
        for f in frames:
            uv, vis = self._vertex_projection(f, list(range(d.num_views)))
            _, var, n = L.vertex_color_stats(self.sr[f].float(), uv, vis)
            seen = n >= 2
            if seen.any():
                values.append(float(var[seen].mean()))
            total += var * seen
            count += seen
        return {"mean_var": float(np.mean(values)) if values else float("nan"), "var": total / count.clamp(min=1)}

    @torch.no_grad()
    def _vertex_projection(self, frame: int, views: list[int]):
        d = self.data
        batch = max(1, self.conf.get_int("eval.batch_size"))
        geo = self.avatar.forward_geometry(d.pose[frame], d.trans[frame])
        uvs, viss = [], []
        for k in range(0, len(views), batch):
            vb = views[k:k + batch]
            out = self.avatar.render(geo["verts_posed"], geo["albedo"], d.cameras(frame, vb), vb,
                                     renderer=self.renderer)
            uvs.append(out["uv_pix"])
            viss.append(out["visible"])
        return torch.cat(uvs), torch.cat(viss)

    def finetune_round(self, epoch: int) -> dict:
        """One adaptive fine-tuning round of GIIF (paper 3.3-3.4.2), then regenerate the SR targets."""
        fconf = self.conf.get_config("finetune")
        d = self.data
        round_index = len(self.history)
        gen = keyed_generator(self.seed, "finetune", epoch)
        frames = torch.randperm(d.num_frames, generator=gen).tolist()[:max(1, fconf.get_int("num_frames"))]
        views = self._views_of(keyed_generator(self.seed, "finetune_views"), fconf.get_int("num_views"))
        batch = max(1, fconf.get_int("batch_size"))
        inner = fconf.get_int("inner_epochs")
        weights = conf_to_dict(self.conf, "finetune.weights")
        vis_frame = frames[0]
        before = self.target_unconfidence()
        sr_before = self.sr[vis_frame, views[:batch]].float()
        self.log.info("epoch %d: GIIF fine-tuning round %d (%d inner epochs x %d frames x %d views), "
                      "unconfidence (mean per-vertex variance of the SR targets) %.6f",
                      epoch, round_index, inner, len(frames), len(views), before["mean_var"])
        start = time.time()
        prev_mean = prev_count = None
        inner_vars, inner_means = [], []
        bar = self.log.progress(range(inner), desc=f"finetune {round_index}")
        for e in bar:
            var_sum = torch.zeros(self.avatar.num_verts, device=self.device)
            var_cnt = torch.zeros_like(var_sum)
            epoch_terms = defaultdict(list)
            for f in frames:
                for k in range(0, len(views), batch):
                    vb = views[k:k + batch]
                    terms, var, count = self._finetune_step(f, vb, weights, prev_mean, prev_count)
                    prev_mean, prev_count = terms["vertex_mean"], terms["vertex_count"]
                    seen = count >= 2
                    var_sum += var * seen
                    var_cnt += seen
                    for key in ("total", "wavelet", "consistency", "pose_consistency", "disc"):
                        if key in terms:
                            epoch_terms[key].append(float(terms[key].detach()))
            per_vertex = var_sum / var_cnt.clamp(min=1)
            inner_vars.append(per_vertex)
            inner_means.append(float(per_vertex[var_cnt > 0].mean()) if (var_cnt > 0).any() else float("nan"))
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(epoch_terms['total']):.4f}", var=f"{inner_means[-1]:.5f}")
        steps_done = time.time()
        self.sr = self._generate_sr(self.giif)
        regenerated = time.time()
        after = self.target_unconfidence()
        seconds = time.time() - start
        self.timing["sr_regeneration_s"].append(regenerated - steps_done)
        record = {"round": round_index, "epoch": epoch, "unconfidence_before": before["mean_var"],
                  "unconfidence_after": after["mean_var"], "inner_epoch_mean_var": inner_means,
                  "seconds": seconds, "step_seconds": steps_done - start,
                  "regeneration_seconds": regenerated - steps_done}
        self.history.append(record)
        self.log.info("round %d done in %.1f s: unconfidence %.6f -> %.6f (inner epochs: %s)", round_index, seconds,
                      before["mean_var"], after["mean_var"], ", ".join(f"{v:.6f}" for v in inner_means))
        self.log.log_scalars(epoch, {"unconfidence_before": before["mean_var"],
                                     "unconfidence_after": after["mean_var"]}, prefix="finetune")
        self._save_round_vis(round_index, inner_vars[0], inner_vars[-1], vis_frame, views[:batch], sr_before)
        return record

    def _finetune_step(self, frame: int, views: list[int], weights: dict, prev_mean, prev_count):
        t0 = time.time()
        d = self.data
        with torch.no_grad():
            out = self.avatar(d.pose[frame], d.trans[frame], d.cameras(frame, views), views, renderer=self.renderer)
        mask = d.get("mask", frame, views)
        fconf = self.conf.get_config("finetune")
        lr, normal = d.get("lr", frame, views), d.get("normal", frame, views)
        chunk, ckpt = fconf.get_int("chunk"), fconf.get_bool("checkpoint_chunks")
        if self.finetune_masked_decode:
            # Only the hand's pixels are decoded: the background is masked to 0 below anyway.
            sr = giif_decode_masked(self.giif, lr, normal, mask, chunk, ckpt,
                                    feats=self._frozen_giif_features(frame, views, lr, normal))
        else:
            sr = giif_decode(self.giif, lr, normal, d.size, chunk, ckpt)
        # Masked like the targets: the background carries no signal (and gets no gradient).
        sr = sr * mask
        terms = L.finetune_losses(sr, self.sr_orig[frame, views].float(), out["image"], out["uv_pix"],
                                  out["visible"], mask=mask, disc=self.disc, prev_mean=prev_mean,
                                  prev_count=prev_count, cfg=weights)
        loss_terms = {k: v for k, v in terms.items() if k not in ("vertex_mean", "vertex_count", "unconfidence")}
        check_finite(self.step, loss_terms)
        self.giif_optimizer.zero_grad(set_to_none=True)
        loss_terms["total"].backward()
        self.giif_optimizer.step()
        self.ft_step = getattr(self, "ft_step", 0) + 1
        if self.ft_step % max(1, self.conf.get_int("log_every")) == 0:
            self.log.log_losses(self.ft_step, {k: v.detach() for k, v in loss_terms.items()}, prefix="finetune")
        _, var, count = L.vertex_color_stats(sr.detach(), out["uv_pix"], out["visible"])
        self.timing["finetune_step_s"].append(time.time() - t0)
        return terms, var, count

    @torch.no_grad()
    def _save_round_vis(self, round_index: int, var_first, var_last, frame: int, views: list[int], sr_before) -> None:
        """Unconfidence before/after a round: OBJs of the canonical mesh coloured by the per-vertex variance
        of the first and last inner epoch, and a PNG of one frame: SR targets and their per-vertex variance
        across the views drawn on the surface, before | after the round."""
        from utils.geometry.mesh_io import save_obj
        from utils.image_io import make_grid, write_image

        folder = self.run_dir / "finetune"
        scale = self.conf.get_float("finetune.weights.unconf_scale")
        d = self.data
        geo = self.avatar.forward_geometry(d.pose[frame], d.trans[frame])
        for tag, var in (("first", var_first), ("last", var_last)):
            save_obj(folder / f"round{round_index:02d}_unconfidence_{tag}.obj", geo["verts_canonical"].cpu(),
                     self.avatar.faces.cpu(), jet((scale * var).clamp(0, 1)).cpu())
        out = self.avatar.render(geo["verts_posed"], geo["albedo"], d.cameras(frame, views), views,
                                 renderer=self.renderer)
        sr_after = self.sr[frame, views].float()
        tiles, labels = [], []
        for name, sr in (("before", sr_before), ("after", sr_after)):
            _, var, _ = L.vertex_color_stats(sr, out["uv_pix"], out["visible"])
            unconf = surface_unconfidence(self.renderer, var, out["rast"], self.avatar.faces, scale)
            for b in range(sr.shape[0]):
                tiles += [sr[b], unconf[b]]
                labels += [f"SR {name}", f"U {name}"]
        write_image(folder / f"round{round_index:02d}_unconfidence.png",
                    make_grid(tiles, labels, ncols=2 * sr_before.shape[0]))
