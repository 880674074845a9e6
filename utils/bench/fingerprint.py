"""Content fingerprints of data folders: what the run store's keys name the data by.

Two captures made with the same generator settings are not necessarily the same captures: the images,
masks and fitted MANO annotations of ``scripts/make_synthetic.py`` differ between CPUs
(``docs/benchmark_protocol.md``, "Machines and data"). A run is therefore keyed by the *content* of the
folder it reads, not by the settings that made it.

Definition (:func:`data_fingerprint`): every regular file under the data folder (symbolic links
followed), except names starting with ``.`` (this module's cache, editor and OS files) and
``__pycache__``, in the order of their relative POSIX paths; for each, ``<relative path> NUL <SHA-256 of
its bytes> LF``; the fingerprint is the SHA-256 of ``FORMAT`` followed by those lines. One file is read
differently: ``synthetic_meta.json`` (the generator's record, which runs read for held-out frames and
cameras) is hashed as its canonical JSON without the fields that vary between two identical
generations (every ``seconds``: the run's and each annotation fit's time; ``bytes``) and with paths
reduced to base names. The same lines, grouped by
:func:`part_of` (images, masks, normals, annotations, cameras, meshes, meta, other), give one digest per
part, so two fingerprints that differ also say where. Any folder layout works (synthetic captures,
InterHand2.6M, a Goliath capture): the fingerprint does not depend on what the files mean.

Cost: reading every byte once (the CPU-scale captures: 1,842 files, 82 MiB, 0.14-0.24 s), then
a cache (``<folder>/.fingerprint_cache.json``, written when the folder is writable) keyed on each
file's relative path, size and modification time (ns) makes a recomputation one ``stat`` per file. A
file rewritten within the same nanosecond timestamp at the same size would be missed; entries younger
than :data:`RACY_SECONDS` are not cached, so a file changed right after being hashed is read again.

Imports only the standard library.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

FORMAT = b"srhand-data-fingerprint-v1\n"
CACHE_NAME = ".fingerprint_cache.json"
# The cache's own format: bumped with any change of how one file is digested (e.g. what canonical_meta
# drops), so a digest of the older definition is never reused.
CACHE_FORMAT = "srhand-data-fingerprint-cache-v2"
META_NAME = "synthetic_meta.json"
# Fields of synthetic_meta.json that differ between two generations of the same captures: timings (the
# whole run's and each annotation fit's ``seconds``, at any depth) and the folder's disk usage (``bytes``).
META_VOLATILE_ANYWHERE = ("seconds",)
META_VOLATILE_TOP = ("bytes",)
META_PATH_KEYS = ("hand_model", "config.mano_dir")
RACY_SECONDS = 2.0
# (part, path components or name fragments that put a file there), first match wins; lower case.
PART_RULES = (
    ("meta", ("synthetic_meta.json",)),
    ("masks", ("gt_masks", "masks", "segmentation")),
    ("normals", ("gt_normals",)),
    ("meshes", ("gt_meshes", "meshes", "scan", "scans")),
    ("cameras", ("camera", "calib")),
    ("annotations", ("annotations", "kinematic_tracking", "keypoints", "mano")),
    ("images", ("images", "image")),
)
PARTS = (*(name for name, _ in PART_RULES), "other")


def part_of(relpath: str) -> str:
    """The part a file belongs to, by its relative path: a folder named as in :data:`PART_RULES` (or that
    name and ``_...``: Goliath's ``segmentation_parts``), or a file name containing ``camera``/``calib``
    (InterHand's ``*_camera.json``, Goliath's calibration)."""
    parts = relpath.lower().split("/")
    folders, name = parts[:-1], parts[-1]
    for part, words in PART_RULES:
        if part == "meta":
            if name in words:
                return part
        elif part == "cameras":
            if any(w in name for w in words) or any(w in f for f in folders for w in words):
                return part
        elif any(f == w or f.startswith(w + "_") for f in folders for w in words):
            return part
    return "other"


@dataclass
class Fingerprint:
    """The content fingerprint of a data folder.

    Attributes:
        sha256: the folder's digest (hex, 64 digits); ``ref`` is ``sha256:<it>``.
        files, bytes: how many files and bytes it covers.
        parts: ``{part: {"sha256", "files", "bytes"}}`` for the parts present.
        seconds: how long computing it took (hashing plus the cache's stat calls).
        hashed: files whose bytes were read (the others came from the cache).
    """

    sha256: str
    files: int
    bytes: int
    parts: dict = field(default_factory=dict)
    seconds: float = 0.0
    hashed: int = 0

    @property
    def ref(self) -> str:
        return "sha256:" + self.sha256

    def part_digests(self, digits: int = 16) -> dict:
        """``{part: <first digits of its sha256>}``: what a run-store entry records beside its key."""
        return {part: info["sha256"][:digits] for part, info in sorted(self.parts.items())}


def _files(root: Path) -> list[str]:
    out = []
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        rel = Path(folder).relative_to(root).as_posix()
        for name in names:
            if name.startswith("."):
                continue
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                out.append(name if rel == "." else f"{rel}/{name}")
    return sorted(out)


def _without(tree, names: tuple):
    if isinstance(tree, dict):
        return {k: _without(v, names) for k, v in tree.items() if k not in names}
    if isinstance(tree, list):
        return [_without(v, names) for v in tree]
    return tree


def canonical_meta(data: bytes) -> bytes:
    """``synthetic_meta.json`` as canonical JSON without its timings and disk usage
    (:data:`META_VOLATILE_ANYWHERE`, :data:`META_VOLATILE_TOP`), paths as base names."""
    meta = _without(json.loads(data), META_VOLATILE_ANYWHERE)
    for key in META_VOLATILE_TOP:
        meta.pop(key, None)
    for dotted in META_PATH_KEYS:
        *parents, leaf = dotted.split(".")
        node = meta
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(leaf):
            node[leaf] = Path(str(node[leaf])).name
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


def file_digest(path: Path, relpath: str) -> str:
    """SHA-256 (hex) of a file's bytes (of :func:`canonical_meta` for ``synthetic_meta.json``)."""
    if relpath == META_NAME:
        return hashlib.sha256(canonical_meta(path.read_bytes())).hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_cache(path: Path) -> dict:
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return cache.get("files", {}) if cache.get("format") == CACHE_FORMAT else {}


def _write_cache(path: Path, files: dict) -> bool:
    """Write the cache; False when the folder is not writable (the fingerprint then goes without it)."""
    from utils.checkpoint import WriteFailedError, atomic_write_text

    try:
        atomic_write_text(path, json.dumps({"format": CACHE_FORMAT, "files": files}))
        return True
    except WriteFailedError:
        return False


def data_fingerprint(root: str | Path, use_cache: bool = True) -> Fingerprint:
    """The content fingerprint of the folder ``root`` (see the module docstring).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    start = time.time()
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no data folder to fingerprint")
    cache_path = root / CACHE_NAME
    cached = _read_cache(cache_path) if use_cache else {}
    fresh, hashed = {}, 0
    total = hashlib.sha256(FORMAT)
    parts: dict[str, dict] = {}
    now, num_bytes = time.time(), 0
    for rel in _files(root):
        path = root / rel
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        hit = cached.get(rel)
        if hit and hit[:2] == stamp:
            digest = hit[2]
        else:
            digest, hashed = file_digest(path, rel), hashed + 1
        if now - st.st_mtime_ns / 1e9 > RACY_SECONDS:
            fresh[rel] = [*stamp, digest]
        line = f"{rel}\0{digest}\n".encode()
        total.update(line)
        part = parts.setdefault(part_of(rel), {"hash": hashlib.sha256(FORMAT), "files": 0, "bytes": 0})
        part["hash"].update(line)
        part["files"] += 1
        part["bytes"] += st.st_size
        num_bytes += st.st_size
    if use_cache and fresh != cached:
        _write_cache(cache_path, fresh)  # a read-only folder only costs the hashing next time
    return Fingerprint(
        sha256=total.hexdigest(),
        files=sum(p["files"] for p in parts.values()),
        bytes=num_bytes,
        parts={
            name: {"sha256": p["hash"].hexdigest(), "files": p["files"], "bytes": p["bytes"]}
            for name, p in sorted(parts.items())
        },
        seconds=time.time() - start,
        hashed=hashed,
    )


def differing_parts(a: dict, b: dict) -> list[str]:
    """The parts whose digests differ between two :meth:`Fingerprint.part_digests` (or ``parts``) dicts."""

    def digest(value):
        return value["sha256"] if isinstance(value, dict) else value

    return sorted(p for p in set(a) | set(b) if digest(a.get(p) or "") != digest(b.get(p) or ""))
