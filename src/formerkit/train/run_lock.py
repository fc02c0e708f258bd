"""One writer per run directory: ``DIR/.lock``, held with ``flock`` for as long as a run trains.

The kernel drops an ``flock`` when its process dies, so the lock of a run killed with SIGKILL is
free for the next one to take over; the file itself only tells who holds it (PID, host, start
time) for the error message. Where ``fcntl`` is missing the lock falls back to an exclusive
create, and a lock file whose PID no longer runs is taken over.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from formerkit.train.errors import TrainingError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


class RunDirectoryBusy(TrainingError):
    """Another process is training into the same run directory."""


def ensure_directory(root: Path) -> None:
    """Create ``root`` (and parents), with one clear error when it or a parent is a file."""
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"output directory {root} is a file, not a directory; "
                                 "choose another --output-dir")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(f"cannot create output directory {root}: a part of that path "
                                 "is a file; choose another --output-dir") from None


class RunLock:
    """The lock of one run directory (``acquire`` / ``release``, or a ``with`` block)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_FILE
        self._fd: int | None = None
        self.took_over: dict[str, Any] | None = None  # the holder a stale lock named

    def acquire(self) -> RunLock:
        """Take the lock.

        Raises:
            RunDirectoryBusy: a live process holds it (the message names its PID).
            NotADirectoryError: the run directory is a file.
        """
        ensure_directory(self.root)
        if fcntl is None:
            self._acquire_exclusive_create()
        else:
            self._acquire_flock()
        return self

    def _acquire_flock(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_holder(self.path)
                os.close(fd)
                raise RunDirectoryBusy(_busy_message(self.root, holder)) from None
            try:  # the holder may have released (and unlinked) it between open and flock
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.took_over = _read_holder(self.path)
        self._fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, _holder_record().encode())
        os.fsync(fd)

    def _acquire_exclusive_create(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _read_holder(self.path)
                if holder and _pid_alive(holder.get("pid")):
                    raise RunDirectoryBusy(_busy_message(self.root, holder)) from None
                self.took_over = holder
                self.path.unlink(missing_ok=True)
                continue
            self._fd = fd
            os.write(fd, _holder_record().encode())
            os.fsync(fd)
            return
        raise RunDirectoryBusy(_busy_message(self.root, _read_holder(self.path)))

    def release(self) -> None:
        """Give the lock up (the file is removed first, so nobody reads a stale holder)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder_record() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n"


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(errors="replace") or "null")
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _busy_message(root: Path, holder: dict[str, Any] | None) -> str:
    if holder and holder.get("pid") is not None:
        who = f"process {holder['pid']}"
        if holder.get("host") and holder["host"] != socket.gethostname():
            who += f" on {holder['host']}"
        if holder.get("started"):
            who += f" (since {holder['started']})"
    else:
        who = "another process"
    return (f"run directory {root} is in use by {who}: only one run may write to it; wait for "
            f"that run to end or choose another --output-dir (lock file {root / LOCK_FILE})")


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    if os.name == "nt":  # os.kill would terminate it there: assume it runs
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OSError:
        return False
    return True
