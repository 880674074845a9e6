"""Pure-PyTorch rasteriser with nvdiffrast's interface (CPU and CUDA, no compiled code).

Conventions (docs/architecture.md, "Renderer"):

* ``clip`` (B, V, 4) are nvdiffrast clip coordinates; pixel ``(row, col)`` has its centre at
  ``x_ndc = (2 col + 1) / W - 1``, ``y_ndc = (2 row + 1) / H - 1`` (no y flip: row 0 is the top row).
* ``rast`` (B, H, W, 4) holds ``(u, v, z/w, triangle_id + 1)``, background all zero; an attribute
  interpolates as ``u a0 + v a1 + (1 - u - v) a2`` with perspective-correct ``u, v``.

The ops live in their own modules (:mod:`utils.render.rasterize`, :mod:`utils.render.interpolate`,
:mod:`utils.render.antialias`, shared helpers in :mod:`utils.render.common`); this module holds
:class:`TorchRenderer`, which binds them to the renderer interface, and re-exports them.
"""

from __future__ import annotations

from utils.render.antialias import DEFAULT_AA_MAX_HOPS, antialias
from utils.render.common import MeshTopology, mesh_topology, pixel_barycentrics
from utils.render.interpolate import interpolate
from utils.render.rasterize import rasterize, visible_vertices


class TorchRenderer:
    """Pure-PyTorch renderer (``backend="torch"``): runs wherever its input tensors live.

    Args:
        aa_max_hops: ``max_hops`` of :func:`antialias` (0 reproduces nvdiffrast's silhouette rule).
    """

    name = "torch"

    def __init__(self, aa_max_hops: int = DEFAULT_AA_MAX_HOPS):
        self.aa_max_hops = int(aa_max_hops)

    def rasterize(self, clip, faces, resolution):
        return rasterize(clip, faces, resolution)

    def interpolate(self, attr, rast, faces, clip=None):
        return interpolate(attr, rast, faces, clip)

    def antialias(self, color, rast, clip, faces):
        return antialias(color, rast, clip, faces, max_hops=self.aa_max_hops)

    def visible_vertices(self, rast, faces, num_verts):
        return visible_vertices(rast, faces, num_verts)

    def __repr__(self) -> str:
        return f"TorchRenderer(aa_max_hops={self.aa_max_hops})"


__all__ = [
    "rasterize",
    "interpolate",
    "antialias",
    "visible_vertices",
    "pixel_barycentrics",
    "mesh_topology",
    "MeshTopology",
    "DEFAULT_AA_MAX_HOPS",
    "TorchRenderer",
]
