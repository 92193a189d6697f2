"""Tables of feature rows kept on disk, read a batch at a time.

Stage 1 features grow with the data set — V-JEPA 2 tokens per clip, caption-encoder
states per prompt, a target per sample, an embedding per caption — far past host memory
for real data (100 k clips of umT5-XXL states alone are tens of GB). A :class:`RowTable`
holds only where each row lives (a safetensors file, a tensor in it, a position along its
first axis) and reads the rows an index asks for through ``safe_open(...).get_slice``,
which maps only those bytes. Rows of varying length (caption states) are zero-padded to
the table's ``length`` on read, so a batch equals the rows of one padded in-memory table.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor


class RowTable:
    """Rows ``(file, key, position)`` (position ``None``: the whole tensor is the row),
    indexed like a tensor's first axis."""

    def __init__(self, rows: list[tuple[Path, str, int | None]], row_shape: tuple[int, ...], dtype: torch.dtype):
        self.rows, self.row_shape, self.dtype = rows, row_shape, dtype

    @classmethod
    def of_rows(cls, rows: list[tuple[Path, str, int | None]]) -> RowTable:
        """The table of ``rows``, their shape and dtype read from the first one's file."""
        with safe_open(rows[0][0], "pt") as handle:
            first = handle.get_slice(rows[0][1])
            shape, dtype = first.get_shape(), first[:1].dtype
        return cls(rows, tuple(shape[1:]) if rows[0][2] is not None else tuple(shape), dtype)

    @classmethod
    def of_files(cls, files: list[Path], key: str, padded: bool = False) -> RowTable:
        """Every row of the tensor ``key`` ``(n, ...)`` of each file, in order; ``padded``: each
        row's first axis zero-padded to the longest (files may differ in it)."""
        rows, longest = [], 0
        for path in files:
            with safe_open(path, "pt") as handle:
                shape = handle.get_slice(key).get_shape()
            rows += [(path, key, i) for i in range(shape[0])]
            longest = max(longest, shape[1] if len(shape) > 1 else 0)
        table = cls.of_rows(rows)
        if padded:
            table.row_shape = (longest, *table.row_shape[1:])
        return table

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.row_shape)

    def _read(self, positions: list[int]) -> Tensor:
        if not positions:
            return torch.empty(0, *self.row_shape, dtype=self.dtype)
        out = torch.zeros(len(positions), *self.row_shape, dtype=self.dtype)  # zero past a short row
        by_file: dict[Path, list[int]] = {}
        for slot, position in enumerate(positions):
            by_file.setdefault(self.rows[position][0], []).append(slot)
        for path, slots in by_file.items():
            with safe_open(path, "pt") as handle:
                for slot in slots:
                    _, key, index = self.rows[positions[slot]]
                    # (l, ...): only these bytes are read; position None: the file's whole tensor
                    row = handle.get_tensor(key) if index is None else handle.get_slice(key)[index]
                    out[slot, : row.shape[0]] = row
        return out

    def __getitem__(self, index) -> Tensor:
        if isinstance(index, int):
            return self._read([index])[0]
        if isinstance(index, slice):
            return self._read(list(range(len(self.rows)))[index])
        index = torch.as_tensor(index)
        if index.dtype == torch.bool:
            index = index.nonzero().squeeze(1)
        return self._read(index.reshape(-1).tolist()).reshape(*index.shape, *self.row_shape)

    def all(self) -> Tensor:
        """Every row, in memory (held-out sets, figures)."""
        return self[:]


class TableWriter:
    """Writes rows to numbered safetensors files in ``folder`` as they come (one file per
    call to :meth:`add`); ``rows`` says where each lies."""

    def __init__(self, folder: Path, name: str):
        self.folder, self.name = folder, name
        folder.mkdir(parents=True, exist_ok=True)
        self.rows: list[tuple[Path, str, int]] = []

    def add(self, rows: Tensor) -> None:
        """Rows ``(n, ...)``."""
        path = self.folder / f"{self.name}-{len({r[0] for r in self.rows}):06d}.safetensors"
        save_file({"rows": rows.contiguous()}, path)
        self.rows += [(path, "rows", i) for i in range(len(rows))]
