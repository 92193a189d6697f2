"""`sara stage1 infer`: what a trained aligner sees in a clip, drawn per prompt.

For each entity prompt of a clip, and for its full caption (the saliency Stage 2 routes
by), one figure of three rows over sampled frames:

1. the frames, dimmed outside the prompt's ground-truth mask when the manifest has one (for the
   full caption: the union of the entities' masks);
2. the first three principal components of the aligner's enhanced features as RGB —
   tokens the caption makes alike share a colour;
3. the predicted saliency as a heat map over the frames.

Each figure is written as PNG (``columns`` sampled frames) and animated — every frame,
the three panels side by side — as GIF and MP4. Values live on the V-JEPA token grid and
are drawn on the pixels each token covers, so the figures show the model's real
resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from sara.data.manifest import Manifest, Record, load_manifest
from sara.data.masks import MaskError, load_mask
from sara.data.video import Clip, VideoError, decode_clip, transform_masks, write_gif, write_video
from sara.data.visualize import grid_to_pixels, heatmap, save_png, slug, spotlight, strip, titled
from sara.device import pick_device
from sara.stage1.saliency import SaliencyModel

GAP = 2  # white pixels between panels


@dataclass
class Figure:
    """The three panels of one prompt, every frame: each ``uint8 [T, H, W, 3]``."""

    prompt: str
    frames: np.ndarray
    features: np.ndarray
    saliency: np.ndarray

    def image(self, columns: int) -> np.ndarray:
        """Three rows of ``columns`` sampled frames under a title: ``uint8 [14 + 3H + 2·GAP, W', 3]``."""
        rows = [strip(panel, columns, GAP) for panel in (self.frames, self.features, self.saliency)]
        blank = np.full((GAP, rows[0].shape[1], 3), 255, np.uint8)
        return titled(np.concatenate([rows[0], blank, rows[1], blank, rows[2]]), _fit(self.prompt, rows[0].shape[1]))

    def animation(self) -> np.ndarray:
        """Every frame, the panels side by side under a title: ``uint8 [T, 3, 14 + H, 3W + 2·GAP]``."""
        blank = np.full((*self.frames.shape[:2], GAP, 3), 255, np.uint8)
        wide = np.concatenate([self.frames, blank, self.features, blank, self.saliency], axis=2)
        title = _fit(self.prompt, wide.shape[2])
        return np.stack([titled(image, title) for image in wide]).transpose(0, 3, 1, 2)


def _fit(text: str, width: int) -> str:
    """``text`` cut to what a ``width``-pixel title bar holds (6 pixels a character)."""
    room = max(4, width // 6)
    return text if len(text) <= room else text[: room - 3] + "..."


def pca_rgb(features: Tensor) -> Tensor:
    """First three principal components of ``[N, d]`` features as colours ``[N, 3]`` in [0, 1].

    Each component is min–max scaled; its sign is chosen so that its largest value is
    positive, which keeps the colours of one clip stable from prompt to prompt.
    """
    centred = features.float() - features.float().mean(0)
    _, _, basis = torch.linalg.svd(centred, full_matrices=False)  # basis: (min(N, d), d)
    components = centred @ basis[:3].T  # (N, 3)
    extreme = components.gather(0, components.abs().argmax(0, keepdim=True))  # (1, 3)
    components = components * torch.where(extreme < 0, -1.0, 1.0)
    low, high = components.min(0).values, components.max(0).values
    return (components - low) / (high - low).clamp(min=1e-8)


def draw(
    prompt: str,
    frames: Tensor,
    mask: Tensor | None,
    features: Tensor,
    saliency: Tensor,
    grid: tuple[int, int, int],
    tubelet: int,
    patch: int,
) -> Figure:
    """The figure of one prompt: ``frames`` ``uint8 [T, 3, H, W]``, ``mask`` ``[T, H, W]`` or
    ``None``, ``features`` ``[N, d]`` and ``saliency`` ``[N]`` on ``grid``."""
    count = len(frames)
    colours = grid_to_pixels(pca_rgb(features).reshape(*grid, 3), tubelet, patch, count)  # (T, H, W, 3)
    values = grid_to_pixels(saliency.float().reshape(grid), tubelet, patch, count)  # (T, H, W)
    return Figure(
        prompt=prompt,
        frames=spotlight(frames, mask),
        features=(colours * 255).round().to(torch.uint8).numpy(),
        saliency=heatmap(frames, values),
    )


def _entity_masks(manifest: Manifest, index: int, clip: Clip) -> list[Tensor | None]:
    """Each entity's mask on the clip's frames (``None`` where the manifest has none)."""
    masks = []
    for number, entity in enumerate(manifest.records[index].entities or []):
        if entity.mask is None:
            masks.append(None)
            continue
        try:
            masks.append(transform_masks(load_mask(manifest.resolve(entity.mask)), clip, tuple(clip.frames.shape[-2:])))
        except (MaskError, VideoError) as exc:
            raise ValueError(f"{manifest.describe(index)}: entities.{number}.mask: {exc}") from None
    return masks


def _prompts(record: Record, given: list[str] | None) -> list[str]:
    if given:
        return given
    return [e.prompt for e in record.entities] if record.entities else record.cast_prompts()


def infer(
    run: str | Path,
    manifest_path: str | Path,
    records: list[int],
    prompts: list[str] | None = None,
    out: str | Path | None = None,
    columns: int = 8,
    fps: float = 8.0,
    device: str | None = None,
    progress: bool = True,
) -> list[Path]:
    """Draw the figures of ``records`` of a manifest (entity prompts, or ``prompts`` when
    given, then the full caption); returns the PNG paths, GIF and MP4 beside each.

    Raises:
        ValueError: one line naming the manifest, record and field that cannot be drawn.
    """
    model = SaliencyModel.from_run(run)
    config = model.config
    target = pick_device(device or config.device)
    model.to(target)
    manifest = load_manifest(manifest_path)
    out = Path(out) if out else Path(run) / "infer"
    size = config.data.shape
    written = []
    for index in tqdm(records, desc="stage1 infer", unit="clip", disable=not progress):
        if not 0 <= index < len(manifest):
            raise ValueError(f"{manifest.path}: record {index}: out of range ({len(manifest)} records)")
        record = manifest.records[index]
        where = manifest.describe(index)
        if not record.prompt().strip():
            raise ValueError(f"{where}: caption: empty")
        try:
            data = config.data
            fps = record.fps or data.fps
            clip = decode_clip(
                manifest.resolve(record.video), data.frames, size, record.start, record.end, fps, data.window
            )
        except VideoError as exc:
            raise ValueError(f"{where}: video: {exc}") from None
        names = _prompts(record, prompts)
        masks = [None] * len(names) if prompts else _entity_masks(manifest, index, clip)
        whole = masks and all(m is not None for m in masks)
        union = torch.stack(masks).amax(0) if whole else None  # the caption names every entity
        tokens = model.tokens(clip.frames[None].to(target))  # (1, N, Dv)
        result = model(tokens, [*names, record.prompt()])
        grid = model.video.grid(config.data.frames, *size)
        folder = out / str((record.model_extra or {}).get("id") or f"record-{index:05d}")
        files = [f"entity-{k}-{slug(name, 40)}" for k, name in enumerate(names)] + ["caption"]
        for k, (name, mask, stem) in enumerate(zip([*names, record.prompt()], [*masks, union], files)):
            saliency = result.saliency_logits[k].float().sigmoid().cpu()  # (N,)
            figure = draw(
                name,
                clip.frames,
                mask,
                result.features[k].cpu(),
                saliency,
                grid,
                model.video.tubelet,
                model.video.patch,
            )
            written.append(save_png(folder / f"{stem}.png", figure.image(columns)))
            animation = figure.animation()
            write_gif(folder / f"{stem}.gif", animation, fps)
            write_video(folder / f"{stem}.mp4", animation, fps)
            tqdm.write(f"{where}: {name!r}: {100 * (saliency > 0.5).float().mean():.0f} % of tokens salient")
    return written
