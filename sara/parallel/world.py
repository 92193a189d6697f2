"""The processes of a run and the device mesh that names their roles.

A run is one process (``sara stage2 train …``) or many under ``torchrun`` (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` in the environment, as
``accelerate launch`` and ``srun torchrun`` also set them). The mesh has four named
dimensions, ``(dp_replicate, dp_shard, ring, ulysses)`` — ``ring`` always 1: ring attention
needs CUDA kernels with a log-sum-exp, and Ulysses covers the sequence lengths of Wan —
and three flattened views of it, kept here rather than sliced from the root again:

- ``dp`` (``dp_replicate × dp_shard``): ranks that see different clips;
- ``cp`` (``ring × ulysses``): ranks that see the same clips and split their tokens;
- ``fsdp`` (``dp_shard × ring × ulysses``): ranks a model is sharded over (and, with
  ``dp_replicate > 1``, the 2-D ``(dp_replicate, fsdp)`` mesh of HSDP).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from sara.config.parallel import ParallelConfig
from sara.device import pick_device

MESH_DIMS = ("dp_replicate", "dp_shard", "ring", "ulysses")
TIMEOUT = timedelta(minutes=30)  # a rank waits this long at a collective before the run fails


@dataclass(frozen=True)
class World:
    """Where this process stands. ``mesh`` is ``None`` in a run of one process."""

    rank: int
    size: int
    device: torch.device
    dp_replicate: int = 1
    dp_shard: int = 1
    cp: int = 1
    mesh: DeviceMesh | None = None
    dp_mesh: DeviceMesh | None = None
    cp_mesh: DeviceMesh | None = None
    fsdp_mesh: DeviceMesh | None = None  # 1-D, or 2-D (dp_replicate, fsdp) for HSDP

    @property
    def distributed(self) -> bool:
        return self.mesh is not None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes the run's files."""
        return self.rank == 0

    @property
    def dp_size(self) -> int:
        return self.dp_replicate * self.dp_shard

    @property
    def dp_rank(self) -> int:
        return self.dp_mesh.get_local_rank() if self.dp_mesh is not None else 0

    @property
    def cp_rank(self) -> int:
        return self.cp_mesh.get_local_rank() if self.cp_mesh is not None else 0

    @property
    def cp_share(self) -> tuple[int, int]:
        """``(cp_rank, cp)``: which of its group's shares of sequence-split work this rank computes."""
        return self.cp_rank, self.cp


def degrees(config: ParallelConfig, size: int) -> tuple[int, int, int]:
    """``(dp_replicate, dp_shard, ulysses)`` for a world of ``size``, ``dp_shard = -1`` resolved.

    Raises:
        ValueError: the degrees do not multiply to the world size.
    """
    replicate, shard, ulysses = config.dp_replicate, config.dp_shard, config.ulysses
    if shard == -1:
        shard, rest = divmod(size, replicate * ulysses)
        if rest or shard == 0:
            raise ValueError(
                f"parallel: dp_replicate {replicate} × ulysses {ulysses} does not divide the world of {size} processes"
            )
    if replicate * shard * ulysses != size:
        raise ValueError(
            f"parallel: dp_replicate {replicate} × dp_shard {shard} × ulysses {ulysses} = "
            f"{replicate * shard * ulysses} processes, the world has {size}"
        )
    return replicate, shard, ulysses


def launched() -> bool:
    """Started by a launcher that sets the torch.distributed environment."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_main_process() -> bool:
    """Rank 0 of a launched run, or the only process: the one that prints summaries."""
    return int(os.environ.get("RANK", "0")) == 0


def init_world(config: ParallelConfig, device: str = "auto") -> World:
    """The world of this process: the process group and mesh under a launcher, or a world
    of one. ``device`` ``auto`` gives each process the GPU of its ``LOCAL_RANK`` when there are GPUs."""
    if not launched():
        degrees(config, 1)  # a one-process run with ulysses 2 is a config error, said as one
        return World(rank=0, size=1, device=pick_device(device))
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    replicate, shard, ulysses = degrees(config, size)
    chosen = pick_device(device)
    if chosen.type == "cuda":
        # modulo the GPUs this process sees: all of the node's, or (a scheduler binding one GPU
        # to each task) only its own
        chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT, device_id=chosen if chosen.type == "cuda" else None)
    mesh = init_device_mesh(chosen.type, (replicate, shard, 1, ulysses), mesh_dim_names=MESH_DIMS)
    fsdp = mesh["dp_shard", "ring", "ulysses"]._flatten("fsdp")
    return World(
        rank=rank,
        size=size,
        device=chosen,
        dp_replicate=replicate,
        dp_shard=shard,
        cp=ulysses,
        mesh=mesh,
        dp_mesh=mesh["dp_replicate", "dp_shard"]._flatten("dp"),
        cp_mesh=mesh["ring", "ulysses"]._flatten("cp"),
        # HSDP gets a 2-D mesh of its own: slicing a flattened dimension from the root is deprecated
        fsdp_mesh=init_device_mesh(chosen.type, (replicate, size // replicate), mesh_dim_names=("dp_replicate", "fsdp"))
        if replicate > 1
        else fsdp,
    )


def close_world(world: World) -> None:
    """Leave the process group (a no-op for a world of one).

    The groups go while Python is still whole: each ``DeviceMesh`` keeps its groups in
    ``_pg_registry``, past ``destroy_process_group``, and a gloo group still held when the
    interpreter shuts down aborts its process ("terminate called without an active
    exception"): one 2-process run in twenty-five failed so, after its work was done."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
        for mesh in (world.mesh, world.dp_mesh, world.cp_mesh, world.fsdp_mesh):
            getattr(mesh, "_pg_registry", {}).clear()
