"""The HTML report of a run: one self-contained page, images embedded, no network.

Each stage contributes a :class:`Section`; :func:`write_report` lays them out in order.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
table { border-collapse: collapse; margin: 0.8em 0; } th, td { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #eee; } td { text-align: right; } td:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: 0.8em 0; } .note { color: #555; }
"""


@dataclass
class Section:
    """One part of the report: a title and its HTML body."""

    title: str
    body: str


def image(path: str | Path, alt: str) -> str:
    """An ``<img>`` with the PNG or GIF file embedded as a data URI."""
    path = Path(path)
    kind = {".png": "image/png", ".gif": "image/gif"}.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: only .png and .gif can be embedded in the report")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:{kind};base64,{data}" alt="{html.escape(alt)}">'


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An HTML table; cells are escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def text_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """The console twin of :func:`table`: columns padded to their widest cell."""
    cells = [[str(c) for c in header], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def paragraph(text: str, note: bool = False) -> str:
    """A paragraph of escaped text."""
    return f"<p{' class=note' if note else ''}>{html.escape(text)}</p>"


def preformatted(text: str) -> str:
    """Fixed-width text such as a console table."""
    return f"<pre>{html.escape(text)}</pre>"


def write_report(path: str | Path, title: str, sections: Sequence[Section]) -> Path:
    """Write the sections as one HTML page at ``path``."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<h2>{html.escape(s.title)}</h2>\n{s.body}" for s in sections]
    page = (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
