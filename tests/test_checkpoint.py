"""Checkpoints: every RNG restored, a state file that would run code refused, background saves
published once written and their gloo group made at start-up."""

import random
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from distributed import spawn
from references import save_checkpoint, trainable_weights

from sara.config.parallel import ParallelConfig
from sara.config.stage1 import Stage1Config
from sara.parallel.world import World, init_world
from sara.trainer.checkpoint import TrainState, latest_checkpoint, load_checkpoint
from sara.trainer.loop import LoopPlan, run_loop

ONE = World(rank=0, size=1, device=torch.device("cpu"))


def _parts():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model[0].requires_grad_(False)  # frozen: the base model's, not the checkpoint's
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return TrainState(model, optimizer, scheduler)


def test_a_checkpoint_restores_every_random_stream(tmp_path):
    state = _parts()
    state.model(torch.randn(4, 3)).sum().backward()
    state.optimizer.step()
    np.random.seed(3)
    random.seed(3)
    np.random.normal()  # numpy keeps a cached Gaussian: it must come back too
    folder = save_checkpoint(tmp_path, 7, state, Stage1Config(), ONE)
    expected = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    restored = _parts()
    assert load_checkpoint(folder, restored, ONE) == 7
    after = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    assert torch.equal(expected[0], after[0]) and np.array_equal(expected[1], after[1])
    assert expected[2:] == after[2:]
    assert torch.equal(restored.model[1].weight, state.model[1].weight)
    moments = [o.optimizer.state_dict()["state"][0]["exp_avg"] for o in (state, restored)]
    assert torch.equal(*moments) and moments[0].abs().sum() > 0
    assert set(trainable_weights(folder)) == {"1.weight", "1.bias"}  # the frozen layer is not copied


class _Payload:
    def __reduce__(self):
        return (print, ("this would have run",))


def test_a_state_file_that_would_run_code_is_refused(tmp_path, capsys):
    folder = save_checkpoint(tmp_path, 1, _parts(), Stage1Config(), ONE)
    torch.save({"step": 1, "payload": _Payload()}, folder / "train.pt")
    with pytest.raises(ValueError, match=r"train.pt: refused, it holds more than tensors and plain values"):
        load_checkpoint(folder, _parts(), ONE)
    assert "this would have run" not in capsys.readouterr().out


def _stepper(state: TrainState):
    def step(index: int) -> dict[str, torch.Tensor]:
        loss = state.model(torch.randn(4, 3)).square().mean()
        loss.backward()
        state.optimizer.step()
        state.optimizer.zero_grad()
        return {"loss": loss.detach()}

    return step


def _reduce(figures: dict[str, torch.Tensor]) -> dict[str, float]:
    return {"loss": figures["loss"].item()}


def test_an_async_checkpoint_is_published_as_soon_as_every_shard_is_written(tmp_path):
    """Steps 4 and 5 wait until the step-3 shards are on disk (DCP writes `.metadata` last):
    the checkpoint is `latest` before step 6 begins, not only when step 6's own begins."""
    state, seen = _parts(), {}
    step = _stepper(state)
    checkpoints = tmp_path / "checkpoints"

    def on_disk() -> bool:  # the partial folder is renamed once published
        partial = checkpoints / "step-0000003.partial" / "state" / ".metadata"
        return partial.exists() or (checkpoints / "step-0000003").exists()

    def waiting(index: int) -> dict[str, torch.Tensor]:
        deadline = time.monotonic() + 60
        while index in (3, 4) and not on_disk():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        seen[index] = latest_checkpoint(tmp_path)
        return step(index)

    plan = LoopPlan(7, 7, 3, "test", ("loss",), async_save=True)
    run_loop(tmp_path, ONE, state, Stage1Config(), plan, 0, waiting, _reduce, progress=False)
    assert seen[3] is None  # begun at step 3's end, written in the background
    assert seen[5].name == "step-0000003"  # published at step 4's or 5's end, before step 6 runs
    assert latest_checkpoint(tmp_path).name == "step-0000007"


def _loop_where_gloo_cannot_start(out: str) -> dict:
    world = init_world(ParallelConfig(), "cpu")
    state, calls = _parts(), []
    step = _stepper(state)
    plan = LoopPlan(4, 1, 2, "test", ("loss",), async_save=True)
    with mock.patch("sara.trainer.checkpoint.dist.new_group", side_effect=RuntimeError("gloo: no usable interface")):
        try:
            run_loop(Path(out), world, state, Stage1Config(), plan, 0, lambda i: calls.append(i) or step(i), _reduce)
        except RuntimeError as exc:
            return {"steps": calls, "failure": str(exc)}
    return {"steps": calls, "failure": None}


@pytest.mark.slow
def test_the_background_saves_group_is_made_before_the_first_step(tmp_path):
    """A network setting gloo cannot use fails a run with async_save at start-up, not at its
    first checkpoint hours later."""
    for result in spawn(_loop_where_gloo_cannot_start, 2, str(tmp_path)):
        assert result == {"steps": [], "failure": "gloo: no usable interface"}
