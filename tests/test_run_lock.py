"""utils/run_lock.py: one process per run folder; stale locks of killed runs are taken over with a warning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainers.run import main_guard, run_sr_stage
from utils.run_lock import LOCK_NAME, RunLock, RunLockError, remove_stale_temp_files

REPO = Path(__file__).resolve().parents[1]
HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from utils.run_lock import RunLock
RunLock({folder!r}).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding the folder's lock (its pid is the holder's)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(repo=str(REPO), folder=str(folder))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def minimal_conf(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    path = tmp_path / "min.conf"
    path.write_text(
        f"exp_name = x\nuse_tensorboard = false\ndata {{ data_path = {json.dumps(str(tmp_path / 'data'))} }}\n"
    )
    return path


def test_second_process_is_refused_with_the_holders_pid(tmp_path, capsys):
    run_dir = tmp_path / "run"
    holder = hold_lock(run_dir)
    try:
        with pytest.raises(RunLockError, match=f"in use by process {holder.pid} \\(running\\)"):
            RunLock(run_dir).acquire()
        # Through the entry point: exit 2, one clear line, nothing written into the folder.
        code = main_guard(
            lambda: run_sr_stage(
                "giif",
                "giif",
                ["--conf", str(minimal_conf(tmp_path)), "--out", str(run_dir), "--device", "cpu"],
            )
        )
        assert code == 2
        err = capsys.readouterr().err
        assert f"in use by process {holder.pid}" in err and str(run_dir) in err
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_killed_process_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    holder = hold_lock(run_dir)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (run_dir / LOCK_NAME).exists()  # kill -9 cannot clean up
    warnings = []
    lock = RunLock(run_dir).acquire(warn=warnings.append)
    assert len(warnings) == 1 and f"stale lock {run_dir / LOCK_NAME} of process {holder.pid}" in warnings[0]
    assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (run_dir / LOCK_NAME).exists()
    # Released cleanly: the next one takes it without a warning.
    with RunLock(run_dir) as again:
        assert again.held


def test_entry_point_takes_over_a_stale_lock_with_a_warning(tmp_path):
    """The killed run's lock and its interrupted write are cleaned up by the next run (which then stops
    on the empty data folder: the lock is taken before any data is read)."""
    run_dir = tmp_path / "run"
    holder = hold_lock(run_dir)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    leftover = run_dir / "checkpoints" / ".last.pth.abc123.tmp"
    leftover.parent.mkdir()
    leftover.write_bytes(b"half a checkpoint")
    code = main_guard(
        lambda: run_sr_stage(
            "giif", "giif", ["--conf", str(minimal_conf(tmp_path)), "--out", str(run_dir), "--device", "cpu"]
        )
    )
    assert code == 2  # no captures in the empty data folder
    log = (run_dir / "log.txt").read_text()
    assert f"of process {holder.pid}" in log and "stale lock" in log and ".last.pth.abc123.tmp" in log
    assert not leftover.exists() and not (run_dir / LOCK_NAME).exists()


def test_lock_waits_for_a_holder_writing_its_pid(tmp_path):
    import fcntl

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # locked, pid not written yet
    try:
        start = time.monotonic()
        with pytest.raises(RunLockError, match="in use by process \\?"):
            RunLock(run_dir).acquire(wait_for_holder_s=0.2)
        assert time.monotonic() - start < 5
    finally:
        os.close(fd)


def test_remove_stale_temp_files_only_touches_temp_files(tmp_path):
    (tmp_path / "a").mkdir()
    keep = [tmp_path / "giif.pth", tmp_path / "a" / "x.tmp", tmp_path / ".hidden"]
    drop = [tmp_path / ".giif.pth.k2j3.tmp", tmp_path / "a" / ".last.pth.zz.tmp"]
    for path in keep + drop:
        path.write_text("x")
    assert sorted(remove_stale_temp_files(tmp_path)) == sorted(drop)
    assert all(p.exists() for p in keep)
