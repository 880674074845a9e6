"""Stage 3 of SRHand: reconstruct a detailed hand avatar from LR multi-view captures, supervised by GIIF's
super-resolved images, while adaptively fine-tuning GIIF with the hand's multi-view/pose consistency.

    python main.py --conf conf/ih_GIIF_16_256.conf                                   # train (+ evaluate)
    python main.py --conf conf/ih_GIIF_test.conf --eval --r --model_path FOLDER      # evaluate FOLDER
    python main.py --conf conf/ih_GIIF_test.conf --eval --model_path FOLDER --save_vis
    python main.py --conf conf/synthetic/srhand.conf                                 # CPU-sized, synthetic data
    python main.py --conf conf/synthetic/srhand.conf --r                             # resume the run
    python main.py --conf conf/synthetic/srhand.conf --set sr_source=bicubic --set exp_name=synthetic_bicubic
"""

import sys

from trainers.run import main_guard, run_srhand

if __name__ == "__main__":
    sys.exit(main_guard(lambda: run_srhand(__doc__)))
