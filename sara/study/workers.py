"""The study's worker processes: each takes an equal share of the CPU threads and ends with
the study's process, however that ends."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed

import torch


def worker_threads(jobs: int) -> int:
    """Each worker's share of this machine's CPU threads."""
    return max(1, (os.cpu_count() or 1) // jobs)


def _start_worker(threads: int, parent: int) -> None:
    """A worker's set-up: its thread share, and a watch that ends it once the study's process
    is gone — killed (SIGKILL, SIGTERM), that process cannot stop its workers, which would
    train on, orphaned, for as long as their runs take."""
    torch.set_num_threads(threads)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run_in_workers(
    function: Callable, keys: Iterable[Hashable], jobs: int, *args, done: Callable[[], None] = lambda: None
) -> dict:
    """``{key: function(*args, *key)}``, computed in ``jobs`` spawned processes (CUDA cannot be
    forked); ``done`` is called as each finishes. The first failure cancels the calls not yet
    started and is raised once the running ones end."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        jobs, context, initializer=_start_worker, initargs=(worker_threads(jobs), os.getpid())
    ) as pool:
        futures = {pool.submit(function, *args, *key): key for key in keys}
        try:
            for future in as_completed(futures):
                future.result()
                done()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return {key: future.result() for future, key in futures.items()}
