"""Where the figures of a run go: ``history.json``, the tracker (TensorBoard, W&B or none:
:mod:`sara.trainer.trackers`) and the progress bar.

Only the main process (rank 0) writes; the others get a logger that does nothing, so the
loop is the same on every rank.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sara.config.tracking import LoggingConfig
from sara.files import write_text_atomic
from sara.run_dir import RunDir
from sara.trainer.trackers import NoTracker, open_tracker


def load_history(run: Path, start: int) -> list[dict]:
    """Logged rows up to ``start`` (a resumed run continues the same curve)."""
    path = RunDir(run).history
    rows = json.loads(path.read_text()) if path.is_file() else []
    return [r for r in rows if r["step"] <= start]


class Logger:
    """History rows, the tracker's scalars (``train/*``, ``val/*``, ``eval/*``) and videos,
    and a tqdm bar showing ``shown``. ``settings``: the run's config, as the tracker records it."""

    def __init__(
        self,
        run: Path,
        start: int,
        total: int,
        desc: str,
        shown: tuple[str, ...],
        enabled: bool,
        progress: bool,
        tracking: LoggingConfig,
        settings: dict[str, Any],
    ):
        self.run, self.shown, self.enabled = run, shown, enabled
        self.history = load_history(run, start) if enabled else []
        self.tracker = open_tracker(tracking, run, settings) if enabled else NoTracker()
        self.bar = tqdm(desc=desc, initial=start, total=total, disable=not (enabled and progress))

    def advance(self) -> None:
        self.bar.update()

    def log(self, row: dict) -> None:
        """One log point: ``row`` holds ``step`` and figures."""
        if not self.enabled:
            return
        self.history.append(row)
        self.scalars("train", {k: v for k, v in row.items() if k != "step"}, row["step"])
        self.bar.set_postfix({k: f"{row[k]:.4f}" for k in self.shown if k in row})

    def merge(self, step: int, values: dict[str, float]) -> None:
        """Figures made after the log point of ``step`` (held-out losses): into that step's
        history row and TensorBoard's ``val/*``."""
        if not self.enabled:
            return
        if not self.history or self.history[-1]["step"] != step:
            raise RuntimeError(f"step {step}: figures to merge, but no log point at that step")
        self.history[-1].update(values)
        self.scalars("val", {k.removeprefix("val_"): v for k, v in values.items()}, step)

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        self.tracker.scalars({f"{prefix}/{key}": value for key, value in values.items()}, step)

    def videos(self, tag: str, paths: list[Path], step: int) -> None:
        self.tracker.videos(tag, [p for p in paths if p.suffix == ".mp4"], step)

    def save(self) -> None:
        """Write ``history.json`` (atomically); called before each checkpoint, so rows past
        a checkpoint are dropped on resume."""
        if self.enabled:
            write_text_atomic(RunDir(self.run).history, json.dumps(self.history))

    def close(self) -> None:
        self.bar.close()
        self.tracker.close()
