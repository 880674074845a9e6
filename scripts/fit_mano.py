"""Fit the hand model (MANO or the procedural hand) to meshes and/or 3D joints; write MANO parameters.

Targets: a mesh file (OBJ/PLY) or a folder of them (one per frame, sorted by name; one shared
shape), and/or joints as ``.npy`` or ``.json`` holding ``(F, 21, 3)`` / ``(21, 3)`` (16 MANO joints +
5 fingertips, the order of ``datasets.capture.hand_joints``) or ``(F, 16, 3)``. Lengths in metres
unless ``--units mm``. Writes a MANO_NeuralAnnot-style JSON ``{frame: {side: {"pose": [48], "shape":
[10], "trans": [3]}, other side: null}}`` (what ``datasets.interhand`` reads, metres, world) and the
fit report (with each frame's quality check; a frame that fails it is named on stderr). See
``docs/mano_fit.md``.

Usage::

    python scripts/fit_mano.py --mesh scan.obj --out fit.json
    python scripts/fit_mano.py --mesh meshes/ --joints joints.npy --side left --mano_path ~/mano \\
        --set robust=geman_mcclure --set weight_surface_to_target=0
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MESH_EXTENSIONS = (".obj", ".ply")


def _mesh_files(path: str) -> list[str]:
    if os.path.isdir(path):
        files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.lower().endswith(MESH_EXTENSIONS))
        if not files:
            raise SystemExit(f"--mesh {path}: the folder holds no .obj or .ply file")
        return files
    if not os.path.isfile(path):
        raise SystemExit(f"--mesh {path}: no such file or folder")
    if not path.lower().endswith(MESH_EXTENSIONS):
        raise SystemExit(f"--mesh {path}: expected an .obj or .ply file")
    return [path]


def _read_mesh(path: str):
    from utils.geometry.mesh_io import load_obj, load_ply

    verts, faces, _ = (load_obj if path.lower().endswith(".obj") else load_ply)(path)
    return verts, faces


def _read_joints(path: str):
    import numpy as np

    if path.lower().endswith(".npy"):
        joints = np.load(path)
    elif path.lower().endswith(".json"):
        with open(path) as fh:
            data = json.load(fh)
        if isinstance(data, dict):  # {frame: joints}, in frame order
            data = [data[k] for k in sorted(data, key=lambda k: (len(k), k))]
        joints = np.asarray(data, dtype=np.float64)
    else:
        raise SystemExit(f"--joints {path}: expected a .npy or .json file")
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim == 2:
        joints = joints[None]
    if joints.ndim != 3 or joints.shape[1:] not in ((21, 3), (16, 3)):
        raise SystemExit(f"--joints {path}: expected (F, 21, 3), (21, 3) or (F, 16, 3), got {joints.shape}")
    return joints


def _frame_ids(files: list[str], count: int) -> list[str]:
    """Frame keys: the number in each file name when every name has a distinct one, else 0..F-1."""
    numbers = [re.findall(r"\d+", os.path.splitext(os.path.basename(f))[0]) for f in files]
    if files and all(numbers) and len({n[-1] for n in numbers}) == len(files):
        return [str(int(n[-1])) for n in numbers]
    return [str(i) for i in range(count)]


def _parse_settings(pairs: list[str]):
    from utils.geometry.mano_fit import FitSettings

    fields = {f.name for f in dataclasses.fields(FitSettings)}
    values = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in fields:
            raise SystemExit(f"--set {pair!r}: expected key=value with key one of {sorted(fields)}")
        try:
            values[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            values[key] = text  # a bare word: a string setting such as robust=huber
    try:
        return FitSettings(**values)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"--set: {err}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mesh", help="target mesh (.obj/.ply) or a folder of them, one per frame")
    parser.add_argument("--joints", help="target joints (.npy or .json), (F, 21, 3) or (F, 16, 3)")
    parser.add_argument("--out", required=True, help="output JSON of MANO parameters per frame")
    parser.add_argument("--report", help="report JSON (default: <out>_report.json)")
    parser.add_argument(
        "--mano_path",
        default=None,
        help="folder with MANO_RIGHT/LEFT.pkl or a file "
        "(default: $SRHAND_MANO_DIR, else the procedural hand)",
    )
    parser.add_argument("--side", default="right", choices=("right", "left"))
    parser.add_argument("--units", default="m", choices=("m", "mm"), help="units of the target files")
    parser.add_argument("--points_only", action="store_true", help="ignore the meshes' faces (point clouds)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a FitSettings field, e.g. --set robust=huber --set share_shape=False",
    )
    args = parser.parse_args(argv)
    if not args.mesh and not args.joints:
        parser.error("give --mesh, --joints or both")

    import numpy as np
    import torch

    from utils.geometry.mano import HandModel, resolve_hand_model_path
    from utils.geometry.mano_fit import fit_mano

    settings = _parse_settings(args.set)
    scale = 1e-3 if args.units == "mm" else 1.0
    files = _mesh_files(args.mesh) if args.mesh else []
    meshes = [_read_mesh(f) for f in files]
    joints = _read_joints(args.joints) * scale if args.joints else None
    num_frames = len(meshes) if meshes else len(joints)
    if meshes and joints is not None and len(joints) != len(meshes):
        raise SystemExit(f"--joints has {len(joints)} frame(s) but --mesh gives {len(meshes)} mesh(es)")

    model_path = resolve_hand_model_path(args.mano_path, args.side)
    hand_model = HandModel.from_file(model_path, side=args.side)
    print(f"hand model: {model_path}; {num_frames} frame(s)")

    # One call when every frame has the same vertex list (shared shape); otherwise frame by frame.
    same_topology = (
        bool(meshes)
        and all(v.shape == meshes[0][0].shape for v, _ in meshes)
        and all(np.array_equal(f, meshes[0][1]) for _, f in meshes)
    )
    groups = [list(range(num_frames))] if not meshes or same_topology else [[i] for i in range(num_frames)]
    if len(groups) > 1:
        print("the meshes differ in vertex count or faces: fitting frame by frame (one shape per frame)")
    poses, shapes, transes, reports = [], [], [], []
    for idx in groups:
        target_verts = target_faces = target_joints = None
        if meshes:
            target_verts = torch.as_tensor(np.stack([meshes[i][0] for i in idx]) * scale)
            faces = meshes[idx[0]][1]
            target_faces = None if args.points_only or len(faces) == 0 else torch.as_tensor(faces)
        if joints is not None:
            target_joints = torch.as_tensor(joints[idx])
        fit = fit_mano(
            hand_model,
            target_verts=target_verts,
            target_faces=target_faces,
            target_joints=target_joints,
            settings=settings,
        )
        shape = fit.shape.reshape(-1, hand_model.num_betas).expand(len(idx), -1)
        poses.append(fit.pose.double().numpy())
        shapes.append(shape.double().numpy())
        transes.append(fit.trans.double().numpy())
        reports.append(fit.report)

    pose, shape, trans = (np.concatenate(x) for x in (poses, shapes, transes))
    frame_ids = _frame_ids(files, num_frames)
    other = "left" if args.side == "right" else "right"
    params = {
        fid: {
            args.side: {"pose": pose[i].tolist(), "shape": shape[i].tolist(), "trans": trans[i].tolist()},
            other: None,
        }
        for i, fid in enumerate(frame_ids)
    }
    report = (
        reports[0]
        if len(reports) == 1
        else {
            "iterations": sum(r["iterations"] for r in reports),
            "converged": all(r["converged"] for r in reports),
            "residual_mm": {
                k: (
                    None
                    if any(r["residual_mm"][k] is None for r in reports)
                    else float(np.mean([r["residual_mm"][k] for r in reports]))
                )
                for k in reports[0]["residual_mm"]
            },
            "per_frame": [dict(r["per_frame"][0], frame=i) for i, r in enumerate(reports)],
            "failed_frames": [i for i, r in enumerate(reports) if r["failed_frames"]],
            "rescue": {str(i): r["rescue"]["0"] for i, r in enumerate(reports) if r["rescue"]},
            "groups": reports,
        }
    )
    report = dict(
        report,
        frame_ids=frame_ids,
        hand_model=model_path,
        side=args.side,
        targets={"mesh": files, "joints": args.joints, "units": args.units},
    )

    from utils.checkpoint import atomic_write_text

    report_path = args.report or os.path.splitext(args.out)[0] + "_report.json"
    atomic_write_text(args.out, json.dumps(params, indent=1))
    atomic_write_text(report_path, json.dumps(report, indent=1))

    residual = report["residual_mm"]
    shown = ", ".join(f"{k} {v:.4g}" for k, v in residual.items() if v is not None and not k.endswith("_max"))
    print(f"converged: {report['converged']}, iterations: {report['iterations']}; residual (mm): {shown}")
    for frame, fid in zip(report["per_frame"], frame_ids, strict=True):
        parts = [
            f"{k.replace('_mean', '')} {frame[k]:.4g}"
            for k in ("surface_to_target_mean", "target_to_surface_mean", "joints_mean")
            if frame.get(k) is not None
        ]
        print(f"  frame {fid}: mean (mm) " + ", ".join(parts))
        if frame.get("failed_checks"):
            checks = ", ".join(
                f"{k} {c['value']:.1f} mm > {c['limit']:g} mm" for k, c in frame["failed_checks"].items()
            )
            print(
                f"WARNING: frame {fid}: the fit failed its quality check ({checks}): a finger on another "
                "finger's surface or the hand turned; give --joints, or see docs/mano_fit.md 'Quality check'",
                file=sys.stderr,
            )
    print(f"wrote {args.out} and {report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
