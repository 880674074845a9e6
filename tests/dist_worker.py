"""Worker for tests/test_dist.py, started by torchrun: a few DDP steps of a tiny linear model on CPU.

Each rank trains on different data; DDP averages the gradients, so the parameters must stay identical
across ranks. Every rank saves its final state dict and a few helper results to ``<out>/rank<k>.pt``.
"""

import os
import sys
from pathlib import Path

import torch

from utils import dist


def main(out_dir: str) -> None:
    info = dist.init_distributed("cpu")
    torch.manual_seed(1234 + info.rank)  # different init per rank: DDP must broadcast rank 0's
    model = dist.wrap_ddp(torch.nn.Linear(4, 2), info.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data_gen = torch.Generator().manual_seed(100 + info.rank)  # different data per rank
    for _ in range(3):
        x = torch.randn(8, 4, generator=data_gen)
        loss = (model(x) - 1.0).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    mean_rank = dist.all_reduce_mean(torch.tensor(float(info.rank)))
    dist.barrier()
    torch.save(
        {
            "sd": dist.unwrap(model).state_dict(),
            "world": dist.world_size(),
            "is_main": dist.is_main(),
            "mean_rank": mean_rank.item(),
            "shard": dist.shard_indices(5, seed=3, epoch=1),
        },
        Path(out_dir) / f"rank{info.rank}.pt",
    )
    dist.cleanup()


if __name__ == "__main__":
    main(sys.argv[1])
    # Leave without interpreter finalisation: Gloo's worker threads can still be joinable when it runs,
    # and on rare exits (once in this project's many suite runs, 2026-11-29) that aborts the process
    # ("terminate called without an active exception", SIGABRT; pytorch/pytorch#179291 describes the
    # race) after every result above has been written.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
