"""Paired statistics of benchmark rows and the verdicts of the paper's claims (``scripts/benchmark.py``).

Rows of one benchmark table that share a seed share the synthetic data and the GIIF checkpoint, so a
claim "A beats B" is judged on the per-seed differences ``A[s] - B[s]`` rather than on the two rows'
means and spreads (which also hold the seed-to-seed variation both rows share).

Verdict rule (:func:`verdict`): with ``d`` the paired differences over ``n >= 2`` seeds, mean ``m``
and sample standard deviation ``s`` (``n - 1`` in the denominator), and ``sign = +1`` when the paper
says the metric should go up from B to A (PSNR) and ``-1`` when it should go down (P2P, LPIPS,
inconsistency):

* ``holds``        if ``sign * m > s``  (the mean difference exceeds one standard deviation of the
                   differences, in the paper's direction; equivalent to ``t = m / (s / sqrt(n)) > sqrt(n)``,
                   1.73 for 3 seeds);
* ``reversed``     if ``-sign * m > s``;
* ``within noise`` otherwise, whenever ``|m|`` is below the metric's resolution ``min_effect``
                   (the last digit the tables print: 0.01 dB, 0.001 mm, ...), which keeps two runs that
                   differ in the sixth digit with an even smaller spread from "holding", and whenever
                   ``|m|`` is below the metric's own standard error (the estimator noise of a sampled
                   metric such as P2P: ``sqrt(sum_s se_a(s)^2 + se_b(s)^2) / n`` from each run's reported
                   ``<metric>_se``), whatever the seed spread says;
* ``n/a``          with fewer than 2 paired seeds (no spread to compare with).

A pair is made only of two runs on the same data (:func:`judge` with ``data``: the runs' data
identities, ``utils.bench.runstore.data_identity``): when any seed's two runs were computed on
different captures (another content fingerprint; for legacy entries another machine or generator
settings), or on captures nobody recorded, the claim is not judged and says so
(``not paired: data differ`` / ``not paired: data unknown``).

One standard deviation of the *differences* is a deliberately modest bar: with 3 seeds no rule is a
significance test, and the verdict only says whether the effect stands out of the seed noise. How sure it
is, is said beside it: the standard error of the paired mean over the seeds (``std / sqrt(n)``), ``t``
(mean / that standard error) and ``n``, and the metric's own standard error where the runs report one.

Imports only the standard library.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

HOLDS, WITHIN_NOISE, REVERSED, NOT_AVAILABLE = "holds", "within noise", "reversed", "n/a"
DATA_DIFFER, DATA_UNKNOWN = "not paired: data differ", "not paired: data unknown"


def paired_differences(a: dict, b: dict) -> dict:
    """``{seed: a[seed] - b[seed]}`` over the seeds both have a value for (``None`` values skipped).

    Seeds are compared as strings, so ``{0: ...}`` and ``{"0": ...}`` (JSON) pair up.
    """
    a = {str(k): v for k, v in a.items() if v is not None}
    b = {str(k): v for k, v in b.items() if v is not None}
    return {seed: a[seed] - b[seed] for seed in sorted(a, key=_seed_order) if seed in b}


def _seed_order(seed: str):
    return (0, int(seed)) if seed.lstrip("-").isdigit() else (1, seed)


@dataclass
class PairedStats:
    """Mean and sample standard deviation (None below 2 values) of ``n`` paired differences."""

    n: int
    mean: float | None
    std: float | None

    @property
    def se(self) -> float | None:
        """The standard error of the mean over the seeds, ``std / sqrt(n)``."""
        return None if self.std is None else self.std / math.sqrt(self.n)

    @property
    def t(self) -> float | None:
        """``mean / (std / sqrt(n))``; ``inf`` for a nonzero mean with zero spread."""
        if self.mean is None or self.std is None:
            return None
        if self.std == 0:
            return math.copysign(math.inf, self.mean) if self.mean else 0.0
        return self.mean / (self.std / math.sqrt(self.n))


def paired_stats(differences) -> PairedStats:
    values = [float(v) for v in (differences.values() if isinstance(differences, dict) else differences)]
    if not values:
        return PairedStats(0, None, None)
    return PairedStats(
        len(values), statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None
    )


def verdict(stats: PairedStats, sign: int, min_effect: float = 0.0, metric_se: float | None = None) -> str:
    """``holds`` / ``within noise`` / ``reversed`` / ``n/a`` by the rule in the module docstring."""
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 (paper: the metric goes up) or -1 (goes down), got {sign!r}")
    if stats.n < 2 or stats.mean is None or stats.std is None:
        return NOT_AVAILABLE
    if abs(stats.mean) < min_effect or (metric_se is not None and abs(stats.mean) < metric_se):
        return WITHIN_NOISE
    if sign * stats.mean > stats.std:
        return HOLDS
    if -sign * stats.mean > stats.std:
        return REVERSED
    return WITHIN_NOISE


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: row ``better`` beats row ``worse`` in ``metric``.

    Attributes:
        words: the paper's words, with its table.
        metric: the per-seed metric name in the benchmark rows (``render_psnr``, ``p2p_mm``, ...).
        better, worse: (table, row key) of the rows compared; the difference is ``better - worse``.
        sign: +1 if the paper's direction is "higher" for ``metric``, -1 if "lower".
        min_effect: differences smaller than this are within noise (the metric's printed resolution).
    """

    words: str
    metric: str
    better: tuple[str, str]
    worse: tuple[str, str]
    sign: int
    min_effect: float = 0.0


def unpaired_data(diffs: dict, data_a: dict, data_b: dict) -> dict:
    """``{seed: [data of a, data of b]}`` for the seeds of ``diffs`` whose two runs are not known to share
    their data (identities differ, or either is unknown)."""
    data_a = {str(k): v for k, v in (data_a or {}).items()}
    data_b = {str(k): v for k, v in (data_b or {}).items()}
    return {
        seed: [data_a.get(seed), data_b.get(seed)]
        for seed in diffs
        if not data_a.get(seed) or data_a.get(seed) != data_b.get(seed)
    }


def judge(claim: Claim, per_seed: dict, data: dict | None = None) -> dict:
    """The paired difference and verdict of ``claim``.

    Args:
        per_seed: ``{(table, row key): {seed: {metric: value}}}``.
        data: ``{(table, row key): {seed: data identity}}``; when given, a claim any of whose seeds pairs
            runs on different (or unrecorded) data is not judged.

    Returns:
        ``{"differences": {seed: value}, "n", "mean", "std", "t", "verdict"}`` (``verdict`` is ``n/a``
        when a row or the metric is missing); a claim not paired for its data has ``mean`` None, the
        verdict :data:`DATA_DIFFER` or :data:`DATA_UNKNOWN` and ``unpaired``: ``{seed: [data, data]}``.
    """
    a, b = per_seed.get(claim.better), per_seed.get(claim.worse)
    if a is None or b is None:
        diffs = {}
    else:
        diffs = paired_differences(
            {s: (m or {}).get(claim.metric) for s, m in a.items()},
            {s: (m or {}).get(claim.metric) for s, m in b.items()},
        )
    unpaired = {} if data is None else unpaired_data(diffs, data.get(claim.better), data.get(claim.worse))
    if unpaired:
        unknown = any(None in pair for pair in unpaired.values())
        return {
            "differences": {},
            "n": len(diffs),
            "mean": None,
            "std": None,
            "t": None,
            "verdict": DATA_UNKNOWN if unknown else DATA_DIFFER,
            "unpaired": unpaired,
        }
    stats = paired_stats(diffs)
    metric_se = None
    if a is not None and b is not None and diffs:
        metric_se = metric_standard_error(
            {s: (a.get(s) or {}).get(f"{claim.metric}_se") for s in diffs},
            {s: (b.get(s) or {}).get(f"{claim.metric}_se") for s in diffs},
        )
    return {
        "differences": diffs,
        "n": stats.n,
        "mean": stats.mean,
        "std": stats.std,
        "se": stats.se,
        "t": stats.t,
        "metric_se": metric_se,
        "verdict": verdict(stats, claim.sign, claim.min_effect, metric_se),
    }


def metric_standard_error(se_a: dict, se_b: dict) -> float | None:
    """The standard error the metric's own estimator puts on the paired mean difference, from each run's
    reported standard error (``{seed: se}``): ``sqrt(sum_s se_a(s)^2 + se_b(s)^2) / n``; None unless every
    seed of both rows reports one."""
    values = [(se_a.get(s), se_b.get(s)) for s in se_a]
    if not values or any(x is None or y is None for x, y in values):
        return None
    return math.sqrt(sum(x * x + y * y for x, y in values)) / len(values)


def format_difference(result: dict | None, digits: int, metric_noise: str = "") -> str:
    """``"+0.123 ± 0.045 (SE 0.026, t 4.7, n=3; metric SE 0.004)"``, ``"+0.123 (n=1)"`` or ``"-"``.

    ``metric_noise``: what to say when the runs report no standard error of their own (e.g. an estimator
    that did not measure it)."""
    if not result or result.get("mean") is None:
        return "-"
    text = f"{result['mean']:+.{digits}f}"
    inside = []
    if result.get("std") is not None:
        text += f" ± {result['std']:.{digits}f}"
        se = result.get("se")
        if se is None:  # results written before the standard error was stored
            se = result["std"] / math.sqrt(result["n"])
        inside.append(f"SE {se:.{digits}f}")
        t = result.get("t")
        if t is not None:
            inside.append(f"t {t:.1f}" if math.isfinite(t) else f"t {'-' if t < 0 else ''}inf")
    inside.append(f"n={result['n']}")
    text += " (" + ", ".join(inside)
    if result.get("metric_se") is not None:
        text += f"; metric SE {result['metric_se']:.{digits + 1}f}"
    elif metric_noise:
        text += f"; {metric_noise}"
    return text + ")"
