"""What to generate: :class:`SyntheticConfig`, its presets and the sequence names of the layout."""

from __future__ import annotations

from dataclasses import dataclass

from utils.errors import InputError

# InterHand2.6M-style sequence names: the reconstruction subject's sequence and every SR subject's.
RECON_SEQUENCE = "ROM03_RT_No_Occlusion"
SR_SEQUENCE = "ROM01_RT_Synthetic"

PRESETS = {
    # CPU-sized: a few minutes on 2 cores.
    "cpu": dict(
        raw_size=(192, 192),
        hr_size=128,
        num_views=12,
        num_heldout_views=2,
        num_frames=12,
        num_subjects=5,
        supersample=2,
    ),
    # The paper's protocol: 256x256 crops, 20 views x 20 frames (+ held-out frames and views),
    # InterHand-like portrait raw images.
    "paper": dict(
        raw_size=(512, 334),
        hr_size=256,
        num_views=20,
        num_heldout_views=2,
        num_frames=20,
        num_subjects=10,
        supersample=2,
    ),
}


@dataclass
class SyntheticConfig:
    """What to generate (see :data:`PRESETS`).

    Attributes:
        seed: master seed; every subject draws from its own child stream.
        raw_size: ``(H, W)`` of the raw camera images.
        hr_size: crop size the consumers are meant to use (recorded in the metadata; the reader crops).
        num_views: cameras per SR capture, and fitting cameras of the reconstruction sequence.
        num_heldout_views: extra cameras of the reconstruction sequence, for evaluation only.
        num_frames: frames per SR sequence, and fitting frames of the reconstruction sequence (which
            gets as many held-out frames again, interleaved).
        num_subjects: total subjects: 1 reconstruction subject (test split), ``num_val_subjects``
            SR-validation subjects (val split), the rest SR-training subjects (train split).
        num_val_subjects: None = ``max(1, num_subjects // 5)``.
        supersample: render at this integer factor and box-filter down (antialiasing).
        subdivision_levels: Loop subdivisions of the hand mesh (3 = SRHand/XHand's 49,281 vertices).
        hand_side: ``right`` (SRHand's data) or ``left``.
        mano_dir: folder with ``MANO_{RIGHT,LEFT}.pkl`` (None: the shipped procedural hand).
        save_gt_normals: also write camera-space GT normal maps (PNG, ``(n + 1) / 2``).
        segmentation: also write the capture's own foreground segmentation, ``mask{frame}.png`` beside each
            image (the silhouette of the true surface, as ``gt_masks/``), which the reader then carries
            (``data.mask_source = capture``).
        surface: ``v2`` (soft tissue + pose-dependent deformation, :mod:`datasets.synthetic.tissue`) or
            ``mano`` (the v1 truth: the subject's MANO mesh, subdivided, plus the detail).
        annotation: ``fit`` (MANO parameters fitted to noisy keypoints of the truth,
            :mod:`datasets.synthetic.annotate`) or ``exact`` (the parameters that posed the subject).
        annotation_noise_mm: keypoint noise (standard deviation per coordinate, mm) of ``fit``.
        p2p_frames: frames per sequence (evenly spaced) on which the metadata's input-MANO P2P is
            measured (0: none).
        p2p_samples: surface samples per mesh of that P2P (``utils.metrics.geometry.p2p_mm``).
    """

    seed: int = 0
    raw_size: tuple = (192, 192)
    hr_size: int = 128
    num_views: int = 12
    num_heldout_views: int = 2
    num_frames: int = 12
    num_subjects: int = 5
    num_val_subjects: int | None = None
    supersample: int = 2
    subdivision_levels: int = 3
    hand_side: str = "right"
    mano_dir: str | None = None
    save_gt_normals: bool = False
    segmentation: bool = False
    surface: str = "v2"
    annotation: str = "fit"
    annotation_noise_mm: float = 3.0
    p2p_frames: int = 6
    p2p_samples: int = 2000

    @classmethod
    def preset(cls, name: str, **overrides) -> SyntheticConfig:
        if name not in PRESETS:
            raise InputError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        values = dict(PRESETS[name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def __post_init__(self):
        self.raw_size = tuple(
            int(s)
            for s in (self.raw_size if not isinstance(self.raw_size, int) else (self.raw_size, self.raw_size))
        )
        if self.num_subjects < 3:
            raise InputError(
                f"num_subjects must be >= 3 (train, val, reconstruction), got {self.num_subjects}"
            )
        if self.hand_side not in ("right", "left"):
            raise InputError(f"hand_side must be 'right' or 'left', got {self.hand_side!r}")
        for key in ("num_views", "num_frames", "supersample", "p2p_samples"):
            if getattr(self, key) < 1:
                raise InputError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.surface not in ("v2", "mano"):
            raise InputError(f"surface must be 'v2' or 'mano', got {self.surface!r}")
        if self.annotation not in ("fit", "exact"):
            raise InputError(f"annotation must be 'fit' or 'exact', got {self.annotation!r}")
        if not (self.annotation_noise_mm >= 0 and self.p2p_frames >= 0):
            raise InputError(
                f"annotation_noise_mm and p2p_frames must be >= 0, got {self.annotation_noise_mm} "
                f"and {self.p2p_frames}"
            )

    def subject_plan(self) -> list:
        """``[(split, capture, role)]`` per subject index: reconstruction first, then val, then train."""
        n_val = self.num_val_subjects if self.num_val_subjects is not None else max(1, self.num_subjects // 5)
        n_train = self.num_subjects - 1 - n_val
        if n_val < 1 or n_train < 1:
            raise InputError(
                f"{self.num_subjects} subjects cannot give >= 1 train and {n_val} val subject(s)"
            )
        plan = [("test", "Capture0", "reconstruction")]
        plan += [("val", f"Capture{i}", "sr_val") for i in range(n_val)]
        plan += [("train", f"Capture{i}", "sr_train") for i in range(n_train)]
        return plan
