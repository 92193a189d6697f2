"""Entity prompts: short per-entity phrases from long captions.

With an OpenAI-compatible chat endpoint (what SGLang or vLLM serve for Qwen3-VL) each
caption is turned into a strict JSON list of entities; timeouts and bounded retries
apply, and requests run with a concurrency limit. A malformed answer or an unreachable
server falls back to the MTSS cast list, with a warning. Without an endpoint the cast
is used directly. Records that already have entities are left as they are, so the
command can be run again after an interruption.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import httpx
from tqdm import tqdm

from sara.data.manifest import Entity, Manifest
from sara.endpoint import AnswerError, Endpoint, ask_each

log = logging.getLogger(__name__)

INSTRUCTION = (
    "List the visible entities (people, animals, objects) that the video caption names, as short noun "
    "phrases with their distinguishing attributes, e.g. 'red frisbee', 'man in a blue coat'. Answer with "
    'JSON only, exactly of the form {"entities": ["...", "..."]}, at most 8 entities of at most 8 words.'
)


def parse_answer(content: str) -> list[str]:
    """The entity list of an answer ``{"entities": [str, ...]}``; anything else raises."""
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        raise AnswerError("answer is not JSON") from None
    entities = data.get("entities") if isinstance(data, dict) else None
    if not isinstance(entities, list) or not entities:
        raise AnswerError("answer has no non-empty 'entities' list")
    if not all(isinstance(e, str) and e.strip() and len(e.split()) <= 8 for e in entities) or len(entities) > 8:
        raise AnswerError("answer's entities are not 1–8 short strings")
    return [e.strip() for e in entities]


def ask_entities(endpoint: Endpoint, client: httpx.Client, caption: str) -> list[str]:
    """The entities of one caption (raises :class:`AnswerError` when no strict answer comes)."""
    messages = [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": caption}]
    return endpoint.ask(client, messages, parse_answer, {"type": "json_object"})


@dataclass
class PromptStats:
    asked: int = 0  # records sent to the endpoint
    fallbacks: int = 0  # records that fell back to the cast list
    from_cast: int = 0  # records given their cast list (no endpoint, or fallback)
    kept: int = 0  # records that already had entities
    without: int = 0  # records left without entities (plain caption, no answer)


def fill_prompts(
    manifest: Manifest, endpoint: Endpoint | None, concurrency: int = 4, progress: bool = True
) -> PromptStats:
    """Give every record without entities its entity prompts; saves the manifest."""
    stats = PromptStats()
    todo = [i for i, r in enumerate(manifest.records) if not r.entities]
    stats.kept = len(manifest) - len(todo)

    def answer(client: httpx.Client, index: int) -> list[str] | None:
        if endpoint is None:
            return None
        try:
            return ask_entities(endpoint, client, manifest.records[index].prompt())
        except AnswerError as exc:
            log.warning("%s: prompts: %s; using the caption's cast list", manifest.describe(index), exc)
            return None

    jobs = ask_each(todo, answer, concurrency)
    answers = list(tqdm(jobs, total=len(todo), desc="entity prompts", disable=not progress))
    for index, prompts in zip(todo, answers):
        record = manifest.records[index]
        stats.asked += endpoint is not None
        if prompts is None:
            stats.fallbacks += endpoint is not None
            prompts = record.cast_prompts()
            stats.from_cast += bool(prompts)
        if prompts:
            record.entities = [Entity(prompt=p) for p in prompts]
        else:
            stats.without += 1
    manifest.save()
    return stats
