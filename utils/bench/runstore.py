"""The committed run store of ``scripts/benchmark.py``: one small JSON file per finished benchmark run.

A benchmark run (one entry script, one resolved config, one seed) is identified by its *key*: what
produced it, with everything machine-specific normalised away, so that the same run on another
machine, from another checkout path or another ``--work`` folder has the same key. The key holds

* ``entry``:  the entry script (``main.py``, ``main_giif.py``, ``main_disc.py``);
* ``config``: the resolved config after the ``--set`` overrides (:func:`normalise_config` drops
  paths, run names, logging cadence and choices between equal computations, see :data:`MACHINE_KEYS`);
* ``inputs``: the checkpoints the run starts from, each as ``run:<key hash>`` of the benchmark run
  that produced it (``file:<sha256>`` for a checkpoint from elsewhere);
* ``seed``, ``scale`` (``cpu``/``medium``/``paper``);
* ``data``: the synthetic generator's settings and version from ``synthetic_meta.json``.

:func:`key_hash` is the SHA-256 of the key's canonical JSON. An entry lives at
``<root>/<scale>/<kind>/<row>/seed<k>-<hash8>.json`` (kind: ``sr`` or ``srhand``; row: the run's
name in the benchmark) and holds ``{"key", "key_hash", "revision", "dirty", "date", "machine",
"threads", "seconds", "metrics"}`` with the run's ``metrics.json`` trimmed of per-frame arrays
(:func:`trim_metrics`). Entries are written atomically; nothing is ever deleted here.

Imports only the standard library (the config is passed in as a plain dict).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
import re
import subprocess
from collections import Counter
from pathlib import Path

KEY_VERSION = 1  # bump when the key's definition changes (every stored entry then misses)

# Config keys that say where things are, how often to log or which equal computation runs, not what is
# computed.
MACHINE_KEYS = (
    "exp_name",
    "out_root",
    "use_tensorboard",
    "log_every",
    "ckpt_every",
    "data.data_path",
    "data.mano_dir",
    "giif_model",
    "disc_model",
    "eval.gt_mesh_dir",
    "train.log_every",
    "train.vis_every",
    "train.ckpt_every",
    "eval.max_vis_frames",
    "eval.max_vis_views",
    "rules",
    # how a result is computed, not what: each choice gives the same values (tests/test_fastpaths.py)
    "train.perceptual_impl",
    "finetune.masked_decode",
    "finetune.feature_cache_mib",
    # whether a run may start at all, not what it computes
    "data.allow_procedural_hand",
)
# Keys added after the first stored runs, at the value that computes what those runs computed: left out of
# the key at that value (so the stored runs are still found), kept at any other.
NEUTRAL_VALUES = {"data.min_views": 1}
# Generator settings that are paths (normalised to their base name).
DATA_PATH_KEYS = ("mano_dir", "hand_model")
# metrics.json keys that hold one value per frame (dropped: the table needs the means).
PER_FRAME_SUFFIXES = ("_per_frame",)
MAX_LIST = 64  # longer lists are replaced by their length


def _drop(tree: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.get(part)
        if not isinstance(tree, dict):
            return
    tree.pop(leaf, None)


def _get(tree: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def normalise_config(config: dict) -> dict:
    """A copy of a resolved config (plain dict) without :data:`MACHINE_KEYS`, and without the keys of
    :data:`NEUTRAL_VALUES` that hold their neutral value."""
    config = json.loads(json.dumps(config))
    for key in MACHINE_KEYS:
        _drop(config, key)
    for key, value in NEUTRAL_VALUES.items():
        if _get(config, key) == value:
            _drop(config, key)
    return config


def data_settings(data_root: str | Path) -> dict:
    """The generator settings and version of synthetic captures (``synthetic_meta.json``), paths reduced
    to base names; ``{"meta": None}`` when the folder has no metadata."""
    path = Path(data_root) / "synthetic_meta.json"
    if not path.is_file():
        return {"meta": None}
    meta = json.loads(path.read_text())
    config = dict(meta.get("config") or {})
    for key in DATA_PATH_KEYS:
        if config.get(key):
            config[key] = Path(str(config[key])).name
    out = {"generator": meta.get("generator"), "version": meta.get("version"), "config": config}
    if meta.get("hand_model"):
        out["hand_model"] = Path(str(meta["hand_model"])).name
    return out


def file_ref(path: str | Path) -> str:
    """``file:<sha256[:16]>`` of a checkpoint's bytes, or ``missing:<name>``."""
    path = Path(path)
    if not path.is_file():
        return f"missing:{path.name}"
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "file:" + digest.hexdigest()[:16]


def make_key(entry: str, config: dict, seed: int, scale: str, data: dict, inputs: dict | None = None) -> dict:
    """The key of one run (see the module docstring); ``config`` is normalised here."""
    return {
        "version": KEY_VERSION,
        "entry": entry,
        "scale": scale,
        "seed": int(seed),
        "config": normalise_config(config),
        "inputs": dict(sorted((inputs or {}).items())),
        "data": data,
    }


def key_hash(key: dict) -> str:
    """SHA-256 (hex) of the key's canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"


def trim_metrics(metrics, depth: int = 0):
    """``metrics.json`` without per-frame entries (keys ending in ``_per_frame``), lists longer than
    :data:`MAX_LIST` replaced by ``{"trimmed_list": length}``."""
    if isinstance(metrics, dict):
        return {
            k: trim_metrics(v, depth + 1)
            for k, v in metrics.items()
            if not str(k).endswith(PER_FRAME_SUFFIXES)
        }
    if isinstance(metrics, list):
        if len(metrics) > MAX_LIST:
            return {"trimmed_list": len(metrics)}
        return [trim_metrics(v, depth + 1) for v in metrics]
    return metrics


def git_revision(repo: str | Path) -> tuple[str, bool]:
    """(short revision, whether tracked files differ from it); ``("unknown", False)`` outside git."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True
        ).stdout.strip()
        return (rev or "unknown"), bool(dirty)
    except OSError:
        return "unknown", False


class RunStore:
    """Entries under ``root`` (``benchmarks/runs`` in the repository)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, kind: str, row: str, key: dict) -> Path:
        return (
            self.root
            / slug(key["scale"])
            / slug(kind)
            / slug(row)
            / f"seed{key['seed']}-{key_hash(key)[:8]}.json"
        )

    def get(self, kind: str, row: str, key: dict) -> dict | None:
        """The stored entry of ``key``, or None. A file whose full hash differs (an 8-digit collision)
        is not a hit."""
        path = self.path(kind, row, key)
        if not path.is_file():
            return None
        entry = json.loads(path.read_text())
        return entry if entry.get("key_hash") == key_hash(key) else None

    def others(self, kind: str, row: str, key: dict) -> list[Path]:
        """Entries of the same row and seed with another key (an older config, data or code input)."""
        own = self.path(kind, row, key)
        return sorted(p for p in own.parent.glob(f"seed{key['seed']}-*.json") if p != own)

    def put(
        self,
        kind: str,
        row: str,
        key: dict,
        metrics: dict,
        revision: str,
        dirty: bool,
        seconds: float | None = None,
        threads: int | None = None,
        machine: str | None = None,
    ) -> Path:
        """Write the entry of a finished run (atomically) and return its path."""
        path = self.path(kind, row, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "key": key,
            "key_hash": key_hash(key),
            "revision": revision,
            "dirty": bool(dirty),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine or platform.machine(),
            "threads": threads,
            "seconds": seconds,
            "metrics": trim_metrics(metrics),
        }
        from utils.checkpoint import atomic_write_text

        return atomic_write_text(path, json.dumps(entry, indent=1, sort_keys=True) + "\n")


def revision_label(entry: dict) -> str:
    return entry.get("revision", "unknown") + ("+dirty" if entry.get("dirty") else "")


def revision_mix(entries) -> list[tuple[str, int]]:
    """``[(revision label, number of runs)]`` of stored entries, most runs first (then by label)."""
    counts = Counter(revision_label(e) for e in entries)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def format_revision_mix(mix: list[tuple[str, int]]) -> str:
    """``"abc1234 (12 runs)"``, or ``"mixes 2 revisions: abc1234 (12 runs), def5678+dirty (3 runs)"``."""
    if not mix:
        return "no stored runs"
    text = ", ".join(f"`{rev}` ({n} run{'s' if n != 1 else ''})" for rev, n in mix)
    return text if len(mix) == 1 else f"mixes {len(mix)} revisions: {text}"
