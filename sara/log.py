"""Messages of a run: Python ``logging`` under the ``sara`` logger, one line each.

Library code logs (``logging.getLogger(__name__)``) and never prints; the ``sara``
command installs :func:`setup_logging`: INFO lines go to standard output on rank 0 alone
(under ``torchrun`` the other ranks' summaries would only repeat it), warnings to standard
error on every rank (a skipped sample is that rank's own).
"""

from __future__ import annotations

import logging
import os
import sys


class _Console(logging.StreamHandler):
    """A handler writing to whatever ``sys.stdout`` (``sys.stderr`` for warnings) is when a
    line is written — a redirected or captured stream included — not the one at set-up."""

    def __init__(self, errors: bool) -> None:
        self.errors = errors
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))
        self.addFilter(self._wanted)

    def _wanted(self, record: logging.LogRecord) -> bool:
        if self.errors:
            return record.levelno >= logging.WARNING
        return record.levelno < logging.WARNING and int(os.environ.get("RANK", "0")) == 0

    @property
    def stream(self):
        return sys.stderr if self.errors else sys.stdout

    @stream.setter
    def stream(self, _):  # StreamHandler.__init__ assigns one; the property above decides
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """Route the ``sara`` logger's lines to the console as bare messages (idempotent)."""
    logger = logging.getLogger("sara")
    logger.setLevel(level)
    if not any(isinstance(h, _Console) for h in logger.handlers):
        logger.addHandler(_Console(errors=False))
        logger.addHandler(_Console(errors=True))
