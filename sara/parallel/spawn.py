"""Start a function in several local processes as ``torchrun`` would (gloo on CPU): what the
distributed benchmarks and the parity tests use."""

from __future__ import annotations

import os
import socket
import tempfile
import traceback
from pathlib import Path

import torch
import torch.multiprocessing as mp

TIMEOUT = 600  # seconds a spawned world may take


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(fn, rank: int, size: int, port: int, out: str, args: tuple) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(size),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
    )  # fmt: skip
    torch.set_num_threads(1)
    try:
        result = fn(*args)
    except BaseException:  # every failure goes back to the caller, with the rank's traceback
        result = {"error": traceback.format_exc()}
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    torch.save(result, Path(out) / f"{rank}.pt")


def run_processes(fn, size: int, *args) -> list:
    """``fn(*args)`` in ``size`` fresh processes with the torch.distributed environment set
    (one thread each); each rank's return value, in rank order. A rank that raises makes
    this raise ``RuntimeError`` with its traceback. ``fn`` must be importable."""
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
                raise RuntimeError(f"rank {rank} left no result (exit code {procs[rank].exitcode})")
            result = torch.load(path, weights_only=False)  # written by the child just now
            if isinstance(result, dict) and "error" in result:
                raise RuntimeError(f"rank {rank} failed:\n{result['error']}")
            results.append(result)
        return results
