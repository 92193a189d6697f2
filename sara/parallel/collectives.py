"""The collectives a sequence-parallel step needs, each with the backward it must have.

Losses never see a process group (``sara.losses`` stays pure): the parallel layer gathers
tensors before them and reduces the figures after.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from torch import Tensor
from torch.distributed.device_mesh import DeviceMesh

from sara.parallel.world import World


def gather_tokens(x: Tensor, mesh: DeviceMesh) -> Tensor:
    """``[B, N/P, D]`` on each of the ``P`` ranks of ``mesh`` -> ``[B, N, D]`` in rank order.

    The backward is a sum reduce-scatter: each rank's slice receives the gradient that
    *every* rank's use of the gathered tensor sends it. That is the exact gradient when the
    ranks compute disjoint shares of one loss (the parts of ``trd_loss``), and ``P`` times
    it when they all compute the same loss — which is why each rank computes only its part.
    ``wait_tensor`` (not ``.wait()``, which detaches) keeps the graph.
    """
    gathered = funcol.wait_tensor(funcol.all_gather_single_autograd(x.contiguous(), gather_dim=1, group=mesh))
    # wait_tensor hands back a view; as a module output FSDP would have to warn about in-place
    # use of it, so the (small: B × N × D) result is materialised
    return gathered.clone()


def world_mean(values: Tensor) -> Tensor:
    """Mean of a tensor over every rank of the run (a copy, detached); for logging only."""
    values = values.detach().clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()


def world_max(value: Tensor, world: World) -> Tensor:
    """The largest ``value`` over every rank (itself in a world of one); for logging only."""
    if not world.distributed:
        return value
    value = value.detach().clone().to(world.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value.cpu()


def gather_rows(x: Tensor, counts: list[int], world: World) -> Tensor:
    """``[counts[r], ...]`` on each rank ``r`` of the data-parallel group -> ``[Σ counts, ...]``
    in rank order, with a backward (sum reduce-scatter) so the rows keep their gradients.
    Ranks may hold different numbers of rows: each pads to the largest, and the padding
    is cut away after the gather."""
    if not world.distributed:
        return x
    most = max(counts)
    padded = torch.cat([x, x.new_zeros(most - len(x), *x.shape[1:])]) if len(x) < most else x
    gathered = funcol.wait_tensor(
        funcol.all_gather_single_autograd(padded.contiguous(), gather_dim=0, group=world.dp_mesh)
    )
    return torch.cat([gathered[r * most : r * most + n] for r, n in enumerate(counts)])


def average_gradients(parameters: list[Tensor], world: World) -> None:
    """Data parallelism for a small replicated model: every gradient becomes its mean over
    the data-parallel ranks, in one flat all-reduce."""
    if not world.distributed:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=world.dp_mesh.get_group())
    flat /= world.dp_size
    for grad, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        grad.copy_(part.view_as(grad))


def share_in_group(tensors: dict[str, Tensor] | None, world: World) -> dict[str, Tensor]:
    """``tensors`` of the first rank of each sequence-parallel group, on every rank of it: work
    the group would repeat (encoding the same clips) is done once and sent. The first rank
    passes its tensors, the others ``None``; the names, shapes and dtypes go first, then one
    broadcast a tensor."""
    if world.cp == 1:
        return tensors
    group = world.cp_mesh.get_group()
    source = dist.get_global_rank(group, 0)
    layout = [None if tensors is None else [(k, tuple(v.shape), v.dtype) for k, v in tensors.items()]]
    dist.broadcast_object_list(layout, src=source, group=group, device=world.device)
    shared = {}
    for name, shape, dtype in layout[0]:
        tensor = (
            tensors[name].contiguous() if tensors is not None else torch.empty(shape, dtype=dtype, device=world.device)
        )
        dist.broadcast(tensor, src=source, group=group)
        shared[name] = tensor
    return shared
