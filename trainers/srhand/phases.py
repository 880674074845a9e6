"""The reconstruction phases of SRHand (``docs/srhand_model.md``, "Trainer"): the albedo and shape-from-
shading pre-phases on the first frame, then the joint phase over all frames, which runs the adaptive
fine-tuning rounds of :mod:`trainers.srhand.finetune` inside its window.

Every function reads the run context, the networks, the fit's tensors and the SR targets it is given,
and changes only what its docstring names: the networks' parameters through the optimisers of the
:class:`~trainers.srhand.state.TrainingState`, and that state.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from trainers import losses as L
from trainers.srhand.bundle import SRHandModels
from trainers.srhand.context import RunContext
from trainers.srhand.finetune import GiifFeatureCache, finetune_epochs, finetune_round
from trainers.srhand.refine import check_refinement, fitted_poses, frame_parameters, refinement_terms
from trainers.srhand.sequence import SequenceData, random_views
from trainers.srhand.settings import SRHandSettings, TrainSettings, round_epoch
from trainers.srhand.state import PHASES, TrainingState
from trainers.srhand.supervision import compared_images
from trainers.srhand.targets import SRTargets
from utils.run_logging import check_finite
from utils.seeding import keyed_generator


def stop_requested(settings: SRHandSettings, state: TrainingState) -> bool:
    """Whether this process has run its ``stop_after_epochs``."""
    return 0 <= settings.stop_after_epochs <= state.epochs_this_run


def advance_phase(ctx: RunContext, models: SRHandModels, state: TrainingState) -> None:
    """Move ``state`` to the next phase (after sfs, hand the pre-phase result to the avatar first) and
    make that phase's optimiser."""
    if state.phase == "sfs":
        finish_prephase(ctx, models, state)
    state.phase = PHASES[PHASES.index(state.phase) + 1]
    if state.phase != "done":  # "done" keeps the last training epoch, for the record
        state.epoch = 0
    state.make_phase_optimizer(ctx.settings, models)
    ctx.log.info("phase %s", state.phase)


def optimise(
    ctx: RunContext,
    optimizers: torch.optim.Optimizer | list[torch.optim.Optimizer],
    terms: dict,
    state: TrainingState,
) -> None:
    """One step of ``optimizers`` on ``terms["total"]`` (checked finite); counts it in ``state.step`` and logs
    the terms every ``log_every`` steps."""
    check_finite(state.step, terms)
    optimizers = list(optimizers) if isinstance(optimizers, list | tuple) else [optimizers]
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    for optimizer in optimizers:
        optimizer.step()
    state.step += 1
    if state.step % max(1, ctx.settings.log_every) == 0:
        ctx.log.log_losses(state.step, {k: v.detach() for k, v in terms.items()}, prefix=state.phase)


def _end_epoch(
    ctx: RunContext, state: TrainingState, i: int, epochs: int, bar, save: Callable[[], None], **postfix
) -> None:
    """Count epoch ``i`` as done; checkpoint every ``ckpt_every`` epochs inside the phase."""
    state.epoch = i
    state.epochs_this_run += 1
    if hasattr(bar, "set_postfix"):
        bar.set_postfix(**postfix)
    every = ctx.settings.ckpt_every
    if every > 0 and i % every == 0 and i < epochs:
        save()


# ---- pre-phases ---------------------------------------------------------------------------------
def run_prephase(
    ctx: RunContext,
    models: SRHandModels,
    data: SequenceData,
    targets: SRTargets,
    state: TrainingState,
    save: Callable[[], None],
) -> bool:
    """The rest of the current pre-phase (``albedo`` or ``sfs``): every epoch, all views of frame 0 in
    random batches. Changes ``state`` (its pre-phase tensors through ``pre_optimizer``); ``save`` writes
    a checkpoint. Returns False when stopped early (``stop_after_epochs``)."""
    pconf = ctx.settings.prephase(state.phase)
    epochs, batch = pconf.epochs, max(1, pconf.batch_size)
    bar = ctx.log.progress(range(state.epoch, epochs), desc=state.phase, initial=state.epoch, total=epochs)
    for _ in bar:
        if stop_requested(ctx.settings, state):
            return False
        i = state.epoch + 1
        views = random_views(keyed_generator(ctx.seed, state.phase, i), data.num_views, usable=data.usable[0])
        for k in range(0, len(views), batch):
            terms = prephase_step(ctx, models, data, targets, state, views[k : k + batch], i, epochs)
        _end_epoch(ctx, state, i, epochs, bar, save, total=f"{float(terms['total'].detach()):.4f}")
    return True


def prephase_step(
    ctx: RunContext,
    models: SRHandModels,
    data: SequenceData,
    targets: SRTargets,
    state: TrainingState,
    views: list[int],
    i: int,
    epochs: int,
) -> dict:
    """One pre-phase step on ``views`` of frame 0 at epoch ``i`` of ``epochs``; changes ``state``. Returns the
    weighted terms."""
    t0 = time.time()
    frame, avatar, phase = 0, models.avatar, state.phase
    verts_canon = avatar.verts_template + (state.pre["delta"] if phase == "sfs" else 0.0)
    posed = avatar.pose_vertices(verts_canon, avatar.weights_init, data.pose[frame], data.trans[frame])
    albedo = torch.sigmoid(state.pre["albedo_logits"])
    out = avatar.render(
        posed, albedo, data.cameras(frame, views), views, renderer=ctx.renderer, sh_coeffs=state.pre["sh"]
    )
    sr = targets.current[frame, views].float()
    out, valid = compared_images(
        out, data.get("support", frame, views), data.background[views], data.mask_source
    )
    c = ctx.settings.prephase(phase)
    terms = {
        "photometric": c.photometric * L.masked_l1(out["image"], sr, valid),
        "albedo_prior": c.albedo_prior * L.mean_albedo_prior(albedo),
    }
    if phase == "sfs":
        boost = c.lap_boost if i > round_epoch(c.lap_boost_at, epochs) else 1.0
        lap = models.ops["laplacian"]
        terms["lap_delta"] = boost * c.lap_delta * L.part_aware_laplacian_loss(state.pre["delta"], lap)
        terms["lap_verts"] = boost * c.lap_verts * L.part_aware_laplacian_loss(verts_canon, lap, keep="lower")
        terms["lap_albedo"] = c.lap_albedo * L.part_aware_laplacian_loss(albedo, lap)
        terms["edge"] = c.edge * L.edge_stretch_loss(
            verts_canon, models.ops["edges"], models.ops["rest_sq_lengths"]
        )
    terms["total"] = sum(terms.values())
    optimise(ctx, state.pre_optimizer, terms, state)
    state.timing[f"{phase}_step_s"].append(time.time() - t0)
    return terms


@torch.no_grad()
def finish_prephase(ctx: RunContext, models: SRHandModels, state: TrainingState) -> None:
    """Start the pose-conditioned networks at the pre-phase result (``HandAvatar.set_prephase``): sets
    ``state.prephase_result``, changes the avatar's means, writes ``prephase.obj``."""
    from utils.geometry.mesh_io import save_obj

    delta = state.pre["delta"].detach().clone()
    albedo = torch.sigmoid(state.pre["albedo_logits"]).detach().clone()
    sh = state.pre["sh"].detach().clone()
    state.prephase_result = {"delta": delta, "albedo": albedo, "sh": sh}
    avatar = models.avatar
    avatar.set_prephase(delta=delta, albedo=albedo, sh_coeffs=sh)
    save_obj(
        ctx.run_dir / "prephase.obj", (avatar.verts_template + delta).cpu(), avatar.faces.cpu(), albedo.cpu()
    )
    ctx.log.info(
        "pre-phases done: |delta| mean %.3f mm, albedo mean %s; canonical mesh -> prephase.obj",
        float(delta.norm(dim=-1).mean()) * 1000,
        [round(float(x), 3) for x in albedo.mean(0)],
    )


# ---- joint phase --------------------------------------------------------------------------------
def renew_epoch(train: TrainSettings, i: int, epochs: int) -> bool:
    """Whether the networks' means are renewed at the start of epoch ``i`` (reference 351, 401, ... of 620)."""
    every = train.renew_means_every
    return every > 0 and i >= round_epoch(train.renew_means_start, epochs) and i % every == 1 % every


def loss_weights(train: TrainSettings, use_enh: bool, i: int, epochs: int) -> dict:
    """The reconstruction-loss weights of epoch ``i`` of ``epochs`` (schedule of the reference, see the schema)."""
    w = dict(train.losses)
    if not use_enh:
        w["mean_texture"] = 0.0  # plain XHand
    if i >= round_epoch(train.late_start, epochs):
        w["photometric"] *= train.late_photometric_scale
        if use_enh:
            w["lap_delta"] = train.late_lap_delta
    return w


def run_joint_phase(
    ctx: RunContext,
    models: SRHandModels,
    data: SequenceData,
    targets: SRTargets,
    state: TrainingState,
    cache: GiifFeatureCache | None,
    save: Callable[[], None],
) -> bool:
    """The rest of the joint phase: every epoch, all frames in random order, each with its views in random
    batches; the fine-tuning rounds at their epochs (:func:`finetune_epochs`) and the networks' mean
    renewals. Changes the avatar (through ``state.optimizer``), GIIF and ``targets`` (in the rounds) and
    ``state``; ``save`` writes a checkpoint. Returns False when stopped early (``stop_after_epochs``)."""
    t = ctx.settings.train
    epochs, batch = t.epochs, max(1, t.batch_size)
    rounds = set(finetune_epochs(ctx.settings, epochs))
    bar = ctx.log.progress(range(state.epoch, epochs), desc="train", initial=state.epoch, total=epochs)
    for _ in bar:
        if stop_requested(ctx.settings, state):
            return False
        i = state.epoch + 1
        if renew_epoch(t, i, epochs):
            models.avatar.renew_means(fitted_poses(models.mano, data), mode=t.renew_mode)
            ctx.log.info("epoch %d: renewed the networks' means (%s)", i, t.renew_mode)
        if i in rounds:
            finetune_round(ctx, models, data, targets, state, cache, i)
        weights = loss_weights(t, models.avatar.use_enh, i, epochs)
        refine = refining(ctx.settings, models, i, epochs)
        gen = keyed_generator(ctx.seed, "train", i)
        frames = torch.randperm(data.num_frames, generator=gen).tolist()
        totals = []
        for f in frames:
            views = random_views(gen, data.num_views, t.views_per_frame, usable=data.usable[f])
            for k in range(0, len(views), batch):
                terms = train_step(
                    ctx, models, data, targets, state, f, views[k : k + batch], weights, refine
                )
                totals.append(float(terms["total"].detach()))
        if refine:  # before the epoch's checkpoint: a diverged fit is not saved over the last good one
            check_refinement(models.mano, ctx.settings.refine, data.frame_ids)
        _end_epoch(ctx, state, i, epochs, bar, save, loss=f"{np.mean(totals):.4f}")
    return True


def refining(settings: SRHandSettings, models: SRHandModels, i: int, epochs: int) -> bool:
    """Whether the MANO parameters move in joint epoch ``i`` of ``epochs`` (``refine.start``)."""
    return models.mano is not None and i > round_epoch(settings.refine.start, epochs)


def train_losses(
    ctx: RunContext,
    models: SRHandModels,
    data: SequenceData,
    targets: SRTargets,
    prephase_result: dict,
    frame: int,
    views: list[int],
    weights: dict,
    refine: bool = False,
) -> dict:
    """The weighted reconstruction terms of one joint step (``"total"`` included), with their graph; with
    ``refine``, through the frame's refined MANO parameters, plus their regularisers
    (:func:`trainers.srhand.refine.refinement_terms`). Changes nothing."""
    avatar = models.avatar
    pose, trans, shape_offset = frame_parameters(models.mano, data, frame, grad=refine)
    out = avatar(
        pose, trans, data.cameras(frame, views), views, renderer=ctx.renderer, shape_offset=shape_offset
    )
    sr, mask = targets.current[frame, views].float(), data.get("mask", frame, views)
    out, valid = compared_images(
        out, data.get("support", frame, views), data.background[views], data.mask_source
    )
    ops = models.ops
    terms = L.reconstruction_losses(
        out,
        sr,
        valid,
        laplacian=ops["laplacian"],
        edges=ops["edges"],
        rest_sq_lengths=ops["rest_sq_lengths"],
        weights_init=avatar.weights_init,
        delta_anchor=prephase_result.get("delta"),
        perceptual=models.perceptual,
        mask=mask,
        cfg=weights,
    )
    if refine:
        extra = refinement_terms(models.mano, frame, ctx.settings.refine)
        terms.update(extra)
        terms["total"] = terms["total"] + sum(extra.values())
    return terms


def train_step(
    ctx: RunContext,
    models: SRHandModels,
    data: SequenceData,
    targets: SRTargets,
    state: TrainingState,
    frame: int,
    views: list[int],
    weights: dict,
    refine: bool = False,
) -> dict:
    """One joint step on ``views`` of ``frame``: the avatar's parameters move (``state.optimizer``) and, with
    ``refine``, the frame's MANO offsets and the shape offset (``state.mano_optimizer``); ``state`` counts it.
    Returns the weighted terms."""
    t0 = time.time()
    terms = train_losses(ctx, models, data, targets, state.prephase_result, frame, views, weights, refine)
    optimise(ctx, [state.optimizer, state.mano_optimizer] if refine else state.optimizer, terms, state)
    state.timing["train_step_s"].append(time.time() - t0)
    return terms
