"""One writer per run directory: a busy directory is refused naming the holder, a killed
holder's lock is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import toytask

from formerkit.train.run_lock import LOCK_FILE, RunDirectoryBusy, RunLock

HOLD = ("import sys, time; from formerkit.train.run_lock import RunLock; "
        "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)")


def test_second_lock_in_the_same_process_is_refused(tmp_path):
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunDirectoryBusy, match=f"in use by process {os.getpid()}"):
            RunLock(tmp_path / "run").acquire()
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released and removed
    with RunLock(tmp_path / "run") as again:
        assert again.took_over is None


def test_lock_of_another_process_then_taken_over_after_sigkill(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE,
                              text=True, env=toytask.subprocess_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirectoryBusy) as info:
            RunLock(run).acquire()
        message = str(info.value)
        assert f"process {holder.pid}" in message and "\n" not in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = RunLock(run).acquire()  # the kernel dropped the dead process's lock
    try:
        assert lock.took_over["pid"] == holder.pid
    finally:
        lock.release()


def test_output_dir_that_is_a_file_is_a_clear_error(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
        RunLock(target).acquire()
    with pytest.raises(NotADirectoryError, match="a part of that path is a file"):
        RunLock(target / "run").acquire()
