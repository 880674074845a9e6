"""The data fingerprint that keys benchmark runs by the content of their captures (utils/bench/fingerprint.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from utils.bench import fingerprint

META = {
    "generator": "datasets.synthetic",
    "config": {"seed": 0, "hr_size": 128, "mano_dir": "/home/a/mano"},
    "hand_model": "/home/a/assets/PROCEDURAL_HAND_RIGHT.pkl",
    "subjects": [
        {
            "split": "test",
            "heldout_cameras": ["cam400201"],
            "annotation": {"fit": {"seconds": 16.76, "iterations": 190}},
        }
    ],
    "seconds": 61.2,
    "bytes": 85683027,
}
FILES = {  # a synthetic capture in the InterHand2.6M layout, in miniature
    "images/test/Capture0/ROM03/cam400101/image10000.jpg": b"\xff\xd8 pixels of view 1",
    "images/test/Capture0/ROM03/cam400102/image10000.jpg": b"\xff\xd8 pixels of view 2",
    "gt_masks/test/Capture0/ROM03/cam400101/mask10000.png": b"\x89PNG mask",
    "gt_meshes/test/Capture0/ROM03.npz": b"PK mesh",
    "annotations/test/InterHand2.6M_test_MANO_NeuralAnnot.json": b'{"0": {"10000": {"right": [0.1]}}}',
    "annotations/test/InterHand2.6M_test_camera.json": b'{"0": {"campos": {}}}',
    "annotations/test/InterHand2.6M_test_joint_3d.json": b'{"0": {}}',
    "annotations/test/InterHand2.6M_test_data.json": b'{"images": []}',
}


def _capture(root: Path, meta: dict | None = None, **changed: bytes) -> Path:
    for rel, data in {**FILES, **changed}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "synthetic_meta.json").write_text(json.dumps(meta or META, indent=1))
    return root


def _age(root: Path, seconds: float = 60.0) -> None:
    """Date every file back, as files written a minute ago (the cache skips files younger than 2 s)."""
    stamp = os.stat(root).st_mtime - seconds
    for path in root.rglob("*"):
        os.utime(path, (stamp, stamp))


def test_same_content_elsewhere_same_fingerprint(tmp_path):
    """Another folder, other modification times, other timings (the run's, each annotation fit's) and absolute
    paths in the generator's record: the same captures, the same fingerprint."""
    a = fingerprint.data_fingerprint(_capture(tmp_path / "a"))
    moved = {
        **META,
        "seconds": 742.4,
        "bytes": 85000000,
        "hand_model": "/elsewhere/PROCEDURAL_HAND_RIGHT.pkl",
    }
    moved["config"] = {**META["config"], "mano_dir": "/other/mano"}
    moved["subjects"] = [{**META["subjects"][0], "annotation": {"fit": {"seconds": 1.45, "iterations": 190}}}]
    b = fingerprint.data_fingerprint(_capture(tmp_path / "elsewhere" / "b", meta=moved))
    assert a.sha256 == b.sha256 and len(a.sha256) == 64 and a.ref == "sha256:" + a.sha256
    assert a.files == len(FILES) + 1 and a.parts.keys() == {
        "images",
        "masks",
        "meshes",
        "annotations",
        "cameras",
        "meta",
    }
    assert a.parts["images"]["files"] == 2 and a.parts["annotations"]["files"] == 3


@pytest.mark.parametrize(
    ("rel", "part"),
    [
        ("images/test/Capture0/ROM03/cam400101/image10000.jpg", "images"),
        ("gt_masks/test/Capture0/ROM03/cam400101/mask10000.png", "masks"),
        ("annotations/test/InterHand2.6M_test_MANO_NeuralAnnot.json", "annotations"),
        ("annotations/test/InterHand2.6M_test_camera.json", "cameras"),
        ("gt_meshes/test/Capture0/ROM03.npz", "meshes"),
    ],
)
def test_one_byte_changes_the_fingerprint_and_names_the_part(tmp_path, rel, part):
    a = fingerprint.data_fingerprint(_capture(tmp_path / "a"))
    b = fingerprint.data_fingerprint(_capture(tmp_path / "b", **{rel: FILES[rel][:-1] + b"!"}))
    assert a.sha256 != b.sha256
    assert fingerprint.differing_parts(a.parts, b.parts) == [part]
    assert fingerprint.differing_parts(a.part_digests(), b.part_digests()) == [part]


def test_meta_content_and_file_set_count(tmp_path):
    """What runs read from the generator's record (held-out cameras) counts; so do added, removed and renamed
    files. Hidden files (the cache, editor files) do not."""
    base = fingerprint.data_fingerprint(_capture(tmp_path / "a")).sha256
    meta = {**META, "subjects": [{**META["subjects"][0], "heldout_cameras": ["cam400202"]}]}
    assert fingerprint.data_fingerprint(_capture(tmp_path / "b", meta=meta)).sha256 != base
    fit = {"seconds": 16.76, "iterations": 191}
    meta = {**META, "subjects": [{**META["subjects"][0], "annotation": {"fit": fit}}]}
    assert fingerprint.data_fingerprint(_capture(tmp_path / "b2", meta=meta)).sha256 != base
    c = _capture(tmp_path / "c")
    (c / "images" / "extra.jpg").write_bytes(b"x")
    assert fingerprint.data_fingerprint(c).sha256 != base
    d = _capture(tmp_path / "d")
    rel = "images/test/Capture0/ROM03/cam400102/image10000.jpg"
    (d / rel).rename(d / rel.replace("10000", "10006"))
    assert fingerprint.data_fingerprint(d).sha256 != base
    e = _capture(tmp_path / "e")
    (e / ".DS_Store").write_bytes(b"finder")
    (e / "images" / ".image.jpg.swp").write_bytes(b"vim")
    assert fingerprint.data_fingerprint(e).sha256 == base


def test_interhand_and_goliath_layouts(tmp_path):
    """Any folder: a real InterHand2.6M tree (no synthetic_meta.json) or a Goliath capture fingerprints too."""
    inter = tmp_path / "InterHand2.6M_5fps_batch1"
    for rel, data in FILES.items():
        if not rel.startswith(("gt_", "images")):
            (inter / rel).parent.mkdir(parents=True, exist_ok=True)
            (inter / rel).write_bytes(data)
    (inter / "images/train/Capture0/ROM01/cam400262").mkdir(parents=True)
    (inter / "images/train/Capture0/ROM01/cam400262/image0001.jpg").write_bytes(b"jpg")
    fp = fingerprint.data_fingerprint(inter)
    assert set(fp.parts) == {"annotations", "cameras", "images"}
    goliath = tmp_path / "m--20230714--0903--QVC422--pilot--ProjectGoliath--Hands--left"
    for rel in (
        "image/cam400101.zip",
        "segmentation_parts/cam400101.zip",
        "calibration.json",
        "kinematic_tracking/registration_vertices.npy",
        "frame_splits_list.csv",
    ):
        (goliath / rel).parent.mkdir(parents=True, exist_ok=True)
        (goliath / rel).write_bytes(rel.encode())
    fp = fingerprint.data_fingerprint(goliath)
    assert {p: fp.parts[p]["files"] for p in fp.parts} == {
        "images": 1,
        "masks": 1,
        "cameras": 1,
        "annotations": 1,
        "other": 1,
    }
    with pytest.raises(FileNotFoundError, match="no data folder"):
        fingerprint.data_fingerprint(tmp_path / "missing")


def test_cache_makes_it_cheap_and_sees_changes(tmp_path):
    """The second fingerprint reads no file (size and mtime match the cache); a file rewritten (other size or
    mtime) is read again, and the result is the fingerprint of the new content, as without a cache."""
    root = _capture(tmp_path / "a")
    _age(root)
    first = fingerprint.data_fingerprint(root)
    assert first.hashed == len(FILES) + 1 and (root / fingerprint.CACHE_NAME).is_file()
    again = fingerprint.data_fingerprint(root)
    assert again.hashed == 0 and again.sha256 == first.sha256
    rel = "gt_masks/test/Capture0/ROM03/cam400101/mask10000.png"
    (root / rel).write_bytes(b"\x89PNG MASK")  # same size, new mtime
    changed = fingerprint.data_fingerprint(root)
    assert changed.hashed == 1 and changed.sha256 != first.sha256
    assert changed.sha256 == fingerprint.data_fingerprint(root, use_cache=False).sha256
    # A cache of another definition (an older file digest) is ignored, as is a corrupt one.
    cache = json.loads((root / fingerprint.CACHE_NAME).read_text())
    (root / fingerprint.CACHE_NAME).write_text(json.dumps({**cache, "format": "older"}))
    assert fingerprint.data_fingerprint(root).hashed == len(FILES) + 1
    (root / fingerprint.CACHE_NAME).write_text("{not json")
    assert fingerprint.data_fingerprint(root).sha256 == changed.sha256


def test_fresh_files_are_not_cached(tmp_path):
    """A file modified within RACY_SECONDS of being hashed could change again within the same timestamp: it is
    hashed every time until it is older."""
    root = _capture(tmp_path / "a")
    fingerprint.data_fingerprint(root)
    assert fingerprint.data_fingerprint(root).hashed == len(FILES) + 1


def test_unwritable_cache(tmp_path):
    """Where the cache cannot be written (a shared, read-only dataset; here its path is taken by a folder), the
    fingerprint is computed without one, the same."""
    root = _capture(tmp_path / "a")
    _age(root)
    expected = fingerprint.data_fingerprint(root, use_cache=False).sha256
    (root / fingerprint.CACHE_NAME).mkdir()
    first = fingerprint.data_fingerprint(root)
    assert first.sha256 == expected and fingerprint.data_fingerprint(root).hashed == len(FILES) + 1
    assert not list(root.glob("*.tmp")) and not list(root.glob(".*.tmp"))
