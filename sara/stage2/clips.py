"""Where Stage 2 batches come from: the precomputed cache, or the frozen encoders run online.

Both give the same batch for the same step — the clips are chosen by position among the
usable clips with :class:`sara.trainer.batches.BucketSteps` (clips of one shape per batch), and
the tensors come from the same encoder code — so a cache-fed run reproduces an online one.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from sara.config.stage2 import SALIENCY_SOURCES, Stage2Config
from sara.data.datasets import Skipped, Stage2Dataset, collate
from sara.data.manifest import load_manifest
from sara.losses.alignment import get_alignment
from sara.parallel.precision import param_dtype
from sara.stage2.build import Stage2Setup, cache_dir
from sara.stage2.cache import FeatureCache, fingerprint
from sara.stage2.encoders import Stage2Encoders, pad_text

log = logging.getLogger(__name__)


def _stack(clips: list[dict], config: Stage2Config, empty: Tensor | None) -> dict[str, Tensor]:
    """The tensors a step reads, stacked over ``clips``, in the dtype they came in."""
    batch = {
        "latents": torch.stack([c["latents"] for c in clips]),  # (B, C, F, h, w)
        "text": pad_text([c["text"] for c in clips], config.models.text_length),  # (B, L, D_t)
    }
    if config.data.caption_dropout:
        batch["empty_text"] = pad_text([empty], config.models.text_length)  # (1, L, D_t)
    objective = get_alignment(config.objective.align.mode)
    if objective.teacher:
        batch["vfm"] = torch.stack([c["vfm"] for c in clips])  # (B, N_v, D_v)
    if objective.routed:
        batch["saliency"] = torch.stack([c[_saliency_key(config)] for c in clips])  # (B, N_v)
    return batch


def _on_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """``batch`` on ``device`` in fp32 (a bfloat16 cache trains in fp32); from pinned memory
    the copy does not block the host."""
    return {k: v.to(device, torch.float32, non_blocking=True) for k, v in batch.items()}


def drop_captions(
    batch: dict[str, Tensor], share: float, generator: torch.Generator, rows: slice | None = None, total: int = 0
) -> dict[str, Tensor]:
    """``batch`` with each sample's ``text`` replaced, with probability ``share`` drawn from
    ``generator``, by ``empty_text`` (caption dropout, for classifier-free guidance). The
    draws are made for a global batch of ``total`` and ``batch`` holds its ``rows`` (default:
    the batch is the whole of it)."""
    drop = torch.rand(total or len(batch["text"]), generator=generator) < share  # (B_global,)
    drop = drop[rows] if rows is not None else drop  # (B,)
    text = torch.where(drop.to(batch["text"].device)[:, None, None], batch["empty_text"], batch["text"])
    return batch | {"text": text}


def _saliency_key(config: Stage2Config) -> str:
    """The cached tensor the saliency of mode sara comes from."""
    source = config.objective.align.saliency
    if source == "aligner":
        return "saliency"
    if source == "masks":
        return "mask_saliency"
    raise ValueError(f"objective.align.saliency: {source!r}; choose one of {', '.join(SALIENCY_SOURCES)}")


class CachedClips:
    """Clips of the precomputed cache that carry what the objective reads. Light to copy into
    a loader's worker (:meth:`load` reads there; :meth:`to_device` moves here)."""

    def __init__(self, config: Stage2Config):
        self.config = config
        self.cache = FeatureCache(cache_dir(config), fingerprint(config))
        needed = _saliency_key(config) if get_alignment(config.objective.align.mode).routed else None
        self.positions = [p for p in range(len(self.cache)) if needed is None or needed in self.cache.keys(p)]
        if missing := len(self.cache) - len(self.positions):
            log.warning("%d of %d cached clips have no %s and are left out", missing, len(self.cache), needed)
        if not self.positions:
            raise ValueError(f"{self.cache.folder}: no cached clip has {needed} (models.aligner or entity masks)")
        self.empty_text = self.cache.empty_caption() if config.data.caption_dropout else None

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def bucket_of(self) -> list[tuple[int, ...]]:
        """The latent shape of each clip: clips of one shape stack into a batch."""
        return [self.cache.shape(p, "latents") for p in self.positions]

    @property
    def reader(self) -> CachedClips:
        return self

    def load(self, rows: list[int], epoch: int = 0) -> dict[str, Tensor]:
        """The clips at ``rows``, stacked as stored; the cache holds one window per clip,
        whatever the ``epoch``."""
        return _stack([self.cache[self.positions[r]] for r in rows], self.config, self.empty_text)

    def to_device(self, loaded: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
        return _on_device(loaded, device)

    def batch(self, rows: list[int], device: torch.device, epoch: int = 0) -> dict[str, Tensor]:
        return self.to_device(self.load(rows, epoch), device)


class DecodedClips:
    """The frames, captions and masks of a manifest's clips: what a loader's worker decodes
    for :class:`OnlineClips`."""

    def __init__(self, dataset: Stage2Dataset):
        self.dataset = dataset

    def load(self, rows: list[int], epoch: int = 0) -> dict:
        """The clips at ``rows``, in the windows of ``epoch`` (``data.window: random`` draws
        them per ``(seed, epoch, clip)``), collated."""
        self.dataset.set_epoch(epoch)
        items = [self.dataset[r] for r in rows]
        for item in items:
            if isinstance(item, Skipped):
                raise ValueError(f"{item.where}: {item.reason} (online training needs every clip readable)")
        return collate(items)


class OnlineClips:
    """Clips decoded (by :class:`DecodedClips`, in a loader's workers) and encoded every step,
    by the encoders `precompute` uses."""

    def __init__(self, config: Stage2Config, setup: Stage2Setup, device: torch.device, encodes: bool = True):
        """``encodes``: this process runs the encoders (else it only plans the batches, and
        another rank of its sequence-parallel group sends them)."""
        self.config = config
        manifest = load_manifest(config.data.train)
        self.reader = DecodedClips(Stage2Dataset(manifest, setup.buckets, config.data, config.seed, union_masks=True))
        self.encoders = (
            Stage2Encoders(config, setup.view, param_dtype(config.parallel, device)).to(device) if encodes else None
        )
        self.empty_text = self.encoders.empty_caption() if encodes else None

    def __len__(self) -> int:
        return len(self.reader.dataset)

    @property
    def bucket_of(self) -> list[int]:
        return self.reader.dataset.bucket_of

    def to_device(self, loaded: dict, device: torch.device) -> dict[str, Tensor]:
        encoded = self.encoders(loaded["frames"], loaded["caption"], list(loaded["masks"]))
        return _on_device(_stack(encoded, self.config, self.empty_text), device)

    def batch(self, rows: list[int], device: torch.device, epoch: int = 0) -> dict[str, Tensor]:
        return self.to_device(self.reader.load(rows, epoch), device)
