"""Subjects: a hand identity (shape, skin tone) and its detailed canonical surface.

:func:`make_subject` shapes the hand model's template with random betas, Loop-subdivides it
(carrying the skinning weights), derives the :class:`~datasets.synthetic.skeleton.HandFrame` and
adds the surface detail of :mod:`datasets.synthetic.detail`. With ``surface="v2"`` (the default)
the subject also gets the soft tissue and pose-dependent deformation of
:mod:`datasets.synthetic.tissue`, drawn from a separate generator so that every v1 draw is unchanged.
Everything here is canonical (rest pose, flat hand); posing lives in :mod:`datasets.synthetic.posing`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from datasets.synthetic._np import vertex_normals_np, vertex_spacing
from datasets.synthetic.detail import compose_surface, detail_fields, skin_tone
from datasets.synthetic.skeleton import HandFrame, hand_frame
from datasets.synthetic.tissue import PoseDeformation, pose_deformation, soft_tissue

SURFACES = ("v2", "mano")


@dataclass
class Subject:
    """A hand identity. Arrays are numpy, canonical (rest pose, flat hand), metres.

    ``verts_coarse (778,3)`` shaped template, ``verts (N,3)`` detailed subdivided mesh (displaced),
    ``verts_smooth (N,3)`` the same before displacement, ``faces (Fs,3)``, ``weights (N,16)``
    skinning weights, ``albedo (N,3)`` RGB in [0,1], ``displacement (N,)`` metres along the normal,
    ``labels``: per-vertex detail fields in [0,1] (``crease``, ``knuckle``, ``palm_lines``, ``nail``,
    ``freckles``), ``skin_rgb`` the base tone.

    Surface ``v2`` only (None for ``mano``): ``tissue (N,)`` metres of static soft tissue along the
    smooth normal (included in ``verts``), ``tissue_parts`` its components, ``tissue_params`` the
    drawn amplitudes (mm), ``pose_deformation`` the pose-dependent fields
    (:class:`~datasets.synthetic.tissue.PoseDeformation`) that :func:`~datasets.synthetic.posing.pose_subject`
    applies.
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
    surface: str = "mano"
    tissue: np.ndarray | None = None
    tissue_parts: dict | None = None
    tissue_params: dict | None = None
    pose_deformation: PoseDeformation | None = None


def make_subject(
    hand_model,
    rng: np.random.Generator,
    index: int = 0,
    levels: int = 3,
    surface: str = "mano",
    tissue_rng: np.random.Generator | None = None,
) -> Subject:
    """Draw a subject: shape, skin tone, and the detailed canonical surface on the subdivided mesh.

    ``surface="mano"``: the shaped MANO template, subdivided, plus the detail (the v1 subjects).
    ``surface="v2"``: plus soft tissue and pose-dependent fields, drawn from ``tissue_rng`` (default: a
    generator seeded from ``rng`` after the v1 draws).
    """
    if surface not in SURFACES:
        raise ValueError(f"surface must be one of {SURFACES}, got {surface!r}")
    from utils.geometry.mesh import loop_subdivide

    side = hand_model.side if hasattr(hand_model, "side") else "right"
    betas = np.clip(rng.normal(0.0, 0.8, 10), -2.0, 2.0)
    v_template = hand_model.v_template.detach().double().cpu().numpy()
    shapedirs = hand_model.shapedirs.detach().double().cpu().numpy()
    v_shaped = v_template + shapedirs @ betas
    faces = hand_model.faces.detach().cpu().numpy().astype(np.int64)
    weights = hand_model.lbs_weights.detach().double().cpu().numpy()
    J = (
        hand_model.J_regressor.detach().double().cpu().to_dense().numpy() @ v_shaped
        if hand_model.J_regressor.is_sparse
        else hand_model.J_regressor.detach().double().cpu().numpy() @ v_shaped
    )
    v_sub, f_sub, w_sub = loop_subdivide(
        torch.as_tensor(v_shaped), torch.as_tensor(faces), levels, weights=torch.as_tensor(weights)
    )
    v_sub = np.asarray(v_sub, dtype=np.float64)
    f_sub = np.asarray(f_sub, dtype=np.int64)
    w_sub = np.asarray(w_sub, dtype=np.float64)
    frame = hand_frame(J, v_shaped, weights, side)
    normals = vertex_normals_np(v_sub, f_sub)

    fields = detail_fields(rng, v_sub, normals, w_sub, frame, vertex_spacing(v_sub, f_sub))
    skin = skin_tone(rng)
    albedo, disp = compose_surface(rng, v_sub, normals, fields, skin, frame)
    verts = v_sub + disp[:, None] * normals
    subject = Subject(
        index=index,
        betas=betas,
        skin_rgb=skin,
        verts_coarse=v_shaped,
        verts_smooth=v_sub,
        verts=verts,
        faces=f_sub,
        weights=w_sub,
        albedo=albedo,
        displacement=disp,
        labels=fields,
        frame=frame,
        side=side,
    )
    if surface == "v2":
        if tissue_rng is None:
            tissue_rng = np.random.default_rng(rng.integers(2**63))
        tissue, parts, params = soft_tissue(tissue_rng, v_sub, normals, w_sub, frame, fields["nail"])
        subject.surface = surface
        subject.verts = v_sub + (disp + tissue)[:, None] * normals
        subject.tissue, subject.tissue_parts, subject.tissue_params = tissue, parts, params
        subject.pose_deformation = pose_deformation(tissue_rng, v_sub, normals, w_sub, frame)
    return subject
