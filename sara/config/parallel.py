"""How a run spreads over processes (``parallel:`` in the Stage 1 and Stage 2 configs).

The world of ``torchrun`` (or ``accelerate launch``, or SLURM through ``srun torchrun``) is
``dp_replicate × dp_shard × ulysses`` processes. Every degree left at ``-1`` takes the rest
of the world, so the defaults are plain FSDP over every process, and one process runs
without any of it. ``sara.parallel`` implements it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sara.config.loader import option

PARAM_DTYPES = ("auto", "float32", "bfloat16")
ACCUMULATE_SYNCS = ("final", "every")
# diffusers attention backends the DiT may run (auto: sara.parallel.context.attention_backend)
ATTENTION_BACKENDS = ("auto", "native", "_native_flash", "_native_cudnn", "_native_efficient", "_native_math", "flash")


@dataclass
class ParallelConfig:
    # model replicas that each hold a full sharded copy (HSDP: e.g. one per node); gradients
    # are all-reduced between them
    dp_replicate: int = option(1, ge=1)
    # processes a model's parameters, gradients and optimizer state are sharded over (FSDP2);
    # -1: the world divided by dp_replicate and ulysses
    dp_shard: int = option(-1, ge=-1)
    # sequence-parallel degree of the DiT (Ulysses all-to-all over attention heads): tokens and
    # heads are split over this many processes, which see the same clips
    ulysses: int = option(1, ge=1)
    # the dtype a run computes in, in one process or many: bfloat16 runs the forward under autocast
    # with fp32 masters for what trains, stores frozen weights in it and has FSDP gather in it
    # (gradients are reduced in fp32); auto: bfloat16 on CUDA, float32 on CPU
    param_dtype: str = option("auto", choices=PARAM_DTYPES)
    # free gathered parameters after each block's forward (less memory, one more all-gather
    # in backward)
    reshard_after_forward: bool = True
    # with optim.accumulate above 1, which micro-batches reduce their gradients over the ranks:
    # final — the last of each step alone (one reduce-scatter per FSDP unit a step; until then
    # each rank holds the trained weights' gradients unsharded, in fp32: a full copy); every —
    # each micro-batch reduce-scatters (gradient memory stays sharded), and HSDP all-reduces
    # between replicas after the last only
    accumulate_sync: str = option("final", choices=ACCUMULATE_SYNCS)
    # the DiT's attention kernel (diffusers' dispatcher): auto is _native_flash on CUDA in bf16
    # or fp16 — its backward reuses the saved log-sum-exp, where native's re-runs attention
    # under Ulysses — and native elsewhere; flash needs the flash-attn package
    attention: str = option("auto", choices=ATTENTION_BACKENDS)
