"""One process per run folder: ``<run_dir>/.run.lock``.

    lock = RunLock(run_dir).acquire(warn=logger.warning)   # RunLockError if another process holds it
    ...
    lock.release()

The lock is an advisory ``flock`` on the file, so the kernel drops it when its process ends in any way
(``kill -9`` included); the file records the holder (pid, host, start time, command line) for the
error message. A second process on the same folder gets ``RunLockError`` naming the holder's pid. A
lock file left by a process that is gone (its ``flock`` is free) is taken over with a warning. Files
on NFS without lock support raise an ``OSError`` from ``flock``; that is reported, not ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

LOCK_NAME = ".run.lock"


class RunLockError(RuntimeError):
    """The run folder is in use by another process (or cannot be locked)."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 65536).decode("utf-8", errors="replace").strip()
    try:
        holder = json.loads(text) if text else {}
    except json.JSONDecodeError:
        holder = {"raw": text[:200]}
    return holder if isinstance(holder, dict) else {"raw": text[:200]}


class RunLock:
    """The lock of one run folder (see the module docstring).

    Args:
        run_dir: the run folder; created when missing.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, warn: Callable[[str], None] | None = None, wait_for_holder_s: float = 2.0) -> RunLock:
        """Take the lock, or raise ``RunLockError`` naming the process that holds it.

        Args:
            warn: called with a message when a stale lock (its process is gone) is taken over.
            wait_for_holder_s: how long to wait for a holder that has just locked the file to write its
                pid into it (for the error message).
        """
        import fcntl

        warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunLockError(f"cannot create the run folder {self.run_dir}: {err.strerror or err}") from err
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise RunLockError(
                    f"cannot create the lock file {self.path}: {err.strerror or err} "
                    "(is the output folder read-only?)"
                ) from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                deadline = time.monotonic() + wait_for_holder_s
                while "pid" not in holder and time.monotonic() < deadline:  # the holder is writing it
                    time.sleep(0.05)
                    holder = _read_holder(fd)
                os.close(fd)
                raise RunLockError(self._in_use_message(holder)) from None
            except OSError as err:
                os.close(fd)
                raise RunLockError(f"cannot lock {self.path}: {err.strerror or err}") from err
            # The file may have been unlinked by a releasing holder between our open and our flock: then
            # we hold a lock on a dead inode, so start again on the current file.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read_holder(fd)
        if previous:
            warn(
                f"taking over the stale lock {self.path} of process {previous.get('pid', '?')} on "
                f"{previous.get('host', '?')} (started {previous.get('started', '?')}), which is no longer "
                "running: the previous run ended without releasing it (killed or crashed)"
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "argv": sys.argv,
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
        os.fsync(fd)
        self._fd = fd
        return self

    def _in_use_message(self, holder: dict) -> str:
        pid = holder.get("pid", "?")
        where = holder.get("host", "?")
        command = " ".join(map(str, holder.get("argv", []))) or "?"
        alive = (
            " (running)" if isinstance(pid, int) and where == socket.gethostname() and pid_alive(pid) else ""
        )
        return (
            f"run folder {self.run_dir} is in use by process {pid}{alive} on {where}, started "
            f"{holder.get('started', '?')}: {command}. Wait for it to finish, or pick another folder "
            "(--out, or exp_name); two runs writing one folder would mix their checkpoints and logs"
        )

    def release(self) -> None:
        """Remove the lock file and drop the lock (no-op when not held)."""
        if self._fd is None:
            return
        import fcntl

        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still locked, so no one takes over a file we are removing
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire() if not self.held else self

    def __exit__(self, *exc) -> None:
        self.release()


def remove_stale_temp_files(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files of interrupted atomic writes (``.<name>.<random>.tmp``) in a run folder.

    Every file of a run is written by ``utils.checkpoint.atomic_write``, whose temporary files match
    ``utils.checkpoint.TEMP_GLOB``. Call only while holding the folder's lock: then no writer of this run is
    active. Returns the paths.
    """
    from utils.checkpoint import TEMP_GLOB

    removed = []
    for path in Path(run_dir).rglob(TEMP_GLOB):
        if path.is_file():
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed
