"""Generate the procedural stand-in hand (NOT MANO) in the MANO v1.2 pickle format.

The builder and its checks live in :mod:`utils.geometry.procedural_hand` (construction described
there); this script writes ``assets/procedural_hand/PROCEDURAL_HAND_{RIGHT,LEFT}.pkl``.

Usage::

    python scripts/make_procedural_hand.py                    # writes assets/procedural_hand/
    python scripts/make_procedural_hand.py --preview hand.png # also renders a preview image
"""

from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main(argv=None) -> int:
    import numpy as np

    from utils.geometry.procedural_hand import build_hand, check_hand, render_preview, write_hand

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default=os.path.join(REPO, "assets", "procedural_hand"))
    parser.add_argument("--preview", default=None, help="also save a preview image of the right hand")
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    for side in ("right", "left"):
        hand = build_hand(side)
        summary = check_hand(hand)
        path = os.path.join(args.out_dir, f"PROCEDURAL_HAND_{side.upper()}.pkl")
        write_hand(hand, path)
        print(f"{path}: {os.path.getsize(path) / 1e6:.2f} MB, {summary}")
        if args.preview and side == "right":
            render_preview(hand["v_template"], hand["f"].astype(np.int64), args.preview)
    return 0


if __name__ == "__main__":
    sys.exit(main())
