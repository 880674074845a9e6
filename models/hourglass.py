"""PIFu-style stacked-hourglass filter (``HGFilter``) encoding a rendered normal map.

Layout for a ``(B, 3, Hn, Wn)`` input, width ``C`` (``n_feat``):

    stem:   conv 7x7 stride 2 (3 -> C/2) + norm + ReLU        (Hn/2)
            ConvBlock(C/2 -> C), avg-pool 2                    (Hn/4)
            ConvBlock(C -> C), ConvBlock(C -> C)
    stack i (num_stack times), with ``prev`` the stem output at the first stack:
            hg  = HourGlass(prev)            depth ``depth``: avg-pool down, bicubic (align_corners) up
            ll  = ReLU(norm(conv1x1(ConvBlock(hg))))
            out_i = conv1x1(ll) -> out_dim channels
            prev = prev + conv1x1(ll) + conv1x1(out_i)      (between stacks)
    output: out_{num_stack-1}, (B, out_dim, Hn/4, Wn/4)  (features of the last stack only)

ConvBlock (pre-activation, bias-free 3x3 convs): ``o1 = conv(relu(norm(x)))`` to C/2 channels,
``o2`` to C/4, ``o3`` to C/4, output ``cat(o1, o2, o3) + residual`` (residual through
norm-ReLU-conv1x1 when the channel count changes).

With width 128 the stem is exactly SRHand's (7x7 3->64, ConvBlock 64->128, ConvBlock 128->128 twice);
PIFu's own filter has width 256 and keeps the stem at 64/128, which this width-scaled stem does not
reproduce for widths other than 128. Paper size (4 stacks, depth 2, width 128, group norm) -> 3.78 M
parameters.

GroupNorm uses ``gcd(32, C)`` groups, i.e. ``GroupNorm(32, C)`` for the reference widths and fewer
groups for tiny test widths.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.registry import register

NORMS = ("group", "batch", "none")


def make_norm(norm: str, channels: int) -> nn.Module:
    """``'group'`` -> GroupNorm(gcd(32, C), C); ``'batch'`` -> BatchNorm2d; ``'none'`` -> Identity."""
    if norm == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


class ConvBlock(nn.Module):
    """Pre-activation multi-scale residual block: (B, in_ch, H, W) -> (B, out_ch, H, W)."""

    def __init__(self, in_ch: int, out_ch: int, norm: str = "group"):
        super().__init__()
        if out_ch % 4 != 0:
            raise ValueError(f"ConvBlock out_ch must be divisible by 4, got {out_ch}")
        half, quarter = out_ch // 2, out_ch // 4
        self.norm1 = make_norm(norm, in_ch)
        self.conv1 = nn.Conv2d(in_ch, half, 3, padding=1, bias=False)
        self.norm2 = make_norm(norm, half)
        self.conv2 = nn.Conv2d(half, quarter, 3, padding=1, bias=False)
        self.norm3 = make_norm(norm, quarter)
        self.conv3 = nn.Conv2d(quarter, quarter, 3, padding=1, bias=False)
        if in_ch != out_ch:
            self.shortcut = nn.Sequential(
                make_norm(norm, in_ch), nn.ReLU(inplace=True), nn.Conv2d(in_ch, out_ch, 1, bias=False)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.norm1(x)))
        out2 = self.conv2(F.relu(self.norm2(out1)))
        out3 = self.conv3(F.relu(self.norm3(out2)))
        return torch.cat([out1, out2, out3], dim=1) + self.shortcut(x)


class HourGlass(nn.Module):
    """Recursive hourglass of ``depth`` levels at constant width: (B, C, H, W) -> (B, C, H, W).

    Level l: ``up = skip(x)``; ``low = block_in(avgpool2(x))``; ``low = level l-1 (or an extra block at
    the bottom)``; ``out = up + bicubic_up(block_out(low))``. The upsampling goes to the skip's size, so odd
    sizes work too (PIFu uses ``scale_factor=2``, identical for even sizes).
    """

    def __init__(self, depth: int, channels: int, norm: str = "group"):
        super().__init__()
        if depth < 1:
            raise ValueError(f"hourglass depth must be >= 1, got {depth}")
        self.skip = ConvBlock(channels, channels, norm)
        self.block_in = ConvBlock(channels, channels, norm)
        self.inner = (
            HourGlass(depth - 1, channels, norm) if depth > 1 else ConvBlock(channels, channels, norm)
        )
        self.block_out = ConvBlock(channels, channels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.skip(x)
        low = self.block_out(self.inner(self.block_in(F.avg_pool2d(x, 2, stride=2))))
        return up + F.interpolate(low, size=up.shape[-2:], mode="bicubic", align_corners=True)


@register("hg_filter")
class HGFilter(nn.Module):
    """Stacked-hourglass normal-map encoder.

    Args:
        in_ch: input channels (3 for a normal map).
        num_stack: number of stacked hourglasses.
        depth: levels per hourglass.
        n_feat: width C of the hourglass trunk (divisible by 4; by 32 for GroupNorm(32, C)).
        out_dim: channels of the output features (SRHand: ``hourglass_dim = 128``).
        norm: 'group' | 'batch' | 'none'.
        normal_input_renorm: apply ``(n - 0.5) / 0.5`` to the input as the reference code does (its
            normals are already in [-1, 1], so foreground values land in [-3, 1] and background at -1).
            Only for reproducing the released weights; default False feeds the normal map as is.

    Input: ``normal_map (B, in_ch, Hn, Wn)``: unit normals in [-1, 1], 0 on the background.
    Output: ``(B, out_dim, ceil(Hn / 2) // 2, ceil(Wn / 2) // 2)`` (= Hn/4 for multiples of 4; 256 -> 64).
    """

    def __init__(
        self,
        in_ch: int = 3,
        num_stack: int = 4,
        depth: int = 2,
        n_feat: int = 128,
        out_dim: int = 128,
        norm: str = "group",
        normal_input_renorm: bool = False,
    ):
        super().__init__()
        if n_feat % 8 != 0:
            raise ValueError(f"n_feat must be divisible by 8 (the stem uses n_feat/2 = 4k), got {n_feat}")
        make_norm(norm, 4)  # validates the name early
        self.out_dim = out_dim
        self.normal_input_renorm = normal_input_renorm
        stem_ch = n_feat // 2
        self.stem_conv = nn.Conv2d(in_ch, stem_ch, 7, stride=2, padding=3)
        self.stem_norm = make_norm(norm, stem_ch)
        self.stem_block1 = ConvBlock(stem_ch, n_feat, norm)  # followed by avg-pool 2
        self.stem_block2 = ConvBlock(n_feat, n_feat, norm)
        self.stem_block3 = ConvBlock(n_feat, n_feat, norm)

        self.hourglasses = nn.ModuleList([HourGlass(depth, n_feat, norm) for _ in range(num_stack)])
        self.top_blocks = nn.ModuleList([ConvBlock(n_feat, n_feat, norm) for _ in range(num_stack)])
        self.end_convs = nn.ModuleList([nn.Conv2d(n_feat, n_feat, 1) for _ in range(num_stack)])
        self.end_norms = nn.ModuleList([make_norm(norm, n_feat) for _ in range(num_stack)])
        self.heads = nn.ModuleList([nn.Conv2d(n_feat, out_dim, 1) for _ in range(num_stack)])
        # Re-injection into the trunk between stacks (not after the last one).
        self.trunk_feats = nn.ModuleList([nn.Conv2d(n_feat, n_feat, 1) for _ in range(num_stack - 1)])
        self.trunk_outs = nn.ModuleList([nn.Conv2d(out_dim, n_feat, 1) for _ in range(num_stack - 1)])

    def forward(self, normal_map: torch.Tensor) -> torch.Tensor:
        """``normal_map (B, in_ch, Hn, Wn)`` in [-1, 1] -> features ``(B, out_dim, Hn//4, Wn//4)``."""
        x = (normal_map - 0.5) / 0.5 if self.normal_input_renorm else normal_map
        x = F.relu(self.stem_norm(self.stem_conv(x)))
        x = F.avg_pool2d(self.stem_block1(x), 2, stride=2)
        trunk = self.stem_block3(self.stem_block2(x))
        out = trunk
        for i, hourglass in enumerate(self.hourglasses):
            ll = self.top_blocks[i](hourglass(trunk))
            ll = F.relu(self.end_norms[i](self.end_convs[i](ll)))
            out = self.heads[i](ll)
            if i < len(self.trunk_feats):
                trunk = trunk + self.trunk_feats[i](ll) + self.trunk_outs[i](out)
        return out
