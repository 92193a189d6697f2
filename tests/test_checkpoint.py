"""Checkpoints: every RNG restored, and a state file that would run code is refused."""

import random

import numpy as np
import pytest
import torch

from sara.config.stage1 import Stage1Config
from sara.parallel.world import World
from sara.trainer.checkpoint import TrainState, load_checkpoint, save_checkpoint, trainable_weights

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
