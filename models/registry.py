"""Model registry: build a network from a self-describing ``{"name", "args"[, "sd"]}`` spec.

As in LIIF, every network class is registered under a name::

    @register("giif")
    class GIIF(nn.Module): ...

    model = make({"name": "giif", "args": {...}})

Unlike LIIF, the registered class records the arguments it was built with (defaults filled in), so
``model_spec(model)`` gives back a spec that rebuilds the same architecture, and a checkpoint
``{"model": {"name", "args", "sd"}}`` can be reloaded without the training config.

Runtime arguments: ``@register(name, runtime=("chunk_size",))`` names constructor arguments that
choose how a network computes, not what it computes (a chunk size, a memory layout, a fast kernel).
The constructor accepts them but the spec does not record them, so a checkpoint rebuilds with their
defaults and the same weights load whichever way they were trained; ``make(spec, args={...})`` sets
them for one build.

The registered names are those of the modules that ``models/__init__.py`` imports (``import models``
registers them all); this module itself imports only the standard library.
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
from collections.abc import Callable
from typing import Any

_REGISTRY: dict[str, type] = {}


def register(name: str, runtime: tuple[str, ...] = ()) -> Callable[[type], type]:
    """Class decorator registering a network under ``name``.

    The class's ``__init__`` is wrapped so that an instance built directly (``GIIF(...)``) or through
    ``make`` remembers ``{"name": name, "args": {...}}`` with all default arguments filled in. Arguments
    must be plain data (numbers, strings, lists, dicts, None) for the spec to be serialisable.

    Args:
        name: the registered name (the spec's ``"name"``).
        runtime: constructor arguments that choose how the network computes, not what: accepted by the
            constructor, left out of the recorded spec (see the module docstring).

    Raises:
        KeyError: ``name`` is registered by another class.
        TypeError: a ``runtime`` name is not a keyword argument of the constructor.
    """
    runtime = (runtime,) if isinstance(runtime, str) else tuple(runtime)

    def decorator(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise KeyError(f"model name {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        original_init = cls.__init__
        signature = inspect.signature(original_init)
        unknown = [arg for arg in runtime if arg not in signature.parameters]
        if unknown:
            raise TypeError(
                f"register({name!r}, runtime=...): {unknown} are not arguments of "
                f"{cls.__qualname__}.__init__ {signature}"
            )

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
                for arg in runtime:
                    recorded.pop(arg, None)
                object.__setattr__(self, "_model_spec", {"name": name, "args": copy.deepcopy(recorded)})

        cls.__init__ = __init__
        cls.registry_name = name
        cls.registry_runtime = runtime
        _REGISTRY[name] = cls
        return cls

    return decorator


def registered_names() -> list[str]:
    """Names of all registered networks, sorted."""
    return sorted(_REGISTRY)


def lookup(name: str) -> type:
    """The class registered as ``name``.

    Raises:
        KeyError: unknown name, with the closest registered name.
    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown model name {name!r}{hint} (registered: {sorted(_REGISTRY)})")
    return _REGISTRY[name]


def default_args(name: str) -> dict:
    """The defaults of the recorded (non-runtime) constructor arguments of the network registered as ``name``.

    A spec written before an argument existed lacks it and rebuilds with this default; comparisons of a
    checkpoint's spec with a new one (``utils.checkpoint.check_arch_matches``) read absent arguments so.

    Raises:
        KeyError: unknown name (see ``lookup``).
    """
    cls = lookup(name)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # without `self`
    return {
        p.name: copy.deepcopy(p.default)
        for p in params
        if p.default is not inspect.Parameter.empty and p.name not in cls.registry_runtime
    }


def make(spec: dict, load_sd: bool = False, args: dict | None = None):
    """Build a network from ``spec = {"name": str, "args": dict, optional "sd": state_dict}``.

    Args:
        spec: the model spec; ``args`` may be omitted (all defaults).
        load_sd: load ``spec["sd"]`` (strict) into the new network.
        args: keyword arguments overriding ``spec["args"]`` (shallow update); this is also where runtime
            arguments (not recorded in specs) are set.

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
