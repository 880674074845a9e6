"""Stage 2 of SRHand: adversarial training of GIIF with a U-Net discriminator; --eval validates GIIF (and,
with --model_path_disc, how well that discriminator tells the validation ground truth from GIIF's SR).

python main_disc.py --conf conf/disc_16_256_128.conf --model_path RUN_GIIF/giif.pth
python main_disc.py --conf conf/disc_16_256_128.conf --eval --model_path PATH_TO_GIIF --model_path_disc PATH_TO_DISCRIMINATOR
"""

import sys

from trainers.run import main_guard, run_sr_stage

if __name__ == "__main__":
    sys.exit(main_guard(lambda: run_sr_stage("disc", __doc__)))
