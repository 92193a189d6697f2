"""Torch datasets of the two stages, and how bad samples are skipped without hiding.

A sample that cannot be loaded (missing, empty, truncated or undecodable video, too few
frames, a missing or mismatched mask, an empty caption) comes back as a :class:`Skipped`
marker instead of raising, so that ``DataLoader`` workers never die on bad data. The
collate function keeps the good samples and passes the markers on; the training loop
hands them to a :class:`BadSamples` tracker, which logs one warning line per skip, counts
them per epoch and stops the run only when more than ``max_fraction`` of samples are bad.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from sara.config.clips import ClipTiming
from sara.data.buckets import Bucket, assign_bucket
from sara.data.facts import read_facts, record_key
from sara.data.manifest import Manifest, Record
from sara.data.masks import MaskError, load_mask
from sara.data.video import Clip, VideoError, decode_clip, probe_size, probe_span, transform_masks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skipped:
    """A sample that could not be loaded, and why."""

    where: str  # "train.jsonl: record 3 (clip_00003)"
    reason: str


class ClipDataset(Dataset):
    """Clips of a manifest, each decoded into its bucket's frames and size, at the rate and in
    the window ``timing`` says (a record's own ``fps`` overrides the rate). Random windows are
    drawn per ``(seed, epoch, record)``; :meth:`set_epoch` moves them, as a sampler's does."""

    def __init__(self, manifest: Manifest, buckets: Sequence[Bucket], timing: ClipTiming, seed: int = 0):
        if not buckets:
            raise ValueError("buckets: at least one bucket is needed")
        self.manifest, self.buckets = manifest, list(buckets)
        self.timing, self.seed, self.epoch = timing, seed, 0
        # aspect-ratio bins from the manifest's facts file, or from the headers, and with
        # several lengths each clip's frames at its rate from the same facts or its packet
        # timeline (nothing decoded); an unreadable file lands in bucket 0 and is skipped,
        # with its reason, when loaded
        several = len({b.frames for b in self.buckets}) > 1
        facts, probed = read_facts(manifest), 0
        self.record_bucket = []
        for record in manifest.records:
            fps, span = record.fps or timing.fps, facts.get(record_key(record))
            if span is None:
                size, available = _probe(manifest.resolve(record.video), record, fps, several)
                probed += 1
            else:
                size, available = span.size, span.seen(fps) if several else None
            self.record_bucket.append(assign_bucket(*size, self.buckets, available) if size else 0)
        if probed and facts:
            log.info("%s: %d of %d records probed (not in its facts file)", manifest.path, probed, len(manifest))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _clip(self, index: int) -> tuple[Record, Bucket, Clip | Skipped]:
        """The record, its bucket and its decoded clip, or why the sample must be skipped."""
        record = self.manifest.records[index]
        bucket = self.buckets[self.record_bucket[index]]
        if not record.prompt().strip():
            return record, bucket, Skipped(self.manifest.describe(index), "caption: empty")
        path = self.manifest.resolve(record.video)
        try:
            fps = record.fps or self.timing.fps
            key = (self.seed, self.epoch, index)
            clip = decode_clip(path, bucket.frames, bucket.size, record.start, record.end, fps, self.timing.window, key)
        except VideoError as exc:
            return record, bucket, Skipped(self.manifest.describe(index), f"video: {exc}")
        return record, bucket, clip


def _probe(path: Path, record: Record, fps: float | None, timeline: bool) -> tuple[tuple[int, int] | None, int | None]:
    """``(H, W)`` of a record's video and, with ``timeline``, its frames in range at ``fps``,
    read from the file (the header alone without); ``(None, None)`` when unreadable."""
    if not timeline:
        return probe_size(path), None
    try:
        span = probe_span(path, record.start, record.end)
    except VideoError:
        return None, None
    return span.size, span.seen(fps)


class Stage2Dataset(ClipDataset):
    """Frames and the full caption of every clip; with ``union_masks``, also ``masks``: the
    union of its entities' masks on the frames, or ``None`` when one is missing or unreadable
    (only a saliency-from-masks run needs them, and it skips such clips)."""

    def __init__(
        self,
        manifest: Manifest,
        buckets: Sequence[Bucket],
        timing: ClipTiming,
        seed: int = 0,
        union_masks: bool = False,
    ):
        super().__init__(manifest, buckets, timing, seed)
        self.union_masks = union_masks

    @property
    def bucket_of(self) -> list[int]:
        return self.record_bucket

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, index: int) -> dict | Skipped:
        record, bucket, clip = self._clip(index)
        if isinstance(clip, Skipped):
            return clip
        sample = {"frames": clip.frames, "caption": record.prompt(), "index": index}
        if self.union_masks:
            sample["masks"] = self._union(record, bucket, clip)
        return sample

    def _union(self, record: Record, bucket: Bucket, clip: Clip) -> torch.Tensor | None:
        if not record.entities or any(e.mask is None for e in record.entities):
            return None
        try:
            masks = [
                transform_masks(load_mask(self.manifest.resolve(e.mask)), clip, bucket.size) for e in record.entities
            ]
        except (MaskError, VideoError):
            return None
        return torch.stack(masks).amax(0)  # (T, H, W)


class Stage1Dataset(ClipDataset):
    """One sample per (clip, entity): frames, that entity's masks and prompt, the caption.

    Clips without entities are Stage-2-only and left out.
    """

    def __init__(self, manifest: Manifest, buckets: Sequence[Bucket], timing: ClipTiming, seed: int = 0):
        super().__init__(manifest, buckets, timing, seed)
        self.samples = [(i, e) for i, r in enumerate(manifest.records) for e in range(len(r.entities or []))]

    @property
    def bucket_of(self) -> list[int]:
        return [self.record_bucket[i] for i, _ in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict | Skipped:
        record_index, entity_index = self.samples[index]
        where = self.manifest.describe(record_index)
        entity = self.manifest.records[record_index].entities[entity_index]
        record, bucket, clip = self._clip(record_index)
        if isinstance(clip, Skipped):
            return clip
        if entity.mask is None:
            return Skipped(where, f"entities.{entity_index}.mask: no mask file (run `sara data masks`)")
        try:
            masks = transform_masks(load_mask(self.manifest.resolve(entity.mask)), clip, bucket.size)
        except (MaskError, VideoError) as exc:
            return Skipped(where, f"entities.{entity_index}.mask: {exc}")
        return {
            "frames": clip.frames,  # (T, C, H, W) uint8
            "masks": masks,  # (T, H, W) covered fraction
            "prompt": entity.prompt,
            "caption": record.prompt(),
            "index": record_index,
            "entity": entity_index,
        }


def collate(items: list[dict | Skipped]) -> dict:
    """Stack the good samples of a same-bucket batch; skipped ones go to ``batch["skipped"]``.

    ``batch["size"]`` may be 0 when every sample of the batch was bad.
    """
    good = [item for item in items if not isinstance(item, Skipped)]
    batch: dict = {"skipped": [item for item in items if isinstance(item, Skipped)], "size": len(good)}
    for key in good[0] if good else ():
        values = [item[key] for item in good]
        batch[key] = torch.stack(values) if all(isinstance(v, torch.Tensor) for v in values) else values
    return batch


class TooManyBadSamples(RuntimeError):
    """More than the allowed share of a run's samples could not be loaded."""


class BadSamples:
    """Counts skipped samples, logs one line for each, and stops a run past ``max_fraction``."""

    def __init__(self, max_fraction: float = 0.05, min_seen: int = 50):
        self.max_fraction, self.min_seen = max_fraction, min_seen
        self.seen = self.bad = 0
        self.epoch_seen = self.epoch_bad = 0

    def update(self, batch: dict) -> None:
        """Record one collated batch; raises :class:`TooManyBadSamples` past the limit."""
        for skipped in batch["skipped"]:
            log.warning("skipped %s: %s", skipped.where, skipped.reason)
        count = len(batch["skipped"])
        self.seen += batch["size"] + count
        self.epoch_seen += batch["size"] + count
        self.bad += count
        self.epoch_bad += count
        if self.seen >= self.min_seen:
            self.check()

    def check(self) -> None:
        """Raise if the share of bad samples so far is above ``max_fraction``."""
        if self.seen and self.bad / self.seen > self.max_fraction:
            raise TooManyBadSamples(
                f"{self.bad} of {self.seen} samples could not be loaded ({100 * self.bad / self.seen:.1f} %), "
                f"more than the allowed {100 * self.max_fraction:.1f} % (data.max_bad_fraction)"
            )

    def end_epoch(self, epoch: int) -> int:
        """Log the epoch's count of skipped samples (debug: each skip is already a warning),
        check the limit, and reset the epoch count."""
        log.debug("epoch %d: %d of %d samples skipped", epoch, self.epoch_bad, self.epoch_seen)
        skipped, self.epoch_seen, self.epoch_bad = self.epoch_bad, 0, 0
        self.check()
        return skipped
