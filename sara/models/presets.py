"""Tiny presets: each writes a local folder in its library's own format, so that tiny and
real runs load through the same ``from_pretrained`` path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sara.models import sam3

TINY: dict[str, Callable[..., Path]] = {"sam3": sam3.save_tiny}
