"""The alignment objectives of Stage 2: one registry that config validation, the command
line, the docs and the objective all read.

An objective compares the DiT's projected tokens ``[B, N, D]`` with the frozen teacher's
on the same grid. ``trd`` is VideoREPA's relation distillation over every pair; ``sara``
is the same loss over the pairs a text-conditioned saliency routes (``ROUTINGS``: the
routings of :mod:`sara.routing` but ``none``, which is ``trd`` itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from sara.losses.trd import repa_loss, trd_loss
from sara.routing import ROUTES

# (tokens, target, saliency or None, routing, margin, part) -> the scalar term (its share ``part``)
Term = Callable[[Tensor, Tensor, Tensor | None, str, float, tuple[int, int]], Tensor]


@dataclass(frozen=True)
class Alignment:
    summary: str  # one line for docs and help
    term: Term | None  # None: no alignment term (plain flow matching)
    routed: bool = False  # reads a per-token saliency and `objective.align.routing`

    @property
    def teacher(self) -> bool:
        """Whether the objective reads the frozen teacher's tokens."""
        return self.term is not None


def _repa(tokens: Tensor, target: Tensor, saliency, routing: str, margin: float, part: tuple[int, int]) -> Tensor:
    return repa_loss(tokens, target, part=part)


def _trd(tokens: Tensor, target: Tensor, saliency, routing: str, margin: float, part: tuple[int, int]) -> Tensor:
    return trd_loss(tokens, target, None, "none", margin, part=part)


def _sara(tokens: Tensor, target: Tensor, saliency, routing: str, margin: float, part: tuple[int, int]) -> Tensor:
    return trd_loss(tokens, target, saliency, routing, margin, part=part)


ALIGNMENTS: dict[str, Alignment] = {
    "sft": Alignment("flow matching alone", None),
    "repa": Alignment("REPA: the cosine of each token to the teacher's", _repa),
    "trd": Alignment("VideoREPA: token-relation distillation over every pair", _trd),
    "sara": Alignment("SARA: token-relation distillation over the pairs the saliency routes", _sara, routed=True),
}
ALIGN_MODES = tuple(ALIGNMENTS)
ROUTINGS = tuple(mode for mode in ROUTES if mode != "none")  # of a routed objective; unrouted is `trd`


def get_alignment(mode: str) -> Alignment:
    """The objective named ``mode``; an unknown one raises ``ValueError`` listing the choices."""
    try:
        return ALIGNMENTS[mode]
    except (KeyError, TypeError):
        raise ValueError(f"align.mode: {mode!r}; choose one of {', '.join(ALIGN_MODES)}") from None
