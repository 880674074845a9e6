"""Real-ESRGAN U-Net discriminator with spectral normalisation, and SRHand's masked GAN targets.

Architecture (``num_feat = F``), LeakyReLU(0.2) after every conv but the last:

    x0 = conv0 3x3 (in -> F, bias, no SN)                      H
    x1 = SN conv 4x4 s2 (F -> 2F), x2 = (2F -> 4F), x3 = (4F -> 8F)   H/2, H/4, H/8
    x4 = SN conv 3x3 (8F -> 4F) on up2(x3)  [+ x2]            H/4
    x5 = SN conv 3x3 (4F -> 2F) on up2(x4)  [+ x1]            H/2
    x6 = SN conv 3x3 (2F -> F)  on up2(x5)  [+ x0]            H
    out = conv9 3x3 (F -> 1, bias) of two SN 3x3 (F -> F) convs
    (up2: bilinear x2, align_corners=False; [+ skip] with skip_connection; SN convs are bias-free)

``forward`` returns per-pixel LOGITS ``(B, 1, H, W)``. The reference applies a sigmoid inside the network
and uses ``nn.BCELoss``; here the sigmoid lives in the loss (``gan_loss(mode='bce')`` uses
``binary_cross_entropy_with_logits``, numerically safer, same value). ``torch.sigmoid(logits)`` is the
reference's output. 4.38 M parameters at F = 64.

Spectral norm: ``torch.nn.utils.parametrizations.spectral_norm`` (one power iteration per training
forward; state-dict keys ``convN.parametrizations.weight.original`` / ``...0._u`` / ``...0._v``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from models.registry import register
from utils.errors import InputError


@register("unet_disc_sn", runtime=("channels_last",))
class UNetDiscriminatorSN(nn.Module):
    """U-Net discriminator with spectral norm (Real-ESRGAN ``UNetDiscriminatorSN``).

    Args:
        num_in_ch: input channels (3: RGB in [0, 1]).
        num_feat: base width F.
        skip_connection: add the encoder features to the decoder features.
        channels_last: run the convolutions on channels-last activations, which oneDNN computes faster on
            CPU (``benchmarks/profiles/srhand_steps.md``); the same function either way, so it is a runtime
            argument: not part of the model spec, and the weights load in either layout.

    Input ``(B, num_in_ch, H, W)`` with H, W divisible by 8. Output logits ``(B, 1, H, W)``.
    """

    def __init__(
        self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True, channels_last: bool = True
    ):
        super().__init__()
        nf = num_feat
        self.skip_connection = skip_connection
        self.channels_last = channels_last
        self.conv0 = nn.Conv2d(num_in_ch, nf, 3, 1, 1)
        self.conv1 = spectral_norm(nn.Conv2d(nf, nf * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(nf * 2, nf * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(nf * 4, nf * 8, 4, 2, 1, bias=False))
        self.conv4 = spectral_norm(nn.Conv2d(nf * 8, nf * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(nf * 4, nf * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(nf * 2, nf, 3, 1, 1, bias=False))
        self.conv7 = spectral_norm(nn.Conv2d(nf, nf, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(nf, nf, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(nf, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C, H, W)`` (H, W multiples of 8) -> logits ``(B, 1, H, W)``."""
        if x.dim() != 4 or x.shape[-2] % 8 or x.shape[-1] % 8:
            raise ValueError(
                f"UNetDiscriminatorSN needs a (B, C, H, W) input with H and W divisible by 8 "
                f"(three stride-2 levels), got {tuple(x.shape)}"
            )

        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)

        def act(t: torch.Tensor) -> torch.Tensor:
            return F.leaky_relu(t, 0.2)

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

        x0 = act(self.conv0(x))
        x1 = act(self.conv1(x0))
        x2 = act(self.conv2(x1))
        x3 = act(self.conv3(x2))
        x4 = act(self.conv4(up(x3)))
        if self.skip_connection:
            x4 = x4 + x2
        x5 = act(self.conv5(up(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = act(self.conv6(up(x5)))
        if self.skip_connection:
            x6 = x6 + x0
        out = act(self.conv8(act(self.conv7(x6))))
        return self.conv9(out)


# Per-pixel targets of SRHand's masked GAN loss: (inside the hand mask, outside it).
DISC_TARGETS = {
    "real": (1.0, 0.5),  # discriminator step, on real HR images
    "fake": (0.0, 0.5),  # discriminator step, on super-resolved images
    "generator": (1.0, 0.5),  # GIIF step, on super-resolved images
}


def disc_targets(mask: torch.Tensor, kind: str) -> torch.Tensor:
    """Target probability map of SRHand's masked GAN loss.

    Args:
        mask: ``(B, 1, H, W)`` hand mask in {0, 1} (fractional values interpolate linearly).
        kind: 'real' (1 inside, 0.5 outside), 'fake' (0 inside, 0.5 outside) or
            'generator' (1 inside, 0.5 outside).

    Returns:
        ``(B, 1, H, W)`` targets, same dtype/device as ``mask``; no gradient.
    """
    if kind not in DISC_TARGETS:
        raise ValueError(f"kind must be one of {sorted(DISC_TARGETS)}, got {kind!r}")
    inside, outside = DISC_TARGETS[kind]
    mask = mask.detach()
    return mask * inside + (1 - mask) * outside


def gan_loss(logits: torch.Tensor, target_map: torch.Tensor | float, mode: str = "bce") -> torch.Tensor:
    """Mean per-pixel GAN loss of discriminator logits against a target map.

    Args:
        logits: ``(B, 1, H, W)`` raw discriminator outputs.
        target_map: targets broadcastable to ``logits``, in [0, 1] (e.g. ``disc_targets``), or a float.
        mode: 'bce': ``BCE(sigmoid(logits), target)`` (= the reference's ``nn.BCELoss`` on its sigmoid
            output, computed stably from logits); 'lsgan': ``(logits - target)^2``, the standard
            least-squares GAN loss on the raw output (not used by the reference).

    Returns:
        scalar tensor.
    """
    if not torch.is_tensor(target_map):
        target_map = torch.full_like(logits, float(target_map))
    target_map = target_map.to(logits.dtype).expand_as(logits)
    if mode == "bce":
        return F.binary_cross_entropy_with_logits(logits, target_map)
    if mode == "lsgan":
        return F.mse_loss(logits, target_map)
    raise InputError(f"mode must be 'bce' or 'lsgan', got {mode!r}")
