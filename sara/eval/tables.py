"""Tables of evaluation results: plain text for the terminal, rows for the HTML report."""

from __future__ import annotations


def interval_text(summary: dict, digits: int = 3) -> str:
    """``mean [low, high]`` of a bootstrap summary."""
    return f"{summary['mean']:.{digits}f} [{summary['low']:.{digits}f}, {summary['high']:.{digits}f}]"


def summary_rows(summaries: dict[str, dict[str, dict]], metrics: tuple[str, ...]) -> list[list[str]]:
    """One row per named summary (e.g. an arm, or ground truth vs generated), one column per
    metric: mean with its 95 % interval."""
    return [[name, *(interval_text(summary[m]) for m in metrics)] for name, summary in summaries.items()]


def format_summaries(summaries: dict[str, dict[str, dict]], metrics: tuple[str, ...]) -> str:
    """The rows of :func:`summary_rows` as an aligned text table with a header."""
    rows = [["", *metrics], *summary_rows(summaries, metrics)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
