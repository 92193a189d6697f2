"""An OpenAI-compatible chat endpoint (what vLLM and SGLang serve): one request with a
timeout, bounded retries with a short back-off, and an answer that must parse.

Callers (entity prompts, MTSS captions, the VLM rubric) give the messages and a parser that raises
:class:`AnswerError` on anything but the strict answer they asked for; a request that
never yields one raises :class:`AnswerError` naming the last problem.
"""

from __future__ import annotations

import base64
import hashlib
import io
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np
from PIL import Image

T = TypeVar("T")
Item = TypeVar("Item")


class AnswerError(ValueError):
    """An answer that is not the strict JSON asked for, or a server that did not answer."""


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible chat endpoint: base URL (ending in ``/v1``) and model name."""

    url: str
    model: str
    timeout: float = 30.0
    retries: int = 2

    def ask(
        self,
        client: httpx.Client,
        messages: list[dict],
        parse: Callable[[str], T],
        response_format: dict | None = None,
    ) -> T:
        """``parse`` of the answer to ``messages`` at temperature 0; retried ``retries`` times."""
        body = {"model": self.model, "messages": messages, "temperature": 0}
        if response_format is not None:
            body["response_format"] = response_format
        problem = ""
        for attempt in range(self.retries + 1):
            try:
                response = client.post(f"{self.url.rstrip('/')}/chat/completions", json=body, timeout=self.timeout)
                response.raise_for_status()
                return parse(response.json()["choices"][0]["message"]["content"])
            except (httpx.HTTPError, AnswerError, KeyError, IndexError, TypeError, ValueError) as exc:
                problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
                time.sleep(0.2 * attempt)  # brief back-off before the next try
        raise AnswerError(f"no usable answer after {self.retries + 1} tries ({problem})")


def sample_frames(video: np.ndarray, count: int, offset: float = 0.0) -> np.ndarray:
    """``count`` frames of ``video`` ``[T, H, W, 3]`` spread uniformly, shifted by ``offset``
    (in [0, 1)) of the spacing: ``[count, H, W, 3]``."""
    total = len(video)
    positions = np.minimum(((np.arange(count) + offset) * total / count).astype(int), total - 1)
    return video[positions]


def image_parts(frames: np.ndarray) -> list[dict]:
    """Frames ``uint8 [N, H, W, 3]`` as the ``image_url`` parts of a chat message, PNG data
    URLs in order (lossless: the model sees the pixels)."""
    parts = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


def ask_each(items: list[Item], ask: Callable[[httpx.Client, Item], T], concurrency: int) -> Iterator[T]:
    """``ask(client, item)`` for every item, ``concurrency`` requests in flight over one pooled
    client; the results in the items' order, as they are consumed (the client lives as long)."""
    workers = max(1, concurrency)
    with httpx.Client(limits=httpx.Limits(max_connections=workers)) as client, ThreadPoolExecutor(workers) as pool:
        yield from pool.map(lambda item: ask(client, item), items)


def answer_key(video: Path, *parts: str) -> str:
    """The cache key of an answer about ``video``: the hash of its bytes and of ``parts``
    (the question, the model, …), so a changed file or question asks again."""
    digest = hashlib.sha256(Path(video).read_bytes()).hexdigest()
    return hashlib.sha256("\n".join([digest, *parts]).encode()).hexdigest()[:32]
