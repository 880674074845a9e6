"""utils.image_io: RGB round trip, clear errors, all-black warning, panels, GIFs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from utils.image_io import (
    AllBlackImageWarning,
    ImageReadError,
    make_grid,
    read_image,
    save_gif,
    write_image,
)


def test_round_trip_is_rgb(tmp_path):
    image = np.zeros((6, 5, 3), np.float32)
    image[..., 0] = 1.0  # pure red
    image[2, 3] = (0.2, 0.4, 0.6)
    path = write_image(tmp_path / "sub" / "red.png", image)
    back = read_image(path)
    assert back.dtype == np.float32 and back.shape == (6, 5, 3)
    np.testing.assert_allclose(back, image, atol=0.5 / 255 + 1e-6)
    import cv2

    assert tuple(cv2.imread(str(path))[0, 0]) == (0, 0, 255)  # on disk: BGR, as OpenCV expects


def test_tensor_grey_and_uint8_inputs(tmp_path):
    write_image(tmp_path / "t.png", torch.full((3, 4, 4), 0.5))
    assert read_image(tmp_path / "t.png")[0, 0, 1] == pytest.approx(128 / 255)
    write_image(tmp_path / "g.png", np.full((4, 4), 255, np.uint8))
    assert read_image(tmp_path / "g.png").shape == (4, 4, 3)


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.png"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageReadError, match="corrupt.png"):
        read_image(tmp_path / "corrupt.png")


def test_all_black_warns_not_raises(tmp_path):
    path = write_image(tmp_path / "black.png", np.zeros((4, 4, 3)))
    with pytest.warns(AllBlackImageWarning, match="black.png"):
        assert read_image(path).max() == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(path, on_black="ignore")
    with pytest.raises(ImageReadError):
        read_image(path, on_black="error")


def test_make_grid_layout_and_labels():
    hr = np.full((32, 32, 3), 0.25, np.float32)
    lr = torch.rand(3, 8, 8)  # resized (nearest) to 32x32
    grid = make_grid([hr, lr, hr], ncols=2, pad=2)
    assert grid.shape == (32 * 2 + 2, 32 * 2 + 2, 3) and grid.dtype == np.float32
    assert np.allclose(grid[:32, :32], 0.25, atol=1 / 255)
    labelled = make_grid([hr, hr], labels=["HR", "SR"])
    assert labelled.shape[0] > 32 and labelled.shape[1] == 66
    assert labelled[: labelled.shape[0] - 32].min() < 0.5  # some dark text drawn in the header


def test_save_gif(tmp_path):
    import imageio.v3 as iio

    frames = [np.full((8, 8, 3), v, np.float32) for v in (0.0, 0.5, 1.0)]
    path = save_gif(tmp_path / "anim" / "a.gif", frames, fps=10)
    back = iio.imread(path, index=None)
    assert back.shape[0] == 3 and back.shape[1:3] == (8, 8)
    assert iio.immeta(path, index=0)["duration"] == pytest.approx(100, abs=10)


def test_grid_tile_gives_back_each_tile_of_a_labelled_panel(tmp_path):
    from utils.image_io import grid_tile

    rng = np.random.default_rng(0)
    tiles = [rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8) for _ in range(5)]
    for labels in (None, list("abcde")):
        grid = make_grid(tiles, labels, ncols=3)
        write_image(tmp_path / "grid.png", grid)
        back = (read_image(tmp_path / "grid.png") * 255).round().astype(np.uint8)
        for i, tile in enumerate(tiles):
            np.testing.assert_array_equal(grid_tile(back, 3, i, labelled=labels is not None), tile)
    with pytest.raises(ValueError, match="not a grid of 4 columns"):
        grid_tile(back, 4, 0)


def test_write_mp4_writes_every_frame_and_leaves_no_temporary_file(tmp_path):
    import cv2

    from utils.image_io import write_mp4

    frames = [np.full((32, 48, 3), i / 10, dtype=np.float32) for i in range(7)]
    path = write_mp4(tmp_path / "v.mp4", frames, fps=10)
    video = cv2.VideoCapture(str(path))
    sizes = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        sizes.append(frame.shape)
    assert sizes == [(32, 48, 3)] * 7 and sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]
    with pytest.raises(ValueError, match="differ in size"):
        write_mp4(tmp_path / "w.mp4", [frames[0], np.zeros((16, 16, 3))])
