"""The generator: subjects, sequences, rendering and writing in the InterHand2.6M layout.

For each subject of :meth:`SyntheticConfig.subject_plan`, :func:`generate` draws the subject, its
articulation, camera rig and lighting (in that order, from the subject's own numpy stream), poses
the detailed mesh per frame, renders every view, and writes JPEGs plus the four annotation JSONs
(``datasets.interhand.InterHandWriter``) so that :mod:`datasets.interhand` reads them like the real
data. Beside the tree: ``gt_meshes/{split}/Capture{N}/{seq}.npz`` (posed detailed meshes per
frame, canonical mesh, albedo, displacement, detail labels), ``gt_masks/...`` (rendered
silhouettes, PNG), optionally ``gt_normals/...``, and ``synthetic_meta.json``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict

import numpy as np
import torch

from datasets.synthetic.annotate import annotate, input_mano_error, split_summary, true_keypoints
from datasets.synthetic.config import RECON_SEQUENCE, SR_SEQUENCE, SyntheticConfig
from datasets.synthetic.motion import make_articulation
from datasets.synthetic.posing import pose_subject
from datasets.synthetic.render import render_views
from datasets.synthetic.rig import make_camera_rig, make_sh_lighting
from datasets.synthetic.subject import make_subject


def _camera_names(num_fit: int, num_heldout: int) -> list:
    return [f"cam{400101 + i}" for i in range(num_fit)] + [f"cam{400201 + i}" for i in range(num_heldout)]


def _interhand_joints(joints16, verts778, tip_vertex):
    """(21, 3) joints in InterHand order (thumb4..1, index4..1, middle, ring, pinky, wrist)."""
    from datasets.interhand import INTERHAND_FROM_MANO

    out = []
    for entry in INTERHAND_FROM_MANO:
        out.append(verts778[tip_vertex[entry[1]]] if isinstance(entry, tuple) else joints16[entry])
    return np.stack(out)


def _interhand_keypoints(keypoints21):
    """(21, 3) InterHand order from ``hand_joints`` order (16 MANO joints, then the tips thumb..pinky)."""
    from datasets.interhand import INTERHAND_FROM_MANO

    return np.stack(
        [keypoints21[16 + e[1]] if isinstance(e, tuple) else keypoints21[e] for e in INTERHAND_FROM_MANO]
    )


def generate(
    config: SyntheticConfig, out_dir, progress: bool = True, overwrite: bool = False, log=print
) -> dict:
    """Generate every subject and sequence of ``config`` under ``out_dir``; returns the metadata dict.

    Writes ``images/``, ``annotations/``, ``gt_meshes/``, ``gt_masks/`` and ``synthetic_meta.json``.
    Refuses a non-empty ``out_dir`` unless ``overwrite`` (files are then replaced, nothing deleted).

    Each subject draws from three streams of its ``SeedSequence``: the v1 stream (subject, detail,
    articulation, cameras, lighting: unchanged by the v2 options, so ``surface="mano"`` with
    ``annotation="exact"`` writes the v1 data), and two children: soft tissue / pose deformation, and
    the annotation noise.
    """
    from datasets.interhand import InterHandWriter, gt_mesh_path, segmentation_path
    from utils.checkpoint import atomic_write, atomic_write_text
    from utils.geometry.mano import MANO_FINGERTIP_VERTEX_IDS, HandModel, resolve_hand_model_path
    from utils.image_io import write_image
    from utils.metrics.geometry import mpjpe_mm
    from utils.render import get_renderer

    out_dir = os.fspath(out_dir)
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir}: not empty; pass overwrite=True (--overwrite) to write into it")
    os.makedirs(out_dir, exist_ok=True)
    t_start = time.time()
    side = config.hand_side
    mano_file = resolve_hand_model_path(config.mano_dir, side)
    hand = HandModel.from_file(mano_file, side=side)
    pose_mean = hand.pose_mean.detach().double().cpu().numpy().reshape(48)
    renderer = get_renderer("auto")
    H, W = config.raw_size
    seeds = np.random.SeedSequence(config.seed).spawn(config.num_subjects)
    writers = {}
    recorded = asdict(config)
    if not config.segmentation:
        # Recorded only when written: the metadata (and so the data fingerprint of utils.bench.fingerprint) of
        # captures generated without it stays that of the captures generated before the option existed.
        del recorded["segmentation"]
    meta = {
        "generator": "datasets.synthetic",
        "config": recorded,
        "hand_model": mano_file,
        "subjects": [],
        "num_images": 0,
    }
    accuracy = {}  # split -> ([input_mano_error results], [per-frame MPJPE])
    plan = config.subject_plan()
    bar = _progress(sum(_num_renders(config, role) for _, _, role in plan), progress)
    for index, (split, capture, role) in enumerate(plan):
        rng = np.random.default_rng(seeds[index])
        tissue_seed, annotation_seed = seeds[index].spawn(2)  # children: the v1 stream ``rng`` is unchanged
        subject = make_subject(
            hand,
            rng,
            index=index,
            levels=config.subdivision_levels,
            surface=config.surface,
            tissue_rng=np.random.default_rng(tissue_seed),
        )
        recon = role == "reconstruction"
        seq_name = RECON_SEQUENCE if recon else SR_SEQUENCE
        num_frames = 2 * config.num_frames if recon else config.num_frames
        num_heldout_views = config.num_heldout_views if recon else 0
        pose, drift, signals = make_articulation(rng, subject.frame, num_frames, pose_mean)
        shape = np.repeat(subject.betas[None], num_frames, 0)
        trans = drift - subject.frame.joints[0][None]  # wrist near the world origin
        pose_t = torch.as_tensor(pose, dtype=torch.float32)
        shape_t = torch.as_tensor(shape, dtype=torch.float32)
        trans_t = torch.as_tensor(trans, dtype=torch.float32)
        with torch.no_grad():
            coarse, joints = hand.forward(pose_t, shape_t, trans_t)
            detailed = pose_subject(hand, subject, pose_t, trans_t, levels=config.subdivision_levels)
        coarse, joints, detailed = coarse.float(), joints.float(), detailed.float()
        # Cameras: away from the forearm (the wrist side of the mean pose).
        forearm = (joints[:, 0] - joints[:, 4]).mean(0).numpy()
        names = _camera_names(config.num_views, num_heldout_views)
        K, R, t, _ = make_camera_rig(
            rng, detailed.reshape(-1, 3).numpy()[::7], len(names), (H, W), avoid_direction=forearm
        )
        order = rng.permutation(len(names))  # held-out cameras are interleaved among the fitting ones
        K, R, t = K[order], R[order], t[order]
        sh = make_sh_lighting(rng, len(names))
        frame_ids = [10000 + 6 * k for k in range(num_frames)]

        # The annotation: fitted to noisy keypoints of the truth (as InterHand's), or the exact parameters.
        keypoints = true_keypoints(joints, detailed)
        if config.annotation == "fit":
            ann = annotate(
                hand, keypoints, np.random.default_rng(annotation_seed), config.annotation_noise_mm
            )
            ann_pose, ann_trans = ann["pose"], ann["trans"]
            ann_shape = np.repeat(ann["shape"][None], num_frames, 0)
            ann_coarse, ann_joints = ann["verts"], ann["joints"]
            joint_3d = [_interhand_keypoints(kp) for kp in ann["noisy_keypoints"].numpy()]
        else:
            ann, ann_pose, ann_shape, ann_trans, ann_coarse = None, pose, shape, trans, coarse
            ann_joints = torch.cat([joints, coarse[:, list(MANO_FINGERTIP_VERTEX_IDS.values())]], dim=1)
            joint_3d = [
                _interhand_joints(joints[k].numpy(), coarse[k].numpy(), subject.frame.tip_vertex)
                for k in range(num_frames)
            ]
        mpjpe = mpjpe_mm(ann_joints, keypoints).tolist()
        error = None
        if config.p2p_frames > 0:
            measured = np.unique(
                np.linspace(0, num_frames - 1, min(config.p2p_frames, num_frames)).round().astype(int)
            )
            error = input_mano_error(
                ann_coarse, hand.faces, detailed, subject.faces, measured, config.p2p_samples
            )
            entries, mpjpes = accuracy.setdefault(split, ([], []))
            entries.append(error)
            mpjpes.extend(mpjpe)

        writer = writers.setdefault(split, InterHandWriter(out_dir, split))
        for v, name in enumerate(names):
            writer.add_camera(capture, name, K[v], R[v], t[v])
        K_t = torch.as_tensor(K, dtype=torch.float32)
        R_t = torch.as_tensor(R, dtype=torch.float32)
        t_t = torch.as_tensor(t, dtype=torch.float32)
        sh_t = torch.as_tensor(sh, dtype=torch.float32)
        faces_t = torch.as_tensor(subject.faces, dtype=torch.long)
        albedo_t = torch.as_tensor(subject.albedo, dtype=torch.float32)
        bbox_uv, _ = _project_np(ann_coarse.numpy(), K, R, t)
        for k, frame_id in enumerate(frame_ids):
            writer.add_mano(capture, frame_id, side, ann_pose[k], ann_shape[k], ann_trans[k])
            writer.add_joints(capture, frame_id, side, joint_3d[k])
            with torch.no_grad():
                rendered = render_views(
                    detailed[k],
                    faces_t,
                    albedo_t,
                    K_t,
                    R_t,
                    t_t,
                    (H, W),
                    sh_t,
                    supersample=config.supersample,
                    with_normals=config.save_gt_normals,
                    renderer=renderer,
                )
            for v, name in enumerate(names):
                path = writer.image_path(capture, seq_name, name, frame_id)
                write_image(path, rendered["image"][v].numpy())
                gt_dir = (split, capture, seq_name, name)
                silhouette = (rendered["coverage"][v].numpy() >= 0.5).astype(np.uint8)[..., None].repeat(
                    3, 2
                ) * 255
                write_image(os.path.join(out_dir, "gt_masks", *gt_dir, f"mask{frame_id}.png"), silhouette)
                if config.segmentation:
                    write_image(
                        segmentation_path(out_dir, split, capture, seq_name, name, frame_id), silhouette
                    )
                if config.save_gt_normals:
                    npath = os.path.join(out_dir, "gt_normals", *gt_dir, f"normal{frame_id}.png")
                    write_image(
                        npath,
                        0.5
                        * (rendered["normal_map"][v].numpy() + 1.0)
                        * (rendered["coverage"][v].numpy()[..., None] >= 0.5),
                    )
                uv = bbox_uv[v, k]
                lo, hi = uv.min(0), uv.max(0)
                writer.add_image(
                    capture,
                    seq_name,
                    name,
                    frame_id,
                    W,
                    H,
                    subject=index,
                    bbox=[lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]],
                    hand_type=side,
                )
                meta["num_images"] += 1
            bar.update(len(names))
        arrays = dict(
            frame_ids=np.asarray(frame_ids, dtype=np.int64),
            faces=subject.faces.astype(np.int32),
            verts=detailed.numpy().astype(np.float32),
            verts_canonical=subject.verts.astype(np.float32),
            verts_canonical_smooth=subject.verts_smooth.astype(np.float32),
            albedo=subject.albedo.astype(np.float32),
            displacement=subject.displacement.astype(np.float32),
            weights=subject.weights.astype(np.float32),
            betas=subject.betas.astype(np.float32),
            mano_pose=ann_pose.astype(np.float32),
            mano_shape=ann_shape.astype(np.float32),
            mano_trans=ann_trans.astype(np.float32),
            tip_vertex=subject.frame.tip_vertex,
            **{f"label_{k}": v.astype(np.float16) for k, v in subject.labels.items()},
            **_truth_arrays(config, subject, pose, shape, trans, keypoints),
        )
        gt_path = gt_mesh_path(out_dir, split, capture, seq_name)
        atomic_write(gt_path, lambda handle, arrays=arrays: np.savez(handle, **arrays))
        entry = {
            "index": index,
            "role": role,
            "split": split,
            "capture": capture,
            "sequence": seq_name,
            "hand_side": side,
            "betas": subject.betas.tolist(),
            "skin_rgb": subject.skin_rgb.tolist(),
            "frame_ids": frame_ids,
            "cameras": names,
            "K": K.tolist(),
            "R": R.tolist(),
            "t": t.tolist(),
            "sh_coeffs": sh.tolist(),
            "gt_meshes": os.path.relpath(gt_path, out_dir),
            "signals": signals,
            "surface": config.surface,
            "annotation": _annotation_entry(config, ann, error, mpjpe),
        }
        if subject.tissue_params is not None:
            entry["tissue_mm"] = subject.tissue_params
            entry["pose_deformation_mm"] = subject.pose_deformation.params
        if recon:
            entry["fit_frame_ids"] = frame_ids[::2]
            entry["heldout_frame_ids"] = frame_ids[1::2]
            entry["fit_cameras"] = names[: config.num_views]
            entry["heldout_cameras"] = names[config.num_views :]
        meta["subjects"].append(entry)
        p2p_note = "" if error is None else f", input MANO P2P {np.mean(error['p2p_mm']):.2f} mm"
        log(
            f"[synthetic] {split}/{capture}/{seq_name}: {role}, {num_frames} frames x {len(names)} views, "
            f"annotation {config.annotation}: MPJPE {np.mean(mpjpe):.2f} mm{p2p_note} ({time.time() - t_start:.1f} s)"
        )
    bar.close()
    for writer in writers.values():
        writer.write()
    for split, (entries, mpjpes) in accuracy.items():
        meta[split] = split_summary(entries, mpjpes)
    meta["seconds"] = round(time.time() - t_start, 2)
    meta["bytes"] = _disk_usage(out_dir)
    atomic_write_text(os.path.join(out_dir, "synthetic_meta.json"), json.dumps(meta, indent=1))
    return meta


def _truth_arrays(config, subject, pose, shape, trans, keypoints) -> dict:
    """The npz arrays beside the annotation: the parameters that posed the subject, its keypoints, its tissue."""
    out = {
        "true_mano_pose": pose.astype(np.float32),
        "true_mano_shape": shape.astype(np.float32),
        "true_mano_trans": trans.astype(np.float32),
        "true_keypoints": keypoints.numpy().astype(np.float32),
        "surface": np.asarray(config.surface),
        "annotation": np.asarray(config.annotation),
    }
    if subject.tissue is not None:
        out["tissue"] = subject.tissue.astype(np.float32)
    return out


def _annotation_entry(config, ann, error, mpjpe) -> dict:
    """The subject's annotation record in ``synthetic_meta.json``."""
    entry = {"mode": config.annotation, "mpjpe_mm": round(float(np.mean(mpjpe)), 4)}
    if error is not None:
        entry.update(
            p2p_frames=error["frames"],
            input_mano_p2p_mm=[round(v, 4) for v in error["p2p_mm"]],
            input_mano_p2p_p90_mm=round(float(np.percentile(error["distances_mm"], 90)), 4),
        )
    if ann is not None:
        report = ann["report"]
        entry.update(
            noise_mm=config.annotation_noise_mm,
            fitted_betas=np.round(ann["shape"], 4).tolist(),
            fit={
                "iterations": report["iterations"],
                "converged": report["converged"],
                "seconds": round(report["time_s"], 2),
                "keypoint_residual_mm": round(report["residual_mm"]["joints_mean"], 4),
            },
        )
    return entry


def _num_renders(config: SyntheticConfig, role: str) -> int:
    if role == "reconstruction":
        return 2 * config.num_frames * (config.num_views + config.num_heldout_views)
    return config.num_frames * config.num_views


def _project_np(verts, K, R, t):
    """verts (F,N,3) -> uv (V,F,N,2), depth (V,F,N)."""
    x = np.einsum("vij,fnj->vfni", R, verts) + t[:, None, None]
    uv = x[..., :2] / x[..., 2:3]
    uv = uv * np.stack([K[:, 0, 0], K[:, 1, 1]], 1)[:, None, None] + K[:, None, None, :2, 2]
    return uv, x[..., 2]


def _disk_usage(root) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _progress(total, enabled):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, unit="img", desc="rendering")
