"""The ``shapes`` preset's text encoder: the tiny umT5 pretrained on the shapes world's captions.

A randomly initialised umT5 reads a caption nearly as a bag of words: its token states
barely depend on which colour word stands next to which shape word. The DiT's cross-attention
sees those states as a set (no text positions), so "a red square and a blue circle" and "a
blue square and a red circle" reach it almost alike, and no amount of DiT training can
learn binding or per-entity motion from them. Wan's umT5-XXL learnt language on a web
corpus; the tiny one learns this world's language the same way, self-supervised: masked
token prediction (BERT's objective on the encoder, a linear head dropped afterwards) on
captions of the world's own grammar (:mod:`sara.shapes.caption`). Each caption names an
entity's colour and motion several times, so filling a masked one in means reading the
same entity's other mention: the token states learn to carry their entity's words.

:func:`binding_gap` measures it: how far a caption's token states move when two entities
swap colours (or motions), as a share of how far they move when one colour (or motion)
changes outright. About 0.05 for the random encoder; the pretrained one's figures go into
``text_encoder/gate.json``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase, UMT5EncoderModel

from sara.data.manifest import MTSSCaption
from sara.shapes.caption import SCENES, caption
from sara.shapes.vocabulary import COLOURS, MOTIONS, SHAPES

Named = list[tuple[str, str, str]]  # (colour, kind, motion) per entity, back to front


@dataclass(frozen=True)
class TextRecipe:
    captions: int = 4000  # distinct training captions drawn from the grammar
    steps: int = 600
    batch: int = 32
    lr: float = 3e-3  # AdamW after a linear warm-up, constant
    warmup: int = 50
    mask_rate: float = 0.2  # share of a caption's tokens masked (never its end token)
    probes: int = 64  # held-out captions of the binding gap


@dataclass(frozen=True)
class Scene:
    """One caption's content, so that a variant can swap what two entities are."""

    named: Named
    overlaps: list[tuple[int, int]]
    scene: str
    unnamed: int

    def text(self, named: Named | None = None) -> str:
        entities = [(f"{c} {k}", m) for c, k, m in (named or self.named)]
        return MTSSCaption(**caption(entities, self.overlaps, self.scene, self.unnamed)).flatten()


def draw_scenes(count: int, seed: int, least: int = 1) -> list[Scene]:
    """``count`` captions' contents: ``least``–3 entities of distinct kinds and colours (every
    pair), straight motions, any background, 0–2 unnamed shapes, each pair of entities
    overlapping with probability 0.3."""
    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(count):
        n = int(rng.integers(least, 4))
        kinds = rng.choice(SHAPES, n, replace=False)
        colours = rng.choice(list(COLOURS), n, replace=False)
        motions = rng.choice(list(MOTIONS), n)
        named = [(str(c), str(k), str(m)) for c, k, m in zip(colours, kinds, motions)]
        overlaps = [(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < 0.3]
        scene = SCENES[str(rng.choice(list(SCENES)))]
        scenes.append(Scene(named, overlaps, scene, int(rng.choice([0, 0, 1, 2]))))
    return scenes


def _states(encoder: UMT5EncoderModel, tokenizer: PreTrainedTokenizerBase, text: str) -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt")
    return encoder(**ids).last_hidden_state[0]  # (L, D)


def _set_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Symmetric Chamfer distance of two sets of token states: the DiT's cross-attention
    reads the states without their order."""
    d = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")  # exact: equal sets give 0
    return float(d.min(dim=1).values.mean() + d.min(dim=0).values.mean()) / 2


@torch.no_grad()
def binding_gap(encoder: UMT5EncoderModel, tokenizer: PreTrainedTokenizerBase, scenes: list[Scene]) -> dict:
    """Per word class: the mean set distance between a caption and the caption with its first
    two entities' words swapped, over the distance to the caption with the first entity's word
    replaced by an unused one. 0: a bag of words; about 1: the states bind words to entities."""
    encoder.eval()
    swaps = {"colour": [0.0, 0.0], "motion": [0.0, 0.0]}
    for scene in scenes:
        (c0, k0, m0), (c1, k1, m1), *rest = scene.named
        other_colour = next(c for c in COLOURS if c not in {c for c, _, _ in scene.named})
        other_motion = next(m for m in MOTIONS if m not in {m0, m1})
        variants = {
            "colour": ([(c1, k0, m0), (c0, k1, m1)], [(other_colour, k0, m0), (c1, k1, m1)]),
            "motion": ([(c0, k0, m1), (c1, k1, m0)], [(c0, k0, other_motion), (c1, k1, m1)]),
        }
        base = _states(encoder, tokenizer, scene.text())
        for word, (swapped, changed) in variants.items():
            swaps[word][0] += _set_distance(base, _states(encoder, tokenizer, scene.text(swapped + rest)))
            swaps[word][1] += _set_distance(base, _states(encoder, tokenizer, scene.text(changed + rest)))
    return {f"{word} swap / change": round(swap / change, 3) for word, (swap, change) in swaps.items()}


def pretrain_text_encoder(
    encoder: UMT5EncoderModel,
    tokenizer: PreTrainedTokenizerBase,
    recipe: TextRecipe,
    seed: int,
    progress: bool = True,
) -> list[float]:
    """Masked token prediction on the world's captions, ``encoder`` trained in place; returns the
    loss per step."""
    texts = [scene.text() for scene in draw_scenes(recipe.captions, seed)]
    # the byte-level tokenizer never emits <unk> (bytes are its fallback): it marks the masked tokens
    mask_id = tokenizer.unk_token_id
    head = torch.nn.Linear(encoder.config.d_model, len(tokenizer))
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], recipe.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / recipe.warmup))
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    encoder.train()
    bar = tqdm(range(recipe.steps), desc="shapes umT5, masked tokens", disable=not progress)
    for _ in bar:
        rows = torch.randint(len(texts), (recipe.batch,), generator=generator).tolist()
        batch = tokenizer([texts[r] for r in rows], return_tensors="pt", padding=True)
        ids = batch.input_ids  # (B, L)
        words = batch.attention_mask.bool() & (ids != tokenizer.eos_token_id)
        masked = words & (torch.rand(ids.shape, generator=generator) < recipe.mask_rate)
        states = encoder(input_ids=ids.masked_fill(masked, mask_id), attention_mask=batch.attention_mask)
        loss = F.cross_entropy(head(states.last_hidden_state[masked]), ids[masked])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    encoder.eval()
    return losses


def pretrained_text_encoder(
    encoder: UMT5EncoderModel, tokenizer: PreTrainedTokenizerBase, seed: int, recipe: TextRecipe | None = None
) -> dict:
    """Pretrain ``encoder`` in place; returns the report of ``text_encoder/gate.json``: the recipe,
    time, final loss and the binding gap on held-out captions before and after."""
    recipe = recipe or TextRecipe()
    probes = draw_scenes(recipe.probes, seed + 1, least=2)  # another seed: captions the training did not draw
    before = binding_gap(encoder, tokenizer, probes)
    start = time.perf_counter()
    losses = pretrain_text_encoder(encoder, tokenizer, recipe, seed)
    return {
        "recipe": asdict(recipe),
        "seconds": round(time.perf_counter() - start, 1),
        "final_loss": float(np.mean(losses[-20:])),
        "binding gap": {"random": before, "pretrained": binding_gap(encoder, tokenizer, probes)},
    }
