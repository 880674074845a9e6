"""Data-parallel training under ``torchrun`` (DistributedDataParallel), and no-ops without it.

    torchrun --nproc_per_node 4 main_giif.py --conf conf/giif.conf

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and the rendezvous address) for each
process. ``init_distributed`` reads them and starts the process group (``nccl`` for CUDA devices,
``gloo`` for CPU); without them (a plain ``python main_giif.py``) nothing is started and every helper
here behaves as a single process: ``is_main()`` is True, ``all_reduce_mean`` returns its input,
``wrap_ddp`` returns the model unchanged.

Conventions for trainers: only rank 0 writes files (``is_main()``); each rank sees a different shard
of the data (``distributed_sampler`` or ``shard_indices``) and a different random stream
(``seed + rank``); the model starts identical on every rank (DDP broadcasts rank 0's parameters).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int
    world_size: int
    local_rank: int
    device: object  # torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def init_distributed(device=None) -> DistInfo:
    """Start the process group when launched by ``torchrun``; a no-op otherwise.

    Args:
        device: the device chosen by ``utils.cli.resolve_device`` (a ``torch.device`` or string).
            A CUDA device is replaced by ``cuda:<LOCAL_RANK>`` and made current.

    Returns:
        ``DistInfo`` with the device this process should use.
    """
    import torch
    import torch.distributed as dist

    device = torch.device(device if device is not None else "cpu")
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if world <= 1:
        return DistInfo(0, 1, 0, device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world, **kwargs)
    return DistInfo(rank, world, local_rank, device)


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    dist = _dist()
    return dist.get_rank() if dist else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    dist = _dist()
    return dist.get_world_size() if dist else 1


def is_main() -> bool:
    """True on rank 0 (the process that writes logs, images and checkpoints)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process (no-op without a process group)."""
    dist = _dist()
    if dist:
        dist.barrier()


def all_reduce_mean(tensor):
    """Mean of ``tensor`` over all processes (a new tensor; the input itself without a process group).

    Use it for logging (losses, metrics), not for gradients: DDP already averages those.
    """
    dist = _dist()
    if not dist:
        return tensor
    reduced = tensor.detach().clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / dist.get_world_size()


def wrap_ddp(model, device, **ddp_kwargs):
    """``DistributedDataParallel(model)`` when running distributed, else ``model`` itself.

    Args:
        model: the network, already on ``device``.
        device: its device; CUDA models get ``device_ids=[index]``.
        ddp_kwargs: passed to DDP (e.g. ``find_unused_parameters=True``).
    """
    import torch
    from torch.nn.parallel import DistributedDataParallel

    if world_size() <= 1:
        return model
    device = torch.device(device)
    if device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [device.index if device.index is not None else 0])
    return DistributedDataParallel(model, **ddp_kwargs)


def unwrap(model):
    """The network inside a DDP wrapper (or the model itself): use it to save checkpoints."""
    return getattr(model, "module", model)


def cleanup() -> None:
    """Destroy the process group, if any (call at the end of the entry script)."""
    dist = _dist()
    if dist:
        dist.destroy_process_group()


def shard_indices(n: int, seed: int = 0, epoch: int = 0, shuffle: bool = True) -> list[int]:
    """This rank's share of ``range(n)`` for one epoch, as ``DistributedSampler`` would give it.

    All ranks draw the same permutation (seeded by ``seed + epoch``), pad it by wrapping around to a
    multiple of the world size, and take every ``world_size``-th entry from their rank, so the shards
    are disjoint (up to the padding) and equally long.
    """
    import torch

    if shuffle:
        generator = torch.Generator().manual_seed(int(seed) + int(epoch))
        order = torch.randperm(n, generator=generator).tolist()
    else:
        order = list(range(n))
    world = world_size()
    total = -(-n // world) * world
    order += order[: total - n] if n else []
    return order[rank() : total : world]


def distributed_sampler(dataset, shuffle: bool = True, seed: int = 0, drop_last: bool = False):
    """A ``DistributedSampler`` when running distributed, else None (let the DataLoader shuffle).

    Call ``sampler.set_epoch(epoch)`` at the start of each epoch so the order changes.
    """
    if world_size() <= 1:
        return None
    from torch.utils.data.distributed import DistributedSampler

    return DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
