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
import json
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from sara.config.stage1 import Stage1DataConfig
from sara.data.buckets import Bucket
from sara.data.datasets import BadSamples, Stage1Dataset, collate
from sara.data.manifest import Manifest
from sara.data.masks import pool_to_grid
from sara.files import write_text_atomic
from sara.models.text import CaptionEmbedder, CaptionEncoder
from sara.models.vjepa2 import VideoEncoder
from sara.parallel.world import World
from sara.stage1.store import RowTable, TableWriter


@dataclass
class Encoders:
    """The frozen models Stage 1 features come from."""

    video: VideoEncoder  # its folder and dtype are part of the token cache's fingerprint
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


def fingerprint(encoder: VideoEncoder, data: Stage1DataConfig, seed: int) -> str:
    """Cache folder name: which encoder weights, in which dtype, saw which frames, at which size."""
    config = (encoder.folder / "config.json").read_bytes()
    weights = sorted((p.name, p.stat().st_size) for p in encoder.folder.glob("*.safetensors"))
    dtype = str(next(encoder.parameters()).dtype)
    seen = (data.frames, data.shape, data.fps, data.window, seed if data.window == "random" else None, dtype)
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
    todo = {}  # record -> its first position in the batch (a clip's entities share its tokens)
    for position, index in enumerate(batch["index"]):
        if index in known or index in todo:
            continue
        path = cache / f"{_clip_key(manifest, index, random_window)}.safetensors"
        if path.is_file():
            known[index] = path
        else:
            todo[index] = position
    if not todo:
        return
    tokens = encoder(batch["frames"][list(todo.values())]).cpu()  # (b, N, Dv)
    for index, row in zip(todo, tokens, strict=True):
        path = cache / f"{_clip_key(manifest, index, random_window)}.safetensors"
        save_file({"tokens": row.contiguous()}, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        known[index] = path


def _token_cache(
    manifest: Manifest, encoders: Encoders, data: Stage1DataConfig, cache_dir: Path, seed: int
) -> tuple[Path, Stage1Dataset]:
    """The token cache folder of these encoder weights and clip settings, and the samples."""
    cache = Path(cache_dir) / fingerprint(encoders.video, data, seed)
    cache.mkdir(parents=True, exist_ok=True)
    return cache, Stage1Dataset(manifest, [Bucket(data.frames, *data.shape)], data, seed)


def compute_features(
    manifest: Manifest,
    encoders: Encoders,
    data: Stage1DataConfig,
    cache_dir: Path,
    bad: BadSamples,
    seed: int = 0,
    progress: bool = True,
    world: World | None = None,
) -> Stage1Features:
    """Decode every (clip, entity) sample once and encode what the aligner reads; with
    ``data.caption_samples``, add a (clip, full caption) sample per clip whose entities all load.

    The tables stay on disk (:mod:`sara.stage1.store`): V-JEPA tokens in the per-clip cache,
    caption states, targets and embeddings in a scratch folder beside it; memory holds one
    index row per sample. With many processes (``world``), each decodes and encodes the
    samples of its share of the clips (record index ``≡ rank mod size``) and its share of the
    distinct texts, into one folder every process then reads: the work is done once, and the
    features are those of one process."""
    rank, size = (world.rank, world.size) if world is not None and world.distributed else (0, 1)
    video = encoders.video
    grid = video.grid(data.frames, *data.shape)
    cache, dataset = _token_cache(manifest, encoders, data, cache_dir, seed)
    scratch, folder = _scratch(cache, manifest, rank, size)
    random_window = data.window == "random"
    _write_part(dataset, manifest, video, data, cache, folder, bad, rank, size, progress)
    _barrier(size)
    samples, target_rows = _read_parts(folder, size, bad)
    if not samples:
        raise ValueError(f"{manifest.path}: no (clip, entity) sample could be read")
    records = sorted({s[0] for s in samples})
    row_of = {index: row for row, index in enumerate(records)}
    prompts = [s[2] for s in samples]
    prompt_row = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
    captions = [manifest.records[index].prompt() for index in records]
    caption_row = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    _encode_share(encoders.captions, list(prompt_row), folder / "text", ("text", "mask"), rank, size)
    _encode_share(
        lambda texts: (encoders.embedder(texts),), list(caption_row), folder / "embeddings", ("rows",), rank, size
    )
    _barrier(size)
    text_files = _chunk_files(folder / "text", len(prompt_row))
    token_files = [cache / f"{_clip_key(manifest, i, random_window)}.safetensors" for i in records]
    return Stage1Features(
        tokens=RowTable.of_rows([(path, "tokens", None) for path in token_files]),
        grid=grid,
        records=records,
        clip_caption=torch.tensor([caption_row[c] for c in captions]),
        embeddings=RowTable.of_files(_chunk_files(folder / "embeddings", len(caption_row)), "rows"),
        clip_of=torch.tensor([row_of[s[0]] for s in samples]),
        targets=RowTable.of_rows(target_rows),
        prompts=prompts,
        text=RowTable.of_files(text_files, "text", padded=True),
        text_mask=RowTable.of_files(text_files, "mask", padded=True),
        prompt_row=torch.tensor([prompt_row[p] for p in prompts]),
        whole=torch.tensor([s[3] for s in samples]),
        scratch=scratch,
    )


def _barrier(size: int) -> None:
    if size > 1:
        dist.barrier()


def _scratch(cache: Path, manifest: Manifest, rank: int, size: int) -> tuple[tempfile.TemporaryDirectory | None, Path]:
    """A scratch folder in the cache, made by the first of ``size`` processes (which owns it:
    it goes with that process's features) and named to the others."""
    scratch = None
    if rank == 0:
        scratch = tempfile.TemporaryDirectory(dir=cache, prefix=f"features-{manifest.path.stem}-")
    name = [scratch.name if scratch else None]
    if size > 1:
        dist.broadcast_object_list(name, src=0)
    return scratch, Path(name[0])


def _write_part(
    dataset: Stage1Dataset,
    manifest: Manifest,
    video: VideoEncoder,
    data: Stage1DataConfig,
    cache: Path,
    folder: Path,
    bad: BadSamples,
    rank: int,
    size: int,
    progress: bool,
) -> None:
    """Decode the samples of this process's clips, make sure their V-JEPA tokens are cached,
    write their targets, and list them in ``part-RANK.json`` as ``[record, slot, prompt,
    whole]`` (``slot``: the entity's position; a full-caption sample comes after its entities)
    with where each target row lies, and the counts of samples seen and skipped."""
    mine = [i for i, (record, _) in enumerate(dataset.samples) if record % size == rank]
    loader = DataLoader(Subset(dataset, mine), batch_size=8, collate_fn=collate, num_workers=data.num_workers)
    known: dict[int, Path] = {}
    samples: list[list] = []
    targets, pending = TableWriter(folder, f"targets-{rank}"), []
    unions: dict[int, list] = {}  # clip → [entities seen, union of their masks] until all are seen
    for batch in tqdm(loader, desc=f"features {manifest.path.name}", unit="batch", disable=not progress):
        bad.update(batch)
        if not batch["size"]:
            continue
        _clip_tokens(batch, manifest, video, cache, known, data.window == "random")
        for index, entity, prompt, masks in zip(batch["index"], batch["entity"], batch["prompt"], batch["masks"]):
            record = manifest.records[index]
            samples.append([index, entity, prompt, False])
            pending.append(pool_to_grid(masks, video.tubelet, video.patch).flatten())
            if not data.caption_samples:
                continue
            seen = unions.setdefault(index, [0, torch.zeros_like(masks)])
            seen[0], seen[1] = seen[0] + 1, torch.maximum(seen[1], masks)
            if seen[0] == len(record.entities):  # never, when one of its entities was skipped
                samples.append([index, len(record.entities), record.prompt(), True])
                pending.append(pool_to_grid(unions.pop(index)[1], video.tubelet, video.patch).flatten())
        if len(pending) >= CHUNK:
            targets.add(torch.stack(pending))
            pending.clear()
    if pending:
        targets.add(torch.stack(pending))
    bad.end_epoch(0)
    rows = [[path.name, position] for path, _, position in targets.rows]
    part = {"samples": samples, "targets": rows, "seen": bad.seen, "bad": bad.bad}
    write_text_atomic(folder / f"part-{rank}.json", json.dumps(part))


def _read_parts(folder: Path, size: int, bad: BadSamples) -> tuple[list[list], list[tuple[Path, str, int]]]:
    """Every process's samples in the order one process lists them (by clip, then slot) and
    where their target rows lie; the skipped samples of all processes judged together."""
    parts = [json.loads((folder / f"part-{rank}.json").read_text()) for rank in range(size)]
    bad.seen, bad.bad = sum(p["seen"] for p in parts), sum(p["bad"] for p in parts)
    bad.check()
    rows = [(s, (folder / t[0], "rows", t[1])) for p in parts for s, t in zip(p["samples"], p["targets"], strict=True)]
    rows.sort(key=lambda row: (row[0][0], row[0][1]))
    return [s for s, _ in rows], [t for _, t in rows]


def _encode_share(encode, texts: list[str], stem: Path, keys: tuple[str, ...], rank: int, size: int) -> None:
    """``encode`` the chunks of ``texts`` this process owns (chunk ``≡ rank mod size``); each
    chunk's tensors, named ``keys``, go to ``STEM-CHUNK.safetensors``."""
    for chunk in range(rank, _chunks(len(texts)), size):
        out = encode(texts[chunk * CHUNK : (chunk + 1) * CHUNK])
        save_file({k: t.cpu().contiguous() for k, t in zip(keys, out, strict=True)}, _chunk_path(stem, chunk))


def _chunks(count: int) -> int:
    return -(-count // CHUNK)


def _chunk_path(stem: Path, chunk: int) -> Path:
    return stem.with_name(f"{stem.name}-{chunk:06d}.safetensors")


def _chunk_files(stem: Path, count: int) -> list[Path]:
    return [_chunk_path(stem, chunk) for chunk in range(_chunks(count))]
