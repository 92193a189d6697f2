"""The facts of a manifest's clips, written once so that a run's start-up opens no video.

A dataset places each clip in a bucket from its frame size and, when the buckets differ in
length, from how many frames its time range holds at the run's rate. Read from every
video's header and packet timeline, that is minutes per process at 100 k clips (and again
on every rank, at every start). ``sara data check`` (which decodes every clip) and ``sara
data import`` write each readable record's :class:`~sara.data.video.Span` beside the
manifest, in ``NAME.facts.json``; a dataset reads that file alone and probes only the records
it does not hold.

The file is columnar — ``video``, ``start``, ``end`` (the key: a record's video as the
manifest writes it and its range) and ``height``, ``width``, ``first``, ``last``, ``count`` —
so a hundred thousand records parse in a fraction of a second. A record edited to another
video or range is simply not found, and probed; rerun ``sara data check`` after replacing
a video file in place.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sara.data.manifest import Manifest, Record
from sara.data.video import Span
from sara.files import write_text_atomic

log = logging.getLogger(__name__)

Key = tuple[str, float | None, float | None]  # (video, start, end)
VERSION = 1
COLUMNS = ("video", "start", "end", "height", "width", "first", "last", "count")


def facts_path(manifest: Manifest) -> Path:
    """``NAME.facts.json`` beside the manifest ``NAME.jsonl``."""
    return manifest.path.with_name(f"{manifest.path.stem}.facts.json")


def record_key(record: Record) -> Key:
    return (record.video, record.start, record.end)


def write_facts(manifest: Manifest, spans: list[Span | None]) -> Path:
    """Write the span of each record (``None``: unreadable, left out), atomically."""
    rows = {record_key(r): s for r, s in zip(manifest.records, spans, strict=True) if s is not None}
    values = [(*k, *s.size, s.first, s.last, s.count) for k, s in rows.items()]
    columns = dict(zip(COLUMNS, (list(c) for c in zip(*values, strict=True)), strict=True)) if values else {}
    text = json.dumps({"version": VERSION, **{n: columns.get(n, []) for n in COLUMNS}}, separators=(",", ":"))
    return write_text_atomic(facts_path(manifest), text)


def read_facts(manifest: Manifest) -> dict[Key, Span]:
    """The spans the manifest's facts file holds (none when it has no such file)."""
    path = facts_path(manifest)
    if not path.is_file():
        return {}
    try:
        columns = json.loads(path.read_text())
        if columns.get("version") != VERSION:
            raise ValueError(f"version {columns.get('version')!r}, not {VERSION}")
        rows = zip(*(columns[n] for n in COLUMNS), strict=True)
        return {(v, s, e): Span((h, w), first, last, count) for v, s, e, h, w, first, last, count in rows}
    except (ValueError, KeyError, TypeError) as exc:  # a damaged file costs probing, not the run
        log.warning("%s: cannot be read (%s); probing every video instead (sara data check rewrites it)", path, exc)
        return {}
