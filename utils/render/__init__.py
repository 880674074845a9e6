"""Differentiable mesh rendering with nvdiffrast's split: rasterize, interpolate, antialias.

``get_renderer(backend)`` returns an object with

* ``rasterize(clip (B,V,4), faces (F,3), resolution (H,W)) -> rast (B,H,W,4)`` = ``(u, v, z/w, tri_id+1)``,
* ``interpolate(attr (B,V,C)|(V,C), rast, faces, clip=None) -> (B,H,W,C)``,
* ``antialias(color (B,H,W,C), rast, clip, faces) -> (B,H,W,C)``,
* ``visible_vertices(rast, faces, num_verts) -> (B,V) bool``.

Conventions are in docs/architecture.md ("Renderer") and :mod:`utils.render.torch_backend`. Backends:
``torch`` (pure PyTorch, CPU and CUDA), ``nvdiffrast`` (CUDA, optional) and ``auto`` (nvdiffrast for CUDA
tensors when it imports, torch otherwise; decided per call from the input's device).

What lives here:

* ``torch_backend``: :class:`TorchRenderer` and ``DEFAULT_AA_MAX_HOPS``; re-exports the ops below.
* ``rasterize``: ``rasterize`` (coverage, depth test, barycentrics) and ``visible_vertices``.
* ``interpolate``: ``interpolate`` (perspective-correct, differentiable in attributes and positions).
* ``antialias``: ``antialias`` and its silhouette search.
* ``common``: what those three share: input checks, edge planes, ``pixel_barycentrics``,
  ``mesh_topology``, the per-faces cache and the last raster's per-pixel data (docs/architecture.md).
* ``nvdiffrast_backend``: the optional CUDA backend (imports nvdiffrast lazily).
* ``reference``: slow per-pixel Python references of the three ops, for tests.
* ``mesh_render``: higher-level helpers (attribute, normal-map and mask rendering).

Imports allowed: ``utils.geometry`` and ``utils.image_size``; in detail, ``common`` and ``reference``
import torch only; the op modules import ``common`` (and ``antialias`` NumPy, for its silhouette search;
``rasterize`` and ``nvdiffrast_backend`` ``utils.image_size``, for the resolution); ``torch_backend``
imports the op modules; only ``mesh_render`` imports ``utils.geometry``. Nothing here imports trainers,
models or datasets, and nothing is imported from nvdiffrast at import time.
"""

from __future__ import annotations

import torch

from utils.render.torch_backend import DEFAULT_AA_MAX_HOPS, TorchRenderer

BACKENDS = ("auto", "torch", "nvdiffrast")


class AutoRenderer:
    """Dispatches each call to nvdiffrast for CUDA tensors when it is available, else to the torch backend."""

    name = "auto"

    def __init__(self, aa_max_hops: int = DEFAULT_AA_MAX_HOPS):
        self._torch = TorchRenderer(aa_max_hops)
        self._nvdr = None
        self._nvdr_checked = False

    def _pick(self, x: torch.Tensor):
        if x.device.type == "cuda":
            if not self._nvdr_checked:
                from utils.render import nvdiffrast_backend

                self._nvdr_checked = True
                if nvdiffrast_backend.is_available():
                    self._nvdr = nvdiffrast_backend.NvdiffrastRenderer()
            if self._nvdr is not None:
                return self._nvdr
        return self._torch

    def rasterize(self, clip, faces, resolution):
        return self._pick(clip).rasterize(clip, faces, resolution)

    def interpolate(self, attr, rast, faces, clip=None):
        return self._pick(rast).interpolate(attr, rast, faces, clip)

    def antialias(self, color, rast, clip, faces):
        return self._pick(rast).antialias(color, rast, clip, faces)

    def visible_vertices(self, rast, faces, num_verts):
        return self._pick(rast).visible_vertices(rast, faces, num_verts)

    def __repr__(self) -> str:
        return f"AutoRenderer(aa_max_hops={self._torch.aa_max_hops})"


def get_renderer(backend: str = "auto", aa_max_hops: int = DEFAULT_AA_MAX_HOPS):
    """Renderer for ``backend`` in ``auto | torch | nvdiffrast``.

    Args:
        backend: ``torch`` (pure PyTorch, any device), ``nvdiffrast`` (CUDA; raises ImportError with
            install hints when the package is missing) or ``auto`` (nvdiffrast for CUDA tensors when it
            imports, torch otherwise; never raises for a missing nvdiffrast).
        aa_max_hops: silhouette search depth of the torch backend's ``antialias``: 0 reproduces
            nvdiffrast's rule, the default also finds silhouettes behind sub-pixel contour triangles
            of dense meshes (see :func:`utils.render.torch_backend.antialias`). nvdiffrast always uses
            its own rule, so on dense meshes its silhouette gradients are much weaker.
    """
    if backend == "torch":
        return TorchRenderer(aa_max_hops)
    if backend == "auto":
        return AutoRenderer(aa_max_hops)
    if backend == "nvdiffrast":
        try:
            from utils.render.nvdiffrast_backend import NvdiffrastRenderer

            return NvdiffrastRenderer()
        except ImportError as err:
            raise ImportError(
                "backend='nvdiffrast' needs the nvdiffrast package and a CUDA build of torch "
                "(pip install git+https://github.com/NVlabs/nvdiffrast --no-build-isolation); "
                "use backend='torch' or 'auto' otherwise"
            ) from err
    raise ValueError(f"unknown renderer backend {backend!r}; expected one of {BACKENDS}")


__all__ = ["BACKENDS", "DEFAULT_AA_MAX_HOPS", "AutoRenderer", "TorchRenderer", "get_renderer"]
