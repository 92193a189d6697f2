"""``sara data check``: read every clip and mask of a manifest once and report each problem.

Given the window a run will take (``frames`` at ``fps``), clips whose range holds fewer
frames at that rate are named too: training skips them, as other bad samples. What the check
learns of each clip goes to the manifest's facts file, so that runs open no video at start-up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from sara.data.facts import facts_path, write_facts
from sara.data.manifest import Manifest
from sara.data.masks import MaskError, load_mask
from sara.data.video import Span, VideoError, scan_clip

log = logging.getLogger(__name__)


@dataclass
class CheckReport:
    """What a check found: one line per problem, and counts."""

    records: int = 0
    too_short: int = 0  # clips with fewer frames at the run's rate than its window
    entities: int = 0
    without_masks: int = 0  # entities waiting for `sara data masks` (not a problem)
    problems: list[str] = field(default_factory=list)
    bad_records: set[int] = field(default_factory=set)
    spans: dict[int, Span] = field(default_factory=dict)  # record -> its video's span, where it decodes
    facts: Path | None = None  # the facts file written

    def add(self, index: int, line: str) -> None:
        self.problems.append(line)
        self.bad_records.add(index)

    def summary(self) -> str:
        short = f", {self.too_short} too short for the window" if self.too_short else ""
        return (
            f"checked {self.records} records, {self.entities} entities ({self.without_masks} without masks): "
            f"{len(self.problems)} problem(s) in {len(self.bad_records)} record(s){short}"
        )


def _check_record(manifest: Manifest, index: int, report: CheckReport, window: int | None, fps: float | None) -> None:
    record = manifest.records[index]
    where = manifest.describe(index)
    if not record.prompt().strip():
        report.add(index, f"{where}: caption: empty")
    rate = record.fps or fps
    try:
        span = scan_clip(manifest.resolve(record.video), record.start, record.end)
    except VideoError as exc:
        report.add(index, f"{where}: video: {exc}")
        span = None
    else:
        report.spans[index] = span
        seen = span.seen(rate)
        if window is not None and seen < window:
            at = f" at {rate:g} fps" if rate else ""
            report.add(index, f"{where}: video: has {seen} frames{at} in range, fewer than the window of {window}")
            report.too_short += 1
    for number, entity in enumerate(record.entities or []):
        report.entities += 1
        if entity.mask is None:
            report.without_masks += 1
            continue
        try:
            mask = load_mask(manifest.resolve(entity.mask))
        except MaskError as exc:
            report.add(index, f"{where}: entities.{number}.mask: {exc} ({entity.mask})")
            continue
        if span is not None and tuple(mask.shape) != (span.count, *span.size):
            report.add(
                index,
                f"{where}: entities.{number}.mask: shape {tuple(mask.shape)} does not match the video's "
                f"(frames, H, W) {(span.count, *span.size)}",
            )


def check_manifest(
    manifest: Manifest, window: int | None = None, fps: float | None = None, progress: bool = True
) -> CheckReport:
    """Decode every clip fully and load every mask once; collect every problem, and with
    ``window`` the clips that hold fewer than ``window`` frames at ``fps`` (a record's own
    ``fps`` wins; ``None``: the video's rate). The spans of the clips that decode are written
    to the manifest's facts file (:mod:`sara.data.facts`), which datasets then read instead
    of every video."""
    report = CheckReport(records=len(manifest))
    for index in tqdm(range(len(manifest)), desc=f"check {Path(manifest.path).name}", disable=not progress):
        _check_record(manifest, index, report, window, fps)
    try:
        report.facts = write_facts(manifest, [report.spans.get(i) for i in range(len(manifest))])
    except OSError as exc:  # a read-only data set is still checked; runs then probe its videos
        log.warning("%s: cannot be written (%s); runs will probe the videos", facts_path(manifest), exc.strerror)
    return report
