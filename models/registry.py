"""Model registry: build a network from a self-describing ``{"name", "args"[, "sd"]}`` spec.

As in LIIF, every network class is registered under a name::

    @register("giif")
    class GIIF(nn.Module): ...

    model = make({"name": "giif", "args": {...}})

Unlike LIIF, the registered class records the arguments it was built with (defaults filled in), so
``model_spec(model)`` gives back a spec that rebuilds the same architecture, and a checkpoint
``{"model": {"name", "args", "sd"}}`` can be reloaded without the training config.

This module imports nothing heavy; the model modules are imported on the first ``make`` of a name that
is not registered yet, so ``import models`` loads no file and touches no GPU.
"""

from __future__ import annotations

import copy
import difflib
import functools
import importlib
import importlib.util
import inspect
from typing import Any, Callable

_REGISTRY: dict[str, type] = {}

# Modules holding registered networks, imported lazily by `make` (optional ones are skipped when absent).
_MODEL_MODULES = (
    "models.rdn",
    "models.hourglass",
    "models.giif",
    "models.discriminator",
    "models.avatar",
)


def register(name: str) -> Callable[[type], type]:
    """Class decorator registering a network under ``name``.

    The class's ``__init__`` is wrapped so that an instance built directly (``GIIF(...)``) or through
    ``make`` remembers ``{"name": name, "args": {...}}`` with all default arguments filled in. Arguments
    must be plain data (numbers, strings, lists, dicts, None) for the spec to be serialisable.
    """

    def decorator(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise KeyError(f"model name {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        original_init = cls.__init__
        signature = inspect.signature(original_init)

        @functools.wraps(original_init)
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            # Only the most derived registered class records its spec: a registered subclass calling
            # super().__init__ must not be overwritten by its parent's name.
            if type(self) is cls:
                bound = signature.bind(self, *args, **kwargs)
                bound.apply_defaults()
                recorded = dict(bound.arguments)
                recorded.pop(next(iter(signature.parameters)))  # `self`
                object.__setattr__(self, "_model_spec", {"name": name, "args": copy.deepcopy(recorded)})

        cls.__init__ = __init__
        cls.registry_name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def _import_model_modules(until: str | None = None) -> None:
    """Import the model modules in order, stopping once ``until`` is registered (all when None)."""
    for module_name in _MODEL_MODULES:
        if until is not None and until in _REGISTRY:
            return
        if importlib.util.find_spec(module_name) is not None:
            importlib.import_module(module_name)


def registered_names() -> list[str]:
    """Names of all registered networks (imports the model modules)."""
    _import_model_modules()
    return sorted(_REGISTRY)


def lookup(name: str) -> type:
    """The class registered as ``name`` (importing model modules as needed).

    Raises:
        KeyError: unknown name, with the closest registered name.
    """
    if name not in _REGISTRY:
        _import_model_modules(until=name)
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown model name {name!r}{hint} (registered: {sorted(_REGISTRY)})")
    return _REGISTRY[name]


def make(spec: dict, load_sd: bool = False, args: dict | None = None):
    """Build a network from ``spec = {"name": str, "args": dict, optional "sd": state_dict}``.

    Args:
        spec: the model spec; ``args`` may be omitted (all defaults).
        load_sd: load ``spec["sd"]`` (strict) into the new network.
        args: keyword arguments overriding ``spec["args"]`` (shallow update).

    Returns:
        the ``nn.Module``, on CPU; move it with ``.to(device)``.
    """
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"a model spec is a dict with a 'name' key, got {spec!r}")
    name = spec["name"]
    cls = lookup(name)
    model_args = copy.deepcopy(spec.get("args") or {})
    if args:
        model_args.update(args)
    model = cls(**model_args)
    if load_sd:
        if "sd" not in spec:
            raise KeyError(f"load_sd=True but the spec of {name!r} has no 'sd'")
        model.load_state_dict(spec["sd"])
    return model


def model_spec(module, with_sd: bool = False) -> dict:
    """The ``{"name", "args"}`` spec that rebuilds ``module`` (plus ``"sd"`` when ``with_sd``).

    The returned dict is a deep copy; the state dict (when requested) holds the live tensors.
    """
    spec = getattr(module, "_model_spec", None)
    if spec is None:
        raise TypeError(
            f"{type(module).__qualname__} was not built by a class decorated with models.register, "
            "so it carries no spec"
        )
    spec = copy.deepcopy(spec)
    if with_sd:
        spec["sd"] = module.state_dict()
    return spec
