"""Mesh rendering helpers on top of a renderer: attribute images, masks, normal maps, visible vertices.

All take world-space vertices and :class:`utils.geometry.camera.Cameras`. ``verts_world`` is ``(B, V, 3)`` with
``B`` the number of cameras (one mesh per view), or ``(1, V, 3)`` / ``(V, 3)`` for one mesh seen by every
camera. ``resolution`` defaults to ``cameras.image_size``; another value renders the same field of view at
that pixel count.

Layouts: :func:`render_attributes` returns raster-native ``(B, H, W, C)`` tensors (like nvdiffrast);
:func:`render_mask` and :func:`render_normal_map` return network layout ``(B, 1, H, W)`` /
``(B, 3, H, W)`` (docs/architecture.md, "Units and frames").
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from utils.geometry.camera import DEFAULT_NEAR, Cameras
from utils.geometry.mesh import vertex_normals


def render_attributes(
    renderer,
    verts_world: torch.Tensor,
    faces: torch.Tensor,
    cameras: Cameras,
    resolution=None,
    attrs: dict | None = None,
    antialias: Iterable[str] = (),
    near: float = DEFAULT_NEAR,
) -> dict:
    """Rasterise a mesh in every camera and interpolate per-vertex attributes (one interpolate call).

    Args:
        renderer: from :func:`utils.render.get_renderer`.
        verts_world: (B, V, 3), (1, V, 3) or (V, 3) vertices, world, metres.
        faces: (F, 3) int.
        cameras: B cameras.
        resolution: ``(H, W)``; default ``cameras.image_size``.
        attrs: name -> (B, V, C) or (V, C) per-vertex attributes.
        antialias: names of attributes to antialias at silhouettes (gives them silhouette gradients).
        near: near plane in metres.
    Returns:
        dict with ``clip`` (B, V, 4), ``rast`` (B, H, W, 4), ``valid`` (B, H, W) bool (pixel centre
        covered), ``mask`` (B, H, W, 1) antialiased coverage (differentiable w.r.t. the vertices; in
        [0, 1] except where blends from several sides add up, e.g. a one-pixel gap between fingers),
        and one (B, H, W, C) image per attribute, 0 on the background.
    """
    attrs = dict(attrs or {})
    antialias = set(antialias)
    unknown = antialias - set(attrs)
    if unknown:
        raise ValueError(f"antialias names {sorted(unknown)} are not in attrs {sorted(attrs)}")
    verts = cameras.batch_points(verts_world, "verts_world")
    res = tuple(resolution) if resolution is not None else cameras.image_size
    faces = faces.to(device=verts.device, dtype=torch.long)
    clip = cameras.to(device=verts.device, dtype=verts.dtype).to_clip(verts, near=near)
    rast = renderer.rasterize(clip, faces, res)
    valid = rast[..., 3] > 0
    out = {"clip": clip, "rast": rast, "valid": valid}
    names = list(attrs)
    images = {}
    if names:
        bsz, num_verts = verts.shape[:2]
        tensors = []
        for name in names:
            a = attrs[name]
            a = a[None] if a.dim() == 2 else a
            if a.dim() != 3 or a.shape[1] != num_verts or a.shape[0] not in (1, bsz):
                raise ValueError(
                    f"attribute {name!r} must be ({bsz}, {num_verts}, C) or ({num_verts}, C), "
                    f"got {tuple(attrs[name].shape)}"
                )
            tensors.append(a.to(clip.dtype).expand(bsz, -1, -1))
        flat = renderer.interpolate(torch.cat(tensors, -1), rast, faces, clip=clip)
        images = dict(zip(names, flat.split([t.shape[-1] for t in tensors], dim=-1), strict=True))
    # One antialias call for the coverage and every attribute that asks for it.
    aa_names = [n for n in names if n in antialias]
    stacked = torch.cat([valid[..., None].to(clip.dtype)] + [images[n] for n in aa_names], -1)
    blended = renderer.antialias(stacked, rast, clip, faces)
    parts = blended.split([1] + [images[n].shape[-1] for n in aa_names], dim=-1)
    out["mask"] = parts[0]
    images.update(zip(aa_names, parts[1:], strict=True))
    out.update((n, images[n]) for n in names)
    return out


def render_mask(
    renderer,
    verts_world: torch.Tensor,
    faces: torch.Tensor,
    cameras: Cameras,
    resolution=None,
    antialias: bool = True,
    near: float = DEFAULT_NEAR,
) -> torch.Tensor:
    """Silhouette mask.

    Returns:
        (B, 1, H, W): antialiased coverage with silhouette gradients (``antialias=True``; see
        :func:`render_attributes` for its range), or the hard {0, 1} mask of covered pixel centres.
    """
    out = render_attributes(renderer, verts_world, faces, cameras, resolution, near=near)
    mask = out["mask"] if antialias else out["valid"][..., None].to(out["clip"].dtype)
    return mask.permute(0, 3, 1, 2).contiguous()


def render_normal_map(
    renderer,
    verts_world: torch.Tensor,
    faces: torch.Tensor,
    cameras: Cameras,
    resolution=None,
    space: str = "camera",
    antialias: bool = False,
    near: float = DEFAULT_NEAR,
) -> torch.Tensor:
    """Normal map from area-weighted vertex normals (:func:`utils.geometry.mesh.vertex_normals`), interpolated and
    re-normalised per pixel.

    Args:
        space: ``camera`` (OpenCV camera axes: surfaces facing the camera have n_z < 0) or ``world``.
        antialias: blend normals at silhouettes (edge pixels then hold shorter vectors).
    Returns:
        (B, 3, H, W) unit normals on covered pixels, 0 elsewhere.
    """
    if space not in ("camera", "world"):
        raise ValueError(f"space must be 'camera' or 'world', got {space!r}")
    verts = cameras.batch_points(verts_world, "verts_world")
    normals = vertex_normals(verts, faces.to(verts.device).long())
    if space == "camera":
        R = cameras.R.to(device=verts.device, dtype=verts.dtype)
        normals = sum(normals[..., k : k + 1] * R[:, None, :, k] for k in range(3))  # R n, elementwise
    out = render_attributes(renderer, verts, faces, cameras, resolution, attrs={"normal": normals}, near=near)
    nmap = out["normal"]
    nmap = nmap / nmap.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    nmap = nmap * out["valid"][..., None]
    if antialias:
        nmap = renderer.antialias(nmap, out["rast"], out["clip"], faces.to(verts.device).long())
    return nmap.permute(0, 3, 1, 2).contiguous()


def visible_vertices(
    renderer,
    verts_world: torch.Tensor,
    faces: torch.Tensor,
    cameras: Cameras,
    resolution=None,
    near: float = DEFAULT_NEAR,
) -> torch.Tensor:
    """(B, V) bool: vertices of triangles that own at least one pixel in each camera."""
    verts = cameras.batch_points(verts_world, "verts_world")
    res = tuple(resolution) if resolution is not None else cameras.image_size
    faces = faces.to(device=verts.device, dtype=torch.long)
    with torch.no_grad():
        clip = cameras.to(device=verts.device, dtype=verts.dtype).to_clip(verts.detach(), near=near)
        rast = renderer.rasterize(clip, faces, res)
        return renderer.visible_vertices(rast, faces, verts.shape[1])


render_mesh_attributes = render_attributes  # the name docs/architecture.md uses

__all__ = [
    "render_attributes",
    "render_mesh_attributes",
    "render_mask",
    "render_normal_map",
    "visible_vertices",
]
