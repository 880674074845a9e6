"""Perceptual distances (LPIPS, or ST-LPIPS offline) for metrics and training losses. Never downloads.

Two networks can be built, both with weights that really are pretrained:

* **LPIPS** (Zhang et al. 2018, package ``lpips``): its small linear heads ship with the package, but
  its AlexNet/VGG16 *trunk* is torchvision's ImageNet model, which ``lpips`` downloads on first use.
  We never let it: the network is built with a random trunk (``pnet_rand=True``, no download) and the
  trunk weights are then loaded from the torch hub cache, ``torch.hub.get_dir()/checkpoints``
  (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), file names
  ``alexnet-owt-7be5be79.pth`` (AlexNet) and ``vgg16-397923af.pth`` (VGG16), as torchvision names
  them. Copy those files there (from any machine with network access) to use LPIPS.
* **ST-LPIPS** (shift-tolerant LPIPS, Ghildyal & Liu, ECCV 2022, package ``stlpips-pytorch``): its
  ``weights/vST0.0/<net>_shift_tolerant.pth`` files hold the *whole* network, trunk included, so it
  works offline. It is a different metric: its values are reported as ST-LPIPS, never as LPIPS.

``kind="auto"`` uses LPIPS when its trunk file is cached and ST-LPIPS otherwise, and says which (once
per process, on rank 0). A randomly initialised trunk is never used: every parameter of the network is
checked to have been loaded from a file.

Inputs are RGB images in [0, 1], ``(B, 3, H, W)``; they are mapped to [-1, 1], the range both
networks were trained on (the reference code feeds [0, 1], and channel-summed images to its loss).
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from utils import dist
from utils.errors import InputError

TRUNK_WEIGHT_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
_announced: set[str] = set()


class PerceptualUnavailableError(RuntimeError):
    """The requested perceptual network cannot be built offline (its weights are missing)."""


def hub_checkpoint_dir() -> Path:
    """The folder where torchvision keeps downloaded weights: ``torch.hub.get_dir()/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_trunk(net: str) -> Path | None:
    """The cached torchvision weights of LPIPS's ``"alex"`` or ``"vgg"`` trunk, or None."""
    path = hub_checkpoint_dir() / TRUNK_WEIGHT_FILES[net]
    return path if path.is_file() else None


def announce(message: str) -> None:
    """Print ``message`` once per process, on rank 0."""
    if message not in _announced and dist.is_main():
        _announced.add(message)
        print(message, flush=True)


def _load_checked(module: torch.nn.Module, state: dict, source: str) -> None:
    """Load ``state`` into ``module``; every parameter and buffer must come from ``state``."""
    own = module.state_dict()
    # lpips/stlpips register the heads twice (lin0..4 and the ModuleList lins.0..4): same tensors.
    for key in own:
        alias = re.sub(r"^lins\.(\d+)\.", r"lin\1.", key)
        if key not in state and alias in state:
            state[key] = state[alias]
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        raise PerceptualUnavailableError(
            f"{source} does not fit the network: missing {missing[:6]}, wrong shapes {wrong[:6]}"
        )
    module.load_state_dict({k: state[k] for k in own}, strict=True)


def build_lpips(net: str = "alex", trunk_path: str | Path | None = None) -> torch.nn.Module:
    """LPIPS v0.1 with the ``lpips`` package's linear heads and torchvision trunk weights from a file.

    Args:
        net: ``"alex"`` or ``"vgg"``.
        trunk_path: torchvision's ImageNet weights for that trunk; default ``cached_trunk(net)``.

    Raises:
        PerceptualUnavailableError: no trunk file (nothing is downloaded), or it does not fit.
    """
    from utils.compat import import_lpips

    trunk_path = Path(trunk_path) if trunk_path is not None else cached_trunk(net)
    if trunk_path is None or not trunk_path.is_file():
        raise PerceptualUnavailableError(
            f"LPIPS-{net} needs torchvision's {TRUNK_WEIGHT_FILES[net]} in {hub_checkpoint_dir()} "
            "(this code never downloads it)"
        )
    lpips = import_lpips()
    with warnings.catch_warnings():  # torchvision's deprecation notes about `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, version="0.1", pretrained=False, pnet_rand=True, verbose=False)
    state = {}
    heads = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    state.update(torch.load(heads, map_location="cpu", weights_only=True))
    trunk = torch.load(trunk_path, map_location="cpu", weights_only=True)
    for key in model.state_dict():
        match = re.fullmatch(r"net\.slice\d+\.(\d+)\.(weight|bias)", key)
        if match and f"features.{match[1]}.{match[2]}" in trunk:
            state[key] = trunk[f"features.{match[1]}.{match[2]}"]
    # ScalingLayer constants are defined in code, not in any weight file.
    state.update({k: v for k, v in model.state_dict().items() if k.startswith("scaling_layer.")})
    _load_checked(model, state, f"{heads} + {trunk_path}")
    return model


def _import_stlpips():
    """``stlpips_pytorch.stlpips``; its unused debugging imports (torchsummary, IPython) are stubbed."""
    from utils.compat import import_torchvision

    import_torchvision()
    stubs = {}
    for module_name, attr in (("torchsummary", "summary"), ("IPython", "embed")):
        if module_name not in sys.modules and importlib.util.find_spec(module_name) is None:
            stub = types.ModuleType(module_name)

            def unavailable(*args, _name=module_name, **kwargs):
                raise ImportError(f"{_name} is not installed")

            setattr(stub, attr, unavailable)
            sys.modules[module_name] = stubs[module_name] = stub
    try:
        from stlpips_pytorch import stlpips
    finally:
        for module_name, stub in stubs.items():
            if sys.modules.get(module_name) is stub:
                del sys.modules[module_name]
    return stlpips


def build_stlpips(net: str = "alex") -> torch.nn.Module:
    """ST-LPIPS (shift-tolerant variant) with the whole network loaded from the package's weights."""
    stlpips = _import_stlpips()
    weights = Path(stlpips.__file__).parent / "weights" / "vST0.0" / f"{net}_shift_tolerant.pth"
    if not weights.is_file():
        raise PerceptualUnavailableError(f"ST-LPIPS weights not found: {weights}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = stlpips.LPIPS(net=net, variant="shift_tolerant", pretrained=False, verbose=False)
    _load_checked(model, torch.load(weights, map_location="cpu", weights_only=True), str(weights))
    return model


@dataclass
class PerceptualChoice:
    """The network picked by ``choose_perceptual``: ``name`` is ``"LPIPS"`` or ``"ST-LPIPS"``."""

    name: str
    net: str
    reason: str
    module: torch.nn.Module

    @property
    def label(self) -> str:
        return f"{self.name}-{self.net}"


def choose_perceptual(
    kind: str = "auto", net: str = "alex", fallback_net: str = "alex", purpose: str = "metric"
) -> PerceptualChoice:
    """Build the perceptual network for ``kind`` and announce the choice (once per process).

    Args:
        kind: ``"auto"`` (LPIPS if its trunk is cached, else ST-LPIPS), ``"lpips"`` (error if not
            cached) or ``"stlpips"``.
        net: LPIPS trunk, ``"alex"`` or ``"vgg"``.
        fallback_net: ST-LPIPS network used by ``"stlpips"`` and by the ``"auto"`` fallback.
        purpose: word used in the announcement (``"metric"``, ``"training loss"``).

    Returns:
        a frozen (``requires_grad=False``), eval-mode network with its name and the reason.
    """
    if kind not in ("auto", "lpips", "stlpips"):
        raise InputError(f"perceptual kind must be auto, lpips or stlpips, got {kind!r}")
    trunk = cached_trunk(net)
    if kind == "lpips" or (kind == "auto" and trunk is not None):
        module = build_lpips(net, trunk)
        choice = PerceptualChoice("LPIPS", net, f"{net} trunk weights found at {trunk}", module)
    else:
        if kind == "stlpips":
            reason = "requested explicitly"
        else:
            reason = (
                f"LPIPS is not used because its {net} trunk weights ({TRUNK_WEIGHT_FILES[net]}) are not in "
                f"{hub_checkpoint_dir()} and nothing is downloaded; copy the file there to get LPIPS. "
                "ST-LPIPS values are not comparable with LPIPS values"
            )
        choice = PerceptualChoice("ST-LPIPS", fallback_net, reason, build_stlpips(fallback_net))
    choice.module.eval().requires_grad_(False)
    announce(f"[perceptual {purpose}] using {choice.name} ({choice.net}): {choice.reason}.")
    return choice


def as_nchw(image, what: str = "image") -> torch.Tensor:
    """A float ``(B, 3, H, W)`` tensor from a tensor ``(B, 3, H, W)``/``(3, H, W)`` or numpy ``(H, W, 3)``/``(B, H, W, 3)``."""
    if not torch.is_tensor(image):
        image = torch.as_tensor(image, dtype=torch.float32)
        image = image.permute(2, 0, 1) if image.ndim == 3 else image.permute(0, 3, 1, 2)
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"{what}: expected RGB images (B, 3, H, W), got shape {tuple(image.shape)}")
    return image.float()


class _Frozen:
    """Holds a frozen network outside ``nn.Module`` registration (no state_dict/parameters entry)."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    def on(self, device: torch.device) -> torch.nn.Module:
        if next(self.module.parameters()).device != device:
            self.module.to(device)
        return self.module


@dataclass
class PreparedTarget:
    """A target encoded once by :meth:`PerceptualLoss.prepare`, to be compared with several predictions.

    ``image`` is the target in [0, 1] as given; ``features`` its network features, or ``None`` when the
    network has no reusable features (LPIPS, or ``PerceptualLoss(fast=False)``).
    """

    image: torch.Tensor
    features: list[torch.Tensor] | None = None


class PerceptualLoss(torch.nn.Module):
    """Perceptual training loss between RGB images in [0, 1] (mean over the batch).

    Args:
        kind: ``"auto"`` (LPIPS-VGG when ``vgg16-397923af.pth`` is cached, else ST-LPIPS-alex, with a
            warning), ``"lpips_vgg"`` (error when not cached), ``"stlpips"`` (ST-LPIPS-alex) or
            ``"none"`` (always 0).
        fast: compute ST-LPIPS-alex with :class:`utils.metrics.perceptual_fast.FastSTLPIPS` (the same
            distance with less work; targets can be encoded once, :meth:`prepare`); False runs the
            ``stlpips_pytorch`` module's own forward (``train.perceptual_impl = package``).

    The network is frozen, always in eval mode (LPIPS heads contain dropout), follows the input's
    device, and is kept out of ``state_dict()``/``parameters()`` so it never lands in a model
    checkpoint or an optimizer. Gradients flow to the prediction.
    """

    def __init__(self, kind: str = "auto", fast: bool = True):
        super().__init__()
        if kind not in ("auto", "lpips_vgg", "stlpips", "none"):
            raise InputError(f"PerceptualLoss kind must be auto, lpips_vgg, stlpips or none, got {kind!r}")
        self.kind = kind
        self.name = "none"
        self._net = None
        self._fast = None
        if kind != "none":
            choice = choose_perceptual(
                {"lpips_vgg": "lpips"}.get(kind, kind),
                net="vgg",
                fallback_net="alex",
                purpose="training loss",
            )
            if kind == "auto" and choice.name != "LPIPS":
                warnings.warn(f"perceptual loss falls back to ST-LPIPS-alex: {choice.reason}", stacklevel=2)
            self.name = choice.label
            self._net = _Frozen(choice.module)
            from utils.metrics import perceptual_fast

            if fast and choice.name == "ST-LPIPS" and perceptual_fast.supports(choice.module):
                self._fast = perceptual_fast.FastSTLPIPS(choice.module)

    def prepare(self, target: torch.Tensor) -> PreparedTarget:
        """Encode ``target`` ``(B, 3, H, W)`` in [0, 1] once, without gradient, for several calls."""
        target = as_nchw(target, "target")
        if self._net is None or self._fast is None:
            return PreparedTarget(target)
        self._net.on(target.device)
        with torch.no_grad():
            return PreparedTarget(target, self._fast.features(target * 2.0 - 1.0))

    def forward(self, pred: torch.Tensor, target: torch.Tensor | PreparedTarget) -> torch.Tensor:
        """Mean perceptual distance; ``pred`` ``(B, 3, H, W)`` in [0, 1], ``target`` the same or a
        :class:`PreparedTarget` of that shape. Returns a scalar."""
        prepared = target if isinstance(target, PreparedTarget) else None
        pred = as_nchw(pred, "pred")
        target = as_nchw(prepared.image if prepared else target, "target")
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        if self._net is None:
            return pred.new_zeros(())
        net = self._net.on(pred.device)
        if self._fast is not None:
            if prepared is not None and prepared.features is not None:
                target_feats = [f.to(pred.device) for f in prepared.features]
            else:
                with torch.set_grad_enabled(target.requires_grad and torch.is_grad_enabled()):
                    target_feats = self._fast.features(target.to(pred.device) * 2.0 - 1.0)
            return self._fast.distance(self._fast.features(pred * 2.0 - 1.0), target_feats).mean()
        return net(pred * 2.0 - 1.0, target.to(pred.device) * 2.0 - 1.0).mean()

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, name={self.name!r}"


class ResizedPerceptual:
    """A perceptual distance evaluated on images area-resized to ``size`` x ``size`` (``size`` 0: as given).

    LPIPS-type networks cost most of a CPU training step at 128 px; LPIPS itself was calibrated on 64 x 64
    patches, so the CPU configs compare at 64 px. ``name`` is the wrapped network's.
    """

    def __init__(self, net, size: int = 0):
        self.net, self.size = net, int(size)
        self.name = getattr(net, "name", type(net).__name__) + (f"@{self.size}px" if self.size else "")

    def _resize(self, image: torch.Tensor) -> torch.Tensor:
        if self.size and tuple(image.shape[-2:]) != (self.size, self.size):
            image = F.interpolate(image, size=(self.size, self.size), mode="area")
        return image

    def prepare(self, target: torch.Tensor):
        """The resized ``target`` encoded once (``PerceptualLoss.prepare``) when the network can, else
        the resized target itself; either can be passed as ``target`` to several calls."""
        target = self._resize(target)
        return self.net.prepare(target) if hasattr(self.net, "prepare") else target

    def __call__(self, pred: torch.Tensor, target) -> torch.Tensor:
        target = target if isinstance(target, PreparedTarget) else self._resize(target)
        return self.net(self._resize(pred), target)
