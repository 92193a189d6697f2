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
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from sara.data.buckets import Bucket
from sara.data.datasets import BadSamples, Stage1Dataset, collate
from sara.data.manifest import Manifest, Record
from sara.data.masks import pool_to_grid
from sara.models.text import CaptionEmbedder, CaptionEncoder
from sara.models.vjepa2 import VideoEncoder


@dataclass
class Stage1Features:
    """One row per (clip, entity) sample; clips and texts are stored once and indexed."""

    tokens: Tensor  # (C, N, Dv) V-JEPA tokens per clip
    grid: tuple[int, int, int]  # (T', H', W'), N = T'·H'·W'
    records: list[int]  # clip row → manifest record index
    clip_of: Tensor  # (S,) sample → clip row
    targets: Tensor  # (S, N) covered fraction of each token's cell by the sample's entity
    prompts: list[str]  # (S) entity prompts, the aligner's caption in Stage 1
    captions: list[str]  # (S) entity captions, the InfoNCE targets
    text: Tensor  # (P, L, Dt) caption-encoder tokens of each distinct prompt
    text_mask: Tensor  # (P, L) True at words
    prompt_row: Tensor  # (S,) sample → row of text
    embeddings: Tensor  # (K, E) normalised embeddings of each distinct caption
    caption_row: Tensor  # (S,) sample → row of embeddings
    whole: Tensor  # (S,) bool: the prompt is the clip's full caption, the target all its entities

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, rows: Tensor) -> Stage1Features:
        """The samples ``rows`` (indices or a boolean mask), sharing the clip and text tables."""
        rows = rows.nonzero().squeeze(1) if rows.dtype == torch.bool else rows
        picked = rows.tolist()
        return replace(
            self,
            clip_of=self.clip_of[rows],
            targets=self.targets[rows],
            prompts=[self.prompts[i] for i in picked],
            captions=[self.captions[i] for i in picked],
            prompt_row=self.prompt_row[rows],
            caption_row=self.caption_row[rows],
            whole=self.whole[rows],
        )


def entity_caption(record: Record, prompt: str) -> str:
    """The InfoNCE caption of an entity: its MTSS cast description when the cast names it."""
    if not isinstance(record.caption, str):
        for member in record.caption.cast:
            if member.name == prompt and member.description:
                return member.description
    return prompt


def _fingerprint(encoder_folder: Path, frames: int, size: int) -> str:
    """Cache folder name: which encoder weights saw which input size."""
    config = (encoder_folder / "config.json").read_bytes()
    weights = sorted((p.name, p.stat().st_size) for p in encoder_folder.glob("*.safetensors"))
    key = config + repr((weights, frames, size)).encode()
    return hashlib.sha256(key).hexdigest()[:16]


def _clip_key(manifest: Manifest, index: int) -> str:
    """Cache file name of a clip: its video file and time range, whatever manifest lists it."""
    record = manifest.records[index]
    where = f"{manifest.resolve(record.video).resolve()}|{record.start}|{record.end}|{record.fps}"
    return hashlib.sha256(where.encode()).hexdigest()[:24]


def _clip_tokens(batch: dict, manifest: Manifest, encoder: VideoEncoder, cache: Path, known: dict[int, Tensor]) -> None:
    """Fill ``known`` with the tokens of the batch's clips, from the cache or the encoder."""
    todo = []
    for position, index in enumerate(batch["index"]):
        if index in known:
            continue
        path = cache / f"{_clip_key(manifest, index)}.safetensors"
        if path.is_file():
            known[index] = load_file(path)["tokens"]
        else:
            todo.append(position)
    if not todo:
        return
    tokens = encoder(batch["frames"][todo]).cpu()  # (b, N, Dv)
    for position, row in zip(todo, tokens):
        index = batch["index"][position]
        known[index] = row.contiguous()
        key = _clip_key(manifest, index)
        save_file({"tokens": known[index]}, cache / f"{key}.tmp.safetensors")
        (cache / f"{key}.tmp.safetensors").replace(cache / f"{key}.safetensors")


def compute_features(
    manifest: Manifest,
    video: VideoEncoder,
    video_folder: Path,
    captions: CaptionEncoder,
    embedder: CaptionEmbedder,
    frames: int,
    size: int,
    cache_dir: Path,
    bad: BadSamples,
    caption_samples: bool = True,
    num_workers: int = 0,
    progress: bool = True,
) -> Stage1Features:
    """Decode every (clip, entity) sample once and encode what the aligner reads; with
    ``caption_samples``, add a (clip, full caption) sample per clip whose entities all load."""
    grid = video.grid(frames, size)
    cache = Path(cache_dir) / _fingerprint(video_folder, frames, size)
    cache.mkdir(parents=True, exist_ok=True)
    dataset = Stage1Dataset(manifest, [Bucket(frames, size, size)])
    loader = DataLoader(dataset, batch_size=8, collate_fn=collate, num_workers=num_workers)
    known: dict[int, Tensor] = {}
    samples: list[tuple[int, str, str, Tensor, bool]] = []
    unions: dict[int, list] = {}  # clip → [entities seen, union of their masks] until all are seen
    for batch in tqdm(loader, desc=f"features {manifest.path.name}", unit="batch", disable=not progress):
        bad.update(batch)
        if not batch["size"]:
            continue
        _clip_tokens(batch, manifest, video, cache, known)
        for index, prompt, masks in zip(batch["index"], batch["prompt"], batch["masks"]):
            record = manifest.records[index]
            target = pool_to_grid(masks, video.tubelet, video.patch).flatten()  # (N,)
            samples.append((index, prompt, entity_caption(record, prompt), target, False))
            if not caption_samples:
                continue
            seen = unions.setdefault(index, [0, torch.zeros_like(masks)])
            seen[0], seen[1] = seen[0] + 1, torch.maximum(seen[1], masks)
            if seen[0] == len(record.entities):  # never, when one of its entities was skipped
                union = pool_to_grid(unions.pop(index)[1], video.tubelet, video.patch).flatten()
                samples.append((index, record.prompt(), record.prompt(), union, True))
    bad.end_epoch(0)
    if not samples:
        raise ValueError(f"{manifest.path}: no (clip, entity) sample could be read")
    records = sorted(known)
    row_of = {index: row for row, index in enumerate(records)}
    prompts = [s[1] for s in samples]
    texts = [s[2] for s in samples]
    prompt_row = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
    caption_row = {c: i for i, c in enumerate(dict.fromkeys(texts))}
    distinct_captions = list(caption_row)
    text, text_mask = _encode_all(captions, list(prompt_row))
    embeddings = torch.cat(
        [embedder(distinct_captions[i : i + 64]).cpu() for i in range(0, len(distinct_captions), 64)]
    )
    return Stage1Features(
        tokens=torch.stack([known[i] for i in records]),
        grid=grid,
        records=records,
        clip_of=torch.tensor([row_of[s[0]] for s in samples]),
        targets=torch.stack([s[3] for s in samples]),
        prompts=prompts,
        captions=texts,
        text=text,
        text_mask=text_mask,
        prompt_row=torch.tensor([prompt_row[p] for p in prompts]),
        embeddings=embeddings,
        caption_row=torch.tensor([caption_row[c] for c in texts]),
        whole=torch.tensor([s[4] for s in samples]),
    )


def _encode_all(encoder: CaptionEncoder, texts: list[str], chunk: int = 64) -> tuple[Tensor, Tensor]:
    """Caption-encoder tokens of every text, padded to one length: ``(P, L, Dt)``, ``(P, L)``."""
    parts = [encoder(texts[i : i + chunk]) for i in range(0, len(texts), chunk)]
    length = max(h.shape[1] for h, _ in parts)
    hidden = torch.cat([torch.nn.functional.pad(h.cpu(), (0, 0, 0, length - h.shape[1])) for h, _ in parts])
    mask = torch.cat([torch.nn.functional.pad(m.cpu(), (0, length - m.shape[1])) for _, m in parts])
    return hidden, mask
