"""Truth-to-reconstruction distance by region of the synthetic truth, for main.py runs on one synthetic capture.

    python scripts/p2p_by_region.py --data data/synthetic RUN_DIR [RUN_DIR ...]

Each run must have been evaluated with ``eval.export_meshes = true`` (its ``meshes/<frame>.obj``) on the
reconstruction sequence of ``--data``; every run is measured on the frames of the first one's ``metrics.json``.
Prints a markdown table: the input MANO mesh, then each run; columns: the regions of
:func:`utils.metrics.regions.truth_regions`, mean distance (mm) from the true vertices of the region to the mesh.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="main.py run folders (evaluated with eval.export_meshes = true)")
    p.add_argument("--data", required=True, help="the synthetic capture root the runs were fitted on")
    p.add_argument("--split", default="test")
    p.add_argument("--capture", default="Capture0")
    p.add_argument("--sequence", default="ROM03_RT_No_Occlusion")
    return p.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    import numpy as np
    import torch

    from datasets.interhand import gt_mesh_path, read_interhand_sequence
    from utils.geometry.mesh_io import load_obj
    from utils.metrics.regions import distance_by_region, truth_regions

    runs = [Path(r) for r in args.runs]
    frames = json.loads((runs[0] / "metrics.json").read_text())["eval_frames"]
    with np.load(gt_mesh_path(args.data, args.split, args.capture, args.sequence)) as data:
        gt = {k: data[k] for k in data.files}
    regions = truth_regions(gt)
    row_of = {int(f): i for i, f in enumerate(gt["frame_ids"])}
    seq = read_interhand_sequence(
        args.data, args.split, args.capture, args.sequence, cameras=1, frame_ids=frames
    )
    rows: dict[str, list[dict]] = {"input MANO mesh": []}
    for fi, frame in enumerate(frames):
        truth = torch.from_numpy(gt["verts"][row_of[int(frame)]])
        rows["input MANO mesh"].append(distance_by_region(truth, regions, seq.verts_world(fi), seq.faces))
        for run in runs:
            verts, faces = load_obj(run / "meshes" / f"{frame}.obj")[:2]
            rows.setdefault(run.name, []).append(
                distance_by_region(truth, regions, torch.as_tensor(verts), torch.as_tensor(faces).long())
            )
    names = list(regions)
    counts = {n: int(m.sum()) for n, m in regions.items()}
    lines = [
        "| mesh | " + " | ".join(f"{n} ({counts[n]} v)" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for label, per_frame in rows.items():
        cells = [f"{np.mean([d[n] for d in per_frame]):.3f}" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(f"truth -> mesh distance (mm), mean over the true vertices of each region and frames {frames}")
    print(text)
    return text


if __name__ == "__main__":
    main()
