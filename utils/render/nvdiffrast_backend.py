"""nvdiffrast backend (CUDA only): a thin wrapper with the interface of :mod:`utils.render.torch_backend`.

``nvdiffrast`` is imported on first use, never at import time. Its documented API (nvdiffrast.torch):
``RasterizeCudaContext(device)``, ``rasterize(ctx, pos (B,V,4) f32, tri (F,3) i32, resolution) ->
(rast, rast_db)``, ``interpolate(attr, rast, tri) -> (out, out_da)``, ``antialias(color, rast, pos, tri,
topology_hash=None)`` and ``antialias_construct_topology_hash(tri)``; all inputs contiguous, on the GPU.

Differences from the torch backend (documented so that parity tests know what to expect):

* nvdiffrast's ``rast`` is itself differentiable w.r.t. ``clip`` (its ``interpolate`` passes position
  gradients through it), so ``interpolate(..., clip=None)`` already carries position gradients here;
  passing ``clip`` is accepted and changes nothing.
* nvdiffrast clips triangles crossing ``w = 0`` geometrically where the torch backend culls them, and it
  snaps vertices to a fixed-point grid with a top-left fill rule, so pixels exactly on an edge can go to
  the other triangle.
* Float32 only: inputs of other dtypes are converted and the outputs converted back.
"""

from __future__ import annotations

import torch

from utils.image_size import image_hw


def is_available() -> bool:
    """True when ``nvdiffrast.torch`` imports and CUDA is available."""
    if not torch.cuda.is_available():
        return False
    try:
        import nvdiffrast.torch  # noqa: F401
    except Exception:  # any import failure (missing package, broken build) means "not available"
        return False
    return True


class NvdiffrastRenderer:
    """nvdiffrast backend (``backend="nvdiffrast"``); one CUDA rasterisation context per device."""

    name = "nvdiffrast"

    def __init__(self):
        import nvdiffrast.torch as dr

        self._dr = dr
        self._contexts: dict = {}
        self._topology: dict = {}

    def _context(self, device: torch.device):
        if device.type != "cuda":
            raise ValueError(f"the nvdiffrast backend needs CUDA tensors, got a tensor on {device}")
        if device not in self._contexts:
            self._contexts[device] = self._dr.RasterizeCudaContext(device=device)
        return self._contexts[device]

    def rasterize(self, clip: torch.Tensor, faces: torch.Tensor, resolution) -> torch.Tensor:
        """See :func:`utils.render.torch_backend.rasterize`."""
        if clip.dim() != 3 or clip.shape[-1] != 4:
            raise ValueError(f"clip must have shape (B, V, 4), got {tuple(clip.shape)}")
        h, w = image_hw(resolution, "resolution")
        rast, _ = self._dr.rasterize(
            self._context(clip.device), clip.float().contiguous(), faces.int().contiguous(), resolution=(h, w)
        )
        return rast.to(clip.dtype)

    def interpolate(
        self, attr: torch.Tensor, rast: torch.Tensor, faces: torch.Tensor, clip: torch.Tensor | None = None
    ) -> torch.Tensor:
        """See :func:`utils.render.torch_backend.interpolate` (``clip`` is not needed here)."""
        if attr.dim() == 2:
            attr = attr[None]
        if attr.shape[0] != rast.shape[0]:
            attr = attr.expand(rast.shape[0], -1, -1)
        out, _ = self._dr.interpolate(
            attr.float().contiguous(), rast.float().contiguous(), faces.int().contiguous()
        )
        return out.to(attr.dtype)

    def antialias(
        self, color: torch.Tensor, rast: torch.Tensor, clip: torch.Tensor, faces: torch.Tensor
    ) -> torch.Tensor:
        """See :func:`utils.render.torch_backend.antialias`."""
        tri = faces.int().contiguous()
        # The topology hash depends on the faces only: reuse it while the faces stay equal (by value).
        cached = self._topology.get("last")
        if (
            cached is not None
            and cached[0].shape == tri.shape
            and cached[0].device == tri.device
            and torch.equal(cached[0], tri)
        ):
            topo = cached[1]
        else:
            topo = self._dr.antialias_construct_topology_hash(tri)
            self._topology["last"] = (tri.clone(), topo)
        out = self._dr.antialias(
            color.float().contiguous(),
            rast.float().contiguous(),
            clip.float().contiguous(),
            tri,
            topology_hash=topo,
        )
        return out.to(color.dtype)

    def visible_vertices(self, rast: torch.Tensor, faces: torch.Tensor, num_verts: int) -> torch.Tensor:
        """See :func:`utils.render.torch_backend.visible_vertices`."""
        from utils.render.torch_backend import visible_vertices

        return visible_vertices(rast.detach(), faces, num_verts)

    def __repr__(self) -> str:
        return "NvdiffrastRenderer()"


__all__ = ["is_available", "NvdiffrastRenderer"]
