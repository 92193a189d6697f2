"""The demo's objective sections: the pair budget of a generated saliency, and the blockwise
TRD against its dense reference."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from sara.budget import example_saliency, format_budget, plot_budget, saliency_grid_figure
from sara.config import DemoConfig
from sara.demo.html import Section, image, paragraph, preformatted, table, text_table
from sara.losses import trd_loss, trd_loss_dense
from sara.losses.trd import auto_chunk, visited_panels
from sara.routing import MODES, pair_budget

log = logging.getLogger(__name__)


def budget_part(config: DemoConfig, out: Path) -> tuple[Section, dict[str, torch.Tensor]]:
    """Pair budget of a generated saliency (soft, as an aligner predicts it, and its hard mask)."""
    grid = tuple(config.budget.grid)
    soft = example_saliency(grid, config.budget.fg_fraction, config.seed)
    saliencies = {"soft saliency": soft, "hard mask": (soft > config.budget.threshold).float()}
    torch.save(soft, out / "example_saliency.pt")
    budgets = {name: pair_budget(s, config.budget.threshold) for name, s in saliencies.items()}
    text = "\n\n".join(format_budget(b, title=name) for name, b in budgets.items())
    log.info(text)
    (out / "budget.txt").write_text(text + "\n")
    (out / "budget.json").write_text(json.dumps(budgets, indent=2))
    chart = plot_budget(budgets, out / "budget.png")
    frames = saliency_grid_figure(soft[0], grid, out / "example_saliency.png", f"example saliency on the {grid} grid")
    body = "".join(
        [
            paragraph(
                "A saliency of three moving subjects on the V-JEPA 2 token grid "
                f"{grid}, {100 * config.budget.fg_fraction:.0f} % of tokens above {config.budget.threshold}. "
                "Uniform TRD spends most of its pairs on background; OR routing keeps every pair that "
                "touches a subject and drops background–background pairs. "
                f"Same table as `sara budget {out / 'example_saliency.pt'}`."
            ),
            image(frames, "example saliency"),
            preformatted(text),
            image(chart, "pair budget"),
        ]
    )
    return Section("Pair budget", body), saliencies


def objective_part(config: DemoConfig, saliencies: dict[str, torch.Tensor]) -> Section:
    """Dense and blockwise TRD on random features: same loss and gradient, fewer pairs computed."""
    generator = torch.Generator().manual_seed(config.seed)
    tokens = next(iter(saliencies.values())).shape[1]
    target = torch.randn(1, tokens, config.budget.feature_dim, generator=generator)
    pred = (0.5 * target + torch.randn(target.shape, generator=generator)).requires_grad_()
    chunk = config.trd.chunk_size or auto_chunk(tokens)
    rows = []
    for name, saliency in saliencies.items():
        for mode in MODES:
            dense = trd_loss_dense(pred, target, saliency, mode, config.trd.margin)
            blockwise = trd_loss(pred, target, saliency, mode, config.trd.margin, chunk)
            dense_grad, block_grad = (torch.autograd.grad(loss, pred)[0] for loss in (dense, blockwise))
            relative = ((block_grad - dense_grad).norm() / dense_grad.norm()).item()
            # a panel stands for its pairs and their mirror images, its diagonal block only once
            computed = sum(
                2 * (r1 - r0) * (c1 - c0) - (r1 - r0) ** 2 * (c0 == r0)
                for r0, r1, c0, c1 in visited_panels(saliency, mode, chunk)
            )
            rows.append(
                [
                    name,
                    mode,
                    f"{dense.item():.6f}",
                    f"{blockwise.item():.6f}",
                    f"{relative:.1e}",
                    f"{100 * computed / tokens**2:.0f} %",
                ]
            )
    header = ["saliency", "mode", "dense loss", "blockwise loss", "grad rel. diff", "pairs computed"]
    log.info(text_table(header, rows))
    body = paragraph(
        f"TRD (margin {config.trd.margin}) on random features of width {config.budget.feature_dim} "
        f"over the {tokens} tokens above: the exact blockwise path (row block {chunk}) against the dense "
        "reference. 'pairs computed' is the share of pairs the blockwise path evaluates: with exact "
        "zeros in the saliency it sorts tokens and skips blocks whose weights are all zero. Timings: "
        "`sara bench trd`."
    ) + table(header, rows)
    return Section("Objective: routed TRD, dense vs blockwise", body)
