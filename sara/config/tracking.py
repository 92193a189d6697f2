"""Typed config of where a run's figures go besides ``history.json``: the ``logging`` key of both stages."""

from __future__ import annotations

from dataclasses import dataclass

from sara.config.loader import option

TRACKERS = ("tensorboard", "wandb", "none")


@dataclass
class LoggingConfig:
    # tensorboard: RUN_DIR/tensorboard; wandb (pip install wandb): a W&B run, resumed with
    # the training run; none: history.json and the bar only
    tracker: str = option("tensorboard", choices=TRACKERS)
    project: str = "sara"  # wandb: the project
    name: str | None = None  # wandb: the run's name; null: the run folder's name
    mode: str = option("online", choices=("online", "offline"))  # wandb: offline writes locally (`wandb sync` later)
