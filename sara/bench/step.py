"""``sara bench step``: one Stage 2 optimizer step per mode — time and peak memory as ratios to ``sft``.

A small shapes world is synthesised and precomputed once; then each case (``sft``,
``trd``, ``sara`` from the cache, and ``sara`` with the frozen encoders run online) trains
the tiny DiT in a fresh process, so that no case's allocations hide in another's peak.
The first ``warmup`` steps are not timed (their peak is the one reported; with no warm-up,
the first step's); the step time is the median of the timed steps. The ``sara`` cases read
ground-truth-mask saliency: the cost of a step does not depend on where its saliency came from.

With ``memory``, each one-GPU memory switch is measured against the case it changes: the
training switches against the cached ``sara`` step, the VAE's tiles and slices against the
online one, and ``validation.offload_frozen`` against a plain round of validation videos
of a two-expert model that trains one expert (``validate``: the pipeline loaded around the
live expert, then its videos sampled; its time is the sampling's).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch
import transformers

from sara.bench.memory import PeakMemory, sync
from sara.config import load_config
from sara.config.stage2 import Stage2Config
from sara.models.presets import wan_folder
from sara.models.wan import read_layout
from sara.parallel.precision import param_dtype
from sara.parallel.world import World
from sara.run_dir import RunDir
from sara.shapes.render import SynthSpec, synthesize
from sara.stage2.build import build_model, resolve_setup
from sara.stage2.cache import precompute
from sara.stage2.train import Stage2Training
from sara.stage2.validate import Validator

MIB = 2**20
# the memory switches for one GPU, each a `sara` step with these settings (`--memory`);
# accumulation runs the same global batch as two micro-batches of half of it ({half}), so
# the batch must be even
SWITCHES = {
    "accumulate2": ("optim.accumulate=2", "optim.batch_size={half}"),
    "checkpointing": ("optim.gradient_checkpointing=true",),
    "lora8": ("optim.lora_rank=8",),
    "lora8+fp8": ("optim.lora_rank=8", "optim.layerwise_fp8=true"),
}
VALIDATE = "validate"  # the case of a validation round, the reference of validation.offload_frozen
VALIDATE_EXPERT = "tiny-a14b"  # its model when the benched one has a single expert
VALIDATE_STEPS = 4  # its denoising steps: the peak does not depend on how many


@dataclass(frozen=True)
class StepCase:
    name: str  # row label: the mode, with "_online" for the online-encoder variant
    overrides: tuple[str, ...]  # the Stage 2 config of the case, as key=value
    warmup: int
    steps: int
    validate: bool = False  # a round of validation videos instead of optimizer steps
    against: str | None = None  # a memory switch: the case it changes, its row's reference


def _run(case: StepCase) -> dict:
    return _measure_validation(case) if case.validate else _measure(case)


def _measure(case: StepCase) -> dict:
    """Median step seconds and peak extra MiB of one case (runs in its own process): the
    steps of :class:`~sara.stage2.train.Stage2Training` in one process, without the loop."""
    config = load_config(Stage2Config, None, case.overrides)
    training = Stage2Training(config)
    training.build(World(rank=0, size=1, device=torch.device(config.device)))
    training.model.train()
    peak = PeakMemory(config.device)
    peak.start()
    times, waits = [], []
    for step in range(case.warmup + case.steps):
        sync(config.device)
        start, waited = time.perf_counter(), training.loader.waited
        training.step(step)
        sync(config.device)
        if step >= case.warmup:
            times.append(time.perf_counter() - start)
            waits.append(training.loader.waited - waited)
        if step == max(case.warmup, 1) - 1:  # the peak of the warm-up (of the first step without one)
            extra = peak.extra_bytes()
    batch = len(training.steps_of(0))
    wait = sum(waits) / sum(times)  # the share of the timed steps spent waiting for batches
    return {"step_s": statistics.median(times), "peak_mib": extra / MIB, "batch": batch, "data_wait": wait}


def _measure_validation(case: StepCase) -> dict:
    """Seconds of sampling one round of validation videos and the peak extra MiB of loading
    the pipeline and sampling it (runs in its own process)."""
    diffusers.utils.logging.disable_progress_bar()  # the pipeline's loading bars, in this worker alone
    transformers.utils.logging.disable_progress_bar()
    config = load_config(Stage2Config, None, case.overrides)
    device = torch.device(config.device)
    setup = resolve_setup(config)
    compute = param_dtype(config.parallel, device)
    model = build_model(config, setup, compute_dtype=compute).to(device)  # the live expert, there before validation
    peak = PeakMemory(config.device)
    peak.start()
    validator = Validator(config, setup, model, World(rank=0, size=1, device=device))
    sync(config.device)
    start = time.perf_counter()
    videos = validator(RunDir(config.out_dir).samples(0))
    sync(config.device)
    seconds, extra = time.perf_counter() - start, peak.extra_bytes()
    return {"step_s": seconds, "peak_mib": extra / MIB, "batch": len(videos), "wan": config.models.wan}


def bench_step(
    modes: list[str],
    batch: int,
    frames: int,
    size: int,
    device: str,
    warmup: int,
    steps: int,
    online: bool = True,
    wan: str = "tiny",
    workdir: str | Path | None = None,
    progress: bool = True,
    memory: bool = False,
    workers: int = 0,
) -> dict[str, dict]:
    """``{case: {step_s, peak_mib, batch, ratio_to_sft}}`` for each mode (and ``sara_online``);
    with ``memory`` also ``sara+SWITCH`` for each of :data:`SWITCHES`, ``sara_online+vae_tile``
    and ``sara_online+vae_slicing`` (the online VAE encoding in tiles of half the frame, or
    one clip at a time), and ``validate`` and ``validate+offload_frozen`` (``ratio_to_sft``
    none: a validation round is no training step; ``batch`` its videos, ``wan`` its model).
    A switch's row names the case it changes (``against``). A trained case's ``data_wait`` is
    the share of its timed steps spent waiting for batches, read by ``workers`` loader
    processes (0: in the step)."""
    from tqdm import tqdm

    if "sft" not in modes:
        modes = ["sft", *modes]  # every ratio is to sft
    root = Path(workdir or tempfile.mkdtemp(prefix="sara-bench-step-"))
    overrides = [*_cached_world(root, batch, frames, size, device, wan), f"data.num_workers={workers}"]
    cases = _cases(modes, overrides, batch, size, warmup, steps, online, memory, wan, root / "models")
    context = multiprocessing.get_context("spawn")
    results = {}
    for case in tqdm(cases, desc="bench step", disable=not progress):
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            results[case.name] = pool.submit(_run, case).result()
    for case in cases:
        row = results[case.name]
        row["ratio_to_sft"] = None if case.validate else row["step_s"] / results["sft"]["step_s"]
        if case.against is not None:
            row["against"] = case.against
    return results


def _cached_world(root: Path, batch: int, frames: int, size: int, device: str, wan: str) -> list[str]:
    """A shapes world and its feature cache under ``root``; the overrides every case shares."""
    # a reused workdir keeps one world and cache per shape: a world synthesized for a smaller
    # batch would otherwise cap the batch (BucketSteps draws without replacement)
    num = max(8, 2 * batch)
    shape = f"{num}x{frames}x{size}"
    world = root / f"world-{shape}"
    if not (world / "train.jsonl").is_file():
        spec = SynthSpec(num=num, seed=0, frames=frames, size=size, heldout_fraction=0.0)
        synthesize(spec, world, workers=1, progress=False)
    overrides = [
        f"out_dir={root / 'run'}",
        f"device={device}",
        f"data.train={world / 'train.jsonl'}",
        f"data.frames={frames}",
        f"data.size={size}",
        f"models.wan={wan}",
        f"models.tiny_root={root / 'models'}",
        f"precompute.cache_dir={root / f'cache-{shape}-{Path(wan).name}'}",
        "objective.align.saliency=masks",
        f"optim.batch_size={batch}",
    ]
    precompute(load_config(Stage2Config, None, overrides), progress=False)
    return overrides


def _cases(
    modes: list[str],
    overrides: list[str],
    batch: int,
    size: int,
    warmup: int,
    steps: int,
    online: bool,
    memory: bool,
    wan: str,
    tiny_root: Path,
) -> list[StepCase]:
    """One case per mode, ``sara_online``, and with ``memory`` the switches (see :func:`bench_step`)."""
    cases = [StepCase(m, (*overrides, f"objective.align.mode={m}"), warmup, steps) for m in dict.fromkeys(modes)]
    sara = (*overrides, "objective.align.mode=sara")
    if online:
        cases.append(StepCase("sara_online", (*sara, "online=true"), warmup, steps))
    if not memory:
        return cases
    if "sara" not in modes:
        cases.append(StepCase("sara", sara, warmup, steps))  # the switches' reference
    for name, more in SWITCHES.items():
        more = (*sara, *(m.format(half=batch // 2) for m in more))
        cases.append(StepCase(f"sara+{name}", more, warmup, steps, against="sara"))
    if online:  # the VAE's savers change only the online step
        vae = {
            "vae_tile": f"precompute.vae_tile={max(32, size // 2)}",
            "vae_slicing": "precompute.vae_slicing=true",
        }
        cases += [
            StepCase(f"sara_online+{k}", (*sara, "online=true", v), warmup, steps, against="sara_online")
            for k, v in vae.items()
        ]
    validate = _validation_overrides(overrides, wan, tiny_root)
    cases.append(StepCase(VALIDATE, (*validate, "validation.offload_frozen=false"), warmup, steps, validate=True))
    more = (*validate, "validation.offload_frozen=true")
    cases.append(StepCase(f"{VALIDATE}+offload_frozen", more, warmup, steps, validate=True, against=VALIDATE))
    return cases


def _validation_overrides(overrides: list[str], wan: str, tiny_root: Path) -> tuple[str, ...]:
    """The ``validate`` case: ``wan`` if it has two experts (else :data:`VALIDATE_EXPERT`)
    training its low-noise expert alone, so that the high-noise one is the frozen expert."""
    two = len(read_layout(wan_folder(wan, tiny_root)).experts) == 2
    return (
        *overrides,
        f"models.wan={wan if two else VALIDATE_EXPERT}",
        "objective.experts=[low]",
        f"validation.steps={VALIDATE_STEPS}",
    )


def format_step(results: dict[str, dict], base: str | None = "sft", cases: list[str] | None = None) -> str:
    """The table of ``cases`` (default all), time and peak memory as ratios to ``base`` —
    with ``base=None`` to each case's own reference: the case a switch changes (its
    ``against``), a case without one to itself."""
    label = base or "base"
    names = cases or list(results)
    width = max(20, *map(len, names))
    header = (
        f"{'case':>{width}} | {'step s':>8} {'× ' + label:>7} | {'peak MiB':>9} {'× ' + label:>7} | {'data wait':>9}"
    )
    lines = [header, "-" * len(header)]
    for name in names:
        row = results[name]
        ref = results[base or row.get("against", name)]
        wait = f"{row['data_wait']:>8.1%}" if "data_wait" in row else f"{'—':>9}"
        lines.append(
            f"{name:>{width}} | {row['step_s']:>8.4f} {row['step_s'] / ref['step_s']:>7.2f} | "
            f"{row['peak_mib']:>9.1f} {row['peak_mib'] / max(ref['peak_mib'], 1e-9):>7.2f} | {wait}"
        )
    return "\n".join(lines)


def format_tables(results: dict[str, dict]) -> tuple[str, str | None]:
    """The modes as ratios to sft, and the memory switches (if measured) each against the
    case it changes, which stands above them (``sara``; ``sara_online`` for the VAE's tiles
    and slices; ``validate`` for the offloaded frozen expert)."""
    switches = [name for name, row in results.items() if "against" in row]
    references = dict.fromkeys(results[name]["against"] for name in switches)
    trained = [n for n in results if n not in switches and results[n]["ratio_to_sft"] is not None]
    modes = format_step(results, "sft", trained)
    if not switches:
        return modes, None
    grouped = [name for ref in references for name in (ref, *(s for s in switches if results[s]["against"] == ref))]
    return modes, format_step(results, None, grouped)
