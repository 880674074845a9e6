"""The capture data model: one hand sequence seen by V calibrated cameras over F frames.

Every reader (InterHand2.6M, the synthetic generator's output, which uses the same layout) produces a
:class:`CaptureSequence`; every stage consumes it. Images are **paths**, loaded one at a time on
request, so a 20-view x 400-frame sequence costs a few kilobytes of memory until a sample is asked for.

Conventions (docs/architecture.md, docs/data.md):
- lengths in metres, world frame; cameras OpenCV ``x_cam = R x_world + t`` (+x right, +y down,
  +z forward), pixel centres at +0.5;
- images RGB float32 in [0, 1]; ``(H, W, 3)`` numpy from :meth:`CaptureSequence.load_image`,
  ``(3, h, w)`` tensors from :meth:`CaptureSequence.sample`;
- MANO parameters as InterHand2.6M NeuralAnnot stores them: ``pose`` (48, axis-angle, global + 15
  joints, ``flat_hand_mean=False`` so ``hands_mean`` is added by the model), ``shape`` (10),
  ``trans`` (3, metres); ``HandModel.forward`` gives world vertices in metres;
- normal maps are unit vectors in **camera space** by default (``normal_space="world"`` gives what the
  reference code feeds GIIF), 0 outside the mask.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from datasets import preprocess
from utils.errors import InputError
from utils.image_size import image_hw
from utils.seeding import keyed_generator

# An image whose every channel stays below this (in [0, 1]) counts as all-black (InterHand issue #134).
BLACK_THRESHOLD = 2.0 / 255.0
# Hand models shared by every sequence of a process, keyed by (file, side): a GIIF dataset holds
# thousands of sequences.
_HAND_MODELS: dict = {}


@dataclass
class CaptureSequence:
    """One hand sequence: cameras, per-frame MANO parameters, and image paths (loaded lazily).

    Attributes:
        cameras: ``utils.geometry.camera.Cameras`` with V views, ``image_size = (H, W)`` of the raw images.
        frame_ids: F frame numbers (InterHand ``frame_idx``), ascending.
        mano_pose: (F, 48) float32, axis-angle (global orient + 15 joints), ``flat_hand_mean=False``.
        mano_shape: (F, 10) float32 betas.
        mano_trans: (F, 3) float32 translation, world, metres.
        hand_side: ``"right"`` or ``"left"``.
        image_paths: F lists of V paths; ``image_paths[f][v]`` is frame ``frame_ids[f]`` seen by
            ``cameras.names[v]``.
        name: ``"{split}/Capture{N}/{seq_name}"`` (for messages and logs).
        mano_file: hand-model pickle, or a folder with ``MANO_{RIGHT,LEFT}.pkl``, for the MANO forward
            (None: ``$SRHAND_MANO_DIR`` when set, else the shipped procedural hand; see
            ``utils.geometry.mano.resolve_hand_model_path``).
        gt_mesh_path: optional ``.npz`` with ground-truth meshes (synthetic data, see docs/data.md).
        segmentation_paths: the capture's own foreground segmentation, F lists of V paths of mask images
            (foreground = any channel above one half), or ``[]`` when it has none (InterHand2.6M). The
            synthetic generator writes them with ``--segmentation`` (``mask{frame}.png`` beside each image);
            Goliath's are members of its ``segmentation_fgbg`` zips.
        image_rotations: optional per-view number of counter-clockwise quarter turns (``np.rot90``)
            applied after loading, for views stored rotated (InterHand ``cam400412``).
        report: what the reader skipped or flagged: ``{"skipped_frames": {reason: [frame_id, ...]},
            "dropped_cameras": {name: reason}, "black_images": [(frame_id, camera), ...]}``.
        cache_mano: keep the MANO forward of all frames once computed (F x 9 KB); False computes
            one frame per sample (for datasets spanning thousands of sequences).
    """

    cameras: object
    frame_ids: list
    mano_pose: torch.Tensor
    mano_shape: torch.Tensor
    mano_trans: torch.Tensor
    hand_side: str
    image_paths: list
    name: str = ""
    mano_file: str | None = None
    gt_mesh_path: str | None = None
    segmentation_paths: list = field(default_factory=list)
    image_rotations: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    cache_mano: bool = True

    def __post_init__(self):
        F_ = len(self.frame_ids)
        V = len(self.cameras.names)
        if self.hand_side not in ("right", "left"):
            raise InputError(f"{self.name}: hand_side must be 'right' or 'left', got {self.hand_side!r}")
        for key, dim in (("mano_pose", 48), ("mano_shape", 10), ("mano_trans", 3)):
            value = torch.as_tensor(np.asarray(getattr(self, key), dtype=np.float32))
            if value.shape != (F_, dim):
                raise InputError(
                    f"{self.name}: {key} must have shape ({F_}, {dim}), got {tuple(value.shape)}"
                )
            setattr(self, key, value)
        if len(self.image_paths) != F_ or any(len(row) != V for row in self.image_paths):
            raise ValueError(f"{self.name}: image_paths must be {F_} lists of {V} paths")
        if self.segmentation_paths and (
            len(self.segmentation_paths) != F_ or any(len(row) != V for row in self.segmentation_paths)
        ):
            raise ValueError(f"{self.name}: segmentation_paths must be {F_} lists of {V} paths")
        self.report.setdefault("skipped_frames", {})
        self.report.setdefault("dropped_cameras", {})
        self.report.setdefault("black_images", [])
        self._cache = {}

    # -- sizes ----------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return len(self.frame_ids)

    @property
    def num_views(self) -> int:
        return len(self.cameras.names)

    @property
    def camera_names(self) -> list:
        return list(self.cameras.names)

    def __len__(self) -> int:
        return self.num_frames * self.num_views

    def __getstate__(self):
        # The hand model and MANO cache are rebuilt lazily (e.g. in DataLoader workers).
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    # -- hand model and MANO forward ------------------------------------------------------------
    def hand_model(self):
        """The ``utils.geometry.mano.HandModel`` of this sequence's side (built once, on first use)."""
        if "hand_model" not in self._cache:
            from utils.geometry.mano import HandModel, resolve_hand_model_path

            path = resolve_hand_model_path(self.mano_file, self.hand_side)
            key = (os.path.abspath(path), self.hand_side)
            if key not in _HAND_MODELS:
                _HAND_MODELS[key] = HandModel.from_file(path, side=self.hand_side)
            self._cache["hand_model"] = _HAND_MODELS[key]
        return self._cache["hand_model"]

    @property
    def faces(self) -> torch.Tensor:
        """(1538, 3) long MANO faces."""
        return self.hand_model().faces

    def mano_forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """World MANO vertices (F, 778, 3) and joints (F, 16, 3) in metres for all frames (cached)."""
        if "verts" not in self._cache:
            model = self.hand_model()
            verts, joints = [], []
            with torch.no_grad():
                for start in range(0, self.num_frames, 64):
                    sl = slice(start, start + 64)
                    v, j = model.forward(self.mano_pose[sl], self.mano_shape[sl], self.mano_trans[sl])
                    verts.append(v.float())
                    joints.append(j.float())
            self._cache["verts"] = torch.cat(verts) if verts else torch.zeros(0, 778, 3)
            self._cache["joints"] = torch.cat(joints) if joints else torch.zeros(0, 16, 3)
        return self._cache["verts"], self._cache["joints"]

    def mano_frame(self, frame_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """World MANO vertices (778, 3) and joints (16, 3) of one frame (from the cache when kept)."""
        if "verts" in self._cache or self.cache_mano:
            verts, joints = self.mano_forward()
            return verts[frame_index], joints[frame_index]
        sl = slice(frame_index, frame_index + 1)
        with torch.no_grad():
            verts, joints = self.hand_model().forward(
                self.mano_pose[sl], self.mano_shape[sl], self.mano_trans[sl]
            )
        return verts[0].float(), joints[0].float()

    def verts_world(self, frame_index: int) -> torch.Tensor:
        """(778, 3) world MANO vertices of one frame, metres."""
        return self.mano_frame(frame_index)[0]

    # -- images ---------------------------------------------------------------------------------
    def load_image(self, frame_index: int, view_index: int) -> np.ndarray:
        """Raw image ``(H, W, 3)`` float32 RGB in [0, 1] of one frame and view.

        Raises FileNotFoundError naming the path when the file is missing. Views listed in
        ``image_rotations`` are turned back to the calibrated orientation. All-black images are
        returned as they are and recorded in ``report["black_images"]``.
        """
        path = self.image_paths[frame_index][view_index]
        image = read_rgb(path)
        k = self.image_rotations.get(self.cameras.names[view_index], 0)
        if k:
            image = np.ascontiguousarray(np.rot90(image, k))
        H, W = self.cameras.image_size
        if image.shape[:2] != (H, W):
            raise InputError(
                f"{path}: image is {image.shape[1]}x{image.shape[0]} (WxH) but camera "
                f"{self.cameras.names[view_index]} of {self.name} expects {W}x{H}"
            )
        if is_black(image):
            key = (int(self.frame_ids[frame_index]), self.cameras.names[view_index])
            if key not in self.report["black_images"]:
                self.report["black_images"].append(key)
        return image

    @property
    def has_segmentation(self) -> bool:
        """Whether the capture carries its own foreground segmentation (:meth:`load_segmentation`)."""
        return bool(self.segmentation_paths)

    def load_segmentation(self, frame_index: int, view_index: int) -> np.ndarray:
        """``(H, W)`` bool foreground of one view from the capture's own segmentation (not the MANO mesh).

        Raises:
            FileNotFoundError: the capture has no segmentation, or the file is missing (naming it).
            InputError: the mask's size differs from the camera's image size.
        """
        if not self.segmentation_paths:
            raise FileNotFoundError(f"{self.name}: this sequence has no segmentations")
        path = self.segmentation_paths[frame_index][view_index]
        mask = read_rgb(path).max(axis=2) > 0.5
        k = self.image_rotations.get(self.cameras.names[view_index], 0)
        if k:
            mask = np.ascontiguousarray(np.rot90(mask, k))
        H, W = self.cameras.image_size
        if mask.shape != (H, W):
            raise InputError(
                f"{path}: segmentation is {mask.shape[1]}x{mask.shape[0]} (WxH) but camera "
                f"{self.cameras.names[view_index]} of {self.name} expects {W}x{H}"
            )
        return mask

    # -- crop and samples -----------------------------------------------------------------------
    def camera_params(self, view_index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw ``K (3,3)``, ``R (3,3)``, ``t (3,)`` float32 of one view."""
        cams = self.cameras
        return cams.K[view_index].float(), cams.R[view_index].float(), cams.t[view_index].float()

    def project(self, points_world: torch.Tensor, view_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw-image pixel coordinates ``uv (N, 2)`` and depth ``(N,)`` of world points ``(N, 3)``."""
        uv, z = self.cameras[view_index].project(points_world.to(self.cameras.dtype))
        return uv[0], z[0]

    def crop_box(self, frame_index: int, view_index: int, ratio: float = 0.8) -> np.ndarray:
        """Square crop box ``[x0, y0, side]`` (raw pixels) around the projected MANO vertices."""
        return self._crop_box(self.verts_world(frame_index), frame_index, view_index, ratio)

    def _crop_box(self, verts, frame_index, view_index, ratio):
        uv, z = self.project(verts, view_index)
        if not bool((z > 0).all()):
            raise InputError(
                f"{self.name}: MANO hand of frame {self.frame_ids[frame_index]} is (partly) behind "
                f"camera {self.cameras.names[view_index]}"
            )
        return preprocess.square_crop_box(uv, ratio)

    def sample(
        self,
        frame_index: int,
        view_index: int,
        size=256,
        ratio: float = 0.8,
        normal_space: str = "camera",
        normal_size=None,
        with_image: bool = True,
        with_segmentation: bool = False,
    ) -> dict:
        """Crop-and-resize one view of one frame to ``size`` as the reference protocol does.

        Args:
            frame_index, view_index: positions in ``frame_ids`` / ``cameras.names``.
            size: output ``(h, w)`` or int.
            ratio: the hand's bounding box fills this fraction of the crop side.
            normal_space: ``camera`` or ``world`` (see :func:`datasets.preprocess.render_mask_and_normals`).
            normal_size: resolution of the normal map (default: ``size``).
            with_image: False skips reading the image (geometry only).
            with_segmentation: also crop the capture's own foreground segmentation (:meth:`load_segmentation`).

        Returns:
            dict with ``image (3,h,w)`` RGB in [0,1] (not masked), ``mask (1,h,w)`` in {0,1} from the
            rasterised MANO mesh, ``normal_map (3,hn,wn)``, cropped ``K (3,3)``, ``R (3,3)``, ``t (3,)``,
            ``box (3,)`` crop box in raw pixels, ``mano_pose (48,)``, ``mano_shape (10,)``,
            ``mano_trans (3,)``, ``verts_world (778,3)``, ``joints_world (16,3)``, ``frame_id``,
            ``camera``, ``frame_index``, ``view_index``, ``hand_side``, ``is_black`` and, with
            ``with_segmentation``, ``segmentation (1,h,w)`` in {0,1} (bilinear warp of the raw mask, then
            thresholded at one half, as the crop's pixels are).
        """
        h, w = image_hw(size)
        hn, wn = image_hw(normal_size) if normal_size is not None else (h, w)
        K, R, t = self.camera_params(view_index)
        verts, joints = self.mano_frame(frame_index)
        box = self._crop_box(verts, frame_index, view_index, ratio)
        K_crop = preprocess.crop_intrinsics(K.double(), box, (h, w)).float()
        out = {
            "K": K_crop,
            "R": R,
            "t": t,
            "box": torch.as_tensor(box, dtype=torch.float32),
            "mano_pose": self.mano_pose[frame_index],
            "mano_shape": self.mano_shape[frame_index],
            "mano_trans": self.mano_trans[frame_index],
            "verts_world": verts,
            "joints_world": joints,
            "frame_id": int(self.frame_ids[frame_index]),
            "camera": self.cameras.names[view_index],
            "frame_index": frame_index,
            "view_index": view_index,
            "hand_side": self.hand_side,
        }
        faces = self.faces
        mask, nmap = preprocess.render_mask_and_normals(
            verts[None], faces, K_crop[None], R[None], t[None], (h, w), normal_space=normal_space
        )
        out["mask"] = mask[0]
        if (hn, wn) == (h, w):
            out["normal_map"] = nmap[0]
        else:
            K_n = preprocess.crop_intrinsics(K.double(), box, (hn, wn)).float()
            out["normal_map"] = preprocess.render_mask_and_normals(
                verts[None], faces, K_n[None], R[None], t[None], (hn, wn), normal_space=normal_space
            )[1][0]
        if with_image:
            raw = self.load_image(frame_index, view_index)
            crop = preprocess.warp_to_crop(raw, box, (h, w), interpolation="linear")
            out["image"] = torch.from_numpy(np.clip(crop, 0.0, 1.0)).permute(2, 0, 1).contiguous()
            out["is_black"] = is_black(raw)
        if with_segmentation:
            seg = self.load_segmentation(frame_index, view_index).astype(np.float32)
            crop = preprocess.warp_to_crop(seg, box, (h, w), interpolation="linear") >= 0.5
            out["segmentation"] = torch.from_numpy(crop.astype(np.float32))[None]
        return out

    # -- subsets and ground truth ---------------------------------------------------------------
    def select(self, frames=None, views=None) -> CaptureSequence:
        """A new sequence restricted to frame positions ``frames`` and view positions or names ``views``."""
        fi = list(range(self.num_frames)) if frames is None else [int(f) for f in frames]
        if views is None:
            vi = list(range(self.num_views))
        else:
            vi = [self.cameras.names.index(v) if isinstance(v, str) else int(v) for v in views]
        sub = CaptureSequence(
            cameras=self.cameras[vi],
            frame_ids=[self.frame_ids[f] for f in fi],
            mano_pose=self.mano_pose[fi],
            mano_shape=self.mano_shape[fi],
            mano_trans=self.mano_trans[fi],
            hand_side=self.hand_side,
            image_paths=[[self.image_paths[f][v] for v in vi] for f in fi],
            name=self.name,
            mano_file=self.mano_file,
            gt_mesh_path=self.gt_mesh_path,
            segmentation_paths=[[self.segmentation_paths[f][v] for v in vi] for f in fi]
            if self.segmentation_paths
            else [],
            image_rotations=dict(self.image_rotations),
            report=self.report,
            cache_mano=self.cache_mano,
        )
        if "hand_model" in self._cache:
            sub._cache["hand_model"] = self._cache["hand_model"]
        return sub

    def frame_index(self, frame_id: int) -> int:
        """Position of InterHand frame number ``frame_id`` (ValueError naming the sequence if absent)."""
        try:
            return self.frame_ids.index(int(frame_id))
        except ValueError:
            raise InputError(f"{self.name}: frame {frame_id} is not in this sequence") from None

    def gt_mesh(self, frame_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Ground-truth mesh ``verts (Vg, 3)`` (world, metres) and ``faces (Fg, 3)`` of one frame.

        Only for sequences with ``gt_mesh_path`` (the synthetic generator writes them).
        """
        if "gt" not in self._cache:
            if not self.gt_mesh_path:
                raise FileNotFoundError(f"{self.name}: no ground-truth meshes for this sequence")
            if not os.path.isfile(self.gt_mesh_path):
                raise FileNotFoundError(
                    f"{self.gt_mesh_path}: expected the ground-truth mesh file of {self.name}"
                )
            with np.load(self.gt_mesh_path) as data:
                self._cache["gt"] = {k: data[k] for k in ("frame_ids", "faces")}
                self._cache["gt"]["path"] = self.gt_mesh_path
        gt = self._cache["gt"]
        frame_id = int(self.frame_ids[frame_index])
        rows = np.nonzero(gt["frame_ids"] == frame_id)[0]
        if len(rows) == 0:
            raise InputError(f"{self.gt_mesh_path}: no ground-truth mesh for frame {frame_id}")
        with np.load(self.gt_mesh_path, mmap_mode="r") as data:
            verts = np.array(data["verts"][rows[0]], dtype=np.float32)
        return torch.from_numpy(verts), torch.from_numpy(gt["faces"].astype(np.int64))

    def summary(self) -> str:
        """One paragraph: sizes and what was skipped or flagged (cameras grouped by reason)."""
        lines = [
            f"{self.name}: {self.hand_side} hand, {self.num_frames} frames x {self.num_views} views, "
            f"images {self.cameras.image_size[1]}x{self.cameras.image_size[0]} (WxH)"
        ]
        for reason, frames in self.report["skipped_frames"].items():
            lines.append(f"  skipped {len(frames)} frame(s): {reason}: {_few(frames)}")
        by_reason: dict[str, list] = {}
        for cam, reason in self.report["dropped_cameras"].items():
            by_reason.setdefault(reason, []).append(cam)
        for reason, cams in by_reason.items():
            lines.append(f"  left out {len(cams)} camera(s): {reason}: {_few(cams)}")
        black = self.report["black_images"]
        if black:
            lines.append(
                f"  {len(black)} all-black image(s) read so far (frame, camera): {_few([tuple(b) for b in black])}"
            )
        return "\n".join(lines)

    def data_report(self) -> dict:
        """What the reader left out or flagged, as plain data (``metrics.json``): ``skipped_frames`` (reason ->
        frame ids), ``dropped_cameras`` (camera -> reason), ``black_images`` ([frame id, camera] read so far),
        and the reader's ``notes`` and ``mano_fit`` when it has them."""
        report = {
            "sequence": self.name,
            "frames": [int(f) for f in self.frame_ids],
            "cameras": self.camera_names,
            "skipped_frames": {k: [int(f) for f in v] for k, v in self.report["skipped_frames"].items()},
            "dropped_cameras": dict(self.report["dropped_cameras"]),
            "black_images": [[int(f), str(c)] for f, c in self.report["black_images"]],
        }
        for key in ("notes", "mano_fit"):
            if self.report.get(key):
                report[key] = self.report[key]
        return report


def _few(items: list, limit: int = 8) -> str:
    """``items`` for a log line: the first ``limit`` and how many more."""
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_hand_model_for_data(model_path: str, data_root, allow_procedural: bool, key: str = "data") -> None:
    """Refuse the shipped procedural stand-in hand (NOT MANO) on captures that are not this project's synthetic
    ones, unless ``allow_procedural``: their MANO annotations are MANO's, so a run on the stand-in would fit,
    crop and mask with the wrong hand.

    Raises:
        InputError: naming ``<key>.mano_dir``, ``$SRHAND_MANO_DIR`` and ``<key>.allow_procedural_hand``.
    """
    from utils.geometry.mano import is_procedural_hand

    if allow_procedural or not is_procedural_hand(model_path):
        return
    if (Path(os.fspath(data_root)) / "synthetic_meta.json").is_file():
        return  # the synthetic captures are made with (and annotated for) the procedural hand
    raise InputError(
        f"{key}.data_path = {os.fspath(data_root)!r} is not synthetic (no synthetic_meta.json), but the hand "
        f"model is the shipped procedural stand-in ({model_path}), not MANO: its annotations are MANO "
        f"parameters. Set {key}.mano_dir (or $SRHAND_MANO_DIR) to the folder of MANO_RIGHT.pkl / MANO_LEFT.pkl, "
        f"or {key}.allow_procedural_hand = true to run on the stand-in anyway"
    )


def describe_hand_model(model) -> str:
    """``"<kind> <path>"`` of a loaded hand model, for the log: MANO-format, or the procedural stand-in."""
    kind = (
        "procedural stand-in hand (NOT MANO)"
        if getattr(model, "is_procedural", False)
        else "MANO-format hand"
    )
    return f"{kind} {getattr(model, 'source_path', '') or '<in memory>'}"


def hand_joints(seq: CaptureSequence) -> torch.Tensor:
    """(F, 21, 3) world hand joints in metres: MANO's 16 joints and the 5 fingertip vertices (the
    InterHand2.6M joint set, in MANO order)."""
    from utils.geometry.mano import MANO_FINGERTIP_VERTEX_IDS

    verts, joints = seq.mano_forward()
    tips = verts[:, list(MANO_FINGERTIP_VERTEX_IDS.values())]
    return torch.cat([joints, tips], dim=1)


def perturb_mano(
    seq: CaptureSequence, pose_std: float = 0.0, shape_std: float = 0.0, trans_std: float = 0.0, seed: int = 0
) -> CaptureSequence:
    """A copy of ``seq`` with Gaussian noise on its MANO parameters (fitting without ground-truth
    parameters, paper Table 5).

    The noise of a frame is drawn from ``(seed, frame number)``, so a frame gets the same parameters
    whichever subset of the sequence is read (fitting frames, evaluation frames); the shape noise is
    one draw per ``seed`` (one subject, one shape).

    Args:
        pose_std: radians, added to all 48 axis-angle values (global orientation + 15 joints).
        shape_std: added to the 10 betas.
        trans_std: metres, added to the translation.
    """
    for name, value in (("pose_std", pose_std), ("shape_std", shape_std), ("trans_std", trans_std)):
        if not value >= 0:
            raise InputError(f"perturb_mano: {name} must be >= 0, got {value}")
    pose, shape, trans = seq.mano_pose.clone(), seq.mano_shape.clone(), seq.mano_trans.clone()
    d_shape = torch.randn(shape.shape[1], generator=keyed_generator(seed, "shape")) * shape_std
    for f, frame_id in enumerate(seq.frame_ids):
        gen = keyed_generator(seed, "frame", int(frame_id))
        pose[f] += torch.randn(pose.shape[1], generator=gen) * pose_std
        trans[f] += torch.randn(3, generator=gen) * trans_std
        shape[f] += d_shape
    noisy = dataclasses.replace(seq, mano_pose=pose, mano_shape=shape, mano_trans=trans)
    if "hand_model" in seq._cache:
        noisy._cache["hand_model"] = seq._cache["hand_model"]
    return noisy


def is_black(image: np.ndarray, threshold: float = BLACK_THRESHOLD) -> bool:
    """True when every pixel of an image in [0, 1] is below ``threshold`` (all-black frame)."""
    return float(np.max(image)) < threshold


def read_rgb(path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` float32 RGB in [0, 1]; FileNotFoundError naming the path.

    All-black images are returned without a warning: the sequence records them instead.
    """
    from utils.image_io import read_image

    return read_image(path, on_black="ignore")
