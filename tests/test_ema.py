"""The EMA steps each rank's local shards with foreach ops, and averages as diffusers' EMAModel does."""

import pytest
import torch
from diffusers.training_utils import EMAModel
from distributed import spawn
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from sara.config.parallel import ParallelConfig
from sara.parallel.world import init_world
from sara.trainer.ema import LocalEMA


def _walk(ema_class, parameters: list[torch.nn.Parameter], steps: int = 5) -> list[torch.Tensor]:
    ema = ema_class(parameters, decay=0.9, use_ema_warmup=True)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        with torch.no_grad():
            for p in parameters:
                update = torch.randn(p.shape, generator=g)  # the same on every rank
                p.add_(distribute_tensor(update, p.device_mesh, p.placements) if isinstance(p, DTensor) else update)
        ema.step(parameters)
    return [s.full_tensor() if isinstance(s, DTensor) else s for s in ema.shadow_params]


def _parameters(mesh=None) -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    tensors = [torch.randn(6, 4), torch.randn(3), torch.randn(2, 5)]
    if mesh is not None:
        tensors = [distribute_tensor(t, mesh, [Shard(0)]) for t in tensors]
    return [torch.nn.Parameter(t) for t in tensors]


def test_local_ema_averages_as_diffusers_does():
    expected = _walk(EMAModel, _parameters())
    for found, wanted in zip(_walk(LocalEMA, _parameters()), expected):
        torch.testing.assert_close(found, wanted, rtol=1e-6, atol=1e-7)


def _sharded_walk() -> list[torch.Tensor]:
    world = init_world(ParallelConfig(), "cpu")
    return _walk(LocalEMA, _parameters(world.fsdp_mesh))


@pytest.mark.slow
def test_local_ema_of_sharded_parameters_is_the_one_of_one_process():
    expected = _walk(EMAModel, _parameters())
    for rank in spawn(_sharded_walk, 2):
        for found, wanted in zip(rank, expected):
            torch.testing.assert_close(found, wanted, rtol=1e-6, atol=1e-7)


def test_frozen_parameters_are_refused():
    frozen = torch.nn.Parameter(torch.zeros(2), requires_grad=False)
    with pytest.raises(ValueError, match="trained parameters only"):
        LocalEMA([frozen]).step([frozen])
