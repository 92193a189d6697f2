"""Run a test function in several gloo processes, as ``torchrun`` would start them."""

from __future__ import annotations

from sara.parallel.spawn import run_processes


def spawn(fn, size: int, *args) -> list:
    """``fn(*args)`` on ``size`` ranks; a rank's failure fails the test with its traceback."""
    try:
        return run_processes(fn, size, *args)
    except RuntimeError as exc:
        raise AssertionError(str(exc)) from None
