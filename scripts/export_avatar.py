"""Export a trained SRHand avatar as a skinned glTF 2.0 binary (``.glb``) that Blender, three.js and game
engines pose by its MANO skeleton.

The file holds the canonical mesh with the displacement averaged over the fitted frames, the mean albedo as
vertex colours (``COLOR_0``, linear RGB), the 16 MANO joints (parent hierarchy, inverse bind matrices; each
joint node's default rotation is the hand mean, so it opens as the relaxed MANO hand) and the learned
skinning weights averaged over the fitted frames, top 4 per vertex, renormalised. A MANO pose ``p`` (48,
without the hand mean) and ``trans`` are applied by setting joint j's node rotation to the rotation of
``p_j + hands_mean_j`` and the root (wrist) node's translation to its rest position + ``trans``.

What it cannot carry: the avatar's pose-dependent displacement, albedo and skinning weights (its networks;
``scripts/animate.py`` evaluates them) and the SH shading (lighting is the viewer's). With ``--poses`` the
file also holds those poses as an animation clip (joint rotations and the wrist translation, one keyframe per
pose at ``--fps``) that viewers play on the skeleton. The script skins the
written file in NumPy at every pose of the capture and reports the distance to the avatar's own mesh at
those poses (mean and max, mm) in ``<out>.json`` and on stdout; README "What a run writes" quotes the
demo's.

Usage::

    python scripts/export_avatar.py --model_path outputs/synthetic_srhand    # -> <run>/avatar.glb
    python scripts/export_avatar.py --model_path outputs/synthetic_srhand --poses interpolate --inbetween 3
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
    parser.add_argument("--out", default=None, help="the .glb to write (default <run>/avatar.glb)")
    parser.add_argument(
        "--poses",
        default=None,
        help="also store these poses as an animation clip (as scripts/animate.py's --poses: interpolate, capture, "
        "capture:PATH, FILE.npz, FILE.json)",
    )
    add_pose_source_arguments(parser)
    parser.add_argument(
        "--fps", type=float, default=20.0, help="frame rate of the animation clip (default 20)"
    )
    add_trained_run_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)  # before the imports below: --help needs no torch
    from trainers.run import main_guard

    return main_guard(lambda: run(args))


def run(args: argparse.Namespace) -> dict:
    from pathlib import Path

    from trainers.srhand.animation import load_trained_avatar, read_run_capture
    from trainers.srhand.export import mean_fields, pose_animation, skinned_mesh, skinning_gap_mm
    from trainers.srhand.poses import capture_poses, resolve_poses
    from utils.checkpoint import atomic_write_text
    from utils.cli import resolve_device
    from utils.errors import InputError
    from utils.geometry.gltf_io import write_skinned_glb

    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() != ".glb":
        raise InputError(f"--out {out}: the export is a binary glTF, name it *.glb")
    trained = load_trained_avatar(args.model_path, resolve_device(args.device), args.mano_dir)
    out = out or trained.path.parent / "avatar.glb"
    seq = read_run_capture(trained, args.data_path)
    every = capture_poses(seq, f"capture {seq.name}")
    fitted_ids = set(trained.record.frame_ids)
    fitted = capture_poses(
        seq.select(frames=[i for i, f in enumerate(seq.frame_ids) if f in fitted_ids]), "fit"
    )
    fields = mean_fields(trained.avatar, fitted)
    clip = None
    if args.poses:
        poses = resolve_poses(
            args.poses,
            seq,
            trained.record.hand_side,
            trained.avatar.pose_mean,
            args.inbetween,
            args.pose_capture,
        )
        clip = pose_animation(trained.avatar, poses, args.fps)
    write_skinned_glb(out, skinned_mesh(trained.avatar, fields, clip))
    gap = skinning_gap_mm(out, trained.avatar, every)
    summary = {
        "glb": str(out),
        "num_vertices": int(trained.avatar.num_verts),
        "mean_over_frames": fitted.labels,
        "skinned_vs_avatar_at_capture_poses": gap,
        "not_carried": "pose-dependent displacement, albedo and skinning weights; SH shading",
        "animation": None
        if clip is None
        else {"frames": len(clip.times), "fps": args.fps, "poses": clip.name},
    }
    atomic_write_text(out.with_suffix(".json"), json.dumps(summary, indent=2))
    print(
        f"{out}: {summary['num_vertices']} vertices, 16 joints; skinned in the glTF way at the {gap['frames']} "
        f"capture poses it is {gap['mean_mm']:.3f} mm from the avatar's own mesh on average "
        f"(max {gap['max_mm']:.3f} mm); details in {out.with_suffix('.json')}"
    )
    return summary


if __name__ == "__main__":
    sys.exit(main())
