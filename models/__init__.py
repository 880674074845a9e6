"""Networks: LR encoder (RDN), normal encoder (stacked hourglass), GIIF/LIIF, U-Net discriminator.

``import models`` imports the registry and the network modules below, which registers every network
(``models.make({"name": "giif", ...})``): this import list is the one list of the models. It loads
torch, but no weights, no optional package and no file. The hand avatar (:mod:`models.avatar`) is not a
registered network and is imported on its own.

Imports allowed: ``models``, ``utils``; nothing here imports ``datasets`` or ``trainers``.
"""

from __future__ import annotations

from models.discriminator import UNetDiscriminatorSN
from models.giif import GIIF, LIIF, MLP
from models.hourglass import HGFilter
from models.rdn import RDN
from models.registry import lookup, make, model_spec, register, registered_names

__all__ = [
    "GIIF",
    "HGFilter",
    "LIIF",
    "MLP",
    "RDN",
    "UNetDiscriminatorSN",
    "lookup",
    "make",
    "model_spec",
    "register",
    "registered_names",
]
