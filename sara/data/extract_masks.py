"""`sara data masks`: per-entity masks of a manifest's clips from SAM 3, stored beside the data.

Every frame of a clip's time range is segmented at the video's own resolution, so a mask
file has exactly the shape the data layer checks (``[T_range, H, W]``). The manifest is
rewritten atomically every ``save_every`` clips and at the end; a clip counts as done when
each of its entities names a mask file that exists, so a rerun skips finished clips and
redoes at most the ones in flight when the last run stopped.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from tqdm import tqdm

from sara.data.manifest import Manifest, Record
from sara.data.masks import save_mask
from sara.data.video import VideoError, decode_clip

log = logging.getLogger(__name__)


class Segmenter(Protocol):
    def segment(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """``uint8 [T, 3, H, W]`` and P prompts → ``bool [P, T, H, W]``."""


@dataclass
class MaskStats:
    """What a run of :func:`extract_masks` did."""

    done: int = 0  # clips segmented now
    already: int = 0  # clips whose masks existed
    no_entities: int = 0  # clips without entity prompts (Stage-2-only)
    failed: list[str] = field(default_factory=list)  # one line per clip that could not be read
    frames: int = 0  # frames segmented now


def _finished(manifest: Manifest, record: Record) -> bool:
    return all(e.mask is not None and manifest.resolve(e.mask).is_file() for e in record.entities)


def _stem(manifest: Manifest, index: int) -> str:
    name = str((manifest.records[index].model_extra or {}).get("id", f"{index:06d}"))
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def extract_masks(
    manifest: Manifest,
    segmenter: Segmenter,
    masks_dir: str | Path,
    save_every: int = 20,
    progress: bool = True,
) -> MaskStats:
    """Segment every unfinished clip's entity prompts and point the manifest at the masks."""
    masks_dir = Path(masks_dir).resolve()
    base = manifest.path.parent.resolve()
    stats = MaskStats()
    pending = 0
    try:  # whatever stops the loop, the clips finished so far are written to the manifest
        for index in tqdm(range(len(manifest)), desc="masks", unit="clip", disable=not progress):
            record = manifest.records[index]
            if not record.entities:
                stats.no_entities += 1
            elif _finished(manifest, record):
                stats.already += 1
            else:
                _segment_record(manifest, index, segmenter, masks_dir, base, stats)
                pending += 1
                if pending >= save_every:
                    manifest.save()
                    pending = 0
    finally:
        manifest.save()
    return stats


def _segment_record(
    manifest: Manifest, index: int, segmenter: Segmenter, masks_dir: Path, base: Path, stats: MaskStats
) -> None:
    record = manifest.records[index]
    try:
        clip = decode_clip(manifest.resolve(record.video), None, None, record.start, record.end)
    except VideoError as exc:
        stats.failed.append(f"{manifest.describe(index)}: video: {exc}")
        log.warning("skipped %s", stats.failed[-1])
        return
    masks = segmenter.segment(clip.frames, [e.prompt for e in record.entities])  # (P, T, H, W)
    for k, (entity, mask) in enumerate(zip(record.entities, masks)):
        path = save_mask(masks_dir / f"{_stem(manifest, index)}_e{k}.npz", mask)
        entity.mask = str(path.relative_to(base)) if path.is_relative_to(base) else str(path)
    stats.done += 1
    stats.frames += clip.frames.shape[0]
