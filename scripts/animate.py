"""Drive a trained SRHand avatar with new MANO poses: a video, per-frame meshes and the poses used.

The avatar is rebuilt from the run's ``model.pth`` alone (no config); its pose-conditioned skinning,
displacement and albedo networks are evaluated at every pose, exactly as evaluation does
(``trainers.srhand.animation``). Writes into ``--out`` (default ``<run>/animation``):
``animation.mp4`` (and/or ``.gif``), ``meshes/<index>.ply`` (vertex colours = albedo) and ``poses.npz``.

Poses (``--poses``):
  interpolate       new poses between consecutive frames of the run's capture (slerp per joint), none of
                    them a capture pose (``--inbetween`` per pair)
  capture           the capture's own poses, as annotated (the meshes evaluation writes for those frames
                    when the run was fitted without data.mano_noise)
  capture:PATH      another InterHand sequence folder's poses (ROOT/images/<split>/Capture<N>/<sequence>)
  FILE.npz          pose (N, 48) MANO axis-angle without the hand mean, trans (N, 3) metres
  FILE.json         an InterHand MANO_NeuralAnnot file (``--pose_capture`` picks the capture) or
                    scripts/fit_mano.py's output

Usage::

    python scripts/animate.py --model_path outputs/synthetic_srhand --poses interpolate --camera orbit
    python scripts/animate.py --model_path outputs/synthetic_srhand --poses walk.npz --camera cam400262 \\
        --video mp4 gif --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def parse_args(argv=None) -> argparse.Namespace:
    from utils.cli import add_pose_source_arguments, add_trained_run_arguments

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model_path", required=True, help="a stage-3 run folder or its model.pth")
    parser.add_argument("--poses", default="interpolate", help="pose source (see above; default interpolate)")
    parser.add_argument("--camera", default="orbit", help="a camera name of the capture, or orbit (default)")
    parser.add_argument("--out", default=None, help="output folder (default <run>/animation)")
    add_pose_source_arguments(parser)
    parser.add_argument("--size", type=int, default=256, help="frame side in pixels (default 256)")
    parser.add_argument("--fps", type=float, default=20.0, help="video frame rate (default 20)")
    parser.add_argument("--video", nargs="+", default=["mp4"], choices=["mp4", "gif"], help="video format(s)")
    parser.add_argument(
        "--meshes", default="ply", choices=["ply", "obj", "none"], help="per-frame mesh files"
    )
    parser.add_argument("--turns", type=float, default=1.0, help="orbit turns over the sequence (default 1)")
    parser.add_argument(
        "--background",
        type=float,
        nargs=3,
        default=[1.0, 1.0, 1.0],
        metavar=("R", "G", "B"),
        help="in [0, 1]",
    )
    add_trained_run_arguments(parser)
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)  # before the imports below: --help needs no torch
    from trainers.run import main_guard

    return main_guard(lambda: run(args))


def run(args: argparse.Namespace) -> dict:
    from pathlib import Path

    from trainers.srhand.animation import animate, load_trained_avatar, read_run_capture
    from trainers.srhand.poses import resolve_poses
    from utils.cli import resolve_device
    from utils.errors import InputError
    from utils.run_logging import progress

    if args.size < 16:
        raise InputError(f"--size {args.size}: use at least 16 pixels")
    device = resolve_device(args.device)
    trained = load_trained_avatar(args.model_path, device, args.mano_dir)
    seq = read_run_capture(trained, args.data_path)
    poses = resolve_poses(
        args.poses, seq, trained.record.hand_side, trained.avatar.pose_mean, args.inbetween, args.pose_capture
    )
    out = Path(args.out) if args.out else trained.path.parent / "animation"
    print(f"{len(poses)} poses ({poses.source}) -> {out}", flush=True)
    summary = animate(
        trained,
        seq,
        poses,
        args.camera,
        out,
        size=args.size,
        fps=args.fps,
        videos=tuple(args.video),
        mesh_format=args.meshes,
        background=tuple(args.background),
        turns=args.turns,
        progress=None if args.no_progress else progress,
    )
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    sys.exit(main())
