"""An OpenAI-compatible chat endpoint (what vLLM and SGLang serve): one request with a
timeout, bounded retries with a short back-off, and an answer that must parse.

Callers (entity prompts, the VLM rubric) give the messages and a parser that raises
:class:`AnswerError` on anything but the strict answer they asked for; a request that
never yields one raises :class:`AnswerError` naming the last problem.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

T = TypeVar("T")


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
