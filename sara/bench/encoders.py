"""``sara bench encoders``: the frozen models Stage 2's precompute holds, before and after the
aligner reads the teacher's V-JEPA 2 and Wan's umT5 instead of copies of its own.

1. **Tiny presets**, each arrangement in a fresh process: the encoders built and one batch of
   4 clips encoded, with an aligner trained (one step) on the tiny V-JEPA 2 and on the tiny
   Wan's own umT5 (``<wan>/text_encoder``). ``copies``: Stage 2's encoders beside the aligner's
   ``SaliencyModel`` loaded on its own — what precompute held before; ``shared``: the
   encoders as precompute builds them now. Resident parameters (each tensor once) and the
   peak resident memory above the start.
2. **The real models**, counted on the meta device from their configs (``sara/models/released``):
   V-JEPA 2 ViT-L and Wan2.2's umT5-XXL encoder; before, two of each in fp32 (transformers'
   default dtype); now one of each in the compute dtype (bf16 on GPUs).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from pathlib import Path

import torch
from transformers import UMT5Config, UMT5EncoderModel, VJEPA2Config, VJEPA2Model

from sara.bench.memory import PeakMemory
from sara.config import load_config
from sara.config.stage1 import Stage1Config
from sara.config.stage2 import Stage2Config
from sara.models.presets import RELEASED_ROOT, wan_folder
from sara.shapes.render import SynthSpec, synthesize
from sara.stage1.train import train as train_aligner

MIB, GIB = 2**20, 2**30


def _parameter_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters, each once (``parameters()`` skips a shared one)."""
    return sum(p.nbytes for p in module.parameters())


def _measure(overrides: list[str], arrangement: str) -> dict:
    """Resident parameter MiB and peak extra MiB of one arrangement (in its own process)."""
    from sara.data.datasets import Stage2Dataset, collate
    from sara.data.manifest import load_manifest
    from sara.stage1.saliency import SaliencyModel
    from sara.stage2.build import resolve_setup
    from sara.stage2.encoders import Stage2Encoders

    config = load_config(Stage2Config, None, overrides)
    setup = resolve_setup(config)
    manifest = load_manifest(config.data.train)
    clips = collate([Stage2Dataset(manifest, setup.buckets, config.data, union_masks=True)[i] for i in range(4)])
    aligner = config.models.aligner
    if arrangement == "copies":  # the aligner loaded on its own, with its own encoders, as before
        config.models.aligner = None
    peak = PeakMemory("cpu")
    peak.start()
    encoders = Stage2Encoders(config, setup.view)
    if arrangement == "copies":
        encoders.saliency = SaliencyModel.from_run(aligner)
    encoders(clips["frames"], clips["caption"], list(clips["masks"]))
    return {"parameters_mib": _parameter_bytes(encoders) / MIB, "peak_mib": peak.extra_bytes() / MIB}


def _tiny_overrides(root: Path) -> list[str]:
    """A tiny world, presets and an aligner reading the tiny Wan's umT5; Stage 2's overrides."""
    world = root / "world"
    if not (world / "train.jsonl").is_file():
        synthesize(SynthSpec(num=4, seed=0, frames=9, size=64, heldout_fraction=0.0), world, workers=1, progress=False)
    models, aligner = root / "models", root / "aligner"
    wan = wan_folder("tiny", models)
    if not (aligner / "checkpoints").is_dir():
        stage1 = [
            f"out_dir={aligner}", f"data.train={world / 'train.jsonl'}", f"data.heldout={world / 'train.jsonl'}",
            "data.frames=8", "data.size=64", f"models.tiny_root={models}", f"models.caption_encoder={wan / 'text_encoder'}",
            "optim.steps=1", "optim.batch_size=4", "optim.warmup_steps=1",
        ]  # fmt: skip
        train_aligner(load_config(Stage1Config, None, stage1), progress=False)
    return [
        f"data.train={world / 'train.jsonl'}", "data.frames=9", "data.size=64", f"models.tiny_root={models}",
        f"models.aligner={aligner}", "models.text_length=32", "objective.align.saliency=masks",
    ]  # fmt: skip


def _real() -> dict:
    """Parameters of V-JEPA 2 ViT-L and Wan2.2's umT5-XXL encoder, built on the meta device."""
    with torch.device("meta"):
        vjepa = VJEPA2Model(VJEPA2Config.from_pretrained(RELEASED_ROOT / "vjepa2-vitl-256"))
        umt5 = UMT5EncoderModel(UMT5Config.from_pretrained(RELEASED_ROOT / "wan2.2-t2v-a14b" / "text_encoder"))
    v, u = (sum(p.numel() for p in m.parameters()) for m in (vjepa, umt5))
    return {"vjepa2_params": v, "umt5_params": u, "before_gib": 4 * 2 * (v + u) / GIB, "after_gib": 2 * (v + u) / GIB}


def bench_encoders(root: Path) -> dict:
    overrides = _tiny_overrides(root)
    context = multiprocessing.get_context("spawn")
    tiny = {}
    for arrangement in ("copies", "shared"):
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            tiny[arrangement] = pool.submit(_measure, overrides, arrangement).result()
    return {"tiny": tiny, "real": _real()}


def format_encoders(figures: dict) -> str:
    copies, shared = figures["tiny"]["copies"], figures["tiny"]["shared"]
    real = figures["real"]
    lines = [
        "tiny presets, precompute's encoders with an aligner on the teacher's V-JEPA 2 and Wan's umT5:",
        f"{'arrangement':>11} | {'parameters MiB':>14} | {'peak MiB':>8}",
        "-" * 40,
    ]
    for name, row in (("copies", copies), ("shared", shared)):
        lines.append(f"{name:>11} | {row['parameters_mib']:>14.2f} | {row['peak_mib']:>8.1f}")
    lines += [
        "",
        f"real models: V-JEPA 2 ViT-L {real['vjepa2_params'] / 1e9:.2f} B parameters, umT5-XXL encoder "
        f"{real['umt5_params'] / 1e9:.2f} B: two of each in fp32 {real['before_gib']:.1f} GiB, "
        f"one of each in bf16 {real['after_gib']:.1f} GiB ({real['before_gib'] / real['after_gib']:.0f}× less)",
    ]
    return "\n".join(lines)
