"""The shapes world's caption grammar: what a clip's MTSS caption says, from what was drawn.

One grammar for the renderer (each clip's caption) and for the text encoder's pretraining
corpus (:mod:`sara.shapes.text`), so the tiny umT5 learns exactly the sentences the DiT reads.
"""

from __future__ import annotations

from sara.shapes.vocabulary import NUMBERS

SCENES = {  # background kind -> how the caption says it
    "noise": "a background of coloured noise",
    "stripes": "a background of grey stripes",
    "gradient": "a background with a smooth colour gradient",
    "clutter": "a background cluttered with small grey and brown shapes",
    "plain": "a plain dark background",
}


def caption(named: list[tuple[str, str]], overlaps: list[tuple[int, int]], scene: str, unnamed: int = 0) -> dict:
    """The MTSS caption of ``named`` entities, ``(name, motion)`` back to front, where each
    ``(i, j)`` of ``overlaps`` says entity ``j`` (drawn later) passes in front of entity ``i``,
    and ``unnamed`` distractors move too."""
    actions = [f"the {name} moves from {motion}" for name, motion in named]
    shot = (", ".join(actions[:-1]) + " and " + actions[-1]) if len(actions) > 1 else actions[0]
    sentences = [shot[0].upper() + shot[1:] + "."]
    sentences += [f"The {named[j][0]} passes in front of the {named[i][0]}." for i, j in overlaps]
    count = len(named)
    others = f" and {NUMBERS.get(unnamed, unnamed)} grey shape{'s' if unnamed > 1 else ''}" if unnamed else ""
    return {
        "global_setup": f"{NUMBERS[count].capitalize()} moving shape{'s' if count > 1 else ''}{others} over {scene}.",
        "cast": [{"name": name, "description": f"a {name} that moves from {motion}"} for name, motion in named],
        "scene": scene,
        "shots": [" ".join(sentences)],
    }
