"""A finished or running Stage 1 run folder: its config, latest aligner, and evaluation."""

from __future__ import annotations

import json
from pathlib import Path

from sara.checkpoint import latest_checkpoint, load_weights
from sara.config import load_config
from sara.config.stage1 import Stage1Config
from sara.models.aligner import SemanticAligner
from sara.stage1.evaluate import evaluate, format_metrics
from sara.stage1.features import Stage1Features
from sara.stage1.train import build_aligner, load_features, pick_device


def locate(path: str | Path) -> tuple[Path, Path]:
    """``(run folder, checkpoint folder)`` from either of them."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path.parent.parent, path
    checkpoint = latest_checkpoint(path)
    if checkpoint is None:
        raise ValueError(f"{path}: no checkpoint (neither a run folder with checkpoints/latest nor a checkpoint)")
    return path, checkpoint


def load_run(
    path: str | Path, splits: tuple[str, ...] = ("heldout",), progress: bool = True
) -> tuple[Stage1Config, SemanticAligner, dict[str, Stage1Features]]:
    """The run's config, its aligner with the checkpoint's weights, and the features of ``splits``."""
    run, checkpoint = locate(path)
    config = load_config(Stage1Config, checkpoint / "config.yaml")
    features = load_features(config, splits, progress)
    aligner = build_aligner(config, next(iter(features.values())))
    load_weights(checkpoint, aligner)
    return config, aligner.to(pick_device(config.device)).eval(), features


def evaluate_run(path: str | Path) -> dict[str, float]:
    """Evaluate on the held-out split, print the table, write ``RUN_DIR/eval.json``."""
    run, _ = locate(path)
    config, aligner, features = load_run(path)
    metrics = evaluate(aligner, features["heldout"], pick_device(config.device))
    (run / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(format_metrics(metrics, len(features["heldout"])))
    return metrics
