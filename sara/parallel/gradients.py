"""Gradients of a sharded, sequence-parallel model that also holds whole (replicated) parameters.

**Scale.** Every rank of a ``cp`` group computes the losses that need the whole sequence on
its gathered tokens, and its own share of those split over the group (the alignment pairs);
each rank's parameter gradients are its tokens' contribution, and the exact gradient is
their **sum** over the group and their **mean** over data-parallel ranks. FSDP averages over
its whole mesh (``dp_shard × cp``, and ``dp_replicate`` for HSDP), so :func:`backward`
multiplies the loss by ``cp`` first (gloo refuses the ``PREMUL_SUM`` a divide factor would
need).

**Whole parameters.** Under bf16 compute, :func:`sara.stage2.parallelize.parallelize` leaves the small parameters diffusers
keeps in fp32 (norms, modulation tables) whole on every rank: FSDP neither gathers them in
bf16 nor reduces their gradients. :func:`sync_replicated` averages those gradients as FSDP
averages the others (over every rank of the run, the loss already scaled for sequence
parallelism), and :func:`clip_grad_norm` clips sharded and whole gradients by their one
global norm (``torch.nn.utils.clip_grad_norm_`` refuses a mix of DTensors and tensors).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from sara.parallel.world import World


def sync_replicated(parameters: list[Tensor], world: World) -> None:
    """Average over every rank the gradients of the parameters that are not sharded, in one
    flat all-reduce (nothing to do in one process, or when every parameter is sharded)."""
    if not world.distributed:
        return
    grads = [p.grad for p in parameters if p.grad is not None and not isinstance(p.grad, DTensor)]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    for grad, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        grad.copy_(part.view_as(grad))


def clip_grad_norm(parameters: list[Tensor], max_norm: float) -> Tensor:
    """Scale the gradients so that their global L2 norm is at most ``max_norm``; returns the
    norm before clipping (a plain tensor)."""
    stepped = [p for p in parameters if p.grad is not None]
    if not stepped:
        return torch.zeros(())
    sharded = [p for p in stepped if isinstance(p.grad, DTensor)]
    whole = [p for p in stepped if not isinstance(p.grad, DTensor)]
    norms = []
    if sharded:
        norm = torch.nn.utils.get_total_norm([p.grad for p in sharded])
        norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)
    if whole:
        norms.append(torch.nn.utils.get_total_norm([p.grad for p in whole]))
    total = torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]))
    for group in (sharded, whole):
        if group:
            torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return total


def set_gradient_sync(model: torch.nn.Module, last: bool, mode: str) -> None:
    """Whether the next backward, of a step's last micro-batch or not, reduces gradients over
    the ranks (``parallel.accumulate_sync``): under ``final`` only the last does — FSDP2 keeps
    the others' unsharded and adds them in; under ``every`` each reduce-scatters and HSDP's
    all-reduce between replicas waits for the last. Nothing to do in one process."""
    if not isinstance(model, FSDPModule):
        return
    if mode == "final":
        model.set_requires_gradient_sync(last)
    else:
        model.set_requires_gradient_sync(True)
        model.set_requires_all_reduce(last)


def backward(loss: Tensor, world: World) -> None:
    """``loss.backward()`` with the gradient scale of the module docstring."""
    (loss * world.cp if world.distributed else loss).backward()
