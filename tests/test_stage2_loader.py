"""Stage 2's loader walks the steps: each step's batch is the batch plan's, read in the step or
ahead by worker processes alike; a resume restarts it at its step."""

import pytest
import torch

from sara.config.stage2 import Stage2DataConfig
from sara.stage2.loader import StepBatches, StepLoader
from sara.trainer.batches import BucketSteps


class Rows:
    """A reader that returns what it was asked for."""

    def load(self, rows: list[int], epoch: int = 0) -> dict:
        return {"rows": torch.tensor(rows), "epoch": torch.tensor(epoch)}


def _loader(workers: int, steps: int = 10) -> tuple[StepLoader, BucketSteps]:
    steps_of = BucketSteps([0] * 6 + [1] * 6, 4, seed=3)  # 12 clips in two buckets, global batch 4: 2 steps an epoch
    batches = StepBatches(Rows(), steps_of, slice(2, 4))  # data-parallel rank 1 of 2
    return StepLoader(batches, steps, Stage2DataConfig(num_workers=workers, prefetch=2), torch.device("cpu")), steps_of


@pytest.mark.parametrize("workers", [0, 2])
def test_each_step_gets_its_rows_of_the_plan_in_its_epoch(workers):
    loader, steps_of = _loader(workers)
    for step in range(10):
        batch = loader(step)
        assert batch["rows"].tolist() == steps_of(step)[2:4] and batch["epoch"].item() == step // 2
    assert loader.served == 10 and loader.waited > 0
    with pytest.raises(IndexError, match="step 10: past the run's optim.steps = 10"):
        loader(10)


def test_a_resume_restarts_the_loader_at_its_step():
    loader, steps_of = _loader(2)
    assert loader(0)["rows"].tolist() == steps_of(0)[2:4]
    assert loader(7)["rows"].tolist() == steps_of(7)[2:4]  # not step 1: the loader starts again at 7
    assert loader(8)["rows"].tolist() == steps_of(8)[2:4]
