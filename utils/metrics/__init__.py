"""Evaluation metrics.

What lives here: ``image`` (PSNR, SSIM, masked variants, the perceptual metric wrapper), ``geometry``
(point-to-surface distances, P2P in mm, MPJPE, multi-view inconsistency), ``regions`` (the
truth-to-reconstruction distance by region of the synthetic truth), ``perceptual`` (offline
LPIPS / ST-LPIPS networks and their fall-backs), ``perceptual_fast`` (the ST-LPIPS-alex training loss
with less work per step, checked against the package's network).

Imports allowed: ``utils.compat``, ``utils.dist``, ``utils.errors`` and ``utils.geometry``; besides
torch and numpy, and lpips and stlpips_pytorch inside functions. Nothing here imports ``models``,
``datasets`` or ``trainers``.
"""
