"""The Stage 2 cache opens on its index alone and keeps a bounded number of shards open; a
rank's index part survives a kill mid-line."""

import json
from unittest import mock

import torch
from safetensors import safe_open

from sara.stage2 import cache as cache_module
from sara.stage2.cache import FeatureCache
from sara.stage2.cache_index import Part, from_columns, merge_parts, to_columns


def _write(folder, shards: int = 4, per_shard: int = 2) -> dict[int, dict]:
    """``shards`` shards of ``per_shard`` clips, merged into index.json; returns the clips' tensors."""
    folder.mkdir(exist_ok=True)
    part, clips = Part(folder, 0), {}
    for shard in range(shards):
        pending = {}
        for record in range(shard * per_shard, (shard + 1) * per_shard):
            clips[record] = {"latents": torch.full((4, 1, 2, 3 + record % 2), float(record)), "vfm": torch.ones(5, 6)}
            pending |= {f"{record}/{key}": value for key, value in clips[record].items()}
        part.flush(pending)
    merge_parts(folder, {"settings": {}, "clips": {}}, header=None)
    return clips


def _counting_opens():
    calls = []

    def opened(*args, **kwargs):
        calls.append(args[0])
        return safe_open(*args, **kwargs)

    return calls, mock.patch.object(cache_module, "safe_open", opened)


def test_opening_reads_the_index_alone_and_shards_stay_bounded(tmp_path):
    clips = _write(tmp_path)
    calls, patch = _counting_opens()
    with patch:
        cache = FeatureCache(tmp_path, max_open=2)
        shapes = [cache.shape(p, "latents") for p in range(len(cache))]
        assert [cache.keys(p) for p in range(len(cache))] == [{"latents", "vfm"}] * 8
        assert calls == []  # no shard header read to open the cache and bucket its clips
        assert shapes == [(4, 1, 2, 3 + r % 2) for r in range(8)]
        for position in (0, 2, 4, 6, 0):  # shards 0, 1, 2, 3, then 0 again
            clip = cache[position]
            assert torch.equal(clip["latents"], clips[cache.records[position]]["latents"])
    assert len(calls) == 5  # two open at most: shard 0 was closed, then opened again


def test_a_cache_indexed_before_shapes_were_recorded_still_opens(tmp_path):
    _write(tmp_path)
    index = json.loads((tmp_path / "index.json").read_text())
    rows = from_columns(index["clips"])
    index["clips"] = {r: row["shard"] for r, row in rows.items()}  # the older index: shard names alone
    (tmp_path / "index.json").write_text(json.dumps(index))
    cache = FeatureCache(tmp_path)
    assert cache.shape(3, "latents") == (4, 1, 2, 4) and cache.keys(3) == {"latents", "vfm"}


def test_a_line_cut_by_a_kill_loses_only_its_shards_clips(tmp_path):
    part = Part(tmp_path, 0)
    part.flush({"0/latents": torch.zeros(2), "1/latents": torch.zeros(2)})
    part.flush({"2/latents": torch.zeros(2)})
    with open(part.path) as lines:
        whole = lines.read()
    part.path.write_text(whole[: whole.rindex('"2"') + 5])  # the last line cut short
    merge_parts(tmp_path, {"settings": {}, "clips": {}}, header=None)
    assert FeatureCache(tmp_path).records == [0, 1] and not part.path.exists()
    assert Part(tmp_path, 0).count == 2  # numbering goes on past the shard that lost its line


def test_columns_hold_every_clips_shapes_and_missing_tensors():
    rows = {
        "3": {"shard": "b.safetensors", "shapes": {"latents": [16, 3, 8, 8], "text": [5, 32]}},
        "1": {"shard": "a.safetensors", "shapes": {"latents": [16, 2, 8, 8], "text": [7, 32], "saliency": [64]}},
    }
    columns = to_columns(rows)
    assert columns["records"] == [1, 3] and columns["shards"] == ["a.safetensors", "b.safetensors"]
    assert columns["fields"]["saliency"] == {"ndim": 1, "shapes": [64, -1]}  # clip 3 has none
    assert from_columns(columns) == rows
