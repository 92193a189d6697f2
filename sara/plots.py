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
    """The logged ``keys`` of a training history (rows with a ``step``) against the step; a
    key logged on some rows only (held-out figures) is drawn with markers at those rows."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    most = max(sum(key in r for r in history) for key in keys)
    for key in keys:
        rows = [r for r in history if key in r]
        sparse = len(rows) < most
        ax.plot([r["step"] for r in rows], [r[key] for r in rows], marker="o" if sparse else None, label=key)
    ax.set_xlabel("step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
