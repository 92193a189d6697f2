"""`sara stage2 precompute`: what the frozen encoders make of every clip, stored once.

Layout of ``cache_dir``: ``shard-RRR-NNNNN.safetensors`` files (``RRR``: the rank that wrote it) holding, per clip ``r`` (its
manifest record), the tensors ``r/latents``, ``r/text``, ``r/vfm`` and, when present,
``r/saliency`` and ``r/mask_saliency`` (see :mod:`sara.stage2.encoders`) and ``r/flow``
(with ``precompute.flow``: :mod:`sara.stage2.motion`; an extra that no training run reads,
so not part of the settings — ``sara moalign train`` names a clip without it); and
``index.json`` — the settings that made the cache and, per clip, its shard and the shapes of
its tensors, all that opening the cache reads (:mod:`sara.stage2.cache_index`) — and
``empty_caption.safetensors``, the states of the empty caption (caption dropout). A shard is
written under a temporary name and renamed, then a line naming its clips is appended to its
rank's index part, so a killed run loses at most the clips of an unfinished shard and a
rerun does only what is missing.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import OrderedDict
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from sara.config.parallel import ParallelConfig
from sara.config.stage2 import Stage2Config, ValidationConfig
from sara.data.datasets import BadSamples, Stage2Dataset, collate
from sara.data.manifest import load_manifest
from sara.parallel.precision import param_dtype
from sara.parallel.world import World, close_world, init_world
from sara.run_dir import CheckpointDir
from sara.stage1.features import FEATURES_VERSION
from sara.stage1.saliency import locate
from sara.stage2.build import Stage2Setup, cache_dir, resolve_setup
from sara.stage2.cache_index import ClipIndex, Part, indexed_records, merge_parts, shard_shapes
from sara.stage2.encoders import Stage2Encoders, warn_overlong
from sara.stage2.flow import clip_flow, token_flow

EMPTY_CAPTION = "empty_caption.safetensors"  # text states of "" (Wan's unconditional input)


def digest(path: str | Path) -> str:
    """SHA-256 of a file's content (read in 16 MiB blocks)."""
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 24):
            sha.update(block)
    return sha.hexdigest()


def fingerprint(config: Stage2Config) -> dict:
    """The settings a cache depends on; a cache made with others is refused. Beside the
    config it holds the *content* of the manifest and of the aligner's weights: a manifest
    edited or an aligner retrained in place changes what the cache would hold."""
    models, data = config.models, config.data
    aligner = digest(CheckpointDir(locate(models.aligner)[1]).weights) if models.aligner else None
    return {
        "features": FEATURES_VERSION,
        "wan": models.wan,
        "vjepa2": models.vjepa2,
        "vjepa2_view": [models.vjepa2_stride, models.vjepa2_short_side],
        "aligner": models.aligner,
        "aligner_weights": aligner,
        "manifest": digest(data.train) if Path(data.train).is_file() else None,
        "text_length": models.text_length,
        "dtype": config.precompute.dtype,
        "frames": data.frames,
        "timing": [data.fps, data.window, config.seed if data.window == "random" else None],
        "sizes": data.buckets or [[data.size, data.size]],
        # named only when not the default, so that caches made before these options stay valid;
        # VAE tiles blend at their seams (other latents), lengths choose other frames
        **({"teacher": models.teacher} if models.teacher != "vjepa2" else {}),
        **({"vae_tile": config.precompute.vae_tile} if config.precompute.vae_tile else {}),
        **({"frame_buckets": sorted(set(data.frame_buckets))} if data.frame_buckets else {}),
    }


def heldout_config(config: Stage2Config) -> Stage2Config:
    """The config that precomputes and reads the held-out clips of the validation loss:
    ``validation.heldout`` as the manifest, ``CACHE/heldout`` as the cache, no caption
    dropout, nothing further held out."""
    held = copy.deepcopy(config)
    held.data.train = config.validation.heldout
    held.data.caption_dropout = 0.0
    held.precompute.cache_dir = str(cache_dir(config) / "heldout")
    held.validation = ValidationConfig()
    return held


def _read_index(folder: Path, settings: dict) -> dict:
    path = folder / "index.json"
    if not path.is_file():
        return {"settings": settings, "clips": {}}
    index = json.loads(path.read_text())
    _check_settings(folder, index, settings)
    return index


def _check_settings(folder: Path, index: dict, settings: dict) -> None:
    if index["settings"] != settings:
        made = index["settings"]
        keys = made.keys() | settings.keys()  # settings added or dropped, as well as changed
        changed = sorted(k for k in keys if made.get(k) != settings.get(k))
        raise ValueError(f"{folder}: cache made with other settings ({', '.join(changed)}); choose another cache_dir")


def precompute(config: Stage2Config, progress: bool = True) -> Path:
    """Encode every clip of ``data.train`` (and of ``validation.heldout`` when the validation
    loss is on, into ``CACHE/heldout``) not yet in the cache; returns the cache folder.

    Under ``torchrun`` the clips are split across the ranks: batch ``b`` of the clips still to
    do goes to rank ``b mod world``; each rank writes its own shards and its own index part
    (``index.rank-R.jsonl``, a line appended after each shard), and rank 0 merges the parts into
    ``index.json`` at the end — and at the start, those a killed run left behind."""
    # frames and sizes must suit the VAE and V-JEPA 2; tiny presets are written here, before the
    # process group exists: once it does, transformers saves weights on rank 0 only, and
    # another rank's copy would be incomplete
    setup = resolve_setup(config)
    world = init_world(ParallelConfig(), config.device)  # every rank encodes its own clips
    try:
        if config.validation.heldout and config.validation.loss_every:
            _precompute(heldout_config(config), setup, world, progress)
        return _precompute(config, setup, world, progress)
    finally:
        close_world(world)


def _precompute(config: Stage2Config, setup: Stage2Setup, world: World, progress: bool) -> Path:
    folder = cache_dir(config)
    settings = fingerprint(config)
    encoders = Stage2Encoders(config, setup.view, param_dtype(config.parallel, world.device)).to(world.device)
    dtype = getattr(torch, config.precompute.dtype)
    if world.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        merge_parts(
            folder,
            _read_index(folder, settings),
            lambda name, record: shard_shapes(safe_open(folder / name, "pt"), record),
        )
        if not (folder / EMPTY_CAPTION).is_file():
            save_file({"text": encoders.empty_caption().to(dtype).contiguous()}, folder / f"{EMPTY_CAPTION}.tmp")
            (folder / f"{EMPTY_CAPTION}.tmp").replace(folder / EMPTY_CAPTION)
    _barrier(world)
    index = _read_index(folder, settings)
    manifest = load_manifest(config.data.train)
    done = indexed_records(index)
    todo = [i for i in range(len(manifest)) if i not in done]
    if world.is_main and todo:
        captions = [manifest.records[i].prompt() for i in todo]
        warn_overlong(encoders.text.tokenizer, captions, config.models.text_length, "models.text_length")
    bad = BadSamples(config.data.max_bad_fraction)
    clips = Stage2Dataset(manifest, setup.buckets, config.data, config.seed, union_masks=True)
    size = config.precompute.batch_size
    groups: dict[int, list[int]] = {}
    for record in todo:  # a batch holds clips of one bucket: they stack
        groups.setdefault(clips.bucket_of[record], []).append(record)
    batches = [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]
    mine = batches[world.rank :: world.size]
    loader = DataLoader(clips, batch_sampler=mine, collate_fn=collate, num_workers=config.data.num_workers)
    part = Part(folder, world.rank)
    pending: dict[str, Tensor] = {}
    for batch in tqdm(loader, desc="stage2 precompute", unit="batch", disable=not (progress and world.is_main)):
        bad.update(batch)
        if not batch["size"]:
            continue
        encoded = encoders(batch["frames"], batch["caption"], list(batch["masks"]))
        for record, frames, clip in zip(batch["index"], batch["frames"], encoded):
            if config.precompute.flow:
                clip["flow"] = token_flow(clip_flow(manifest.records[record], frames), setup.view)
            pending |= {f"{record}/{key}": value.to(dtype).contiguous() for key, value in clip.items()}
        if len({k.split("/")[0] for k in pending}) >= config.precompute.shard_size:
            part.flush(pending)
    if pending:
        part.flush(pending)
    bad.end_epoch(0)
    _barrier(world)
    if world.is_main:
        merge_parts(
            folder,
            _read_index(folder, settings),
            lambda name, record: shard_shapes(safe_open(folder / name, "pt"), record),
        )
    _barrier(world)
    return folder


def _barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


MAX_OPEN = 32  # shards a reader keeps open: bounded, whatever the size of the cache


class FeatureCache(torch.utils.data.Dataset):
    """The clips of a cache folder, each a dict of its tensors.

    Opening it reads ``index.json`` alone (:mod:`sara.stage2.cache_index`: each clip's shard
    and the shapes of its tensors). Shards are opened when a clip of theirs is read, at most
    ``max_open`` at once (the least recently read is closed first)."""

    def __init__(self, folder: str | Path, settings: dict | None = None, max_open: int = MAX_OPEN):
        self.folder = Path(folder)
        if not (self.folder / "index.json").is_file():
            raise ValueError(f"{self.folder}: no index.json (run `sara stage2 precompute` first)")
        index = json.loads((self.folder / "index.json").read_text())
        if settings is not None:
            _check_settings(self.folder, index, settings)
        self.index = ClipIndex(index["clips"], self._header)
        self.records = self.index.records
        self.max_open = max_open
        self._open: OrderedDict[str, object] = OrderedDict()

    def __len__(self) -> int:
        return len(self.records)

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_open": OrderedDict()}  # a loader's worker opens its own handles

    def _shard(self, name: str):
        if name in self._open:
            self._open.move_to_end(name)
        else:
            if len(self._open) >= self.max_open:
                self._open.popitem(last=False)  # safetensors closes a handle no longer referenced
            self._open[name] = safe_open(self.folder / name, "pt")
        return self._open[name]

    def _header(self, shard: str, record: int) -> dict[str, list[int]]:
        return shard_shapes(self._shard(shard), record)

    def shape(self, position: int, key: str) -> tuple[int, ...]:
        """Shape of one tensor of the clip at ``position``."""
        return tuple(self.index.shapes(self.records[position])[key])

    def keys(self, position: int) -> set[str]:
        """Names of the tensors of the clip at ``position``."""
        return set(self.index.shapes(self.records[position]))

    def empty_caption(self) -> Tensor:
        """The text states ``[l, D_t]`` of the empty caption."""
        path = self.folder / EMPTY_CAPTION
        if not path.is_file():
            raise ValueError(f"{self.folder}: no {EMPTY_CAPTION} (run `sara stage2 precompute` again)")
        return load_file(path)["text"]

    def __getitem__(self, position: int) -> dict[str, Tensor]:
        record = self.records[position]
        handle = self._shard(self.index.shard(record))
        return {key: handle.get_tensor(f"{record}/{key}") for key in self.keys(position)} | {"index": record}
