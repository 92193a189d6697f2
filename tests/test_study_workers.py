"""The study's worker processes end with the study's process: killed, it leaves no worker
training on; a failed run cancels the runs not yet started."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sara.study.workers import run_in_workers

pytestmark = pytest.mark.slow

SCRIPT = """
import os, signal, sys, threading, time
from pathlib import Path
from sara.study.workers import run_in_workers

def sleep(folder, key):
    Path(folder, "pid").write_text(str(os.getpid()))
    time.sleep(120)

def kill_this_process_once_the_worker_runs():
    while not Path(sys.argv[1], "pid").exists():
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)

if __name__ == "__main__":
    threading.Thread(target=kill_this_process_once_the_worker_runs, daemon=True).start()
    run_in_workers(sleep, [(0,)], 1, sys.argv[1])
"""


def _alive(pid: int) -> bool:
    """Running, not a zombie left for its new parent to reap."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_killed_study_leaves_no_worker_running(tmp_path):
    script = tmp_path / "study.py"
    script.write_text(SCRIPT)
    finished = subprocess.run([sys.executable, str(script), str(tmp_path)], timeout=120)
    assert finished.returncode == -signal.SIGKILL
    worker = int((tmp_path / "pid").read_text())
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker), f"worker {worker} still runs after its study was killed"


def _run(folder: str, key: int) -> int:
    Path(folder, str(key)).touch()
    if key == 0:
        raise RuntimeError("run 0 failed")
    time.sleep(0.3)  # long enough for the study to cancel what has not started
    return key


def test_a_failed_run_stops_the_runs_not_started(tmp_path):
    with pytest.raises(RuntimeError, match="run 0 failed"):
        run_in_workers(_run, [(k,) for k in range(6)], 1, str(tmp_path))
    started = sorted(int(p.name) for p in tmp_path.iterdir())
    # the pool queues up to two calls beyond the one running (its own look-ahead, then one more
    # as the failure comes back); without the cancel all six would run
    assert started[0] == 0 and len(started) <= 3, started
    assert run_in_workers(_run, [(k,) for k in (1, 2, 3)], 2, str(tmp_path)) == {(1,): 1, (2,): 2, (3,): 3}
