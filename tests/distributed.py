"""Run a function in several gloo processes, as ``torchrun`` would start them."""

from __future__ import annotations

import os
import socket
import tempfile
import traceback
from pathlib import Path

import torch
import torch.multiprocessing as mp

TIMEOUT = 180  # seconds a spawned world may take before the test fails


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(fn, rank: int, size: int, port: int, out: str, args: tuple) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    try:
        result = fn(*args)
    except BaseException:  # every failure goes back to the test, with the rank's traceback
        result = {"error": traceback.format_exc()}
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    torch.save(result, Path(out) / f"{rank}.pt")


def spawn(fn, size: int, *args) -> list:
    """``fn(*args)`` in ``size`` processes with the torch.distributed environment set;
    each rank's return value, in rank order. A rank that raises fails the caller with its
    traceback. ``fn`` must be importable (a module-level function)."""
    context = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as out:
        port = free_port()
        procs = [context.Process(target=_run, args=(fn, r, size, port, out, args)) for r in range(size)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(TIMEOUT)
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        results = []
        for rank in range(size):
            path = Path(out) / f"{rank}.pt"
            if not path.is_file():
                raise AssertionError(f"rank {rank} left no result (exit code {procs[rank].exitcode})")
            result = torch.load(path, weights_only=False)
            if isinstance(result, dict) and "error" in result:
                raise AssertionError(f"rank {rank} failed:\n{result['error']}")
            results.append(result)
        return results
