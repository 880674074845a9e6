"""Per-view preprocessing: the hand crop, intrinsics update, LR degradation, masks and normal maps.

Conventions (docs/architecture.md): pixel centres at +0.5, so a continuous image coordinate ``u``
spans ``[0, W]`` and pixel index ``i`` covers ``[i, i+1)``. A crop box is ``(x0, y0, side)`` in
continuous raw-image pixels: the square ``[x0, x0+side] x [y0, y0+side]``. Warping that square to an
output of ``(h, w)`` pixels maps ``u' = (u - x0) * w / side`` and ``v' = (v - y0) * h / side``; the
intrinsics follow the same map (``fx' = fx * w / side``, ``cx' = (cx - x0) * w / side``).

The crop protocol is the reference one (SRHand ``cut_img``): the square is centred on the bounding box
of the projected MANO vertices and its side is ``max(box_w, box_h) / 0.8`` so that the hand fills
80 % of it; the image is warped bilinearly with a black border.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from datasets.lr_camera import LRCamera, camera_degrade
from utils.errors import InputError
from utils.geometry.camera import crop_affine_cv2, crop_intrinsics
from utils.image_size import image_hw

DEGRADATIONS = ("nearest", "area", "bicubic", "camera")


# ----------------------------------------------------------------------------------------------
# Crop box, warp, intrinsics
# ----------------------------------------------------------------------------------------------


def square_crop_box(uv_pix, ratio: float = 0.8) -> np.ndarray:
    """Square crop box around 2D points so that their bounding box fills ``ratio`` of its side.

    Args:
        uv_pix: (N, 2) continuous pixel coordinates (u right, v down) of the projected vertices.
        ratio: fraction of the box side covered by the larger side of the points' bounding box.

    Returns:
        (3,) float64 ``[x0, y0, side]`` in raw-image pixels; may extend past the image border.
    """
    uv = np.asarray(uv_pix.detach().cpu() if torch.is_tensor(uv_pix) else uv_pix, dtype=np.float64)
    if uv.ndim != 2 or uv.shape[-1] != 2 or len(uv) == 0:
        raise ValueError(f"square_crop_box expects (N, 2) points with N > 0, got shape {uv.shape}")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must lie in (0, 1], got {ratio}")
    lo, hi = uv.min(0), uv.max(0)
    centre = 0.5 * (lo + hi)
    side = max(float((hi - lo).max()), 1e-6) / ratio
    return np.array([centre[0] - side / 2, centre[1] - side / 2, side])


def warp_to_crop(image: np.ndarray, box, out_size, interpolation: str = "linear") -> np.ndarray:
    """Warp the square ``box`` of ``image`` to ``out_size = (h, w)`` (black outside the image).

    Args:
        image: (H, W) or (H, W, C) numpy array (any dtype OpenCV warps: uint8, float32).
        box: ``(x0, y0, side)`` continuous raw pixels.
        interpolation: ``linear`` (the reference), ``cubic``, ``nearest`` or ``area`` (``area`` box-
            filters first when the crop shrinks the image, then warps bilinearly; useful for masks
            and for large raw images).
    Returns:
        (h, w[, C]) array of the input dtype.
    """
    import cv2

    h, w = image_hw(out_size)
    image = np.ascontiguousarray(image)
    if interpolation == "area":
        shrink = float(box[2]) / max(h, w)
        if shrink > 1.5:
            k = int(round(shrink))
            image = cv2.blur(image, (k, k))
        interpolation = "linear"
    flags = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}
    if interpolation not in flags:
        raise ValueError(f"interpolation must be one of linear, cubic, nearest, area; got {interpolation!r}")
    out = cv2.warpAffine(
        image,
        crop_affine_cv2(box, (h, w)),
        (w, h),
        flags=flags[interpolation],
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    if image.ndim == 3 and out.ndim == 2:  # OpenCV drops a trailing singleton channel
        out = out[..., None]
    return out


# ----------------------------------------------------------------------------------------------
# LR degradation
# ----------------------------------------------------------------------------------------------


def lr_size_for_scale(hr_size, scale: float) -> tuple[int, int]:
    """LR size ``(round(H / scale), round(W / scale))`` (at least 1 pixel) for a possibly non-integer scale."""
    h, w = image_hw(hr_size)
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return max(1, int(round(h / scale))), max(1, int(round(w / scale)))


def degrade(
    hr: torch.Tensor,
    size=None,
    scale: float | None = None,
    mode: str = "nearest",
    camera: LRCamera | None = None,
    generators: Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """Downsample an HR image to an LR one with a chosen degradation.

    Args:
        hr: (B, C, H, W) or (C, H, W) float tensor, values in [0, 1].
        size: LR size, an int or ``(h, w)``; give exactly one of ``size`` and ``scale``.
        scale: downsampling factor ``H / h`` (any positive float; the size is rounded).
        mode: ``nearest`` (what the reference code does: ``F.interpolate`` default, takes the pixel at
            ``floor(i * H / h)``, aliased), ``bicubic`` (antialiased bicubic as PIL/LIIF, clamped to
            [0, 1]), ``area`` (exact box-filter average over the footprint of each LR pixel; exact
            for non-integer factors too) or ``camera`` (PSF blur, area sampling, Poisson-Gaussian noise,
            JPEG with per-image random parameters: ``datasets.lr_camera``).
        camera: the parameter ranges of ``camera`` (required for it, ignored otherwise).
        generators: for ``camera``, one CPU ``torch.Generator`` per image (``B``, or 1 for a ``(C, H, W)``
            input) that draws its parameters and noise: seeded per training step, or from the image's
            identity for a reproducible evaluation (``datasets.lr_camera.identity_seed``).

    Returns:
        LR tensor with the input's leading layout, ``(B, C, h, w)`` or ``(C, h, w)``.
    """
    if (size is None) == (scale is None):
        raise ValueError("give exactly one of size and scale")
    if hr.dim() not in (3, 4):
        raise ValueError(f"degrade expects (B, C, H, W) or (C, H, W), got shape {tuple(hr.shape)}")
    squeeze = hr.dim() == 3
    x = hr[None] if squeeze else hr
    H, W = x.shape[-2:]
    h, w = lr_size_for_scale((H, W), scale) if size is None else image_hw(size)
    if mode == "nearest":
        out = F.interpolate(x, size=(h, w), mode="nearest")
    elif mode == "bicubic":
        out = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=(h < H or w < W))
        out = out.clamp(0.0, 1.0)
    elif mode == "area":
        Ah = area_resample_matrix(H, h, dtype=x.dtype, device=x.device)
        Aw = area_resample_matrix(W, w, dtype=x.dtype, device=x.device)
        out = torch.einsum("ih,bchw,jw->bcij", Ah, x, Aw)
    elif mode == "camera":
        if camera is None or generators is None:
            raise ValueError(
                "degrade(mode='camera') needs camera= (LRCamera) and generators= (one per image)"
            )
        out, _ = camera_degrade(x, (h, w), camera, generators)
    else:
        raise InputError(f"mode must be one of {DEGRADATIONS}, got {mode!r}")
    return out[0] if squeeze else out


def area_resample_matrix(n_in: int, n_out: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """(n_out, n_in) matrix of 1D box-filter weights: row ``i`` averages input over
    ``[i * n_in / n_out, (i + 1) * n_in / n_out)`` weighted by overlap (rows sum to 1).

    Upsampling (n_out > n_in) gives nearest-like piecewise-constant interpolation with exact overlaps.
    """
    edges_out = torch.arange(n_out + 1, dtype=torch.float64) * (n_in / n_out)
    lo = torch.maximum(edges_out[:-1, None], torch.arange(n_in, dtype=torch.float64)[None])
    hi = torch.minimum(edges_out[1:, None], torch.arange(1, n_in + 1, dtype=torch.float64)[None])
    overlap = (hi - lo).clamp_min(0.0)
    overlap = overlap / overlap.sum(1, keepdim=True)
    return overlap.to(dtype=dtype, device=device)


# ----------------------------------------------------------------------------------------------
# Masks and normal maps from the MANO mesh
# ----------------------------------------------------------------------------------------------


def render_mask_and_normals(
    verts_world: torch.Tensor,
    faces: torch.Tensor,
    K: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    size,
    normal_space: str = "camera",
    antialias: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rasterise a mesh to a binary mask and a normal map in one pass.

    Args:
        verts_world: (B, V, 3) vertices, world frame, metres.
        faces: (F, 3) long.
        K: (B, 3, 3) intrinsics of the *output* image (e.g. the cropped K), pixels.
        R, t: (B, 3, 3), (B, 3) world-to-camera (OpenCV).
        size: output ``(h, w)``.
        normal_space: ``camera`` (default: OpenCV camera axes, +z forward, so visible surfaces have
            n_z < 0) or ``world`` (what the reference code feeds GIIF).
        antialias: also antialias the normal channels at the silhouette as the reference does; the
            edge pixels then hold shorter vectors. Off by default so the map is unit length wherever
            the mask is 1.

    Returns:
        mask (B, 1, h, w) float in {0, 1} (pixel centre covered), normal_map (B, 3, h, w): unit vectors
        inside the mask, 0 outside.
    """
    from utils.geometry.camera import Cameras
    from utils.geometry.mesh import vertex_normals
    from utils.render import get_renderer

    if normal_space not in ("camera", "world"):
        raise InputError(f"normal_space must be 'camera' or 'world', got {normal_space!r}")
    h, w = image_hw(size)
    renderer = get_renderer(backend)
    cams = Cameras(K=K, R=R, t=t, image_size=(h, w), names=[str(i) for i in range(K.shape[0])])
    clip = cams.to_clip(verts_world)
    faces = faces.to(device=verts_world.device, dtype=torch.long)
    rast = renderer.rasterize(clip, faces, (h, w))
    normals = vertex_normals(verts_world, faces)
    if normal_space == "camera":
        normals = torch.einsum("bij,bvj->bvi", R.to(normals.dtype), normals)
    mask = (rast[..., 3:4] > 0).to(verts_world.dtype)
    nmap = renderer.interpolate(normals, rast, faces)
    nmap = F.normalize(nmap, dim=-1, eps=1e-8) * mask
    if antialias:
        nmap = renderer.antialias(nmap, rast, clip, faces)
    return mask.permute(0, 3, 1, 2).contiguous(), nmap.permute(0, 3, 1, 2).contiguous()


__all__ = [
    "DEGRADATIONS",
    "square_crop_box",
    "crop_intrinsics",
    "warp_to_crop",
    "lr_size_for_scale",
    "degrade",
    "area_resample_matrix",
    "render_mask_and_normals",
]
