"""`sara stage2 precompute`: what the frozen encoders make of every clip, stored once.

Layout of ``cache_dir``: ``shard-NNNNN.safetensors`` files holding, per clip ``r`` (its
manifest record), the tensors ``r/latents``, ``r/text``, ``r/vfm`` and, when present,
``r/saliency`` and ``r/mask_saliency`` (see :mod:`sara.stage2.encoders`); and
``index.json`` — the settings that made the cache and the shard of each clip — and
``empty_caption.safetensors``, the states of the empty caption (caption dropout). A shard is
written under a temporary name and renamed, then the index is replaced, so a killed run
loses at most the clips of an unfinished shard and a rerun does only what is missing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from sara.config.stage2 import Stage2Config
from sara.data.datasets import BadSamples, Stage2Dataset, collate
from sara.data.manifest import load_manifest
from sara.device import pick_device
from sara.stage1.features import FEATURES_VERSION
from sara.stage1.saliency import locate
from sara.stage2.encoders import Stage2Encoders, buckets, teacher

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
    aligner = digest(locate(models.aligner)[1] / "model.safetensors") if models.aligner else None
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
    }


def cache_dir(config: Stage2Config) -> Path:
    return Path(config.precompute.cache_dir or Path(config.out_dir) / "cache")


def _read_index(folder: Path, settings: dict) -> dict:
    path = folder / "index.json"
    if not path.is_file():
        return {"settings": settings, "clips": {}}
    index = json.loads(path.read_text())
    _check_settings(folder, index, settings)
    return index


def _check_settings(folder: Path, index: dict, settings: dict) -> None:
    if index["settings"] != settings:
        changed = sorted(k for k in settings if index["settings"].get(k) != settings[k])
        raise ValueError(f"{folder}: cache made with other settings ({', '.join(changed)}); choose another cache_dir")


def precompute(config: Stage2Config, progress: bool = True) -> Path:
    """Encode every clip of ``data.train`` not yet in the cache; returns the cache folder."""
    _, view = teacher(config)  # frames and sizes must suit the VAE and V-JEPA 2
    folder = cache_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    index = _read_index(folder, fingerprint(config))
    manifest = load_manifest(config.data.train)
    todo = [i for i in range(len(manifest)) if str(i) not in index["clips"]]
    encoders = Stage2Encoders(config, view).to(pick_device(config.device))
    dtype = getattr(torch, config.precompute.dtype)
    if not (folder / EMPTY_CAPTION).is_file():
        save_file({"text": encoders.empty_caption().to(dtype).contiguous()}, folder / f"{EMPTY_CAPTION}.tmp")
        (folder / f"{EMPTY_CAPTION}.tmp").replace(folder / EMPTY_CAPTION)
    bad = BadSamples(config.data.max_bad_fraction)
    clips = Stage2Dataset(manifest, buckets(config), config.data, config.seed, union_masks=True)
    size = config.precompute.batch_size
    groups: dict[int, list[int]] = {}
    for record in todo:  # a batch holds clips of one bucket: they stack
        groups.setdefault(clips.bucket_of[record], []).append(record)
    batches = [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]
    loader = DataLoader(clips, batch_sampler=batches, collate_fn=collate, num_workers=config.data.num_workers)
    pending: dict[str, Tensor] = {}
    shard = len({name for name in index["clips"].values()})
    for batch in tqdm(loader, desc="stage2 precompute", unit="batch", disable=not progress):
        bad.update(batch)
        if not batch["size"]:
            continue
        for record, clip in zip(batch["index"], encoders(batch["frames"], batch["caption"], list(batch["masks"]))):
            pending |= {f"{record}/{key}": value.to(dtype).contiguous() for key, value in clip.items()}
        if len({k.split("/")[0] for k in pending}) >= config.precompute.shard_size:
            shard = _flush(folder, index, pending, shard)
    if pending:
        _flush(folder, index, pending, shard)
    bad.end_epoch(0)
    return folder


def _flush(folder: Path, index: dict, tensors: dict[str, Tensor], shard: int) -> int:
    """Write one shard atomically, then the index naming its clips; empties ``tensors``."""
    name = f"shard-{shard:05d}.safetensors"
    save_file(tensors, folder / f"{name}.tmp")
    (folder / f"{name}.tmp").replace(folder / name)
    for record in {k.split("/")[0] for k in tensors}:
        index["clips"][record] = name
    tmp = folder / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    tmp.replace(folder / "index.json")
    tensors.clear()
    return shard + 1


class FeatureCache(torch.utils.data.Dataset):
    """The clips of a cache folder, each a dict of its tensors (shards opened lazily)."""

    def __init__(self, folder: str | Path, settings: dict | None = None):
        self.folder = Path(folder)
        if not (self.folder / "index.json").is_file():
            raise ValueError(f"{self.folder}: no index.json (run `sara stage2 precompute` first)")
        index = json.loads((self.folder / "index.json").read_text())
        if settings is not None:
            _check_settings(self.folder, index, settings)
        self.records = sorted(int(r) for r in index["clips"])
        self.shard_of = {int(r): name for r, name in index["clips"].items()}
        self._open: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self.records)

    def _shard(self, record: int):
        name = self.shard_of[record]
        if name not in self._open:
            self._open[name] = safe_open(self.folder / name, "pt")
        return self._open[name]

    def shape(self, position: int, key: str) -> tuple[int, ...]:
        """Shape of one tensor of the clip at ``position``, from the shard's header."""
        record = self.records[position]
        return tuple(self._shard(record).get_slice(f"{record}/{key}").get_shape())

    def keys(self, position: int) -> set[str]:
        """Names of the tensors of the clip at ``position``, read from the shard's header."""
        prefix = f"{self.records[position]}/"
        return {k[len(prefix) :] for k in self._shard(self.records[position]).keys() if k.startswith(prefix)}

    def empty_caption(self) -> Tensor:
        """The text states ``[l, D_t]`` of the empty caption."""
        path = self.folder / EMPTY_CAPTION
        if not path.is_file():
            raise ValueError(f"{self.folder}: no {EMPTY_CAPTION} (run `sara stage2 precompute` again)")
        return load_file(path)["text"]

    def __getitem__(self, position: int) -> dict[str, Tensor]:
        record = self.records[position]
        handle = self._shard(record)
        return {key: handle.get_tensor(f"{record}/{key}") for key in self.keys(position)} | {"index": record}
