"""Exact, faster stand-ins for two layers of Diffusers' Wan VAE while it trains on CPU.

Both compute what the Diffusers layer computes (to float rounding; `tests/test_shapes_vae.py`
checks outputs and gradients), only in a layout the CPU kernels handle well:

- ``WanRMS_norm`` normalises over channels with ``F.normalize(x, dim=1)``, a strided
  reduction that took a fifth of a training step; a sum of squares over dim 1 and ``rsqrt``
  is the same L2 normalisation at about a quarter of the cost.
- on a single frame (no cached past), a causal 3×3×3 ``WanCausalConv3d`` pads two zero frames
  in front, so only its last temporal tap ever meets data: it is the 2-D convolution of that
  tap, at a third of the work. The other taps get no gradient either way.

Together they make a single-frame step of the shapes VAE about twice as fast; the freed
time buys the VAE more steps within the demo's budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanRMS_norm

EPS = 1e-12  # F.normalize's floor on the norm


def _rms_norm(norm: WanRMS_norm, x: torch.Tensor) -> torch.Tensor:
    """``WanRMS_norm.forward`` for float32 channel-first inputs: ``[B, C, ...]`` → same."""
    inverse = torch.rsqrt((x * x).sum(dim=1, keepdim=True).clamp_min(EPS**2))
    return x * inverse * norm.scale * norm.gamma + norm.bias


def _frame_conv(conv: WanCausalConv3d, x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
    """``WanCausalConv3d.forward``; one frame without a cache runs as the 2-D convolution of
    the last temporal tap. ``x [B, C, T, H, W]`` → ``[B, C', T, H', W']``."""
    if x.shape[2] != 1 or cache_x is not None:
        return WanCausalConv3d.forward(conv, x, cache_x)
    pad_w, _, pad_h = conv._padding[:3]
    weight = conv.weight[:, :, -1]  # (out, in, kh, kw)
    return F.conv2d(x[:, :, 0], weight, conv.bias, conv.stride[1:], (pad_h, pad_w))[:, :, None]


@contextmanager
def fast_layers(vae: AutoencoderKLWan) -> Iterator[None]:
    """Within the block, ``vae``'s channel-first RMS norms and its causal 3×3×3 convolutions
    run the stand-ins above (float32 only); the Diffusers forwards return on exit."""
    if vae.dtype != torch.float32:
        raise ValueError(f"fast_layers: the VAE is {vae.dtype}; the stand-ins are exact for float32 only")
    swapped = []
    for module in vae.modules():
        if isinstance(module, WanRMS_norm) and module.channel_first:
            module.forward = partial(_rms_norm, module)
            swapped.append(module)
        elif isinstance(module, WanCausalConv3d) and module.kernel_size[0] == 3:
            module.forward = partial(_frame_conv, module)
            swapped.append(module)
    try:
        yield
    finally:
        for module in swapped:
            del module.forward  # the instance attribute; the class's forward shows through again
