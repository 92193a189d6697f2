"""The pair budget of a saliency: reading saliency files, the table, the chart, an example.

``sara budget FILE`` and the demo both go through here; the statistics themselves are
:func:`sara.routing.pair_budget`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sara.plots import pyplot
from sara.routing import CATEGORIES, MODES, check_saliency

CATEGORY_NAMES = {"fg_fg": "FG–FG", "fg_bg": "FG–BG", "bg_bg": "BG–BG"}


def load_saliency(path: str | Path) -> Tensor:
    """Read a ``[B, N]`` or ``[N]`` saliency from ``.pt`` (a tensor, or a dict holding one
    under ``saliency``) or ``.npz`` / ``.npy``; returns ``[B, N]`` float32.

    Raises:
        ValueError: one line naming the file and what is wrong with it.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        if path.suffix == ".pt":
            data = torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix in (".npz", ".npy"):
            data = np.load(path)
        else:
            raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .pt, .npz or .npy")
    except ValueError:
        raise
    except Exception as exc:  # a damaged file: torch and numpy raise many kinds
        raise ValueError(f"{path}: cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if isinstance(data, (dict, np.lib.npyio.NpzFile)):
        keys = list(data.keys())
        if "saliency" in keys:
            data = data["saliency"]
        elif len(keys) == 1:
            data = data[keys[0]]
        else:
            raise ValueError(f"{path}: holds {keys}; name the saliency array 'saliency'")
    saliency = torch.as_tensor(np.asarray(data) if not isinstance(data, Tensor) else data).float()
    if saliency.dim() == 1:
        saliency = saliency.unsqueeze(0)
    if saliency.dim() != 2 or saliency.numel() == 0:
        raise ValueError(f"{path}: expected a saliency of shape [B, N] or [N], got {tuple(saliency.shape)}")
    try:
        check_saliency(saliency)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return saliency


def format_budget(budget: dict, title: str = "") -> str:
    """The pair budget as a fixed-width text table (percentages)."""
    head = f"{'':<16}" + "".join(f"{CATEGORY_NAMES[c]:>8}" for c in CATEGORIES) + f"{'active':>9}"
    lines = [title] if title else []
    lines.append(f"tokens {budget['tokens']}, FG fraction {100 * budget['fg_fraction']:.1f} %")
    lines.append(head)
    lines.append(f"{'pairs (uniform)':<16}" + "".join(f"{100 * budget['pair_share'][c]:>8.1f}" for c in CATEGORIES))
    for mode in MODES:
        stats = budget["modes"][mode]
        shares = "".join(f"{100 * stats['mass_share'][c]:>8.1f}" for c in CATEGORIES)
        lines.append(f"{'mass ' + mode:<16}{shares}{100 * stats['active_pairs']:>9.1f}")
    lines.append("rows: % of pairs per category; % of each mode's weight mass; 'active': % of pairs with W > 0")
    return "\n".join(lines)


def plot_budget(budgets: dict[str, dict], path: str | Path) -> Path:
    """Stacked bars: each mode's share of weight mass per pair category, one panel per saliency."""
    plt = pyplot()
    colours = {"fg_fg": "#d62728", "fg_bg": "#ff7f0e", "bg_bg": "#7f7f7f"}
    fig, axes = plt.subplots(1, len(budgets), figsize=(4.6 * len(budgets), 3.6), squeeze=False)
    for ax, (name, budget) in zip(axes[0], budgets.items()):
        labels = ["pairs", *MODES]
        shares = [budget["pair_share"], *(budget["modes"][m]["mass_share"] for m in MODES)]
        bottom = np.zeros(len(labels))
        for category in CATEGORIES:
            values = np.array([100 * s[category] for s in shares])
            ax.bar(labels, values, bottom=bottom, color=colours[category], label=CATEGORY_NAMES[category])
            bottom += values
        for x, mode in enumerate(MODES, start=1):
            ax.text(x, 101, f"{100 * budget['modes'][mode]['active_pairs']:.0f}%", ha="center", fontsize=8)
        ax.set_title(f"{name} (FG {100 * budget['fg_fraction']:.0f} %)", fontsize=10)
        ax.set_ylim(0, 110)
        ax.set_ylabel("% of weight mass")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(CATEGORIES), fontsize=8)
    fig.suptitle("pair budget by routing mode (numbers above bars: % of pairs with W > 0)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def example_saliency(grid: tuple[int, int, int], fg_fraction: float, seed: int) -> Tensor:
    """A soft saliency of subjects moving over a token grid, with ``fg_fraction`` above 0.5.

    Three elliptic blobs drift across the frames; the field is thresholded at the quantile
    that leaves ``fg_fraction`` of tokens in front, then passed through a sigmoid so the
    values look like a predicted saliency. Returns ``[1, T·H·W]`` in raster order.
    """
    frames, height, width = grid
    generator = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, frames).view(-1, 1, 1)
    yy = torch.linspace(-1, 1, height).view(1, -1, 1)
    xx = torch.linspace(-1, 1, width).view(1, 1, -1)
    field = torch.zeros(frames, height, width)
    for _ in range(3):
        start = torch.rand(2, generator=generator) * 1.4 - 0.7  # (y, x) at t = 0
        velocity = torch.rand(2, generator=generator) * 1.0 - 0.5
        radius = torch.rand(2, generator=generator) * 0.3 + 0.3
        cy, cx = start[0] + velocity[0] * t, start[1] + velocity[1] * t
        distance = ((yy - cy) / radius[0]) ** 2 + ((xx - cx) / radius[1]) ** 2
        field = torch.maximum(field, torch.exp(-distance))
    flat = field.flatten()
    front = max(1, min(flat.numel() - 1, round(fg_fraction * flat.numel())))
    ranked = flat.sort(descending=True).values
    level = (ranked[front - 1] + ranked[front]) / 2  # exactly `front` tokens lie above it
    return torch.sigmoid((flat - level) / 0.08).unsqueeze(0)  # 0.08: edges a few tokens wide


def saliency_grid_figure(saliency: Tensor, grid: tuple[int, int, int], path: str | Path, title: str) -> Path:
    """The saliency of one sample as one heat map per frame of the token grid."""
    plt = pyplot()
    frames = saliency.reshape(grid).numpy()
    columns = min(frames.shape[0], 8)
    rows = math.ceil(frames.shape[0] / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.6 * rows + 0.4), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index < frames.shape[0]:
            ax.imshow(frames[index], vmin=0, vmax=1, cmap="magma")
            ax.set_title(f"t={index}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
