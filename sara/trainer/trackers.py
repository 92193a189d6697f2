"""Experiment trackers: where a run's scalars and validation videos go (``logging.tracker``).

``tensorboard`` writes ``RUN_DIR/tensorboard`` (videos as a strip of frames: TensorBoard's
own video panel needs moviepy); ``wandb`` logs to a Weights & Biases run whose id is kept in
``RUN_DIR/wandb_id``, so a resumed training run continues the same W&B run (videos as
playable mp4); ``none`` keeps ``history.json`` and the bar only. Only rank 0 opens one.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Protocol

from sara.config.tracking import LoggingConfig
from sara.run_dir import RunDir


class Tracker(Protocol):
    def scalars(self, values: dict[str, float], step: int) -> None:
        """Figures named ``group/name`` (``train/loss``, ``val/flow``) at ``step``."""

    def videos(self, tag: str, paths: list[Path], step: int) -> None:
        """Video files (mp4) under ``tag`` at ``step``."""

    def close(self) -> None: ...


class NoTracker:
    def scalars(self, values: dict[str, float], step: int) -> None:
        pass

    def videos(self, tag: str, paths: list[Path], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker:
    def __init__(self, run: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(RunDir(run).tensorboard)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def videos(self, tag: str, paths: list[Path], step: int) -> None:
        from sara.data.video import read_video
        from sara.data.visualize import strip

        for index, path in enumerate(paths):
            self.writer.add_image(f"{tag}/{index}", strip(read_video(path).numpy()), step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, run: Path, config: LoggingConfig, settings: dict[str, Any]):
        try:
            import wandb
        except ImportError:
            raise ImportError("logging.tracker: wandb needs the wandb package (pip install wandb)") from None
        id_file = run / "wandb_id"
        if not id_file.is_file():
            id_file.write_text(uuid.uuid4().hex[:16] + "\n")
        self.wandb = wandb
        self.run = wandb.init(
            project=config.project, name=config.name or run.name, id=id_file.read_text().strip(), resume="allow",
            dir=str(run), mode=config.mode, config=settings,
        )  # fmt: skip

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def videos(self, tag: str, paths: list[Path], step: int) -> None:
        self.run.log({tag: [self.wandb.Video(str(p), format="mp4", caption=p.stem) for p in paths]}, step=step)

    def close(self) -> None:
        self.run.finish()


def open_tracker(config: LoggingConfig, run: Path, settings: dict[str, Any]) -> Tracker:
    """The tracker ``config.tracker`` names for the run folder ``run``; ``settings``: the run's config."""
    if config.tracker == "wandb":
        return WandbTracker(run, config, settings)
    if config.tracker == "tensorboard":
        return TensorBoardTracker(run)
    return NoTracker()
