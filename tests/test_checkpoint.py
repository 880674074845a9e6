"""utils.checkpoint: round trip, atomicity, clear errors, rebuilding a model from its own spec."""

from __future__ import annotations

import pytest
import torch

from utils import checkpoint as ck
from utils.checkpoint import (
    CheckpointError,
    build_model,
    check_arch_matches,
    latest_checkpoint,
    load_checkpoint,
    make_checkpoint,
    model_entry,
    save_atomic,
)


class Tiny(torch.nn.Module):
    def __init__(self, width: int = 3, depth: int = 1):
        super().__init__()
        self.layers = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(depth)])


def tiny_make(spec):
    assert spec["name"] == "tiny"
    return Tiny(**spec["args"])


def tiny_checkpoint(stage="giif", width=3, step=7):
    net = Tiny(width)
    entry = model_entry(net, {"name": "tiny", "args": {"width": width, "depth": 1}})
    return net, make_checkpoint(stage, entry, step=step, epoch=1, config={"train": {"batch": 2}})


def test_round_trip_and_build(tmp_path):
    net, ckpt = tiny_checkpoint()
    path = save_atomic(ckpt, tmp_path / "run" / "checkpoints" / "last.pth")
    loaded = load_checkpoint(path, stage="giif")
    assert loaded["step"] == 7 and loaded["config"] == {"train": {"batch": 2}}
    rebuilt = build_model(loaded, tiny_make)
    for key, value in net.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value)
    assert latest_checkpoint(tmp_path / "run") == path
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_crash_mid_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    save_atomic({"model": {"name": "old", "args": {}, "sd": {}}}, path)
    before = path.read_bytes()

    def exploding_save(obj, handle):
        handle.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"model": {"name": "new", "args": {}, "sd": {}}}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*junk.pth"):
        load_checkpoint(tmp_path / "junk.pth")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="not a checkpoint of this project"):
        load_checkpoint(tmp_path / "foreign.pth")
    torch.save(Tiny(), tmp_path / "whole_module.pth")  # the authors' format: a pickled nn.Module
    with pytest.raises(CheckpointError, match="pickles Python objects"):
        load_checkpoint(tmp_path / "whole_module.pth")
    _, ckpt = tiny_checkpoint(stage="srhand")
    save_atomic(ckpt, tmp_path / "srhand.pth")
    with pytest.raises(CheckpointError, match="written by the 'srhand' stage.*'giif' or 'disc'"):
        load_checkpoint(tmp_path / "srhand.pth", stage=("giif", "disc"))


def test_arch_mismatch_lists_differing_args():
    check_arch_matches({"name": "giif", "args": {"a": 1}}, {"name": "giif", "args": {"a": 1}})
    with pytest.raises(CheckpointError) as info:
        check_arch_matches(
            {"name": "giif", "args": {"n_feats": 64, "use_normal": True, "old": 1}},
            {"name": "giif", "args": {"n_feats": 128, "use_normal": True, "new": 2}},
            what="GIIF",
        )
    text = str(info.value)
    assert "GIIF" in text
    assert "n_feats: checkpoint=64, expected=128" in text
    assert "old: checkpoint=1, expected=<absent>" in text and "new: checkpoint=<absent>, expected=2" in text
    assert "use_normal" not in text


def test_build_model_shape_mismatch():
    _, ckpt = tiny_checkpoint(width=3)
    ckpt["model"]["args"]["width"] = 4  # spec no longer matches the weights
    with pytest.raises(CheckpointError, match=r"layers.0.weight: checkpoint \(3, 3\), model \(4, 4\)"):
        build_model(ckpt, tiny_make)
    with pytest.raises(CheckpointError, match="no 'disc' entry"):
        build_model(ckpt, tiny_make, key="disc")


def test_latest_checkpoint_by_step(tmp_path):
    folder = ck.checkpoint_dir(tmp_path)
    assert latest_checkpoint(tmp_path) is None
    for step in (5, 120, 40):
        save_atomic({}, folder / f"step_{step:08d}.pth")
    assert latest_checkpoint(tmp_path).name == "step_00000120.pth"
