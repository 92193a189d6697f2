"""Which video file each record of a manifest is judged by."""

from __future__ import annotations

from pathlib import Path

from sara.data.manifest import Manifest


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
