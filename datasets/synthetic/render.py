"""Rendering a mesh from the rig's cameras: supersampled, SH-shaded, box-filtered (antialiased).

Works with any ``utils.render`` backend (``auto`` by default); black background; optional
camera-space normal maps.
"""

from __future__ import annotations

import torch


def render_views(
    verts_world: torch.Tensor,
    faces: torch.Tensor,
    albedo: torch.Tensor,
    K,
    R,
    t,
    raw_size,
    sh_coeffs,
    supersample: int = 2,
    with_normals: bool = False,
    renderer=None,
    views_per_pass: int = 4,
) -> dict:
    """Render a mesh from V cameras, supersampled and box-filtered.

    Args:
        verts_world: (N, 3) float32 world vertices, metres.
        faces: (F, 3) long.
        albedo: (N, 3) RGB in [0, 1].
        K, R, t: (V,3,3), (V,3,3), (V,3) tensors (raw image intrinsics).
        raw_size: ``(H, W)``.
        sh_coeffs: (V, 27) SH lighting per camera (world-space normals, ``utils.geometry.sh`` convention).
        supersample: integer factor.
        with_normals: also return camera-space normal maps.
        views_per_pass: cameras rasterised together (bounds memory; small batches are faster on CPU).

    Returns:
        dict: ``image (V,H,W,3)`` RGB in [0,1] (black background), ``coverage (V,H,W)`` fraction of
        covered subsamples, optionally ``normal_map (V,H,W,3)`` (camera space, unit where covered).
    """
    from utils.geometry.camera import Cameras
    from utils.geometry.mesh import vertex_normals
    from utils.geometry.sh import sh_shade
    from utils.render import get_renderer

    renderer = renderer or get_renderer("auto")
    H, W = raw_size
    s = int(supersample)
    scale = torch.tensor([[s, 0, 0], [0, s, 0], [0, 0, 1]], dtype=K.dtype, device=K.device)
    verts = verts_world[None]
    attrs = torch.cat([albedo.to(verts.dtype), vertex_normals(verts, faces)[0]], -1)
    pool = torch.nn.functional.avg_pool2d
    outputs = []
    for start in range(0, len(K), views_per_pass):
        sl = slice(start, start + views_per_pass)
        cams = Cameras(K=scale @ K[sl], R=R[sl], t=t[sl], image_size=(H * s, W * s))
        rast = renderer.rasterize(cams.to_clip(verts), faces, (H * s, W * s))
        pix = renderer.interpolate(attrs, rast, faces)
        covered = rast[..., 3] > 0
        n = torch.nn.functional.normalize(pix[..., 3:6], dim=-1, eps=1e-8)
        color = torch.zeros_like(pix[..., :3])
        # Shade covered samples only (the background is most of the image).
        b, y, x = torch.nonzero(covered, as_tuple=True)
        for v in range(len(cams)):
            sel = b == v
            irradiance = sh_shade(n[v, y[sel], x[sel]][None], sh_coeffs[start + v][None].to(n.dtype))[0]
            color[v, y[sel], x[sel]] = (pix[v, y[sel], x[sel], :3] * irradiance).clamp(0.0, 1.0)
        cov = covered.to(verts.dtype)
        out = {
            "image": pool(color.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1),
            "coverage": pool(cov[:, None], s)[:, 0],
        }
        if with_normals:
            n_cam = torch.einsum("vij,vhwj->vhwi", R[sl].to(n.dtype), n) * cov[..., None]
            n_cam = pool(n_cam.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1)
            covered_px = out["coverage"][..., None] > 0
            out["normal_map"] = torch.nn.functional.normalize(n_cam, dim=-1, eps=1e-8) * covered_px
        outputs.append(out)
    return {k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}
