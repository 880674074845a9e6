"""Image files: read/write RGB float images, visualisation panels, GIFs.

In memory an image is a float32 numpy array ``(H, W, 3)``, **RGB**, in [0, 1] (see
``docs/architecture.md``). OpenCV, which does the decoding and encoding, works in BGR; the conversion
happens here and nowhere else. ``cv2`` and ``imageio`` are imported inside the functions.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from utils.errors import InputError


class ImageReadError(InputError, OSError):
    """An image file exists but is empty or cannot be decoded (an ``OSError`` too, as it was before it was an
    ``InputError``)."""


class AllBlackImageWarning(UserWarning):
    """An image read from disk is entirely black (often a failed render or a wrong crop)."""


def is_all_black(image: np.ndarray, tol: float = 1.0 / 255.0) -> bool:
    """True when every value of ``image`` (float in [0, 1]) is at most ``tol``."""
    return bool(np.max(image, initial=0.0) <= tol)


def read_image(path: str | Path, on_black: str = "warn") -> np.ndarray:
    """Read an image file as float32 RGB in [0, 1], shape ``(H, W, 3)``.

    Grey images are repeated to 3 channels; an alpha channel is dropped; 8-bit and 16-bit files are
    scaled by 255 and 65535.

    Args:
        path: the file (any format OpenCV decodes: PNG, JPEG, ...).
        on_black: what to do when the image is all black: ``"warn"`` (``AllBlackImageWarning``),
            ``"ignore"`` or ``"error"`` (``ImageReadError``).

    Raises:
        FileNotFoundError: no such file.
        ImageReadError: the file is empty or cannot be decoded (corrupt or not an image).
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)  # fromfile + imdecode also handles non-ASCII paths
    if data.size == 0:
        raise ImageReadError(f"image file is empty (0 bytes): {path}")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageReadError(f"cannot decode image (corrupt or not an image): {path}")
    if image.dtype == np.uint8:
        scale = 255.0
    elif image.dtype == np.uint16:
        scale = 65535.0
    else:
        scale = 1.0
    image = image.astype(np.float32) / scale
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    image = np.ascontiguousarray(image[:, :, ::-1])  # BGR -> RGB
    if on_black != "ignore" and is_all_black(image):
        message = f"image is all black: {path}"
        if on_black == "error":
            raise ImageReadError(message)
        warnings.warn(message, AllBlackImageWarning, stacklevel=2)
    return image


def to_numpy_image(image: Any) -> np.ndarray:
    """An ``(H, W, C)`` numpy array (C = 1 or 3) from numpy ``(H, W[, C])`` or a tensor ``([1,] C, H, W)``."""
    if hasattr(image, "detach"):
        image = image.detach().float().cpu().numpy()
        if image.ndim == 4:
            if image.shape[0] != 1:
                raise ValueError(f"expected one image, got a batch of shape {image.shape}")
            image = image[0]
        if image.ndim == 3:
            image = np.transpose(image, (1, 2, 0))
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"expected an image (H, W), (H, W, 1|3|4) or a tensor (C, H, W), got shape {image.shape}"
        )
    return image


def to_uint8(image: Any, what: str = "image") -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB from a float [0, 1] or uint8 image (values clipped, NaN -> 0 with a warning)."""
    image = to_numpy_image(image)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = image[:, :, :3]
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    image = image.astype(np.float32)
    if not np.isfinite(image).all():
        warnings.warn(f"{what} holds NaN/inf values; written as 0", RuntimeWarning, stacklevel=3)
        image = np.nan_to_num(image, nan=0.0, posinf=1.0, neginf=0.0)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_image(path: str | Path, image: Any) -> Path:
    """Write an RGB image (float in [0, 1], or uint8) to ``path``; the format follows the extension.

    Accepts ``(H, W)``, ``(H, W, 1|3)`` numpy arrays and ``(C, H, W)`` tensors. Parent folders are
    created; the file is written atomically.
    """
    import cv2

    from utils.checkpoint import atomic_write

    path = Path(path)
    rgb = to_uint8(image, what=str(path))
    ok, encoded = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise ValueError(f"cannot encode an image for {path} (unsupported extension {path.suffix!r}?)")
    return atomic_write(path, lambda handle: handle.write(encoded.tobytes()))


def label_strip_height(width: int) -> int:
    """Height (pixels) of the label strip :func:`make_grid` draws above a tile ``width`` pixels wide."""
    return int(round(28 * max(0.3, min(1.0, width / 320.0)))) + 4


def grid_tile(grid: np.ndarray, ncols: int, index: int, labelled: bool = True, pad: int = 2) -> np.ndarray:
    """Tile ``index`` (row-major, without its label) of a :func:`make_grid` panel of ``ncols`` square tiles.

    Args:
        grid: the panel ``(H', W', 3)`` as written (e.g. read back from its PNG).
        ncols, labelled, pad: as the panel was made (``labelled``: labels were drawn).
    Raises:
        ValueError: the panel's size does not fit ``ncols`` square tiles.
    """
    width = (grid.shape[1] - (ncols - 1) * pad) // ncols
    strip = label_strip_height(width) if labelled else 0
    tile_h = width + strip
    nrows = (grid.shape[0] + pad) // (tile_h + pad)
    if (
        width <= 0
        or nrows * (tile_h + pad) - pad != grid.shape[0]
        or ncols * (width + pad) - pad != grid.shape[1]
    ):
        raise ValueError(
            f"a {grid.shape[1]}x{grid.shape[0]} panel is not a grid of {ncols} columns of square tiles"
        )
    if not 0 <= index < nrows * ncols:
        raise ValueError(f"tile {index} of a {nrows}x{ncols} panel")
    row, col = divmod(index, ncols)
    y, x = row * (tile_h + pad) + strip, col * (width + pad)
    return grid[y : y + width, x : x + width]


def make_grid(
    images: Sequence[Any],
    labels: Sequence[str] | None = None,
    ncols: int | None = None,
    pad: int = 2,
    pad_value: float = 1.0,
) -> np.ndarray:
    """Tile images into one panel, optionally with a text label above each.

    Every image is resized (nearest neighbour, so LR pixels stay visible) to the size of the first.

    Args:
        images: ``(H, W[, C])`` numpy arrays (float [0, 1] or uint8) or ``(C, H, W)`` tensors.
        labels: one string per image, drawn in a strip above it.
        ncols: images per row (default: all in one row).
        pad: pixels between tiles; ``pad_value`` their grey level.

    Returns:
        the panel, float32 RGB in [0, 1], ``(H', W', 3)``.
    """
    import cv2

    if len(images) == 0:
        raise ValueError("make_grid needs at least one image")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"got {len(labels)} labels for {len(images)} images")
    tiles = [to_uint8(img, what=f"image {i}").astype(np.float32) / 255.0 for i, img in enumerate(images)]
    height, width = tiles[0].shape[:2]
    tiles = [
        t
        if t.shape[:2] == (height, width)
        else cv2.resize(t, (width, height), interpolation=cv2.INTER_NEAREST)
        for t in tiles
    ]
    if labels is not None:
        font_scale = max(0.3, min(1.0, width / 320.0))
        thickness = 1 if font_scale < 0.7 else 2
        strip = label_strip_height(width)
        labelled = []
        for tile, label in zip(tiles, labels, strict=True):
            # putText draws on 8-bit images only (OpenCV 5)
            header = np.full((strip, width, 3), int(round(pad_value * 255)), dtype=np.uint8)
            cv2.putText(
                header,
                str(label),
                (3, strip - 6),
                cv2.FONT_HERSHEY_SIMPLEX,
                font_scale,
                (0, 0, 0),
                thickness,
                cv2.LINE_AA,
            )
            labelled.append(np.concatenate([header.astype(np.float32) / 255.0, tile], axis=0))
        tiles = labelled
    ncols = len(tiles) if ncols is None else max(1, int(ncols))
    nrows = -(-len(tiles) // ncols)
    tile_h, tile_w = tiles[0].shape[:2]
    grid = np.full(
        (nrows * tile_h + (nrows - 1) * pad, ncols * tile_w + (ncols - 1) * pad, 3),
        pad_value,
        dtype=np.float32,
    )
    for index, tile in enumerate(tiles):
        row, col = divmod(index, ncols)
        y, x = row * (tile_h + pad), col * (tile_w + pad)
        grid[y : y + tile_h, x : x + tile_w] = tile
    return grid


def save_gif(path: str | Path, frames: Sequence[Any], fps: float = 8.0, loop: int = 0) -> Path:
    """Write frames (RGB float [0, 1] or uint8, same size) as an animated GIF.

    Args:
        path: the ``.gif`` file (parent folders are created).
        frames: images accepted by ``to_uint8``.
        fps: frames per second (GIF stores the delay in 1/100 s, so it is rounded).
        loop: number of loops, 0 = forever.
    """
    import imageio.v3 as iio

    if len(frames) == 0:
        raise ValueError(f"no frames to write to {path}")
    from utils.checkpoint import atomic_write_bytes

    stack = np.stack([to_uint8(f, what=f"frame {i} of {path}") for i, f in enumerate(frames)])
    encoded = iio.imwrite("<bytes>", stack, extension=".gif", duration=1000.0 / fps, loop=loop)
    return atomic_write_bytes(path, encoded)


def write_mp4(path: str | Path, frames: Sequence[Any], fps: float = 20.0) -> Path:
    """Write frames (RGB float [0, 1] or uint8, same size) as an MP4 video (MPEG-4 part 2, ``mp4v``: the
    encoder OpenCV's wheels ship; plays in VLC, ffmpeg and most desktop players, not in every browser).

    OpenCV encodes into a file it names itself: the video is encoded in a private temporary folder, then
    written to ``path`` by ``utils.checkpoint.atomic_write_bytes`` (parent folders created).
    Raises:
        ValueError: no frames, frames of different sizes. OSError: OpenCV has no MP4 encoder here.
    """
    import tempfile

    import cv2

    from utils.checkpoint import atomic_write_bytes

    path = Path(path)
    if len(frames) == 0:
        raise ValueError(f"no frames to write to {path}")
    stack = [to_uint8(f, what=f"frame {i} of {path}") for i, f in enumerate(frames)]
    height, width = stack[0].shape[:2]
    if any(f.shape[:2] != (height, width) for f in stack):
        raise ValueError(f"frames of {path} differ in size")
    with tempfile.TemporaryDirectory(prefix="srhand_mp4_") as folder:
        encoded = Path(folder) / "video.mp4"
        writer = cv2.VideoWriter(str(encoded), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
        try:
            if not writer.isOpened():
                raise OSError(f"OpenCV cannot encode MP4 here ({path}); write a GIF instead (--video gif)")
            for frame in stack:
                writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
        finally:
            writer.release()
        return atomic_write_bytes(path, encoded.read_bytes())
