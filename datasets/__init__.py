"""Capture data: the CaptureSequence model (capture.py), the InterHand2.6M reader/writer
(interhand.py), crops/LR/masks/normal maps (preprocess.py), the low-resolution camera degradation
(lr_camera.py), GIIF training samples (giif_data.py)
and the synthetic capture generator (the synthetic/ package). See docs/data.md.

Nothing is imported or loaded here: import the submodule you need.

Imports allowed: ``utils``; nothing here imports ``models`` or ``trainers`` (the synthetic/ package has its
own, narrower rule).
"""
