"""The VLM rubric: a vision-language model behind any OpenAI-compatible endpoint (vLLM or
SGLang serving Qwen2.5-VL / Qwen3-VL) scores each video against its prompt on the
dimensions of a versioned rubric (``configs/eval/rubric.yaml``), 1–5 with evidence.

Each request carries ``frames`` frames sampled uniformly from the video (PNG data URLs, in
temporal order) and the prompt; the answer must match a strict JSON schema (every
dimension, an integer score, a string of evidence), asked at temperature 0. Repeat ``r`` of
``R`` shifts the sampled positions by ``r / R`` of the spacing, so the spread between
repeats measures the judge's noise. Answers are cached by a hash of (video bytes, prompt,
rubric, model, frames, offset): a run interrupted or repeated asks only what is new. A
video that gets no valid answer after the retries is logged, counted and left out.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
from tqdm import tqdm

from sara.config import load_config
from sara.data.video import read_video
from sara.endpoint import AnswerError, Endpoint, answer_key, ask_each, image_parts, sample_frames
from sara.files import write_text_atomic
from sara.stats import bootstrap

log = logging.getLogger(__name__)
EVIDENCE_WORDS = 40  # longest evidence string accepted


@dataclass
class Dimension:
    name: str
    question: str


@dataclass
class Rubric:
    version: str
    instruction: str
    dimensions: list[Dimension] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def schema(self) -> dict:
        """The JSON schema every answer must match (OpenAI ``response_format``)."""
        entry = {
            "type": "object",
            "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5}, "evidence": {"type": "string"}},
            "required": ["score", "evidence"],
            "additionalProperties": False,
        }
        schema = {
            "type": "object",
            "properties": {name: entry for name in self.names},
            "required": self.names,
            "additionalProperties": False,
        }
        return {"type": "json_schema", "json_schema": {"name": "rubric", "strict": True, "schema": schema}}

    def system_prompt(self) -> str:
        lines = [f"- {d.name}: {d.question}" for d in self.dimensions]
        shape = ", ".join(f'"{n}": {{"score": 1-5, "evidence": "..."}}' for n in self.names[:2])
        return f"{self.instruction}\n\nDimensions:\n" + "\n".join(lines) + f"\n\nAnswer as {{{shape}, ...}}."


def load_rubric(path: str | Path) -> Rubric:
    """Read a rubric YAML file.

    Raises:
        ValueError: one line naming the file and the problem.
    """
    rubric = load_config(Rubric, path)
    if not rubric.dimensions:
        raise ValueError(f"{path}: dimensions: at least one is needed")
    if len(set(rubric.names)) != len(rubric.names):
        raise ValueError(f"{path}: dimensions: names must be unique")
    return rubric


def parse_scores(content: str, rubric: Rubric) -> dict[str, dict]:
    """``{dimension: {"score": 1..5, "evidence": str}}`` of a strict answer; anything else raises."""
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        raise AnswerError("answer is not JSON") from None
    if not isinstance(data, dict) or set(data) != set(rubric.names):
        raise AnswerError("answer does not hold exactly the rubric's dimensions")
    for name, entry in data.items():
        score = entry.get("score") if isinstance(entry, dict) else None
        evidence = entry.get("evidence") if isinstance(entry, dict) else None
        if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
            raise AnswerError(f"{name}: score is not an integer from 1 to 5")
        if not isinstance(evidence, str) or len(evidence.split()) > EVIDENCE_WORDS:
            raise AnswerError(f"{name}: evidence is not a string of at most {EVIDENCE_WORDS} words")
    return {name: {"score": data[name]["score"], "evidence": data[name]["evidence"].strip()} for name in rubric.names}


@dataclass(frozen=True)
class Judge:
    """Who judges and how: the endpoint, the rubric, frames per request, repeats per video."""

    endpoint: Endpoint
    rubric: Rubric
    frames: int = 8
    repeats: int = 1

    def key(self, video: Path, prompt: str, repeat: int) -> str:
        parts = [prompt, self.rubric.digest(), self.endpoint.model, str(self.frames), f"{repeat}/{self.repeats}"]
        return answer_key(video, *parts)

    def ask(self, client: httpx.Client, video: Path, prompt: str, repeat: int) -> dict[str, dict]:
        frames = sample_frames(read_video(video).numpy(), self.frames, repeat / self.repeats)
        content = [{"type": "text", "text": f"Prompt: {prompt}\nFrames in order:"}]
        content += image_parts(frames)
        messages = [{"role": "system", "content": self.rubric.system_prompt()}, {"role": "user", "content": content}]
        return self.endpoint.ask(client, messages, lambda text: parse_scores(text, self.rubric), self.rubric.schema())


def judge_videos(
    items: list[tuple[Path, str]], judge: Judge, cache: Path, concurrency: int = 4, progress: bool = True
) -> list[dict]:
    """One row per (video, repeat): ``video``, ``prompt``, ``repeat``, ``scores`` (None when no
    valid answer came; the reason in ``error``). Answers are read from and written to ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    jobs = [(video, prompt, r) for video, prompt in items for r in range(judge.repeats)]

    def run(client: httpx.Client, job: tuple[Path, str, int]) -> dict:
        video, prompt, repeat = job
        row = {"video": str(video), "prompt": prompt, "repeat": repeat, "scores": None, "error": None}
        path = cache / f"{judge.key(video, prompt, repeat)}.json"
        if path.is_file():
            return row | {"scores": json.loads(path.read_text()), "cached": True}
        try:
            scores = judge.ask(client, video, prompt, repeat)
        except AnswerError as exc:
            log.warning("%s (repeat %d): rubric: %s; left out", video, repeat, exc)
            return row | {"error": str(exc)}
        write_text_atomic(path, json.dumps(scores))
        return row | {"scores": scores, "cached": False}

    return list(tqdm(ask_each(jobs, run, concurrency), total=len(jobs), desc="rubric", disable=not progress))


def summarise_rubric(rows: list[dict], rubric: Rubric, seed: int = 0) -> dict[str, dict]:
    """Per dimension: the mean score over videos (each video's repeats averaged) with its
    bootstrap interval, and ``noise``: the mean over videos of the spread (standard
    deviation) of its repeats' scores — the judge's own uncertainty (0 with one repeat)."""
    answered = [r for r in rows if r["scores"] is not None]
    videos = sorted({r["video"] for r in answered})
    summary = {}
    for name in rubric.names:
        per_video = [[r["scores"][name]["score"] for r in answered if r["video"] == v] for v in videos]
        if not per_video:
            continue
        summary[name] = bootstrap(np.array([np.mean(s) for s in per_video]), seed)
        summary[name]["noise"] = float(np.mean([np.std(s) for s in per_video]))
    return summary
