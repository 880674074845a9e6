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
* ``data``: ``{"fingerprint", "settings"}``: the content fingerprint of the data folder the run reads
  (``sha256:<hex>``, :mod:`utils.bench.fingerprint`), so that runs on captures that differ in any byte
  never share a key, and, readable beside it, the generator's settings and version from
  ``synthetic_meta.json`` (:func:`data_settings`).

:func:`key_hash` is the SHA-256 of the key's canonical JSON. An entry lives at
``<root>/<scale>/<kind>/<row>/seed<k>-<hash8>.json`` (kind: ``sr`` or ``srhand``; row: the run's
name in the benchmark) and holds ``{"key", "key_hash", "revision", "dirty", "date", "machine",
"threads", "seconds", "metrics"}`` with the run's ``metrics.json`` trimmed of per-frame arrays
(:func:`trim_metrics`), and since key version 2 ``data_parts`` (the fingerprint's digest per part:
images, masks, annotations, cameras, meshes, meta) and ``machine_info`` (CPU, instruction set torch
dispatches to, library versions). Entries are written atomically; nothing is ever deleted here, and a
run executed again under a stored key (its checkpoint was needed on another machine) does not replace
the stored metrics: it is appended to the entry's ``reruns``.

**Legacy entries** (key version 1, before issue 22) name the data by the generator's settings only, so
the captures they were computed on are unknown beyond "made on the machine their ``machine`` field
names, with these settings". Each current key has a version-1 *twin* (:func:`legacy_twin`: the same key
with the settings as its data and its input runs' twins as inputs); :meth:`RunStore.find` returns the
twin's entry only when its ``machine`` is one the caller accepts (by default the machine running the
benchmark), and :func:`data_identity` gives such an entry the data identity
``legacy:<machine>:<settings hash>``, equal only to legacy entries of that machine and those settings.

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

# Bump when the key's definition changes (every stored entry then misses). 2 (issue 22): the data by its
# content fingerprint; 1: by the generator's settings (legacy entries, found through their twins).
KEY_VERSION = 2
LEGACY_VERSION = 1
LEGACY_PREFIX = "legacy:"

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
NEUTRAL_VALUES = {
    "data.min_views": 1,
    "eval.p2p_estimator": "iid",
    "data.mask_source": "mano",
    "data.mask_margin": 0.04,  # read only with data.mask_source capture | dilated
    "eval.pseudo_gt_mesh_dir": "",
    "model.args.residual": "none",
}
# The camera degradation's ranges (issue 24): read only where a degradation key says camera.
CAMERA_KEY = "data.lr_camera"
DEGRADATION_KEYS = ("train.degradation", "eval.degradation", "data.degradation")
# Keys read only with data.dataset = goliath (the MANO fit of its registrations), added after the first runs.
GOLIATH_ONLY_KEYS = ("data.goliath.fit", "data.goliath.fit_policy")
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


def config_value(entry: dict, dotted: str):
    """The value of the config key ``dotted`` a stored run was made with: its key's, or the neutral value of a
    key :func:`normalise_config` leaves out at that value (:data:`NEUTRAL_VALUES`); None when neither."""
    value = _get(entry["key"]["config"], dotted)
    return NEUTRAL_VALUES.get(dotted) if value is None else value


def normalise_config(config: dict) -> dict:
    """A copy of a resolved config (plain dict) without :data:`MACHINE_KEYS`, and without the keys of
    :data:`NEUTRAL_VALUES` that hold their neutral value, of the Goliath-only keys on other data, of
    ``data.lr_camera`` where no degradation key says ``camera``, and of the ``refine`` section when refinement
    is off."""
    config = json.loads(json.dumps(config))
    for key in MACHINE_KEYS:
        _drop(config, key)
    for key, value in NEUTRAL_VALUES.items():
        if _get(config, key) == value:
            _drop(config, key)
    if _get(config, "refine") is not None and not _get(config, "refine.enabled"):
        _drop(
            config, "refine"
        )  # MANO refinement off: its settings have no effect (added after the first runs)
    if (_get(config, "data.dataset") or "interhand") != "goliath":
        for key in GOLIATH_ONLY_KEYS:  # no effect on other data
            _drop(config, key)
    if all(_get(config, key) != "camera" for key in DEGRADATION_KEYS):
        _drop(config, CAMERA_KEY)  # no effect without the camera degradation
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


def data_key(settings: dict, fingerprint: str) -> dict:
    """A key's ``data``: the folder's content fingerprint (``sha256:<hex>``) and its generator settings."""
    return {"fingerprint": fingerprint, "settings": settings}


def make_key(entry: str, config: dict, seed: int, scale: str, data: dict, inputs: dict | None = None) -> dict:
    """The key of one run (see the module docstring); ``config`` is normalised here, ``data`` is a
    :func:`data_key`."""
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


def run_ref(key: dict) -> str:
    """How a downstream key names the run of ``key`` as its input: ``run:<key hash[:16]>``."""
    return "run:" + key_hash(key)[:16]


def legacy_twin(key: dict, twins: dict) -> dict:
    """The version-1 key a run of ``key`` had before issue 22: the data named by its settings only, input
    runs by their own twins (``twins``: ``run:<hash>`` of a current key -> that of its twin; a run input
    without a twin keeps its current reference, so no legacy entry matches it)."""
    return {
        **key,
        "version": LEGACY_VERSION,
        "data": key["data"]["settings"],
        "inputs": {name: twins.get(ref, ref) for name, ref in key["inputs"].items()},
    }


def is_legacy(entry: dict | None) -> bool:
    """Whether a stored entry has a pre-fingerprint key (version 1): its data content is unknown."""
    return bool(entry) and int(entry["key"].get("version", LEGACY_VERSION)) < 2


def settings_hash(settings) -> str:
    """First 8 hex digits of the SHA-256 of the generator settings' canonical JSON."""
    return key_hash({"settings": settings})[:8]


def data_identity(entry: dict) -> str:
    """What data a stored run was computed on: ``sha256:<hex>`` (its key's fingerprint), or for a legacy
    entry ``legacy:<machine>:<settings hash>`` (equal only for the same machine and generator settings)."""
    key = entry["key"]
    if is_legacy(entry):
        return f"{LEGACY_PREFIX}{entry.get('machine') or 'unknown'}:{settings_hash(key.get('data'))}"
    return key["data"]["fingerprint"]


def data_label(identity: str | None) -> str:
    """A data identity for a table: ``data `1a2b3c4d5e6f` `` or ``legacy data of `<machine>` (settings `…`)``."""
    if not identity:
        return "unknown data"
    if identity.startswith(LEGACY_PREFIX):
        machine, _, settings = identity[len(LEGACY_PREFIX) :].rpartition(":")
        return f"legacy data of `{machine}` (settings `{settings}`)"
    return f"data `{identity.split(':', 1)[-1][:12]}`"


def provenance(entry: dict) -> dict:
    """``{"machine", "data", "key_hash"}`` of a stored entry: what a table row records per seed."""
    return {
        "machine": entry.get("machine") or "unknown",
        "data": data_identity(entry),
        "key_hash": entry.get("key_hash", "")[:16],
    }


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

    def find(self, kind: str, row: str, key: dict, legacy: dict | None = None, machines=()) -> dict | None:
        """The entry of ``key``; else that of its version-1 twin ``legacy`` when the twin's entry was made
        on one of ``machines`` (its data is then assumed to be that machine's captures of those settings);
        else None."""
        entry = self.get(kind, row, key)
        if entry is None and legacy is not None:
            twin = self.get(kind, row, legacy)
            if twin is not None and twin.get("machine") in set(machines):
                return twin
        return entry

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
        data_parts: dict | None = None,
        machine_info: dict | None = None,
        replace: bool = False,
    ) -> Path:
        """Write the entry of a finished run (atomically) and return its path.

        When an entry of ``key`` is already stored and not ``replace`` (``--fresh``), its metrics stay and
        this run is appended to its ``reruns`` (date, machine, revision, seconds, metrics): a run executed
        again elsewhere never overwrites what the tables were made of.
        """
        path = self.path(kind, row, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        run = {
            "revision": revision,
            "dirty": bool(dirty),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine or platform.machine(),
            "threads": threads,
            "seconds": seconds,
            "metrics": trim_metrics(metrics),
        }
        stored = None if replace else self.get(kind, row, key)
        if stored is not None:
            stored.setdefault("reruns", []).append(run)
            _write_json(path, stored)
            return path
        entry = {"key": key, "key_hash": key_hash(key), **run}
        if data_parts is not None:
            entry["data_parts"] = data_parts
        if machine_info is not None:
            entry["machine_info"] = machine_info
        _write_json(path, entry)
        return path


def _write_json(path: Path, entry: dict) -> None:
    from utils.checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(entry, indent=1, sort_keys=True) + "\n")


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


def machine_mix(entries) -> list[tuple[str, int]]:
    """``[(machine, number of runs)]`` of stored entries (their ``machine`` field), most runs first."""
    counts = Counter(e.get("machine") or "unknown" for e in entries)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def data_mix(entries) -> list[tuple[str, int]]:
    """``[(data identity, number of runs)]`` of stored entries (:func:`data_identity`), most runs first."""
    counts = Counter(data_identity(e) for e in entries)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _runs(n: int) -> str:
    return f"{n} run{'s' if n != 1 else ''}"


def format_machine_mix(mix: list[tuple[str, int]]) -> str:
    """``"`Intel(R) Xeon(R) Processor` (12 runs)"``, or ``"mixes 2 machines: `A` (10 runs), `B` (2 runs)"``."""
    if not mix:
        return "no stored runs"
    text = ", ".join(f"`{machine}` ({_runs(n)})" for machine, n in mix)
    return text if len(mix) == 1 else f"mixes {len(mix)} machines: {text}"


def format_data_mix(mix: list[tuple[str, int]]) -> str:
    """The data identities of a table's runs (:func:`data_label`), saying when they mix."""
    if not mix:
        return "no stored runs"
    text = ", ".join(f"{data_label(identity)} ({_runs(n)})" for identity, n in mix)
    return text if len(mix) == 1 else f"mixes {len(mix)} data sets: {text}"
