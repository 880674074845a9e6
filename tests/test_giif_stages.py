"""End-to-end runs of main_giif.py and main_disc.py on a tiny synthetic capture set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainers.run import main_guard, run_sr_stage
from utils.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]

TINY_MODEL = """
model {
  name = giif
  args {
    encoder { name = rdn, args { G0 = 8, kernel_size = 3, D = 1, C = 1, G = 8 } }
    normal_encoder { name = hg_filter, args { in_ch = 3, num_stack = 1, depth = 1, n_feat = 8, out_dim = 8, norm = group } }
    hidden_list = [16]
  }
}
"""


def write_conf(tmp_path: Path, data_root: Path, extra: str = "", name: str = "tiny.conf") -> Path:
    text = f"""
exp_name = tiny
out_root = {json.dumps(str(tmp_path / "runs"))}
use_tensorboard = false
data {{
  data_path = {json.dumps(str(data_root))}
  hr_size = 32
  normal_size = 32
  max_val_images = 4
}}
{TINY_MODEL}
train {{
  epochs = 10
  max_steps = 3
  batch_size = 2
  scale_min = 2.0
  scale_max = 8.0
  perceptual = none
  perceptual_weight = 0.0
  log_every = 1
  vis_every = 2
  ckpt_every = 2
}}
eval {{
  scales = [2, 4, 6.4]
  batch_size = 2
  perceptual = none
  max_vis = 1
}}
{extra}
"""
    path = tmp_path / name
    path.write_text(text)
    return path


def run(stage: str, argv: list[str]) -> int:
    return main_guard(lambda: run_sr_stage(stage, stage, argv))


def test_giif_train_eval_resume(tmp_path, tiny_capture_root):
    conf = write_conf(tmp_path, tiny_capture_root)
    run_dir = tmp_path / "runs" / "tiny"
    assert run("giif", ["--conf", str(conf)]) == 0
    for name in ("giif.pth", "checkpoints/last.pth", "metrics.json", "config.conf", "command.txt", "log.txt"):
        assert (run_dir / name).is_file(), name
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pth")
    assert ckpt["step"] == 3 and ckpt["stage"] == "giif"
    report = json.loads((run_dir / "metrics.json").read_text())
    assert set(report["results"]) == {"giif", "bicubic"}
    assert set(report["results"]["giif"]) == {"x2", "x4", "x6.4"}
    row = report["results"]["bicubic"]["x2"]
    assert {"psnr_masked", "psnr_full", "ssim_masked", "ssim_full"} <= set(row)
    assert all(torch.isfinite(torch.tensor(v)) for v in row.values())

    # Resume continues the step count and the optimiser state.
    assert run("giif", ["--conf", str(conf), "--resume", "--set", "train.max_steps=5"]) == 0
    assert load_checkpoint(run_dir / "checkpoints" / "last.pth")["step"] == 5

    # --eval rebuilds the model from the checkpoint's own spec and writes grids with --save_vis.
    (run_dir / "metrics.json").unlink()
    assert (
        run("giif", ["--conf", str(conf), "--eval", "--model_path", str(run_dir / "giif.pth"), "--save_vis"])
        == 0
    )
    assert (run_dir / "metrics.json").is_file()
    assert len(list((run_dir / "eval_vis").glob("*.png"))) == 3  # one grid per scale


def test_no_eval_trains_without_the_evaluation(tmp_path, tiny_capture_root):
    """``--no_eval`` (the demo's stage 1): the model is written, no evaluation runs; with ``--eval`` it is refused."""
    conf = write_conf(tmp_path, tiny_capture_root)
    out = tmp_path / "trained"
    assert (
        run("giif", ["--conf", str(conf), "--out", str(out), "--no_eval", "--set", "train.max_steps=2"]) == 0
    )
    assert (out / "giif.pth").is_file() and not (out / "metrics.json").exists()
    with pytest.raises(SystemExit) as exc:
        run("giif", ["--conf", str(conf), "--eval", "--no_eval", "--model_path", str(out / "giif.pth")])
    assert exc.value.code == 2


def test_resume_matches_uninterrupted_run(tmp_path, tiny_capture_root):
    conf = write_conf(tmp_path, tiny_capture_root, "train.ckpt_every = 0")
    assert run("giif", ["--conf", str(conf), "--out", str(tmp_path / "a"), "--set", "train.max_steps=4"]) == 0
    assert run("giif", ["--conf", str(conf), "--out", str(tmp_path / "b"), "--set", "train.max_steps=2"]) == 0
    assert (
        run(
            "giif",
            ["--conf", str(conf), "--out", str(tmp_path / "b"), "--resume", "--set", "train.max_steps=4"],
        )
        == 0
    )
    a = load_checkpoint(tmp_path / "a" / "giif.pth")["model"]["sd"]
    b = load_checkpoint(tmp_path / "b" / "giif.pth")["model"]["sd"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_disc_stage_and_eval(tmp_path, tiny_capture_root):
    giif_conf = write_conf(tmp_path, tiny_capture_root, "train.max_steps = 2")
    conf = write_conf(
        tmp_path,
        tiny_capture_root,
        "train.max_steps = 2\nmodel_disc { args { num_feat = 8 } }",
        name="disc.conf",
    )
    giif_dir = tmp_path / "giif_run"
    assert run("giif", ["--conf", str(giif_conf), "--out", str(giif_dir)]) == 0
    disc_dir = tmp_path / "disc_run"
    assert (
        run("disc", ["--conf", str(conf), "--out", str(disc_dir), "--model_path", str(giif_dir / "giif.pth")])
        == 0
    )
    disc = load_checkpoint(disc_dir / "disc.pth", stage="disc")
    assert disc["model"]["name"] == "unet_disc_sn"
    last = load_checkpoint(disc_dir / "checkpoints" / "last.pth", stage="disc")
    assert {"disc", "disc_optimizer", "disc_scheduler"} <= set(last)
    # Stage 2 changed GIIF.
    before = load_checkpoint(giif_dir / "giif.pth")["model"]["sd"]
    after = load_checkpoint(disc_dir / "giif.pth")["model"]["sd"]
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # The authors' validation command.
    (disc_dir / "metrics.json").unlink()
    assert (
        run(
            "disc",
            [
                "--conf",
                str(conf),
                "--out",
                str(disc_dir),
                "--eval",
                "--model_path",
                str(disc_dir / "giif.pth"),
                "--model_path_disc",
                str(disc_dir / "disc.pth"),
            ],
        )
        == 0
    )
    # --model_path_disc is used: the discriminator's accuracy on the validation subjects, per scale.
    judged = json.loads((disc_dir / "metrics.json").read_text())["discriminator_eval"]
    assert judged["checkpoint"] == str(disc_dir / "disc.pth") and judged["gan_mode"] == "bce"
    assert set(judged["d_acc_fake"]) == {"x2", "x4", "x6.4"} and judged["num_images"] == 4
    assert all(0.0 <= v <= 1.0 for v in [judged["d_acc_real"], *judged["d_acc_fake"].values()])


def test_disc_diagnostics_logged_and_do_not_change_training(tmp_path, tiny_capture_root):
    """D's accuracies and the adversarial/L1 gradient ratio reach metrics.json with sane values; the
    measurement leaves the trained weights bit-identical; at adv_weight 0 the ratio is exactly 0."""
    giif_conf = write_conf(tmp_path, tiny_capture_root, "train.max_steps = 2")
    conf = write_conf(
        tmp_path,
        tiny_capture_root,
        "train.max_steps = 4\ntrain.ckpt_every = 0\n"
        "model_disc { args { num_feat = 8 } }\nadv { adv_weight = 1.0 }",
        name="disc.conf",
    )
    giif = tmp_path / "giif_run" / "giif.pth"
    assert run("giif", ["--conf", str(giif_conf), "--out", str(giif.parent)]) == 0

    def disc_run(name: str, *sets: str) -> dict:
        out = tmp_path / name
        argv = ["--conf", str(conf), "--out", str(out), "--model_path", str(giif)]
        for s in sets:
            argv += ["--set", s]
        assert run("disc", argv) == 0
        return json.loads((out / "metrics.json").read_text())

    report = disc_run("measured")  # log_every = 1: every step measured
    diag = report["discriminator"]
    assert diag["steps"] == 4 and diag["adv_weight"] == 1.0 and diag["records"] == 4
    assert [r["step"] for r in diag["series"]] == [1, 2, 3, 4]
    for record in diag["series"]:
        assert 0.0 <= record["d_acc_real"] <= 1.0 and 0.0 <= record["d_acc_fake"] <= 1.0
        assert record["grad_norm_l1"] > 0 and record["grad_norm_adv"] > 0
        assert 0 < record["grad_ratio_adv_l1"] < 1e3
    assert set(diag["first_quarter"]) == set(diag["last_quarter"]) >= {"d_acc_real", "grad_ratio_adv_l1"}

    # Measuring (autograd.grad on the output, graph retained) leaves the update unchanged.
    disc_run("unmeasured", "train.log_every=1000")
    a = load_checkpoint(tmp_path / "measured" / "giif.pth")["model"]["sd"]
    b = load_checkpoint(tmp_path / "unmeasured" / "giif.pth")["model"]["sd"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    zero = disc_run("no_adv", "adv.adv_weight=0.0")["discriminator"]
    assert all(r["grad_ratio_adv_l1"] == 0.0 and r["grad_norm_l1"] > 0 for r in zero["series"])


def test_disc_requires_stage1_model(tmp_path, tiny_capture_root, capsys):
    conf = write_conf(tmp_path, tiny_capture_root)
    assert run("disc", ["--conf", str(conf)]) == 2
    assert "--model_path" in capsys.readouterr().err


def test_liif_baseline_trains(tmp_path, tiny_capture_root):
    liif = """
model.args = null
model {
  name = liif
  args { encoder { name = rdn, args { G0 = 8, kernel_size = 3, D = 1, C = 1, G = 8 } }, hidden_list = [16] }
}
"""
    conf = write_conf(tmp_path, tiny_capture_root, liif + "train.max_steps = 2")
    assert run("giif", ["--conf", str(conf)]) == 0
    assert load_checkpoint(tmp_path / "runs" / "tiny" / "giif.pth")["model"]["name"] == "liif"


def test_config_and_checkpoint_errors(tmp_path, tiny_capture_root, capsys):
    conf = write_conf(tmp_path, tiny_capture_root, "train.max_steps = 1")
    assert run("giif", ["--conf", str(conf), "--set", "train.batchsize=2"]) == 2
    err = capsys.readouterr().err
    assert "train.batchsize" in err and "train.batch_size" in err

    assert run("giif", ["--conf", str(conf), "--set", "model.args.hidden_size=[8]"]) == 2
    assert "model.args.hidden_size" in capsys.readouterr().err

    assert run("giif", ["--conf", str(conf), "--set", "data.data_path=/nonexistent/ih"]) == 2
    assert "/nonexistent/ih" in capsys.readouterr().err

    assert run("giif", ["--conf", str(conf)]) == 0
    model_path = str(tmp_path / "runs" / "tiny" / "giif.pth")
    assert (
        run(
            "giif",
            [
                "--conf",
                str(conf),
                "--eval",
                "--model_path",
                model_path,
                "--set",
                "model.args.hidden_list=[12]",
            ],
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "hidden_list" in err and "different architecture" in err


def test_nan_guard_names_step_and_terms(tmp_path, tiny_capture_root, monkeypatch, capsys):
    from trainers.giif_trainer import GiifTrainer

    original = GiifTrainer.sr_losses

    def poisoned(self, pred, target):
        losses = original(self, pred, target)
        losses["l1"] = losses["l1"] * float("nan")
        return losses

    monkeypatch.setattr(GiifTrainer, "sr_losses", poisoned)
    conf = write_conf(tmp_path, tiny_capture_root)
    assert run("giif", ["--conf", str(conf)]) == 2
    err = capsys.readouterr().err
    assert "step 0" in err and "l1=nan" in err


def test_entry_script_subprocess(tmp_path, tiny_capture_root):
    """The real command line, as a user runs it."""
    conf = write_conf(tmp_path, tiny_capture_root, "train.max_steps = 1")
    result = subprocess.run(
        [sys.executable, str(REPO / "main_giif.py"), "--conf", str(conf)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "runs" / "tiny" / "giif.pth").is_file()


@pytest.mark.slow
def test_ddp_two_processes_keep_replicas_identical(tmp_path, tiny_capture_root):
    conf = write_conf(
        tmp_path, tiny_capture_root, "train.max_steps = 2\ntrain.batch_size = 1\ntrain.check_replicas = true"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        str(REPO / "main_giif.py"),
        "--conf",
        str(conf),
        "--device",
        "cpu",
    ]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    sums = json.loads((tmp_path / "runs" / "tiny" / "replica_checksums.json").read_text())
    assert len(sums) == 2 and sums[0] == pytest.approx(sums[1], rel=1e-12)


@pytest.mark.parametrize("stage", ["giif", "disc"])
def test_seed_reaches_the_trainer_through_its_constructor(tmp_path, monkeypatch, stage):
    """``--seed`` (else the config's ``seed``) is the trainer's seed from its constructor on."""
    from trainers.giif_trainer import GiifTrainer
    from utils.errors import InputError

    seen = []

    def build_data(self, train: bool = True):
        seen.append(self.seed)
        raise InputError("stop here")  # the seed is all this test needs

    monkeypatch.setattr(GiifTrainer, "build_data", build_data)
    conf = write_conf(tmp_path, tmp_path, extra="seed = 5")
    start = []
    if (
        stage == "disc"
    ):  # stage 2 needs a stage-1 checkpoint before it starts (its residual mode is checked then)
        import models
        from utils.checkpoint import make_checkpoint, model_entry, save_atomic

        tiny = {"name": "rdn", "args": {"G0": 4, "D": 1, "C": 1, "G": 4}}
        giif = models.make(
            {"name": "giif", "args": {"encoder": tiny, "use_normal": False, "hidden_list": [4]}}
        )
        save_atomic(make_checkpoint("giif", model_entry(giif)), tmp_path / "giif.pth")
        start = ["--model_path", str(tmp_path / "giif.pth")]
    assert run(stage, ["--conf", str(conf), "--device", "cpu", "--seed", "11", *start]) == 2
    assert run(stage, ["--conf", str(conf), "--device", "cpu", *start]) == 2
    assert seen == [11, 5]


def test_residual_giif_on_camera_inputs_trains_resumes_and_evaluates_reproducibly(
    tmp_path, tiny_capture_root
):
    """Issue 24 end to end: a bilinear-residual GIIF trained on camera-degraded inputs (new parameters each step)
    resumes to the uninterrupted weights, its checkpoint records the residual, and two evaluations on camera
    inputs (seeded per image) give the same table."""
    extra = "model.args.residual = bilinear\ntrain.degradation = camera\neval.degradation = camera\ntrain.ckpt_every = 0"
    conf = write_conf(tmp_path, tiny_capture_root, extra)
    assert run("giif", ["--conf", str(conf), "--out", str(tmp_path / "a"), "--set", "train.max_steps=3"]) == 0
    assert run("giif", ["--conf", str(conf), "--out", str(tmp_path / "b"), "--set", "train.max_steps=2"]) == 0
    argv = ["--conf", str(conf), "--out", str(tmp_path / "b"), "--resume", "--set", "train.max_steps=3"]
    assert run("giif", argv) == 0
    a, b = (load_checkpoint(tmp_path / r / "giif.pth")["model"] for r in "ab")
    assert a["args"]["residual"] == "bilinear"
    for key in a["sd"]:
        torch.testing.assert_close(a["sd"][key], b["sd"][key], rtol=1e-4, atol=1e-5, msg=key)
    first = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert first["degradation"] == "camera"
    eval_argv = ["--conf", str(conf), "--eval", "--model_path", str(tmp_path / "a" / "giif.pth")]
    assert run("giif", [*eval_argv, "--out", str(tmp_path / "e")]) == 0
    again = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert again["results"] == first["results"]
