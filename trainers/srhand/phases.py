"""The reconstruction phases of SRHand (``docs/srhand_model.md``, "Trainer"): the albedo and shape-from-
shading pre-phases on the first frame, then the joint phase over all frames, which calls the adaptive
fine-tuning rounds of :mod:`trainers.srhand.finetune` inside its window.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from trainers import losses as L
from trainers.srhand.setup import PHASES, round_epoch
from utils.config import conf_to_dict
from utils.run_logging import check_finite
from utils.seeding import keyed_generator


class PhasesMixin:
    """Methods of :class:`trainers.srhand.SRHandTrainer` (phases); state lives on the trainer."""

    # ------------------------------------------------------------------ the loop
    def _stop_requested(self) -> bool:
        limit = self.conf.get_int("stop_after_epochs")
        return 0 <= limit <= self._epochs_this_run

    def _next_phase(self) -> None:
        if self.phase == "sfs":
            self._finish_prephase()
        self.phase = PHASES[PHASES.index(self.phase) + 1]
        if self.phase != "done":  # "done" keeps the last training epoch, for the record
            self.epoch = 0
        self._make_phase_optimizer()
        self.log.info("phase %s", self.phase)

    def _views_of(self, gen: torch.Generator, count: int | None = None) -> list[int]:
        perm = torch.randperm(self.data.num_views, generator=gen).tolist()
        return perm if count is None or count < 0 else perm[:count]

    # ---- pre-phases ---------------------------------------------------------------------------
    def _run_prephase(self) -> bool:
        pconf = self.conf.get_config(self.phase)
        epochs = pconf.get_int("epochs")
        batch = max(1, pconf.get_int("batch_size"))
        bar = self.log.progress(range(self.epoch, epochs), desc=self.phase, initial=self.epoch, total=epochs)
        for _ in bar:
            if self._stop_requested():
                return False
            i = self.epoch + 1
            gen = keyed_generator(self.seed, self.phase, i)
            views = self._views_of(gen)
            for k in range(0, len(views), batch):
                terms = self._prephase_step(views[k:k + batch], i, epochs)
            self.epoch = i
            self._epochs_this_run += 1
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(total=f"{float(terms['total'].detach()):.4f}")
            if self.conf.get_int("ckpt_every") > 0 and i % self.conf.get_int("ckpt_every") == 0 and i < epochs:
                self.save()
        return True

    def _prephase_geometry(self, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Canonical ``template (+ displacement in sfs)`` and its posed copy, MANO skinning weights."""
        verts = self.avatar.verts_template + (self.pre["delta"] if self.phase == "sfs" else 0.0)
        return verts, self.avatar.pose_vertices(verts, self.avatar.weights_init, self.data.pose[frame],
                                                self.data.trans[frame])

    def _prephase_step(self, views: list[int], i: int, epochs: int) -> dict:
        t0 = time.time()
        d, frame = self.data, 0
        verts_canon, posed = self._prephase_geometry(frame)
        albedo = torch.sigmoid(self.pre["albedo_logits"])
        out = self.avatar.render(posed, albedo, d.cameras(frame, views), views, renderer=self.renderer,
                                 sh_coeffs=self.pre["sh"])
        sr, mask = self.sr[frame, views].float(), d.get("mask", frame, views)
        valid = mask * out["coverage"].to(mask.dtype)
        c = self.conf.get_config(self.phase)
        terms = {"photometric": c.get_float("photometric") * L.masked_l1(out["image"], sr, valid),
                 "albedo_prior": c.get_float("albedo_prior") * L.mean_albedo_prior(albedo)}
        if self.phase == "sfs":
            boost = c.get_float("lap_boost") if i > round_epoch(c.get_float("lap_boost_at"), epochs) else 1.0
            lap = self.ops["laplacian"]
            terms["lap_delta"] = boost * c.get_float("lap_delta") * L.part_aware_laplacian_loss(self.pre["delta"], lap)
            terms["lap_verts"] = boost * c.get_float("lap_verts") * L.part_aware_laplacian_loss(verts_canon, lap,
                                                                                                keep="lower")
            terms["lap_albedo"] = c.get_float("lap_albedo") * L.part_aware_laplacian_loss(albedo, lap)
            terms["edge"] = c.get_float("edge") * L.edge_stretch_loss(verts_canon, self.ops["edges"],
                                                                      self.ops["rest_sq_lengths"])
        terms["total"] = sum(terms.values())
        self._optimise(self.pre_optimizer, terms)
        self.timing[f"{self.phase}_step_s"].append(time.time() - t0)
        return terms

    def _optimise(self, optimizer, terms: dict) -> None:
        check_finite(self.step, terms)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        self.step += 1
        if self.step % max(1, self.conf.get_int("log_every")) == 0:
            self.log.log_losses(self.step, {k: v.detach() for k, v in terms.items()}, prefix=self.phase)

    @torch.no_grad()
    def _finish_prephase(self) -> None:
        """Start the pose-conditioned networks at the pre-phase result (``HandAvatar.set_prephase``)."""
        delta = self.pre["delta"].detach().clone()
        albedo = torch.sigmoid(self.pre["albedo_logits"]).detach().clone()
        sh = self.pre["sh"].detach().clone()
        self.prephase_result = {"delta": delta, "albedo": albedo, "sh": sh}
        self.avatar.set_prephase(delta=delta, albedo=albedo, sh_coeffs=sh)
        from utils.geometry.mesh_io import save_obj

        save_obj(self.run_dir / "prephase.obj", (self.avatar.verts_template + delta).cpu(),
                 self.avatar.faces.cpu(), albedo.cpu())
        self.log.info("pre-phases done: |delta| mean %.3f mm, albedo mean %s; canonical mesh -> prephase.obj",
                      float(delta.norm(dim=-1).mean()) * 1000, [round(float(x), 3) for x in albedo.mean(0)])

    def _renew_epoch(self, i: int, epochs: int) -> bool:
        t = self.conf.get_config("train")
        every = t.get_int("renew_means_every")
        return every > 0 and i >= round_epoch(t.get_float("renew_means_start"), epochs) and i % every == 1 % every

    def loss_weights(self, i: int, epochs: int) -> dict:
        """The reconstruction-loss weights of epoch ``i`` (schedule of the reference, see the schema)."""
        t = self.conf.get_config("train")
        w = conf_to_dict(self.conf, "train.losses")
        if not self.avatar.use_enh:
            w["mean_texture"] = 0.0  # plain XHand
        if i >= round_epoch(t.get_float("late_start"), epochs):
            w["photometric"] *= t.get_float("late_photometric_scale")
            if self.avatar.use_enh:
                w["lap_delta"] = t.get_float("late_lap_delta")
        return w

    def _run_train(self) -> bool:
        t = self.conf.get_config("train")
        epochs = t.get_int("epochs")
        rounds = set(self.finetune_epochs(epochs))
        d = self.data
        batch = max(1, t.get_int("batch_size"))
        bar = self.log.progress(range(self.epoch, epochs), desc="train", initial=self.epoch, total=epochs)
        for _ in bar:
            if self._stop_requested():
                return False
            i = self.epoch + 1
            if self._renew_epoch(i, epochs):
                self.avatar.renew_means(d.pose, mode=t.get_string("renew_mode"))
                self.log.info("epoch %d: renewed the networks' means (%s)", i, t.get_string("renew_mode"))
            if i in rounds:
                self.finetune_round(i)
            weights = self.loss_weights(i, epochs)
            gen = keyed_generator(self.seed, "train", i)
            frames = torch.randperm(d.num_frames, generator=gen).tolist()
            totals = []
            for f in frames:
                views = self._views_of(gen, t.get_int("views_per_frame"))
                for k in range(0, len(views), batch):
                    terms = self._train_step(f, views[k:k + batch], weights)
                    totals.append(float(terms["total"].detach()))
            self.epoch = i
            self._epochs_this_run += 1
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(totals):.4f}")
            if self.conf.get_int("ckpt_every") > 0 and i % self.conf.get_int("ckpt_every") == 0 and i < epochs:
                self.save()
        return True

    def _train_losses(self, frame: int, views: list[int], weights: dict) -> dict:
        """The weighted reconstruction terms of one joint step (``"total"`` included), with their graph."""
        d = self.data
        out = self.avatar(d.pose[frame], d.trans[frame], d.cameras(frame, views), views, renderer=self.renderer)
        sr, mask = self.sr[frame, views].float(), d.get("mask", frame, views)
        valid = mask * out["coverage"].to(mask.dtype)
        return L.reconstruction_losses(
            out, sr, valid, laplacian=self.ops["laplacian"], edges=self.ops["edges"],
            rest_sq_lengths=self.ops["rest_sq_lengths"], weights_init=self.avatar.weights_init,
            delta_anchor=self.prephase_result.get("delta"), perceptual=self.perceptual, mask=mask, cfg=weights)

    def _train_step(self, frame: int, views: list[int], weights: dict) -> dict:
        t0 = time.time()
        terms = self._train_losses(frame, views, weights)
        self._optimise(self.optimizer, terms)
        self.timing["train_step_s"].append(time.time() - t0)
        return terms
