"""Switches for the fast paths of the training steps, so that each can be compared with its reference.

A fast path computes the same function as a plainer reference path (values and gradients equal up to
float rounding; the tests compare the two) with less arithmetic or fewer passes over memory. Every one
is on by default; :func:`reference_paths` turns some or all of them off for a block, which is how
``scripts/benchmark_srhand_step.py --compare`` times old and new in the same process.

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

from contextlib import contextmanager

FAST_PATHS = (
    "perceptual_trunk", "shared_perceptual_target", "condition_first_layer", "sh_matmul", "disc_channels_last",
)
_disabled: set[str] = set()


def enabled(name: str) -> bool:
    """Whether the fast path ``name`` (one of :data:`FAST_PATHS`) is on."""
    if name not in FAST_PATHS:
        raise KeyError(f"unknown fast path {name!r}; known: {', '.join(FAST_PATHS)}")
    return name not in _disabled


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
