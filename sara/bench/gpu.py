"""``sara bench gpu``: what a GPU settles and a CPU cannot, in one run (minutes on one H100).

1. **TRD in bf16 at a real grid** — N = 32 768 tokens of D = 1408 (V-JEPA 2 ViT-g): blockwise
   against dense, and against the bf16 matmul throughput of the same products
   (:func:`sara.bench.trd.bench_trd`, each case in a fresh process).
2. **One training step of the real width** — TI2V-5B's DiT (24 heads × 128, ffn 14 336) cut to
   :data:`BLOCKS` blocks, on its 704 × 1280 bucket (121 frames: 27 280 DiT tokens, 13 920
   V-JEPA tokens), sharded by FSDP2 in bf16 over NCCL in a world of this one GPU: ``sara``
   against ``sft``, median step time and peak memory.
3. **The timesteps on CUDA** — what the sharded DiT's condition embedder receives in that
   step: fp32, equal to σ · 1000 (FSDP's default casts them to bf16).

Context parallelism is not among them: diffusers' Ulysses needs a degree above 1, and NCCL one
GPU per rank. ``--dry-run`` runs every check on the CPU (gloo) at toy sizes: what the tests run.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import torch
from diffusers import WanTransformer3DModel

from sara.bench.memory import PeakMemory, sync
from sara.bench.trd import GIB, bench_trd
from sara.config import load_config
from sara.config.parallel import ParallelConfig
from sara.config.stage2 import Stage2Config
from sara.models.presets import RELEASED_ROOT
from sara.models.wan import read_layout
from sara.parallel.spawn import free_port
from sara.parallel.world import World, close_world, init_world
from sara.stage2.align import VfmView
from sara.stage2.objective import Stage2Model
from sara.stage2.parallelize import parallelize
from sara.stage2.step import noise_generator, train_step

BLOCKS = 4  # of TI2V-5B's 30: the real width, a step that fits beside the TRD


@dataclass(frozen=True)
class GpuCheck:
    """The sizes of one run of the checks."""

    device: str
    tokens: int  # TRD's N
    dim: int  # TRD's D
    frames: int  # the DiT step's clip
    height: int
    width: int
    head_dim: int  # the DiT's (real: 128)
    ffn_dim: int
    text_dim: int
    vfm_dim: int
    steps: int  # timed steps of the DiT, after two untimed


FULL = GpuCheck("cuda", 32768, 1408, 121, 704, 1280, 128, 14336, 4096, 1024, 5)
DRY = GpuCheck("cpu", 512, 64, 5, 64, 128, 8, 64, 32, 24, 1)


def run_checks(check: GpuCheck, progress: bool = True) -> dict:
    """Every check's figures (see the module docstring)."""
    trd = bench_trd(
        [check.tokens], check.dim, 1, ["or"], 0.48, check.device, "bfloat16", None, 3, 1.0, progress
    )[0]  # fmt: skip
    launcher = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    saved = {key: os.environ.get(key) for key in (*launcher, "MASTER_PORT")}
    # a process group of this one process (NCCL on CUDA, gloo on the CPU), as torchrun would set it up
    os.environ.update(launcher, MASTER_PORT=str(free_port()))
    world = init_world(ParallelConfig(param_dtype="bfloat16"), check.device)
    try:
        steps = {mode: _dit_step(check, mode, world) for mode in ("sft", "sara")}
    finally:
        close_world(world)
        for key, value in saved.items():  # the caller's environment back: no later world reads these
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {"check": check.__dict__, "trd": trd, "step": steps}


def _dit_step(check: GpuCheck, mode: str, world: World) -> dict:
    """Median seconds and peak GiB of a bf16 FSDP step of the cut TI2V DiT; the timesteps it saw."""
    folder = RELEASED_ROOT / "wan2.2-ti2v-5b"
    layout = read_layout(folder)
    config = load_config(Stage2Config, None, [f"objective.align.mode={mode}", "parallel.param_dtype=bfloat16"])
    architecture = dict(WanTransformer3DModel.load_config(folder, subfolder="transformer"))
    architecture |= {"num_layers": BLOCKS, "attention_head_dim": check.head_dim, "ffn_dim": check.ffn_dim}
    architecture |= {"text_dim": check.text_dim}
    torch.manual_seed(0)
    with world.device:
        dit = WanTransformer3DModel.from_config(architecture)
        view = VfmView(2, 16, stride=2, short_side=256 if check.height >= 256 else None)
        model = Stage2Model({"high": dit}, layout, config.objective, check.vfm_dim, view)
    parallelize(model, world, config.parallel)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    latent = ((check.frames - 1) // 4 + 1, check.height // 16, check.width // 16)
    tokens = torch.Size(model.vfm_grid(latent)).numel()
    batch = {
        "latents": torch.randn(1, 48, *latent, device=world.device),
        "text": torch.randn(1, 512, check.text_dim, device=world.device),
        "vfm": torch.randn(1, tokens, check.vfm_dim, device=world.device),
        "saliency": torch.rand(1, tokens, device=world.device),
    }
    seen: list[torch.Tensor] = []
    hook = dit.condition_embedder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    peak, times = PeakMemory(check.device), []
    for index in range(2 + check.steps):
        if index == 2:
            peak.start()
        sync(check.device)
        start = time.perf_counter()
        train_step(model, optimizer, batch, noise_generator(0, index), config, world)
        sync(check.device)
        times.append(time.perf_counter() - start)
    hook.remove()
    sigma = model.draw(batch["latents"].shape, noise_generator(0, 2 + check.steps - 1))["sigma"]
    last = seen[-1].cpu()
    expected = (sigma * 1000)[:, None].expand(-1, last.numel()).flatten()  # TI2V: one timestep a token
    return {
        "dit": f"{BLOCKS} blocks of {dit.config.num_attention_heads} heads × {dit.config.attention_head_dim}",
        "dit_tokens": last.numel(),
        "vfm_tokens": tokens,
        "seconds": statistics.median(times[2:]),
        "peak_gib": peak.extra_bytes() / GIB,
        "timestep_dtype": str(last.dtype).removeprefix("torch."),
        "timesteps_exact": bool(torch.equal(last.float(), expected.float())) and last.dtype == torch.float32,
    }


def format_checks(figures: dict) -> str:
    trd, steps = figures["trd"], figures["step"]
    block, dense = trd["blockwise"], trd["dense"]
    lines = [
        f"TRD bf16, N {trd['tokens']}, D {block['dim']}: blockwise {block['seconds']:.3f} s, {block['peak_gib']:.2f} GiB, "
        f"{block['gflops']:.0f} GFLOP/s ({100 * block['gflops'] / trd['matmul_gflops']:.0f} % of bf16 matmul's "
        f"{trd['matmul_gflops']:.0f})"
        + (f"; dense {dense['seconds']:.3f} s, {dense['peak_gib']:.2f} GiB" if dense else "; dense does not fit"),
    ]
    sft = steps["sft"]
    for mode, row in steps.items():
        lines.append(
            f"DiT step (TI2V-5B cut to {row['dit']}, {row['dit_tokens']} DiT tokens, {row['vfm_tokens']} "
            f"V-JEPA tokens, FSDP bf16) {mode}: {row['seconds']:.3f} s ({row['seconds'] / sft['seconds']:.2f} × sft), "
            f"peak {row['peak_gib']:.2f} GiB ({row['peak_gib'] / max(sft['peak_gib'], 1e-9):.2f} × sft); timesteps "
            f"{row['timestep_dtype']}, {'equal to' if row['timesteps_exact'] else 'NOT'} σ · 1000"
        )
    return "\n".join(lines)
