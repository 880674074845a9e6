"""Shared fixtures: a tiny synthetic capture set generated once per test session."""

from __future__ import annotations

import os

import pytest
import torch

# Tests run on 2 shared cores: keep torch from oversubscribing them.
torch.set_num_threads(int(os.environ.get("SRHAND_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def tiny_capture_root(tmp_path_factory):
    """A 3-subject synthetic capture tree (train/val/test), 64x64 raw images, 2 views x 2 frames.

    Generated with the project's own generator (``datasets.synthetic``) in a few seconds; consumers
    crop it to 32x32.
    """
    from _hand_fixtures import write_tiny_capture

    return write_tiny_capture(tmp_path_factory.mktemp("tiny_capture"))
