"""Manifest: records, MTSS captions, one-line errors, atomic save."""

import json

import pytest

from sara.data.manifest import ManifestError, load_manifest

MTSS = {
    "global_setup": "A sunny park.",
    "cast": [{"name": "red ball", "description": "a shiny red ball"}, {"name": "dog"}],
    "scene": "green grass",
    "shots": ["the dog chases the ball", {"description": "the ball stops"}],
    "mood": "happy",  # unknown keys are kept out of the prompt, not an error
}


def write(tmp_path, records, suffix=".jsonl"):
    path = tmp_path / f"manifest{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records))
    return path


def test_mtss_caption_is_flattened_deterministically(tmp_path):
    manifest = load_manifest(write(tmp_path, [{"video": "a.mp4", "caption": MTSS}]))
    record = manifest.records[0]
    assert record.prompt() == (
        "A sunny park. Cast: red ball: a shiny red ball; dog. Scene: green grass. "
        "Shot 1: the dog chases the ball. Shot 2: the ball stops."
    )
    assert record.cast_prompts() == ["red ball", "dog"]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_plain_captions_paths_and_extra_keys(tmp_path, suffix):
    records = [
        {"video": "clips/a.mp4", "caption": "a cat", "start": 1.0, "end": 3.5, "fps": 8, "id": "a"},
        {"video": "/abs/b.mp4", "caption": "a dog", "entities": [{"prompt": "dog", "mask": "m/b.npz"}]},
    ]
    manifest = load_manifest(write(tmp_path, records, suffix))
    assert len(manifest) == 2
    assert manifest.resolve(manifest.records[0].video) == tmp_path / "clips/a.mp4"
    assert str(manifest.resolve(manifest.records[1].video)) == "/abs/b.mp4"
    assert manifest.records[0].model_extra == {"id": "a"}
    assert manifest.records[1].entities[0].mask == "m/b.npz"


def test_records_under_a_records_key(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"records": [{"video": "a.mp4", "caption": "x"}]}))
    assert len(load_manifest(path)) == 1


@pytest.mark.parametrize(
    "record, message",
    [
        ({"caption": "x"}, "record 1: video: Field required"),
        ({"video": "a.mp4"}, "record 1: caption: Field required"),
        (
            {"video": "a.mp4", "caption": {"cast": [{"description": "x"}]}},
            "record 1: caption.cast.0.name: Field required",
        ),
        ({"video": "a.mp4", "caption": 5}, "record 1: caption: Input should be a valid string"),
        ({"video": "a.mp4", "caption": "x", "start": 2, "end": 1}, r"record 1: end: must be after start \(2.0\)"),
        ({"video": "a.mp4", "caption": "x", "fps": 0}, "record 1: fps: Input should be greater than 0"),
        (
            {"video": "a.mp4", "caption": "x", "entities": [{"prompt": ""}]},
            "record 1: entities.0.prompt: String should",
        ),
    ],
)
def test_invalid_record_is_one_line_naming_file_record_and_field(tmp_path, record, message):
    path = write(tmp_path, [{"video": "ok.mp4", "caption": "fine"}, record])
    with pytest.raises(ManifestError, match=f"manifest.jsonl: {message}") as caught:
        load_manifest(path)
    assert "\n" not in str(caught.value)


def test_unreadable_manifests(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        load_manifest(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"video": "a.mp4", "caption": "x"}\n{oops\n')
    with pytest.raises(ManifestError, match="bad.jsonl: line 2: invalid JSON"):
        load_manifest(bad)
    scalar = tmp_path / "scalar.json"
    scalar.write_text("3")
    with pytest.raises(ManifestError, match="expected a list of records"):
        load_manifest(scalar)


def test_save_round_trips(tmp_path):
    path = write(tmp_path, [{"video": "a.mp4", "caption": MTSS, "id": "a", "entities": [{"prompt": "dog"}]}])
    manifest = load_manifest(path)
    manifest.records[0].entities[0].mask = "masks/a_0.npz"
    manifest.save()
    again = load_manifest(path)
    assert again.records[0].entities[0].mask == "masks/a_0.npz"
    assert again.records[0].prompt() == manifest.records[0].prompt()
    assert not list(tmp_path.glob("*.tmp"))
