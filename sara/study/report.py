"""What `sara repro study` writes: ``results.json``, ``table.md``, ``curves.png`` (score against
continual step, per arm) and ``report.html`` (the tables, the figure, each arm's frames)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sara.config.repro import ReproConfig
from sara.data.manifest import load_manifest
from sara.plots import pyplot
from sara.shapes.metric import METRICS, score_manifest
from sara.stats import summarise
from sara.study.base import format_gate
from sara.study.run import SETS, Results, prompt_sets, run_folder, scoring_points, set_points
from sara.study.tables import curves, format_curves, format_study, study_tables

SET_TITLES = {"seen": "in-distribution prompts (seen colour–shape pairs)", "unseen": "unseen colour–shape pairs"}
FIGURE_METRICS = ("binding", "all")


def figure(curve: dict, points: dict[str, list[int]], path: Path) -> Path:
    """Rows: prompt set × metric; columns: teacher; one line per arm with its 95 % band at each
    of the set's ``points``."""
    plt = pyplot()
    rows = [(name, m) for name in curve for m in FIGURE_METRICS]
    teachers = list(next(iter(curve.values())))
    fig, axes = plt.subplots(len(rows), len(teachers), figsize=(4 * len(teachers), 2.4 * len(rows)), squeeze=False)
    for r, (name, metric) in enumerate(rows):
        for c, teacher in enumerate(teachers):
            ax = axes[r][c]
            for arm, by_metric in curve[name][teacher].items():
                line = by_metric[metric]
                ax.plot(points[name], [s["mean"] for s in line], marker="o", label=arm)
                ax.fill_between(points[name], [s["low"] for s in line], [s["high"] for s in line], alpha=0.15)
            ax.set_title(f"{teacher}, {name}: {metric}", fontsize=9)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("continual step")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _frames(config: ReproConfig, teacher: str, seed: int) -> list[np.ndarray]:
    """Rows of frames of the first unseen prompt: ground truth, the base, each arm at the last point."""
    from sara.data.video import decode_clip
    from sara.data.visualize import strip

    def row(path: Path) -> np.ndarray:
        return strip(decode_clip(path, None, None).frames.permute(0, 2, 3, 1).numpy(), count=9)

    manifest, last = load_manifest(prompt_sets(config)["unseen"]), scoring_points(config)[-1]
    base = Path(config.out_dir) / "base-samples" / "unseen" / "videos"
    first = sorted(base.glob("*.mp4"))[0].name  # the first prompt's video, named alike in every folder
    rows = [row(manifest.resolve(manifest.records[0].video)), row(base / first)]
    for arm in config.arms:
        rows.append(
            row(run_folder(config, teacher, seed, arm) / "points" / f"step-{last}" / "unseen" / "videos" / first)
        )
    return rows


def write_study(config: ReproConfig, gate: dict, results: Results, seconds: float) -> Path:
    """Write the study's files into its folder; returns the table's path."""
    from sara.data.visualize import save_png
    from sara.demo.html import Section, image, paragraph, preformatted, write_report

    out, points = Path(config.out_dir), {name: set_points(config, name) for name in SETS}
    last = points["seen"][-1]
    args = (config.teachers, config.seeds, config.arms)
    finals = {name: study_tables(results[name][last], *args) for name in SETS}
    curve = {name: curves(results[name], *args) for name in SETS}
    reference = {
        name: {
            "ground truth": summarise(
                score_manifest(load_manifest(prompt_sets(config)[name]), progress=False), METRICS
            ),
            "base (step 0)": summarise(
                results[name][0][(config.teachers[0], config.seeds[0], config.arms[0])], METRICS
            ),
        }
        for name in SETS
    }
    (out / "results.json").write_text(json.dumps({"base": gate, "final": finals, "curves": curve}, indent=1) + "\n")
    header = (
        f"{len(config.arms)} arms × {len(config.seeds)} seeds × {len(config.teachers)} teacher(s), continual "
        f"training from the base for {last} steps, scored on "
        f"{len(results['seen'][last][(config.teachers[0], config.seeds[0], config.arms[0])])} in-distribution "
        f"prompts at steps {', '.join(map(str, points['seen']))} and on {config.prompts} unseen-pair prompts at "
        f"steps {', '.join(map(str, points['unseen']))}; wall time {seconds / 60:.1f} min."
    )
    parts = [header, "", "### The base", "", "```", format_gate(gate), "```", ""]
    for name in SETS:
        parts += [f"### Step {last}, {SET_TITLES[name]}", "", format_study(finals[name], config.seeds, reference[name])]
    for name in SETS:
        parts += [f"### By continual step, {SET_TITLES[name]}", "", format_curves(curve[name], points[name])]
    text = "\n".join(parts)
    (out / "table.md").write_text(text)
    plot = figure(curve, points, out / "curves.png")
    teacher, seed = config.teachers[-1], config.seeds[0]
    frames = save_png(out / "frames.png", np.concatenate(_frames(config, teacher, seed)))
    order = ", ".join(["ground truth", "base", *config.arms])
    sections = [
        Section("Results", paragraph(header) + preformatted(text)),
        Section("Score by continual step", image(plot, "score by continual step per arm")),
        Section(
            "Samples",
            paragraph(f"The first unseen-pair prompt ({teacher}, seed {seed}, step {last}), one row each: {order}.")
            + image(frames, "frames per arm"),
        ),
    ]
    write_report(out / "report.html", "SARA toy reproduction: continual training from the base", sections)
    return out / "table.md"
