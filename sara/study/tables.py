"""The tables of the toy reproduction: every seed, per-arm means with hierarchical bootstrap
intervals (seeds, then prompts), paired differences against ``sft``, ``trd`` and ``moalign``,
and each arm's mean at every scoring point. An ordering is claimed only where a paired
interval excludes zero."""

from __future__ import annotations

import numpy as np

from sara.eval.tables import interval_text
from sara.shapes.metric import METRICS
from sara.stats import excludes_zero, hierarchical

BASELINES = ("sft", "trd", "moalign")


def scores_table(results: dict, teacher: str, seeds: list[int], arm: str, metric: str) -> np.ndarray:
    """``[seeds, prompts]`` of one metric for one arm."""
    return np.array([[row[metric] for row in results[(teacher, seed, arm)]] for seed in seeds])


def _summary(table: np.ndarray) -> dict:
    """The hierarchical summary of ``[seeds, prompts]`` scores, and each seed's mean."""
    return hierarchical(table) | {"seeds": table.mean(axis=1).tolist()}


def study_tables(results: dict, teachers: list[str], seeds: list[int], arms: list[str]) -> dict:
    """Per teacher: ``arms`` (per arm and metric: the hierarchical summary and each seed's
    mean) and ``paired`` (per ``arm − baseline`` and metric: the summary of the differences)."""
    tables = {}
    for teacher in teachers:
        per_arm = {arm: {m: _summary(scores_table(results, teacher, seeds, arm, m)) for m in METRICS} for arm in arms}
        paired = {}
        for base in (b for b in BASELINES if b in arms):
            # each pair once: no `sft − trd` beside `trd − sft`
            for arm in (a for a in arms if a != base and a not in BASELINES[: BASELINES.index(base)]):
                paired[f"{arm} − {base}"] = {
                    m: hierarchical(
                        scores_table(results, teacher, seeds, arm, m) - scores_table(results, teacher, seeds, base, m)
                    )
                    for m in METRICS
                }
        tables[teacher] = {"arms": per_arm, "paired": paired}
    return tables


def curves(by_point: dict[int, dict], teachers: list[str], seeds: list[int], arms: list[str]) -> dict:
    """Per teacher, arm and metric: the hierarchical summary at each point (in point order)."""
    points = sorted(by_point)
    return {
        teacher: {
            arm: {m: [hierarchical(scores_table(by_point[p], teacher, seeds, arm, m)) for p in points] for m in METRICS}
            for arm in arms
        }
        for teacher in teachers
    }


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def format_study(tables: dict, seeds: list[int], reference: dict[str, dict]) -> str:
    """Markdown: per teacher, the arms table below the ``reference`` rows (name -> per-metric
    summary: the metric's ceiling, the base), every seed's ``all``, and the paired differences
    (``*``: the 95 % interval excludes zero)."""
    lines = []
    for teacher, table in tables.items():
        lines += [f"#### Teacher: {teacher}", "", "Mean [95 % interval] over seeds and prompts:", ""]
        lines += [_row(["arm", *METRICS]), _row(["---"] * (len(METRICS) + 1))]
        rows = reference | table["arms"]
        lines += [_row([name, *(interval_text(row[m]) for m in METRICS)]) for name, row in rows.items()]
        lines += ["", "`all` per seed:", "", _row(["arm", *(f"seed {s}" for s in seeds)])]
        lines += [_row(["---"] * (len(seeds) + 1))]
        lines += [_row([arm, *(f"{v:.3f}" for v in row["all"]["seeds"])]) for arm, row in table["arms"].items()]
        if table["paired"]:
            lines += ["", "Paired differences (same seed, prompt and noise; `*`: interval excludes 0):", ""]
            lines += [_row(["difference", *METRICS]), _row(["---"] * (len(METRICS) + 1))]
            for name, row in table["paired"].items():
                cells = [interval_text(row[m]) + (" *" if excludes_zero(row[m]) else "") for m in METRICS]
                lines.append(_row([name, *cells]))
        lines.append("")
    return "\n".join(lines)


def format_curves(curve: dict, points: list[int], metrics: tuple[str, ...] = ("binding", "all")) -> str:
    """Markdown: per teacher, each arm's mean of ``metrics`` at every point (``binding / all``)."""
    lines = []
    for teacher, arms in curve.items():
        lines += [f"#### Teacher: {teacher} ({' / '.join(metrics)})", ""]
        lines += [_row(["arm", *(f"step {p}" for p in points)]), _row(["---"] * (len(points) + 1))]
        for arm, by_metric in arms.items():
            cells = [" / ".join(f"{by_metric[m][i]['mean']:.3f}" for m in metrics) for i in range(len(points))]
            lines.append(_row([arm, *cells]))
        lines.append("")
    return "\n".join(lines)
