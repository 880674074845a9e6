"""Subjects: a hand identity (shape, skin tone) and its detailed canonical surface.

:func:`make_subject` shapes the hand model's template with random betas, Loop-subdivides it
(carrying the skinning weights), derives the :class:`~datasets.synthetic.skeleton.HandFrame` and
adds the surface detail of :mod:`datasets.synthetic.detail`. Everything here is canonical (rest
pose, flat hand); posing lives in :mod:`datasets.synthetic.posing`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from datasets.synthetic._np import vertex_normals_np, vertex_spacing
from datasets.synthetic.detail import compose_surface, detail_fields, skin_tone
from datasets.synthetic.skeleton import HandFrame, hand_frame


@dataclass
class Subject:
    """A hand identity. Arrays are numpy, canonical (rest pose, flat hand), metres.

    ``verts_coarse (778,3)`` shaped template, ``verts (N,3)`` detailed subdivided mesh (displaced),
    ``verts_smooth (N,3)`` the same before displacement, ``faces (Fs,3)``, ``weights (N,16)``
    skinning weights, ``albedo (N,3)`` RGB in [0,1], ``displacement (N,)`` metres along the normal,
    ``labels``: per-vertex detail fields in [0,1] (``crease``, ``knuckle``, ``palm_lines``, ``nail``,
    ``freckles``), ``skin_rgb`` the base tone.
    """

    index: int
    betas: np.ndarray
    skin_rgb: np.ndarray
    verts_coarse: np.ndarray
    verts_smooth: np.ndarray
    verts: np.ndarray
    faces: np.ndarray
    weights: np.ndarray
    albedo: np.ndarray
    displacement: np.ndarray
    labels: dict
    frame: HandFrame
    side: str
    info: dict = field(default_factory=dict)


def make_subject(hand_model, rng: np.random.Generator, index: int = 0, levels: int = 3) -> Subject:
    """Draw a subject: shape, skin tone, and the detailed canonical surface on the subdivided mesh."""
    from utils.geometry.mesh import loop_subdivide

    side = hand_model.side if hasattr(hand_model, "side") else "right"
    betas = np.clip(rng.normal(0.0, 0.8, 10), -2.0, 2.0)
    v_template = hand_model.v_template.detach().double().cpu().numpy()
    shapedirs = hand_model.shapedirs.detach().double().cpu().numpy()
    v_shaped = v_template + shapedirs @ betas
    faces = hand_model.faces.detach().cpu().numpy().astype(np.int64)
    weights = hand_model.lbs_weights.detach().double().cpu().numpy()
    J = hand_model.J_regressor.detach().double().cpu().to_dense().numpy() @ v_shaped \
        if hand_model.J_regressor.is_sparse else hand_model.J_regressor.detach().double().cpu().numpy() @ v_shaped
    v_sub, f_sub, w_sub = loop_subdivide(torch.as_tensor(v_shaped), torch.as_tensor(faces), levels,
                                         weights=torch.as_tensor(weights))
    v_sub = np.asarray(v_sub, dtype=np.float64)
    f_sub = np.asarray(f_sub, dtype=np.int64)
    w_sub = np.asarray(w_sub, dtype=np.float64)
    frame = hand_frame(J, v_shaped, weights, side)
    normals = vertex_normals_np(v_sub, f_sub)

    fields = detail_fields(rng, v_sub, normals, w_sub, frame, vertex_spacing(v_sub, f_sub))
    skin = skin_tone(rng)
    albedo, disp = compose_surface(rng, v_sub, normals, fields, skin, frame)
    verts = v_sub + disp[:, None] * normals
    return Subject(index=index, betas=betas, skin_rgb=skin, verts_coarse=v_shaped, verts_smooth=v_sub,
                   verts=verts, faces=f_sub, weights=w_sub, albedo=albedo, displacement=disp,
                   labels=fields, frame=frame, side=side)
