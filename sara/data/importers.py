"""``sara data import``: the video data sets users of other Wan trainers already hold, as a manifest.

Formats:

- ``musubi``: musubi-tuner's video JSONL, ``{"video_path": ..., "caption": ...}`` per line;
- ``diffsynth``: DiffSynth-Studio's ``metadata.csv``, a ``video`` (or ``file_name``) column
  and a ``prompt`` (or ``text``) column, paths relative to the data set's base folder;
- ``folder``: a folder of videos (searched recursively), each caption in a sidecar
  ``<name>.txt`` beside its video.

Relative paths are read from ``root`` (default: the folder of the JSONL or CSV, the folder
itself for ``folder``) and written relative to the manifest. A video without a caption
gets an empty one (``sara data caption`` writes it; ``sara data check`` names it); a video
that does not exist is skipped with a line naming the file, row and path. A row that is
not the format stops the import with one line naming the file, the row and the field. Each
video's header and timeline go to the manifest's facts file, which runs read instead of
the videos.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from sara.data.facts import write_facts
from sara.data.manifest import Manifest, ManifestError, Record
from sara.data.video import Span, VideoError, probe_span

FORMATS = ("musubi", "diffsynth", "folder")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif")
# column names DiffSynth-Studio's data sets use, newest first
DIFFSYNTH_VIDEO, DIFFSYNTH_CAPTION = ("video", "file_name"), ("prompt", "text")


@dataclass
class Row:
    """One clip of a source: where it was read (``FILE: line N``), its video, its caption."""

    where: str
    video: Path
    caption: str


@dataclass
class ImportSummary:
    records: int = 0
    without_caption: int = 0
    probed: int = 0  # videos whose header and timeline were read into the facts file
    skipped: list[str] = field(default_factory=list)  # one line per video not found


def detect_format(source: Path) -> str:
    """``folder`` for a folder, ``musubi`` for ``.jsonl``, ``diffsynth`` for ``.csv``."""
    if source.is_dir():
        return "folder"
    by_suffix = {".jsonl": "musubi", ".csv": "diffsynth"}
    if source.suffix in by_suffix:
        return by_suffix[source.suffix]
    raise ManifestError(f"{source}: not a folder, .jsonl or .csv; name the format with --format")


def read_musubi(path: Path, root: Path) -> Iterator[Row]:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}: line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{where}: invalid JSON: {exc.msg}") from None
        if not isinstance(item, dict) or not isinstance(item.get("video_path"), str):
            raise ManifestError(f"{where}: video_path: missing (musubi-tuner video data sets name one per line)")
        caption = item.get("caption", "")
        if not isinstance(caption, str):
            raise ManifestError(f"{where}: caption: not a string")
        yield Row(where, root / item["video_path"], caption)


def _column(header: list[str], names: tuple[str, ...], path: Path) -> str:
    found = next((n for n in names if n in header), None)
    if found is None:
        raise ManifestError(f"{path.name}: header: no {' or '.join(names)} column (has {', '.join(header)})")
    return found


def read_diffsynth(path: Path, root: Path) -> Iterator[Row]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        video, caption = _column(header, DIFFSYNTH_VIDEO, path), _column(header, DIFFSYNTH_CAPTION, path)
        for number, row in enumerate(reader, start=2):  # line 1 is the header
            where = f"{path.name}: line {number}"
            if not (row.get(video) or "").strip():
                raise ManifestError(f"{where}: {video}: empty")
            yield Row(where, root / row[video].strip(), row.get(caption) or "")


def read_folder(path: Path, root: Path) -> Iterator[Row]:
    videos = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    for video in videos:
        sidecar = video.with_suffix(".txt")
        caption = sidecar.read_text().strip() if sidecar.is_file() else ""
        yield Row(str(video.relative_to(root)), video, caption)


READERS = {"musubi": read_musubi, "diffsynth": read_diffsynth, "folder": read_folder}


def _unique_id(video: Path, taken: set[str]) -> str:
    """The video's name without suffix (path separators as ``_``: ids name mask files), made unique."""
    base = video.with_suffix("").as_posix().strip("/").replace("/", "_")
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    taken.add(name)
    return name


def import_dataset(
    source: str | Path, out: str | Path, fmt: str | None = None, root: str | Path | None = None, progress: bool = True
) -> ImportSummary:
    """Write the manifest ``out`` (JSONL) from ``source`` in ``fmt`` (detected when None), and
    its facts file: each video's size and timeline (:mod:`sara.data.facts`)."""
    source, out = Path(source), Path(out)
    if not source.exists():
        raise ManifestError(f"{source}: not found")
    fmt = fmt or detect_format(source)
    if fmt not in READERS:
        raise ManifestError(f"{source}: unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    base = Path(root) if root else (source if source.is_dir() else source.parent)
    summary, records, taken = ImportSummary(), [], set()
    for row in READERS[fmt](source, base):
        if not row.video.is_file():
            summary.skipped.append(f"{row.where}: video: not found: {row.video}")
            continue
        relative = Path(os.path.relpath(row.video.resolve(), out.parent.resolve()))
        key = row.video.relative_to(base) if row.video.is_relative_to(base) else Path(row.video.name)
        records.append(Record(video=relative.as_posix(), caption=row.caption.strip(), id=_unique_id(key, taken)))
        summary.without_caption += not row.caption.strip()
    if not records:
        raise ManifestError(f"{source}: no videos found ({len(summary.skipped)} rows name a missing file)")
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out, records)
    manifest.save()
    summary.records = len(records)
    spans = [_span(manifest.resolve(r.video)) for r in tqdm(records, desc="import: probe", disable=not progress)]
    write_facts(manifest, spans)
    summary.probed = sum(s is not None for s in spans)
    return summary


def _span(path: Path) -> Span | None:
    try:
        return probe_span(path, None, None)
    except VideoError:  # `sara data check` names it
        return None
