"""How `sara stage2 generate` (and validation during training) samples each video. Each
field's help says what it controls; the command line's flags and defaults are these fields."""

from __future__ import annotations

from dataclasses import dataclass, field

SCHEDULERS = ("unipc", "euler")


def _setting(default, text: str):
    return field(default=default, metadata={"help": text})


@dataclass
class Sampling:
    negative_prompt: str = _setting("", "what classifier-free guidance steers away from")
    guidance_scale: float = _setting(5.0, "classifier-free guidance scale; 1 turns it off")
    steps: int = _setting(30, "denoising steps")
    seed: int = _setting(0, "prompt i uses seed + i")
    frames: int = _setting(17, "frames per video, 4k + 1")
    height: int = _setting(128, "pixels")
    width: int = _setting(128, "pixels")
    fps: float = _setting(16.0, "frame rate of the written files")
    text_length: int = _setting(512, "caption tokens, zero-padded as in training (models.text_length)")
    scheduler: str = _setting("unipc", "unipc (UniPC) or euler (flow-match Euler)")
    shift: float = _setting(3.0, "flow shift of the sampler (Wan at 480p: 3)")
    vae_tile: int = _setting(0, "decode in overlapping tiles of this many pixels (less memory); 0: whole frames")
