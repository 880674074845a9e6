"""Pinhole cameras and every conversion between camera conventions, in one place.

Conventions (docs/architecture.md, "Cameras"):

* OpenCV pinhole: ``x_cam = R @ x_world + t``; camera axes +x right, +y down, +z forward; lengths in
  metres.
* Pixels: ``u = fx * X/Z + s * Y/Z + cx``, ``v = fy * Y/Z + cy`` (``s`` = skew, usually 0). Pixel centres
  sit at ``+0.5``: pixel ``i`` covers ``[i, i+1)``, so the continuous image spans ``[0, W] x [0, H]`` and
  row 0 is the top image row.
* Clip space follows nvdiffrast with **no y flip**: ``x_ndc = 2u/W - 1``, ``y_ndc = 2v/H - 1``, depth
  ``z_ndc = 1 - 2 near / Z`` (near plane at ``z_ndc = -1``, infinite far plane at ``z_ndc = 1``, larger is
  farther) and ``w = Z``. The 4x4 camera-to-clip matrix is

      [[2fx/W, 2s/W,  2cx/W - 1,  0      ],
       [0,     2fy/H, 2cy/H - 1,  0      ],
       [0,     0,     1,          -2 near],
       [0,     0,     1,          0      ]]

  applied to column vectors ``[X, Y, Z, 1]``.
* InterHand2.6M stores ``campos`` (camera centre, world, millimetres) and ``camrot`` (world-to-camera
  rotation, OpenCV axes): ``R = camrot``, ``t = -R @ campos / 1000``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from utils.errors import InputError
from utils.image_size import image_hw

DEFAULT_NEAR = 0.1  # metres; the reference renderer's near plane


def _as_tensor(x, dtype=None, device=None) -> torch.Tensor:
    if torch.is_tensor(x):
        return x.to(dtype=dtype or x.dtype, device=device or x.device)
    return torch.as_tensor(np.asarray(x), dtype=dtype or torch.float32, device=device)


def _apply(M: torch.Tensor, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ M^T (+ t)`` per camera: M (N, r, 3), x (N, V, 3), t (N, r) -> (N, V, r).

    Written elementwise on purpose: ``einsum``/``bmm`` on these small matrices enter the BLAS thread
    pool, which costs milliseconds per call on a loaded CPU with several threads.
    """
    out = x[..., 0:1] * M[:, None, :, 0] + x[..., 1:2] * M[:, None, :, 1] + x[..., 2:3] * M[:, None, :, 2]
    return out if t is None else out + t[:, None]


def _check_shape(name: str, x: torch.Tensor, shape: tuple) -> None:
    """Raise ValueError unless ``x.shape`` matches ``shape`` (None = any size on that axis)."""
    ok = x.dim() == len(shape) and all(s is None or s == d for s, d in zip(shape, x.shape, strict=True))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")


@dataclass
class Cameras:
    """A batch of N OpenCV pinhole cameras sharing one image size.

    Attributes:
        K: (N, 3, 3) intrinsics in pixels (pixel centres at +0.5).
        R: (N, 3, 3) world-to-camera rotations.
        t: (N, 3) world-to-camera translations, metres (``x_cam = R x_world + t``).
        image_size: ``(H, W)`` in pixels.
        names: N camera names (default ``"0", "1", ...``).

    Example:
        >>> cams = Cameras(K=torch.eye(3)[None], R=torch.eye(3)[None], t=torch.zeros(1, 3), image_size=(4, 4))
        >>> cams.project(torch.tensor([[[0.0, 0.0, 1.0]]]))[0]
        tensor([[[0., 0.]]])
    """

    K: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    image_size: tuple[int, int]
    names: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.K = _as_tensor(self.K)
        self.R = _as_tensor(self.R, dtype=self.K.dtype, device=self.K.device)
        self.t = _as_tensor(self.t, dtype=self.K.dtype, device=self.K.device)
        _check_shape("Cameras.K", self.K, (None, 3, 3))
        n = self.K.shape[0]
        _check_shape("Cameras.R", self.R, (n, 3, 3))
        _check_shape("Cameras.t", self.t, (n, 3))
        self.image_size = image_hw(self.image_size)
        self.names = [str(i) for i in range(n)] if not self.names else [str(s) for s in self.names]
        if len(self.names) != n:
            raise ValueError(f"Cameras.names has {len(self.names)} entries for {n} cameras")

    # ---- container protocol -------------------------------------------------------------------

    def __len__(self) -> int:
        return self.K.shape[0]

    @property
    def num_views(self) -> int:
        return self.K.shape[0]

    @property
    def device(self) -> torch.device:
        return self.K.device

    @property
    def dtype(self) -> torch.dtype:
        return self.K.dtype

    def __getitem__(self, idx) -> Cameras:
        """Cameras ``idx`` (int, slice, list of ints or index tensor); an int keeps the batch axis."""
        if isinstance(idx, (int, np.integer)):
            idx = [int(idx)]
        if isinstance(idx, slice):
            names = self.names[idx]
        else:
            idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
            names = [self.names[i] for i in idx.tolist()]
            idx = idx.to(self.device)
        return Cameras(K=self.K[idx], R=self.R[idx], t=self.t[idx], image_size=self.image_size, names=names)

    def to(self, device=None, dtype=None) -> Cameras:
        """Copy on ``device`` / with float ``dtype``."""
        kw = {"device": device, "dtype": dtype}
        return Cameras(
            K=self.K.to(**kw),
            R=self.R.to(**kw),
            t=self.t.to(**kw),
            image_size=self.image_size,
            names=list(self.names),
        )

    # ---- geometry -----------------------------------------------------------------------------

    def batch_points(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """Points as (N, V, 3) for the N cameras: accepts (V, 3), (1, V, 3) or (N, V, 3) (ValueError naming
        ``name`` otherwise)."""
        if not torch.is_tensor(x):
            raise ValueError(f"{name} must be a tensor, got {type(x).__name__}")
        if x.dim() == 2:
            x = x[None]
        if x.dim() != 3 or x.shape[-1] != 3 or x.shape[0] not in (1, len(self)):
            raise ValueError(
                f"{name} must have shape (V, 3), (1, V, 3) or ({len(self)}, V, 3) for "
                f"{len(self)} cameras, got {tuple(x.shape)}"
            )
        return x.expand(len(self), -1, -1)

    def world_to_cam(self, x_world: torch.Tensor) -> torch.Tensor:
        """World points to camera frame.

        Args:
            x_world: (N, V, 3), (1, V, 3) or (V, 3) points, world, metres.
        Returns:
            (N, V, 3) points in each camera's OpenCV frame, metres.
        """
        x = self.batch_points(x_world, "x_world")
        return _apply(self.R.to(x.dtype), x, self.t.to(x.dtype))

    def cam_to_world(self, x_cam: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`world_to_cam`: (N, V, 3) camera-frame points -> (N, V, 3) world points."""
        x = self.batch_points(x_cam, "x_cam")
        return _apply(self.R.to(x.dtype).transpose(1, 2), x - self.t.to(x.dtype)[:, None])

    def project(self, x_world: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project world points to continuous pixel coordinates.

        Args:
            x_world: (N, V, 3), (1, V, 3) or (V, 3) points, world, metres.
        Returns:
            uv_pix: (N, V, 2) ``(u, v)`` pixels, pixel centres at +0.5 (meaningless where depth <= 0).
            depth: (N, V) camera-frame Z in metres (positive in front of the camera).
        """
        x_cam = self.world_to_cam(x_world)
        depth = x_cam[..., 2]
        uvw = _apply(self.K.to(x_cam.dtype), x_cam)
        return uvw[..., :2] / depth[..., None], depth

    def unproject(self, uv_pix: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`project`: (N, V, 2) pixels and (N, V) depths (m) -> (N, V, 3) world points."""
        _check_shape("uv_pix", uv_pix, (len(self), None, 2))
        _check_shape("depth", depth, (len(self), uv_pix.shape[1]))
        uv1 = torch.cat([uv_pix, torch.ones_like(uv_pix[..., :1])], dim=-1)
        rays = _apply(torch.linalg.inv(self.K.to(uv_pix.dtype)), uv1)
        return self.cam_to_world(rays * depth[..., None])

    def centres(self) -> torch.Tensor:
        """(N, 3) camera centres in world coordinates, metres (``-R^T t``)."""
        return -torch.einsum("nji,nj->ni", self.R, self.t)

    def projection_matrix(self, near: float = DEFAULT_NEAR) -> torch.Tensor:
        """(N, 4, 4) camera-to-clip matrices (module docstring), for column vectors ``[X, Y, Z, 1]``."""
        h, w = self.image_size
        K = self.K
        P = torch.zeros(len(self), 4, 4, dtype=K.dtype, device=K.device)
        P[:, 0, 0] = 2 * K[:, 0, 0] / w
        P[:, 0, 1] = 2 * K[:, 0, 1] / w
        P[:, 0, 2] = 2 * K[:, 0, 2] / w - 1
        P[:, 1, 1] = 2 * K[:, 1, 1] / h
        P[:, 1, 2] = 2 * K[:, 1, 2] / h - 1
        P[:, 2, 2] = 1
        P[:, 2, 3] = -2 * near
        P[:, 3, 2] = 1
        return P

    def world_to_clip_matrix(self, near: float = DEFAULT_NEAR) -> torch.Tensor:
        """(N, 4, 4) world-to-clip matrices ``P @ [R | t]``."""
        Rt = torch.zeros(len(self), 4, 4, dtype=self.K.dtype, device=self.K.device)
        Rt[:, :3, :3] = self.R
        Rt[:, :3, 3] = self.t
        Rt[:, 3, 3] = 1
        return self.projection_matrix(near) @ Rt

    def to_clip(self, x_world: torch.Tensor, near: float = DEFAULT_NEAR, check: bool = True) -> torch.Tensor:
        """World points to nvdiffrast clip space for rendering.

        Args:
            x_world: (N, V, 3), (1, V, 3) or (V, 3) mesh vertices, world, metres.
            near: near-plane distance in metres (> 0).
            check: raise when a camera sees every vertex at ``Z <= near`` (nothing could be drawn: almost
                always a wrong R/t, e.g. millimetres for metres or a camera-to-world matrix).
        Returns:
            (N, V, 4) clip coordinates ``(x, y, z, w)`` with ``w = Z``.
        """
        if not near > 0:
            raise ValueError(f"near must be positive, got {near}")
        x_cam = self.world_to_cam(x_world)
        if check and x_cam.shape[1] > 0:
            behind = (x_cam[..., 2] <= near).all(dim=1)
            if bool(behind.any()):
                i = int(behind.nonzero()[0, 0])
                zmax = float(x_cam[i, :, 2].max())
                raise InputError(
                    f"camera {i} ({self.names[i]!r}): all {x_cam.shape[1]} vertices lie at "
                    f"Z <= near = {near} m (max Z = {zmax:.4g} m); check R, t and units (metres)"
                )
        P = self.projection_matrix(near).to(x_cam.dtype)
        return _apply(P[:, :, :3], x_cam, P[:, :, 3])


# ---- conversions ------------------------------------------------------------------------------


def interhand_to_opencv(campos_mm, camrot) -> tuple[torch.Tensor, torch.Tensor]:
    """InterHand2.6M camera (``campos`` mm, ``camrot``) to OpenCV extrinsics in metres.

    Args:
        campos_mm: (..., 3) camera centres, world, millimetres (tensor or array).
        camrot: (..., 3, 3) world-to-camera rotations (OpenCV axes).
    Returns:
        R: (..., 3, 3) = camrot; t: (..., 3) = ``-R @ campos / 1000`` metres.
    """
    campos = _as_tensor(campos_mm)
    R = _as_tensor(camrot, dtype=campos.dtype, device=campos.device)
    if campos.shape[-1:] != (3,) or R.shape[-2:] != (3, 3) or R.shape[:-2] != campos.shape[:-1]:
        raise ValueError(
            f"campos_mm must be (..., 3) and camrot (..., 3, 3) with matching batch shape, "
            f"got {tuple(campos.shape)} and {tuple(R.shape)}"
        )
    t = -torch.einsum("...ij,...j->...i", R, campos) / 1000.0
    return R, t


def opencv_to_interhand(R, t) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`interhand_to_opencv`: ``(R (...,3,3), t (...,3) m) -> (campos_mm, camrot)``."""
    t = _as_tensor(t)
    R = _as_tensor(R, dtype=t.dtype, device=t.device)
    if t.shape[-1:] != (3,) or R.shape[-2:] != (3, 3) or R.shape[:-2] != t.shape[:-1]:
        raise ValueError(
            f"R must be (..., 3, 3) and t (..., 3) with matching batch shape, "
            f"got {tuple(R.shape)} and {tuple(t.shape)}"
        )
    campos = -torch.einsum("...ji,...j->...i", R, t) * 1000.0
    return campos, R


def crop_intrinsics(K, box, out_size) -> torch.Tensor:
    """Intrinsics after warping the square ``box`` of the image to ``out_size``.

    The square ``[x0, x0+side] x [y0, y0+side]`` (continuous pixels, may extend past the border) is
    mapped onto ``[0, w] x [0, h]``: ``u' = (u - x0) w / side``, ``v' = (v - y0) h / side``.

    Args:
        K: (..., 3, 3) intrinsics, pixels.
        box: ``(x0, y0, side)`` in pixels; a (..., 3) tensor gives one box per K.
        out_size: int or ``(h, w)`` of the warped image.
    Returns:
        (..., 3, 3) intrinsics of the warped image.
    """
    K = _as_tensor(K)
    box = _as_tensor(box, dtype=K.dtype, device=K.device)
    if K.shape[-2:] != (3, 3) or box.shape[-1:] != (3,):
        raise ValueError(
            f"K must be (..., 3, 3) and box (..., 3) = (x0, y0, side), got {tuple(K.shape)} "
            f"and {tuple(box.shape)}"
        )
    if bool((box[..., 2] <= 0).any()):
        raise ValueError(f"crop side must be positive, got box {box.tolist()}")
    h, w = image_hw(out_size)
    x0, y0, side = box.unbind(-1)
    zero, one = torch.zeros_like(side), torch.ones_like(side)
    sx, sy = w / side, h / side
    A = torch.stack(
        [
            torch.stack([sx, zero, -sx * x0], -1),
            torch.stack([zero, sy, -sy * y0], -1),
            torch.stack([zero, zero, one], -1),
        ],
        -2,
    )
    return A @ K


def crop_affine_cv2(box, out_size) -> np.ndarray:
    """(2, 3) float64 matrix for ``cv2.warpAffine`` that performs the crop of :func:`crop_intrinsics`.

    OpenCV indexes pixel centres at integers while we put them at +0.5, hence the half-pixel terms:
    ``i' + 0.5 = s (i + 0.5 - x0)``.
    """
    x0, y0, side = (float(b) for b in box)
    if side <= 0:
        raise ValueError(f"crop side must be positive, got {side}")
    h, w = image_hw(out_size)
    sx, sy = w / side, h / side
    return np.array([[sx, 0.0, sx * (0.5 - x0) - 0.5], [0.0, sy, sy * (0.5 - y0) - 0.5]])


def clip_to_pixel(clip: torch.Tensor, image_size) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip coordinates to continuous pixels.

    Args:
        clip: (..., 4) clip coordinates ``(x, y, z, w)`` (w > 0).
        image_size: ``(H, W)``.
    Returns:
        uv_pix: (..., 2) pixels (centres at +0.5); z_ndc: (...) depth ``z / w`` in [-1, 1] when visible.
    """
    if clip.shape[-1] != 4:
        raise ValueError(f"clip must have shape (..., 4), got {tuple(clip.shape)}")
    h, w = image_hw(image_size)
    inv_w = 1.0 / clip[..., 3]
    u = (clip[..., 0] * inv_w + 1.0) * (0.5 * w)
    v = (clip[..., 1] * inv_w + 1.0) * (0.5 * h)
    return torch.stack([u, v], dim=-1), clip[..., 2] * inv_w


def pixel_to_clip(
    uv_pix: torch.Tensor, depth: torch.Tensor, image_size, near: float = DEFAULT_NEAR
) -> torch.Tensor:
    """Continuous pixels and camera depth to clip coordinates (inverse of :func:`clip_to_pixel`).

    Args:
        uv_pix: (..., 2) pixels (centres at +0.5).
        depth: (...) camera-frame Z, metres.
        image_size: ``(H, W)``.
        near: near plane, metres.
    Returns:
        (..., 4) clip coordinates with ``w = depth``.
    """
    if uv_pix.shape[-1] != 2 or depth.shape != uv_pix.shape[:-1]:
        raise ValueError(
            f"uv_pix must be (..., 2) and depth (...), got {tuple(uv_pix.shape)} and " f"{tuple(depth.shape)}"
        )
    h, w = image_hw(image_size)
    x_ndc = 2.0 * uv_pix[..., 0] / w - 1.0
    y_ndc = 2.0 * uv_pix[..., 1] / h - 1.0
    return torch.stack([x_ndc * depth, y_ndc * depth, depth - 2.0 * near, depth], dim=-1)


def look_at(
    eye: Sequence[float],
    target: Sequence[float] = (0.0, 0.0, 0.0),
    up: Sequence[float] = (0.0, -1.0, 0.0),
    dtype=torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV world-to-camera ``R (3,3), t (3,)`` of a camera at ``eye`` looking at ``target``.

    ``up`` is the world direction that should appear towards the top of the image (OpenCV -y).
    """
    eye_t = torch.as_tensor(eye, dtype=torch.float64)
    z = torch.as_tensor(target, dtype=torch.float64) - eye_t
    z = z / z.norm()
    x = torch.linalg.cross(-torch.as_tensor(up, dtype=torch.float64), z)
    if float(x.norm()) < 1e-12:
        raise ValueError(f"look_at: up {tuple(up)} is parallel to the viewing direction")
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z])
    return R.to(dtype), (-R @ eye_t).to(dtype)


__all__ = [
    "DEFAULT_NEAR",
    "Cameras",
    "interhand_to_opencv",
    "opencv_to_interhand",
    "crop_intrinsics",
    "crop_affine_cv2",
    "clip_to_pixel",
    "pixel_to_clip",
    "look_at",
]
