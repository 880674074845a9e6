"""Markdown tables of the benchmark sections (SR, Table 1 rows, paper protocol, noise, speed).

Used by ``scripts/benchmark.py``; pure functions of the sections' result dicts.
"""

from __future__ import annotations

from pathlib import Path

from utils.bench import claims as claims_lib
from utils.bench.claims_table import input_mano_row
from utils.bench.runner import provenance_line

REPO = Path(__file__).resolve().parents[2]
SR_SCALES = ("x4", "x8", "x12.8", "x16")


def sr_markdown(result: dict) -> list[str]:
    perc = result["perceptual"] or "perceptual"
    pkey = None
    seeds = result.get("seeds", [0])
    spread = (
        f" Mean over seeds {', '.join(map(str, seeds))} (PSNR ± standard deviation)."
        if len(seeds) > 1
        else " One seed."
    )
    lines = [
        f"Masked metrics on the SR validation subjects ({result['num_images']} images, "
        f"LR by `{result['degradation']}` downsampling; perceptual metric: {perc}).{spread}"
        + (" " + provenance_line(result) if provenance_line(result) else ""),
        "",
    ]
    residual = result.get("residual")  # model.args.residual per row (results written before it: no column)
    header = "| method | " + " | ".join(f"{s} PSNR / SSIM / {perc.split('-')[0]}" for s in SR_SCALES) + " |"
    lines += [header, "|---|" + "---|" * len(SR_SCALES)]
    if residual is not None:
        header = "| method | residual | " + header[len("| method | ") :]
        lines[-2:] = [header, "|---|---|" + "---|" * len(SR_SCALES)]
    for name, by_scale in result["rows"].items():
        cells = []
        for scale in SR_SCALES:
            row = by_scale.get(scale)
            if row is None:
                cells.append("-")
                continue
            pkey = pkey or next(
                (k for k in row if k.endswith("_masked") and not k.startswith(("psnr", "ssim"))), None
            )
            perc_value = f"{row[pkey]:.4f}" if pkey else "-"
            std = (result.get("std") or {}).get(name, {}).get(scale, {}).get("psnr_masked")
            psnr = f"{row['psnr_masked']:.2f}" + (f" ± {std:.2f}" if std is not None else "")
            cells.append(f"{psnr} / {row['ssim_masked']:.3f} / {perc_value}")
        if residual is not None:
            cells.insert(0, residual.get(name, "-"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if residual is not None:
        lines += [
            "",
            "residual: `model.args.residual` of the runs, what the network's output is added to (none: 0.5, the "
            "reference; bilinear / bicubic: the LR image interpolated at the query; benchmarks/sr_residual.md).",
        ]
    return lines


def _fmt(stat: dict | None, digits: int) -> str:
    if not stat or stat["mean"] is None:
        return "-"
    text = f"{stat['mean']:.{digits}f}"
    return text + (f" ± {stat['std']:.{digits}f}" if stat["std"] is not None else "")


def _metric_se(stat: dict | None, digits: int) -> str:
    """`` (SE x)``: a metric's own standard error (the mean over the seeds of what each run reported)."""
    return f" (SE {stat['mean']:.{digits}f})" if stat and stat.get("mean") is not None else ""


def p2p_estimator_note(rows: dict) -> str:
    """Which P2P estimator the runs of a table used: the stratified one with its standard error (runs after
    issue 26), or the i.i.d. one of before, whose own noise no run measured."""
    runs = [m for row in rows.values() if not row.get("reference") for m in row["seeds"].values()]
    old = sum(1 for m in runs if m.get("p2p_mm_se") is None)
    if old == len(runs):
        return (
            "P2P: the i.i.d. estimator of before issue 26 (5,000 points per mesh at CPU and medium scale); its own "
            "scatter, about 0.022 mm per frame on the demo's meshes, was not measured per run "
            "(`benchmarks/p2p_estimator.md`)."
        )
    if old:
        return f"P2P: {old} of the {len(runs)} runs by the i.i.d. estimator of before issue 26, the others stratified."
    return "P2P: the stratified estimator, each run's standard error in its metrics.json (`p2p_se_mm`)."


def srhand_markdown(result: dict, extra: list[tuple[str, str, int]] | None = None) -> list[str]:
    rows = dict(result["rows"])
    if any(row.get("key") == "srhand" for row in rows.values()) and any(
        row.get("key") == "giif_xhand" for row in rows.values()
    ):
        rows.update(input_mano_row(rows))  # results written before the row existed
    first = next(iter(rows.values()))
    perc = first["perceptual"] or "perceptual"
    seeds = result["seeds"]
    total = sum(1 for row in rows.values() if not row.get("reference")) * len(seeds)
    executed = len(result.get("seconds") or {})
    provenance = provenance_line(result) or (
        f"{executed} of the {total} runs were executed by this section, the others reused from existing run "
        "folders (earlier sections or commands; `--fresh` re-runs all)."
    )
    lines = [
        f"Held-out frames and cameras of the reconstruction subject, inside the MANO mask; perceptual metric "
        f"{perc}. Mean ± standard deviation over seeds {', '.join(map(str, seeds))} (initialisation and "
        f"shuffles of main.py; the SR models are the same). {provenance} {p2p_estimator_note(rows)}",
        "",
    ]
    extra_cols = extra or []
    vs_mano = any(row["summary"].get("p2p_mm_mano", {}).get("mean") is not None for row in rows.values())
    header = (
        f"| row | SR PSNR | SR {perc} | render PSNR | render {perc} | P2P (mm) | {PSEUDO_GT_HEADER} | "
        "inconsistency |"
    )
    header += "".join(f" {name} |" for name, _, _ in extra_cols)
    header += " P2P - input MANO, paired (mm) |" if vs_mano else ""
    lines += [header, "|---|---|---|---|---|---|---|---|" + "---|" * (len(extra_cols) + vs_mano)]
    for name, row in rows.items():
        s = row["summary"]
        cells = [
            _fmt(s.get("sr_psnr"), 2),
            _fmt(s.get("sr_perc"), 4),
            _fmt(s.get("render_psnr"), 2),
            _fmt(s.get("render_perc"), 4),
            _fmt(s.get("p2p_mm"), 3) + _metric_se(s.get("p2p_mm_se"), 4),
            _fmt(s.get("p2p_pseudo_gt_mm"), 3) + _metric_se(s.get("p2p_pseudo_gt_mm_se"), 4),
            _fmt(s.get("inconsistency"), 4),
        ]
        cells += [_fmt(s.get(key), digits) for _, key, digits in extra_cols]
        if vs_mano:
            cells.append(versus_input_mano(row))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if vs_mano:
        lines += [
            "",
            "P2P - input MANO: each run's P2P minus that of the MANO mesh it starts from (the same "
            "evaluation frames), per seed; mean ± std over the seeds, the mean in standard deviations of "
            "the differences, and **closer** / **farther** when it exceeds one of them (else within noise).",
        ]
    lines += ["", PSEUDO_GT_NOTE]
    if any(
        row["summary"].get("pp_p2p_mm", {}).get("mean") is not None
        or row["summary"].get("pp_render_psnr", {}).get("mean") is not None
        for row in rows.values()
    ):
        lines += paper_protocol_markdown(rows, perc)
    return lines


def versus_input_mano(row: dict) -> str:
    """Paired per-seed ``P2P(row) - P2P(input MANO mesh of that run)`` in mm: mean ± std, its size in
    standard deviations of the differences and which side of the input mesh the row is on."""
    if row.get("reference"):
        return "-"
    diffs = claims_lib.paired_differences(
        {s: m.get("p2p_mm") for s, m in row["seeds"].items()},
        {s: m.get("p2p_mm_mano") for s, m in row["seeds"].items()},
    )
    stats = claims_lib.paired_stats(diffs)
    if stats.n < 2 or stats.std is None:
        return "-" if stats.mean is None else f"{stats.mean:+.3f}"
    word = {claims_lib.HOLDS: "closer", claims_lib.REVERSED: "farther"}.get(
        claims_lib.verdict(stats, -1, 1e-3), "within noise"
    )
    size = "inf" if stats.std == 0 else f"{abs(stats.mean) / stats.std:.1f}"
    return f"{stats.mean:+.3f} ± {stats.std:.3f} ({size} std, {word})"


def paper_protocol_markdown(rows: dict, perc: str) -> list[str]:
    """The same rows under the reference code's protocol (``paper_protocol`` in metrics.json)."""
    lines = [
        "",
        "The same runs under the paper's protocol (`paper_protocol` in metrics.json): full-image SR "
        "metrics against the MANO-masked GT; render and GT both masked by the predicted silhouette, full image; "
        "P2P from the truth to the reconstruction only; inconsistency over windows of 8 consecutive frames of "
        "one view.",
        "",
        f"| row (paper protocol) | SR PSNR | SR SSIM | SR {perc} | render PSNR | render SSIM | render {perc} | "
        "P2P truth->recon (mm) | inconsistency (8-frame windows) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        s = row["summary"]
        cells = [
            _fmt(s.get(k), d)
            for k, d in (
                ("pp_sr_psnr", 2),
                ("pp_sr_ssim", 3),
                ("pp_sr_perc", 4),
                ("pp_render_psnr", 2),
                ("pp_render_ssim", 3),
                ("pp_render_perc", 4),
                ("pp_p2p_mm", 3),
                ("pp_inconsistency", 4),
            )
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


# Render and geometry columns of the Table 2 / 4(a) sections: ours (masked), the paper's protocol, P2P to the
# truth and to the pseudo ground truth.
RENDER_COLUMNS = (
    ("render_psnr", 2),
    ("render_perc", 4),
    ("pp_render_psnr", 2),
    ("pp_render_ssim", 3),
    ("pp_render_perc", 4),
    ("p2p_mm", 3),
    ("p2p_pseudo_gt_mm", 3),
)
PSEUDO_GT_HEADER = "P2P to pseudo-GT (mm)"
PSEUDO_GT_NOTE = (
    "P2P to pseudo-GT: the paper's P2P protocol, the symmetric distance to the meshes of an `sr_source = hr` XHand "
    "run on the same frames (`eval.pseudo_gt_mesh_dir`; `p2p_pseudo_gt_mm` in metrics.json), beside the distance "
    "to the true surface; `-` where it was not measured."
)


def _provenance_after(tables) -> list[str]:
    """One provenance line per ``(name, table)``, for after a table that spans several sections."""
    lines = []
    for name, table in tables:
        line = provenance_line(table)
        if line:
            lines += ["", f"{name}: {line}"]
    return lines


def static_markdown(result: dict) -> list[str]:
    """Table 2's protocol: novel views of one pose at x4 and x16 (and the HR-supervised upper bound)."""
    seeds = result["seeds"]
    tables = [(factor, table) for factor, table in result["factors"].items()] + [
        ("HR", result["upper_bound"])
    ]
    first = next(row for _, table in tables for row in table["rows"].values() if not row.get("reference"))
    perc = first["perceptual"] or "perceptual"
    lines = [
        f"One pose of the reconstruction subject fitted from 40 cameras, rendered from 8 held-out cameras of "
        f"that pose ({result['hr_size']} px crops; LR {result['hr_size'] // 4} px at x4, "
        f"{result['hr_size'] // 16} px at x16). Render PSNR and {perc} inside the MANO mask (ours); PSNR / SSIM / "
        f"{perc} under the paper's protocol (full image, both masked by the predicted silhouette); SR PSNR: the "
        f"row's SR source applied to the held-out cameras' LR images, inside the MANO mask. "
        f"Mean ± std over seeds {', '.join(map(str, seeds))}. The paper's rows NeRF-SR, DiSR-NeRF and SRGS are "
        "not re-implemented.",
        "",
        f"| scale | row | SR PSNR | render PSNR | render {perc} | paper: PSNR | paper: SSIM | paper: {perc} | "
        f"P2P (mm) | {PSEUDO_GT_HEADER} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for factor, table in tables:
        for name, row in table["rows"].items():
            s = row["summary"]
            cells = [_fmt(s.get(k), d) for k, d in (("sr_psnr", 2), *RENDER_COLUMNS)]
            lines.append(f"| {factor} | {name} | " + " | ".join(cells) + " |")
    return lines + ["", PSEUDO_GT_NOTE] + _provenance_after(tables)


def identity_markdown(result: dict) -> list[str]:
    """Table 4(a): XHand vs Ours per identity, render metrics under both protocols and P2P."""
    seeds = result["seeds"]
    first = next(iter(next(iter(result["identities"].values()))["rows"].values()))
    perc = first["perceptual"] or "perceptual"
    lines = [
        f"XHand and Ours (the enhancement network), both supervised by the fine-tuned GIIF's SR images, on two "
        f"identities: the reconstruction subject of the Table 1 captures (the same runs) and that of captures "
        f"generated with another seed (same settings). Renders of the held-out frames and cameras: PSNR and "
        f"{perc} inside the MANO mask (ours), PSNR / SSIM / {perc} under the paper's protocol (full image, "
        f"both masked by the predicted silhouette); P2P symmetric, in mm, and that of the input MANO mesh on the "
        f"same frames. Mean ± std over seeds "
        f"{', '.join(map(str, seeds))}.",
        "",
        f"| identity | method | render PSNR | render {perc} | paper: PSNR | paper: SSIM | paper: {perc} | "
        f"P2P (mm) | {PSEUDO_GT_HEADER} | input MANO P2P (mm) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, table in result["identities"].items():
        subject = table.get("subject") or {}
        ident = f"{name} (generator seed {subject.get('generator_seed', '?')})"
        for method, row in table["rows"].items():
            if row.get("reference"):
                continue
            s = row["summary"]
            cells = [_fmt(s.get(k), d) for k, d in (*RENDER_COLUMNS, ("p2p_mm_mano", 3))]
            lines.append(f"| {ident} | {method} | " + " | ".join(cells) + " |")
    return lines + ["", PSEUDO_GT_NOTE] + _provenance_after(result["identities"].items())


def noise_markdown(result: dict) -> list[str]:
    lines = srhand_markdown(
        result,
        extra=[
            ("MPJPE of the input (mm)", "mano_noise_mpjpe_mm", 2),
            ("input MANO P2P (mm)", "p2p_mm_mano", 3),
        ],
    )
    lines += [
        "",
        "Noise (`--set`): " + ", ".join(f"`{s}`" for s in result["noise_sets"] or []) + "; it is applied "
        "to every frame the run reads (fitting and evaluation), so the crops, MANO masks and normal maps "
        "follow the noisy hand as they would with estimated parameters.",
    ]
    return lines


def refine_markdown(result: dict) -> list[str]:
    lines = srhand_markdown(
        result,
        extra=[
            ("input MANO P2P (mm)", "p2p_mm_mano", 3),
            ("MPJPE annotation, fitting frames (mm)", "mpjpe_annotation_mm", 2),
            ("MPJPE refined (mm)", "mpjpe_refined_mm", 2),
            ("P2P, test-time fit (mm)", "ttf_p2p_mm", 3),
            ("its MANO P2P (mm)", "ttf_p2p_mm_mano", 3),
            ("MPJPE held-out, annotation -> test-time fit (mm)", "ttf_mpjpe_mm", 2),
        ],
    )
    lines += [
        "",
        "MANO refinement (`refine.enabled`, docs/srhand_model.md 6.5a): per-frame pose, rotation and translation "
        "and the capture's shape optimised with the avatar. The P2P, render and inconsistency columns are at "
        "the annotated pose of the held-out frames (as every other table); the test-time-fit columns at the pose "
        "fitted to their images with the avatar frozen (`refine.test_time_fit`, `refine.test_target`). MPJPE: 21 keypoints against "
        "the generator's truth. Noise rows: `--set` "
        + ", ".join(f"`{s}`" for s in result.get("noise_sets") or [])
        + " where named.",
    ]
    return lines


RENDER_KEYS = ("ms_forward", "ms_forward_backward", "ms_lower_bound", "ratio_to_lower_bound")


def merge_render_runs(runs: list[list[dict]]) -> list[dict]:
    """One row per resolution; each timing a number (one run) or its ``[min, max]`` over the runs.
    Keys a run did not report (older ``benchmark_render.py``) are left out."""
    merged = []
    for rows in zip(*runs, strict=True):
        row = {"res": rows[0]["res"], "faces": rows[0]["faces"], "runs": len(rows)}
        for key in RENDER_KEYS:
            values = [r[key] for r in rows if r.get(key) is not None]
            if values:
                row[key] = values[0] if len(values) == 1 else [min(values), max(values)]
        merged.append(row)
    return merged


def _span(value, digits: int) -> str:
    """A number, or a ``[min, max]`` range as ``min-max``; ``-`` when absent."""
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return f"{value[0]:.{digits}f}-{value[1]:.{digits}f}"
    return f"{value:.{digits}f}"


def speed_markdown(result: dict) -> list[str]:
    render = result.get("render", [])
    runs = max((row.get("runs", 1) for row in render), default=1)
    lines = [
        "Renderer (rasterize + interpolate + antialias, one view, the 3x-subdivided hand; "
        "`scripts/benchmark_render.py`, 2 threads"
        + (f"; ranges over {runs} runs" if runs > 1 else "")
        + "). "
        "Lower bound: rasterize + interpolate alone, forward + backward, timed interleaved in the same run; "
        "ratio: median of per-repeat forward + backward / lower bound.",
        "",
    ]
    if result.get("render_note"):
        lines += [result["render_note"], ""]
    lines += [
        "| resolution | faces | forward (ms) | forward + backward (ms) | lower bound (ms) | ratio to lower bound |",
        "|---|---|---|---|---|---|",
    ]
    for row in render:
        lines.append(
            f"| {row['res']} | {row['faces']} | {_span(row.get('ms_forward'), 1)} | "
            f"{_span(row.get('ms_forward_backward'), 1)} | {_span(row.get('ms_lower_bound'), 1)} | "
            f"{_span(row.get('ratio_to_lower_bound'), 2)} |"
        )
    decode = result.get("giif_decode")
    if decode:
        rows = list(decode.get("results", [])) + list(decode.get("liif_results", []))
        if any(row.get("reference_query_s") is not None for row in rows):
            lines += [
                "",
                decode.get("note")
                or (
                    "GIIF and LIIF decode (no gradient, every output pixel queried; `scripts/benchmark_giif.py`): both "
                    'query paths of the same model timed interleaved in one run, medians: "reference" builds LIIF\'s '
                    'concatenated MLP input, "factorised" (the default) computes the first layer\'s feature terms once '
                    "per grid cell; max abs diff is between the two images."
                ),
                "",
                "| model | parameters (M) | output | threads | encode (ms) | query, reference (ms) | "
                "query, factorised (ms) | speedup | max abs diff | decode MP/s |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for row in rows:
                diff = row.get("max_abs_diff")
                diff = "-" if diff is None else ("0" if diff == 0 else f"{diff:.1e}")
                speedup = row.get("query_speedup")
                lines.append(
                    f"| {row['size']} {row.get('model', 'giif').upper()} | {row['params_M']:.2f} | "
                    f"{row['out']}x{row['out']} | {row.get('threads', decode.get('threads'))} | "
                    f"{1000 * row['encode_s']:.0f} | {1000 * row['reference_query_s']:.0f} | "
                    f"{1000 * row['query_s']:.0f} | "
                    + (f"{speedup:.2f}x" if speedup is not None else "-")
                    + f" | {diff} | "
                    f"{row['decode_MPps']:.3f} |"
                )
        else:
            lines += [
                "",
                f"GIIF decode throughput (no gradient, every output pixel queried; {decode.get('threads')} "
                "thread(s)):",
                "",
                "| model | parameters (M) | output | encode (ms) | encode + query (ms) | output MP/s |",
                "|---|---|---|---|---|---|",
            ]
            for row in rows:
                lines.append(
                    f"| {row['size']} | {row['params_M']:.2f} | {row['out']}x{row['out']} | "
                    f"{1000 * row['encode_s']:.0f} | {1000 * row['decode_s']:.0f} | {row['decode_MPps']:.3f} |"
                )
    step_rows = [(k, v) for k, v in result.items() if k.startswith("srhand_step")]
    if step_rows:
        old_key = next(
            (
                k
                for _, info in step_rows
                for row in info["rows"]
                for k in ("ms_old", "old_ms", "reference_ms")
                if k in row
            ),
            None,
        )
        lines += [
            "",
            "SRHand steps (`scripts/benchmark_srhand_step.py`; peak memory on CPU is the process's peak "
            "resident set, data and models included"
            + (
                "; reference path: the same step with every computation on its plain version (the "
                "networks' `reference_models`, full GIIF decode, no feature cache, the reference functions "
                "of SH shading and the condition networks), timed interleaved in the same process, "
                "ratio = ms / reference"
                if old_key
                else ""
            )
            + "):",
            "",
            "| config | vertices | px | step | views | threads | ms | peak MiB |"
            + (" reference path ms | ratio |" if old_key else ""),
            "|---|---|---|---|---|---|---|---|" + ("---|---|" if old_key else ""),
        ]
        for _, info in step_rows:
            for row in info["rows"]:
                verts = row.get("vertices", info["vertices"])
                line = (
                    f"| {row.get('config', info['config'])} | {'-' if verts is None else verts} | "
                    f"{row.get('px', info['resolution'][0])} | {row['part']} | "
                    f"{row['views']} | {info['threads']} | {row['ms']:.0f} | {row['peak_mib']:.0f} |"
                )
                if old_key:
                    line += (
                        f" {row[old_key]:.0f} | {row['ms'] / row[old_key]:.2f} |"
                        if row.get(old_key)
                        else " - | - |"
                    )
                lines.append(line)
        for _, info in step_rows:
            checks = info.get("checks", {})
            if "train" in checks:
                lines += [
                    "",
                    f"Fast and reference paths of the joint step ({info['config']}): loss terms equal to "
                    f"{checks['train']['loss_max_rel_diff']:.1e} and parameter gradients to "
                    f"{checks['train']['grad_max_rel_diff']:.1e} (largest relative difference).",
                ]
            if "finetune" in checks:
                lines += [
                    "",
                    "Fine-tuning step: masked GIIF decode "
                    + (
                        "bitwise equal to"
                        if checks["finetune"]["sr_bitwise_equal"]
                        else f"within {checks['finetune']['sr_max_abs_diff']:.1e} of"
                    )
                    + " the full decode.",
                ]
    return lines
