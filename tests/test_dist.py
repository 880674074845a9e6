"""utils.dist: two CPU processes under torchrun keep identical parameters; single-process no-ops."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from utils import dist

REPO = Path(__file__).resolve().parents[1]


def test_single_process_helpers_are_noops():
    assert dist.world_size() == 1 and dist.rank() == 0 and dist.is_main()
    t = torch.tensor([1.0, 2.0])
    assert dist.all_reduce_mean(t) is t
    model = torch.nn.Linear(2, 2)
    assert dist.wrap_ddp(model, "cpu") is model and dist.unwrap(model) is model
    assert sorted(dist.shard_indices(7, seed=0, epoch=0)) == list(range(7))
    assert dist.shard_indices(7, seed=0, epoch=0) != dist.shard_indices(7, seed=0, epoch=1)
    assert dist.distributed_sampler(list(range(4))) is None
    dist.barrier()
    dist.cleanup()


def test_ddp_two_cpu_processes_stay_in_sync(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(
        PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", TORCH_CPP_LOG_LEVEL="ERROR"
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "tests" / "dist_worker.py"),
        str(tmp_path),
    ]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{k}.pt", weights_only=True) for k in (0, 1))
    for key in r0["sd"]:
        assert torch.equal(r0["sd"][key], r1["sd"][key]), key
    assert r0["world"] == r1["world"] == 2
    assert r0["is_main"] and not r1["is_main"]
    assert r0["mean_rank"] == r1["mean_rank"] == 0.5
    # the two shards cover all 5 indices (padded to 6 by wrapping around)
    assert len(r0["shard"]) == len(r1["shard"]) == 3
    assert set(r0["shard"]) | set(r1["shard"]) == set(range(5))
