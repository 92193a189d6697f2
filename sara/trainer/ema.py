"""The EMA of the trained weights, stepped on each rank's local shards."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from diffusers.training_utils import EMAModel


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (a view: in-place updates reach the DTensor); a tensor as it is."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


class LocalEMA(EMAModel):
    """diffusers' :class:`EMAModel` (its decay schedule, state dict and ``copy_to``, run once
    at the end), stepped with one foreach update over the local shards. The average is elementwise, so each rank
    needs only its own shards; stepped on FSDP2's DTensors one at a time it would cost
    several DTensor dispatches per parameter every step."""

    @torch.no_grad()
    def step(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        parameters = list(parameters)
        if any(not p.requires_grad for p in parameters):
            raise ValueError("LocalEMA averages trained parameters only: every parameter must require grad")
        self.optimization_step += 1
        self.cur_decay_value = self.get_decay(self.optimization_step)
        shadows = [_local(s) for s in self.shadow_params]
        current = [_local(p) for p in parameters]
        # s ← s − (1 − decay)(s − p), as EMAModel's foreach step computes it
        torch._foreach_sub_(shadows, torch._foreach_sub(shadows, current), alpha=1 - self.cur_decay_value)
