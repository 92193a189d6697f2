"""``sara bench trd``: dense vs blockwise TRD, forward + backward, time and peak memory.

Every case runs in a fresh process so that one case's allocations cannot hide in the
next one's peak. Peak extra memory is the high-water mark above the memory held once
the inputs exist: resident set size on CPU (``/proc/self/status`` VmHWM, reset through
``/proc/self/clear_refs``), ``torch.cuda.max_memory_allocated`` on CUDA.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import statistics
import time
from dataclasses import asdict, dataclass, replace

import torch

from sara.bench.memory import PeakMemory, sync
from sara.losses import trd_loss, trd_loss_dense
from sara.losses.trd import visited_panels

GIB = 1024**3
DTYPES = ("float32", "bfloat16", "float16")
DENSE_MATRICES = 8  # N×N fp32 buffers live at dense's peak (6.2 GiB measured on CPU at N = 16384)


@dataclass(frozen=True)
class Case:
    """One measurement: a path (``dense``, ``blockwise`` or ``matmul``) on one input size."""

    path: str
    tokens: int
    dim: int
    batch: int
    mode: str  # routing mode; "none" runs plain TRD without saliency
    fg_fraction: float  # share of tokens in the hard mask of the other modes
    device: str
    dtype: str
    chunk: int | None
    repeats: int  # least number of timed runs
    min_seconds: float  # ... and as many more as it takes to fill this long: short cases are noisy
    seed: int = 0
    part: tuple[int, int] = (0, 1)  # blockwise: the share (i, n) of the pairs one rank computes


def _inputs(case: Case):
    generator = torch.Generator().manual_seed(case.seed)
    shape = (case.batch, case.tokens, case.dim)
    target = torch.randn(shape, generator=generator)
    pred = 0.5 * target + torch.randn(shape, generator=generator)  # correlated, as after some training
    saliency = None
    if case.mode != "none":
        # A hard mask in random token order: the worst case for block skipping before sorting.
        saliency = (torch.rand(case.batch, case.tokens, generator=generator) < case.fg_fraction).float()
        saliency = saliency.to(case.device)
    dtype = getattr(torch, case.dtype)
    pred = pred.to(case.device, dtype).requires_grad_()
    return pred, target.to(case.device, dtype), saliency


def _flops(case: Case, saliency) -> float:
    """Multiply-adds × 2 of the matrix products each path executes."""
    n, d, b = case.tokens, case.dim, case.batch
    if case.path == "matmul":
        return 2 * b * n * n * d
    if case.path == "dense":
        return 2 * b * n * n * 4 * d  # S_p, S_y; two products in S_p's backward
    if case.path == "blockwise":
        w = torch.zeros(b, n) if saliency is None else saliency.cpu()
        index, count = case.part
        plan = visited_panels(w, case.mode, case.chunk)[index::count]  # the panels of this share
        return sum(2 * b * (r1 - r0) * (c1 - c0) * 4 * d for r0, r1, c0, c1 in plan)
    raise ValueError(f"path: unknown {case.path!r}; choose one of matmul, dense, blockwise")


def _step(case: Case, pred: torch.Tensor, target: torch.Tensor, saliency: torch.Tensor | None):
    """The timed callable of one case: a forward + backward, or the reference product."""
    if case.path == "matmul":
        other = target.mT.contiguous()
        return lambda: torch.bmm(target, other)
    if case.path == "dense":
        loss = lambda: trd_loss_dense(pred, target, saliency, case.mode)  # noqa: E731
    elif case.path == "blockwise":
        loss = lambda: trd_loss(pred, target, saliency, case.mode, chunk_size=case.chunk, part=case.part)  # noqa: E731
    else:
        raise ValueError(f"path: unknown {case.path!r}; choose one of matmul, dense, blockwise")

    def step():
        loss().backward()
        pred.grad = None

    return step


def measure(case: Case) -> dict:
    """Median forward + backward seconds, peak extra memory and FLOP/s of one case."""
    pred, target, saliency = _inputs(case)
    step = _step(case, pred, target, saliency)
    sync(case.device)
    peak = PeakMemory(case.device)
    peak.start()
    step()  # the first call also warms up; its peak is the one reported
    sync(case.device)
    extra = peak.extra_bytes()
    times = []
    while len(times) < case.repeats or sum(times) < case.min_seconds:
        start = time.perf_counter()
        step()
        sync(case.device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    flops = _flops(case, saliency)
    return {**asdict(case), "seconds": seconds, "peak_gib": extra / GIB, "gflops": flops / seconds / 1e9}


def _available_bytes(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable")


def dense_fits(case: Case) -> bool:
    """Whether dense's N×N buffers (fp32) fit in the memory free now, with headroom."""
    need = DENSE_MATRICES * case.batch * case.tokens**2 * 4
    return need < 0.85 * _available_bytes(case.device)


def run_cases(cases: list[Case], progress: bool = True) -> list[dict]:
    """Measure each case in a fresh process, in order."""
    from tqdm import tqdm

    context = multiprocessing.get_context("spawn")
    results = []
    for case in tqdm(cases, desc="bench trd", disable=not progress):
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            results.append(pool.submit(measure, case).result())
    return results


def bench_trd(
    tokens: list[int],
    dim: int,
    batch: int,
    modes: list[str],
    fg_fraction: float,
    device: str,
    dtype: str,
    chunk: int | None,
    repeats: int,
    min_seconds: float,
    progress: bool = True,
) -> list[dict]:
    """One row per (N, mode): dense and blockwise side by side, with the matmul reference."""
    plan = []  # (row key, case)
    for n in tokens:
        reference = Case("matmul", n, dim, batch, "none", fg_fraction, device, dtype, chunk, repeats, min_seconds)
        plan.append(((n, None), reference))
        for mode in modes:
            blockwise = replace(reference, path="blockwise", mode=mode)
            dense = replace(blockwise, path="dense")
            plan += [((n, mode), blockwise)] + ([((n, mode), dense)] if dense_fits(dense) else [])
    results = run_cases([case for _, case in plan], progress)
    measured = {(key, case.path): result for (key, case), result in zip(plan, results)}
    return [
        {
            "tokens": n,
            "mode": mode,
            "blockwise": measured[(n, mode), "blockwise"],
            "dense": measured.get(((n, mode), "dense")),
            "matmul_gflops": measured[(n, None), "matmul"]["gflops"],
        }
        for n in tokens
        for mode in modes
    ]


def format_rows(rows: list[dict]) -> str:
    """The benchmark as a text table; ratios are blockwise / dense."""
    header = (
        f"{'N':>6} {'mode':>5} | {'dense s':>8} {'block s':>8} {'ratio':>6} | {'dense GiB':>9} {'block GiB':>9} | "
        f"{'dense GF/s':>10} {'block GF/s':>10} {'matmul GF/s':>11} {'block/mm':>8}"
    )
    lines = [header, "-" * len(header)]
    notes = []
    for row in rows:
        block, dense = row["blockwise"], row["dense"]
        share = block["gflops"] / row["matmul_gflops"]
        if dense is None:
            dense_cells = f"{'—':>8} {block['seconds']:>8.3f} {'—':>6} | {'—':>9}"
            dense_gf = f"{'—':>10}"
            notes.append(
                f"N={row['tokens']} {row['mode']}: dense skipped, its N×N buffers would not fit in free memory"
            )
        else:
            dense_cells = (
                f"{dense['seconds']:>8.3f} {block['seconds']:>8.3f} {block['seconds'] / dense['seconds']:>6.2f} | "
                f"{dense['peak_gib']:>9.2f}"
            )
            dense_gf = f"{dense['gflops']:>10.1f}"
        lines.append(
            f"{row['tokens']:>6} {row['mode']:>5} | {dense_cells} {block['peak_gib']:>9.2f} | "
            f"{dense_gf} {block['gflops']:>10.1f} {row['matmul_gflops']:>11.1f} {100 * share:>7.0f}%"
        )
    return "\n".join(lines + notes)
