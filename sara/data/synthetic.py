"""The synthetic shapes world: the embedded default data set.

Each clip holds 1–3 shapes of distinct kinds and colours moving in straight lines over a
non-uniform background (noise, stripes, gradients, or a clutter of shapes in other
colours), so that finding "the red square" needs the text. Shapes are drawn back to
front; each entity's mask is its *visible* part, so crossings give real occlusions.
Shape sizes are drawn so that on average ``fg_fraction`` of the frame (hence of the
V-JEPA token grid) is covered. Everything is a function of ``(seed, clip index)``.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from sara.data.masks import pool_to_grid, save_mask
from sara.data.video import write_video

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond")
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
CLUTTER = [(120, 100, 80), (110, 110, 110), (150, 120, 150), (90, 120, 110), (160, 150, 110)]  # no entity colour
MOTIONS = {  # unit direction (dy, dx) and how the caption says it
    "left to right": (0.0, 1.0),
    "right to left": (0.0, -1.0),
    "top to bottom": (1.0, 0.0),
    "bottom to top": (-1.0, 0.0),
    "top left to bottom right": (0.7071, 0.7071),
    "bottom right to top left": (-0.7071, -0.7071),
}
NUMBERS = {1: "one", 2: "two", 3: "three"}


@dataclass(frozen=True)
class SynthSpec:
    """What to generate."""

    num: int = 200  # clips
    seed: int = 0
    frames: int = 33  # per clip (4k + 1, as Wan's causal VAE wants)
    size: int = 128  # square frames, pixels
    fps: int = 16
    fg_fraction: float = 0.5  # mean share of each frame the shapes cover
    heldout_fraction: float = 0.1  # clips kept out of training
    max_entities: int = 3
    tubelet: int = 2  # V-JEPA 2's token cell (frames × pixels²), for the reported FG fraction
    patch: int = 16


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a shape of circumradius ``r``."""
    if kind == "star":
        radii = [r if i % 2 == 0 else 0.45 * r for i in range(10)]
    else:
        radii = [r] * {"square": 4, "triangle": 3, "hexagon": 6, "diamond": 4}[kind]
    offset = {"square": math.pi / 4, "diamond": 0.0}.get(kind, -math.pi / 2) + angle
    step = 2 * math.pi / len(radii)
    return [(cx + q * math.cos(offset + i * step), cy + q * math.sin(offset + i * step)) for i, q in enumerate(radii)]


# area of a shape as a multiple of r² (circumradius r), to size shapes by the area they cover
_AREA = {"circle": math.pi, "square": 2.0, "diamond": 2.0, "triangle": 1.299, "hexagon": 2.598, "star": 1.469}


def _draw(kind: str, cx: float, cy: float, r: float, angle: float, size: int) -> np.ndarray:
    """A filled shape as a boolean ``[size, size]`` image."""
    image = Image.new("1", (size, size), 0)
    draw = ImageDraw.Draw(image)
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, angle), fill=1)
    return np.array(image, dtype=bool)


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """A non-uniform background ``uint8 [H, W, 3]`` and its description."""
    kind = rng.choice(["noise", "stripes", "gradient", "clutter"])
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(60, 140, size=3)
    if kind == "noise":
        image = base + rng.normal(0, 35, size=(size, size, 3))
        return image.clip(0, 255).astype(np.uint8), "a background of coloured noise"
    if kind == "stripes":
        period, angle = rng.uniform(0.08, 0.2), rng.uniform(0, math.pi)
        wave = np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
        image = base + 45 * wave[..., None] * rng.uniform(0.5, 1.0, size=3)
        return image.clip(0, 255).astype(np.uint8), "a background of grey stripes"
    if kind == "gradient":
        other = rng.uniform(40, 180, size=3)
        mix = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None]
        mix = (mix - mix.min()) / (np.ptp(mix) + 1e-6)
        image = base * (1 - mix) + other * mix
        return image.clip(0, 255).astype(np.uint8), "a background with a smooth colour gradient"
    image = np.tile(base.astype(np.uint8), (size, size, 1))
    for _ in range(int(rng.integers(12, 25))):
        kind_c = SHAPES[int(rng.integers(len(SHAPES)))]
        r = rng.uniform(0.03, 0.08) * size
        shape = _draw(kind_c, *rng.uniform(0, size, size=2), r, rng.uniform(0, math.pi), size)
        image[shape] = CLUTTER[int(rng.integers(len(CLUTTER)))]
    return image, "a background cluttered with small grey and brown shapes"


def _token_fg(masks: list[np.ndarray], spec: SynthSpec) -> float:
    """Share of V-JEPA tokens more than half covered by the union of the masks."""
    union = torch.from_numpy(np.any(np.stack(masks), axis=0))
    return (pool_to_grid(union, spec.tubelet, spec.patch) > 0.5).float().mean().item()


def _trajectory(entity: dict, scale: float, spec: SynthSpec) -> np.ndarray:
    """The entity drawn at every frame: ``bool [T, H, W]``."""
    size, frames = spec.size, spec.frames
    r = min(entity["r"] * scale, 0.7 * size)
    dy, dx = MOTIONS[entity["motion"]]
    masks = np.zeros((frames, size, size), dtype=bool)
    for t in range(frames):
        progress = t / max(frames - 1, 1) - 0.5
        cy = entity["centre"][0] + dy * entity["travel"] * progress
        cx = entity["centre"][1] + dx * entity["travel"] * progress
        masks[t] = _draw(entity["kind"], cx, cy, r, entity["angle"] + entity["spin"] * t, size)
    return masks


def _caption(entities: list[dict], drawn: list[np.ndarray], scene: str) -> dict:
    """The MTSS caption of a clip, from what was drawn."""
    names = [e["name"] for e in entities]
    actions = [f"the {e['name']} moves from {e['motion']}" for e in entities]
    shot = (", ".join(actions[:-1]) + " and " + actions[-1]) if len(actions) > 1 else actions[0]
    sentences = [shot[0].upper() + shot[1:] + "."]
    for i in range(len(entities)):
        for j in range(i + 1, len(entities)):
            if (drawn[i] & drawn[j]).any():  # later entities are drawn in front
                sentences.append(f"The {names[j]} passes in front of the {names[i]}.")
    count = len(entities)
    return {
        "global_setup": f"{NUMBERS[count].capitalize()} moving shape{'s' if count > 1 else ''} over {scene}.",
        "cast": [{"name": e["name"], "description": f"a {e['name']} that moves from {e['motion']}"} for e in entities],
        "scene": scene,
        "shots": [" ".join(sentences)],
    }


def render_clip(spec: SynthSpec, index: int) -> tuple[np.ndarray, list[np.ndarray], dict, list[str]]:
    """One clip: frames ``uint8 [T, H, W, 3]``, visible masks ``bool [T, H, W]`` per entity,
    the MTSS caption and the entity prompts."""
    rng = np.random.default_rng([spec.seed, index])
    size = spec.size
    count = int(rng.integers(1, spec.max_entities + 1))
    kinds = rng.choice(SHAPES, size=count, replace=False)
    colours = rng.choice(list(COLOURS), size=count, replace=False)
    target = spec.fg_fraction * rng.uniform(0.8, 1.2)
    shares = rng.dirichlet(np.ones(count)) * target
    background, scene = _background(rng, size)
    entities = [
        {
            "name": f"{colour} {kind}",
            "kind": kind,
            "colour": colour,
            "r": math.sqrt(share * size * size / _AREA[kind]),
            "motion": list(MOTIONS)[int(rng.integers(len(MOTIONS)))],
            "travel": rng.uniform(0.3, 0.6) * size,
            "centre": rng.uniform(0.35, 0.65, size=2) * size,  # (y, x) at mid-clip
            "angle": rng.uniform(0, math.pi),
            "spin": rng.uniform(-0.05, 0.05),
        }
        for kind, colour, share in zip(kinds, colours, shares)
    ]
    # Overlaps and partly covered tokens make the token-grid share differ from the drawn
    # area: rescale the shapes three times towards the target.
    scale = 1.0
    for step in range(4):
        drawn = [_trajectory(e, scale, spec) for e in entities]
        achieved = _token_fg(drawn, spec)
        if step < 3 and achieved > 0:
            scale *= float(np.clip(math.sqrt(target / achieved), 0.5, 2.0))
    video = np.repeat(background[None], spec.frames, axis=0)
    visible = []
    for i, masks in enumerate(drawn):
        covered = np.any(np.stack(drawn[i + 1 :]), axis=0) if i + 1 < count else np.zeros_like(masks)
        visible.append(masks & ~covered)
        video[masks] = COLOURS[entities[i]["colour"]]
    return video, visible, _caption(entities, drawn, scene), [e["name"] for e in entities]


def _write_clip(args: tuple[SynthSpec, int, str]) -> dict:
    spec, index, out = args
    out = Path(out)
    video, masks, caption, prompts = render_clip(spec, index)
    name = f"clip_{index:05d}"
    write_video(out / "videos" / f"{name}.mp4", video.transpose(0, 3, 1, 2), spec.fps)
    entities = []
    for e, (prompt, mask) in enumerate(zip(prompts, masks)):
        save_mask(out / "masks" / f"{name}_e{e}.npz", mask)
        entities.append({"prompt": prompt, "mask": f"masks/{name}_e{e}.npz"})
    return {
        "id": name,
        "video": f"videos/{name}.mp4",
        "fps": spec.fps,
        "caption": caption,
        "entities": entities,
        "fg_fraction": round(_token_fg(masks, spec), 4),  # of the V-JEPA token grid
    }


def synthesize(spec: SynthSpec, out: str | Path, workers: int = 2, progress: bool = True) -> dict:
    """Write ``spec.num`` clips, their masks and ``train.jsonl`` / ``heldout.jsonl`` into ``out``.

    Returns a summary: clip counts per split and the mean foreground fraction.
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
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {
        "clips": {split: len(rows) for split, rows in splits.items()},
        "fg_fraction": float(np.mean([r["fg_fraction"] for r in records])) if records else 0.0,
        "out": str(out),
    }
