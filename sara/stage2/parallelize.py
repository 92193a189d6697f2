"""``parallelize``: sequence parallelism, then FSDP2, applied to a built Stage 2 model.

Order (as torchtitan applies it): Ulysses on each DiT expert, the gather of projected
tokens over the ``cp`` group, then ``fully_shard`` per Wan block, per expert, per
projector, and last the root. The Wan DiT and the losses know nothing of it; the
generic pieces (world, meshes, collectives, Ulysses attention) are :mod:`sara.parallel`'s.

Every rank of a ``cp`` group computes the full flow loss on the gathered DiT output but only
its share of the alignment pairs (``Stage2Model.forward(batch, align_share=world.cp_share)``);
:func:`sara.parallel.gradients.backward` gives the gradients their scale.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from sara.config.parallel import ParallelConfig
from sara.parallel.collectives import gather_tokens, world_mean
from sara.parallel.context import apply_ulysses
from sara.parallel.precision import param_dtype
from sara.parallel.world import World
from sara.stage2.objective import Stage2Model


def parallelize(model: Stage2Model, world: World, config: ParallelConfig) -> Stage2Model:
    """``model`` sequence-parallel over ``world.cp`` and sharded over ``world.fsdp_mesh``, in
    place; unchanged in a world of one process."""
    if not world.distributed:
        return model
    if world.cp > 1:
        for dit in model.experts.values():
            apply_ulysses(dit, world)
        for projector in model.projectors.values():
            # each rank projects its own tokens; the alignment term needs them all, in order
            projector.register_forward_hook(lambda module, args, out: gather_tokens(out, world.cp_mesh))
    compute = param_dtype(config, world.device)
    # inputs are never cast: σ, its timesteps (σ · 1000: steps of 4 above 512 in bf16) and the
    # latents enter as one process and WanPipeline give them, in fp32
    policy = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32, cast_forward_inputs=False)
    replicated = uncast_parameters(model) if compute != torch.float32 else set()

    def shard(module: nn.Module, reshard: bool = config.reshard_after_forward) -> None:
        fully_shard(
            module, mesh=world.fsdp_mesh, mp_policy=policy, reshard_after_forward=reshard,
            ignored_params=replicated or None,
        )  # fmt: skip

    for dit in model.experts.values():
        for block in dit.blocks:
            shard(block)
        shard(dit)
    for projector in model.projectors.values():
        shard(projector)
    shard(model, reshard=False)  # the root's parameters are gathered again at once in backward
    return model


def uncast_parameters(model: Stage2Model) -> set[nn.Parameter]:
    """The experts' parameters that autocast never casts: the weights of their norms
    (diffusers' fp32 norms, the attention's RMS norms) and the modulation tables added to the
    time embedding (``scale_shift_table``). One process computes with them as stored (an fp32
    master, or diffusers' fp32 copy under a frozen base); gathered in bf16 they would be
    rounded, so they stay whole on every rank instead (12 × width a block), their gradients
    averaged by :func:`sara.parallel.gradients.sync_replicated`. Everything else meets
    autocast, which rounds an fp32 weight to bf16 exactly as FSDP's gather does."""
    norms = (nn.LayerNorm, nn.RMSNorm)
    kept = set()
    for dit in model.experts.values():
        for module in dit.modules():
            if isinstance(module, norms):
                kept |= set(module.parameters(recurse=False))
        kept |= {p for name, p in dit.named_parameters() if name.split(".")[-1] == "scale_shift_table"}
    return kept


def reduce_terms(terms: dict[str, Tensor], world: World) -> dict[str, Tensor]:
    """The step's ``flow`` and ``align`` terms from each rank's: means over data-parallel
    ranks, the alignment shares first summed over their ``cp`` group (the flow term is the
    same on every rank of a group). Collective: every rank calls it, on log steps only."""
    if not world.distributed:
        return terms
    flow, align = world_mean(torch.stack([terms["flow"].float(), terms["align"].float()]))
    return {"flow": flow, "align": align * world.cp}
