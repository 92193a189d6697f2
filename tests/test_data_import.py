"""`sara data import`: musubi-tuner JSONL, DiffSynth metadata.csv and captioned folders → manifest."""

import json

import numpy as np
import pytest

from sara.cli import main
from sara.data.check import check_manifest
from sara.data.facts import read_facts
from sara.data.importers import import_dataset
from sara.data.manifest import ManifestError, load_manifest
from sara.data.video import write_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Three short clips, two of them in a subfolder, of a size unlike any preset's (48×80)."""
    root = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    for name in ("a.mp4", "clips/b.mp4", "clips/c.mp4"):
        write_video(root / name, rng.integers(0, 255, (9, 3, 48, 80), dtype=np.uint8), fps=16)
    return root


def imported(out):
    manifest = load_manifest(out)
    return manifest, {r.model_extra["id"]: (manifest.resolve(r.video).resolve(), r.caption) for r in manifest.records}


def test_a_musubi_jsonl_imports_and_checks_clean(videos, tmp_path):
    source = videos / "musubi.jsonl"
    lines = [
        {"video_path": "a.mp4", "caption": "a cat jumps"},
        {"video_path": str(videos / "clips/b.mp4"), "caption": " a dog runs ", "frame_extraction": "head"},
    ]
    source.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "data" / "train.jsonl"
    summary = import_dataset(source, out, progress=False)
    manifest, records = imported(out)
    assert summary.records == 2 and summary.without_caption == 0 and not summary.skipped
    imported_facts = read_facts(manifest)  # each video's header and timeline, as check then scans them
    assert summary.probed == 2 and len(imported_facts) == 2
    assert records == {"a": (videos / "a.mp4", "a cat jumps"), "clips_b": (videos / "clips/b.mp4", "a dog runs")}
    assert not manifest.records[0].video.startswith("/")  # written relative to the manifest
    report = check_manifest(manifest, window=9, progress=False)
    assert report.problems == [] and report.records == 2
    assert read_facts(manifest) == imported_facts


def test_a_diffsynth_csv_imports_either_column_naming(videos, tmp_path):
    (videos / "metadata.csv").write_text('video,prompt\na.mp4,"a cat, jumping"\nclips/c.mp4,a bird\n')
    import_dataset(videos / "metadata.csv", tmp_path / "new.jsonl")
    _, records = imported(tmp_path / "new.jsonl")
    assert records == {"a": (videos / "a.mp4", "a cat, jumping"), "clips_c": (videos / "clips/c.mp4", "a bird")}
    old = tmp_path / "old.csv"  # the older file_name,text naming, paths from --root
    old.write_text("file_name,text\nclips/b.mp4,a dog\n")
    import_dataset(old, tmp_path / "old.jsonl", root=videos)
    assert imported(tmp_path / "old.jsonl")[1] == {"clips_b": (videos / "clips/b.mp4", "a dog")}


def test_a_folder_takes_sidecar_captions_and_names_the_uncaptioned(videos, tmp_path, capsys):
    (videos / "a.txt").write_text("a cat jumps\n")
    (videos / "clips" / "b.txt").write_text("a dog runs")
    out = tmp_path / "folder.jsonl"
    assert main(["data", "import", str(videos), "--out", str(out)]) in (0, None)
    assert "wrote 3 records" in capsys.readouterr().out
    manifest, records = imported(out)
    assert records["a"][1] == "a cat jumps" and records["clips_b"][1] == "a dog runs" and records["clips_c"][1] == ""
    assert check_manifest(manifest, progress=False).problems == ["folder.jsonl: record 2 (clips_c): caption: empty"]


def test_missing_videos_are_skipped_by_name(videos, tmp_path):
    source = tmp_path / "musubi.jsonl"
    source.write_text(json.dumps({"video_path": str(videos / "a.mp4"), "caption": "x"}) + "\n")
    source.write_text(source.read_text() + json.dumps({"video_path": "gone.mp4", "caption": "y"}) + "\n")
    summary = import_dataset(source, tmp_path / "out.jsonl")
    assert summary.records == 1 and summary.skipped == [
        f"musubi.jsonl: line 2: video: not found: {tmp_path / 'gone.mp4'}"
    ]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.jsonl", '{"video_path": "a.mp4"}\n{"image_path": "x.png"}\n', r"bad.jsonl: line 2: video_path: missing"),
        ("bad.jsonl", "{not json\n", r"bad.jsonl: line 1: invalid JSON"),
        ("bad.csv", "path,caption\na.mp4,x\n", r"bad.csv: header: no video or file_name column"),
        ("bad.csv", "video,prompt\n,x\n", r"bad.csv: line 2: video: empty"),
        ("bad.txt", "", r"bad.txt: not a folder, .jsonl or .csv"),
    ],
)
def test_a_source_not_in_its_format_names_file_line_and_field(videos, tmp_path, name, text, message):
    source = tmp_path / name
    source.write_text(text)
    with pytest.raises(ManifestError, match=message):
        import_dataset(source, tmp_path / "out.jsonl", root=videos)
