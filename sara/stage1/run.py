"""A finished or running Stage 1 run folder: its config, latest aligner, and evaluation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sara.config import load_config
from sara.config.stage1 import Stage1Config
from sara.device import pick_device
from sara.models.aligner import SemanticAligner
from sara.run_dir import CheckpointDir, RunDir
from sara.stage1.evaluate import evaluate, format_metrics
from sara.stage1.features import Stage1Features
from sara.stage1.saliency import load_aligner, locate
from sara.stage1.train import load_features

log = logging.getLogger(__name__)


def load_run(
    path: str | Path, splits: tuple[str, ...] = ("heldout",), progress: bool = True
) -> tuple[Stage1Config, SemanticAligner, dict[str, Stage1Features]]:
    """The run's config, its aligner with the checkpoint's weights, and the features of ``splits``."""
    _, checkpoint = locate(path)
    config = load_config(Stage1Config, CheckpointDir(checkpoint).config)
    aligner = load_aligner(checkpoint, config.models.aligner).to(pick_device(config.device))
    return config, aligner, load_features(config, splits, progress)


def evaluate_run(path: str | Path) -> dict[str, float]:
    """Evaluate on the held-out split, log the table, write ``RUN_DIR/eval.json``."""
    run, _ = locate(path)
    config, aligner, features = load_run(path)
    metrics = evaluate(aligner, features["heldout"], pick_device(config.device))
    RunDir(run).eval.write_text(json.dumps(metrics, indent=2) + "\n")
    log.info(format_metrics(metrics, features["heldout"]))
    return metrics
