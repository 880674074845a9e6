"""A trained avatar outside its run: rebuilt from ``model.pth`` alone, posed with any MANO pose sequence,
rendered from a capture camera or an orbit, written as a video, per-frame meshes and the poses used
(``scripts/animate.py``; the glTF export is :mod:`.export`).

Posing is evaluation's: :meth:`models.avatar.HandAvatar.forward_geometry` evaluates the pose-conditioned
skinning, displacement and albedo networks at every pose, so a capture pose gives the mesh evaluation
writes for that frame. Shading uses the SH lighting the avatar learned for a fitted camera (camera-space
normals, so the light follows the viewer).

:func:`load_trained_avatar` needs no config: the checkpoint carries the avatar's constructor record, its
hand model file and the data section of the config that trained it (to find the capture, whose cameras
and poses :func:`read_run_capture` reads; ``data_path`` overrides where it lies now).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainers.srhand.bundle import build_avatar, check_hand_model
from trainers.srhand.poses import PoseSequence
from trainers.srhand.sequence import SRHandInputError
from trainers.srhand.state import FitRecord, read_model_checkpoint
from utils.geometry.camera import Cameras, crop_intrinsics, look_at

ORBIT = "orbit"
CROP_MARGIN = 1.15  # the crop side over the hand's extent over the whole sequence


@dataclass(frozen=True, slots=True)
class TrainedAvatar:
    """An avatar rebuilt from its ``model.pth``.

    Attributes:
        avatar: the ``HandAvatar`` in eval mode on the requested device.
        record: what it was fitted to (frames, cameras, their centres, hand side, hand model file).
        data: the ``data`` section of the config that trained it (capture location and selection).
        path: the ``model.pth`` read.
    """

    avatar: torch.nn.Module
    record: FitRecord
    data: dict
    path: Path


def load_trained_avatar(
    model_path: str | Path, device: torch.device | str = "cpu", mano_dir: str | None = None
) -> TrainedAvatar:
    """The avatar of ``model_path`` (a run folder or its ``model.pth``), without the training config.

    An avatar fitted with MANO refinement (``refine.enabled``) poses at its refined shape (the offset is baked
    into its template and rest joints). The hand model is the file the checkpoint records when it still exists, else ``mano_dir`` (a folder with
    ``MANO_{RIGHT,LEFT}.pkl`` or a file), ``$SRHAND_MANO_DIR`` or the shipped procedural hand; it must give
    the rest joints the avatar was built with.

    Raises:
        FileNotFoundError: no ``model.pth`` there. SRHandInputError: not a stage-3 checkpoint, or another hand
            model than the one it was built from.
    """
    from utils.geometry.mano import HandModel, resolve_hand_model_path

    ckpt, path = read_model_checkpoint(model_path)
    record = FitRecord.from_checkpoint(ckpt)
    recorded = record.model_file
    if mano_dir is None and recorded and Path(recorded).is_file():
        hand_path = recorded
    else:
        hand_path = resolve_hand_model_path(mano_dir, record.hand_side)
    hand_model = HandModel.from_file(hand_path, side=record.hand_side)
    avatar = build_avatar(ckpt["model"], hand_model)
    check_hand_model(avatar, hand_model, torch.tensor(ckpt["model"]["args"]["mean_shape"]), str(path))
    refined = ckpt.get("mano_refinement")
    if refined is not None:  # fitted with MANO refinement: pose at the refined shape
        avatar.bake_shape_offset(refined["sd"]["d_shape"])
    data = dict((ckpt.get("config") or {}).get("data") or {})
    return TrainedAvatar(avatar=avatar.to(device).eval(), record=record, data=data, path=path)


def read_run_capture(run: TrainedAvatar, data_path: str | None = None):
    """The capture the avatar was fitted to, every frame and camera (images stay on disk).

    Args:
        data_path: where the capture lies now (default: the trained config's ``data.data_path``).
    Raises:
        SRHandInputError: a Goliath capture (animate it with ``--poses FILE`` and ``--camera orbit``) or no
            data path. FileNotFoundError: the data folder is gone.
    """
    from datasets.interhand import read_interhand_sequence

    d = run.data
    if d.get("dataset", "interhand") != "interhand":
        raise SRHandInputError(
            f"{run.path} was fitted to a {d.get('dataset')} capture: only InterHand-layout captures are read "
            "here; drive it with --poses FILE.npz and --camera orbit"
        )
    root = data_path or d.get("data_path")
    if not root:
        raise SRHandInputError(f"{run.path}: its config names no data.data_path: pass --data_path")
    if not Path(root).is_dir():
        raise FileNotFoundError(
            f"the capture of {run.path} was at {root}: no such folder (pass --data_path where it lies now)"
        )
    return read_interhand_sequence(
        root,
        d["split"],
        d["capture"],
        d["sequence"],
        hand=run.record.hand_side,
        cameras=None,
        drop_cameras=tuple(d.get("drop_cam") or ()),
    )


@dataclass(frozen=True, slots=True)
class PosedFrames:
    """The avatar at every pose of a sequence (CPU).

    Attributes:
        verts: ``(N, V, 3)`` posed vertices, world, metres. albedo: ``(N, V, 3)`` RGB in [0, 1].
    """

    verts: torch.Tensor
    albedo: torch.Tensor


@torch.no_grad()
def pose_avatar(avatar, poses: PoseSequence, progress=None) -> PosedFrames:
    """``avatar.forward_geometry`` (as evaluation) at every pose of ``poses``; changes nothing.

    ``progress``: wraps the frame iterator (e.g. a tqdm bar) or None.
    """
    device = avatar.verts_template.device
    frames = range(len(poses))
    verts, albedo = [], []
    for i in progress(frames) if progress else frames:
        geo = avatar.forward_geometry(poses.pose[i].to(device), poses.trans[i].to(device))
        verts.append(geo["verts_posed"].cpu())
        albedo.append(geo["albedo"].cpu())
    return PosedFrames(verts=torch.stack(verts), albedo=torch.stack(albedo))


@dataclass(frozen=True, slots=True)
class AnimationCameras:
    """One camera per frame and the SH lighting each uses.

    Attributes:
        cameras: ``Cameras`` with N views (one per frame), square images of the requested side.
        sh_index: the fitted camera (index into the avatar's SH coefficients) whose lighting is used.
        description: what the camera is, for the logs and ``poses.npz``.
    """

    cameras: Cameras
    sh_index: int
    description: str


def nearest_fitted_camera(record: FitRecord, centre: torch.Tensor) -> int:
    """The index of the fitted camera whose centre is nearest to ``centre (3,)`` (metres)."""
    return int((record.camera_centres.float() - centre.float().cpu()).norm(dim=-1).argmin())


def capture_camera(seq, record: FitRecord, name: str, verts: torch.Tensor, size: int) -> AnimationCameras:
    """The capture camera ``name``, cropped to a square around the hand over the whole sequence.

    Args:
        seq: the run's capture (``read_run_capture``). verts: ``(N, V, 3)`` posed vertices (world).
        size: side of the rendered images (pixels).
    Raises:
        SRHandInputError: no camera ``name`` in the capture (the message lists them), or the hand is behind it.
    """
    names = list(seq.cameras.names)
    if name not in names:
        raise SRHandInputError(
            f"--camera {name}: the capture has no such camera; choose one of {', '.join(names)} or 'orbit'"
        )
    cam = seq.cameras[names.index(name)]
    num = verts.shape[0]
    uv, depth = cam.project(verts.reshape(1, -1, 3).to(cam.K))
    if bool((depth <= 0).any()):
        raise SRHandInputError(
            f"--camera {name}: the posed hand is (partly) behind the camera; choose another"
        )
    low, high = uv[0].min(0).values, uv[0].max(0).values
    side = float((high - low).max()) * CROP_MARGIN
    centre = (low + high) / 2
    box = torch.tensor([float(centre[0]) - side / 2, float(centre[1]) - side / 2, side])
    K = crop_intrinsics(cam.K[0], box, size)
    cams = Cameras(
        K=K.expand(num, 3, 3),
        R=cam.R.expand(num, 3, 3),
        t=cam.t.expand(num, 3),
        image_size=(size, size),
        names=[name] * num,
    )
    fitted = list(record.cameras)
    sh = fitted.index(name) if name in fitted else nearest_fitted_camera(record, cam.centres()[0])
    how = "fitted" if name in fitted else f"not fitted: lighting of {fitted[sh]}"
    return AnimationCameras(cams, sh, f"capture camera {name} ({how})")


def orbit_cameras(
    seq, record: FitRecord, verts: torch.Tensor, size: int, turns: float = 1.0
) -> AnimationCameras:
    """Cameras circling the hand: they start at the first fitted camera and turn ``turns`` times about that
    camera's up axis through the centre of the hand over the sequence, at its distance, aimed at the centre,
    with a focal length that keeps the whole sequence's hand in view. Lighting: the first fitted camera's.

    Args:
        seq: the run's capture (its first fitted camera gives the start and the up axis).
        verts: ``(N, V, 3)`` posed vertices (world). size: image side (pixels).
    """
    num = verts.shape[0]
    start = seq.cameras[list(seq.cameras.names).index(record.cameras[0])]
    R0, t0 = start.R[0].double(), start.t[0].double()
    eye0 = -R0.T @ t0
    up = -R0[1]  # world direction of the image's top (OpenCV +y is down)
    target = verts.reshape(-1, 3).double().mean(0)
    radius = float((verts.reshape(-1, 3).double() - target).norm(dim=-1).max())
    offset = eye0 - target
    distance = float(offset.norm())
    if distance <= radius:
        raise SRHandInputError(
            f"orbit: camera {record.cameras[0]} is inside the hand's bounding sphere; use --camera NAME"
        )
    focal = 0.5 * size / math.tan(math.asin(min(radius * CROP_MARGIN / distance, 0.99)))
    K = torch.tensor([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]])
    Rs, ts = [], []
    for i in range(num):
        angle = 2 * math.pi * turns * i / num
        eye = target + _rotate_about(offset, up, angle)
        R, t = look_at(eye.tolist(), target.tolist(), up.tolist())
        Rs.append(R)
        ts.append(t)
    cams = Cameras(K=K.expand(num, 3, 3), R=torch.stack(Rs), t=torch.stack(ts), image_size=(size, size))
    return AnimationCameras(cams, 0, f"orbit ({turns:g} turn(s)) from {record.cameras[0]}")


def _rotate_about(v: torch.Tensor, axis: torch.Tensor, angle: float) -> torch.Tensor:
    """``v (3,)`` rotated by ``angle`` (radians) about the unit direction of ``axis`` (Rodrigues)."""
    k = axis / axis.norm()
    c, s = math.cos(angle), math.sin(angle)
    return v * c + torch.linalg.cross(k, v) * s + k * (k @ v) * (1 - c)


@torch.no_grad()
def render_frame(
    avatar,
    verts: torch.Tensor,
    albedo: torch.Tensor,
    view: AnimationCameras,
    index: int,
    renderer,
    background,
) -> np.ndarray:
    """Frame ``index`` (``verts``/``albedo`` ``(V, 3)``) from its camera, over ``background`` (RGB in [0, 1]):
    an ``(H, W, 3)`` float image in [0, 1]."""
    device = avatar.verts_template.device
    out = avatar.render(
        verts.to(device),
        albedo.to(device),
        view.cameras[index].to(device),
        [view.sh_index],
        renderer=renderer,
    )
    image, mask = out["image"][0], out["mask"][0]
    bg = torch.as_tensor(background, dtype=image.dtype, device=device).reshape(3, 1, 1)
    return (image * mask + bg * (1 - mask)).clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def mesh_writer(fmt: str):
    """The per-frame mesh writer of ``fmt`` (``ply``, ``obj``) from ``utils.geometry.mesh_io``."""
    from utils.geometry.mesh_io import save_obj, save_ply

    writers = {"ply": save_ply, "obj": save_obj}
    if fmt not in writers:
        raise SRHandInputError(f"mesh format {fmt!r}: choose ply, obj or none")
    return writers[fmt]


VIDEO_FORMATS = ("mp4", "gif")


def animate(
    run: TrainedAvatar,
    seq,
    poses: PoseSequence,
    camera: str,
    out_dir: str | Path,
    *,
    size: int = 256,
    fps: float = 20.0,
    videos: tuple = ("mp4",),
    mesh_format: str = "ply",
    background: tuple = (1.0, 1.0, 1.0),
    turns: float = 1.0,
    progress=None,
) -> dict:
    """Pose ``run``'s avatar at every pose of ``poses``, render it from ``camera`` and write the results.

    Args:
        seq: the run's capture (:func:`read_run_capture`): its cameras. camera: a capture camera's name or
            ``"orbit"``. out_dir: the output folder (created).
        size: side of the square frames (pixels). fps: frame rate of the videos.
        videos: any of ``mp4`` (MPEG-4 part 2, OpenCV's encoder) and ``gif``.
        mesh_format: ``ply`` or ``obj`` (vertex colours = albedo), or ``none``.
        background: RGB in [0, 1] behind the hand. turns: orbit turns over the sequence.
        progress: ``progress(iterable, desc)`` wrapper (a tqdm bar) or None.
    Writes ``animation.<fmt>`` per video format, ``meshes/<index>.<fmt>`` and ``poses.npz`` (the poses, their
    labels and the camera); changes nothing else. Returns a summary: frames, files, seconds per part.
    """
    import time

    from utils.image_io import save_gif, to_uint8, write_mp4
    from utils.render import get_renderer

    unknown = [v for v in videos if v not in VIDEO_FORMATS]
    if unknown:
        raise SRHandInputError(f"video format(s) {unknown}: choose from {', '.join(VIDEO_FORMATS)}")
    write_mesh = None if mesh_format == "none" else mesh_writer(mesh_format)
    out_dir = Path(out_dir)
    wrap = (lambda it, desc: progress(it, desc=desc)) if progress else (lambda it, desc: it)
    avatar = run.avatar
    seconds = {}
    start = time.time()
    posed = pose_avatar(avatar, poses, progress=lambda it: wrap(it, "pose"))
    seconds["pose"] = time.time() - start
    if camera == ORBIT:
        view = orbit_cameras(seq, run.record, posed.verts, size, turns)
    else:
        view = capture_camera(seq, run.record, camera, posed.verts, size)
    renderer = get_renderer("auto")
    faces = avatar.faces.cpu()
    frames = []
    start = time.time()
    for i in wrap(range(len(poses)), "render"):
        frames.append(
            to_uint8(render_frame(avatar, posed.verts[i], posed.albedo[i], view, i, renderer, background))
        )
        if write_mesh is not None:
            write_mesh(out_dir / "meshes" / f"{i:05d}.{mesh_format}", posed.verts[i], faces, posed.albedo[i])
    seconds["render_and_meshes"] = time.time() - start
    files = []
    for fmt in videos:
        path = out_dir / f"animation.{fmt}"
        files.append(save_gif(path, frames, fps=fps) if fmt == "gif" else write_mp4(path, frames, fps=fps))
    files.append(poses.save_npz(out_dir / "poses.npz", camera=np.asarray(view.description)))
    return {
        "frames": len(poses),
        "camera": view.description,
        "poses": poses.source,
        "files": [str(f) for f in files],
        "meshes": None if write_mesh is None else str(out_dir / "meshes"),
        "seconds": seconds,
    }
