"""scripts/animate.py and scripts/export_avatar.py on a tiny trained run (issue 25): the avatar posed at the
capture's own poses gives evaluation's meshes, new poses give a video, meshes and poses.npz; the glTF export
reads back with independent readers; bad inputs give one clear message each.

The run: the session's ``tiny_capture_root``, bicubic supervision, 32 px crops, subdivision level 1, 2
epochs per phase, evaluated with ``eval.export_meshes`` (about 10 s on one thread).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _hand_fixtures import (
    one_thread,  # noqa: F401  (autouse: one torch thread in this module)
    tiny_srhand_blocks,
)

from trainers.run import main_guard, run_srhand
from utils.geometry.mesh_io import load_obj, load_ply

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_capture_root):
    """A trained tiny run folder with evaluation's meshes (``meshes/<frame>.obj``) of the held-out frames."""
    tmp = tmp_path_factory.mktemp("animation_run")
    q = json.dumps
    conf = tmp / "tiny.conf"
    conf.write_text(
        f"""
exp_name = tiny
out_root = {q(str(tmp / "runs"))}
use_tensorboard = false
sr_source = bicubic
{tiny_srhand_blocks(tiny_capture_root)}
albedo {{ epochs = 2, batch_size = 2 }}
sfs {{ epochs = 2, batch_size = 2 }}
train {{ epochs = 2, batch_size = 2, perceptual = none, renew_means_every = 1 }}
eval {{ perceptual = none, p2p_samples = 300, batch_size = 3, export_meshes = true }}
"""
    )
    code = main_guard(lambda: run_srhand("main.py", ["--conf", str(conf), "--device", "cpu"]))
    assert code == 0
    run_dir = tmp / "runs" / "tiny"
    assert (run_dir / "model.pth").is_file() and any((run_dir / "meshes").glob("*.obj"))
    return run_dir


def animate(*args) -> int:
    sys.path.insert(0, str(REPO / "scripts"))
    import animate as script

    return script.main([*map(str, args), "--device", "cpu", "--no_progress"])


def test_capture_poses_give_evaluations_meshes(trained_run, tmp_path):
    out = tmp_path / "capture"
    assert (
        animate(
            "--model_path",
            trained_run,
            "--poses",
            "capture",
            "--camera",
            "orbit",
            "--out",
            out,
            "--meshes",
            "obj",
            "--size",
            "32",
        )
        == 0
    )
    saved = np.load(out / "poses.npz")
    labels = [str(s) for s in saved["labels"]]
    compared = 0
    for path in sorted((trained_run / "meshes").glob("*.obj")):
        index = labels.index(f"frame {int(path.stem)}")
        ours, theirs = load_obj(out / "meshes" / f"{index:05d}.obj"), load_obj(path)
        np.testing.assert_array_equal(ours[1], theirs[1])  # faces
        np.testing.assert_allclose(ours[0], theirs[0], atol=1e-6)  # OBJ keeps 7 significant digits
        np.testing.assert_allclose(ours[2], theirs[2], atol=1e-6)  # vertex colours = albedo
        compared += 1
    assert compared == 2


def test_new_poses_give_a_video_meshes_and_the_poses_used(trained_run, tmp_path):
    from trainers.srhand.poses import read_npz_poses

    out = tmp_path / "new"
    assert (
        animate(
            "--model_path",
            trained_run,
            "--poses",
            "interpolate",
            "--inbetween",
            "20",
            "--out",
            out,
            "--video",
            "mp4",
            "gif",
            "--size",
            "32",
        )
        == 0
    )
    import cv2
    import imageio.v3 as iio

    video = cv2.VideoCapture(str(out / "animation.mp4"))
    count = 0
    while video.read()[0]:
        count += 1
    assert count == 60  # 4 capture frames: 3 pairs x 20 in-between poses
    assert iio.imread(out / "animation.gif").shape == (60, 32, 32, 3)
    poses = read_npz_poses(out / "poses.npz")
    assert len(poses) == 60 and all("->" in label for label in poses.labels)  # no capture pose among them
    assert len(list((out / "meshes").glob("*.ply"))) == 60
    verts, faces, colors = load_ply(out / "meshes" / "00000.ply")[:3]
    assert verts.shape == (3093, 3) and colors.shape == (3093, 3)
    # poses.npz drives the avatar again to the same meshes
    again = tmp_path / "again"
    assert (
        animate(
            "--model_path",
            trained_run,
            "--poses",
            out / "poses.npz",
            "--out",
            again,
            "--size",
            "32",
            "--camera",
            "cam400101",
        )
        == 0
    )
    np.testing.assert_allclose(
        load_ply(again / "meshes" / "00059.ply")[0], load_ply(out / "meshes" / "00059.ply")[0], atol=1e-7
    )


def test_bad_inputs_give_one_clear_message(trained_run, tmp_path, capsys):
    np.savez(tmp_path / "joints15.npz", pose=np.zeros((3, 45)), trans=np.zeros((3, 3)))
    np.savez(tmp_path / "notrans.npz", pose=np.zeros((3, 48)))
    cases = {
        tmp_path / "joints15.npz": "15 joints x 3); expected (N, 48) = 16 MANO joints",
        tmp_path / "notrans.npz": "no trans array",
    }
    for path, message in cases.items():
        assert animate("--model_path", trained_run, "--poses", path, "--out", tmp_path / "x") == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert animate("--model_path", trained_run, "--camera", "cam999", "--out", tmp_path / "x") == 2
    assert "no such camera; choose one of cam400101" in capsys.readouterr().err
    (tmp_path / "empty_run").mkdir()
    assert animate("--model_path", tmp_path / "empty_run") == 2
    assert "no model.pth there" in capsys.readouterr().err
    sys.path.insert(0, str(REPO / "scripts"))
    import export_avatar

    assert export_avatar.main(["--model_path", str(tmp_path / "empty_run"), "--device", "cpu"]) == 2
    assert "no model.pth there" in capsys.readouterr().err


def test_gltf_export_reads_back_and_skins_near_the_avatar(trained_run, tmp_path):
    import pygltflib
    import trimesh

    from trainers.srhand.animation import load_trained_avatar, read_run_capture
    from trainers.srhand.export import gltf_pose
    from trainers.srhand.poses import capture_poses, resolve_poses
    from utils.geometry.gltf_io import read_skinned_glb, skin_vertices

    sys.path.insert(0, str(REPO / "scripts"))
    import export_avatar

    out = tmp_path / "hand.glb"
    args = ["--model_path", str(trained_run), "--out", str(out), "--device", "cpu", "--poses", "interpolate"]
    assert export_avatar.main([*args, "--inbetween", "3", "--fps", "10"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    trained = load_trained_avatar(trained_run)
    avatar = trained.avatar

    # An independent reading: trimesh for the mesh, pygltflib's JSON for the skeleton.
    (geometry,) = trimesh.load(out).geometry.values()
    assert geometry.vertices.shape == (avatar.num_verts, 3) == (3093, 3)
    gltf = pygltflib.GLTF2().load_binary(str(out))
    skin = gltf.skins[0]
    assert len(skin.joints) == 16
    parent_of = {c: i for i, node in enumerate(gltf.nodes) for c in (node.children or [])}
    parents = [skin.joints.index(parent_of[n]) if n in parent_of else -1 for n in skin.joints]
    assert parents == avatar.parents.tolist() == [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
    # rest positions from the node translations along the hierarchy = the avatar's rest joints = IBM^-1
    glb = read_skinned_glb(out)
    rest = np.zeros((16, 3))
    for j, p in enumerate(parents):
        rest[j] = glb["translations"][j] + (rest[p] if p >= 0 else 0)
    np.testing.assert_allclose(rest, avatar.joints_rest.numpy(), atol=1e-6)
    np.testing.assert_allclose(np.linalg.inv(glb["inverse_bind"])[:, :3, 3], rest, atol=1e-6)
    np.testing.assert_allclose(glb["skin_weights"].sum(1), 1.0, atol=1e-6)
    # the clip: 3 pairs x 3 in-between poses at 10 fps
    assert report["animation"]["frames"] == 9 and glb["animation"]["times"][-1] == pytest.approx(0.8)
    assert (glb["skin_weights"] >= 0).all() and glb["skin_joints"].max() < 16

    # Skinned like a viewer at every capture pose: within the reported distance of the avatar's own mesh.
    seq = read_run_capture(trained)
    poses = capture_poses(seq, "capture")
    # each keyframe is the glTF pose of its in-between MANO pose
    clip = resolve_poses("interpolate", seq, "right", avatar.pose_mean, inbetween=3)
    for k in (0, 4, 8):
        rotations, root = gltf_pose(avatar, clip.pose[k], clip.trans[k])
        np.testing.assert_allclose(glb["animation"]["rotations"][k], rotations, atol=1e-6)
        np.testing.assert_allclose(glb["animation"]["root_translations"][k], root, atol=1e-6)
    gap = report["skinned_vs_avatar_at_capture_poses"]
    assert gap["frames"] == len(poses) == 4 and 0 < gap["mean_mm"] < 1.0 and gap["max_mm"] < 5.0
    worst = 0.0
    for i in range(len(poses)):
        rotations, root = gltf_pose(avatar, poses.pose[i], poses.trans[i])
        ours = skin_vertices(glb, rotations, root)
        with torch.no_grad():
            theirs = avatar.forward_geometry(poses.pose[i], poses.trans[i])["verts_posed"].numpy()
        worst = max(worst, float(np.linalg.norm(ours - theirs, axis=1).max() * 1000))
    assert worst == pytest.approx(gap["max_mm"], rel=1e-5)
    # With the file's own (mean, top-4) weights and canonical mesh, glTF skinning is the avatar's LBS exactly.
    dense = torch.zeros(avatar.num_verts, 16, dtype=torch.float64)
    dense.scatter_(1, torch.from_numpy(glb["skin_joints"]), torch.from_numpy(glb["skin_weights"]))
    rotations, root = gltf_pose(avatar, poses.pose[0], poses.trans[0])
    with torch.no_grad():
        lbs = avatar.double().pose_vertices(
            torch.from_numpy(glb["verts"]), dense, poses.pose[0].double(), poses.trans[0].double()
        )
    np.testing.assert_allclose(skin_vertices(glb, rotations, root), lbs.numpy(), atol=1e-9)
