"""Stage 3 of SRHand (``main.py``): avatar reconstruction with adaptive GIIF fine-tuning.

``SRHandTrainer`` (:mod:`.trainer`) is the orchestrator that reads like the paper's procedure; each
concern has its own module, and the trainer combines them as mixins whose methods share the
trainer's state:

- :mod:`.sequence`: the fitted frames and views in memory (``SequenceData``, ``prepare_sequence``),
  reading the configured capture, MANO noise (paper Table 5);
- :mod:`.setup`: avatar, GIIF, discriminator, optimisers, SR targets and shared tensor helpers;
- :mod:`.phases`: albedo and shape-from-shading pre-phases, the joint phase;
- :mod:`.finetune`: the adaptive fine-tuning rounds inside the joint phase;
- :mod:`.state`: checkpoint state, save, resume, loading for evaluation;
- :mod:`.evaluation`: held-out evaluation, metrics, panels, report.

Imports allowed: ``models``, ``datasets``, ``utils``, ``trainers.losses`` and ``trainers.sr_eval``;
nothing here imports the other stages' trainers.
"""

from trainers.srhand.evaluation import format_report
from trainers.srhand.sequence import SequenceData, SRHandInputError, prepare_sequence
from trainers.srhand.setup import jet
from trainers.srhand.trainer import SRHandTrainer

__all__ = ["SRHandTrainer", "SequenceData", "SRHandInputError", "format_report", "jet", "prepare_sequence"]
