"""Local weight folders: the one place real presets come from (there is no hub at run time)."""

from __future__ import annotations

from pathlib import Path


class WeightsError(ValueError):
    """A weights folder that is missing or is not in the expected format."""


def weights_folder(path: str | Path, what: str) -> Path:
    """``path`` as a folder in Hugging Face format (it has a ``config.json``), or a one-line error."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise WeightsError(f"{folder}: not a {what} weights folder (no config.json)")
    return folder
