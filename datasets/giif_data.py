"""GIIF training view of InterHand-layout data: one sample per (frame, camera) of usable right-hand frames.

The dataset gives the *HR* side only: the MANO-masked HR crop, its mask, the MANO normal map and
the cropped camera. The LR image (degradation, random scale) and the query coordinates are made by
the trainer, so one set of files serves every scale (reference §6.2: the LR is produced in the
trainer, not in the dataset).

Subjects are split by capture: :func:`split_captures` holds out whole captures for validation, so
no person is in both sets.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import Dataset

from datasets import interhand
from utils.errors import InputError


def split_captures(
    captures, num_val: int = 4, val_captures=None, order: str = "numeric"
) -> tuple[list, list]:
    """Split capture names into (train, val) by subject.

    Args:
        captures: capture folder names (``Capture3`` ...).
        num_val: the last ``num_val`` captures in ``order`` go to validation (reference: 4).
        val_captures: explicit validation captures instead (each must be in ``captures``).
        order: ``numeric`` (Capture2 before Capture10) or ``lexicographic`` (the reference code's
            ``sorted(os.listdir(...))``, Capture10 before Capture2).

    Returns:
        (train, val) lists of capture names, disjoint.
    """
    names = [interhand.capture_dirname(c) for c in captures]
    if order == "numeric":
        names = sorted(names, key=lambda n: int(interhand.capture_key(n)))
    elif order == "lexicographic":
        names = sorted(names)
    else:
        raise ValueError(f"order must be 'numeric' or 'lexicographic', got {order!r}")
    if val_captures is not None:
        val = [interhand.capture_dirname(c) for c in val_captures]
        missing = [c for c in val if c not in names]
        if missing:
            raise InputError(f"validation capture(s) {missing} not among {names}")
        return [n for n in names if n not in val], val
    if not 0 <= num_val < len(names):
        raise InputError(f"num_val must be in [0, {len(names) - 1}] for {len(names)} captures, got {num_val}")
    return names[: len(names) - num_val], names[len(names) - num_val :]


class GiifDataset(Dataset):
    """HR crops, masks and MANO normal maps of all usable frames of some captures.

    Args:
        data_path: InterHand-layout root (real InterHand2.6M or the synthetic generator's output).
        split: ``train``/``val``/``test`` folder to read.
        captures: capture names (default: every capture of the split; see :func:`split_captures`).
        sequences: None (every sequence), an int (the first N per capture, reference: 87) or a list
            of sequence names (those present in each capture).
        cameras: camera selection per sequence (see :func:`datasets.interhand.select_cameras`).
        hand: ``right`` (the reference) or ``left``.
        single_hand_only: keep frames where only ``hand`` is annotated (reference: right-hand-only).
        size: HR crop size, int or ``(h, w)``.
        normal_size: normal-map resolution (default: ``size``).
        normal_space: ``camera`` (default) or ``world`` (reference).
        crop_ratio: the hand fills this fraction of the crop side (reference 0.8).
        frame_stride: keep every k-th usable frame of a sequence.
        skip_black: replace all-black images (InterHand issue #134) by the next sample.
        mano_dir: MANO folder (default procedural hand / ``$SRHAND_MANO_DIR``).

    Each item is a dict: ``hr (3,h,w)`` masked RGB in [0,1], ``mask (1,h,w)``, ``normal_map (3,hn,wn)``,
    ``K (3,3)`` (of the crop), ``R (3,3)``, ``t (3,)``, ``verts_world (778,3)``, ``mano_pose (48,)``,
    ``mano_shape (10,)``, ``mano_trans (3,)``, ``index``, ``capture``, ``sequence``, ``frame_id``,
    ``camera``.
    """

    def __init__(
        self,
        data_path,
        split: str = "train",
        captures=None,
        sequences=None,
        cameras=None,
        hand: str = "right",
        single_hand_only: bool = True,
        size=256,
        normal_size=None,
        normal_space: str = "camera",
        crop_ratio: float = 0.8,
        frame_stride: int = 1,
        skip_black: bool = True,
        mano_dir=None,
        drop_cameras=interhand.DROP_CAMERAS,
    ):
        self.data_path = os.fspath(data_path)
        self.size, self.normal_size = size, normal_size
        self.normal_space, self.crop_ratio, self.skip_black = normal_space, crop_ratio, skip_black
        if captures is None:
            captures = interhand.list_captures(self.data_path, split)
        self.sequences = []
        self.skipped_black = 0
        for capture in captures:
            names = interhand.list_sequences(self.data_path, split, capture)
            if isinstance(sequences, int):
                names = names[:sequences]
            elif sequences is not None:
                names = [s for s in names if s in set(sequences)]
            for seq_name in names:
                try:
                    seq = interhand.read_interhand_sequence(
                        self.data_path,
                        split,
                        capture,
                        seq_name,
                        hand=hand,
                        cameras=cameras,
                        drop_cameras=drop_cameras,
                        single_hand_only=single_hand_only,
                        mano_dir=mano_dir,
                    )
                except interhand.NoUsableFrames:
                    # A sequence with no usable frame (e.g. two-hand only) contributes nothing.
                    continue
                if frame_stride > 1:
                    seq = seq.select(frames=range(0, seq.num_frames, frame_stride))
                seq.cache_mano = False  # one MANO forward per sample; thousands of sequences
                self.sequences.append(seq)
        self.items = [
            (s, f, v)
            for s, seq in enumerate(self.sequences)
            for f in range(seq.num_frames)
            for v in range(seq.num_views)
        ]
        if not self.items:
            raise InputError(
                f"{self.data_path}: no usable {hand}-hand frame in split '{split}' " f"captures {captures}"
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        for attempt in range(len(self.items)):
            s, f, v = self.items[(index + attempt) % len(self.items)]
            seq = self.sequences[s]
            sample = seq.sample(
                f,
                v,
                size=self.size,
                ratio=self.crop_ratio,
                normal_space=self.normal_space,
                normal_size=self.normal_size,
            )
            if self.skip_black and sample["is_black"]:
                self.skipped_black += 1
                continue
            break
        else:
            raise InputError(f"{self.data_path}: every image of this dataset is black")
        parts = seq.name.split("/")
        return {
            "hr": sample["image"] * sample["mask"],
            "mask": sample["mask"],
            "normal_map": sample["normal_map"],
            "K": sample["K"],
            "R": sample["R"],
            "t": sample["t"],
            "verts_world": sample["verts_world"],
            "mano_pose": sample["mano_pose"],
            "mano_shape": sample["mano_shape"],
            "mano_trans": sample["mano_trans"],
            "index": torch.tensor(index),
            "capture": parts[1],
            "sequence": parts[2],
            "frame_id": sample["frame_id"],
            "camera": sample["camera"],
        }

    def summary(self) -> str:
        lines = [f"GiifDataset: {len(self.items)} samples from {len(self.sequences)} sequence(s)"]
        lines += [seq.summary() for seq in self.sequences]
        return "\n".join(lines)
