"""Stage 1 of SRHand: train GIIF (geometric-aware implicit image function) on captures.

python main_giif.py --conf conf/giif_16_256_128.conf
python main_giif.py --conf conf/synthetic/giif.conf --set train.epochs=2
python main_giif.py --conf conf/synthetic/giif.conf --eval --model_path outputs/synthetic_giif/giif.pth --save_vis
torchrun --nproc_per_node 2 main_giif.py --conf ...        # multi-GPU / multi-process (DDP)
"""

import sys

from trainers.run import main_guard, run_sr_stage

if __name__ == "__main__":
    sys.exit(main_guard(lambda: run_sr_stage("giif", __doc__)))
