"""Benchmark machinery behind ``scripts/benchmark.py``.

What lives here: ``runner`` (entry-script subprocesses, run-store keys, parallel execution), ``runstore``
(one committed JSON per finished run under ``benchmarks/runs/``), ``fingerprint`` (the content fingerprint
of a data folder that keys the runs on it), ``provenance`` (the machine and data of a results.json's runs,
found in the run store for results written before they were recorded), ``claims`` (paired statistics and
the verdict rule), ``claims_table`` (the paper's claims and their table), ``report`` (the sections'
markdown).

Imports allowed: ``utils.config`` and ``utils.checkpoint``; only inside functions: ``utils.config``
(resolving a command's config), ``utils.checkpoint`` (its atomic writer) and, besides the standard library,
torch (the machine's description). Nothing here imports ``models``,
``datasets`` or ``trainers``: benchmark rows run the entry scripts as subprocesses.
"""
