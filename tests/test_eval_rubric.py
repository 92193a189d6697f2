"""The VLM rubric against a real local HTTP server on 127.0.0.1: good, malformed, incomplete,
slow and refused answers; the strict schema; frames shifted per repeat; the answer cache."""

import hashlib
import json
import time

import numpy as np
import pytest
from chat import chat_server, refused_url

from sara.cli import main
from sara.endpoint import AnswerError, sample_frames
from sara.eval.rubric import load_rubric, parse_scores
from sara.shapes.render import SynthSpec, synthesize

RUBRIC = "configs/eval/rubric.yaml"


def _judge(body: dict) -> str:
    """Answers by model name. ``good`` scores every dimension from a hash of the first frame,
    so frames shifted between repeats give different scores."""
    model = body["model"]
    if model == "slow":
        time.sleep(1.0)
    names = body["response_format"]["json_schema"]["schema"]["required"]
    images = [c["image_url"]["url"] for c in body["messages"][1]["content"] if c["type"] == "image_url"]
    score = 1 + int(hashlib.sha256(images[0].encode()).hexdigest()[:4], 16) % 5
    answer = {n: {"score": score, "evidence": f"frame shows {n}"} for n in names}
    if model == "incomplete":
        answer.pop(names[0])
    return "I think it is good" if model == "malformed" else json.dumps(answer)


@pytest.fixture(scope="module")
def judge():
    with chat_server(_judge) as served:
        yield served


@pytest.fixture
def server(judge):
    judge[1].clear()
    return judge[0]


@pytest.fixture
def calls(judge):
    return judge[1]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    synthesize(SynthSpec(num=3, frames=13, size=64, heldout_fraction=0.0), root, workers=1, progress=False)
    return root / "train.jsonl"


def rubric_args(clips, server, model, out, *more):
    args = ["eval", "rubric", "--manifest", str(clips), "--endpoint", server, "--model", model, "--out", str(out)]
    return [*args, "--timeout", "0.3", "--retries", "1", *more]


def test_the_rubric_file_holds_13_dimensions_and_answers_are_strict():
    rubric = load_rubric(RUBRIC)
    assert len(rubric.names) == 13 and rubric.version == "sara-rubric-1"
    good = {n: {"score": 3, "evidence": "a red square"} for n in rubric.names}
    assert parse_scores(json.dumps(good), rubric)["count"] == {"score": 3, "evidence": "a red square"}
    for bad in (
        "not json",
        json.dumps({k: v for k, v in good.items() if k != "count"}),
        json.dumps(good | {"count": {"score": 6, "evidence": ""}}),
        json.dumps(good | {"count": {"score": "4", "evidence": ""}}),
        json.dumps(good | {"count": {"score": True, "evidence": ""}}),
        json.dumps(good | {"extra": {"score": 3, "evidence": ""}}),
    ):
        with pytest.raises(AnswerError):
            parse_scores(bad, rubric)


def test_repeats_shift_the_sampled_frames():
    video = np.arange(33)[:, None, None, None].repeat(2, 1)  # (T, ...) frame t holds t
    first = sample_frames(video, 8, 0.0)[:, 0, 0, 0].tolist()
    shifted = sample_frames(video, 8, 0.5)[:, 0, 0, 0].tolist()
    assert first == [0, 4, 8, 12, 16, 20, 24, 28] and shifted == [2, 6, 10, 14, 18, 22, 26, 30]


def test_good_answers_are_scored_summarised_and_cached(server, calls, clips, tmp_path, capsys):
    out = tmp_path / "good"
    assert main(rubric_args(clips, server, "good", out, "--frames", "6", "--repeats", "2")) == 0
    request = calls[0]
    assert request["temperature"] == 0 and request["response_format"]["json_schema"]["strict"] is True
    images = [c for c in request["messages"][1]["content"] if c["type"] == "image_url"]
    assert len(images) == 6 and images[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert "motion_direction" in request["messages"][0]["content"]
    rows = [json.loads(line) for line in (out / "rubric.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["scores"] is not None for r in rows)  # 3 videos × 2 repeats
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rubric"] == "sara-rubric-1" and len(summary) == 14
    per_video = {}
    for row in rows:
        per_video.setdefault(row["video"], []).append(row["scores"]["count"]["score"])
    assert summary["count"]["mean"] == pytest.approx(np.mean([np.mean(s) for s in per_video.values()]))
    assert summary["count"]["noise"] == pytest.approx(np.mean([np.std(s) for s in per_video.values()]))
    assert summary["count"]["noise"] > 0  # shifted frames, other answers
    assert "6 of 6 requests answered (0 cached)" in capsys.readouterr().out

    asked = len(calls)
    assert main(rubric_args(clips, server, "good", out, "--frames", "6", "--repeats", "2")) == 0
    assert len(calls) == asked and "(6 cached)" in capsys.readouterr().out
    assert main(rubric_args(clips, server, "good", out, "--frames", "8", "--repeats", "2")) == 0
    assert len(calls) == asked + 6  # other frames: other answers


@pytest.mark.parametrize("model", ["malformed", "incomplete", "slow"])
def test_bad_answers_are_retried_then_left_out(server, calls, clips, tmp_path, capsys, model):
    assert main(rubric_args(clips, server, model, tmp_path / model)) == 1
    assert len(calls) == 6  # 3 videos, 2 tries each
    assert "0 of 3 requests answered" in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / model / "rubric.jsonl").read_text().splitlines()]
    assert all(r["scores"] is None and "no usable answer after 2 tries" in r["error"] for r in rows)


def test_a_refused_connection_is_left_out(clips, tmp_path, capsys):
    assert main(rubric_args(clips, refused_url(), "m", tmp_path / "r")) == 1
    assert "0 of 3 requests answered" in capsys.readouterr().out
