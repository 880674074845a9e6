import torch

from utils.seeding import keyed_generator


def test_keyed_generator_depends_on_keys_only():
    a = torch.rand(4, generator=keyed_generator(0, "train", 3))
    torch.rand(100, generator=keyed_generator(0, "train", 2))  # other draws in between change nothing
    assert torch.equal(a, torch.rand(4, generator=keyed_generator(0, "train", 3)))
    for other in (
        keyed_generator(1, "train", 3),
        keyed_generator(0, "train", 4),
        keyed_generator(0, "frame", 3),
    ):
        assert not torch.equal(a, torch.rand(4, generator=other))
