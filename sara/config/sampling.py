"""How `sara stage2 generate` (and validation during training) samples each video. Each
field's help says what it controls; the command line's flags and defaults are these fields.

A field left ``None`` takes the official setting of the release the folder holds (Wan2.2
T2V-A14B, TI2V-5B: ``sara.models.wan_family``), else the folder's own (its scheduler's
shift), else :data:`FALLBACK`; ``sara.stage2.generate.resolve_sampling`` fills them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SCHEDULERS = ("unipc", "euler")


def _setting(default, text: str, kind: type | None = None):
    return field(default=default, metadata={"help": text, "type": kind or type(default)})


@dataclass
class Sampling:
    negative_prompt: str | None = _setting(None, "what guidance steers away from (default: Wan's, or '')", str)
    guidance_scale: float | None = _setting(None, "classifier-free guidance of the (high-noise) expert", float)
    guidance_scale_2: float | None = _setting(None, "guidance of the low-noise expert (two-expert models)", float)
    steps: int | None = _setting(None, "denoising steps", int)
    seed: int = _setting(0, "prompt i uses seed + i")
    frames: int | None = _setting(None, "frames per video, 4k + 1", int)
    height: int | None = _setting(None, "pixels", int)
    width: int | None = _setting(None, "pixels", int)
    fps: float | None = _setting(None, "frame rate of the written files", float)
    text_length: int = _setting(512, "caption tokens, zero-padded as in training (models.text_length)")
    scheduler: str = _setting("unipc", "unipc (UniPC) or euler (flow-match Euler)")
    shift: float | None = _setting(None, "flow shift of the sampler (default: the release's, or the folder's)", float)
    # one pipeline call denoises and decodes this many videos, each from its own seed's noise: the
    # same videos up to float rounding, faster where one video leaves the device idle, more memory
    batch: int = _setting(1, "videos sampled together")
    vae_tile: int = _setting(0, "decode in overlapping tiles of this many pixels (less memory); 0: whole frames")


# what a folder of no known release samples with where it says nothing itself: the tiny presets'
# sizes, diffusers' guidance, no negative prompt, Wan's 480p shift
FALLBACK = Sampling(
    negative_prompt="", guidance_scale=5.0, steps=30, frames=17, height=128, width=128, fps=16.0, shift=3.0
)
