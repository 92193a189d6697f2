"""Stop cleanly when the cluster says so, and never run two trainers in one run folder.

``SIGTERM`` (what ``torchrun`` forwards, and SLURM sends at the end of a job) and
``SIGUSR1`` (SLURM's ``--signal=USR1@300``) set a flag; at the next step boundary every
rank learns whether *any* rank got one (one small all-reduce), so all of them write the
checkpoint together and stop (:class:`Stopped`). The command then exits with
:data:`EXIT_STOPPED`, not 0: a job script tells a run to resume (``scontrol requeue``)
from one that finished, and a scheduler that requeues failed jobs requeues it.
"""

from __future__ import annotations

import fcntl
import os
import signal
from pathlib import Path

import torch
import torch.distributed as dist

from sara.parallel.collectives import world_max
from sara.parallel.world import World
from sara.run_dir import RunDir

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# the exit code of a run stopped by a signal after its checkpoint: EX_TEMPFAIL of sysexits.h,
# "try again later" (scripts/slurm.sbatch requeues the job on it)
EXIT_STOPPED = 75


class Stopped(Exception):  # noqa: N818 (an outcome, not an error)
    """A stop signal ended the run after the checkpoint of step ``step``."""

    def __init__(self, step: int):
        super().__init__(f"stopped by a signal after step {step}; resume with --resume latest")
        self.step = step


class Preemption:
    """Catches the stop signals while the loop runs (``with Preemption(world) as stop``)."""

    def __init__(self, world: World):
        self.world, self.received, self._previous = world, False, {}

    def __enter__(self) -> Preemption:
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        self.received = True

    def agreed(self, busy: bool = False) -> tuple[bool, bool]:
        """``(stop, busy)`` over every rank, each true when it is on any rank: whether a rank
        has been asked to stop, and the caller's own ``busy`` flag, in the same all-reduce
        (every rank gets the same answer)."""
        stop, anyone = (world_max(torch.tensor([float(self.received), float(busy)]), self.world) > 0).tolist()
        return stop, anyone


class RunLock:
    """An exclusive lock on a run folder, held by rank 0 while the trainer runs; the
    operating system releases it when the process ends, however it ends."""

    def __init__(self, run: Path, world: World):
        self.path, self.world, self.file = RunDir(run).lock, world, None

    def __enter__(self) -> RunLock:
        busy = False
        if self.world.is_main:
            self.file = open(self.path, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
            try:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.file.seek(0)
                self.file.truncate()
                self.file.write(f"{os.getpid()}\n")
                self.file.flush()
            except BlockingIOError:
                self.file.close()
                self.file, busy = None, True
        if self.world.distributed:
            flag = torch.tensor([float(busy)], device=self.world.device)
            dist.broadcast(flag, src=0)
            busy = bool(flag.item())
        if busy:
            raise ValueError(f"{self.path.parent}: in use by another trainer (it holds {self.path})")
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.close()
