"""Time one SRHand (main.py) training step and one GIIF fine-tuning step, with peak memory.

The steps are the trainer's own (``SRHandTrainer._train_step`` / ``_finetune_step``) on the synthetic
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

Prints a table, then one JSON line (the last line). Peak memory: on CUDA ``max_memory_allocated``
around each part; on CPU the process's peak resident set size so far (``ru_maxrss``, which includes
the data and the models, and only grows).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models import registry  # noqa: E402
from models.giif import giif_spec  # noqa: E402
from trainers.srhand import SRHandTrainer  # noqa: E402
from utils.checkpoint import make_checkpoint, model_entry, save_atomic  # noqa: E402
from utils.config import conf_to_dict, load_config  # noqa: E402
from utils.run_logging import RunLogger  # noqa: E402

SIZES = {
    "cpu": {"conf": "conf/synthetic/srhand.conf", "giif": "cpu", "disc_args": {"num_feat": 16}},
    "paper": {"conf": "conf/ih_GIIF_16_256.conf", "giif": "paper", "disc_args": {}},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timed_steps(fn, device: torch.device, steps: int) -> tuple[float, float]:
    """(mean seconds of ``steps`` calls after one warm-up call, peak memory in MiB)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / steps, _peak_mb(device)


def build_trainer(size: str, data: str, device: torch.device, work: Path, overrides: list[str],
                  finetune: bool = True) -> SRHandTrainer:
    """The trainer in its joint phase; without ``finetune`` the SR targets are bicubic (no GIIF decode,
    which at paper size takes most of the set-up time on a CPU)."""
    spec = SIZES[size]
    torch.manual_seed(0)
    normal_size = 256 if size == "paper" else 128
    config = {"data": {"normal_space": "camera", "normal_size": normal_size}}
    save_atomic(make_checkpoint("giif", model_entry(registry.make(giif_spec(spec["giif"]))), config=config),
                work / "giif.pth")
    disc = registry.make({"name": "unet_disc_sn", "args": spec["disc_args"]})
    save_atomic(make_checkpoint("disc", model_entry(disc), config=config), work / "disc.pth")
    sets = [f"data.data_path={data}", "data.num_views=8", "data.num_frames=2", f"giif_model={work / 'giif.pth'}",
            f"disc_model={work / 'disc.pth'}", f"sr_source={'giif_finetuned' if finetune else 'bicubic'}",
            "use_tensorboard=false", *overrides]
    conf = load_config(REPO / spec["conf"], sets, schema="srhand")
    trainer = SRHandTrainer(conf, work / "run", device, RunLogger(work / "run", use_tensorboard=False))
    trainer.build_data()
    trainer.build_models()
    # The joint phase, as after the pre-phases (the pre-phase result is the initial one).
    trainer.phase = "train"
    trainer._finish_prephase()
    trainer._make_phase_optimizer()
    return trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=list(SIZES), default="cpu")
    parser.add_argument("--parts", nargs="+", choices=["train", "finetune"], default=["train", "finetune"])
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

    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(args.size, args.data, device, Path(tmp), args.overrides,
                                finetune="finetune" in args.parts)
        conf, d = trainer.conf, trainer.data
        epochs = conf.get_int("train.epochs")
        rows = []
        if "train" in args.parts:
            batch = conf.get_int("train.batch_size")
            weights = trainer.loss_weights(epochs, epochs)
            views = list(range(min(batch, d.num_views)))
            seconds, peak = _timed_steps(lambda: trainer._train_step(0, views, weights), device, args.steps)
            rows.append({"part": "train step", "views": len(views), "ms": 1000 * seconds, "peak_mib": peak})
        if "finetune" in args.parts:
            batch = conf.get_int("finetune.batch_size")
            weights = conf_to_dict(conf, "finetune.weights")
            views = list(range(min(batch, d.num_views)))
            seconds, peak = _timed_steps(lambda: trainer._finetune_step(0, views, weights, None, None), device,
                                         args.steps)
            rows.append({"part": "GIIF fine-tuning step", "views": len(views), "ms": 1000 * seconds, "peak_mib": peak})
        info = {"size": args.size, "config": SIZES[args.size]["conf"], "device": str(device),
                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                "vertices": trainer.avatar.num_verts, "resolution": list(d.size),
                "giif_mparams": sum(p.numel() for p in trainer.giif.parameters()) / 1e6 if trainer.giif else None,
                "rows": rows}
    print(f"SRHand steps, {args.size} size ({info['config']}), {info['vertices']} vertices, "
          f"{d.size[0]} px, {device}, {info['threads']} threads")
    for row in rows:
        print(f"  {row['part']:<24} {row['views']} views  {row['ms']:9.1f} ms   peak {row['peak_mib']:8.0f} MiB")
    print(json.dumps(info))


if __name__ == "__main__":
    main()
