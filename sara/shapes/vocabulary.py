"""The words of the synthetic shapes world: shape kinds, colours, motions, counts.

A leaf module (it imports nothing of ``sara``): the renderer draws these words, the tiny
presets' tokenizers (``sara.models.tokenizer``) learn them as whole tokens and the demo
config (``sara.config.schema``) takes its choices from them, so all read them from here —
the last two from below the shapes package, which is why this module must stay a leaf.
"""

from __future__ import annotations

from collections.abc import Sequence

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 90, 230),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 200),
    "orange": (250, 140, 30),
    "cyan": (40, 200, 215),
    "white": (245, 245, 245),
}
MOTIONS = {  # unit direction (dy, dx) and how the caption says it
    "left to right": (0.0, 1.0),
    "right to left": (0.0, -1.0),
    "top to bottom": (1.0, 0.0),
    "bottom to top": (-1.0, 0.0),
    "top left to bottom right": (0.7071, 0.7071),
    "bottom right to top left": (-0.7071, -0.7071),
}
NUMBERS = {1: "one", 2: "two", 3: "three"}


def unseen_pairs(colours: Sequence[str], kinds: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The colour–shape pairs a "seen" world of these words never draws and an "unseen" one
    draws alone: one per colour, the kinds in turn (every kind at least once when there are as
    many colours), so each word is seen in training, only these bindings not."""
    return tuple((colour, kinds[i % len(kinds)]) for i, colour in enumerate(colours))


UNSEEN_PAIRS = unseen_pairs(tuple(COLOURS), SHAPES)  # the whole vocabulary's
PAIRS = ("all", "seen", "unseen")  # which pairs a world draws
BACKGROUNDS = ("noise", "stripes", "gradient", "clutter", "plain")  # what a clip's shapes move over
TEXTURED = BACKGROUNDS[:4]  # the default world's: finding "the red square" needs the text
# the options that choose what a world draws from these words (fields of SynthSpec and SynthConfig)
WORLD_OPTIONS = ("backgrounds", "kinds", "colours", "motions")
