"""The alignment objectives of Stage 2: one registry that config validation, the command
line, the docs and the objective all read.

An objective compares the DiT's projected tokens ``[B, N, D]`` with the frozen teacher's
on the same grid. ``trd`` is VideoREPA's relation distillation over every pair; ``sara``
is the same loss over the pairs a text-conditioned saliency routes (``ROUTINGS``: the
routings of :mod:`sara.routing` but ``none``, which is ``trd`` itself); ``moalign``
matches relations to those of the teacher's motion subspace (a fitted head's features),
pairs weighted by their frames' distance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from sara.losses.moalign import moalign_loss
from sara.losses.trd import repa_loss, trd_loss
from sara.routing import ROUTES


@dataclass(frozen=True)
class TermSettings:
    """What a term reads of ``objective.align`` (this module sits below the config, which reads
    the registry): the routing and margin of TRD, MoAlign's temporal decay."""

    routing: str = "or"
    margin: float = 0.1
    tau: float = 10.0


# (tokens, target, saliency or None, settings, part, frames of the grid) -> the scalar term (its share ``part``)
Term = Callable[[Tensor, Tensor, Tensor | None, TermSettings, tuple[int, int], int], Tensor]


@dataclass(frozen=True)
class Alignment:
    summary: str  # one line for docs and help
    term: Term | None  # None: no alignment term (plain flow matching)
    routed: bool = False  # reads a per-token saliency and `objective.align.routing`
    motion: bool = False  # its target is the teacher's motion subspace (`objective.align.motion`), not its tokens

    @property
    def teacher(self) -> bool:
        """Whether the objective reads the frozen teacher's tokens."""
        return self.term is not None


def _repa(
    tokens: Tensor, target: Tensor, saliency, settings: TermSettings, part: tuple[int, int], frames: int
) -> Tensor:
    return repa_loss(tokens, target, part=part)


def _trd(
    tokens: Tensor, target: Tensor, saliency, settings: TermSettings, part: tuple[int, int], frames: int
) -> Tensor:
    return trd_loss(tokens, target, None, "none", settings.margin, part=part)


def _sara(
    tokens: Tensor, target: Tensor, saliency, settings: TermSettings, part: tuple[int, int], frames: int
) -> Tensor:
    return trd_loss(tokens, target, saliency, settings.routing, settings.margin, part=part)


def _moalign(
    tokens: Tensor, target: Tensor, saliency, settings: TermSettings, part: tuple[int, int], frames: int
) -> Tensor:
    return moalign_loss(tokens, target, frames, settings.tau, part=part)


ALIGNMENTS: dict[str, Alignment] = {
    "sft": Alignment("flow matching alone", None),
    "repa": Alignment("REPA: the cosine of each token to the teacher's", _repa),
    "trd": Alignment("VideoREPA: token-relation distillation over every pair", _trd),
    "sara": Alignment("SARA: token-relation distillation over the pairs the saliency routes", _sara, routed=True),
    "moalign": Alignment(
        "MoAlign: relations of the teacher's motion subspace, pairs weighted by frame distance", _moalign, motion=True
    ),
}
ALIGN_MODES = tuple(ALIGNMENTS)
ROUTINGS = tuple(mode for mode in ROUTES if mode != "none")  # of a routed objective; unrouted is `trd`


def get_alignment(mode: str) -> Alignment:
    """The objective named ``mode``; an unknown one raises ``ValueError`` listing the choices."""
    try:
        return ALIGNMENTS[mode]
    except (KeyError, TypeError):
        raise ValueError(f"align.mode: {mode!r}; choose one of {', '.join(ALIGN_MODES)}") from None
