"""Assembling the procedural hand into the MANO v1.2 pickle format, the left mirror, and writing it."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np

from utils.geometry.procedural_hand.rig import (
    joint_regressor,
    joint_targets,
    pose_space,
    rotate_pose_vectors,
    skinning_weights,
)
from utils.geometry.procedural_hand.skeleton import (
    B_TO_MANO,
    FINGERTIP_VERTEX_IDS,
    PARENTS,
    SHAPE_STD,
    TARGET_NUM_VERTS,
    HandParams,
)
from utils.geometry.procedural_hand.surface import build_surface


def _fingertip_permutation(num_verts: int, tips: dict) -> np.ndarray:
    """Permutation ``order`` (new index -> old index) putting each fingertip pole at the vertex id
    that smplx uses for MANO's fingertips."""
    order = np.arange(num_verts)
    for name, new_id in FINGERTIP_VERTEX_IDS.items():
        old_id = tips[name]
        where = int(np.nonzero(order == old_id)[0][0])
        order[where], order[new_id] = order[new_id], order[where]
    return order


def build_hand(side: str = "right") -> dict:
    """The procedural hand as a MANO-format dict (construction: see :mod:`utils.geometry.procedural_hand`)."""
    import scipy.sparse

    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    base = HandParams()
    surface = build_surface(base)
    verts_b = surface["verts"]
    assert len(verts_b) == TARGET_NUM_VERTS, len(verts_b)
    faces = surface["faces"]
    order = _fingertip_permutation(len(verts_b), surface["tips"])
    inverse = np.argsort(order)

    weights = skinning_weights(surface, base.scale)
    targets = joint_targets(surface["digits"]) * base.scale
    regressor = joint_regressor(verts_b, targets)

    shapedirs = np.zeros((len(verts_b), 3, len(SHAPE_STD)))
    for k, (name, std) in enumerate(SHAPE_STD):
        eps = 1e-3
        plus = build_surface(dataclasses.replace(base, **{name: 1.0 + eps}), topology=surface)
        minus = build_surface(dataclasses.replace(base, **{name: 1.0 - eps}), topology=surface)
        shapedirs[:, :, k] = (plus["verts"] - minus["verts"]) / (2.0 * eps) * std

    hands_mean, components, coeffs = pose_space(surface["digits"])

    rot = B_TO_MANO
    v_template = verts_b[order] @ rot.T
    out = {
        "v_template": v_template,
        "f": inverse[faces].astype(np.uint32),
        "weights": weights[order],
        "shapedirs": np.einsum("ij,vjk->vik", rot, shapedirs[order]),
        "posedirs": np.zeros((len(verts_b), 3, 135)),
        "J_regressor": scipy.sparse.csc_matrix(regressor[:, order]),
        "kintree_table": np.stack([np.where(PARENTS < 0, 4294967295, PARENTS), np.arange(16)]).astype(
            np.int64
        ),
        "hands_mean": rotate_pose_vectors(hands_mean, rot),
        "hands_components": rotate_pose_vectors(components, rot),
        "hands_coeffs": coeffs,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    out["J"] = np.asarray(out["J_regressor"] @ out["v_template"])
    if side == "left":
        out = mirror_to_left(out)
    return out


def mirror_to_left(right: dict) -> dict:
    """Mirror a right hand (x -> -x) into a left hand with its own consistent data."""
    import scipy.sparse

    flip = np.array([-1.0, 1.0, 1.0])
    # An axis-angle vector is a pseudo-vector: under the reflection x -> -x it maps to (x, -y, -z).
    flip_pose = np.tile(np.array([1.0, -1.0, -1.0]), 15)
    left = dict(right)
    left["v_template"] = right["v_template"] * flip
    left["f"] = right["f"][:, [0, 2, 1]].copy()  # keep the normals pointing outwards
    left["shapedirs"] = right["shapedirs"] * flip[None, :, None]
    left["posedirs"] = np.zeros_like(right["posedirs"])
    left["J_regressor"] = scipy.sparse.csc_matrix(right["J_regressor"])
    left["J"] = right["J"] * flip
    left["hands_mean"] = right["hands_mean"] * flip_pose
    left["hands_components"] = right["hands_components"] * flip_pose[None]
    left["hands_coeffs"] = right["hands_coeffs"].copy()
    for key in ("weights", "kintree_table"):
        left[key] = right[key].copy()
    return left


def write_hand(hand: dict, path: str) -> None:
    """Write a MANO-format pickle (protocol 2, like the MANO release) atomically."""
    from utils.checkpoint import atomic_write

    atomic_write(path, lambda handle: pickle.dump(hand, handle, protocol=2))
