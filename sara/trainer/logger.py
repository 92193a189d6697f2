"""Where the figures of a run go: ``history.json``, TensorBoard and the progress bar.

Only the main process (rank 0) writes; the others get a logger that does nothing, so the
loop is the same on every rank.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from sara.files import write_text_atomic


def load_history(run: Path, start: int) -> list[dict]:
    """Logged rows up to ``start`` (a resumed run continues the same curve)."""
    path = run / "history.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    return [r for r in rows if r["step"] <= start]


class Logger:
    """History rows, TensorBoard scalars (``train/*``, ``eval/*``) and a tqdm bar showing ``shown``."""

    def __init__(
        self, run: Path, start: int, total: int, desc: str, shown: tuple[str, ...], enabled: bool, progress: bool
    ):
        self.run, self.shown, self.enabled = run, shown, enabled
        self.history = load_history(run, start) if enabled else []
        self.writer = SummaryWriter(run / "tensorboard") if enabled else None
        self.bar = tqdm(desc=desc, initial=start, total=total, disable=not (enabled and progress))

    def advance(self) -> None:
        self.bar.update()

    def log(self, row: dict) -> None:
        """One log point: ``row`` holds ``step`` and figures."""
        if not self.enabled:
            return
        self.history.append(row)
        for key, value in row.items():
            if key != "step":
                self.writer.add_scalar(f"train/{key}", value, row["step"])
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
        if self.enabled:
            for key, value in values.items():
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def save(self) -> None:
        """Write ``history.json`` (atomically); called before each checkpoint, so rows past
        a checkpoint are dropped on resume."""
        if self.enabled:
            write_text_atomic(self.run / "history.json", json.dumps(self.history))

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
