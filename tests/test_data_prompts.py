"""Entity prompts from an OpenAI-compatible endpoint: a real local HTTP server on 127.0.0.1."""

import json
import logging
import time

import pytest
from chat import chat_server, refused_url

from sara.cli import main
from sara.data.manifest import load_manifest
from sara.data.prompts import fill_prompts, parse_answer
from sara.endpoint import AnswerError, Endpoint

CAST = {"global_setup": "A park.", "cast": [{"name": "dog"}, {"name": "red ball"}], "scene": "", "shots": ["play"]}


_FLAKY_ERRORS = [500]  # the flaky model's first request fails, the later ones are answered


def _answer(body: dict) -> str | int:
    """Answers by model name: good, malformed, slow, or an HTTP 500 (then good)."""
    model = body["model"]
    if model == "slow":
        time.sleep(1.0)
    if model == "flaky" and _FLAKY_ERRORS:
        return _FLAKY_ERRORS.pop()
    caption = body["messages"][1]["content"]
    return "sure! here you go" if model == "malformed" else json.dumps({"entities": [f"thing of {len(caption)}"]})


@pytest.fixture(scope="module")
def server():
    with chat_server(_answer) as (url, _):
        yield url


def manifest_file(tmp_path, records):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_parse_answer_is_strict():
    assert parse_answer('{"entities": ["dog", " red ball "]}') == ["dog", "red ball"]
    for bad in [
        "[]",
        "no",
        '{"entities": []}',
        '{"entities": [1]}',
        '{"items": ["a"]}',
        json.dumps({"entities": ["x"] * 9}),
    ]:
        with pytest.raises(AnswerError):
            parse_answer(bad)


def test_good_answers_fill_the_manifest_and_keep_existing_entities(server, tmp_path):
    path = manifest_file(
        tmp_path,
        [
            {"video": "a.mp4", "caption": "a long caption about a dog"},
            {"video": "b.mp4", "caption": CAST},
            {"video": "c.mp4", "caption": "x", "entities": [{"prompt": "kept", "mask": "m.npz"}]},
        ],
    )
    stats = fill_prompts(load_manifest(path), Endpoint(server, "good"), concurrency=2, progress=False)
    assert (stats.asked, stats.fallbacks, stats.kept) == (2, 0, 1)
    records = load_manifest(path).records
    assert [e.prompt for e in records[0].entities] == ["thing of 26"]
    assert records[2].entities[0].mask == "m.npz"


@pytest.mark.parametrize("model", ["malformed", "slow"])
def test_bad_or_slow_answers_fall_back_to_the_cast(server, tmp_path, caplog, model):
    path = manifest_file(tmp_path, [{"video": "a.mp4", "caption": CAST, "id": "clip_a"}])
    endpoint = Endpoint(server, model, timeout=0.3, retries=1)
    with caplog.at_level(logging.WARNING, logger="sara.data.prompts"):
        stats = fill_prompts(load_manifest(path), endpoint, progress=False)
    assert (stats.fallbacks, stats.from_cast) == (1, 1)
    assert [e.prompt for e in load_manifest(path).records[0].entities] == ["dog", "red ball"]
    (warning,) = caplog.records
    assert warning.getMessage().startswith("m.jsonl: record 0 (clip_a): prompts: no usable answer after 2 tries")


def test_a_server_error_is_retried(server, tmp_path):
    path = manifest_file(tmp_path, [{"video": "a.mp4", "caption": "one dog"}])
    stats = fill_prompts(load_manifest(path), Endpoint(server, "flaky", retries=2), progress=False)
    assert stats.fallbacks == 0
    assert load_manifest(path).records[0].entities[0].prompt == "thing of 7"


def test_refused_connection_falls_back(tmp_path, caplog):
    path = manifest_file(tmp_path, [{"video": "a.mp4", "caption": CAST}, {"video": "b.mp4", "caption": "plain"}])
    with caplog.at_level(logging.WARNING, logger="sara.data.prompts"):
        stats = fill_prompts(load_manifest(path), Endpoint(refused_url(), "m", 1.0, 0), progress=False)
    assert (stats.fallbacks, stats.from_cast, stats.without) == (2, 1, 1)
    assert all("ConnectError" in r.getMessage() for r in caplog.records)


def test_cli_without_endpoint_uses_the_cast(tmp_path, capsys):
    path = manifest_file(tmp_path, [{"video": "a.mp4", "caption": CAST}])
    assert main(["data", "prompts", str(path)]) == 0
    assert "1 from the cast list" in capsys.readouterr().out
    assert [e.prompt for e in load_manifest(path).records[0].entities] == ["dog", "red ball"]
    assert main(["data", "prompts", str(path), "--endpoint", "http://127.0.0.1:1/v1"]) == 2
