"""Every test starts from the same seed; shapes worlds are synthesised once a session."""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sara.shapes.render import SynthSpec, synthesize


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shapes_world(tmp_path_factory) -> Callable[..., Path]:
    """``shapes_world(num=…, seed=…, …)``: the folder of that world, written on first use.

    Tests only read these folders (a test that breaks records copies the manifest first), so
    modules asking for the same spec share one synthesis."""
    made: dict[SynthSpec, Path] = {}

    def world(**spec) -> Path:
        key = SynthSpec(**spec)
        if key not in made:
            made[key] = tmp_path_factory.mktemp("shapes")
            synthesize(key, made[key], workers=1, progress=False)
        return made[key]

    return world
