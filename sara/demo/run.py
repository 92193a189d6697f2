"""``sara demo``: the pipeline end to end on generated data, with an HTML report.

Each part writes its files into the run folder and returns a report section; the parts are
the modules of this package, in the order the report shows them.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import torch

from sara.config import DemoConfig, save_config
from sara.demo.data import data_part, masks_part
from sara.demo.ecosystem import ecosystem_part
from sara.demo.evaluation import evaluation_part
from sara.demo.html import Section, table, write_report
from sara.demo.objective import budget_part, objective_part
from sara.demo.parallel import parallel_part
from sara.demo.stage1 import stage1_part
from sara.demo.stage2 import stage2_part

log = logging.getLogger(__name__)

MARKER = ".sara-demo"  # what makes a folder the demo's own, to be emptied by the next run
KEPT = ("models",)  # tiny presets: versioned by their folder names, written once


def _fresh_folder(out: Path) -> Path:
    """``out`` emptied of a previous demo run (its caches would be refused once the code that
    made them changes), keeping the tiny presets; a non-empty folder that is not a demo's is
    an error, never emptied."""
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise ValueError(f"out_dir: {out} holds files of something other than a demo run; choose another folder")
        for item in out.iterdir():
            if item.name in (*KEPT, MARKER):
                continue
            if item.is_dir():
                shutil.rmtree(item)
            else:
                item.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()
    return out


def run_demo(config: DemoConfig) -> Path:
    """Run every demo part into ``config.out_dir``; returns the report's path."""
    out = _fresh_folder(Path(config.out_dir))
    save_config(config, out)
    torch.manual_seed(config.seed)
    seconds: dict[str, float] = {}

    def timed(part, *args):
        """``part(*args)``, its wall time kept for the report's last table."""
        start = time.perf_counter()
        result = part(*args)
        name = part.__name__.removesuffix("_part")
        seconds[name] = time.perf_counter() - start
        log.info(f"demo part {name}: {seconds[name]:.0f} s")
        return result

    data_sections = [timed(data_part, config, out), timed(masks_part, config, out)]
    budget_section, saliencies = timed(budget_part, config, out)
    stages = [
        timed(part, config, out) for part in (stage1_part, stage2_part, evaluation_part, ecosystem_part, parallel_part)
    ]
    sections = [*data_sections, *stages, budget_section, timed(objective_part, config, saliencies)]
    rows = [[name, f"{s:.0f}"] for name, s in seconds.items()] + [["all", f"{sum(seconds.values()):.0f}"]]
    sections.append(Section("Where the time went", table(["part", "seconds"], rows)))
    report = write_report(out / "report.html", "SARA demo", sections)
    log.info(f"report: {report}")
    return report
