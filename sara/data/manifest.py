"""The manifest: one record per clip, JSON or JSONL, validated into typed records.

See ``docs/DATA.md`` for the format. Paths are relative to the manifest's folder unless
absolute. An invalid record is reported as one line naming the file, the record index
and the field. :func:`find_videos` names the video each record is judged by.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sara.files import write_text_atomic


class CastMember(BaseModel):
    """An entity of an MTSS caption."""

    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1)
    description: str = ""


class MTSSCaption(BaseModel):
    """A structured caption: global setup, cast, scene, shots. Unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore")
    global_setup: str = ""
    cast: list[CastMember] = Field(default_factory=list)
    scene: str = ""
    shots: list[str] = Field(default_factory=list)

    @field_validator("shots", mode="before")
    @classmethod
    def _shot_descriptions(cls, shots):
        # shots may be plain strings or {"description": ...} objects
        return [s.get("description", "") if isinstance(s, dict) else s for s in shots or []]

    def flatten(self) -> str:
        """The full prompt, deterministically: setup, cast, scene, then numbered shots."""
        parts = [_sentence(self.global_setup)]
        if self.cast:
            members = "; ".join(f"{c.name}: {c.description}".rstrip(": ") for c in self.cast)
            parts.append(_sentence(f"Cast: {members}"))
        if self.scene.strip():
            parts.append(_sentence(f"Scene: {self.scene}"))
        shots = [s for s in self.shots if s.strip()]
        parts += [_sentence(f"Shot {i}: {s}") for i, s in enumerate(shots, start=1)]
        return " ".join(p for p in parts if p)


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text[-1] in ".!?" else text + "."


class Entity(BaseModel):
    """A short per-entity prompt and the file of its masks (absent until extracted)."""

    model_config = ConfigDict(extra="ignore")
    prompt: str = Field(min_length=1)
    mask: str | None = None


class Record(BaseModel):
    """One clip of the manifest."""

    model_config = ConfigDict(extra="allow")  # ids, splits and notes of other tools ride along
    video: str = Field(min_length=1)
    caption: str | MTSSCaption
    start: float | None = Field(default=None, ge=0)
    end: float | None = Field(default=None, gt=0)
    fps: float | None = Field(default=None, gt=0)
    entities: list[Entity] | None = None

    @field_validator("end")
    @classmethod
    def _after_start(cls, end, info):
        start = info.data.get("start")
        if end is not None and start is not None and end <= start:
            raise ValueError(f"must be after start ({start})")
        return end

    def prompt(self) -> str:
        """The full caption text (MTSS captions flattened)."""
        return self.caption if isinstance(self.caption, str) else self.caption.flatten()

    def cast_prompts(self) -> list[str]:
        """Entity prompts from the MTSS cast (names), or an empty list for plain captions."""
        return [] if isinstance(self.caption, str) else [c.name for c in self.caption.cast]


class ManifestError(ValueError):
    """A manifest that cannot be read; the message is one line naming file, record and field."""


class Manifest:
    """The records of a manifest file and the folder their relative paths start from."""

    def __init__(self, path: Path, records: list[Record]):
        self.path = path
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def describe(self, index: int) -> str:
        """``FILE: record I (ID)``, or ``FILE: record I (VIDEO)`` for a record without an id:
        how warnings and checks name a record."""
        record = self.records[index]
        return f"{self.path.name}: record {index} ({(record.model_extra or {}).get('id') or record.video})"

    def resolve(self, relative: str) -> Path:
        """A path of a record, made absolute against the manifest's folder."""
        path = Path(relative)
        return path if path.is_absolute() else self.path.parent / path

    def save(self, path: str | Path | None = None) -> Path:
        """Write the records as JSONL (atomically: a crash leaves the old file intact)."""
        path = Path(path or self.path)
        lines = [json.dumps(r.model_dump(mode="json", exclude_none=True)) for r in self.records]
        return write_text_atomic(path, "\n".join(lines) + "\n")


def _raw_records(path: Path) -> list:
    text = path.read_text()
    if path.suffix == ".jsonl":
        raw = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    raw.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ManifestError(f"{path}: line {number}: invalid JSON: {exc.msg}") from None
        return raw
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        return data["records"]
    if not isinstance(data, list):
        raise ManifestError(f"{path}: expected a list of records or {{'records': [...]}}")
    return data


def _describe(exc: ValidationError) -> str:
    """``field: problem`` of the most specific error (a caption object's own field, rather
    than "not a string", when the caption is an object)."""
    error = max(exc.errors(), key=lambda e: len(e["loc"]))
    field = ".".join(str(p) for p in error["loc"] if p not in ("str", "MTSSCaption"))
    return f"{field or 'record'}: {error['msg'].removeprefix('Value error, ')}"


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a ``.json`` or ``.jsonl`` manifest.

    Raises:
        ManifestError: ``FILE: record I: FIELD: problem`` for the first invalid record.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    records = []
    for index, raw in enumerate(_raw_records(path)):
        try:
            records.append(Record.model_validate(raw))
        except ValidationError as exc:
            raise ManifestError(f"{path}: record {index}: {_describe(exc)}") from None
    return Manifest(path, records)


def find_videos(manifest: Manifest, folder: str | Path | None) -> list[Path]:
    """The video judged for each record: its own (``folder=None``), else in ``folder`` the
    file named by its id (``ID.mp4``) or by its position (``NN-*.mp4``, as ``sara stage2
    generate --manifest`` names them).

    Raises:
        ValueError: a record without a video in ``folder``.
    """
    found = []
    for index, record in enumerate(manifest.records):
        if folder is None:
            found.append(manifest.resolve(record.video))
            continue
        named = Path(folder) / f"{(record.model_extra or {}).get('id')}.mp4"
        numbered = sorted(Path(folder).glob(f"{index:02d}-*.mp4"))
        if not named.is_file() and not numbered:
            raise ValueError(f"{manifest.describe(index)}: no {named.name} or {index:02d}-*.mp4 in {folder}")
        found.append(named if named.is_file() else numbered[0])
    return found
