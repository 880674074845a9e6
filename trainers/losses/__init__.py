"""Loss terms of SRHand: 3D reconstruction (sec. 3.4.1) and GIIF adaptive fine-tuning (sec. 3.4.2).

Every term is a pure function of tensors; the two combiners at the end (:func:`reconstruction_losses`,
:func:`finetune_losses`) apply the weights of a config dict and return every term by name.

Conventions: images ``(B, C, H, W)`` in [0, 1] (RGB); masks ``(B, 1, H, W)`` in {0, 1}; per-vertex
signals ``(V, C)``; ``uv_pix`` are pixel coordinates with pixel centres at +0.5 (``utils.geometry.camera``);
lengths in metres. ``perceptual`` arguments are callables ``perceptual(pred, target) -> scalar`` on
[0, 1] images (an LPIPS wrapper in training; any differentiable image distance in tests).

Formulas, weights and the differences from the reference code are tabulated in
``docs/srhand_model.md``.

Imports allowed: ``models`` and ``utils``; nothing here imports ``datasets`` or the stages' trainers.
"""

from trainers.losses.finetune import (
    FINETUNE_WEIGHTS,
    consistency_loss,
    discriminator_loss,
    finetune_losses,
    pose_consistency_loss,
    unconfidence_map,
    vertex_color_stats,
    wavelet_loss,
)
from trainers.losses.reconstruction import (
    MEAN_HAND_ALBEDO_RGB,
    RECON_WEIGHTS,
    displacement_anchor_loss,
    edge_stretch_loss,
    laplacian_loss,
    laplacian_norms,
    mask_loss,
    masked_l1,
    mean_albedo_prior,
    mean_texture_loss,
    part_aware_laplacian_loss,
    photometric_loss,
    reconstruction_losses,
    skinning_weight_loss,
)

__all__ = [
    "MEAN_HAND_ALBEDO_RGB",
    "RECON_WEIGHTS",
    "FINETUNE_WEIGHTS",
    "masked_l1",
    "photometric_loss",
    "laplacian_norms",
    "laplacian_loss",
    "part_aware_laplacian_loss",
    "edge_stretch_loss",
    "skinning_weight_loss",
    "displacement_anchor_loss",
    "mean_albedo_prior",
    "mean_texture_loss",
    "mask_loss",
    "wavelet_loss",
    "vertex_color_stats",
    "unconfidence_map",
    "consistency_loss",
    "pose_consistency_loss",
    "discriminator_loss",
    "reconstruction_losses",
    "finetune_losses",
]
