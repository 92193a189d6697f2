"""MTSS captions from video against a real local HTTP server on 127.0.0.1: good, malformed,
incomplete, slow and refused answers; the strict schema; the hint; the cache; entity prompts."""

import json
import logging
import time

import numpy as np
import pytest
from chat import chat_server, refused_url

from sara.cli import main
from sara.data.caption import Captioner, caption_manifest, parse_caption
from sara.data.manifest import load_manifest
from sara.data.video import write_video
from sara.endpoint import AnswerError, Endpoint

GOOD = {
    "global_setup": "A sunny park in the afternoon.",
    "cast": [{"name": "golden retriever", "description": "a dog"}, {"name": "red frisbee", "description": "a disc"}],
    "scene": "a lawn",
    "shots": ["the golden retriever catches the red frisbee"],
}
MTSS = {"global_setup": "Kept.", "cast": [{"name": "cat"}], "scene": "", "shots": ["sits"]}


def _answer(body: dict) -> str:
    """By model name. ``good`` names the frame count and the hint's length in its setup."""
    model = body["model"]
    if model == "slow":
        time.sleep(1.0)
    parts = body["messages"][1]["content"]
    images = sum(p["type"] == "image_url" for p in parts)
    answer = GOOD | {"global_setup": f"{images} frames; {parts[0]['text'][:40]}"}
    if model == "incomplete":
        answer.pop("cast")
    return "a dog plays" if model == "malformed" else json.dumps(answer)


@pytest.fixture(scope="module")
def served():
    with chat_server(_answer) as served:
        yield served


@pytest.fixture
def manifest(tmp_path):
    """A plain caption, an empty one with entities already named, an MTSS one: clips of 48×80."""
    rng = np.random.default_rng(0)
    for name in "abc":
        write_video(tmp_path / f"{name}.mp4", rng.integers(0, 255, (12, 3, 48, 80), dtype=np.uint8), fps=8)
    return write_records(tmp_path / "train.jsonl")


def write_records(path):
    records = [
        {"video": "a.mp4", "caption": "a dog and a frisbee", "id": "a", "start": 0.25, "end": 1.25},
        {"video": "b.mp4", "caption": "", "id": "b", "entities": [{"prompt": "named before"}]},
        {"video": "c.mp4", "caption": MTSS, "id": "c"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_parse_caption_is_strict():
    assert parse_caption(json.dumps(GOOD)).cast[1].name == "red frisbee"
    for bad in (
        "a dog plays",
        json.dumps({k: v for k, v in GOOD.items() if k != "shots"}),
        json.dumps(GOOD | {"cast": []}),
        json.dumps(GOOD | {"cast": [{"name": "x"}] * 9}),
        json.dumps(GOOD | {"cast": [{"name": "a very long name of far more than eight words here"}]}),
        json.dumps(GOOD | {"shots": [" "]}),
        json.dumps(GOOD | {"global_setup": ""}),
    ):
        with pytest.raises(AnswerError):
            parse_caption(bad)


def test_good_answers_write_mtss_captions_entities_and_the_cache(served, manifest, capsys):
    url, calls = served
    calls.clear()
    args = ["data", "caption", str(manifest), "--endpoint", url, "--model", "good", "--frames", "6"]
    assert main(args) == 0
    assert "2 MTSS captions written (0 cached), 1 kept, 0 failed" in capsys.readouterr().out
    a, b, c = load_manifest(manifest).records
    request = next(r for r in calls if "a dog and a frisbee" in r["messages"][1]["content"][0]["text"])
    assert request["temperature"] == 0 and request["response_format"]["json_schema"]["strict"] is True
    assert request["response_format"]["json_schema"]["schema"]["required"] == ["global_setup", "cast", "scene", "shots"]
    assert a.caption.global_setup.startswith("6 frames; A plain caption of this clip")  # frames of its range, the hint
    assert b.caption.global_setup == "6 frames; Frames in order:"  # no caption: no hint
    assert [e.prompt for e in a.entities] == ["golden retriever", "red frisbee"]  # from the cast
    assert [e.prompt for e in b.entities] == ["named before"]  # entities it had are kept
    assert c.caption.global_setup == "Kept." and a.prompt().startswith("6 frames")
    assert len(list((manifest.parent / "caption_cache").glob("*.json"))) == 2

    # the plain captions again: every answer comes from the cache
    write_records(manifest)
    asked = len(calls)
    stats = caption_manifest(
        load_manifest(manifest), Captioner(Endpoint(url, "good"), 6), manifest.parent / "caption_cache", progress=False
    )
    assert (stats.written, stats.cached, len(calls)) == (2, 2, asked)


@pytest.mark.parametrize("model", ["malformed", "incomplete", "slow"])
def test_bad_answers_are_retried_then_the_caption_is_kept(served, manifest, caplog, model):
    url, calls = served
    calls.clear()
    captioner = Captioner(Endpoint(url, model, timeout=0.3, retries=1), frames=4)
    with caplog.at_level(logging.WARNING, logger="sara.data.caption"):
        stats = caption_manifest(load_manifest(manifest), captioner, manifest.parent / "cache", progress=False)
    assert (stats.written, stats.failed, stats.kept) == (0, 2, 1) and len(calls) == 4  # 2 clips, 2 tries each
    assert load_manifest(manifest).records[0].caption == "a dog and a frisbee"
    assert any(
        r.getMessage().startswith("train.jsonl: record 0 (a): caption: no usable answer after 2 tries")
        for r in caplog.records
    )


def test_a_refused_connection_and_an_unreadable_video_are_counted(manifest, caplog):
    (manifest.parent / "b.mp4").write_bytes(b"not a video")
    captioner = Captioner(Endpoint(refused_url(), "m", timeout=1.0, retries=0))
    with caplog.at_level(logging.WARNING, logger="sara.data.caption"):
        stats = caption_manifest(load_manifest(manifest), captioner, manifest.parent / "cache", progress=False)
    assert stats.failed == 2
    messages = sorted(r.getMessage() for r in caplog.records)
    assert "ConnectError" in messages[0] and messages[1].startswith("train.jsonl: record 1 (b): caption:")
