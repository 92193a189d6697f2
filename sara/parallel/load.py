"""Weights into a sharded model without a full copy on every rank.

Rank 0 alone loads the folder's weights (and initialises what is new: projectors,
adapters) on the CPU; every rank builds the same modules on the meta device, shards them
(``parallelize``), allocates only its shards (``to_empty``), and receives them from rank 0
(``set_model_state_dict(..., broadcast_from_rank0=True)``: one tensor at a time, each rank
keeping its slice). Buffers are not sharded: rank 0 broadcasts them whole — among them
the non-persistent rotary tables, which no state dict carries and ``to_empty`` leaves
uninitialised.
"""

from __future__ import annotations

import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

from sara.parallel.world import World

FROM_RANK0 = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)


def load_from_rank0(model: nn.Module, source: nn.Module | None, world: World) -> nn.Module:
    """Fill ``model`` (built on meta, already sharded) with ``source``'s weights and buffers;
    ``source`` is the unsharded CPU model on rank 0 and ``None`` elsewhere."""
    model.to_empty(device=world.device)
    set_model_state_dict(model, source.state_dict() if world.is_main else {}, options=FROM_RANK0)
    reference = dict(source.named_buffers()) if world.is_main else {}
    for name, buffer in model.named_buffers():
        if world.is_main:
            buffer.copy_(reference[name])
        dist.broadcast(buffer, src=0)
    return model
