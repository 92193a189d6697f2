"""Video decoding and encoding with PyAV.

Decoding picks frames in two passes: the packets' timestamps (no decoding) give the
clip's timeline, from which the time range, the target rate and the window choose the
frames; then only those frames are converted to RGB. Frames come back as ``uint8
[T, C, H, W]``, resized (shorter side first, antialiased) and centre-cropped to the
requested size; :func:`transform_masks` applies the same selection and geometry to masks.

**Frame rate.** A model generates (and should learn) motion at a fixed rate — Wan2.2
T2V-A14B at 16 fps, TI2V-5B at 24. The range is first resampled to the target rate
(nearest frame per step), then a *window* of ``num_frames`` consecutive resampled frames
is taken: at the ``start``, the ``centre``, or at a ``random`` place drawn from a key such as
``(seed, epoch, clip)``. ``uniform`` instead spreads the frames over the whole range, as
figures want; the effective rate then depends on the clip's length.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from sara.config.clips import WINDOWS


class VideoError(ValueError):
    """A video that cannot give the clip asked for (missing, empty, undecodable, too short)."""


@dataclass(frozen=True)
class Clip:
    """Decoded frames and where they came from."""

    frames: torch.Tensor  # (T, C, H, W) uint8, resized and cropped
    indices: list[int]  # position of each frame among the clip range's frames
    range_frames: int  # frames in the clip's time range (what a mask file must hold)
    source_size: tuple[int, int]  # (H, W) before resizing


def _timeline(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> list[float]:
    """Presentation times in seconds of every frame, from the packets alone."""
    return sorted(float(p.pts * stream.time_base) for p in container.demux(stream) if p.pts is not None)


@contextlib.contextmanager
def _open(path: str | Path) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream, list[float]]]:
    """Open a video file for decoding: its container, first video stream and timeline.

    Every way the file can fail (missing, empty, no video stream, FFmpeg errors while
    reading inside the ``with`` block) becomes a one-line :class:`VideoError`.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError("video file not found")
    if path.stat().st_size == 0:
        raise VideoError("video file is empty")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError("has no video stream")
            stream = container.streams.video[0]
            yield container, stream, _timeline(container, stream)
    except av.error.FFmpegError as exc:
        raise VideoError(f"cannot be decoded ({type(exc).__name__})") from None


@dataclass(frozen=True)
class Span:
    """What a video's header and packet timeline say of a record's time range, nothing
    decoded: enough to place the clip in a bucket (``sara data check`` writes it down)."""

    size: tuple[int, int]  # (H, W)
    first: float  # time of the range's first frame, seconds
    last: float  # and of its last
    count: int  # frames in the range

    def seen(self, fps: float | None) -> int:
        """Frames a model sees of the range at ``fps`` (``None``: every frame), as :func:`at_rate` picks them."""
        return self.count if fps is None else len(_steps(self.first, self.last, fps))


def _steps(first: float, last: float, fps: float) -> np.ndarray:
    """Times of the steps of ``1 / fps`` from ``first`` to ``last``."""
    return np.arange(first, last + 1e-9, 1.0 / fps)


def at_rate(stamps: np.ndarray, fps: float | None) -> np.ndarray:
    """Positions among ``stamps`` (seconds, sorted) of the frames seen at ``fps``: the nearest
    frame to each step of ``1 / fps`` from the first; every frame when ``fps`` is ``None``."""
    if fps is None:
        return np.arange(len(stamps))
    steps = _steps(stamps[0], stamps[-1], fps)
    return np.abs(stamps[None, :] - steps[:, None]).argmin(axis=1)


def window(available: int, num_frames: int, where: str, key: tuple[int, ...] = (0,)) -> np.ndarray:
    """Which ``num_frames`` of ``available`` frames to keep: ``[num_frames]`` positions.

    ``start``, ``centre`` and ``random`` (drawn from ``key``) give consecutive frames;
    ``uniform`` spreads them over all ``available``.
    """
    if available < num_frames:
        raise VideoError(f"has {available} frames in range, fewer than the {num_frames} asked for")
    if where == "uniform":
        return np.linspace(0, available - 1, num_frames).round().astype(int)
    slack = available - num_frames
    if where == "start":
        first = 0
    elif where == "centre":
        first = slack // 2
    elif where == "random":
        first = int(np.random.default_rng(list(key)).integers(slack + 1))
    else:
        raise ValueError(f"window {where!r}; choose one of {', '.join(WINDOWS)}")
    return np.arange(first, first + num_frames)


def select_frames(
    times: list[float],
    num_frames: int | None,
    start: float | None,
    end: float | None,
    fps: float | None,
    where: str = "centre",
    key: tuple[int, ...] = (0,),
) -> tuple[list[int], list[int]]:
    """Frames of the range ``[start, end)`` and, among them, the ``num_frames`` to keep.

    The range is resampled to ``fps`` (``None``: the video's own rate), then ``num_frames``
    are taken by :func:`window` (``None``: all of them). Returns ``(range_indices, chosen
    positions within the range)``.
    """
    lo = start if start is not None else -np.inf
    hi = end if end is not None else np.inf
    in_range = [i for i, t in enumerate(times) if lo <= t < hi]
    if not in_range:
        raise VideoError("no frames in the requested time range")
    positions = at_rate(np.array([times[i] for i in in_range]), fps)
    if num_frames is None:
        return in_range, [int(p) for p in positions]
    if len(positions) < num_frames:
        rate = f" at {fps:g} fps" if fps is not None else ""
        raise VideoError(f"has {len(positions)} frames{rate} in range, fewer than the {num_frames} asked for")
    return in_range, [int(p) for p in positions[window(len(positions), num_frames, where, key)]]


def resize_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``[T, C, H, W]`` (any dtype) so it covers ``size``, then centre-crop to it."""
    height, width = x.shape[-2:]
    scale = max(size[0] / height, size[1] / width)
    scaled = (max(size[0], round(height * scale)), max(size[1], round(width * scale)))
    if scaled != (height, width):
        x = F.interpolate(x.float(), size=scaled, mode="bilinear", antialias=True, align_corners=False)
    top, left = (scaled[0] - size[0]) // 2, (scaled[1] - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]


def decode_clip(
    path: str | Path,
    num_frames: int | None,
    size: tuple[int, int] | None,
    start: float | None = None,
    end: float | None = None,
    fps: float | None = None,
    where: str = "centre",
    key: tuple[int, ...] = (0,),
) -> Clip:
    """Decode a window of ``num_frames`` frames of ``[start, end)`` at ``fps`` (``None``:
    native; see :func:`select_frames`), as ``uint8 [T, C, H, W]`` of ``size`` ``(H, W)``.
    ``num_frames=None`` keeps every frame of the range and ``size=None`` the video's own
    resolution (what mask extraction needs).

    Raises:
        VideoError: one line saying why the file cannot give this clip.
    """
    with _open(path) as (container, stream, times):
        in_range, chosen = select_frames(times, num_frames, start, end, fps, where, key)
        wanted = {in_range[p] for p in chosen}
        last = max(wanted)
        decoded: dict[int, np.ndarray] = {}
        index_of = {round(t, 6): i for i, t in enumerate(times)}
        # back to the keyframe before the range: decoding starts there, not at the file's start
        container.seek(int(times[in_range[0]] / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            index = index_of.get(round(float(frame.pts * stream.time_base), 6)) if frame.pts is not None else None
            if index in wanted:
                decoded[index] = frame.to_ndarray(format="rgb24")  # (H, W, 3)
            if index is not None and index >= last:
                break
    missing = wanted - decoded.keys()
    if missing:
        raise VideoError(f"truncated: {len(missing)} of the chosen frames could not be decoded")
    array = np.stack([decoded[in_range[p]] for p in chosen])  # (T, H, W, 3)
    frames = torch.from_numpy(array).permute(0, 3, 1, 2)  # (T, 3, H, W)
    resized = frames if size is None else resize_crop(frames, size).round().clamp(0, 255).to(torch.uint8)
    return Clip(resized, chosen, len(in_range), tuple(array.shape[1:3]))


def read_video(path: str | Path) -> torch.Tensor:
    """Every frame of a video file at its own size: ``uint8 [T, H, W, 3]``."""
    return decode_clip(path, None, None).frames.permute(0, 2, 3, 1)


def transform_masks(masks: torch.Tensor, clip: Clip, size: tuple[int, int]) -> torch.Tensor:
    """Apply a clip's frame choice and geometry to masks ``[T_range, H, W]`` (bool).

    Returns ``float [T, H', W']`` in [0, 1]: the covered fraction of each output pixel,
    which keeps sub-pixel coverage for pooling onto the token grid.

    Raises:
        VideoError: when the masks' frames or size do not match the video.
    """
    expected = (clip.range_frames, *clip.source_size)
    if tuple(masks.shape) != expected:
        raise VideoError(f"mask shape {tuple(masks.shape)} does not match the video's (frames, H, W) {expected}")
    chosen = masks[clip.indices].unsqueeze(1)  # (T, 1, H, W)
    return resize_crop(chosen.float(), size).squeeze(1).clamp(0, 1)


def write_video(path: str | Path, frames: torch.Tensor | np.ndarray, fps: float, crf: int = 18) -> Path:
    """Write ``uint8 [T, C, H, W]`` frames as H.264 mp4 (yuv420p; odd sizes are padded)."""
    array = np.asarray(frames if isinstance(frames, np.ndarray) else frames.cpu().numpy())
    array = np.ascontiguousarray(array.transpose(0, 2, 3, 1))  # (T, H, W, C)
    pad_h, pad_w = array.shape[1] % 2, array.shape[2] % 2
    if pad_h or pad_w:  # yuv420p needs even sizes
        array = np.pad(array, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = array.shape[2], array.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for image in array:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_gif(path: str | Path, frames: torch.Tensor | np.ndarray, fps: float) -> Path:
    """Write ``uint8 [T, C, H, W]`` frames as a looping GIF."""
    from PIL import Image

    array = np.asarray(frames if isinstance(frames, np.ndarray) else frames.cpu().numpy()).transpose(0, 2, 3, 1)
    images = [Image.fromarray(np.ascontiguousarray(a)) for a in array]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return path


def probe_size(path: str | Path) -> tuple[int, int] | None:
    """``(H, W)`` of the first video stream from the header alone, or ``None`` if unreadable."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return stream.height, stream.width
    except (av.error.FFmpegError, IndexError, OSError):
        return None


def probe_span(path: str | Path, start: float | None, end: float | None) -> Span:
    """The :class:`Span` of ``[start, end)`` from the header and the packet timeline.

    Raises:
        VideoError: as :func:`decode_clip`.
    """
    with _open(path) as (_, stream, times):
        in_range, _ = select_frames(times, None, start, end, None)
        return Span((stream.height, stream.width), times[in_range[0]], times[in_range[-1]], len(in_range))


def scan_clip(path: str | Path, start: float | None = None, end: float | None = None) -> Span:
    """Decode every frame of ``[start, end)`` once (a full integrity check); returns its :class:`Span`.

    Raises:
        VideoError: as :func:`decode_clip`, and when a frame does not decode.
    """
    with _open(path) as (container, stream, times):
        in_range, _ = select_frames(times, None, start, end, None)
        container.seek(0)
        decoded = sum(1 for frame in container.decode(stream) if frame.pts is not None)
        span = Span((stream.height, stream.width), times[in_range[0]], times[in_range[-1]], len(in_range))
    if decoded < len(times):
        raise VideoError(f"truncated: {decoded} of {len(times)} frames decode")
    return span
