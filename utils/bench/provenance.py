"""Which machine and data a results.json's runs come from, for results written before they were recorded.

Since issue 22 every table row of ``scripts/benchmark.py`` records, per seed, the run's ``provenance``
(``runstore.provenance``: machine, data identity, key hash) and every table its machine and data mixes.
A results.json written before has neither; :func:`fill_from_store` finds, for each row and seed, the
stored entries of that row and seed whose metrics are the row's (exact equality of the numbers the
table printed: JSON round-trips floats exactly) and records theirs. A row and seed matched by no entry,
or by entries that disagree on machine or data, stays without provenance: its claims then say the data
is unknown.

Imports only the standard library and :mod:`utils.bench.runstore`.
"""

from __future__ import annotations

import json
from pathlib import Path

from utils.bench import runstore

BACKFILLED = "run store entries with the table's metrics (results written before issue 22)"


def _entries(store: Path, scale: str, kind: str, row: str, seed) -> list[dict]:
    folder = store / runstore.slug(scale) / kind / runstore.slug(row)
    return [json.loads(p.read_text()) for p in sorted(folder.glob(f"seed{seed}-*.json"))]


def _srhand_match(metrics: dict, row: dict) -> bool:
    """Whether a main.py entry's metrics are those of a table row's seed (``_row_metrics`` in the script)."""
    sr = ((metrics.get("sr") or {}).get("all") or {}).get("psnr_masked")
    render = (metrics.get("render") or {}).get("all") or {}
    return (
        metrics.get("p2p_mm") == row.get("p2p_mm")
        and render.get("psnr_masked") == row.get("render_psnr")
        and sr == row.get("sr_psnr")
    )


def _one(matches: list[dict]) -> dict | None:
    """The provenance of the matching entries when they agree on machine and data, else None; of several such
    entries (the same run under two keys: a config key added at its neutral value, another input checkpoint of
    an SR source the row does not read), the newest one's."""
    matches = sorted(matches, key=lambda entry: entry.get("date") or "")
    found = {(p["machine"], p["data"]): p for p in map(runstore.provenance, matches)}
    return next(iter(found.values())) if len(found) == 1 else None


def _mixes(table: dict, by_row_seed: list) -> None:
    """A table's machine and data mixes over its distinct runs (``None``: not found, counted as unknown)."""
    runs = {}
    for p in by_row_seed:
        runs[p["key_hash"] if p else f"unknown-{len(runs)}"] = p
    machines, data = {}, {}
    for p in runs.values():
        machine = p["machine"] if p else "unknown"
        identity = p["data"] if p else None
        machines[machine] = machines.get(machine, 0) + 1
        data[identity] = data.get(identity, 0) + 1
    table["machines"] = sorted(machines.items(), key=lambda item: (-item[1], item[0]))
    table["data"] = sorted(data.items(), key=lambda item: (-item[1], str(item[0])))
    table["provenance_from"] = BACKFILLED


def fill_srhand_table(table: dict, store: Path, scale: str) -> bool:
    """Fill the per-seed provenance of a main.py table (``rows`` of ``{key, seeds}``) when it has none."""
    rows = table.get("rows") or {}
    if "machines" in table or not rows:
        return False
    found = []
    for row in rows.values():
        if row.get("reference") or row.get("provenance"):
            continue
        row["provenance"] = {}
        for seed, metrics in row["seeds"].items():
            matches = [
                e
                for e in _entries(store, scale, "srhand", row["key"], seed)
                if _srhand_match(e["metrics"], metrics)
            ]
            row["provenance"][str(seed)] = _one(matches)
            found.append(row["provenance"][str(seed)])
    source = next((r for r in rows.values() if r.get("key") == "srhand"), None)
    for row in rows.values():  # the input MANO row is made of the SRHand row's runs
        if row.get("reference") and source is not None:
            row["provenance"] = source.get("provenance")
    _mixes(table, found)
    return True


def fill_sr_table(table: dict, store: Path, scale: str) -> bool:
    """Fill the per-seed provenance of the SR section (``per_seed`` by row label) when it has none."""
    if "machines" in table or not table.get("per_seed"):
        return False
    table["provenance"], found = {}, []
    for label, by_seed in table["per_seed"].items():
        name, _, method = (table.get("row_keys") or {}).get(label, ":").partition(":")
        if not name:
            continue
        table["provenance"][label] = {}
        for seed, results in by_seed.items():
            matches = [
                e
                for e in _entries(store, scale, "sr", name, seed)
                if (e["metrics"].get("results") or {}).get(method) == results
            ]
            table["provenance"][label][str(seed)] = _one(matches)
            found.append(table["provenance"][label][str(seed)])
    _mixes(table, found)
    return True


def fill_from_store(results: dict, store: str | Path, scale: str) -> int:
    """Fill in the provenance of every table of a results.json (one scale) that lacks it; returns how
    many tables were filled."""
    store, filled = Path(store), 0
    for name, section in results.items():
        result = (section or {}).get("result") if isinstance(section, dict) else None
        if not isinstance(result, dict):
            continue
        if name == "sr":
            filled += fill_sr_table(result, store, scale)
        elif name in ("srhand", "ablation", "noise"):
            filled += fill_srhand_table(result, store, scale)
        elif name == "static":
            tables = [*(result.get("factors") or {}).values(), result.get("upper_bound") or {}]
            filled += sum(fill_srhand_table(t, store, scale) for t in tables)
        elif name == "identity":
            filled += sum(
                fill_srhand_table(t, store, scale) for t in (result.get("identities") or {}).values()
            )
    return filled
