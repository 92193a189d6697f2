"""Checkpoints: every RNG restored, and a state file that would run code is refused."""

import random

import numpy as np
import pytest
import torch

from sara.checkpoint import load_checkpoint, save_checkpoint
from sara.config.stage1 import Stage1Config


def _parts():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return model, optimizer, scheduler


def test_a_checkpoint_restores_every_random_stream(tmp_path):
    model, optimizer, scheduler = _parts()
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    np.random.seed(3)
    random.seed(3)
    np.random.normal()  # numpy keeps a cached Gaussian: it must come back too
    folder = save_checkpoint(tmp_path, 7, model, optimizer, scheduler, Stage1Config())
    expected = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    restored = _parts()
    assert load_checkpoint(folder, *restored) == 7
    after = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    assert torch.equal(expected[0], after[0]) and np.array_equal(expected[1], after[1])
    assert expected[2:] == after[2:]
    assert torch.equal(restored[0].weight, model.weight)


class _Payload:
    def __reduce__(self):
        return (print, ("this would have run",))


def test_a_state_file_that_would_run_code_is_refused(tmp_path, capsys):
    model, optimizer, scheduler = _parts()
    folder = save_checkpoint(tmp_path, 1, model, optimizer, scheduler, Stage1Config())
    torch.save({"step": 1, "payload": _Payload()}, folder / "state.pt")
    with pytest.raises(ValueError, match=r"state.pt: refused, it holds more than tensors and plain values"):
        load_checkpoint(folder, *_parts())
    assert "this would have run" not in capsys.readouterr().out
