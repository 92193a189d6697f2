"""The synthetic shapes world: the embedded default data set.

Each clip holds 1–3 shapes of distinct kinds and colours moving in straight lines over a
non-uniform background (noise, stripes, gradients, or a clutter of shapes in other
colours; ``backgrounds`` restricts the kinds, and ``plain`` adds a uniform dark one), so
that finding "the red square" needs the text. Shapes are drawn back to front; each entity's
mask is its *visible* part, so crossings give real occlusions.
Shape sizes are drawn so that on average ``fg_fraction`` of the frame (hence of the
V-JEPA token grid) is covered, each entity at least ``min_share`` of it (no specks); with
``entity_share`` every entity covers that share instead (one size per kind).
``distractors`` adds shapes in clutter colours that the caption does not name, drawn behind
the named ones: no entity colour, so no mask, saliency or metric counts them.
Everything is a function of ``(seed, clip index)``; ``pairs`` can keep a fixed set of
colour–shape pairs out of a world (``seen``) or draw only those (``unseen``: the held-out
prompt set of ``sara eval shapes-set``); ``kinds``, ``colours`` and ``motions`` narrow the
world's words (its records say which, so the metric judges among those alone).

**What a caption names is on screen.** In every frame, every entity shows at least
``min_visible`` of its own area — neither hidden behind the shapes drawn in front of it nor
outside the frame. Larger shapes are drawn behind smaller ones, and a layout that breaks
the rule is drawn again (new paths, same kinds, colours and sizes); after every ten failed
layouts the shapes shrink by 15 %. At the defaults a clip takes 4 layouts on average and
the token-grid FG share comes out at 0.46 (``make demo`` reports it). So captions and
masks carry no label noise, and each record keeps what the renderer knows (``render``:
kind, colour, motion direction, per-frame centre and angle, reach, least visible share) for
evaluations that score a video against its prompt.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sara.data.masks import pool_to_grid, save_mask
from sara.data.video import write_video
from sara.shapes import geometry
from sara.shapes.caption import SCENES, caption
from sara.shapes.vocabulary import BACKGROUNDS, COLOURS, MOTIONS, PAIRS, SHAPES, TEXTURED, unseen_pairs

CLUTTER = [(120, 100, 80), (110, 110, 110), (150, 120, 150), (90, 120, 110), (160, 150, 110)]  # no entity colour
LAYOUT_TRIES = 10  # layouts drawn at one size before the shapes shrink
MAX_LAYOUTS = 200  # a clip that no layout satisfies is a bug, not a sample to skip


@dataclass(frozen=True)
class SynthSpec:
    """What to generate."""

    num: int = 200  # clips
    seed: int = 0
    frames: int = 33  # per clip (4k + 1, as Wan's causal VAE wants)
    size: int = 128  # square frames, pixels
    fps: int = 16
    fg_fraction: float = 0.5  # mean share of each frame the shapes cover
    min_share: float = 0.03  # least share of the frame one entity's shape is drawn at (no specks)
    min_visible: float = 0.5  # least share of its own area each entity shows in every frame
    heldout_fraction: float = 0.1  # clips kept out of training
    min_entities: int = 1
    max_entities: int = 3
    pairs: str = "all"  # colour–shape pairs drawn: all, seen (never the unseen pairs) or unseen (only those)
    kinds: tuple[str, ...] = SHAPES  # the shape kinds named entities take (any of SHAPES)
    colours: tuple[str, ...] = tuple(COLOURS)  # their colours (any of COLOURS)
    motions: tuple[str, ...] = tuple(MOTIONS)  # their directions (any of MOTIONS)
    backgrounds: tuple[str, ...] = TEXTURED  # the kinds drawn from (any of BACKGROUNDS)
    spin: float = 0.05  # largest turn of a shape per frame, radians (0: each keeps its angle)
    upright: bool = False  # every shape starts at angle 0 (else at a random angle)
    entity_share: float = 0.0  # > 0: every entity covers this share of the frame (fg_fraction, min_share unused)
    distractors: int = 0  # unnamed shapes in clutter colours, moving behind the named ones
    tubelet: int = 2  # V-JEPA 2's token cell (frames × pixels²), for the reported FG fraction
    patch: int = 16

    def __post_init__(self):
        # a config's or a command line's list, held as the frozen spec's tuple
        for name, words in {
            "backgrounds": BACKGROUNDS, "kinds": SHAPES, "colours": COLOURS, "motions": MOTIONS
        }.items():  # fmt: skip
            chosen = tuple(getattr(self, name))
            object.__setattr__(self, name, chosen)
            if not chosen or not set(chosen) <= set(words) or len(set(chosen)) < len(chosen):
                raise ValueError(f"{name} {list(chosen)}; choose distinct ones from {', '.join(words)}")
        if self.pairs not in PAIRS:
            raise ValueError(f"pairs {self.pairs!r}; choose one of {', '.join(PAIRS)}")
        most = min(len(self.kinds), len(self.colours))  # entities take distinct kinds and colours
        if not 1 <= self.min_entities <= self.max_entities <= most:
            raise ValueError(
                f"entities: need 1 <= min_entities <= max_entities <= {most} (this world's kinds and colours)"
            )
        # with one kind every colour's unseen pair is its only one; with two or more, colours taking
        # the next colour's unseen kind make a seen cast of any size allowed above
        if self.pairs == "seen" and len(self.kinds) < 2:
            raise ValueError(f"pairs seen: kinds {list(self.kinds)}; a seen world needs two kinds or more")
        if not 0 <= self.entity_share * self.max_entities < 1:
            raise ValueError(f"entity_share {self.entity_share}: max_entities of them must cover less than the frame")
        if self.distractors < 0:
            raise ValueError(f"distractors {self.distractors}: must be 0 or more")

    @property
    def unseen_pairs(self) -> tuple[tuple[str, str], ...]:
        return unseen_pairs(self.colours, self.kinds)


@dataclass
class Rendered:
    """One clip as the renderer made it."""

    video: np.ndarray  # (T, H, W, 3) uint8
    masks: list[np.ndarray]  # per entity, (T, H, W) bool: its visible part
    caption: dict  # MTSS caption
    prompts: list[str]  # entity prompts, back to front
    facts: dict  # what the renderer knows, stored in the record as "render"


def _background(rng: np.random.Generator, size: int, kinds: Sequence[str]) -> tuple[np.ndarray, str]:
    """A background ``uint8 [H, W, 3]`` of one of ``kinds``, and its kind."""
    kind = str(rng.choice(list(kinds)))
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(60, 140, size=3)
    if kind == "noise":
        image = base + rng.normal(0, 35, size=(size, size, 3))
        return image.clip(0, 255).astype(np.uint8), kind
    if kind == "stripes":
        period, angle = rng.uniform(0.08, 0.2), rng.uniform(0, math.pi)
        wave = np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
        image = base + 45 * wave[..., None] * rng.uniform(0.5, 1.0, size=3)
        return image.clip(0, 255).astype(np.uint8), kind
    if kind == "gradient":
        other = rng.uniform(40, 180, size=3)
        mix = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None]
        mix = (mix - mix.min()) / (np.ptp(mix) + 1e-6)
        image = base * (1 - mix) + other * mix
        return image.clip(0, 255).astype(np.uint8), kind
    if kind == "clutter":
        image = np.tile(base.astype(np.uint8), (size, size, 1))
        for _ in range(int(rng.integers(12, 25))):
            kind_c = SHAPES[int(rng.integers(len(SHAPES)))]
            r = rng.uniform(0.03, 0.08) * size
            shape = geometry.draw(kind_c, *rng.uniform(0, size, size=2), r, rng.uniform(0, math.pi), size)
            image[shape] = CLUTTER[int(rng.integers(len(CLUTTER)))]
        return image, kind
    if kind == "plain":
        # darker than every clutter colour, so distractors stand out on it, yet no darker than the
        # textures' bases: the shapes VAE, trained on those, decodes a 20–50 grey as green-grey
        return np.tile(rng.uniform(60, 100, size=3).astype(np.uint8), (size, size, 1)), kind
    raise ValueError(f"background kind {kind!r}; choose one of {', '.join(BACKGROUNDS)}")


def _token_fg(masks: list[np.ndarray], spec: SynthSpec) -> float:
    """Share of V-JEPA tokens more than half covered by the union of the masks."""
    union = torch.from_numpy(np.any(np.stack(masks), axis=0))
    return (pool_to_grid(union, spec.tubelet, spec.patch) > 0.5).float().mean().item()


def _path(entity: dict, scale: float, spec: SynthSpec) -> tuple[np.ndarray, np.ndarray, float]:
    """Where the entity is in each frame: centres ``[T, 2]`` as (y, x), angles ``[T]``, and its reach."""
    r = min(entity["r"] * scale, 0.7 * spec.size)
    progress = np.arange(spec.frames) / max(spec.frames - 1, 1) - 0.5  # (T,) from −½ to ½
    centres = entity["centre"] + np.outer(progress * entity["travel"], MOTIONS[entity["motion"]])
    return centres, entity["angle"] + entity["spin"] * np.arange(spec.frames), r


def _trajectory(entity: dict, scale: float, spec: SynthSpec) -> np.ndarray:
    """The entity drawn at every frame: ``bool [T, H, W]``."""
    centres, angles, r = _path(entity, scale, spec)
    return np.stack([geometry.draw(entity["kind"], x, y, r, a, spec.size) for (y, x), a in zip(centres, angles)])


def _visible_parts(drawn: list[np.ndarray]) -> list[np.ndarray]:
    """What each entity shows once the entities after it are drawn over it."""
    covered = np.zeros_like(drawn[0])
    visible = [covered] * len(drawn)
    for i in reversed(range(len(drawn))):
        visible[i] = drawn[i] & ~covered
        covered = covered | drawn[i]
    return visible


def _cast(rng: np.random.Generator, count: int, spec: SynthSpec) -> tuple[np.ndarray, np.ndarray]:
    """Kinds and colours of ``count`` entities, all distinct, under the spec's ``pairs`` rule."""
    unseen = spec.unseen_pairs
    if spec.pairs == "unseen":
        chosen: dict[str, str] = {}  # kind -> colour: unseen pairs of distinct kinds
        for i in rng.permutation(len(unseen)):
            colour, kind = unseen[i]
            chosen.setdefault(kind, colour)
        kinds = list(chosen)[:count]
        return np.array(kinds), np.array([chosen[k] for k in kinds])
    while True:  # "seen": drawn again until no pair is unseen (the default draws once)
        kinds = rng.choice(spec.kinds, size=count, replace=False)
        colours = rng.choice(spec.colours, size=count, replace=False)
        if spec.pairs == "all" or not set(zip(colours, kinds)) & set(unseen):
            return kinds, colours


def _layout(rng: np.random.Generator, kinds, colours, shares, spec: SynthSpec) -> list[dict]:
    """Sizes from ``shares`` of the frame; paths, angles and spins drawn anew."""
    size = spec.size
    return [
        {
            "name": f"{colour} {kind}",
            "kind": str(kind),
            "colour": str(colour),
            "r": math.sqrt(share * size * size / geometry.area(kind)),
            "motion": spec.motions[int(rng.integers(len(spec.motions)))],
            "travel": rng.uniform(0.3, 0.6) * size,
            "centre": rng.uniform(0.35, 0.65, size=2) * size,  # (y, x) at mid-clip
            "angle": rng.uniform(0, 2 * math.pi) * (not spec.upright),
            "spin": rng.uniform(-spec.spin, spec.spin),
        }
        for kind, colour, share in zip(kinds, colours, shares)
    ]


def _fit(entities: list[dict], target: float, spec: SynthSpec) -> tuple[list[np.ndarray], float]:
    """The entities drawn at the scale whose token-grid FG share is nearest ``target``.

    Overlaps and partly covered tokens make the token-grid share differ from the drawn
    area: the shapes are rescaled three times towards the target."""
    scale = 1.0
    for step in range(4):
        drawn = [_trajectory(e, scale, spec) for e in entities]
        achieved = _token_fg(drawn, spec)
        if step < 3 and achieved > 0:
            scale *= float(np.clip(math.sqrt(target / achieved), 0.5, 2.0))
    return drawn, scale


def _least_visible(entities: list[dict], visible: list[np.ndarray], scale: float, spec: SynthSpec) -> list[float]:
    """Per entity, the least share of its own area it shows in any frame."""
    shares = []
    for entity, part in zip(entities, visible):
        r = _path(entity, scale, spec)[2]
        shares.append(float(part.sum(axis=(1, 2)).min() / (geometry.area(entity["kind"]) * r * r)))
    return shares


def render_clip(spec: SynthSpec, index: int) -> Rendered:
    """One clip whose every entity shows at least ``spec.min_visible`` of itself in every frame."""
    rng = np.random.default_rng([spec.seed, index])
    count = int(rng.integers(spec.min_entities, spec.max_entities + 1))
    kinds, colours = _cast(rng, count, spec)
    target = spec.fg_fraction * rng.uniform(0.8, 1.2)
    shares = spec.min_share + rng.dirichlet(np.ones(count)) * max(target - count * spec.min_share, 0.0)
    if spec.entity_share:
        shares = np.full(count, spec.entity_share)
    back_to_front = np.argsort(-shares, kind="stable")  # larger shapes behind: small ones rarely hide them
    kinds, colours, shares = kinds[back_to_front], colours[back_to_front], shares[back_to_front]
    background, background_kind = _background(rng, spec.size, spec.backgrounds)
    for attempt in range(MAX_LAYOUTS):
        shrink = 1.0 if spec.entity_share else 0.85 ** (attempt // LAYOUT_TRIES)
        entities = _layout(rng, kinds, colours, shares * shrink**2, spec)
        if spec.entity_share:  # sizes are the spec's: no fitting to a foreground share
            drawn, scale = [_trajectory(e, 1.0, spec) for e in entities], 1.0
        else:
            drawn, scale = _fit(entities, target * shrink**2, spec)
        visible = _visible_parts(drawn)
        least = _least_visible(entities, visible, scale, spec)
        if min(least) >= spec.min_visible:
            break
    else:
        raise RuntimeError(f"clip {index}: no layout in {MAX_LAYOUTS} shows every entity (min_visible too high?)")
    video = np.repeat(background[None], spec.frames, axis=0)
    others = _distractors(rng, spec)
    for other in others:  # behind every named entity: they hide none of it
        video[_trajectory(other, 1.0, spec)] = other["rgb"]
    for entity, masks in zip(entities, drawn):
        video[masks] = COLOURS[entity["colour"]]
    # the world's words: what the metric chooses a drawn shape's kind and direction from
    facts = {"background": background_kind, "kinds": list(spec.kinds), "motions": list(spec.motions), "entities": []}
    for entity, share in zip(entities, least):
        facts["entities"].append(
            {"name": entity["name"], **_motion_facts(entity, scale, spec), "least_visible": round(share, 4)}
        )
    if others:  # their paths: the motion of every pixel is known (optical flow)
        facts["distractors"] = [_motion_facts(other, 1.0, spec) for other in others]
    named = [(e["name"], e["motion"]) for e in entities]
    # later entities are drawn in front
    overlaps = [(i, j) for i in range(len(drawn)) for j in range(i + 1, len(drawn)) if (drawn[i] & drawn[j]).any()]
    text = caption(named, overlaps, SCENES[background_kind], len(others))
    return Rendered(video, visible, text, [e["name"] for e in entities], facts)


def _distractors(rng: np.random.Generator, spec: SynthSpec) -> list[dict]:
    """``spec.distractors`` shapes of the world's kinds in clutter colours, at the entities' size."""
    if not spec.distractors:
        return []
    kinds = rng.choice(spec.kinds, size=spec.distractors)
    share = spec.entity_share or spec.fg_fraction / spec.max_entities
    others = _layout(rng, kinds, ["clutter"] * spec.distractors, [share] * spec.distractors, spec)
    for other in others:
        other["rgb"] = CLUTTER[int(rng.integers(len(CLUTTER)))]
    return others


def _motion_facts(entity: dict, scale: float, spec: SynthSpec) -> dict:
    """What the renderer knows of one moving shape: kind, colour, direction and path."""
    centres, angles, r = _path(entity, scale, spec)
    rgb = entity.get("rgb", COLOURS.get(entity["colour"]))
    return {
        "kind": entity["kind"],
        "colour": entity["colour"],
        "rgb": list(rgb),
        "motion": entity["motion"],
        "direction": list(MOTIONS[entity["motion"]]),  # (dy, dx)
        "reach": round(r, 2),  # circumradius in pixels
        "centres": np.round(centres, 2).tolist(),  # (y, x) per frame
        "angles": np.round(angles, 4).tolist(),
    }


def _write_clip(args: tuple[SynthSpec, int, str]) -> dict:
    spec, index, out = args
    out = Path(out)
    clip = render_clip(spec, index)
    name = f"clip_{index:05d}"
    write_video(out / "videos" / f"{name}.mp4", clip.video.transpose(0, 3, 1, 2), spec.fps)
    entities = []
    for e, (prompt, mask) in enumerate(zip(clip.prompts, clip.masks)):
        save_mask(out / "masks" / f"{name}_e{e}.npz", mask)
        entities.append({"prompt": prompt, "mask": f"masks/{name}_e{e}.npz"})
    return {
        "id": name,
        "video": f"videos/{name}.mp4",
        "caption": clip.caption,
        "entities": entities,
        "fg_fraction": round(_token_fg(clip.masks, spec), 4),  # of the V-JEPA token grid
        "render": {"size": spec.size, "frames": spec.frames, "fps": spec.fps, **clip.facts},
    }


def synthesize(spec: SynthSpec, out: str | Path, workers: int = 2, progress: bool = True) -> dict:
    """Write ``spec.num`` clips, their masks and ``train.jsonl`` / ``heldout.jsonl`` into ``out``.

    Returns a summary: clip counts per split, the mean foreground fraction of the token grid
    and the least visible share of any entity in any frame.
    """
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(spec, i, str(out)) for i in range(spec.num)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        records = list(
            tqdm(pool.imap(_write_clip, jobs, chunksize=4), total=spec.num, disable=not progress, desc="synth")
        )
    heldout = set(
        np.random.default_rng([spec.seed, 2**31]).permutation(spec.num)[: round(spec.num * spec.heldout_fraction)]
    )
    splits = {"train": [r for i, r in enumerate(records) if i not in heldout]}
    splits["heldout"] = [r for i, r in enumerate(records) if i in heldout]
    for split, rows in splits.items():
        if rows:  # a prompt set is all held out: no empty train.jsonl beside it
            (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    least = [e["least_visible"] for r in records for e in r["render"]["entities"]]
    return {
        "clips": {split: len(rows) for split, rows in splits.items()},
        "fg_fraction": float(np.mean([r["fg_fraction"] for r in records])) if records else 0.0,
        "least_visible": min(least) if least else 1.0,
        "out": str(out),
    }
