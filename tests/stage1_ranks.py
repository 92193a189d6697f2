"""Stage 1 features computed by one rank of a world, with what it decoded and encoded."""

from __future__ import annotations

import torch

from sara.config import load_config
from sara.config.stage1 import Stage1Config
from sara.data.datasets import ClipDataset
from sara.models.text import CaptionEmbedder, CaptionEncoder
from sara.models.vjepa2 import VideoEncoder
from sara.parallel.world import close_world, init_world
from sara.stage1.train import encoder_folders, load_features


def features_on_rank(overrides: list[str]) -> dict:
    """The train split's features as tensors, and the records this rank decoded, the clips
    it ran V-JEPA 2 on, and the texts it ran the caption encoder and embedder on."""
    config = load_config(Stage1Config, None, overrides)
    encoder_folders(config)
    work = {"decoded": [], "clips": 0, "prompts": [], "captions": []}

    def counted(method, name, count):
        def wrapper(self, argument, *rest):
            work[name] = count(work[name], argument)
            return method(self, argument, *rest)

        return wrapper

    ClipDataset._clip = counted(ClipDataset._clip, "decoded", lambda seen, index: [*seen, index])
    VideoEncoder.forward = counted(VideoEncoder.forward, "clips", lambda seen, frames: seen + len(frames))
    CaptionEncoder.forward = counted(CaptionEncoder.forward, "prompts", lambda seen, texts: [*seen, *texts])
    CaptionEmbedder.forward = counted(CaptionEmbedder.forward, "captions", lambda seen, texts: [*seen, *texts])
    world = init_world(config.parallel, "cpu")
    try:
        features = load_features(config, ("train",), progress=False, world=world)["train"]
        tables = {
            name: getattr(features, name)[:]
            for name in ("tokens", "targets", "text", "text_mask", "embeddings", "clip_of", "prompt_row", "whole")
        }
        return {**work, **tables, "prompts_of": features.prompts, "records": features.records}
    finally:
        if world.distributed:  # the first rank's folder outlives every rank's reading
            torch.distributed.barrier()
        close_world(world)
