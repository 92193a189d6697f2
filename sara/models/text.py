"""Frozen text models of Stage 1.

- :class:`CaptionEncoder` — caption tokens the aligner cross-attends to: the umT5 encoder
  Wan uses (`UMT5EncoderModel`), or the text tower of Qwen3-VL.
- :class:`CaptionEmbedder` — one normalised vector per caption for InfoNCE: Qwen3-VL-Embedding,
  the last token's hidden state (left padding puts it at the end of every row).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, Qwen3VLConfig, Qwen3VLModel, UMT5Config, UMT5EncoderModel

from sara.models import CAPTION_ENCODER_KINDS
from sara.models.tokenizer import tiny_tokenizer
from sara.models.weights import weights_folder

MAX_TOKENS = 512  # umT5 in Wan reads up to 512 caption tokens


def tiny_umt5_config(tokenizer) -> UMT5Config:
    return UMT5Config(
        vocab_size=len(tokenizer),
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )


def tiny_qwen3vl_config(tokenizer) -> Qwen3VLConfig:
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "pad_token_id": tokenizer.pad_token_id,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
    }
    vision = {
        "depth": 1,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "deepstack_visual_indexes": [0],
    }
    return Qwen3VLConfig(text_config=text, vision_config=vision)


def _save_tiny(out_dir: str | Path, seed: int, family: str, build) -> Path:
    """Write ``build(tokenizer)`` with seeded weights and its offline ``family`` tokenizer."""
    tokenizer = tiny_tokenizer(family)
    torch.manual_seed(seed)
    build(tokenizer).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)


def save_tiny_umt5(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny umT5 encoder folder (config, seeded weights, a T5-style tokenizer)."""
    return _save_tiny(out_dir, seed, "t5", lambda tok: UMT5EncoderModel(tiny_umt5_config(tok)))


def save_tiny_qwen3vl(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny Qwen3-VL folder (config, seeded weights, a Qwen-style tokenizer)."""
    return _save_tiny(out_dir, seed, "qwen", lambda tok: Qwen3VLModel(tiny_qwen3vl_config(tok)))


class CaptionEncoder(torch.nn.Module):
    """Caption → token features ``[B, L, D]`` and their mask ``[B, L]`` (frozen)."""

    def __init__(self, folder: str | Path, kind: str = "umt5"):
        super().__init__()
        folder = weights_folder(folder, kind)
        if kind == "umt5":
            self.model = UMT5EncoderModel.from_pretrained(folder)
            self.width = self.model.config.d_model
        elif kind == "qwen3vl":
            self.model = Qwen3VLModel.from_pretrained(folder).language_model  # the text tower alone
            self.width = self.model.config.hidden_size
        else:
            raise ValueError(f"caption encoder kind {kind!r}; choose one of {', '.join(CAPTION_ENCODER_KINDS)}")
        self.model.eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)

    @torch.no_grad()
    def forward(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(captions, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt").to(
            device
        )
        hidden = self.model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        return hidden.float(), tokens.attention_mask.bool()  # (B, L, D), (B, L)


class CaptionEmbedder(torch.nn.Module):
    """Qwen3-VL-Embedding: caption → L2-normalised last-token embedding ``[B, E]`` (frozen)."""

    def __init__(self, folder: str | Path):
        super().__init__()
        folder = weights_folder(folder, "Qwen3-VL-Embedding")
        self.model = Qwen3VLModel.from_pretrained(folder).language_model.eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.width = self.model.config.hidden_size

    @torch.no_grad()
    def forward(self, captions: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(
            captions, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt", padding_side="left"
        ).to(device)
        hidden = self.model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        return F.normalize(hidden[:, -1].float(), dim=-1)  # (B, E): the last token of every row
