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
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
from tqdm import tqdm

from sara.data.manifest import Entity, Manifest

log = logging.getLogger(__name__)

INSTRUCTION = (
    "List the visible entities (people, animals, objects) that the video caption names, as short noun "
    "phrases with their distinguishing attributes, e.g. 'red frisbee', 'man in a blue coat'. Answer with "
    'JSON only, exactly of the form {"entities": ["...", "..."]}, at most 8 entities of at most 8 words.'
)


class PromptError(ValueError):
    """An answer that is not the strict JSON asked for, or a server that did not answer."""


def parse_answer(content: str) -> list[str]:
    """The entity list of an answer ``{"entities": [str, ...]}``; anything else raises."""
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        raise PromptError("answer is not JSON") from None
    entities = data.get("entities") if isinstance(data, dict) else None
    if not isinstance(entities, list) or not entities:
        raise PromptError("answer has no non-empty 'entities' list")
    if not all(isinstance(e, str) and e.strip() and len(e.split()) <= 8 for e in entities) or len(entities) > 8:
        raise PromptError("answer's entities are not 1–8 short strings")
    return [e.strip() for e in entities]


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible chat endpoint: base URL (ending in ``/v1``) and model name."""

    url: str
    model: str
    timeout: float = 30.0
    retries: int = 2

    def entities(self, client: httpx.Client, caption: str) -> list[str]:
        """Ask for the entities of one caption; retried ``retries`` times, then raises."""
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": caption}],
            "temperature": 0,
            "response_format": {"type": "json_object"},
        }
        problem = ""
        for attempt in range(self.retries + 1):
            try:
                response = client.post(f"{self.url.rstrip('/')}/chat/completions", json=body, timeout=self.timeout)
                response.raise_for_status()
                return parse_answer(response.json()["choices"][0]["message"]["content"])
            except (httpx.HTTPError, PromptError, KeyError, IndexError, TypeError, ValueError) as exc:
                problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
                time.sleep(0.2 * attempt)  # brief back-off before the next try
        raise PromptError(f"no usable answer after {self.retries + 1} tries ({problem})")


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
            return endpoint.entities(client, manifest.records[index].prompt())
        except PromptError as exc:
            log.warning("%s: prompts: %s; using the caption's cast list", manifest.describe(index), exc)
            return None

    workers = max(1, concurrency)
    with httpx.Client(limits=httpx.Limits(max_connections=workers)) as client, ThreadPoolExecutor(workers) as pool:
        jobs = pool.map(lambda index: answer(client, index), todo)
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
