"""The paper's claims as paired comparisons of ``scripts/benchmark.py`` rows, and Table 1's input-MANO row.

Row summaries (``summarise``: per-seed metrics with mean ± std), the reference row "input MANO mesh (no
reconstruction)" built from the SRHand row's evaluations, the claims (:data:`CLAIMS`: the paper's words,
the two rows compared, the metric and the paper's direction), their judging per scale from a
``results.json`` and the markdown claims table. The statistics and verdict rule live in
:mod:`utils.bench.claims`; ``docs/benchmark_protocol.md`` explains them.

Imports only the standard library, :mod:`utils.bench.claims` and :mod:`utils.bench.runstore`.
"""

from __future__ import annotations

from utils.bench import claims as claims_lib
from utils.bench.runstore import data_label, format_machine_mix


def mean_std(values: list) -> tuple:
    """(mean, sample standard deviation) of the values that are not None or NaN (a metric undefined for
    that run, e.g. the 8-frame windowed inconsistency of a single-frame capture); None where undefined."""
    import math
    import statistics

    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarise(key: str, runs: dict) -> dict:
    """A table row: per-seed metrics and their mean ± std."""
    first = next(iter(runs.values()))
    summary = {}
    for metric in first:
        if metric == "perceptual":
            continue
        mean, std = mean_std([r.get(metric) for r in runs.values()])
        summary[metric] = {"mean": mean, "std": std}
    return {"key": key, "perceptual": first.get("perceptual"), "seeds": runs, "summary": summary}


INPUT_MANO_LABEL = "input MANO mesh (no reconstruction)"


def input_mano_row(rows: dict) -> dict:
    """Table 1's reference row: the input MANO mesh's P2P, as the SRHand row's evaluations measured it
    (``p2p_mm_mano``; ``paper_protocol.p2p_mano_truth_to_recon_mm``). Empty without an SRHand row."""
    source = next((row for row in rows.values() if row.get("key") == "srhand"), None)
    if source is None:
        return {}
    runs = {
        seed: {
            "p2p_mm": r.get("p2p_mm_mano"),
            "p2p_own_pose_mm": r.get("p2p_mm_mano"),
            "p2p_own_pose_mm_se": r.get("p2p_mm_mano_se"),
            "p2p_mm_se": r.get("p2p_mm_mano_se"),
            "p2p_pseudo_gt_mm": r.get("p2p_pseudo_gt_mm_mano"),
            "pp_p2p_mm": r.get("pp_p2p_mm_mano"),
            "pp_p2p_mm_se": r.get("pp_p2p_mm_mano_se"),
            "perceptual": r.get("perceptual"),
        }
        for seed, r in source["seeds"].items()
    }
    row = {**summarise("input_mano", runs), "reference": True}
    if source.get("provenance"):  # the same runs: their data and machines
        row["provenance"] = source["provenance"]
    return {INPUT_MANO_LABEL: row}


CLAIM_DIGITS = {
    "p2p_mm": 3,
    "p2p_own_pose_mm": 3,
    "inconsistency": 4,
    "render_perc": 4,
    "x16_perc": 4,
}  # others: 2 (dB)
# What a P2P claim says when its runs carry no standard error of their own: they were evaluated with the
# i.i.d. estimator of before issue 26 (benchmarks/p2p_estimator.md measured its scatter on the demo's meshes).
OLD_P2P_NOISE = "i.i.d. P2P of before issue 26: metric SE not measured, about 0.022 mm per frame"


def C(words: str, metric: str, better: tuple, worse: tuple, sign: int) -> claims_lib.Claim:
    """A claim whose smallest meaningful difference is the last digit its table prints."""
    return claims_lib.Claim(
        words, metric, better, worse, sign, min_effect=10.0 ** -CLAIM_DIGITS.get(metric, 2)
    )


T1 = (
    'Table 1: "fine-tuning the SR module enhances its 3D reconstruction performance compared to its original '
    'state"'
)
CLAIMS = [  # (short name, claim); rows: ("main", main.py row key) or ("sr", "<run>:<method>") of the SR section
    (
        "GIIF vs bicubic supervision",
        C(
            'Table 1: GIIF supervision beats bicubic ("significantly outperforms '
            'state-of-the-art image upsampling methods")',
            "p2p_mm",
            ("main", "giif_ours"),
            ("main", "bicubic_ours"),
            -1,
        ),
    ),
    (
        "GIIF vs bicubic supervision",
        C(
            "Table 1: GIIF supervision beats bicubic",
            "render_psnr",
            ("main", "giif_ours"),
            ("main", "bicubic_ours"),
            +1,
        ),
    ),
    (
        "GIIF vs LIIF supervision",
        C(
            'Table 1: GIIF + XHand beats LIIF + XHand ("significant improvements in '
            'appearance and geometry quality compared to existing SR methods")',
            "p2p_mm",
            ("main", "giif_xhand"),
            ("main", "liif_xhand"),
            -1,
        ),
    ),
    (
        "GIIF vs LIIF supervision",
        C(
            "Table 1: GIIF + XHand beats LIIF + XHand",
            "render_psnr",
            ("main", "giif_xhand"),
            ("main", "liif_xhand"),
            +1,
        ),
    ),
    ("fine-tuning (w/ vs w/o ftd.)", C(T1, "p2p_mm", ("main", "srhand"), ("main", "giif_ours"), -1)),
    (
        "fine-tuning (w/ vs w/o ftd.)",
        C(
            'Table 4(b): "mesh distance error and texture inconsistencies decrease '
            'when adaptive fine-tuning is applied"',
            "inconsistency",
            ("main", "srhand"),
            ("main", "giif_ours"),
            -1,
        ),
    ),
    (
        "fine-tuning (w/ vs w/o ftd.)",
        C(
            'Table 1: "while improving photometric quality, as shown by the PSNR/LPIPS ' '(SR) metric"',
            "sr_psnr",
            ("main", "srhand"),
            ("main", "giif_ours"),
            +1,
        ),
    ),
    (
        "SRHand vs XHand, same SR",
        C(
            'Table 1 / 4(a): SRHand (Ours) beats XHand on GIIF w/ ftd. ("SRHand achieves the '
            'best overall performance, outperforming all tested configurations")',
            "p2p_mm",
            ("main", "srhand"),
            ("main", "ftd_xhand"),
            -1,
        ),
    ),
    (
        "SRHand vs XHand, same SR",
        C(
            "Table 1 / 4(a): SRHand (Ours) beats XHand on GIIF w/ ftd.",
            "render_psnr",
            ("main", "srhand"),
            ("main", "ftd_xhand"),
            +1,
        ),
    ),
    (
        "wavelet after consistency",
        C(
            'Table 4(b): "its inclusion alongside the consistency loss significantly '
            'enhances visual quality"',
            "sr_psnr",
            ("main", "ft_con_wav"),
            ("main", "ft_con"),
            +1,
        ),
    ),
    (
        "wavelet after consistency",
        C(
            "Table 4(b): L_con + L_wave vs L_con",
            "render_psnr",
            ("main", "ft_con_wav"),
            ("main", "ft_con"),
            +1,
        ),
    ),
    (
        "discriminator in fine-tuning",
        C(
            'Table 4(b): "When integrated with L_con and L_wave, L_D improves both '
            'quantitative and qualitative metrics"',
            "render_psnr",
            ("main", "srhand"),
            ("main", "ft_con_wav"),
            +1,
        ),
    ),
    (
        "discriminator in fine-tuning",
        C(
            "Table 4(b): L_con + L_wave + L_D vs L_con + L_wave",
            "render_perc",
            ("main", "srhand"),
            ("main", "ft_con_wav"),
            -1,
        ),
    ),
    (
        "discriminator in GIIF training",
        C(
            'Table 3: "the discriminator refines photometric details and realism" ' "(x16, equal steps)",
            "x16_psnr",
            ("sr", "disc:giif"),
            ("sr", "giif_noadv:giif"),
            +1,
        ),
    ),
    (
        "discriminator in GIIF training",
        C(
            "Table 3: GIIF + D vs GIIF w/o D (x16, equal steps)",
            "x16_perc",
            ("sr", "disc:giif"),
            ("sr", "giif_noadv:giif"),
            -1,
        ),
    ),
    (
        "SRHand vs XHand, second identity",
        C(
            "Table 4(a): Ours beats XHand on both identities (PSNR +1.15 and "
            "+0.70 dB there); here on a second synthetic identity",
            "render_psnr",
            ("identity2", "srhand"),
            ("identity2", "ftd_xhand"),
            +1,
        ),
    ),
    (
        "SRHand vs XHand, second identity",
        C(
            "Table 4(a): Ours vs XHand, synthetic identity 2",
            "p2p_mm",
            ("identity2", "srhand"),
            ("identity2", "ftd_xhand"),
            -1,
        ),
    ),
    (
        "SRHand vs the input MANO mesh",
        C(
            "new: SRHand's mesh is closer to the truth than the MANO mesh it starts from",
            "p2p_mm",
            ("main", "srhand"),
            ("main", "input_mano"),
            -1,
        ),
    ),
]


CLAIMS += [
    (
        "MANO refinement vs none",
        C(
            "new: hr + Ours with MANO refinement (at its test-time-fitted poses) is closer to the truth than "
            "without (at the annotated poses)",
            "p2p_own_pose_mm",
            ("main", "hr_ours_refine"),
            ("main", "hr_ours"),
            -1,
        ),
    ),
    (
        "MANO refinement vs none",
        C(
            "new: SRHand with MANO refinement (at its test-time-fitted poses) is closer to the truth than "
            "without",
            "p2p_own_pose_mm",
            ("main", "srhand_refine"),
            ("main", "srhand"),
            -1,
        ),
    ),
    (
        "MANO refinement vs none",
        C(
            "new: hr + Ours with MANO refinement is closer to the truth than without, both at the annotated poses",
            "p2p_mm",
            ("main", "hr_ours_refine"),
            ("main", "hr_ours"),
            -1,
        ),
    ),
    (
        "MANO refinement vs none",
        C(
            "new: SRHand with MANO refinement is closer to the truth than without",
            "p2p_mm",
            ("main", "srhand_refine"),
            ("main", "srhand"),
            -1,
        ),
    ),
    (
        "MANO refinement vs none",
        C(
            "new: SRHand with MANO refinement renders the held-out frames better than without",
            "render_psnr",
            ("main", "srhand_refine"),
            ("main", "srhand"),
            +1,
        ),
    ),
    (
        "MANO refinement vs none",
        C(
            "new: with the paper's Table 5 noise, SRHand with MANO refinement is closer to the truth",
            "p2p_mm",
            ("main", "srhand_noisy_refine"),
            ("main", "srhand_noisy"),
            -1,
        ),
    ),
    (
        "SRHand with MANO refinement vs the input MANO mesh",
        C(
            "new: SRHand with MANO refinement (at its test-time-fitted poses) is closer to the truth than the MANO "
            "mesh it starts from",
            "p2p_own_pose_mm",
            ("main", "srhand_refine"),
            ("main", "input_mano"),
            -1,
        ),
    ),
    (
        "hr + Ours with MANO refinement vs the input MANO mesh",
        C(
            "new: hr + Ours with MANO refinement (at its test-time-fitted poses) is closer to the truth than the "
            "MANO mesh it starts from",
            "p2p_own_pose_mm",
            ("main", "hr_ours_refine"),
            ("main", "input_mano"),
            -1,
        ),
    ),
]


def _sr_row_key(label: str) -> str | None:
    """The ``<run>:<method>`` of an SR-section row label (results written before ``row_keys`` existed)."""
    if label.startswith("GIIF + D"):
        return "disc:giif"
    if label.startswith("GIIF w/o D") and "adv_weight 0" in label:
        return "giif_noadv:giif"
    return None


def claim_inputs(results: dict) -> dict:
    """``{(kind, row key): {seed: {metric: value}}}`` from a results.json's sections."""
    per_seed = {}
    for section in ("srhand", "ablation", "noise", "refine"):
        rows = ((results.get(section) or {}).get("result") or {}).get("rows") or {}
        if section in ("srhand", "refine"):
            rows = {**rows, **input_mano_row(rows)}
        for row in rows.values():
            per_seed[("main", row["key"])] = {str(k): v for k, v in row["seeds"].items()}
    identities = ((results.get("identity") or {}).get("result") or {}).get("identities") or {}
    for row in (identities.get("identity 2") or {}).get("rows", {}).values():
        per_seed[("identity2", row["key"])] = {str(k): v for k, v in row["seeds"].items()}
    sr = (results.get("sr") or {}).get("result") or {}
    row_keys = sr.get("row_keys") or {}
    for label, by_seed in (sr.get("per_seed") or {}).items():
        key = row_keys.get(label) or _sr_row_key(label)
        if key is None:
            continue
        flat = {}
        for seed, by_scale in by_seed.items():
            metrics = by_scale.get("x16") or {}
            pkey = next(
                (k for k in metrics if k.endswith("_masked") and not k.startswith(("psnr", "ssim"))), None
            )
            flat[str(seed)] = {
                "x16_psnr": metrics.get("psnr_masked"),
                "x16_perc": metrics.get(pkey) if pkey else None,
            }
        per_seed[("sr", key)] = flat
    return per_seed


def claim_provenance(results: dict) -> dict:
    """``{(kind, row key): {seed: {"machine", "data", "key_hash"}}}`` of the rows :func:`claim_inputs`
    reads (rows of results written before issue 22 without ``provenance`` are absent)."""
    out = {}
    for section in ("srhand", "ablation", "noise", "refine"):
        rows = ((results.get(section) or {}).get("result") or {}).get("rows") or {}
        if section in ("srhand", "refine"):
            rows = {**rows, **input_mano_row(rows)}
        for row in rows.values():
            if row.get("provenance"):
                out[("main", row["key"])] = {str(k): v for k, v in row["provenance"].items()}
    identities = ((results.get("identity") or {}).get("result") or {}).get("identities") or {}
    for row in (identities.get("identity 2") or {}).get("rows", {}).values():
        if row.get("provenance"):
            out[("identity2", row["key"])] = {str(k): v for k, v in row["provenance"].items()}
    sr = (results.get("sr") or {}).get("result") or {}
    row_keys = sr.get("row_keys") or {}
    for label, by_seed in (sr.get("provenance") or {}).items():
        key = row_keys.get(label) or _sr_row_key(label)
        if key is not None:
            out[("sr", key)] = {str(k): v for k, v in by_seed.items()}
    return out


def _machines(provenance: dict) -> list:
    """``[(machine, runs)]`` over the distinct runs (key hashes) of :func:`claim_provenance`; a run whose
    provenance is unknown counts as machine ``unknown``."""
    runs, unknown = {}, 0
    for by_seed in provenance.values():
        for p in by_seed.values():
            if p:
                runs[p["key_hash"]] = p["machine"]
            else:
                unknown += 1
    counts = dict.fromkeys(runs.values(), 0)
    for machine in runs.values():
        counts[machine] += 1
    if unknown:
        counts["unknown"] = counts.get("unknown", 0) + unknown
    return sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))


def section_claims(results_by_scale: dict) -> dict:
    """Each claim judged at every scale with results: ``{"claims": [...], "scales": [...], "machines"}``;
    a claim is paired only over seeds whose two runs share their data (``claims.judge``)."""
    inputs = {scale: claim_inputs(results) for scale, results in results_by_scale.items()}
    origins = {scale: claim_provenance(results) for scale, results in results_by_scale.items()}
    data = {
        scale: {row: {s: (p or {}).get("data") for s, p in by_seed.items()} for row, by_seed in rows.items()}
        for scale, rows in origins.items()
    }
    out = []
    for name, claim in CLAIMS:
        out.append(
            {
                "name": name,
                "words": claim.words,
                "metric": claim.metric,
                "sign": claim.sign,
                "better": list(claim.better),
                "worse": list(claim.worse),
                "scales": {
                    scale: _judge(claim, per_seed, data[scale], origins[scale])
                    for scale, per_seed in inputs.items()
                },
            }
        )
    return {
        "claims": out,
        "scales": list(results_by_scale),
        "scales_run": [scale for scale, results in results_by_scale.items() if results],
        "machines": {scale: _machines(rows) for scale, rows in origins.items() if rows},
    }


def _judge(claim, per_seed: dict, data: dict, origins: dict) -> dict:
    """``claims.judge`` on same-data pairs; a judged claim whose pairs were computed on more than one machine
    gets ``machines`` (the same data trained on two CPUs gives results as far apart as two seeds do:
    ``docs/benchmark_protocol.md``, "Machines and data")."""
    judged = claims_lib.judge(claim, per_seed, data)
    seen = {
        (origins.get(row) or {}).get(seed, {}).get("machine")
        for seed in judged["differences"]
        for row in (claim.better, claim.worse)
        if (origins.get(row) or {}).get(seed)
    }
    if len(seen) > 1:
        judged["machines"] = sorted(seen)
    return judged


def _unpaired_text(judged: dict) -> str:
    """``seed 0: data `…` vs legacy data of `…`; ...``: the seeds a claim could not pair, and why."""
    return "; ".join(
        f"seed {seed}: {data_label(a)} vs {data_label(b)}" for seed, (a, b) in judged["unpaired"].items()
    )


def claims_markdown(result: dict) -> list[str]:
    scales = result["scales"]
    lines = [
        "Each claim compares two rows seed by seed (rows that share a seed share the GIIF checkpoint and, "
        "checked below, the data): paired difference `better - worse` (mean ± standard deviation over the "
        "seeds; in brackets the standard error of that mean, t = mean / SE and n seeds, and the metric's own "
        "standard error where the runs measured it). "
        "Verdict: **holds** if the mean difference exceeds one standard deviation of the differences in the "
        "paper's direction, **reversed** if it does in the opposite direction, **within noise** otherwise and "
        "whenever it is below the metric's own standard error, "
        "n/a without 2 paired seeds (`utils/bench/claims.py`, `docs/benchmark_protocol.md`). A pair is made only "
        "of two runs on the same data (the same content fingerprint; for legacy runs without one, the same "
        "machine and generator settings); a claim whose rows were computed on different or unrecorded data "
        "says so instead of a verdict; pairs of runs made on different machines are marked (on the same data, "
        "two CPUs' training arithmetic differs by about a seed's spread).",
        "",
    ]
    for scale, mix in (result.get("machines") or {}).items():
        lines += [f"{scale}: runs by machine: {format_machine_mix([tuple(m) for m in mix])}.", ""]
    header = "| claim | the paper's words | metric (better) |" + "".join(
        f" {scale}: paired difference | {scale}: verdict |" for scale in scales
    )
    lines += [header, "|---|---|---|" + "---|---|" * len(scales)]
    for c in result["claims"]:
        direction = "higher" if c["sign"] > 0 else "lower"
        cells = [c["name"], c["words"], f"{c['metric']} ({direction})"]
        for scale in scales:
            judged = c["scales"].get(scale)
            if scale not in result.get("scales_run", scales):
                cells += ["not run", "-"]
                continue
            if not judged or not judged.get(
                "n"
            ):  # the scale ran, but not both rows (a skipped row or section)
                cells += ["rows not run", "-"]
                continue
            if judged.get("unpaired"):
                cells += [_unpaired_text(judged), judged["verdict"]]
                continue
            across = (
                f" (pairs across {len(judged['machines'])} machines: "
                + ", ".join(f"`{m}`" for m in judged["machines"])
                + ")"
                if judged.get("machines")
                else ""
            )
            cells += [
                claims_lib.format_difference(
                    judged, CLAIM_DIGITS.get(c["metric"], 2), OLD_P2P_NOISE if "p2p" in c["metric"] else ""
                )
                + across,
                judged["verdict"],
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
