"""``sara bench dist``: what sharding buys and costs, measured with gloo processes on CPU
(NCCL on GPUs).

1. **State per rank** of one Stage 2 step of the ``small`` DiT (12 M parameters) with SARA,
   for each world: parameters, gradients and AdamW state held by the rank (the bytes of
   its local shards, counted exactly), and its peak resident memory above the start of the
   step (noisy on CPU: allocator caches and the gloo buffers count).
2. **Bytes sent per rank and step** by the functional collectives of sequence parallelism,
   counted as they run: the Ulysses all-to-alls of attention, the gathers (diffusers' output
   gather and the TRD token gather) and the reduce-scatter of the TRD gather's backward.
   FSDP's own all-gathers and reduce-scatters are not in it (they move the shards of
   table 1: about twice the parameter bytes per step).
3. **Distributed TRD**: one rank's share of the pair loss (``trd_loss(..., part=(i, P))``)
   against the whole loss in one process — time and peak memory of the largest share.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sara.bench.memory import PeakMemory
from sara.bench.trd import Case, run_cases
from sara.config.parallel import ParallelConfig
from sara.config.stage2 import Stage2ObjectiveConfig
from sara.models.presets import resolve
from sara.models.wan import load_transformers, read_layout
from sara.parallel.gradients import backward
from sara.parallel.spawn import run_processes
from sara.parallel.world import init_world
from sara.stage2.align import VfmView
from sara.stage2.objective import Stage2Model
from sara.stage2.parallelize import parallelize

MIB = 2**20
VFM_DIM = 1024  # V-JEPA 2 ViT-L
VIEW = VfmView(tubelet=2, patch=16)
WORLDS = {  # name: (processes, parallel config)
    "1": (1, {}),
    "2 fsdp": (2, {}),
    "4 fsdp": (4, {}),
    "2 ulysses": (2, {"dp_shard": 1, "ulysses": 2}),
    "4 fsdp×ulysses": (4, {"ulysses": 2}),
}


class CollectiveBytes(TorchDispatchMode):
    """Bytes each functional collective sends from this rank while active."""

    def __init__(self, size: int):
        super().__init__()
        self.size, self.sent = size, {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func._schema.name
        if name.startswith("_c10d_functional::") and isinstance(args[0], torch.Tensor):
            kind = name.split("::")[1]
            moved = args[0].numel() * args[0].element_size()
            if kind.startswith("all_gather"):
                moved *= self.size - 1  # its slice to every other rank
            elif kind.startswith(("reduce_scatter", "all_to_all")):
                moved = moved * (self.size - 1) // self.size  # all but its own part
            else:
                return out
            self.sent[kind] = self.sent.get(kind, 0) + moved
        return out


def _local_bytes(tensors) -> int:
    return sum(t.to_local().nbytes if hasattr(t, "to_local") else t.nbytes for t in tensors)


def _step(folder: str, parallel: dict, batch: int) -> dict:
    """One SARA step of the ``small`` DiT on this rank: its state bytes, peak and traffic."""
    world = init_world(ParallelConfig(**parallel), "cpu")
    layout = read_layout(folder)
    config = Stage2ObjectiveConfig()
    torch.manual_seed(0)
    model = parallelize(
        Stage2Model(load_transformers(layout), layout, config, VFM_DIM, VIEW), world, ParallelConfig(**parallel)
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)  # 17 frames of 128²: latents 5 × 16 × 16, V-JEPA grid 8 × 8 × 8
    data = {
        "latents": torch.randn(batch, 16, 5, 16, 16, generator=g),
        "text": torch.randn(batch, 64, model.experts["high"].config.text_dim, generator=g),
        "vfm": torch.randn(batch, 512, VFM_DIM, generator=g),
        "saliency": (torch.rand(batch, 512, generator=g) < 0.48).float(),
    }
    data |= model.draw(data["latents"].shape, g)
    rows = torch.arange(batch).chunk(world.dp_size)[world.dp_rank]
    local = {k: v[rows] for k, v in data.items()}
    for _ in range(2):  # the first step allocates the optimizer state; the second is measured
        peak = PeakMemory("cpu")
        peak.start()
        traffic = CollectiveBytes(world.cp)
        start = time.perf_counter()
        with traffic:
            loss, _ = model(local, align_share=world.cp_share)
            backward(loss, world)
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        seconds = time.perf_counter() - start
    params = [p for p in model.parameters()]
    moments = [
        v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor) and v.dim()
    ]
    return {
        "params_mib": _local_bytes(params) / MIB,
        "grads_mib": _local_bytes([p.grad for p in params if p.grad is not None]) / MIB,
        "adamw_mib": _local_bytes(moments) / MIB,
        "peak_mib": peak.extra_bytes() / MIB,
        "step_s": seconds,
        "sent_mib": {k: v / MIB for k, v in traffic.sent.items()},
    }


def bench_sharding(root: str, batch: int = 4, worlds: dict | None = None) -> dict[str, dict]:
    """Tables 1 and 2: per world, rank 0's figures (the fullest rank's peak)."""
    folder = str(resolve("tiny", "wan-small", root))
    out = {}
    for name, (size, parallel) in (worlds or WORLDS).items():
        ranks = run_processes(_step, size, folder, parallel, batch)
        out[name] = ranks[0] | {"peak_mib": max(r["peak_mib"] for r in ranks)}
    return out


def bench_shares(tokens: list[int], dim: int, parts: list[int], min_seconds: float = 2.0) -> list[dict]:
    """Table 3: the whole TRD loss and the largest of its ``P`` shares, each case in a fresh process."""
    rows = []
    for n in tokens:
        base = Case("blockwise", n, dim, 1, "or", 0.48, "cpu", "float32", None, 3, min_seconds)
        (whole,) = run_cases([base], progress=False)
        rows.append({"tokens": n, "parts": 1, "seconds": whole["seconds"], "peak_gib": whole["peak_gib"]})
        for count in parts:
            shares = run_cases([replace(base, part=(i, count)) for i in range(count)], progress=False)
            slowest = max(shares, key=lambda r: r["seconds"])
            rows.append(
                {
                    "tokens": n,
                    "parts": count,
                    "seconds": slowest["seconds"],
                    "peak_gib": max(r["peak_gib"] for r in shares),
                }
            )
    return rows


def format_dist(sharding: dict[str, dict], shares: list[dict]) -> str:
    one = sharding.get("1")
    lines = [
        "Stage 2 step of the small DiT (12 M parameters), SARA, batch 4 of 17 × 128², gloo on CPU; per rank",
        f"{'world':>16} | {'params':>7} {'grads':>7} {'AdamW':>7} {'state':>7} {'×1':>5} | {'peak':>7} | "
        f"{'all-to-all':>10} {'gather':>7} {'r-scatter':>9} MiB sent",
        "-" * 104,
    ]
    for name, row in sharding.items():
        state = row["params_mib"] + row["grads_mib"] + row["adamw_mib"]
        ratio = state / (one["params_mib"] + one["grads_mib"] + one["adamw_mib"]) if one else float("nan")
        sent = row["sent_mib"]
        lines.append(
            f"{name:>16} | {row['params_mib']:>7.2f} {row['grads_mib']:>7.2f} {row['adamw_mib']:>7.2f} {state:>7.2f} "
            f"{ratio:>5.2f} | {row['peak_mib']:>7.1f} | {sent.get('all_to_all_single', 0):>10.2f} "
            f"{sent.get('all_gather_into_tensor', 0):>7.2f} {sent.get('reduce_scatter_tensor', 0):>9.2f}"
        )
    lines += ["", "TRD (or, hard mask FG 0.48, D = 1024, fp32): one process vs the largest of P shares",
              f"{'N':>6} {'P':>3} | {'seconds':>8} {'× whole':>8} | {'peak GiB':>8} {'× whole':>8}", "-" * 50]  # fmt: skip
    whole = {}
    for row in shares:
        if row["parts"] == 1:
            whole = row
        lines.append(
            f"{row['tokens']:>6} {row['parts']:>3} | {row['seconds']:>8.3f} {row['seconds'] / whole['seconds']:>8.2f} | "
            f"{row['peak_gib']:>8.3f} {row['peak_gib'] / max(whole['peak_gib'], 1e-9):>8.2f}"
        )
    return "\n".join(lines)
