"""Stage 3's objects (trainers/srhand/) declare every attribute where their class is defined: each class has
``__slots__`` all the way up, so no code can hang a new attribute on one of them from outside."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import torch

import trainers.srhand


def _stage3_classes():
    for info in pkgutil.iter_modules(trainers.srhand.__path__):
        module = importlib.import_module(f"trainers.srhand.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            # nn.Modules (the MANO refinement's parameters) keep their state in torch's registries, declared in
            # __init__; slots cannot cover nn.Module itself
            if (
                cls.__module__ == module.__name__
                and not issubclass(cls, BaseException)
                and not issubclass(cls, torch.nn.Module)
            ):
                yield cls


def test_every_stage3_class_declares_its_attributes():
    classes = list(_stage3_classes())
    names = {c.__name__ for c in classes}
    assert {
        "SRHandTrainer",
        "RunContext",
        "SRHandModels",
        "TrainingState",
        "SRTargets",
        "FitRecord",
        "SequenceData",
        "FitData",
        "SRHandSettings",
        "GiifFeatureCache",
        "FittedAvatar",
    } <= names
    for cls in classes:
        undeclared = [k.__qualname__ for k in cls.__mro__[:-1] if "__slots__" not in vars(k)]
        assert not undeclared, f"{cls.__module__}.{cls.__qualname__}: no __slots__ in {undeclared}"


def test_a_stray_attribute_is_refused():
    from trainers.srhand.state import TrainingState
    from trainers.srhand.targets import SRTargets

    state = TrainingState(pre={})
    with pytest.raises(AttributeError):
        state.sr_source = "hr"  # the kind of write the mixins did
    targets = SRTargets(current=torch.zeros(1))
    targets.current = torch.ones(1)  # a declared field may change
    with pytest.raises(AttributeError):
        targets.sr_orig = torch.zeros(1)
