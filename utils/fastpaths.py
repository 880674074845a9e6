"""Switches for the fast paths of the training steps, so that each can be compared with its reference.

A fast path computes the same function as a plainer reference path (values and gradients equal up to
float rounding; the tests compare the two) with less arithmetic or fewer passes over memory. Every one
is on by default; :func:`reference_paths` turns some or all of them off for a block, which is how
``scripts/benchmark_srhand_step.py --compare`` times old and new in the same process. For a whole run,
the environment variable ``SRHAND_REFERENCE_PATHS`` (``all``, or names separated by commas) turns them off,
e.g. ``SRHAND_REFERENCE_PATHS=all python main.py ...`` to rule the fast paths out when chasing a bug.

==========================  ==================================================================================
name                        what it does
==========================  ==================================================================================
``perceptual_trunk``        ST-LPIPS-alex through :class:`utils.metrics.perceptual_fast.FastSTLPIPS`
                            (channels-last activations; on CPU a GEMM for the first convolution's input
                            gradient) instead of the ``stlpips_pytorch`` module's own forward
``shared_perceptual_target`` the reconstruction step encodes its SR target once for its two perceptual
                            terms (photometric and mean-texture), instead of once per term
``condition_first_layer``   the per-vertex condition networks apply their first layer's pose part once per
                            frame and broadcast it, instead of multiplying the pose by every vertex's row
``sh_matmul``               SH shading as one batched matrix product instead of nine multiply-adds
``disc_channels_last``      the U-Net discriminator runs on channels-last activations (NCHW otherwise)
==========================  ==================================================================================
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager

FAST_PATHS = (
    "perceptual_trunk", "shared_perceptual_target", "condition_first_layer", "sh_matmul", "disc_channels_last",
)
ENV_VAR = "SRHAND_REFERENCE_PATHS"
_disabled: set[str] = set()
_from_env: frozenset[str] | None = None  # read once, on the first query


def from_environment(value: str | None) -> frozenset[str]:
    """The fast paths that ``SRHAND_REFERENCE_PATHS=value`` turns off (``all`` or comma-separated names)."""
    names = {n.strip() for n in (value or "").split(",") if n.strip()}
    if "all" in names:
        return frozenset(FAST_PATHS)
    unknown = sorted(names - set(FAST_PATHS))
    if unknown:
        raise ValueError(f"{ENV_VAR}={value!r}: unknown fast paths {unknown}; use 'all' or some of "
                         f"{', '.join(FAST_PATHS)}")
    return frozenset(names)


def enabled(name: str) -> bool:
    """Whether the fast path ``name`` (one of :data:`FAST_PATHS`) is on."""
    global _from_env
    if name not in FAST_PATHS:
        raise KeyError(f"unknown fast path {name!r}; known: {', '.join(FAST_PATHS)}")
    if _from_env is None:
        _from_env = from_environment(os.environ.get(ENV_VAR))
        if _from_env:
            warnings.warn(f"{ENV_VAR}: reference paths for {', '.join(sorted(_from_env))}", stacklevel=2)
    return name not in _disabled and name not in _from_env


@contextmanager
def reference_paths(*names: str):
    """Within the block, use the reference path for ``names`` (every fast path when none is given)."""
    names = names or FAST_PATHS
    unknown = [n for n in names if n not in FAST_PATHS]
    if unknown:
        raise KeyError(f"unknown fast paths {unknown}; known: {', '.join(FAST_PATHS)}")
    added = set(names) - _disabled
    _disabled.update(added)
    try:
        yield
    finally:
        _disabled.difference_update(added)
