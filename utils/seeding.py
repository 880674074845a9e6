"""Random generators keyed by what they are for, so that a draw does not depend on history."""

from __future__ import annotations

import hashlib

import torch


def keyed_generator(seed: int, *keys) -> torch.Generator:
    """A CPU generator seeded by ``seed`` and ``keys`` (anything with a stable ``str``).

    The same ``(seed, *keys)`` always gives the same stream, whatever was drawn before: a resumed run
    draws what the uninterrupted one drew, and a frame gets the same noise in whichever subset of a
    sequence it is read. Different keys give independent-looking streams (SHA-256 of the joined keys).
    """
    text = ":".join(str(k) for k in (seed, *keys)).encode()
    return torch.Generator().manual_seed(int(hashlib.sha256(text).hexdigest()[:15], 16))
