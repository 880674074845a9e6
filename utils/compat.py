"""Compatibility shims for third-party packages, kept in one place.

torchvision on a CPU-only torch
-------------------------------
The only torchvision release pinned to torch 2.13.0 (0.28.0) is published as a CUDA build. With the
CPU build of torch its compiled extension cannot load, and ``import torchvision`` then fails inside
``torchvision/_meta_registrations.py``, which registers fake kernels for the ``torchvision::nms``
and ``torchvision::qnms`` operators without checking that they exist::

    RuntimeError: operator torchvision::nms does not exist

``import_torchvision()`` retries the import after declaring those two operator schemas, which is
enough for the pure-Python parts (``torchvision.models``, ``transforms``, ``utils``) and therefore for
``lpips``. The compiled ops (``nms``, ``roi_align``, ``deform_conv2d``) and ``torchvision.io`` stay
unavailable; the project uses OpenCV for image I/O. When the first import succeeds (any CUDA install,
or a torchvision whose extension loads) nothing is changed.
"""

from __future__ import annotations

import sys

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # keeps the torch.library registration alive for the life of the process


def _declare_missing_ops() -> None:
    global _library
    import torch

    if _library is not None:
        return
    _library = torch.library.Library("torchvision", "DEF")
    for name, schema in _SCHEMAS.items():
        try:
            torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        except RuntimeError:
            _library.define(schema)


def import_torchvision():
    """Import and return ``torchvision``, working around the CPU-torch failure described above."""
    try:
        import torchvision

        return torchvision
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _declare_missing_ops()
    import torchvision

    return torchvision


def import_lpips():
    """Import and return the ``lpips`` package (which imports torchvision at module level)."""
    import_torchvision()
    import lpips

    return lpips
