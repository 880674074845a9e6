"""trainers package (no work at import time): the entry scripts' start-up (``run``), the stage-1/2 trainers
(``giif_trainer``, ``disc_trainer``), the SR evaluation they share (``sr_eval``), the device check
(``gpu_check``), and the subpackages ``losses`` and ``srhand`` (stage 3, with its own rule).

Imports allowed: ``models``, ``datasets`` and ``utils``.
"""
