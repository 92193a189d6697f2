"""Stage 1 inputs, computed once by the frozen encoders.

Nothing the aligner trains on changes between epochs — the clip's frames, its V-JEPA 2
tokens, the pooled entity masks and the caption features — so they are computed in one
pass, and V-JEPA tokens are also cached per clip on disk (``cache_dir``) so that a resumed
run, an evaluation or a second run with the same encoder skips the encoder altogether.
Training then reads tensors only.

Besides one sample per (clip, entity), a clip whose entities all have masks can give one
more: its full caption as the prompt and the union of its entities' masks as the target.
That is the question Stage 2 asks the frozen aligner (the saliency of everything the
caption names), so it is trained, not only hoped to generalise from entity prompts.

The InfoNCE targets are per clip: the caption embedder's vector of the clip's full caption,
which the global head must find from the video alone (see :mod:`sara.models.aligner`).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from sara.config.stage1 import Stage1DataConfig
from sara.data.buckets import Bucket
from sara.data.datasets import BadSamples, Stage1Dataset, collate
from sara.data.manifest import Manifest
from sara.data.masks import pool_to_grid
from sara.models.text import CaptionEmbedder, CaptionEncoder
from sara.models.vjepa2 import VideoEncoder
from sara.stage1.store import RowTable, TableWriter


@dataclass
class Encoders:
    """The frozen models Stage 1 features come from."""

    video: VideoEncoder
    video_folder: Path  # its weights (part of the cache's fingerprint)
    captions: CaptionEncoder
    embedder: CaptionEmbedder


CHUNK = 64  # rows encoded and written together
FEATURES_VERSION = 2  # 2: V-JEPA 2 positions from the clip's own grid (older caches are not reused)


@dataclass
class Stage1Features:
    """One row per sample — (clip, entity), or (clip, full caption) — indexing tables of clips and texts."""

    tokens: RowTable  # (C, N, Dv) V-JEPA tokens per clip
    grid: tuple[int, int, int]  # (T', H', W'), N = T'·H'·W'
    records: list[int]  # clip row → manifest record index
    clip_caption: Tensor  # (C,) clip → row of embeddings: the clip's full caption
    embeddings: RowTable  # (K, E) normalised embeddings of each distinct full caption
    clip_of: Tensor  # (S,) sample → clip row
    targets: RowTable | Tensor  # (S, N) covered fraction of each token's cell by the sample's entity (or entities)
    prompts: list[str]  # (S) what the aligner reads: an entity prompt, or the full caption
    text: RowTable  # (P, L, Dt) caption-encoder tokens of each distinct prompt
    text_mask: RowTable  # (P, L) True at words
    prompt_row: Tensor  # (S,) sample → row of text
    whole: Tensor  # (S,) bool: the prompt is the clip's full caption, the target all its entities
    scratch: tempfile.TemporaryDirectory | None = field(default=None, repr=False, compare=False)  # the tables' files

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, rows: Tensor) -> Stage1Features:
        """The samples ``rows`` (indices or a boolean mask), sharing the clip and text tables."""
        rows = rows.nonzero().squeeze(1) if rows.dtype == torch.bool else rows
        return replace(
            self,
            clip_of=self.clip_of[rows],
            targets=self.targets[rows],
            prompts=[self.prompts[i] for i in rows.tolist()],
            prompt_row=self.prompt_row[rows],
            whole=self.whole[rows],
        )


def _fingerprint(encoder_folder: Path, data: Stage1DataConfig, seed: int) -> str:
    """Cache folder name: which encoder weights saw which frames, at which size."""
    config = (encoder_folder / "config.json").read_bytes()
    weights = sorted((p.name, p.stat().st_size) for p in encoder_folder.glob("*.safetensors"))
    seen = (data.frames, data.shape, data.fps, data.window, seed if data.window == "random" else None)
    key = config + repr((FEATURES_VERSION, weights, seen)).encode()
    return hashlib.sha256(key).hexdigest()[:16]


def _clip_key(manifest: Manifest, index: int, random_window: bool) -> str:
    """Cache file name of a clip: its video file and time range, whatever manifest lists it
    (and its record index when windows are random: they are drawn per index)."""
    record = manifest.records[index]
    where = f"{manifest.resolve(record.video).resolve()}|{record.start}|{record.end}|{record.fps}"
    return hashlib.sha256(f"{where}|{index if random_window else ''}".encode()).hexdigest()[:24]


def _clip_tokens(
    batch: dict, manifest: Manifest, encoder: VideoEncoder, cache: Path, known: dict[int, Path], random_window: bool
) -> None:
    """Make sure the token file of each of the batch's clips exists (encoding those missing);
    ``known`` maps each clip's record to its file."""
    todo = []
    for position, index in enumerate(batch["index"]):
        if index in known:
            continue
        path = cache / f"{_clip_key(manifest, index, random_window)}.safetensors"
        if path.is_file():
            known[index] = path
        else:
            todo.append(position)
    if not todo:
        return
    tokens = encoder(batch["frames"][todo]).cpu()  # (b, N, Dv)
    for position, row in zip(todo, tokens):
        index = batch["index"][position]
        path = cache / f"{_clip_key(manifest, index, random_window)}.safetensors"
        save_file({"tokens": row.contiguous()}, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        known[index] = path


def _token_cache(
    manifest: Manifest, encoders: Encoders, data: Stage1DataConfig, cache_dir: Path, seed: int
) -> tuple[Path, Stage1Dataset]:
    """The token cache folder of these encoder weights and clip settings, and the samples."""
    cache = Path(cache_dir) / _fingerprint(encoders.video_folder, data, seed)
    cache.mkdir(parents=True, exist_ok=True)
    return cache, Stage1Dataset(manifest, [Bucket(data.frames, *data.shape)], data, seed)


def encode_share(
    manifest: Manifest, encoders: Encoders, data: Stage1DataConfig, cache_dir: Path, seed: int, rank: int, size: int
) -> None:
    """Fill the token cache with the clips ``rank`` of ``size`` processes owns (record index
    ``≡ rank mod size``), so that many processes split the V-JEPA 2 pass and
    :func:`compute_features` then finds every clip cached. Unreadable samples are left to it."""
    cache, dataset = _token_cache(manifest, encoders, data, cache_dir, seed)
    mine = [i for i, (record, _) in enumerate(dataset.samples) if record % size == rank]
    loader = DataLoader(Subset(dataset, mine), batch_size=8, collate_fn=collate, num_workers=data.num_workers)
    known: dict[int, Tensor] = {}
    for batch in loader:
        if batch["size"]:
            _clip_tokens(batch, manifest, encoders.video, cache, known, data.window == "random")


def compute_features(
    manifest: Manifest,
    encoders: Encoders,
    data: Stage1DataConfig,
    cache_dir: Path,
    bad: BadSamples,
    seed: int = 0,
    progress: bool = True,
) -> Stage1Features:
    """Decode every (clip, entity) sample once and encode what the aligner reads; with
    ``data.caption_samples``, add a (clip, full caption) sample per clip whose entities all load.

    The tables stay on disk (:mod:`sara.stage1.store`): V-JEPA tokens in the per-clip cache,
    caption states, targets and embeddings in a scratch folder of this process beside it;
    memory holds one index row per sample."""
    video = encoders.video
    grid = video.grid(data.frames, *data.shape)
    cache, dataset = _token_cache(manifest, encoders, data, cache_dir, seed)
    scratch = tempfile.TemporaryDirectory(dir=cache, prefix=f"features-{manifest.path.stem}-")
    folder = Path(scratch.name)
    loader = DataLoader(dataset, batch_size=8, collate_fn=collate, num_workers=data.num_workers)
    known: dict[int, Path] = {}
    samples: list[tuple[int, str, bool]] = []  # (record, prompt, whole)
    targets, pending = TableWriter(folder, "targets"), []
    unions: dict[int, list] = {}  # clip → [entities seen, union of their masks] until all are seen
    for batch in tqdm(loader, desc=f"features {manifest.path.name}", unit="batch", disable=not progress):
        bad.update(batch)
        if not batch["size"]:
            continue
        _clip_tokens(batch, manifest, video, cache, known, data.window == "random")
        for index, prompt, masks in zip(batch["index"], batch["prompt"], batch["masks"]):
            record = manifest.records[index]
            samples.append((index, prompt, False))
            pending.append(pool_to_grid(masks, video.tubelet, video.patch).flatten())
            if not data.caption_samples:
                continue
            seen = unions.setdefault(index, [0, torch.zeros_like(masks)])
            seen[0], seen[1] = seen[0] + 1, torch.maximum(seen[1], masks)
            if seen[0] == len(record.entities):  # never, when one of its entities was skipped
                samples.append((index, record.prompt(), True))
                pending.append(pool_to_grid(unions.pop(index)[1], video.tubelet, video.patch).flatten())
        if len(pending) >= CHUNK:
            targets.add(torch.stack(pending))
            pending.clear()
    if pending:
        targets.add(torch.stack(pending))
    bad.end_epoch(0)
    if not samples:
        raise ValueError(f"{manifest.path}: no (clip, entity) sample could be read")
    records = sorted(known)
    row_of = {index: row for row, index in enumerate(records)}
    prompts = [s[1] for s in samples]
    prompt_row = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
    captions = [manifest.records[index].prompt() for index in records]
    caption_row = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    text, text_mask = _encode_all(encoders.captions, list(prompt_row), folder)
    embeddings = TableWriter(folder, "embeddings")
    distinct = list(caption_row)
    for start in range(0, len(distinct), CHUNK):
        embeddings.add(encoders.embedder(distinct[start : start + CHUNK]).cpu())
    with safe_open(known[records[0]], "pt") as handle:
        token_shape, token_dtype = tuple(handle.get_slice("tokens").get_shape()), handle.get_tensor("tokens").dtype
    return Stage1Features(
        tokens=RowTable([(known[i], "tokens", None) for i in records], token_shape, token_dtype),
        grid=grid,
        records=records,
        clip_caption=torch.tensor([caption_row[c] for c in captions]),
        embeddings=embeddings.table(),
        clip_of=torch.tensor([row_of[s[0]] for s in samples]),
        targets=targets.table(),
        prompts=prompts,
        text=text,
        text_mask=text_mask,
        prompt_row=torch.tensor([prompt_row[p] for p in prompts]),
        whole=torch.tensor([s[2] for s in samples]),
        scratch=scratch,
    )


def _encode_all(encoder: CaptionEncoder, texts: list[str], folder: Path) -> tuple[RowTable, RowTable]:
    """Caption-encoder tokens of every text and their masks, written chunk by chunk: tables
    ``(P, L, Dt)`` and ``(P, L)`` padded to the longest text."""
    hidden, masks = TableWriter(folder, "text"), TableWriter(folder, "text_mask")
    for start in range(0, len(texts), CHUNK):
        states, mask = encoder(texts[start : start + CHUNK])
        hidden.add(states.cpu())
        masks.add(mask.cpu())
    return hidden.table(padded=True), masks.table(padded=True)
