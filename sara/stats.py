"""Means with bootstrap 95 % confidence intervals, flat (over videos) and hierarchical
(over seeds, then prompts within each seed), for scores and paired differences."""

from __future__ import annotations

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


def interval(samples: np.ndarray) -> tuple[float, float]:
    """The central ``LEVEL`` percentile interval of bootstrap means ``[R]``."""
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap(values: np.ndarray, seed: int = 0) -> dict:
    """Mean of ``values`` ``[n]`` and its percentile bootstrap interval (videos resampled)."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(len(values), size=(RESAMPLES, len(values)))].mean(axis=1)  # (R,)
    low, high = interval(means)
    return {"mean": float(values.mean()), "low": low, "high": high, "n": len(values)}


def hierarchical(table: np.ndarray, seed: int = 0) -> dict:
    """Mean of ``table`` ``[seeds, prompts]`` with a two-level bootstrap: seeds drawn with
    replacement, then within each drawn seed its prompts. With one seed it is the flat
    bootstrap over prompts. For paired differences pass the table of differences."""
    table = np.asarray(table, dtype=float)
    seeds, prompts = table.shape
    rng = np.random.default_rng(seed)
    rows = rng.integers(seeds, size=(RESAMPLES, seeds))  # (R, S) seeds drawn
    columns = rng.integers(prompts, size=(RESAMPLES, seeds, prompts))  # (R, S, P) prompts drawn per seed
    means = table[rows[..., None], columns].mean(axis=(1, 2))  # (R,)
    low, high = interval(means)
    return {"mean": float(table.mean()), "low": low, "high": high, "n": int(table.size)}


def summarise(results: list[dict], metrics: tuple[str, ...], seed: int = 0) -> dict[str, dict]:
    """Per metric, the mean over ``results`` (one dict per video) with its interval."""
    return {m: bootstrap(np.array([r[m] for r in results]), seed) for m in metrics}


def excludes_zero(summary: dict) -> bool:
    """Whether an interval lies wholly on one side of zero (an ordering can be claimed)."""
    return summary["low"] > 0 or summary["high"] < 0
