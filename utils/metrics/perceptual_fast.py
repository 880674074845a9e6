"""ST-LPIPS-alex as a training loss, computed with less work than the package's forward.

The ``stlpips_pytorch`` module stays the reference (and the metric). :class:`FastSTLPIPS` wraps that same
module, with its weights, and computes the same distance (values within float rounding; input gradients
equal in float64, ``tests/test_fastpaths.py``). What it does differently, and why (the measured times at
the CPU training size are in ``benchmarks/profiles/srhand_steps.md``, "After, second pass"):

* a target's features can be computed once (:meth:`FastSTLPIPS.features`) and compared with several
  predictions; a reconstruction step compares two renders with the same SR image;
* activations and weights are channels-last, oneDNN's faster layout for these convolutions, with the
  weights converted once rather than reordered at every call;
* the first convolution (3 -> 64 channels, 11 x 11, stride 1) has a slow input gradient in oneDNN (its 3
  output channels leave the vector units idle). On CPU that gradient is one GEMM of the (NCHW) output
  gradient with the weights followed by the 121 shifted adds of col2im (:class:`_FirstConv`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _FirstConv(torch.autograd.Function):
    """``conv2d(x, weight, bias, padding)`` whose input gradient is a GEMM plus shifted adds.

    Used only for inputs that need a gradient and a frozen ``weight``/``bias`` (no gradient is returned
    for them).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, padding: int):
        ctx.save_for_backward(weight)
        ctx.padding, ctx.in_size = padding, tuple(x.shape[-2:])
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        out_ch, in_ch, kh, kw = weight.shape
        batch, _, oh, ow = grad.shape
        pad, (height, width) = ctx.padding, ctx.in_size
        # cols[b, c, i, j, y, x] = sum_o W[o, c, i, j] g[b, o, y, x] (one GEMM on contiguous NCHW rows),
        # then col2im: grad_x_pad[b, c, y + i, x + j] += cols[b, c, i, j, y, x].
        g = grad.contiguous().view(batch, out_ch, oh * ow)
        cols = (weight.reshape(out_ch, -1).t() @ g).view(batch, in_ch, kh, kw, oh, ow)
        grad_in = grad.new_zeros(batch, in_ch, height + 2 * pad, width + 2 * pad)
        for i in range(kh):
            for j in range(kw):
                grad_in[:, :, i : i + oh, j : j + ow] += cols[:, :, i, j]
        grad_in = grad_in[:, :, pad : pad + height, pad : pad + width]
        return grad_in, None, None, None


def _unit_channels(feature: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Features divided by their channel norm, as LPIPS's ``normalize_tensor``."""
    return feature / (feature.pow(2).sum(1, keepdim=True).sqrt() + eps)


def supports(model: nn.Module) -> bool:
    """Whether ``model`` is the ``stlpips_pytorch`` LPIPS network that :class:`FastSTLPIPS` reproduces
    (shift-tolerant AlexNet trunk: a stride-1, 11 x 11 first convolution, five feature slices, v0.1)."""
    trunk = getattr(model, "net", None)
    slices = [getattr(trunk, f"slice{k}", None) for k in range(1, 6)]
    if any(s is None for s in slices) or not hasattr(model, "scaling_layer") or not hasattr(model, "lins"):
        return False
    first = slices[0][0]
    return (
        getattr(model, "version", None) == "0.1"
        and len(model.lins) == 5
        and isinstance(first, nn.Conv2d)
        and first.kernel_size == (11, 11)
        and first.stride == (1, 1)
        and first.in_channels == 3
        and isinstance(first.padding, tuple)
        and first.padding[0] == first.padding[1]
    )


class FastSTLPIPS:
    """The distance of a ``stlpips_pytorch`` ST-LPIPS-alex module, with reusable target features.

    Args:
        model: the frozen package module (``utils.metrics.perceptual.build_stlpips("alex")``), shared,
            not copied; :func:`supports` must hold.

    Inputs are images in [-1, 1], ``(B, 3, H, W)``, as the package module takes them.
    """

    def __init__(self, model: nn.Module):
        if not supports(model):
            raise ValueError("FastSTLPIPS needs the stlpips_pytorch shift-tolerant AlexNet LPIPS (v0.1)")
        if any(p.requires_grad for p in model.parameters()):
            raise ValueError(
                "FastSTLPIPS needs a frozen network (requires_grad_(False)): it returns no weight "
                "gradients"
            )
        self.model = model
        self._cl_weights: dict[torch.device, dict[int, torch.Tensor]] = {}

    def _weights(self, device: torch.device) -> dict[int, torch.Tensor]:
        """Channels-last copies of the trunk's convolution weights (oneDNN would otherwise reorder them at
        every call), made once per device and keyed by ``id`` of the module."""
        if device not in self._cl_weights:
            self._cl_weights[device] = {
                id(m): m.weight.detach().to(device).contiguous(memory_format=torch.channels_last)
                for m in self.model.net.modules()
                if isinstance(m, nn.Conv2d)
            }
        return self._cl_weights[device]

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The five channel-normalised feature maps of ``images`` ``(B, 3, H, W)`` in [-1, 1]."""
        trunk = self.model.net
        weights = self._weights(images.device)
        h = self.model.scaling_layer(images).contiguous(memory_format=torch.channels_last)
        feats = []
        for part in (trunk.slice1, trunk.slice2, trunk.slice3, trunk.slice4, trunk.slice5):
            for module in part:
                if not isinstance(module, nn.Conv2d):
                    h = module(h)
                elif module is trunk.slice1[0] and h.requires_grad and h.device.type == "cpu":
                    h = _FirstConv.apply(h, weights[id(module)], module.bias, module.padding[0])
                else:
                    h = F.conv2d(
                        h,
                        weights[id(module)],
                        module.bias,
                        module.stride,
                        module.padding,
                        module.dilation,
                        module.groups,
                    )
            feats.append(h)
        return [_unit_channels(f) for f in feats]

    def distance(self, feats0: list[torch.Tensor], feats1: list[torch.Tensor]) -> torch.Tensor:
        """Per-image distance ``(B, 1, 1, 1)`` between two lists of :meth:`features`."""
        total = None
        for lin, a, b in zip(self.model.lins, feats0, feats1, strict=True):
            term = lin((a - b) ** 2).mean([2, 3], keepdim=True)
            total = term if total is None else total + term
        return total

    def __call__(self, in0: torch.Tensor, in1: torch.Tensor) -> torch.Tensor:
        """``model(in0, in1)``: per-image distance ``(B, 1, 1, 1)``."""
        return self.distance(self.features(in0), self.features(in1))
