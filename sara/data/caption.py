"""MTSS captions from video: ``sara data caption``.

A video-language model behind any OpenAI-compatible endpoint (vLLM or SGLang serving
Qwen2.5-VL / Qwen3-VL) watches ``frames`` frames sampled uniformly from each clip's time
range and writes its MTSS caption — global setup, cast (names and descriptions), scene,
shots — as strict JSON (a JSON schema, temperature 0, a timeout and bounded retries per
request, a concurrency limit). A plain caption the record already has goes with the
frames as a hint. The cast gives the record its entity prompts when it has none, so
``sara data masks`` can run next.

Records whose caption is already MTSS are kept. Answers are cached by a hash of (video
bytes, time range, plain caption, model, frames, instruction version): a run interrupted
or repeated asks only what is new. A clip that gets no valid answer keeps its caption and
is logged and counted; the manifest is rewritten atomically when the run stops.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import ValidationError
from tqdm import tqdm

from sara.data.manifest import Entity, Manifest, MTSSCaption, Record
from sara.data.video import VideoError, decode_clip
from sara.endpoint import AnswerError, Endpoint, answer_key, ask_each, image_parts, sample_frames
from sara.files import write_text_atomic

log = logging.getLogger(__name__)

VERSION = "sara-mtss-1"  # part of every cache key: a new instruction asks again
MAX_CAST, MAX_NAME_WORDS = 8, 8
INSTRUCTION = (
    "You write structured captions of video clips for training a text-to-video model. The frames are in "
    "temporal order. Answer with JSON only, with these keys: global_setup (one sentence: where, when, visual "
    "style), cast (the visible people, animals and objects, at most 8, each with a name: a short noun phrase "
    "with its distinguishing attributes such as 'red frisbee' or 'man in a blue coat', and a description: one "
    "sentence of its appearance), scene (one sentence on the setting and background), shots (one sentence per "
    "shot, in order, of what happens: actions, motions, interactions). Name every entity the shots mention in "
    "the cast and refer to it by that name."
)
SCHEMA = {
    "type": "object",
    "properties": {
        "global_setup": {"type": "string"},
        "cast": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "description": {"type": "string"}},
                "required": ["name", "description"],
                "additionalProperties": False,
            },
        },
        "scene": {"type": "string"},
        "shots": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["global_setup", "cast", "scene", "shots"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "mtss_caption", "strict": True, "schema": SCHEMA}}


def parse_caption(content: str) -> MTSSCaption:
    """The MTSS caption of an answer; anything but a complete one (a setup, 1–8 cast members
    with names of at most 8 words, at least one shot) raises :class:`AnswerError`."""
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        raise AnswerError("answer is not JSON") from None
    if not isinstance(data, dict):
        raise AnswerError("answer is not a JSON object")
    if missing := sorted(set(SCHEMA["required"]) - data.keys()):
        raise AnswerError(f"answer lacks {', '.join(missing)}")
    try:
        caption = MTSSCaption.model_validate(data)
    except ValidationError as exc:
        raise AnswerError(f"answer is not an MTSS caption: {exc.errors()[0]['msg']}") from None
    if not caption.global_setup.strip() or not any(s.strip() for s in caption.shots):
        raise AnswerError("answer has an empty global_setup or no shot")
    names = [c.name.strip() for c in caption.cast]
    if not 1 <= len(names) <= MAX_CAST or not all(names) or any(len(n.split()) > MAX_NAME_WORDS for n in names):
        raise AnswerError(f"answer's cast is not 1–{MAX_CAST} names of at most {MAX_NAME_WORDS} words")
    return caption


@dataclass(frozen=True)
class Captioner:
    """Who captions and how: the endpoint and the frames per request."""

    endpoint: Endpoint
    frames: int = 8

    def key(self, manifest: Manifest, record: Record) -> str:
        parts = [str(record.start), str(record.end), record.prompt(), self.endpoint.model, str(self.frames), VERSION]
        return answer_key(manifest.resolve(record.video), *parts)

    def ask(self, client: httpx.Client, manifest: Manifest, record: Record) -> MTSSCaption:
        clip = decode_clip(manifest.resolve(record.video), None, None, record.start, record.end)
        frames = sample_frames(clip.frames.permute(0, 2, 3, 1).numpy(), self.frames)
        hint = f"A plain caption of this clip (it may be incomplete): {record.prompt()}\n" if record.prompt() else ""
        content = [{"type": "text", "text": f"{hint}Frames in order:"}, *image_parts(frames)]
        messages = [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": content}]
        return self.endpoint.ask(client, messages, parse_caption, RESPONSE_FORMAT)


@dataclass
class CaptionStats:
    written: int = 0  # records given an MTSS caption (asked or cached)
    cached: int = 0  # of those, answered from the cache
    kept: int = 0  # records that already had an MTSS caption
    failed: int = 0  # records that got no valid answer (or whose video cannot be read)
    entities: int = 0  # records given entity prompts from the cast


def caption_manifest(
    manifest: Manifest, captioner: Captioner, cache: Path, concurrency: int = 4, progress: bool = True
) -> CaptionStats:
    """Give every record with a plain (or empty) caption its MTSS caption; saves the manifest."""
    cache.mkdir(parents=True, exist_ok=True)
    todo = [i for i, r in enumerate(manifest.records) if isinstance(r.caption, str)]
    stats = CaptionStats(kept=len(manifest) - len(todo))

    def run(client: httpx.Client, index: int) -> tuple[MTSSCaption | None, bool]:
        record = manifest.records[index]
        try:
            path = cache / f"{captioner.key(manifest, record)}.json"
            if path.is_file():
                return MTSSCaption.model_validate_json(path.read_text()), True
            caption = captioner.ask(client, manifest, record)
        except (AnswerError, VideoError, OSError) as exc:
            log.warning("%s: caption: %s; kept as it was", manifest.describe(index), exc)
            return None, False
        write_text_atomic(path, caption.model_dump_json())
        return caption, False

    answers = tqdm(ask_each(todo, run, concurrency), total=len(todo), desc="captions", disable=not progress)
    try:
        for index, (caption, cached) in zip(todo, answers):
            if caption is None:
                stats.failed += 1
                continue
            record = manifest.records[index]
            record.caption = caption
            stats.written += 1
            stats.cached += cached
            if not record.entities:
                record.entities = [Entity(prompt=c.name.strip()) for c in caption.cast]
                stats.entities += 1
    finally:  # also on Ctrl-C or an error: what was answered is kept
        manifest.save()
    return stats
