"""Adaptive fine-tuning of GIIF (paper sec. 3.4.2): every ``finetune.update_term`` epochs of the configured
window, render the current hand, decode SR with gradient, apply the consistency, wavelet and
discriminator losses, step GIIF, then regenerate every SR target.

The functions read the run context, the networks and the fit's tensors; they change GIIF's fine-tuned
parameters (through ``state.giif_optimizer``), the SR targets and the state, as each docstring says.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from trainers import losses as L
from trainers.srhand.bundle import SRHandModels
from trainers.srhand.context import RunContext
from trainers.srhand.giif_decode import giif_decode, giif_decode_masked
from trainers.srhand.refine import fitted_poses, frame_parameters, render_mano_normals
from trainers.srhand.sequence import SequenceData, random_views
from trainers.srhand.settings import SRHandSettings, round_epoch
from trainers.srhand.state import TrainingState
from trainers.srhand.supervision import compared_images
from trainers.srhand.targets import SRTargets, generate_sr
from trainers.srhand.visuals import jet, surface_unconfidence
from utils.run_logging import check_finite
from utils.seeding import keyed_generator

_ENCODERS = ("encoder", "normal_encoder")


class GiifFeatureCache:
    """GIIF's encodings of (frame, views) batches, kept between fine-tuning steps while its encoders are frozen.

    With ``finetune.params = imnet`` (the default) the encoders and their inputs never change, so their
    features are the same at every visit of a batch. An entry is keyed on the encoders' parameter
    versions, so a load or an update recomputes it. At most ``max_mib`` MiB are held; a batch that does
    not fit is encoded at every visit.
    """

    __slots__ = ("max_bytes", "_entries")

    def __init__(self, max_mib: int):
        self.max_bytes = int(max_mib) * 2**20
        self._entries: dict[tuple, tuple] = {}  # (frame, views) -> (encoder versions, GIIFFeatures)

    def features(self, giif, frame: int, views: Sequence[int], lr: torch.Tensor, normal: torch.Tensor):
        """``giif.encode(lr, normal)`` of ``views`` of ``frame``, from the cache when still valid; None while an
        encoder is fine-tuned (the step then encodes with gradient itself)."""
        encoders = [p for n, p in giif.named_parameters() if n.split(".")[0] in _ENCODERS]
        if any(p.requires_grad for p in encoders):
            return None
        versions = tuple(p._version for p in encoders)
        key = (frame, tuple(views))
        entry = self._entries.get(key)
        if entry is not None and entry[0] == versions:
            return entry[1]
        with torch.no_grad():
            feats = giif.encode(lr, normal if giif.use_normal else None)
        if key not in self._entries and self._held_bytes() > self.max_bytes:
            return feats
        self._entries[key] = (versions, feats)
        return feats

    def clear(self) -> None:
        """Forget every entry (the encoders' inputs changed: GIIF's normal maps were re-rendered)."""
        self._entries.clear()

    def _held_bytes(self) -> int:
        return sum(
            t.numel() * t.element_size()
            for _, f in self._entries.values()
            for t in (f.lr_feat, f.lr_flat, f.normal_feat, f.normal_flat, f.lr_image)
            if t is not None
        )


def feature_cache_for(settings: SRHandSettings) -> GiifFeatureCache | None:
    """The cache of ``finetune.feature_cache_mib`` (None when 0)."""
    mib = settings.finetune.feature_cache_mib
    return GiifFeatureCache(mib) if mib > 0 else None


def finetune_epochs(settings: SRHandSettings, epochs: int | None = None) -> list[int]:
    """The 1-based joint-phase epochs (of ``epochs``, default ``train.epochs``) at whose start a round runs."""
    if settings.sr_source != "giif_finetuned":
        return []
    f = settings.finetune
    epochs = settings.train.epochs if epochs is None else epochs
    if f.update_term <= 0 or f.inner_epochs <= 0:
        return []
    lo, hi = round_epoch(f.start, epochs), round_epoch(f.stop, epochs)
    return [i for i in range(1, epochs + 1) if lo <= i < hi and i % f.update_term == 0]


@torch.no_grad()
def vertex_projection(
    ctx: RunContext, models: SRHandModels, data: SequenceData, frame: int, views: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel positions ``uv_pix (B, V, 2)`` and visibility ``(B, V)`` of the avatar's vertices in ``views``
    of ``frame``."""
    batch = max(1, ctx.settings.eval.batch_size)
    avatar = models.avatar
    geo = avatar.forward_geometry(*frame_parameters(models.mano, data, frame))
    uvs, viss = [], []
    for k in range(0, len(views), batch):
        vb = views[k : k + batch]
        out = avatar.render(
            geo["verts_posed"], geo["albedo"], data.cameras(frame, vb), vb, renderer=ctx.renderer
        )
        uvs.append(out["uv_pix"])
        viss.append(out["visible"])
    return torch.cat(uvs), torch.cat(viss)


@torch.no_grad()
def target_unconfidence(
    ctx: RunContext,
    models: SRHandModels,
    data: SequenceData,
    sr: torch.Tensor,
    frames: Sequence[int] | None = None,
) -> dict:
    """Per-vertex colour variance of the SR targets ``sr (F, V, 3, H, W)`` across the views of each frame.

    Returns ``{"mean_var": float, "var": (V,) mean over frames of the vertices seen twice or more}``.
    """
    frames = range(data.num_frames) if frames is None else frames
    total = torch.zeros(models.avatar.num_verts, device=ctx.device)
    count = torch.zeros_like(total)
    values = []
    for f in frames:
        views = data.usable_views(f, range(data.num_views))
        uv, vis = vertex_projection(ctx, models, data, f, views)
        _, var, n = L.vertex_color_stats(sr[f, views].float(), uv, vis)
        seen = n >= 2
        if seen.any():
            values.append(float(var[seen].mean()))
        total += var * seen
        count += seen
    return {"mean_var": float(np.mean(values)) if values else float("nan"), "var": total / count.clamp(min=1)}


def finetune_round(
    ctx: RunContext,
    models: SRHandModels,
    data: SequenceData,
    targets: SRTargets,
    state: TrainingState,
    cache: GiifFeatureCache | None,
    epoch: int,
) -> dict:
    """One adaptive fine-tuning round of GIIF (paper 3.3-3.4.2) at the start of joint epoch ``epoch``, then
    the SR targets regenerated by the fine-tuned GIIF.

    With MANO refinement (``models.mano``), GIIF's normal maps ``data.normal`` are first re-rendered from the
    refined parameters (and ``cache`` cleared), so that the round and the new targets see the hand where it is.

    Changes GIIF's fine-tuned parameters, ``targets.current``, ``state`` (``ft_step``, ``history``, timing),
    ``cache`` and, with refinement, ``data.normal``; writes the round's pictures under ``<run>/finetune``.
    Returns the round's record (also appended to ``state.history``).
    """
    s = ctx.settings
    if models.mano is not None:
        update_normal_maps(ctx, models, data, cache)
    fconf = s.finetune
    round_index = len(state.history)
    gen = keyed_generator(ctx.seed, "finetune", epoch)
    frames = torch.randperm(data.num_frames, generator=gen).tolist()[: max(1, fconf.num_frames)]
    views = random_views(keyed_generator(ctx.seed, "finetune_views"), data.num_views, fconf.num_views)
    batch, inner = max(1, fconf.batch_size), fconf.inner_epochs
    weights = dict(fconf.weights)
    vis_frame = frames[0]
    vis_views = data.usable_views(vis_frame, views)[:batch]
    before = target_unconfidence(ctx, models, data, targets.current)
    sr_before = targets.current[vis_frame, vis_views].float()
    ctx.log.info(
        "epoch %d: GIIF fine-tuning round %d (%d inner epochs x %d frames x %d views), "
        "unconfidence (mean per-vertex variance of the SR targets) %.6f",
        epoch,
        round_index,
        inner,
        len(frames),
        len(views),
        before["mean_var"],
    )
    start = time.time()
    prev_mean = prev_count = None
    inner_vars, inner_means = [], []
    bar = ctx.log.progress(range(inner), desc=f"finetune {round_index}")
    for _ in bar:
        var_sum = torch.zeros(models.avatar.num_verts, device=ctx.device)
        var_cnt = torch.zeros_like(var_sum)
        epoch_terms = defaultdict(list)
        for f in frames:
            frame_views = data.usable_views(f, views)  # black views are not fine-tuned on
            for k in range(0, len(frame_views), batch):
                terms, var, count = finetune_step(
                    ctx,
                    models,
                    data,
                    targets,
                    state,
                    cache,
                    f,
                    frame_views[k : k + batch],
                    weights,
                    prev_mean,
                    prev_count,
                )
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
    targets.current = generate_sr(models.giif, s.sr_source, data, s.eval.batch_size, s.decode_chunk)
    regenerated = time.time()
    after = target_unconfidence(ctx, models, data, targets.current)
    seconds = time.time() - start
    state.timing["sr_regeneration_s"].append(regenerated - steps_done)
    record = {
        "round": round_index,
        "epoch": epoch,
        "unconfidence_before": before["mean_var"],
        "unconfidence_after": after["mean_var"],
        "inner_epoch_mean_var": inner_means,
        "seconds": seconds,
        "step_seconds": steps_done - start,
        "regeneration_seconds": regenerated - steps_done,
    }
    state.history.append(record)
    ctx.log.info(
        "round %d done in %.1f s: unconfidence %.6f -> %.6f (inner epochs: %s)",
        round_index,
        seconds,
        before["mean_var"],
        after["mean_var"],
        ", ".join(f"{v:.6f}" for v in inner_means),
    )
    ctx.log.log_scalars(
        epoch,
        {"unconfidence_before": before["mean_var"], "unconfidence_after": after["mean_var"]},
        prefix="finetune",
    )
    save_round_vis(
        ctx,
        models,
        data,
        targets,
        round_index,
        inner_vars[0],
        inner_vars[-1],
        vis_frame,
        vis_views,
        sr_before,
    )
    return record


def update_normal_maps(
    ctx: RunContext, models: SRHandModels, data: SequenceData, cache: GiifFeatureCache | None
) -> None:
    """Re-render GIIF's normal maps ``data.normal`` from the refined MANO parameters ``models.mano`` and clear
    ``cache`` (its encodings are of the old maps). Changes ``data.normal`` and ``cache``."""
    mano = models.mano
    data.normal = render_mano_normals(
        models.hand_model,
        fitted_poses(mano, data),
        mano.shapes(),
        mano.translations(),
        data,
        ctx.settings.data.normal_space,
    )
    if cache is not None:
        cache.clear()


def finetune_step(
    ctx: RunContext,
    models: SRHandModels,
    data: SequenceData,
    targets: SRTargets,
    state: TrainingState,
    cache: GiifFeatureCache | None,
    frame: int,
    views: list[int],
    weights: dict,
    prev_mean: torch.Tensor | None,
    prev_count: torch.Tensor | None,
):
    """One GIIF step on ``views`` of ``frame`` against the current render (``finetune_losses``).

    ``prev_mean``/``prev_count``: the per-vertex colour statistics of the previous step (pose consistency).
    Changes GIIF's fine-tuned parameters (``state.giif_optimizer``), ``state.ft_step`` and ``cache``.
    Returns the terms (with ``vertex_mean``, ``vertex_count``), and the per-vertex variance and count of
    this step's SR colours across its views.
    """
    t0 = time.time()
    f = ctx.settings.finetune
    avatar, giif = models.avatar, models.giif
    pose, trans, shape_offset = frame_parameters(models.mano, data, frame)
    with torch.no_grad():
        out = avatar(
            pose, trans, data.cameras(frame, views), views, renderer=ctx.renderer, shape_offset=shape_offset
        )
    # The pixels the avatar's losses compare (the MANO silhouette unless data.mask_source widens them), and the
    # render composited over the views' background there, as the losses see it.
    mask = data.get("support", frame, views)
    out, _ = compared_images(out, mask, data.background[views], data.mask_source)
    lr, normal = data.get("lr", frame, views), data.get("normal", frame, views)
    if f.masked_decode:
        # Only the supervised pixels are decoded: the rest is masked to 0 below anyway.
        feats = cache.features(giif, frame, views, lr, normal) if cache is not None else None
        sr = giif_decode_masked(giif, lr, normal, mask, f.chunk, f.checkpoint_chunks, feats=feats)
    else:
        sr = giif_decode(giif, lr, normal, data.size, f.chunk, f.checkpoint_chunks)
    # Masked like the targets: the background carries no signal (and gets no gradient).
    sr = sr * mask
    terms = L.finetune_losses(
        sr,
        targets.original[frame, views].float(),
        out["image"],
        out["uv_pix"],
        out["visible"],
        mask=mask,
        disc=models.disc,
        prev_mean=prev_mean,
        prev_count=prev_count,
        cfg=weights,
    )
    loss_terms = {k: v for k, v in terms.items() if k not in ("vertex_mean", "vertex_count", "unconfidence")}
    check_finite(state.step, loss_terms)
    state.giif_optimizer.zero_grad(set_to_none=True)
    loss_terms["total"].backward()
    state.giif_optimizer.step()
    state.ft_step += 1
    if state.ft_step % max(1, ctx.settings.log_every) == 0:
        ctx.log.log_losses(state.ft_step, {k: v.detach() for k, v in loss_terms.items()}, prefix="finetune")
    _, var, count = L.vertex_color_stats(sr.detach(), out["uv_pix"], out["visible"])
    state.timing["finetune_step_s"].append(time.time() - t0)
    return terms, var, count


@torch.no_grad()
def save_round_vis(
    ctx: RunContext,
    models: SRHandModels,
    data: SequenceData,
    targets: SRTargets,
    round_index: int,
    var_first: torch.Tensor,
    var_last: torch.Tensor,
    frame: int,
    views: list[int],
    sr_before: torch.Tensor,
) -> None:
    """Unconfidence before/after a round: OBJs of the canonical mesh coloured by the per-vertex variance of
    the first and last inner epoch, and a PNG of one frame: SR targets and their per-vertex variance across
    the views drawn on the surface, before | after the round. Writes under ``<run>/finetune``."""
    from utils.geometry.mesh_io import save_obj
    from utils.image_io import make_grid, write_image

    folder = ctx.run_dir / "finetune"
    scale = float(ctx.settings.finetune.weights["unconf_scale"])
    avatar = models.avatar
    geo = avatar.forward_geometry(*frame_parameters(models.mano, data, frame))
    for tag, var in (("first", var_first), ("last", var_last)):
        save_obj(
            folder / f"round{round_index:02d}_unconfidence_{tag}.obj",
            geo["verts_canonical"].cpu(),
            avatar.faces.cpu(),
            jet((scale * var).clamp(0, 1)).cpu(),
        )
    out = avatar.render(
        geo["verts_posed"], geo["albedo"], data.cameras(frame, views), views, renderer=ctx.renderer
    )
    sr_after = targets.current[frame, views].float()
    tiles, labels = [], []
    for name, sr in (("before", sr_before), ("after", sr_after)):
        _, var, _ = L.vertex_color_stats(sr, out["uv_pix"], out["visible"])
        unconf = surface_unconfidence(ctx.renderer, var, out["rast"], avatar.faces, scale)
        for b in range(sr.shape[0]):
            tiles += [sr[b], unconf[b]]
            labels += [f"SR {name}", f"U {name}"]
    write_image(
        folder / f"round{round_index:02d}_unconfidence.png",
        make_grid(tiles, labels, ncols=2 * sr_before.shape[0]),
    )
