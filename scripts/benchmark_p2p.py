"""P2P estimator: its own noise and cost on a run's meshes, against the estimator before issue 26.

For each evaluated frame of a ``main.py`` run (its ``meshes/<frame>.obj``, written by ``--eval --save_vis``
or ``eval.export_meshes``) and the capture's ground-truth mesh, the symmetric P2P (mm) is estimated

* the old way (i.i.d. samples by area, ``--old_samples`` per surface, exact distances), over ``--seeds``
  sampling seeds: its scatter is the estimator's noise;
* the new way (``utils.metrics.geometry.p2p_parts_mm``: stratified samples, two per equal-area Morton
  stratum) at each of ``--samples`` points per surface, over the same seeds: the scatter, and the standard
  error the estimator reports, which should match it;
* with ``--reference_samples`` stratified points per surface on the first frame, as the value both should
  approach.

Writes a markdown table (``--out``, default ``benchmarks/p2p_estimator.md``) and prints one JSON line.

    python scripts/benchmark_p2p.py --run outputs/synthetic_srhand --data data/synthetic
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from utils.checkpoint import atomic_write_text  # noqa: E402
from utils.geometry.mesh_io import load_obj  # noqa: E402
from utils.metrics.geometry import p2p_parts_mm, point_to_surface_distance, sample_surface  # noqa: E402


def old_p2p_mm(pred_verts, pred_faces, gt_verts, gt_faces, num_samples: int, seed: int) -> float:
    """The symmetric P2P as it was estimated before issue 26: i.i.d. samples by area on each surface."""
    generator = torch.Generator().manual_seed(seed)
    pts_pred = sample_surface(pred_verts, pred_faces, num_samples, generator)
    pts_gt = sample_surface(gt_verts, gt_faces, num_samples, generator)
    d_pred = point_to_surface_distance(pts_pred, gt_verts, gt_faces).mean()
    d_gt = point_to_surface_distance(pts_gt, pred_verts, pred_faces).mean()
    return float(1000.0 * (d_pred + d_gt) / 2)


def ground_truth(data: Path, frame: int):
    """The synthetic capture's GT mesh of ``frame`` (test/Capture0/ROM03_RT_No_Occlusion)."""
    path = data / "gt_meshes" / "test" / "Capture0" / "ROM03_RT_No_Occlusion.npz"
    with np.load(path) as gt:
        row = int(np.nonzero(gt["frame_ids"] == frame)[0][0])
        return torch.as_tensor(gt["verts"][row], dtype=torch.float64), torch.as_tensor(
            gt["faces"].astype(np.int64)
        )


def timed(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` and the seconds it took."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", default=str(REPO / "outputs" / "synthetic_srhand"))
    parser.add_argument("--data", default=str(REPO / "data" / "synthetic"))
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--old_samples", type=int, default=5000)
    parser.add_argument("--samples", type=int, nargs="+", default=[5000, 20000, 40000])
    parser.add_argument("--reference_samples", type=int, default=400000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "p2p_estimator.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    meshes = sorted((Path(args.run) / "meshes").glob("*.obj"))
    if not meshes:
        raise SystemExit(
            f"{args.run}/meshes: no meshes; run main.py --eval --save_vis first (make demo does)"
        )
    rows, reference = [], None
    for index, path in enumerate(meshes):
        frame = int(path.stem)
        verts, faces = load_obj(path)[:2]
        pred = torch.as_tensor(verts, dtype=torch.float64), torch.as_tensor(faces, dtype=torch.long)
        gt = ground_truth(Path(args.data), frame)
        olds, old_s = [], []
        for seed in range(args.seeds):
            value, seconds = timed(old_p2p_mm, *pred, *gt, args.old_samples, seed)
            olds.append(value)
            old_s.append(seconds)
        row = {
            "frame": frame,
            "old": {
                "samples": args.old_samples,
                "mean": statistics.mean(olds),
                "spread": statistics.stdev(olds),
                "seconds": statistics.mean(old_s),
            },
        }
        for samples in args.samples:
            values, ses, secs = [], [], []
            for seed in range(args.seeds):
                parts, seconds = timed(p2p_parts_mm, *pred, *gt, num_samples=samples, seed=seed)
                values.append(parts["symmetric"])
                ses.append(parts["symmetric_se"])
                secs.append(seconds)
            row[str(samples)] = {
                "mean": statistics.mean(values),
                "spread": statistics.stdev(values),
                "reported_se": statistics.mean(ses),
                "seconds": statistics.mean(secs),
            }
        if index == 0 and args.reference_samples:
            parts, seconds = timed(p2p_parts_mm, *pred, *gt, num_samples=args.reference_samples, seed=1000)
            reference = {
                "frame": frame,
                "samples": args.reference_samples,
                "value": parts["symmetric"],
                "se": parts["symmetric_se"],
                "seconds": seconds,
            }
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "run": args.run,
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "seeds": args.seeds,
        "rows": rows,
        "reference": reference,
    }
    atomic_write_text(Path(args.out), markdown(result, args) + "\n")
    print(json.dumps(result))
    return result


def markdown(result: dict, args) -> str:
    lines = [
        "# P2P estimator: noise and cost",
        "",
        f"`python scripts/benchmark_p2p.py` on the meshes of `{Path(result['run']).name}` (the demo's SRHand run: "
        "the avatar at subdivision 1, 6,152 faces, against the ground truth's 98,432 faces), "
        f"{result['cpu']}, {result['threads']} threads, {result['seeds']} sampling seeds per estimate. "
        "Spread: standard deviation of the symmetric P2P over the seeds; reported SE: the standard error the "
        "estimator gives (mean over the seeds); seconds: one symmetric P2P (both directions, index built).",
        "",
        "| frame | estimator | points per surface | P2P (mm) | spread over seeds (mm) | reported SE (mm) | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        old = row["old"]
        lines.append(
            f"| {row['frame']} | i.i.d. (before issue 26) | {old['samples']} | {old['mean']:.4f} | "
            f"{old['spread']:.4f} | - | {old['seconds']:.1f} |"
        )
        for samples in args.samples:
            new = row[str(samples)]
            lines.append(
                f"| {row['frame']} | stratified | {samples} | {new['mean']:.4f} | {new['spread']:.4f} | "
                f"{new['reported_se']:.4f} | {new['seconds']:.1f} |"
            )
    ref = result.get("reference")
    if ref:
        lines += [
            "",
            f"Reference: frame {ref['frame']}, {ref['samples']} stratified points per surface: "
            f"{ref['value']:.4f} mm (reported SE {ref['se']:.5f} mm), {ref['seconds']:.0f} s.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
