"""Faults injected into the three entry scripts on tiny configs, and write failures.

Kill -9: each stage runs once uninterrupted (the reference, which also measures how long its training
lasts), then again in another folder where it is killed with SIGKILL at moments drawn from a seeded RNG
over that measured length, restarted (``--resume`` / ``--r`` when a checkpoint exists, else from
scratch: the killed process's lock is taken over), killed again, and finally run to the end. After every
kill each ``.pth`` left in the folder must load, and at the end the weights must be bitwise equal to the
reference's and ``metrics.json`` equal apart from its timings. For main.py one kill lands inside a GIIF
fine-tuning round. Same seed and one thread everywhere (``OMP_NUM_THREADS=1``).

Write failures: a ``torch.save`` that fills the disk and a folder that turns read-only (a failing
writer, as the tests run as root) must give a one-line error (exit 2) and leave the previous
checkpoint loadable and unchanged.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from _hand_fixtures import tiny_srhand_blocks, write_tiny_sr_models

from trainers.run import main_guard, run_sr_stage
from utils.checkpoint import latest_checkpoint, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {"giif": "main_giif.py", "disc": "main_disc.py", "srhand": "main.py"}
RESUME_FLAG = {"giif": "--resume", "disc": "--resume", "srhand": "--r"}
# Log lines that open and close the training span over which kill moments are drawn.
SPAN = {
    "giif": ("train step ", "training done"),
    "disc": ("train step ", "training done"),
    "srhand": ("run folder", "training wall time"),
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("SRHAND_DEBUG", None)
FAULTS: list[str] = []  # one line per injected fault and what happened (printed for the closing note)

GIIF_MODEL_BLOCK = """
model { name = giif, args {
  encoder { name = rdn, args { G0 = 8, kernel_size = 3, D = 1, C = 1, G = 4 } }
  normal_encoder { name = hg_filter, args { in_ch = 3, num_stack = 1, depth = 1, n_feat = 8, out_dim = 8, norm = group } }
  hidden_list = [16] } }
"""


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_capture_root):
    return write_tiny_sr_models(tmp_path_factory.mktemp("fault_models"), tiny_capture_root)


def sr_conf(tmp_path: Path, assets: dict, stage: str) -> Path:
    q = json.dumps
    text = f"""
exp_name = tiny
out_root = {q(str(tmp_path / "runs"))}
use_tensorboard = false
data {{ data_path = {q(str(assets["root"]))}, hr_size = 32, normal_size = 32, max_val_images = 2 }}
{GIIF_MODEL_BLOCK}
train {{ epochs = 20, max_steps = 10, batch_size = 2, scale_min = 2.0, scale_max = 8.0, perceptual = none,
         perceptual_weight = 0.0, log_every = 1, vis_every = 0, ckpt_every = 1 }}
eval {{ scales = [2, 4], batch_size = 2, perceptual = none, max_vis = 0 }}
"""
    if stage == "disc":
        text += f"model_disc {{ args {{ num_feat = 4 }} }}\ngiif_model = {q(str(assets['giif']))}\n"
    path = tmp_path / f"{stage}.conf"
    path.write_text(text)
    return path


def srhand_conf(tmp_path: Path, assets: dict) -> Path:
    q = json.dumps
    text = f"""
exp_name = tiny
out_root = {q(str(tmp_path / "runs"))}
use_tensorboard = false
giif_model = {q(str(assets["giif"]))}
disc_model = {q(str(assets["disc"]))}
log_every = 1
ckpt_every = 1
{tiny_srhand_blocks(assets["root"])}
albedo {{ epochs = 3, batch_size = 2 }}
sfs {{ epochs = 3, batch_size = 2 }}
train {{ epochs = 4, batch_size = 2, perceptual = none, renew_means_every = 2 }}
finetune {{ update_term = 1, start = 0.5, stop = 1.0, inner_epochs = 4, batch_size = 2 }}
eval {{ perceptual = none, p2p_samples = 300, batch_size = 3 }}
"""
    path = tmp_path / "srhand.conf"
    path.write_text(text)
    return path


class Run:
    """One subprocess of an entry script, its output read line by line with arrival times."""

    def __init__(self, argv: list[str], cwd: Path):
        self.start = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=cwd,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line))

    def seen(self, text: str) -> float | None:
        """The time of the first output line containing ``text``."""
        return next((t for t, line in list(self.lines) if text in line), None)

    def kill_at(self, trigger: str, delay: float, timeout: float = 300) -> bool:
        """SIGKILL ``delay`` seconds after ``trigger`` appears; False when the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            t = self.seen(trigger)
            if t is not None and time.monotonic() >= t + delay:
                self.proc.send_signal(signal.SIGKILL)
                self.wait()
                return True
            time.sleep(0.01)
        self.wait()
        return False

    def wait(self, timeout: float = 300) -> int:
        rc = self.proc.wait(timeout)
        self.reader.join(10)
        return rc

    @property
    def output(self) -> str:
        return "".join(line for _, line in self.lines)


def check_left_behind(run_dir: Path) -> int:
    """Every checkpoint file in the folder loads; returns how many there are."""
    paths = sorted(run_dir.rglob("*.pth"))
    for path in paths:
        load_checkpoint(path)
    return len(paths)


def strip_timings(value):
    if isinstance(value, dict):
        return {k: strip_timings(v) for k, v in value.items() if "second" not in k and k != "timing"}
    if isinstance(value, list):
        return [strip_timings(v) for v in value]
    return value


def assert_same_weights(a: Path, b: Path, entries=("model",)) -> None:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    for entry in entries:
        for key, value in ca[entry]["sd"].items():
            assert torch.equal(value, cb[entry]["sd"][key]), f"{a.name} {entry}.{key} differs after the kills"


def kill_and_resume(
    stage: str, conf: Path, tmp_path: Path, kills: int, seed: int, extra=(), round_kill: bool = False
):
    """Reference run, then ``kills`` SIGKILLs with restarts, then a final run; returns both folders."""
    script = str(REPO / SCRIPTS[stage])
    base = [script, "--conf", str(conf), "--device", "cpu", *extra]
    ref_dir, faulty = tmp_path / "reference", tmp_path / "faulty"
    ref = Run([*base, "--out", str(ref_dir)], tmp_path)
    assert ref.wait() == 0, ref.output[-3000:]
    opened, closed = SPAN[stage]
    assert ref.seen(opened) is not None and ref.seen(closed) is not None, ref.output[-3000:]
    length = ref.seen(closed) - ref.seen(opened)
    rng = random.Random(seed)
    plan = [("training", opened, rng.uniform(0.0, 1.0) * length) for _ in range(kills)]
    if round_kill:  # the first kill lands inside the first GIIF fine-tuning round, after a seeded step of it
        steps = [line for _, line in ref.lines if "finetune step " in line]
        assert steps and ref.seen(" done in ") is not None, ref.output[-3000:]
        rounds0 = sum(1 for t, line in ref.lines if "finetune step " in line and t <= ref.seen(" done in "))
        plan[0] = ("round", f"finetune step {rng.randint(1, rounds0)}:", 0.0)
    for what, trigger, delay in plan:
        argv = [*base, "--out", str(faulty)]
        if latest_checkpoint(faulty) is not None:
            argv.append(RESUME_FLAG[stage])
        run = Run(argv, tmp_path)
        killed = run.kill_at(trigger, delay)
        if not killed:
            assert run.proc.returncode == 0, run.output[-3000:]
        if what == "round":  # killed after the round began and before it ended
            assert killed and run.seen("GIIF fine-tuning round") and not run.seen(" done in "), run.output[
                -3000:
            ]
        last = latest_checkpoint(faulty)
        state = load_checkpoint(last) if last is not None else None
        where = (
            f"phase {state.get('phase', '-')}, epoch {state['epoch']}, step {state['step']}"
            if state is not None
            else "no checkpoint yet"
        )
        count = check_left_behind(faulty)
        FAULTS.append(
            f"{stage}: SIGKILL {delay:.2f} s after '{trigger}' ({what}): "
            f"{'killed' if killed else 'finished first'}; {count} checkpoint file(s) left, all load; "
            f"resume point: {where}"
        )
    argv = [*base, "--out", str(faulty)] + ([RESUME_FLAG[stage]] if latest_checkpoint(faulty) else [])
    final = Run(argv, tmp_path)
    assert final.wait() == 0, final.output[-3000:]
    assert not (faulty / ".run.lock").exists() and not list(faulty.rglob(".*.tmp"))
    return ref_dir, faulty


def assert_same_metrics(a: Path, b: Path, rel: float = 0.0) -> None:
    """``metrics.json`` of both folders equal apart from timings (floats within ``rel`` when it is > 0)."""

    def compare(x, y, where):
        if isinstance(x, dict):
            assert isinstance(y, dict) and set(x) == set(y), where
            for k in x:
                compare(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, list):
            assert isinstance(y, list) and len(x) == len(y), where
            for i, (u, v) in enumerate(zip(x, y, strict=True)):
                compare(u, v, f"{where}[{i}]")
        elif isinstance(x, float) and rel > 0:
            assert y == pytest.approx(x, rel=rel, abs=1e-12), (where, x, y)
        else:
            assert x == y, (where, x, y)

    compare(
        strip_timings(json.loads((a / "metrics.json").read_text())),
        strip_timings(json.loads((b / "metrics.json").read_text())),
        "metrics",
    )


def test_giif_killed_and_resumed(tmp_path, assets):
    ref, faulty = kill_and_resume("giif", sr_conf(tmp_path, assets, "giif"), tmp_path, kills=2, seed=131)
    assert_same_weights(ref / "giif.pth", faulty / "giif.pth")
    assert_same_weights(ref / "checkpoints" / "last.pth", faulty / "checkpoints" / "last.pth")
    assert_same_metrics(ref, faulty)
    assert "stale lock" in (faulty / "log.txt").read_text()


def test_disc_killed_and_resumed(tmp_path, assets):
    ref, faulty = kill_and_resume("disc", sr_conf(tmp_path, assets, "disc"), tmp_path, kills=2, seed=132)
    assert_same_weights(ref / "giif.pth", faulty / "giif.pth")
    assert_same_weights(ref / "disc.pth", faulty / "disc.pth")
    assert_same_weights(
        ref / "checkpoints" / "last.pth", faulty / "checkpoints" / "last.pth", ("model", "disc")
    )
    assert_same_metrics(ref, faulty)


def test_srhand_killed_and_resumed_also_inside_a_finetuning_round(tmp_path, assets):
    ref, faulty = kill_and_resume(
        "srhand", srhand_conf(tmp_path, assets), tmp_path, kills=3, seed=133, round_kill=True
    )
    assert_same_weights(ref / "model.pth", faulty / "model.pth")
    assert_same_weights(ref / "implicit_model.pth", faulty / "implicit_model.pth")
    assert_same_metrics(
        ref, faulty, rel=1e-6
    )  # see docs/failure_modes.md: SR metrics differ in the 9th digit
    assert any("(round): killed" in line for line in FAULTS if line.startswith("srhand"))


def test_fault_summary():
    print("\n[issue 13] faults injected:\n  " + "\n  ".join(FAULTS))


# ---------------------------------------------------------------------------------------------- writes
def run_giif(conf: Path, *args: str) -> int:
    return main_guard(lambda: run_sr_stage("giif", "giif", ["--conf", str(conf), "--device", "cpu", *args]))


@pytest.fixture
def trained(tmp_path, assets):
    conf = sr_conf(tmp_path, assets, "giif")
    run_dir = tmp_path / "runs" / "tiny"
    assert run_giif(conf, "--set", "train.max_steps=2", "--set", "train.ckpt_every=2") == 0
    last = run_dir / "checkpoints" / "last.pth"
    return conf, run_dir, last, last.read_bytes()


def test_disk_full_keeps_the_previous_checkpoint(trained, monkeypatch, capsys):
    conf, run_dir, last, before = trained
    real_save = torch.save

    def disk_full(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)  # most of the file is written, then the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    assert run_giif(conf, "--resume", "--set", "train.max_steps=4") == 2
    err = capsys.readouterr().err
    line = err[err.index("error: WriteFailedError") :].splitlines()[
        0
    ]  # one line (after tqdm's bar on stderr)
    assert "last.pth" in line and "disk is full" in line and "previous version is unchanged" in line
    assert last.read_bytes() == before and load_checkpoint(last)["step"] == 2
    assert not list(run_dir.rglob(".*.tmp")) and not (run_dir / ".run.lock").exists()
    FAULTS.append(
        "giif: torch.save raising ENOSPC at the next checkpoint: exit 2, 'disk is full', "
        "last.pth unchanged (step 2), no temporary file left, lock released"
    )


def test_read_only_folder_keeps_the_previous_checkpoint(trained, monkeypatch, capsys):
    conf, run_dir, last, before = trained
    import utils.checkpoint as checkpoint

    real_mkstemp = checkpoint.tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):  # the checkpoint folder turned read-only after the first run
        if dir is not None and Path(dir).name == "checkpoints":
            raise OSError(errno.EROFS, "Read-only file system")
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", read_only)
    assert run_giif(conf, "--resume", "--set", "train.max_steps=4") == 2
    err = capsys.readouterr().err
    assert "last.pth" in err and "read-only file system" in err and "previous version is unchanged" in err
    assert last.read_bytes() == before
    FAULTS.append(
        "giif: checkpoint folder read-only (mkstemp raising EROFS): exit 2, 'read-only file system', "
        "last.pth unchanged"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_really_read_only_run_folder(trained, capsys):
    conf, run_dir, last, before = trained
    os.chmod(run_dir, 0o555)
    try:
        assert run_giif(conf, "--resume", "--set", "train.max_steps=4") == 2
        assert "read-only" in capsys.readouterr().err
    finally:
        os.chmod(run_dir, 0o755)
    assert last.read_bytes() == before


# ---------------------------------------------------------------------------------------------- user errors vs bugs
def minimal_giif_conf(tmp_path: Path) -> Path:
    path = tmp_path / "min.conf"
    path.write_text(
        f"exp_name = guard\nout_root = {json.dumps(str(tmp_path / 'runs'))}\nuse_tensorboard = false\n"
        f"data {{ data_path = {json.dumps(str(tmp_path))} }}\n"
    )
    return path


def raise_in_stage_body(monkeypatch, error: BaseException) -> None:
    """Make the giif stage raise ``error`` once its run folder is set up (where a trainer's bug would)."""
    from trainers.giif_trainer import GiifTrainer

    def build_data(self, train: bool = True):
        raise error

    monkeypatch.setattr(GiifTrainer, "build_data", build_data)
    monkeypatch.delenv("SRHAND_DEBUG", raising=False)


@pytest.mark.parametrize(
    "error",
    [KeyError("train.nope"), ValueError("a bug"), OSError(errno.EIO, "a bug")],
    ids=["KeyError", "ValueError", "OSError"],
)
def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch, error):
    """A plain KeyError / ValueError / OSError is a bug, not a user error: it propagates (traceback), no exit 2."""
    raise_in_stage_body(monkeypatch, error)
    with pytest.raises(type(error)) as info:
        run_giif(minimal_giif_conf(tmp_path))
    assert info.value is error
    assert not (
        tmp_path / "runs" / "guard" / ".run.lock"
    ).exists()  # close_run released the lock all the same


def test_an_input_error_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from utils.errors import InputError

    raise_in_stage_body(monkeypatch, InputError("data.data_path = /x: no capture there (check the path)"))
    assert run_giif(minimal_giif_conf(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "error: InputError: data.data_path = /x: no capture there (check the path)\n" in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs" / "guard" / ".run.lock").exists()
