"""Figures the reports share."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display here or in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def loss_curves(history: list[dict], keys: tuple[str, ...], path: str | Path) -> Path:
    """The logged ``keys`` of a training history (rows with a ``step``) against the step."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    steps = [r["step"] for r in history]
    for key in keys:
        ax.plot(steps, [r[key] for r in history], label=key)
    ax.set_xlabel("step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
