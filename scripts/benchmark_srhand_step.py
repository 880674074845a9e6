"""Time one SRHand (main.py) training step and one GIIF fine-tuning step, with peak memory.

The steps are the trainer's own (``trainers.srhand.phases.train_step`` / ``finetune.finetune_step``) on the synthetic
reconstruction subject, set up as ``main.py`` sets them up (data, avatar, SR targets, discriminator),
then moved to the joint phase with the late loss weights (the heaviest). Sizes:

* ``cpu``:   ``conf/synthetic/srhand.conf`` (subdivision 1, 128 px, small networks, CPU GIIF);
* ``paper``: ``conf/ih_GIIF_16_256.conf`` (subdivision 3 = 49,281 vertices, 256 px, paper networks,
  31.9 M-parameter GIIF, fine-tuning batch 8 with chunked gradient checkpointing).

GIIF and the discriminator get random weights of the right size (``models.giif.giif_spec``): the cost
does not depend on the values. Views come from the synthetic subject (its 8 first fitting cameras), so
the paper config runs with 8 views x 2 frames instead of 20 x 20; a step's cost does not depend on
how many views and frames are held.

    python scripts/benchmark_srhand_step.py --size cpu
    python scripts/benchmark_srhand_step.py --size paper --parts train --device cuda

``--compare`` times the reference path and the current one in the same process, interleaved step by
step, and reports medians and their ratio; it also checks that both paths give the same GIIF output,
and the same joint-step losses and gradients. The reference path is every choice of computation set to
its plain version through the objects' own arguments (``trainers.srhand.bundle.reference_models``: the
perceptual loss through the ``stlpips_pytorch`` forward, the discriminator on NCHW activations;
``finetune.masked_decode = false``, no GIIF feature cache; the GIIF training step with
``train.perceptual_impl = package``), plus the plain reference functions of the computations that have no
choice left (SH shading as nine multiply-adds, ``utils.geometry.sh.sh_shade_reference``; the condition
networks' concatenated first layer, ``ConditionNetwork.code_reference``), swapped in for the timed
reference calls only (:func:`retired_paths_as_reference`).
``--parts refine`` (with ``--compare``) times the joint step with MANO refinement (``refine.enabled``: the frame's
offsets in the graph, their regularisers, their Adam step) against the same step without it.
``--profile`` prints the ``torch.profiler`` table of the top 10 operators of each part (and of the GIIF
training step of ``conf/synthetic/giif.conf`` with ``--parts giif_train``).

Prints a table, then one JSON line (the last line). Peak memory: on CUDA ``max_memory_allocated``
around each part; on CPU the process's peak resident set size so far (``ru_maxrss``, which includes
the data and the models, and only grows).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models import registry  # noqa: E402
from models.giif import giif_spec  # noqa: E402
from trainers.gpu_check import fast_path_parity, peak_memory_mib, sync_device, time_steps  # noqa: E402
from trainers.srhand import SRHandTrainer, finetune, phases  # noqa: E402
from trainers.srhand.bundle import reference_models  # noqa: E402
from utils.checkpoint import make_checkpoint, model_entry, save_atomic  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.run_logging import RunLogger  # noqa: E402

SIZES = {
    "cpu": {"conf": "conf/synthetic/srhand.conf", "giif": "cpu", "disc_args": {"num_feat": 16}},
    "paper": {"conf": "conf/ih_GIIF_16_256.conf", "giif": "paper", "disc_args": {}},
}


def _timed_steps(fn, device: torch.device, steps: int) -> tuple[float, float]:
    """(mean seconds of ``steps`` calls after one warm-up call, peak memory in MiB)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return time_steps(fn, device, steps)["step_s"], peak_memory_mib(device)


@contextlib.contextmanager
def retired_paths_as_reference():
    """Inside the block, SH shading and the condition networks' first layer run their plain reference
    functions (the fast versions are the only ones the library uses; the tests prove them equal)."""
    from unittest import mock

    import models.avatar
    from utils.geometry.sh import sh_shade_reference

    with (
        mock.patch.object(models.avatar, "sh_shade", sh_shade_reference),
        mock.patch.object(
            models.avatar.ConditionNetwork, "code", models.avatar.ConditionNetwork.code_reference
        ),
    ):
        yield


def reference_context(ctx):
    """``ctx`` with the fine-tuning step's plain path: every pixel decoded, then masked."""
    s = ctx.settings
    return dataclasses.replace(
        ctx,
        settings=dataclasses.replace(
            s, finetune=dataclasses.replace(s.finetune, masked_decode=False, feature_cache_mib=0)
        ),
    )


def _interleaved(fns: dict, device: torch.device, steps: int) -> dict:
    """Median seconds per call of each function in ``fns``, called in turn ``steps`` times (after a warm-up)."""
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(steps):
        for key, fn in fns.items():
            sync_device(device)
            start = time.perf_counter()
            fn()
            sync_device(device)
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def profile_table(fn, rows: int = 10) -> str:
    """``torch.profiler`` table (self CPU time) of one call of ``fn`` after a warm-up call."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=36)


@torch.no_grad()
def check_finetune_paths(trainer, views: list[int]) -> dict:
    """Max abs difference of the fine-tuning step's masked GIIF output between the reference and fast path."""
    from trainers.srhand.giif_decode import giif_decode, giif_decode_masked

    d, f, giif = trainer.fit.tensors, trainer.ctx.settings.finetune, trainer.models.giif
    lr, normal, mask = d.get("lr", 0, views), d.get("normal", 0, views), d.get("mask", 0, views)
    ref = giif_decode(giif, lr, normal, d.size, f.chunk) * mask
    new = giif_decode_masked(giif, lr, normal, mask, f.chunk) * mask
    return {
        "sr_max_abs_diff": float((ref - new).abs().max()),
        "sr_bitwise_equal": bool(torch.equal(ref, new)),
        "masked_fraction": float(mask.mean()),
    }


def giif_train_step(data: str, device: torch.device, work: Path, perceptual_impl: str = "fast"):
    """One GIIF training step of ``conf/synthetic/giif.conf`` (its first batch: 8 patches of 48 x 48 px), as a
    callable; ``perceptual_impl`` chooses how its perceptual loss is computed."""
    from trainers.giif_trainer import GiifTrainer

    run = work / f"giif_run_{perceptual_impl}"
    conf = load_config(
        REPO / "conf/synthetic/giif.conf",
        [f"data.data_path={data}", "use_tensorboard=false", f"train.perceptual_impl={perceptual_impl}"],
        schema="giif",
    )
    trainer = GiifTrainer(conf, run, device, RunLogger(run, use_tensorboard=False), seed=conf.get_int("seed"))
    trainer.build_data(train=True)
    trainer.build_model()
    trainer.build_optim()
    batch = next(iter(trainer._train_loader()[0]))
    return lambda: trainer.train_step(batch)


def build_trainer(
    size: str, data: str, device: torch.device, work: Path, overrides: list[str], finetune: bool = True
) -> SRHandTrainer:
    """The trainer in its joint phase; without ``finetune`` the SR targets are bicubic (no GIIF decode,
    which at paper size takes most of the set-up time on a CPU)."""
    spec = SIZES[size]
    torch.manual_seed(0)
    normal_size = 256 if size == "paper" else 128
    config = {"data": {"normal_space": "camera", "normal_size": normal_size}}
    save_atomic(
        make_checkpoint("giif", model_entry(registry.make(giif_spec(spec["giif"]))), config=config),
        work / "giif.pth",
    )
    disc = registry.make({"name": "unet_disc_sn", "args": spec["disc_args"]})
    save_atomic(make_checkpoint("disc", model_entry(disc), config=config), work / "disc.pth")
    sets = [
        f"data.data_path={data}",
        "data.num_views=8",
        "data.num_frames=2",
        f"giif_model={work / 'giif.pth'}",
        f"disc_model={work / 'disc.pth'}",
        f"sr_source={'giif_finetuned' if finetune else 'bicubic'}",
        "use_tensorboard=false",
        *overrides,
    ]
    conf = load_config(REPO / spec["conf"], sets, schema="srhand")
    trainer = SRHandTrainer(conf, work / "run", device, RunLogger(work / "run", use_tensorboard=False))
    trainer.build_data()
    trainer.build_models()
    trainer.enter_joint_phase()
    return trainer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=list(SIZES), default="cpu")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=["train", "finetune", "giif_train", "refine"],
        default=["train", "finetune"],
        help="refine: the joint step with MANO refinement (refine.enabled) against the same step without it",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="time the reference path and the current one interleaved in this process",
    )
    parser.add_argument("--profile", action="store_true", help="print the top 10 operators of each part")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per part (after one warm-up step)")
    parser.add_argument("--data", default=str(REPO / "data" / "synthetic"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if not (Path(args.data) / "synthetic_meta.json").is_file():
        raise SystemExit(f"{args.data}: no synthetic captures; run `python scripts/make_synthetic.py` first")
    device = torch.device(args.device)

    overrides = list(args.overrides) + (["refine.enabled=true"] if "refine" in args.parts else [])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(
            args.size, args.data, device, Path(tmp), overrides, finetune="finetune" in args.parts
        )
        ctx, d = trainer.ctx, trainer.fit.tensors
        s = ctx.settings
        ref_ctx, ref_models = reference_context(ctx), reference_models(ctx, trainer.models)
        epochs = s.train.epochs
        rows, parts, checks, profiles = [], {}, {}, {}
        # the joint step's loss weights (last epoch) and view batch, with and without refinement
        weights = phases.loss_weights(s.train, trainer.models.avatar.use_enh, epochs, epochs)
        views = list(range(min(s.train.batch_size, d.num_views)))
        if "train" in args.parts:
            parts["train step"] = (
                views,
                lambda: trainer.train_step(0, views, weights, refine=False),
                lambda: phases.train_step(
                    ref_ctx, ref_models, d, trainer.targets, trainer.state, 0, views, weights
                ),
            )
            checks["train"] = fast_path_parity(trainer, views, weights)
        plain = set()  # parts whose reference is the current code without the part's addition
        if "refine" in args.parts:
            parts["train step + MANO refinement"] = (
                views,
                lambda: trainer.train_step(0, views, weights, refine=True),
                lambda: trainer.train_step(0, views, weights, refine=False),
            )
            plain.add("train step + MANO refinement")
        if "finetune" in args.parts:
            fweights = dict(s.finetune.weights)
            fviews = list(range(min(s.finetune.batch_size, d.num_views)))
            parts["GIIF fine-tuning step"] = (
                fviews,
                lambda: trainer.finetune_step(0, fviews, fweights),
                lambda: finetune.finetune_step(
                    ref_ctx,
                    ref_models,
                    d,
                    trainer.targets,
                    trainer.state,
                    None,
                    0,
                    fviews,
                    fweights,
                    None,
                    None,
                ),
            )
            checks["finetune"] = check_finetune_paths(trainer, fviews)
        extra = {}  # table columns of a part that does not run the SRHand config
        if "giif_train" in args.parts:
            parts["GIIF training step"] = (
                list(range(8)),
                giif_train_step(args.data, device, Path(tmp)),
                giif_train_step(args.data, device, Path(tmp), "package"),
            )
            extra["GIIF training step"] = {"config": "conf/synthetic/giif.conf", "px": 48, "vertices": None}
        for name, (views, fn, ref_fn) in parts.items():
            if args.profile:
                profiles[name] = profile_table(fn)
            if args.compare:

                def ref(ref_fn=ref_fn, name=name):
                    if name in plain:
                        return ref_fn()
                    with retired_paths_as_reference():
                        return ref_fn()

                med = _interleaved({"reference": ref, "current": fn}, device, args.steps)
                rows.append(
                    {
                        "part": name,
                        "views": len(views),
                        "ms": 1000 * med["current"],
                        "reference_ms": 1000 * med["reference"],
                        "ratio": med["current"] / med["reference"],
                        "peak_mib": peak_memory_mib(device),
                        **extra.get(name, {}),
                    }
                )
            else:
                seconds, peak = _timed_steps(fn, device, args.steps)
                rows.append(
                    {
                        "part": name,
                        "views": len(views),
                        "ms": 1000 * seconds,
                        "peak_mib": peak,
                        **extra.get(name, {}),
                    }
                )
        info = {
            "size": args.size,
            "config": SIZES[args.size]["conf"],
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "vertices": trainer.models.avatar.num_verts,
            "resolution": list(d.size),
            "giif_mparams": (
                sum(p.numel() for p in trainer.models.giif.parameters()) / 1e6
                if trainer.models.giif is not None
                else None
            ),
            "rows": rows,
            "checks": checks,
        }
    print(
        f"SRHand steps, {args.size} size ({info['config']}), {info['vertices']} vertices, "
        f"{d.size[0]} px, {device}, {info['threads']} threads"
    )
    for name, table in profiles.items():
        print(f"== {name}: top operators by self CPU time\n{table}")
    for row in rows:
        ref = f"  reference {row['reference_ms']:9.1f} ms  ratio {row['ratio']:.2f}" if "ratio" in row else ""
        print(
            f"  {row['part']:<24} {row['views']} views  {row['ms']:9.1f} ms{ref}   peak {row['peak_mib']:8.0f} MiB"
        )
    for name, check in checks.items():
        print(f"  check {name}: {check}")
    print(json.dumps(info))


if __name__ == "__main__":
    main()
