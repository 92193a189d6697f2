"""VBench: prompt suites read as VBench ships them, videos named and seeded by its protocol
(sampled with the tiny Wan pipeline), the command run in its own environment, its results
read back."""

import json
import os
import stat

import pytest

from sara.cli import main
from sara.data.video import decode_clip
from sara.eval.vbench import read_prompts, read_results, sample_plan, vbench_command
from sara.models.presets import wan_folder

FULL_INFO = [
    {"prompt_en": "a cat. on a mat", "dimension": ["subject_consistency", "dynamic_degree"]},
    {"prompt_en": "a red car", "dimension": ["color"]},
    {"prompt_en": "a dog running", "dimension": ["dynamic_degree"]},
    {"prompt_en": "a cat. on a mat", "dimension": ["motion_smoothness"]},
]


@pytest.fixture
def suite(tmp_path):
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "VBench_full_info.json").write_text(json.dumps(FULL_INFO))
    return tmp_path / "suite"


def test_prompts_are_read_per_dimension(suite, tmp_path):
    assert read_prompts(suite, ["dynamic_degree"]) == ["a cat. on a mat", "a dog running"]
    assert read_prompts(suite, ["motion_smoothness", "subject_consistency"]) == ["a cat. on a mat"]  # once
    per_dimension = tmp_path / "checkout" / "prompts_per_dimension"
    per_dimension.mkdir(parents=True)
    (per_dimension / "color.txt").write_text("a red car\n\na blue bird\n")
    assert read_prompts(tmp_path / "checkout", ["color"]) == ["a red car", "a blue bird"]
    with pytest.raises(ValueError, match="'colour'; choose from subject_consistency"):
        read_prompts(suite, ["colour"])
    with pytest.raises(ValueError, match="no VBench_full_info.json or prompts_per_dimension"):
        read_prompts(tmp_path, ["color"])


def test_videos_are_named_and_seeded_by_the_protocol(tmp_path):
    jobs = sample_plan(["a cat. on a mat", "a dog"], tmp_path, seed=7, per_prompt=5)
    assert [j.stem.name for j in jobs[:6]] == [f"a cat. on a mat-{i}" for i in range(5)] + ["a dog-0"]
    assert [j.seed for j in jobs] == [7, 8, 9, 10, 11] * 2


def test_vbench_sample_writes_the_protocols_files(suite, tmp_path, capsys):
    """Two prompts × two videos from the tiny Wan pipeline: {prompt}-{i}.mp4 (a prompt with a
    full stop keeps it), seeds recorded; index i has seed + i whatever the prompt."""
    pipeline = wan_folder("tiny", tmp_path / "models")
    out = tmp_path / "videos"
    args = ["eval", "vbench-sample", "--pipeline", str(pipeline), "--dimension", "dynamic_degree"]
    args += ["--suite", str(suite), "--out", str(out), "--per-prompt", "2", "--seed", "3"]
    args += ["--frames", "5", "--height", "32", "--width", "32", "--steps", "2", "--text-length", "16"]
    assert main(args) == 0
    names = sorted(p.name for p in out.glob("*.mp4"))
    assert names == ["a cat. on a mat-0.mp4", "a cat. on a mat-1.mp4", "a dog running-0.mp4", "a dog running-1.mp4"]
    seeds = json.loads((out / "seeds.json").read_text())
    assert [(s["file"], s["seed"]) for s in seeds] == [(n, 3 + int(n[-5])) for n in names]
    frames = {n: decode_clip(out / n, None, None).frames for n in names}
    assert frames[names[0]].shape == (5, 3, 32, 32)
    assert not (frames[names[0]] == frames[names[1]]).all()  # other seed, other video
    assert "wrote 4 videos of 2 prompts" in capsys.readouterr().out


def _vbench_results(out, scores):
    out.mkdir(parents=True, exist_ok=True)
    body = {d: [s, [{"video_path": f"v{i}.mp4", "video_results": s} for i in range(3)]] for d, s in scores.items()}
    (out / "results_2026_eval_results.json").write_text(json.dumps(body))


def test_results_are_read_from_vbench_json(tmp_path):
    _vbench_results(tmp_path / "r", {"subject_consistency": 0.95, "dynamic_degree": 0.4})
    table = read_results(tmp_path / "r")
    assert table["subject_consistency"] == {"score": 0.95, "videos": 3, "file": "results_2026_eval_results.json"}
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x_eval_results.json").write_text(json.dumps({"color": {"score": 1}}))
    with pytest.raises(ValueError, match="color: expected \\[score, \\[per-video results\\]\\]"):
        read_results(tmp_path / "bad")
    with pytest.raises(ValueError, match="no \\*_eval_results.json"):
        read_results(tmp_path)


def test_vbench_runs_in_its_own_environment(suite, tmp_path, capsys):
    """The command VBench documents, run with the weights folder in VBENCH_CACHE_DIR; a
    stand-in executable records what it was given and writes VBench-format results."""
    out, env = tmp_path / "out", tmp_path / "env"
    command = vbench_command("videos", ["dynamic_degree", "color"], out, suite / "VBench_full_info.json", env)
    assert command == [
        str(env / "bin" / "vbench"), "evaluate", "--videos_path", "videos", "--dimension", "dynamic_degree", "color",
        "--output_path", str(out), "--full_json_dir", str(suite / "VBench_full_info.json"),
        "--load_ckpt_from_local", "True",
    ]  # fmt: skip
    assert main(["eval", "vbench", "videos", "--dimension", "color", "--out", str(out), "--env", str(env)]) == 2
    assert "no VBench environment (make vbench-env)" in capsys.readouterr().err

    (env / "bin").mkdir(parents=True)
    script = env / "bin" / "vbench"
    script.write_text(
        "#!/bin/sh\n"
        'echo "$VBENCH_CACHE_DIR $@" > "$0.args"\n'
        f"mkdir -p {out}\n"
        f'echo \'{{"color": [0.5, [{{"video_path": "a.mp4", "video_results": 0.5}}]]}}\' '
        f"> {out}/results_1_eval_results.json\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    args = ["eval", "vbench", "videos", "--dimension", "color", "--out", str(out), "--env", str(env)]
    assert main([*args, "--suite", str(suite), "--cache", str(tmp_path / "weights")]) == 0
    recorded = (env / "bin" / "vbench.args").read_text().split()
    assert recorded[0] == str(tmp_path / "weights") and recorded[1:4] == ["evaluate", "--videos_path", "videos"]
    assert json.loads((out / "vbench.json").read_text())["color"]["score"] == 0.5
    os.remove(out / "results_1_eval_results.json")
    assert main([*args, "--collect"]) == 2  # nothing to collect any more
