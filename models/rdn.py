"""Residual Dense Network (Zhang et al., CVPR 2018) as an LR feature encoder (no upsampling tail).

Structure (kernel k, G0 features, D blocks of C dense layers with growth G):

    x in [0,1] -> (x - 0.5) / 0.5
    f_1 = SFENet1(x)       conv k x k, in_ch -> G0
    f_0 = SFENet2(f_1)     conv k x k, G0 -> G0
    f_d = RDB_d(f_{d-1})   d = 1..D
    out = GFF(cat(f_1..f_D)) + f_1     GFF: conv 1x1 D*G0 -> G0, conv k x k G0 -> G0

RDB: C layers ``conv k x k (G0 + c*G -> G) + ReLU`` whose outputs are concatenated to their input
(dense connectivity), a 1x1 local feature fusion ``G0 + C*G -> G0`` and a local residual.

Reference sizes (RDN config 'B' as used by LIIF and SRHand): G0=128 (SRHand; LIIF uses 64), k=3, D=16,
C=8, G=64 -> 27.83 M parameters with G0=128.
"""

from __future__ import annotations

import torch
from torch import nn

from models.registry import register


class DenseLayer(nn.Module):
    """conv k x k + ReLU whose output is concatenated to its input: (B,C,H,W) -> (B,C+growth,H,W)."""

    def __init__(self, in_ch: int, growth: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, growth, kernel_size, padding=kernel_size // 2)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.act(self.conv(x))], dim=1)


class RDB(nn.Module):
    """Residual dense block: C dense layers, 1x1 local feature fusion, local residual. (B,G0,H,W) -> same."""

    def __init__(self, G0: int, G: int, C: int, kernel_size: int = 3):
        super().__init__()
        self.layers = nn.Sequential(*[DenseLayer(G0 + c * G, G, kernel_size) for c in range(C)])
        self.fusion = nn.Conv2d(G0 + C * G, G0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fusion(self.layers(x)) + x


@register("rdn")
class RDN(nn.Module):
    """RDN feature encoder without the upsampling tail.

    Args:
        G0: feature width (= ``out_dim``).
        kernel_size: conv kernel of the shallow/dense/global layers (odd).
        D: number of residual dense blocks.
        C: dense layers per block.
        G: growth rate (channels added per dense layer).
        in_ch: input channels.

    Input: ``lr (B, in_ch, h, w)`` in [0, 1] (mapped to [-1, 1] inside). Output: ``(B, G0, h, w)``.
    """

    def __init__(
        self, G0: int = 64, kernel_size: int = 3, D: int = 16, C: int = 8, G: int = 64, in_ch: int = 3
    ):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        pad = kernel_size // 2
        self.out_dim = G0
        self.sfe1 = nn.Conv2d(in_ch, G0, kernel_size, padding=pad)
        self.sfe2 = nn.Conv2d(G0, G0, kernel_size, padding=pad)
        self.blocks = nn.ModuleList([RDB(G0, G, C, kernel_size) for _ in range(D)])
        self.global_fusion = nn.Sequential(
            nn.Conv2d(D * G0, G0, 1),
            nn.Conv2d(G0, G0, kernel_size, padding=pad),
        )

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """``lr (B, in_ch, h, w)`` in [0, 1] -> features ``(B, G0, h, w)``."""
        x = (lr - 0.5) / 0.5
        f1 = self.sfe1(x)
        f = self.sfe2(f1)
        block_outputs = []
        for block in self.blocks:
            f = block(f)
            block_outputs.append(f)
        return self.global_fusion(torch.cat(block_outputs, dim=1)) + f1
