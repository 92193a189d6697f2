"""The exact shapes metric: does a video show what its shapes-world prompt names?

The renderer knows every named entity's colour, kind, size and motion (a record's
``render`` facts), and the entity colours are a fixed palette that no background uses. So a
video is scored without any learned model:

- **colour masks.** Each pixel takes the nearest palette colour when it lies within
  ``palette.TOLERANCE`` of it (half the distance of the closest pair, yellow–orange); a 3×3 opening
  removes speckle (noise backgrounds, compression at edges).
- **presence / persistence.** A frame shows an entity when its colour covers ``PRESENT`` of
  the entity's drawn area; persistence is the share of frames that show it, presence says
  the majority of frames do.
- **binding.** The colour's mask in its ``TOP_FRAMES`` largest frames is matched against
  the renderer's own template of every kind (same code, :func:`sara.shapes.geometry.draw`) at
  the mask's centroid, at the reach its largest area implies, over ``ANGLES`` rotations;
  the best mean IoU names the kind, among the world's kinds (its records' ``kinds``; all of
  them for records that do not say). Bound: that kind is the prompt's.
- **direction.** A least-squares line through the centroids of the frames that show the
  entity gives its travel over the clip; shorter than ``MIN_TRAVEL`` of the frame is no
  motion, else the nearest of the world's directions by angle. Right: the prompt's direction.
- **count.** Palette colours shown in most frames (an unnamed colour needs
  ``EXTRA_AREA`` of the frame) must number the prompt's entities: no extra, none missing.
- **all.** Every entity present, bound and moving as said, and the count right.

Calibration (``tests/test_eval_shapes.py``, ``docs/EVALUATION.md``): ground-truth clips
score at the ceiling, shuffled prompt–video pairs at the floor, and each mutation (swapped
colours, reversed time, an entity erased, a shape added) fails its own measure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from sara.data.manifest import Manifest, find_videos
from sara.data.video import read_video, resize_crop
from sara.shapes import geometry
from sara.shapes.palette import colour_masks
from sara.shapes.vocabulary import COLOURS, MOTIONS, SHAPES

METRICS = ("presence", "binding", "direction", "count", "persistence", "all")
PRESENT = 0.25  # share of the entity's drawn area its colour must cover in a frame that shows it
MAJORITY = 0.5  # share of frames: present, or an extra shape
EXTRA_AREA = 0.004  # share of the frame an unnamed palette colour must cover to be a shape
TOP_FRAMES = 5  # largest frames of a colour used to name its shape (the least occluded)
ANGLES = 24  # rotations tried over half a turn (every kind repeats within one)
REACHES = (1.0, 1.15, 1.3)  # reaches tried, as multiples of the one the largest frame implies
SHIFT = 0.2  # centre shifts tried, as a share of the reach (a cut shape's centroid is off)
MIN_TRAVEL = 0.1  # share of the frame side an entity must travel to be moving


@dataclass
class EntityScore:
    name: str
    persistence: float  # share of frames that show it
    present: bool
    kind: str | None  # the shape its colour forms (None: absent)
    bound: bool
    motion: str | None  # the direction it travels ("static" if it barely moves; None: absent)
    direction: bool


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(ys.mean()), float(xs.mean())


def _best_fit(kind: str, mask: np.ndarray, cover: np.ndarray, centre, reach: float, poses) -> tuple[float, tuple]:
    """Best IoU of ``kind`` templates over ``poses`` (dy, dx, reach scale, angle) around
    ``centre`` (y, x) with a frame's mask; pixels in ``cover`` count neither for nor against.
    Templates are drawn in a window that holds every pose; mask pixels outside it only add
    to the union."""
    half = math.ceil(reach * max(p[2] for p in poses) + max(abs(c) for p in poses for c in p[:2])) + 2
    top, left = round(centre[0]) - half, round(centre[1]) - half
    window = (slice(top, top + 2 * half), slice(left, left + 2 * half))
    inside, seen = mask[window], ~cover[window]
    outside = int(mask.sum()) - int(inside.sum())
    placed = [(centre[1] - left + dx, centre[0] - top + dy, reach * s, a) for dy, dx, s, a in poses]
    templates = geometry.draw_many(kind, placed, 2 * half)  # (P, h, w)
    inter = (templates & inside).sum(axis=(1, 2))
    union = ((templates & seen) | inside).sum(axis=(1, 2)) + outside
    iou = inter / np.maximum(union, 1)
    return float(iou.max()), poses[int(iou.argmax())]


def classify_shape(masks: np.ndarray, hidden: np.ndarray, kinds: Sequence[str] = SHAPES) -> str:
    """The kind of ``kinds`` whose template best covers one colour's masks ``bool [n, H, W]``
    (frames that show it), where ``hidden`` ``bool [n, H, W]`` (the other entity colours) may cover
    part of it. In each of its largest frames (the least hidden), a template of each kind is
    fitted at the mask's centroid over rotations and reaches, then refined over shifts of its
    centre and half-steps of its angle; pixels hidden by another entity or beyond the frame's
    edge count neither for nor against it. The kind with the best mean IoU wins."""
    areas = masks.sum(axis=(1, 2))
    top = np.argsort(areas)[-TOP_FRAMES:]
    size = masks.shape[-1]
    pad = size  # room for the part of a shape beyond the frame's edge
    angles = np.linspace(0, math.pi, ANGLES, endpoint=False)
    half_step = math.pi / ANGLES / 2
    best = {}
    for kind in kinds:
        reach = math.sqrt(areas.max() / geometry.area(kind))  # the largest frame is the least hidden
        step = SHIFT * reach
        shifts = [(dy * step, dx * step) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        ious = []
        for mask, other in zip(masks[top], hidden[top]):
            mask_p = np.pad(mask, pad)
            cover = np.pad(other, pad, constant_values=True)  # beyond the edge
            centre = np.add(_centroid(mask), pad)
            _, (_, _, scale, angle) = _best_fit(
                kind, mask_p, cover, centre, reach, [(0, 0, s, a) for a in angles for s in REACHES]
            )
            turns = (angle - half_step, angle, angle + half_step)
            refined = [(dy, dx, scale, a) for dy, dx in shifts for a in turns]
            iou, _ = _best_fit(kind, mask_p, cover, centre, reach, refined)
            ious.append(iou)
        best[kind] = float(np.mean(ious))
    return max(best, key=best.get)


def classify_motion(masks: np.ndarray, frames: np.ndarray, length: int, motions: Sequence[str] = tuple(MOTIONS)) -> str:
    """The direction of ``motions`` nearest the travel of masks ``bool [n, H, W]`` shown at
    ``frames`` ``[n]`` of a ``length``-frame clip: the least-squares line through their centroids."""
    if len(frames) < 2:
        return "static"
    centres = np.array([_centroid(m) for m in masks])  # (n, 2) as (y, x)
    velocity = np.polyfit(frames.astype(float), centres, 1)[0]  # (2,) pixels per frame
    travel = velocity * (length - 1)
    if np.linalg.norm(travel) < MIN_TRAVEL * masks.shape[-1]:
        return "static"
    return max(motions, key=lambda motion: float(np.dot(MOTIONS[motion], travel)))


def score_video(video: torch.Tensor, facts: dict) -> dict:
    """Score ``uint8 [T, H, W, 3]`` frames against a record's ``render`` facts.

    Returns each metric of :data:`METRICS` in [0, 1] (entity metrics averaged over the
    named entities), the extra colours seen, and each entity's :class:`EntityScore`.
    """
    size = facts["size"]
    kinds, motions = facts.get("kinds", SHAPES), facts.get("motions", tuple(MOTIONS))  # the world's words
    if video.shape[1] != video.shape[2]:  # to the renderer's square frame (a square video keeps its pixels)
        video = resize_crop(video.permute(0, 3, 1, 2), (size, size)).round().clamp(0, 255).byte().permute(0, 2, 3, 1)
    scale = video.shape[1] / size  # video pixels per renderer pixel
    masks = colour_masks(video).numpy()  # (K, T, H, W)
    areas = masks.sum(axis=(2, 3))  # (K, T)
    colours = list(COLOURS)
    entities = []
    for fact in facts["entities"]:
        k = colours.index(fact["colour"])
        shown = areas[k] >= PRESENT * geometry.area(fact["kind"]) * (fact["reach"] * scale) ** 2  # (T,)
        persistence = float(shown.mean())
        present = persistence >= MAJORITY
        frames = np.nonzero(shown)[0]
        hidden = np.delete(masks, k, axis=0)[:, frames].any(axis=0)  # (n, H, W) other colours
        kind = classify_shape(masks[k, frames], hidden, kinds) if present else None
        motion = classify_motion(masks[k, frames], frames, len(shown), motions) if present else None
        entities.append(
            EntityScore(
                fact["name"], persistence, present, kind, kind == fact["kind"], motion, motion == fact["motion"]
            )
        )
    named = {fact["colour"] for fact in facts["entities"]}
    extras = [
        colour
        for k, colour in enumerate(colours)
        if colour not in named and (areas[k] >= EXTRA_AREA * video.shape[1] * video.shape[2]).mean() >= MAJORITY
    ]
    count = sum(e.present for e in entities) + len(extras) == len(entities)
    scores = {
        "presence": float(np.mean([e.present for e in entities])),
        "binding": float(np.mean([e.bound for e in entities])),
        "direction": float(np.mean([e.direction for e in entities])),
        "count": float(count),
        "persistence": float(np.mean([e.persistence for e in entities])),
        "all": float(count and all(e.present and e.bound and e.direction for e in entities)),
    }
    return {**scores, "extras": extras, "entities": [asdict(e) for e in entities]}


def score_manifest(
    manifest: Manifest, folder: str | Path | None = None, rotate: int = 0, progress: bool = True
) -> list[dict]:
    """Score the video of each record (see :func:`find_videos`) against the prompt of record
    ``i + rotate``: ``rotate=0`` pairs each video with its own prompt, any other shift gives
    mismatched pairs (the chance floor)."""
    from tqdm import tqdm

    for index, record in enumerate(manifest.records):
        if "render" not in (record.model_extra or {}):
            raise ValueError(f"{manifest.describe(index)}: render: missing (only shapes-world records can be scored)")
    videos = find_videos(manifest, folder)
    results = []
    for index, path in enumerate(tqdm(videos, desc="score", leave=False, disable=not progress)):
        record = manifest.records[(index + rotate) % len(manifest.records)]
        scores = score_video(read_video(path), record.model_extra["render"])
        results.append({"video": str(path), "prompt": record.prompt(), **scores})
    return results
