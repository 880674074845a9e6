"""Mask sources of the reconstruction's supervision (``data.mask_source``, issue 23) and the paper's
pseudo-ground-truth P2P (``eval.pseudo_gt_mesh_dir``).

Unit tests of :mod:`trainers.srhand.supervision` (dilation against a brute-force disc, the targets of each
source, the background estimate, the composited render and its silhouette gradient); the generator's
``--segmentation`` read back by the reader and cropped like the images; short main.py runs on the tiny
synthetic capture under each source, the error for ``capture`` on a capture without segmentation (before
the run folder); and the pseudo-GT column: an ``sr_source = hr`` run evaluated against its own meshes is
at 0 mm from them while its truth P2P is unchanged.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _hand_fixtures import (
    one_thread,  # noqa: F401  (autouse: one torch thread in this module)
    tiny_srhand_blocks,
    write_tiny_capture,
    write_tiny_sr_models,
)

from tests.test_srhand import run
from trainers.srhand.supervision import (
    compared_images,
    dilate,
    margin_pixels,
    ring_colour,
    supervision_targets,
    view_background,
)


# ---- supervision.py -----------------------------------------------------------------------------
def test_dilate_is_the_disc_of_pixel_centres_within_the_radius():
    mask = torch.zeros(1, 1, 21, 21, dtype=torch.bool)
    mask[0, 0, 10, 10] = True
    mask[0, 0, 2, 17] = True
    for radius in (0, 1, 3, 5):
        out = dilate(mask, radius)[0, 0]
        yy, xx = torch.meshgrid(torch.arange(21), torch.arange(21), indexing="ij")
        expected = torch.zeros(21, 21, dtype=torch.bool)
        for cy, cx in ((10, 10), (2, 17)):
            expected |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        assert torch.equal(out, expected), radius
    # the number of lattice points in a disc of radius 5 (Gauss circle problem: N(5) = 81)
    assert int(dilate(mask[..., 5:16, 5:16], 5).sum()) == 81
    assert margin_pixels(0.04, 256) == 10 and margin_pixels(0.0, 256) == 0


def test_supervision_targets_of_each_source():
    gen = torch.Generator().manual_seed(0)
    raw = torch.rand(2, 3, 16, 16, generator=gen)
    mano = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    mano[..., 5:10, 5:10] = True
    seg = torch.zeros_like(mano)
    seg[..., 6:12, 6:11] = True  # the hand sits beside its annotation

    hr, support = supervision_targets("mano", raw, mano, None, 2)
    assert torch.equal(support, mano) and torch.equal(hr, raw * mano)

    hr, support = supervision_targets("capture", raw, mano, seg, 2)
    assert torch.equal(hr, raw * seg)  # the target keeps the hand where the segmentation says
    assert torch.equal(support, dilate(seg | mano, 2)) and bool(support[seg | mano].all())
    assert not bool(support[..., 0, 0].any())

    hr, support = supervision_targets("dilated", raw, mano, None, 2)
    assert torch.equal(support, dilate(mano, 2)) and torch.equal(hr, raw * support)
    assert int(support.sum()) > int(mano.sum())

    with pytest.raises(ValueError, match="segmentation"):
        supervision_targets("capture", raw, mano, None, 2)
    with pytest.raises(ValueError, match="mask source"):
        supervision_targets("scribbles", raw, mano, None, 2)


def test_background_estimate_is_the_ring_median_robust_to_missed_tissue():
    colour = torch.tensor([0.2, 0.5, 0.7])
    raw = colour[None, :, None, None].expand(3, 3, 24, 24).clone()
    mano = torch.zeros(3, 1, 24, 24, dtype=torch.bool)
    mano[..., 8:16, 8:16] = True
    support = dilate(mano, 4)
    raw[:, :, 8:16, 16:19] = 0.9  # tissue the annotation misses: under half of the ring
    ring = ring_colour(raw, mano, support)
    assert torch.allclose(ring, colour.expand(3, 3))
    # no ring (nothing dilated) -> NaN, skipped by the per-view median; unusable views are skipped too
    assert bool(ring_colour(raw, mano, mano).isnan().all())
    per_frame = torch.stack([ring, torch.full((3, 3), math.nan), torch.ones(3, 3)])  # (F=3, V=3, 3)
    usable = torch.tensor([[True, True, False], [True, True, True], [False, True, True]])
    bg = view_background(per_frame, usable)
    assert torch.allclose(bg[0], colour) and torch.allclose(bg[2], torch.ones(3))
    assert torch.allclose(bg[1], colour)  # torch's median of two values is the lower one
    assert torch.equal(view_background(torch.full((2, 1, 3), math.nan)), torch.zeros(1, 3))


def test_compared_images_composite_and_silhouette_gradient():
    alpha = torch.tensor([0.0, 0.25, 1.0]).reshape(1, 1, 1, 3).repeat(2, 1, 1, 1).requires_grad_(True)
    colour = torch.full((2, 3, 1, 3), 0.6)
    out = {
        "image": colour * alpha,  # premultiplied, as HandAvatar.render gives it
        "shading_only": 0.5 * alpha.expand(2, 3, 1, 3),
        "mask": alpha,
        "coverage": alpha.detach() > 0,
    }
    support = torch.ones(2, 1, 1, 3, dtype=torch.bool)
    support[1, 0, 0, 0] = False
    bg = torch.tensor([[0.1, 0.2, 0.3], [1.0, 1.0, 1.0]])

    same, valid = compared_images(out, support, bg, "mano")
    assert same is out and torch.equal(valid, (support & out["coverage"]).float())

    comp, valid = compared_images(out, support, bg, "dilated")
    assert torch.equal(valid, support.float()) and out["image"] is not comp["image"]
    expected = 0.6 * alpha.detach() + bg[:, :, None, None] * (1 - alpha.detach())
    assert torch.allclose(comp["image"], expected)
    # d(composite)/d(alpha) = colour - background: the silhouette moves by the images
    comp["image"][0].sum().backward()
    assert torch.allclose(alpha.grad[0, 0, 0], torch.full((3,), float((0.6 - bg[0]).sum())))


# ---- the capture's own segmentation -------------------------------------------------------------
@pytest.fixture(scope="module")
def segmented_root(tmp_path_factory):
    """The conftest's tiny capture, generated again with ``segmentation = True``."""
    return write_tiny_capture(tmp_path_factory.mktemp("tiny_segmented"), segmentation=True)


def read_recon(root):
    from datasets.interhand import read_interhand_sequence

    return read_interhand_sequence(root, "test", "Capture0", "ROM03_RT_No_Occlusion", cameras=2, num_frames=2)


def test_generator_segmentation_is_read_and_cropped_like_the_images(segmented_root, tiny_capture_root):
    from utils.image_io import read_image

    plain = read_recon(tiny_capture_root)
    assert not plain.has_segmentation and plain.segmentation_paths == []
    meta = json.loads((Path(tiny_capture_root) / "synthetic_meta.json").read_text())
    assert "segmentation" not in meta["config"]  # the metadata of captures without it is unchanged

    seq = read_recon(segmented_root)
    assert seq.has_segmentation
    f, v = 1, 0
    path = Path(seq.segmentation_paths[f][v])
    assert path.name == f"mask{seq.frame_ids[f]}.png" and path.parent == Path(seq.image_paths[f][v]).parent
    seg = seq.load_segmentation(f, v)
    gt = Path(segmented_root) / "gt_masks" / "test" / "Capture0" / "ROM03_RT_No_Occlusion" / path.parent.name
    assert np.array_equal(seg, read_image(gt / path.name, on_black="ignore").max(axis=2) > 0.5)
    # the images are black outside the true surface: the segmentation is where they are not
    image = seq.load_image(f, v)
    assert image[~seg].mean() < 0.005 and image[seg].mean() > 0.1  # JPEG ringing at the edge aside

    s = seq.sample(f, v, size=32, with_segmentation=True)
    lit = s["image"].amax(0) > 0.05
    assert s["segmentation"].shape == (1, 32, 32)
    agree = (s["segmentation"][0].bool() == lit).float().mean()
    assert agree > 0.95, agree  # only the antialiased border of the crop's warp differs
    assert seq.select(frames=[1], views=[1]).segmentation_paths == [[seq.segmentation_paths[1][1]]]


# ---- main.py under each source ------------------------------------------------------------------
@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_capture_root):
    return write_tiny_sr_models(tmp_path_factory.mktemp("mask_models"), tiny_capture_root)


def write_conf(tmp_path: Path, assets: dict, root, extra: str = "") -> Path:
    q = json.dumps
    text = f"""
exp_name = tiny
out_root = {q(str(tmp_path / "runs"))}
use_tensorboard = false
giif_model = {q(str(assets["giif"]))}
disc_model = {q(str(assets["disc"]))}
sr_source = hr
log_every = 4
{tiny_srhand_blocks(root, ", mask_margin = 0.1", ", use_enh = false")}
albedo {{ epochs = 1, batch_size = 2 }}
sfs {{ epochs = 1, batch_size = 2 }}
train {{ epochs = 2, batch_size = 2, perceptual = none }}
eval {{ perceptual = none, p2p_samples = 300, batch_size = 3 }}
{extra}
"""
    path = tmp_path / "tiny.conf"
    path.write_text(text)
    return path


def test_capture_source_without_segmentation_fails_before_the_run_folder(
    tmp_path, assets, tiny_capture_root, capsys
):
    conf = write_conf(tmp_path, assets, tiny_capture_root)
    out = tmp_path / "no_segmentation"
    assert run(conf, "--out", out, "--set", "data.mask_source=capture") == 2
    err = capsys.readouterr().err
    assert "data.mask_source = capture" in err and "dilated" in err and "--segmentation" in err
    assert not out.exists()
    assert run(conf, "--out", out, "--set", "data.mask_source=scribbles") == 2
    assert "data.mask_source must be one of" in capsys.readouterr().err


def test_the_reader_check_names_the_key_and_the_fix(tiny_capture_root):
    from trainers.srhand.sequence import SRHandInputError, check_mask_source

    class Data:
        mask_source = "capture"

    with pytest.raises(SRHandInputError, match=r"data.mask_source = capture.*--segmentation"):
        check_mask_source(read_recon(tiny_capture_root), Data)


def test_each_mask_source_trains_and_evaluates(tmp_path, assets, segmented_root):
    """The three sources on the segmented capture: each run trains and evaluates; the prepared supports differ
    as documented; the evaluation's metrics keep the MANO mask (their HR references are the same)."""
    from trainers.srhand.sequence import prepare_sequence
    from trainers.srhand.settings import read_settings
    from utils.config import load_config

    conf = write_conf(tmp_path, assets, segmented_root)
    metrics = {}
    for source in ("mano", "capture", "dilated"):
        out = tmp_path / source
        assert run(conf, "--out", out, "--set", f"data.mask_source={source}") == 0
        metrics[source] = json.loads((out / "metrics.json").read_text())
        assert math.isfinite(metrics[source]["p2p_mm"])
    # the same frames and cameras are evaluated against the same MANO-masked images and LR inputs: the bicubic
    # row, a property of the evaluation data only, is the same under every source
    bicubic = {k: m["sr_bicubic"]["all"]["psnr_masked"] for k, m in metrics.items()}
    assert bicubic["capture"] == bicubic["mano"] == bicubic["dilated"]
    assert metrics["capture"]["p2p_mm"] != metrics["mano"]["p2p_mm"]  # the supervision differs

    seq = read_recon(segmented_root)
    prepared = {}
    for source in ("mano", "capture", "dilated"):
        settings = read_settings(load_config(conf, [f"data.mask_source={source}"], schema="srhand"))
        prepared[source], _ = prepare_sequence(seq, settings.data, torch.device("cpu"), torch.float32)
    mano, cap, dil = prepared["mano"], prepared["capture"], prepared["dilated"]
    assert mano.support is mano.mask and torch.equal(cap.mask, mano.mask)
    assert bool(dil.support[mano.mask].all()) and int(dil.support.sum()) > int(mano.mask.sum())
    assert bool(cap.support[mano.mask].all())
    # the synthetic background is black: the estimate finds it
    assert torch.allclose(dil.background, torch.zeros_like(dil.background), atol=0.02)
    # capture's target is the image inside the true silhouette: nothing lit is cut away
    raw_lit = (dil.hr.amax(2) > 0.05) & ~dil.support[:, :, 0]
    assert not bool(raw_lit.any())
    # both keep the whole hand (they differ at the border of the warped segmentation only)
    assert float((cap.hr - dil.hr).abs().mean()) < 0.005
    assert float(mano.hr.sum()) < float(cap.hr.sum())  # the MANO mask clips tissue of the v2 surface


# ---- the paper's pseudo-ground-truth P2P --------------------------------------------------------
def test_pseudo_gt_p2p_of_a_run_against_its_own_meshes_is_zero(tmp_path, assets, tiny_capture_root, capsys):
    conf = write_conf(tmp_path, assets, tiny_capture_root, "eval.export_meshes = true")
    hr_dir = tmp_path / "hr"
    assert run(conf, "--out", hr_dir) == 0
    before = json.loads((hr_dir / "metrics.json").read_text())
    assert "p2p_pseudo_gt_mm" not in before  # not measured: not reported

    def evaluate_against(meshes: Path, out: Path) -> int:
        """``--eval`` of the run with ``meshes`` as the pseudo ground truth, into ``out``."""
        return run(
            conf, "--eval", "--model_path", hr_dir, "--out", out, "--set", f"eval.pseudo_gt_mesh_dir={meshes}"
        )

    again = tmp_path / "again"
    meshes = hr_dir / "meshes"
    assert evaluate_against(meshes, again) == 0
    m = json.loads((again / "metrics.json").read_text())
    assert m["p2p_pseudo_gt_mm"] == pytest.approx(0.0, abs=1e-4)
    assert m["p2p_pseudo_gt_se_mm"] == pytest.approx(0.0, abs=1e-4)
    assert m["p2p_pseudo_gt_frames"] == len(m["eval_frames"]) and m["pseudo_gt_mesh_source"] == str(meshes)
    # beside, not instead of, the truth: the truth's P2P is the run's own
    assert m["p2p_mm"] == pytest.approx(before["p2p_mm"], rel=1e-6)
    assert m["p2p_pseudo_gt_mm_mano"] > 0.1  # the input MANO mesh is not the reconstruction
    assert np.mean(list(m["p2p_pseudo_gt_mm_per_frame"].values())) == pytest.approx(m["p2p_pseudo_gt_mm"])

    # the same meshes, by region of the truth (scripts/p2p_by_region.py)
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "p2p_by_region", Path(__file__).parents[1] / "scripts" / "p2p_by_region.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    table = script.main([str(hr_dir), "--data", str(tiny_capture_root)]).splitlines()
    assert len(table) == 4 and table[2].startswith("| input MANO mesh |") and table[3].startswith("| hr |")
    assert all(float(c) > 0 for c in table[3].strip("| ").split(" | ")[1:])

    missing = tmp_path / "empty_meshes"
    missing.mkdir()
    assert evaluate_against(missing, tmp_path / "x") != 0
    assert "eval.pseudo_gt_mesh_dir" in capsys.readouterr().err


# ---- truth-to-reconstruction distance by region -------------------------------------------------
def test_distance_by_region_of_a_shifted_plane_is_the_shift(tiny_capture_root):
    from utils.metrics.regions import distance_by_region, truth_regions

    grid = torch.stack(
        torch.meshgrid(torch.linspace(-0.05, 0.05, 11), torch.linspace(-0.05, 0.05, 11), indexing="ij"), -1
    )
    verts = torch.cat([grid.reshape(-1, 2), torch.zeros(121, 1)], 1).double()
    idx = torch.arange(121).reshape(11, 11)
    quads = torch.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], -1).reshape(-1, 4)
    faces = torch.cat([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    inner = (verts[:, :2].abs() < 0.03).all(1).numpy()
    regions = {"inner": inner, "border": ~inner}
    shifted = verts + torch.tensor([0.0, 0.0, 0.002], dtype=torch.float64)
    assert distance_by_region(verts, regions, shifted, faces) == pytest.approx({"inner": 2.0, "border": 2.0})
    assert distance_by_region(verts, regions, verts, faces) == pytest.approx({"inner": 0.0, "border": 0.0})

    # the generator's regions partition its surface
    path = Path(tiny_capture_root) / "gt_meshes" / "test" / "Capture0" / "ROM03_RT_No_Occlusion.npz"
    with np.load(path) as data:
        r = truth_regions({k: data[k] for k in data.files})
    parts = r["palm"].astype(int) + r["thumb"] + r["fingers"]
    assert (parts == 1).all() and (r["dorsal"] ^ r["palmar"]).all() and r["all"].all()
    assert 0 < r["off-model tissue"].sum() < len(parts)
