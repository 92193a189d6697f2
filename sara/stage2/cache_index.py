"""The index of a Stage 2 cache: where each clip is and what it holds, read at start-up alone.

``index.json`` holds the settings that made the cache and ``clips``, columnar so that a
hundred thousand clips parse in tens of milliseconds: ``records`` (manifest indices),
``shards`` (file names) and ``shard`` (each clip's, as a position in ``shards``), and per
tensor name its ``ndim`` and the flat list of every clip's shape (``ndim`` ints a clip,
``-1`` where a clip lacks that tensor).

While precompute runs, each rank appends a line per shard to ``index.rank-R.jsonl``
(``{record: {"shard": name, "shapes": {name: shape}}}``); :func:`merge_parts` folds the parts
into ``index.json``. Indexes written before shapes were indexed map each record to its
shard's name; :class:`ClipIndex` reads those too (shapes then come from the shard headers),
and the next merge rewrites them in the columnar form.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor

from sara.files import write_text_atomic

Shapes = dict[str, list[int]]  # tensor name -> shape, of one clip


def to_columns(rows: dict[str, dict]) -> dict:
    """``{record: {"shard", "shapes"}}`` as the columnar ``clips`` of ``index.json``."""
    records = sorted(int(r) for r in rows)
    shards = sorted({row["shard"] for row in rows.values()})
    position = {name: i for i, name in enumerate(shards)}
    ndims: dict[str, int] = {}
    for row in rows.values():
        for name, shape in row["shapes"].items():
            ndims.setdefault(name, len(shape))
    fields = {name: {"ndim": ndim, "shapes": []} for name, ndim in sorted(ndims.items())}
    for record in records:
        shapes = rows[str(record)]["shapes"]
        for name, field in fields.items():
            field["shapes"] += shapes.get(name, [-1] * field["ndim"])
    shard = [position[rows[str(r)]["shard"]] for r in records]
    return {"records": records, "shards": shards, "shard": shard, "fields": fields}


def from_columns(clips: dict) -> dict[str, dict]:
    """The columnar ``clips`` back as ``{record: {"shard", "shapes"}}``."""
    rows = {}
    for row, record in enumerate(clips["records"]):
        shapes = {}
        for name, field in clips["fields"].items():
            ndim = field["ndim"]
            shape = field["shapes"][row * ndim : (row + 1) * ndim]
            if shape[:1] != [-1]:
                shapes[name] = shape
        rows[str(record)] = {"shard": clips["shards"][clips["shard"][row]], "shapes": shapes}
    return rows


class ClipIndex:
    """Each clip's shard and tensor shapes, from the ``clips`` of ``index.json`` (either form);
    ``header`` gives a clip's shapes from its shard where the index has none."""

    def __init__(self, clips: dict, header: Callable[[str, int], Shapes]):
        self.header = header
        if "records" in clips:  # columnar
            self.records: list[int] = clips["records"]
            self._row = {record: row for row, record in enumerate(self.records)}
            shards = clips["shards"]
            self._shard = [shards[s] for s in clips["shard"]]
            self._fields = {name: (f["ndim"], f["shapes"]) for name, f in clips["fields"].items()}
            self._legacy: dict[int, Shapes] = {}
        else:  # record -> shard name; empty when nothing is cached yet
            self.records = sorted(int(r) for r in clips)
            self._row = {record: row for row, record in enumerate(self.records)}
            self._shard = [clips[str(r)] for r in self.records]
            self._fields, self._legacy = {}, {}

    def __len__(self) -> int:
        return len(self.records)

    def shard(self, record: int) -> str:
        return self._shard[self._row[record]]

    def shapes(self, record: int) -> Shapes:
        row = self._row[record]
        if not self._fields:  # an index of shard names alone: the shard's header, once
            if record not in self._legacy:
                self._legacy[record] = self.header(self._shard[row], record)
            return self._legacy[record]
        shapes = {}
        for name, (ndim, flat) in self._fields.items():
            shape = flat[row * ndim : (row + 1) * ndim]
            if shape[0] != -1:
                shapes[name] = shape
        return shapes


class Part:
    """One rank's shards (``shard-RRR-NNNNN.safetensors``) and the index of their clips
    (``index.rank-R.jsonl``: a line per shard, appended once the shard is in place)."""

    def __init__(self, folder: Path, rank: int):
        self.folder, self.prefix = folder, f"shard-{rank:03d}-"
        self.path = folder / f"index.rank-{rank}.jsonl"
        self.count = len(list(folder.glob(f"{self.prefix}*.safetensors")))  # a resumed rank numbers on

    def flush(self, tensors: dict[str, Tensor]) -> None:
        """Write one shard atomically, then the index line naming its clips and their tensors'
        shapes; empties ``tensors``. Appending keeps each flush the size of one shard's line
        however many came before it."""
        name = f"{self.prefix}{self.count:05d}.safetensors"
        save_file(tensors, self.folder / f"{name}.tmp")
        (self.folder / f"{name}.tmp").replace(self.folder / name)
        self.count += 1
        rows: dict[str, dict] = {}
        for key, tensor in tensors.items():
            record, field = key.split("/", 1)
            rows.setdefault(record, {"shard": name, "shapes": {}})["shapes"][field] = list(tensor.shape)
        with open(self.path, "a") as part:
            part.write(json.dumps(rows) + "\n")
            part.flush()
            os.fsync(part.fileno())
        tensors.clear()


def _part_rows(path: Path) -> dict[str, dict]:
    """The clips of a rank's index part; a line cut short by a kill is dropped (its shard's
    clips are encoded again)."""
    rows: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        try:
            rows |= json.loads(line)
        except json.JSONDecodeError:
            break
    return rows


def indexed_records(index: dict) -> set[int]:
    """The records an ``index.json`` holds, in either form."""
    clips = index["clips"]
    return set(clips["records"]) if "records" in clips else {int(r) for r in clips}


def merge_parts(folder: Path, index: dict, header: Callable[[str, int], Shapes] | None) -> None:
    """Fold every rank's index part into ``index.json`` (atomically, in the columnar form; an
    index of shard names alone gets its shapes from ``header``), then remove the parts."""
    parts = sorted(folder.glob("index.rank-*.jsonl"))
    clips = index["clips"]
    if "records" in clips:
        rows = from_columns(clips)
    else:
        rows = {r: {"shard": name, "shapes": header(name, int(r))} for r, name in clips.items()}
    for path in parts:
        rows |= _part_rows(path)
    write_text_atomic(folder / "index.json", json.dumps(index | {"clips": to_columns(rows)}))
    for path in parts:
        path.unlink()


def shard_shapes(handle: Any, record: int) -> Shapes:
    """A clip's shapes from the header of its shard, open as ``handle`` (``safe_open``)."""
    prefix = f"{record}/"
    return {k[len(prefix) :]: handle.get_slice(k).get_shape() for k in handle.keys() if k.startswith(prefix)}
