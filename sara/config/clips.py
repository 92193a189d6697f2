"""How a model sees a clip in time: the frame rate and where its window of frames lies.

Shared by both stages' data configs; the data layer (``sara.data.video``) implements it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sara.config.loader import option

WINDOWS = ("centre", "start", "random", "uniform")


@dataclass
class ClipTiming:
    # frames per second the model sees (Wan2.2 T2V-A14B: 16, TI2V-5B: 24); a record's own
    # fps overrides it; null: the video's own rate
    fps: float | None = option(16.0, gt=0)
    # where the window of `frames` consecutive frames lies in the clip's range: centre, start,
    # random (drawn per seed, epoch and clip), or uniform: spread over the whole range, so the
    # rate, and with it the speed of motion, changes from clip to clip
    window: str = option("centre", choices=WINDOWS)
