"""Generate synthetic multi-view hand captures in the InterHand2.6M layout.

Usage::

    python scripts/make_synthetic.py                          # CPU preset into data/synthetic
    python scripts/make_synthetic.py --out DIR --preset paper --save_vis
    python scripts/make_synthetic.py --num-views 8 --num-frames 8 --num-subjects 4 --seed 3
    python scripts/make_synthetic.py --surface mano --annotation exact    # the v1 data

Layout, splits and design: docs/data.md. The InterHand reader (``datasets.interhand``) loads the
result like the real dataset.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="data/synthetic", help="output root (default: data/synthetic)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", choices=("cpu", "paper"), default="cpu")
    p.add_argument(
        "--hr-size", "--hr_size", dest="hr_size", type=int, help="crop size consumers use (metadata)"
    )
    p.add_argument(
        "--raw-size",
        "--raw_size",
        dest="raw_size",
        type=int,
        nargs="+",
        metavar="N",
        help="raw image size: N (square) or H W",
    )
    p.add_argument("--num-views", "--num_views", dest="num_views", type=int)
    p.add_argument("--num-heldout-views", "--num_heldout_views", dest="num_heldout_views", type=int)
    p.add_argument("--num-frames", "--num_frames", dest="num_frames", type=int)
    p.add_argument("--num-subjects", "--num_subjects", dest="num_subjects", type=int)
    p.add_argument("--num-val-subjects", "--num_val_subjects", dest="num_val_subjects", type=int)
    p.add_argument("--supersample", type=int)
    p.add_argument("--hand", choices=("right", "left"), dest="hand_side")
    p.add_argument(
        "--mano_dir",
        "--mano-dir",
        dest="mano_dir",
        help="folder with MANO_RIGHT.pkl/MANO_LEFT.pkl (default: the procedural hand)",
    )
    p.add_argument(
        "--save_gt_normals",
        "--save-gt-normals",
        dest="save_gt_normals",
        action="store_true",
        default=None,
        help="also write GT camera-space normal maps",
    )
    p.add_argument(
        "--segmentation",
        action="store_true",
        default=None,
        help="also write each image's foreground segmentation (mask{frame}.png beside it: the true "
        "surface's silhouette), for data.mask_source = capture",
    )
    p.add_argument(
        "--surface",
        choices=("v2", "mano"),
        help="true surface: v2 (default: soft tissue + pose-dependent deformation) or mano (v1: the "
        "subject's MANO mesh, subdivided, plus detail)",
    )
    p.add_argument(
        "--annotation",
        choices=("fit", "exact"),
        help="MANO annotation: fit (default: fitted to noisy keypoints of the truth, as InterHand's) or "
        "exact (the parameters that posed the subject)",
    )
    p.add_argument(
        "--annotation_noise_mm",
        "--annotation-noise-mm",
        dest="annotation_noise_mm",
        type=float,
        help="keypoint noise of --annotation fit, standard deviation per coordinate in mm (default 3)",
    )
    p.add_argument(
        "--p2p_frames",
        "--p2p-frames",
        dest="p2p_frames",
        type=int,
        help="frames per sequence for the metadata's input-MANO P2P (default 6; 0 = none)",
    )
    p.add_argument(
        "--p2p_samples",
        "--p2p-samples",
        dest="p2p_samples",
        type=int,
        help="surface samples per mesh of that P2P (default 2000)",
    )
    p.add_argument(
        "--save_vis",
        "--save-vis",
        dest="save_vis",
        action="store_true",
        help="write OUT/vis_synthetic.png (views x frames, masks, normals, close-ups)",
    )
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from datasets.synthetic import SyntheticConfig, generate, save_visualisation

    raw_size = None
    if args.raw_size is not None:
        raw_size = tuple(args.raw_size * 2 if len(args.raw_size) == 1 else args.raw_size[:2])
    config = SyntheticConfig.preset(
        args.preset,
        seed=args.seed,
        raw_size=raw_size,
        hr_size=args.hr_size,
        num_views=args.num_views,
        num_heldout_views=args.num_heldout_views,
        num_frames=args.num_frames,
        num_subjects=args.num_subjects,
        num_val_subjects=args.num_val_subjects,
        supersample=args.supersample,
        hand_side=args.hand_side,
        mano_dir=args.mano_dir,
        save_gt_normals=args.save_gt_normals,
        segmentation=args.segmentation,
        surface=args.surface,
        annotation=args.annotation,
        annotation_noise_mm=args.annotation_noise_mm,
        p2p_frames=args.p2p_frames,
        p2p_samples=args.p2p_samples,
    )
    meta = generate(config, args.out, progress=args.progress, overwrite=args.overwrite)
    print(
        f"[synthetic] {meta['num_images']} images, {meta['bytes'] / 2 ** 20:.1f} MiB, "
        f"{meta['seconds']:.1f} s -> {args.out}"
    )
    for split in ("test", "val", "train"):
        if split in meta:
            m = meta[split]
            print(
                f"[synthetic] {split}: input MANO P2P {m['input_mano_p2p_mm']:.2f} mm (p90 "
                f"{m['input_mano_p2p_p90_mm']:.2f} mm), annotation MPJPE {m['annotation_mpjpe_mm']:.2f} mm"
            )
    if args.save_vis:
        path = save_visualisation(
            args.out,
            os.path.join(args.out, "vis_synthetic.png"),
            hr_size=config.hr_size,
            mano_dir=args.mano_dir,
        )
        print(f"[synthetic] visualisation: {path}")
    return meta


if __name__ == "__main__":
    main()
