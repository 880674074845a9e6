"""Networks: LR encoder (RDN), normal encoder (stacked hourglass), GIIF/LIIF, U-Net discriminator.

``import models`` is cheap: it loads the registry only. The network modules are imported by
``models.make`` on first use, or on attribute access (``models.GIIF``).
"""

from __future__ import annotations

import importlib

from models.registry import make, model_spec, register, registered_names

__all__ = ["make", "model_spec", "register", "registered_names"]

# Public classes, imported on first attribute access.
_LAZY = {
    "RDN": "models.rdn",
    "HGFilter": "models.hourglass",
    "GIIF": "models.giif",
    "LIIF": "models.giif",
    "MLP": "models.giif",
    "UNetDiscriminatorSN": "models.discriminator",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
