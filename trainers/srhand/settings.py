"""The settings of stage 3, read once from the validated config (schema ``conf/schema/srhand.conf``).

Each config section is a frozen dataclass whose fields are the section's keys (their meaning is written
next to each key in the schema); :func:`read_settings` fills them with :func:`utils.config.read_section`.
The phases, the fine-tuning and the evaluation read these objects, never the config tree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from datasets.lr_camera import LRCamera
from utils.config import ConfigError, read_section

SR_SOURCES = ("giif_finetuned", "giif", "bicubic", "hr")
MASK_SOURCES = ("mano", "capture", "dilated")
PERCEPTUAL_IMPLS = ("fast", "package")


@dataclass(frozen=True, slots=True)
class MANONoiseSettings:
    """``data.mano_noise``: Gaussian noise on the MANO parameters of every frame read (paper Table 5)."""

    pose_std: float
    shape_std: float
    trans_std: float
    seed: int

    @property
    def active(self) -> bool:
        return any((self.pose_std, self.shape_std, self.trans_std))

    def record(self) -> dict:
        """The settings as checkpoints and ``metrics.json`` record them: ``{}`` when no noise is added."""
        if not self.active:
            return {}
        return {
            "pose_std": self.pose_std,
            "shape_std": self.shape_std,
            "trans_std": self.trans_std,
            "seed": self.seed,
        }


@dataclass(frozen=True, slots=True)
class DataSettings:
    """``data``: the capture, the frames and views fitted, the crops and their degradation."""

    dataset: str
    data_path: str
    split: str
    capture: str
    sequence: str
    hand: str
    cameras: tuple
    num_views: int
    num_frames: int
    frame_ids: tuple
    drop_cam: tuple
    hr_size: int
    lr_size: int
    degradation: str
    lr_camera: LRCamera
    normal_size: int
    normal_space: str
    crop_ratio: float
    mask_source: str
    mask_margin: float
    mano_dir: str
    storage: str
    min_views: int
    allow_procedural_hand: bool
    mano_noise: MANONoiseSettings


@dataclass(frozen=True, slots=True)
class AlbedoSettings:
    """``albedo``: pre-phase (a), per-vertex albedo and per-view SH on the first frame."""

    epochs: int
    batch_size: int
    albedo_learning_rate: float
    sh_learning_rate: float
    photometric: float
    albedo_prior: float


@dataclass(frozen=True, slots=True)
class SfsSettings:
    """``sfs``: pre-phase (b), shape from shading on the first frame."""

    epochs: int
    batch_size: int
    delta_learning_rate: float
    albedo_learning_rate: float
    sh_learning_rate: float
    photometric: float
    lap_delta: float
    lap_verts: float
    lap_albedo: float
    lap_boost: float
    lap_boost_at: float
    albedo_prior: float
    edge: float


@dataclass(frozen=True, slots=True)
class TrainSettings:
    """``train``: the joint phase of the pose-conditioned networks over all frames."""

    epochs: int
    batch_size: int
    views_per_frame: int
    learning_rate: float
    perceptual: str
    perceptual_size: int
    perceptual_impl: str
    losses: dict
    late_start: float
    late_lap_delta: float
    late_photometric_scale: float
    renew_means_every: int
    renew_means_start: float
    renew_mode: str


@dataclass(frozen=True, slots=True)
class FinetuneSettings:
    """``finetune``: the adaptive fine-tuning rounds of GIIF inside the joint phase."""

    update_term: int
    start: float
    stop: float
    inner_epochs: int
    num_frames: int
    num_views: int
    batch_size: int
    learning_rate: float
    params: str
    chunk: int
    checkpoint_chunks: bool
    masked_decode: bool
    feature_cache_mib: int
    weights: dict


@dataclass(frozen=True, slots=True)
class RefineSettings:
    """``refine``: joint refinement of the MANO parameters with the avatar (:mod:`trainers.srhand.refine`)."""

    enabled: bool
    start: float
    shape: bool
    pose_learning_rate: float
    rot_learning_rate: float
    trans_learning_rate: float
    shape_learning_rate: float
    pose_prior: float
    rot_prior: float
    trans_prior: float
    shape_prior: float
    smooth: float
    max_pose_deg: float
    max_trans_mm: float
    test_time_fit: bool
    test_target: str
    test_steps: int
    test_learning_rate: float


@dataclass(frozen=True, slots=True)
class EvalSettings:
    """``eval``: the held-out frames and cameras, metrics and pictures."""

    after_training: bool
    frames: tuple
    num_frames: int
    exclude_fit_frames: bool
    cameras: tuple
    include_heldout_cameras: bool
    batch_size: int
    perceptual: str
    p2p_samples: int
    p2p_estimator: str
    gt_mesh_dir: str
    pseudo_gt_mesh_dir: str
    export_meshes: bool
    inconsistency_window: int
    max_vis_frames: int
    max_vis_views: int
    unconf_vis_scale: float
    gif_fps: float


@dataclass(frozen=True, slots=True)
class SRHandSettings:
    """Every setting of stage 3; ``model`` holds the keyword arguments of ``models.avatar.HandAvatar``."""

    seed: int
    sr_source: str
    giif_model: str
    disc_model: str
    decode_chunk: int
    stop_after_epochs: int
    ckpt_every: int
    log_every: int
    data: DataSettings
    model: dict
    albedo: AlbedoSettings
    sfs: SfsSettings
    train: TrainSettings
    finetune: FinetuneSettings
    refine: RefineSettings
    eval: EvalSettings

    def __post_init__(self):
        if self.refine.test_target not in ("sr", "lr"):
            raise ConfigError(f"refine.test_target must be sr or lr, got {self.refine.test_target!r}")
        d = self.data
        if self.refine.enabled and (len(d.frame_ids) == 1 or (not d.frame_ids and d.num_frames == 1)):
            raise ConfigError(
                "refine.enabled = true needs at least 2 fitting frames (data.frame_ids / data.num_frames give "
                "one): a single frame cannot separate the pose from the avatar's displacement; add frames or "
                "set refine.enabled = false"
            )
        if self.sr_source not in SR_SOURCES:
            raise ConfigError(f"sr_source must be one of {SR_SOURCES}, got {self.sr_source!r}")
        if self.data.mask_source not in MASK_SOURCES:
            raise ConfigError(
                f"data.mask_source must be one of {MASK_SOURCES}, got {self.data.mask_source!r}"
            )
        if self.eval.p2p_estimator not in ("stratified", "iid"):
            raise ConfigError(
                f"eval.p2p_estimator must be stratified or iid, got {self.eval.p2p_estimator!r}"
            )
        if self.train.perceptual_impl not in PERCEPTUAL_IMPLS:
            raise ConfigError(
                f"train.perceptual_impl must be one of {PERCEPTUAL_IMPLS}, got "
                f"{self.train.perceptual_impl!r}"
            )

    def prephase(self, phase: str) -> AlbedoSettings | SfsSettings:
        """The settings of pre-phase ``phase`` (``albedo`` or ``sfs``)."""
        return {"albedo": self.albedo, "sfs": self.sfs}[phase]


def read_settings(conf) -> SRHandSettings:
    """:class:`SRHandSettings` of a config validated against ``conf/schema/srhand.conf``."""
    return read_section(SRHandSettings, conf)


def round_epoch(fraction: float, epochs: int) -> int:
    """The epoch at ``fraction`` of ``epochs`` (rounded half up), for the schedule keys given as fractions."""
    return int(math.floor(fraction * epochs + 0.5))
