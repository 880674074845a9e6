"""Stage 3 of SRHand (``main.py``): avatar reconstruction with adaptive GIIF fine-tuning.

The stage is a handful of explicit objects and the functions that advance them; a function's signature
says what it reads, its docstring what it changes:

- :mod:`.settings`: ``SRHandSettings``, the config read once into frozen dataclasses;
- :mod:`.context`: ``RunContext`` (frozen): settings, run folder, device, logger, seed, renderer;
- :mod:`.sequence`: ``FitData`` / ``SequenceData``, the fitted frames and views in memory, read from the
  configured capture with the MANO noise of paper Table 5 (``load_fit_data``, ``read_capture``);
- :mod:`.bundle`: ``SRHandModels`` (frozen): avatar, GIIF and its frozen original, discriminator,
  perceptual loss (``build_models``);
- :mod:`.targets`: ``SRTargets``, the SR images that supervise the avatar;
- :mod:`.state`: ``TrainingState`` (phase, epoch, steps, optimisers, pre-phase tensors, history) and the
  ``FitRecord`` / ``FitProgress`` of a fit, with their checkpoints;
- :mod:`.phases`: the albedo and shape-from-shading pre-phases and the joint phase;
- :mod:`.finetune`: the adaptive fine-tuning rounds inside the joint phase;
- :mod:`.evaluation`: held-out evaluation of a ``FittedAvatar``, metrics, panels, report;
- :mod:`.giif_decode`, :mod:`.visuals`: GIIF decoding over whole images; the pictures' colour maps;
- :mod:`.trainer`: ``SRHandTrainer``, the thin facade ``trainers.run``, the GPU check and the step
  benchmark drive;
- :mod:`.poses`, :mod:`.animation`, :mod:`.export`: a trained avatar outside its run, rebuilt from
  ``model.pth`` alone: pose sequences, posing and rendering them (``scripts/animate.py``), the skinned glTF
  export (``scripts/export_avatar.py``).

Imports allowed: ``models``, ``datasets``, ``utils``, ``trainers.losses`` and ``trainers.sr_eval``;
nothing here imports the other stages' trainers.
"""

from trainers.srhand.evaluation import format_report
from trainers.srhand.sequence import SequenceData, SRHandInputError, prepare_sequence
from trainers.srhand.trainer import SRHandTrainer
from trainers.srhand.visuals import jet

__all__ = ["SRHandTrainer", "SequenceData", "SRHandInputError", "format_report", "jet", "prepare_sequence"]
