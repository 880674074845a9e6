"""Shared helpers for the hand-model, skinning and mesh tests (imported by the test files)."""

from __future__ import annotations

import functools
import json
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANO_VERTS = (778, 3093, 12337, 49281)
MANO_FACES = (1538, 6152, 24608, 98432)
FINGER_CHAINS = {
    "index": (1, 2, 3),
    "middle": (4, 5, 6),
    "pinky": (7, 8, 9),
    "ring": (10, 11, 12),
    "thumb": (13, 14, 15),
}


def generator_module():
    """The procedural-hand builder, :mod:`utils.geometry.procedural_hand`."""
    from utils.geometry import procedural_hand

    return procedural_hand


@functools.lru_cache(maxsize=8)
def procedural_model(side: str = "right", flat_hand_mean: bool = False, dtype: torch.dtype = torch.float32):
    """The shipped procedural hand as a HandModel (cached; do not modify it in a test)."""
    from utils.geometry.mano import HandModel, default_hand_model_path

    return HandModel.from_file(
        default_hand_model_path(side), side=side, flat_hand_mean=flat_hand_mean, dtype=dtype
    )


def grid_mesh(rows: int, cols: int, spacing: float = 0.01):
    """A flat regular triangulated grid in the z = 0 plane (all diagonals the same way).

    Returns verts (rows*cols, 3) float64, faces (2*(rows-1)*(cols-1), 3) int64 (normals +z) and
    a boolean interior mask."""
    ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    verts = np.stack([jj.ravel() * spacing, ii.ravel() * spacing, np.zeros(rows * cols)], axis=1)
    idx = np.arange(rows * cols).reshape(rows, cols)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    interior = np.zeros((rows, cols), dtype=bool)
    interior[1:-1, 1:-1] = True
    return verts, faces, interior.ravel()


def flexion_axes(model) -> np.ndarray:
    """Per-joint (16,3) axes that curl each bone towards the palm side (-y in the MANO-like frame),
    computed from the model's rest joints, so they work for MANO and the procedural hand."""
    joints = model.rest_joints().detach().double().numpy()
    parents = model.parents.numpy()
    children = {int(p): j for j, p in enumerate(parents) if p > 0}
    axes = np.zeros((16, 3))
    for j in range(1, 16):
        bone = joints[children[j]] - joints[j] if j in children else joints[j] - joints[parents[j]]
        axis = np.cross(bone, [0.0, -1.0, 0.0])
        axes[j] = axis / np.linalg.norm(axis)
    return axes


def curl_pose(model, angles: dict[int, float]) -> torch.Tensor:
    """(48,) pose rotating each listed joint by its angle (radians) about its flexion axis."""
    axes = flexion_axes(model)
    pose = np.zeros(48)
    for j, angle in angles.items():
        pose[3 * j : 3 * j + 3] = angle * axes[j]
    return torch.tensor(pose)


def typical_poses(model) -> dict[str, torch.Tensor]:
    """InterHand-like test poses (relative to a flat hand): flat, fist, spread, pinch, each (48,)."""
    fist = {
        j: a
        for chain in ((1, 2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12))
        for j, a in zip(chain, (1.5, 1.7, 1.0), strict=True)
    }
    fist.update({13: 0.5, 14: 0.9, 15: 1.0})
    spread = torch.zeros(48, dtype=torch.float64)
    for j, angle in {1: 0.30, 4: 0.10, 10: -0.15, 7: -0.35, 13: 0.40}.items():
        spread[3 * j + 1] = angle  # about the palm normal
    return {
        "flat": torch.zeros(48, dtype=torch.float64),
        "fist": curl_pose(model, fist),
        "spread": spread,
        "pinch": curl_pose(model, {1: 0.6, 2: 0.8, 3: 0.5, 13: 0.3, 14: 0.5, 15: 0.5}),
    }


def fake_mano_dict(num_shape_stored: int = 20, posedirs_scale: float = 0.0, seed: int = 0) -> dict:
    """A MANO-v1.2-like dict built from the procedural right hand: ``shapedirs`` as a stored
    (V,3,20) array plus Select indices (like MANO), random posedirs if ``posedirs_scale > 0``."""
    import scipy.sparse

    from utils.geometry.mano import default_hand_model_path

    with open(default_hand_model_path("right"), "rb") as fh:
        data = pickle.load(fh)
    rng = np.random.default_rng(seed)
    num_verts = data["v_template"].shape[0]
    full = np.concatenate([data["shapedirs"], rng.normal(0, 1e-3, (num_verts, 3, num_shape_stored - 10))], 2)
    data["_shapedirs_full"] = full
    data["posedirs"] = (
        rng.normal(0.0, posedirs_scale, (num_verts, 3, 135)) if posedirs_scale else data["posedirs"]
    )
    data["J_regressor"] = scipy.sparse.csc_matrix(data["J_regressor"])
    return data


def write_chumpy_mano_pickle(path: str, data: dict) -> np.ndarray:
    """Write ``data`` as a protocol-2 pickle whose ``shapedirs`` REFERENCES chumpy classes, as MANO
    v1.2 does: ``chumpy.reordering.Select(a=chumpy.ch.Ch(x=(V,3,20)), idxs, preferred_shape)``.

    Stub modules named chumpy / chumpy.ch / chumpy.reordering exist in ``sys.modules`` only while
    writing. Returns the (V,3,10) array the Select stands for."""
    full = data["_shapedirs_full"]
    num_verts = full.shape[0]
    # Select the first 10 of the 20 stored directions by flat indices into the raveled array.
    idxs = np.arange(full.size).reshape(full.shape)[:, :, :10].ravel()
    expected = full.ravel()[idxs].reshape(num_verts, 3, 10)

    names = ("chumpy", "chumpy.ch", "chumpy.reordering")
    saved = {n: sys.modules.get(n) for n in names}
    modules = {n: types.ModuleType(n) for n in names}
    ch_cls = type("Ch", (), {"__module__": "chumpy.ch"})
    select_cls = type("Select", (), {"__module__": "chumpy.reordering"})
    modules["chumpy.ch"].Ch = ch_cls
    modules["chumpy.reordering"].Select = select_cls
    try:
        sys.modules.update(modules)
        inner = ch_cls()
        inner.__dict__.update(x=full)
        select = select_cls()
        select.__dict__.update(a=inner, idxs=idxs, preferred_shape=(num_verts, 3, 10))
        out = {k: v for k, v in data.items() if not k.startswith("_")}
        out["shapedirs"] = select
        with open(path, "wb") as fh:
            pickle.dump(out, fh, protocol=2)
    finally:
        for n in names:
            if saved[n] is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = saved[n]
    return expected


# A GIIF small enough for CPU tests of every stage (same weights wherever it is built: seeded).
TINY_GIIF = {
    "name": "giif",
    "args": {
        "encoder": {"name": "rdn", "args": {"G0": 8, "kernel_size": 3, "D": 1, "C": 1, "G": 4}},
        "normal_encoder": {
            "name": "hg_filter",
            "args": {"in_ch": 3, "num_stack": 1, "depth": 1, "n_feat": 8, "out_dim": 8, "norm": "group"},
        },
        "hidden_list": [16],
    },
}


def write_tiny_sr_models(folder, capture_root) -> dict:
    """Seeded random tiny GIIF and discriminator checkpoints in ``folder`` for main.py runs on the tiny capture.

    Returns ``{"root": capture root, "giif": giif.pth, "disc": disc.pth}`` (paths).
    """
    from pathlib import Path

    from models import registry
    from utils.checkpoint import make_checkpoint, model_entry, save_atomic

    folder = Path(folder)
    torch.manual_seed(0)
    giif = registry.make(TINY_GIIF)
    disc = registry.make({"name": "unet_disc_sn", "args": {"num_feat": 4}})
    config = {"data": {"normal_space": "camera", "normal_size": 32}}
    save_atomic(make_checkpoint("giif", model_entry(giif), config=config), folder / "giif.pth")
    save_atomic(make_checkpoint("disc", model_entry(disc), config=config), folder / "disc.pth")
    return {"root": Path(capture_root), "giif": folder / "giif.pth", "disc": folder / "disc.pth"}


def write_tiny_capture(root, **overrides):
    """The suite's tiny synthetic capture tree in ``root``: ``trainers.gpu_check.TINY_DATA`` with seed 0 (3
    subjects, 64x64 raw images, 2 views x 2 frames, one held-out view), ``overrides`` going to
    ``SyntheticConfig``. Returns ``root``."""
    from datasets.synthetic import SyntheticConfig, generate
    from trainers.gpu_check import TINY_DATA

    config = SyntheticConfig(seed=0, **TINY_DATA, **overrides)
    generate(config, root, progress=False, overwrite=True, log=lambda *args, **kwargs: None)
    return root


def tiny_srhand_blocks(data_path, data_extra: str = "", model_extra: str = "") -> str:
    """The ``data`` and ``model`` blocks of the tiny stage-3 test configs: 2 views x 2 frames of 32 px crops from 8
    px LR images, subdivision level 1, 16-wide networks; ``data_extra`` / ``model_extra``: more keys of each block
    (``", key = value"``)."""
    return (
        f"data {{ data_path = {json.dumps(str(data_path))}, num_views = 2, num_frames = 2, hr_size = 32, lr_size = 8,\n"
        f"        normal_size = 32{data_extra} }}\n"
        "model { subdivision_levels = 1, lbs_width = 16, lbs_depth = 2, color_width = 16, color_depth = 2,\n"
        f"         delta_width = 16, delta_depth = 2{model_extra} }}"
    )


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread for the importing test module (``from _hand_fixtures import one_thread``): tiny
    tensors run as fast on one thread, and two threads per process on 2 shared cores next to another job run an
    order of magnitude slower (oversubscription): 15 s vs 160 s for tests/test_srhand.py."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
