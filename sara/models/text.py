"""Frozen text models of Stage 1.

- :class:`CaptionEncoder` — caption tokens the aligner cross-attends to: the umT5 encoder
  Wan uses (`UMT5EncoderModel`), or the text tower of Qwen3-VL.
- :class:`CaptionEmbedder` — one normalised vector per caption for InfoNCE: Qwen3-VL-Embedding
  used as its model card and reference script (``scripts/qwen3_vl_embedding.py``) use it.
  Each caption becomes a chat: a system turn holding the instruction (default "Represent
  the user's input."; a full stop is added when it ends without punctuation), a user turn
  holding the caption ("NULL" when empty), rendered by the folder's chat template with the
  generation prompt (``<|im_start|>assistant\n``). Rows are right-padded; the full
  ``Qwen3VLModel`` runs (it places the M-RoPE positions from the attention mask); the
  embedding is the hidden state of each row's *last attended* token, L2-normalised.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer, Qwen3VLConfig, Qwen3VLModel, UMT5Config, UMT5EncoderModel

from sara.config.stage1 import CAPTION_ENCODER_KINDS, EMBEDDER_INSTRUCTION
from sara.models.tokenizer import tiny_tokenizer
from sara.models.weights import WeightsError, seeded, weights_folder

MAX_TOKENS = 512  # umT5 in Wan reads up to 512 caption tokens
EMBEDDER_MAX_TOKENS = 8192  # Qwen3-VL-Embedding's reference script truncates there


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
    with seeded(seed):
        model = build(tokenizer)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)


def save_tiny_umt5(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny umT5 encoder folder (config, seeded weights, a T5-style tokenizer)."""
    return _save_tiny(out_dir, seed, "t5", lambda tok: UMT5EncoderModel(tiny_umt5_config(tok)))


def save_tiny_qwen3vl(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny Qwen3-VL folder (config, seeded weights, a Qwen-style tokenizer)."""
    return _save_tiny(out_dir, seed, "qwen", lambda tok: Qwen3VLModel(tiny_qwen3vl_config(tok)))


def tokenizer_folder(folder: Path) -> Path:
    """Where an encoder folder's tokenizer is: in it, or — a Diffusers pipeline's
    ``text_encoder`` — in the pipeline's ``tokenizer`` beside it."""
    beside = folder.parent / "tokenizer"
    return beside if not (folder / "tokenizer_config.json").is_file() and beside.is_dir() else folder


class CaptionEncoder(torch.nn.Module):
    """Caption → token features ``[B, L, D]`` and their mask ``[B, L]`` (frozen)."""

    def __init__(
        self, folder: str | Path, kind: str = "umt5", dtype: torch.dtype = torch.float32, model: nn.Module | None = None
    ):
        """``model``: the encoder of ``folder`` already in memory (Wan's umT5, when the aligner
        reads Wan's own text encoder), used instead of a second copy."""
        super().__init__()
        folder = weights_folder(folder, kind)
        if kind == "umt5":
            self.model = model or UMT5EncoderModel.from_pretrained(folder, dtype=dtype)
            self.width = self.model.config.d_model
        elif kind == "qwen3vl":
            self.model = model or Qwen3VLModel.from_pretrained(folder, dtype=dtype).language_model  # the text tower
            self.width = self.model.config.hidden_size
        else:
            raise ValueError(f"caption encoder kind {kind!r}; choose one of {', '.join(CAPTION_ENCODER_KINDS)}")
        self.model.eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder(folder))

    @torch.no_grad()
    def forward(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(captions, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt").to(
            device
        )
        hidden = self.model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        return hidden.float(), tokens.attention_mask.bool()  # (B, L, D), (B, L)


def chat_template(folder: Path, tokenizer) -> str:
    """The folder's chat template: the tokenizer's own, else ``chat_template.jinja`` or the
    processor's ``chat_template.json`` beside it."""
    if tokenizer.chat_template:
        return tokenizer.chat_template
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    if (folder / "chat_template.json").is_file():
        return json.loads((folder / "chat_template.json").read_text())["chat_template"]
    raise WeightsError(f"{folder}: no chat template (tokenizer_config.json, chat_template.jinja or .json)")


def with_full_stop(instruction: str) -> str:
    """The instruction as the reference script sends it: stripped, ending in punctuation."""
    instruction = instruction.strip()
    if instruction and not unicodedata.category(instruction[-1]).startswith("P"):
        instruction += "."
    return instruction


class CaptionEmbedder(torch.nn.Module):
    """Qwen3-VL-Embedding: caption → L2-normalised embedding ``[B, E]`` of its chat (frozen)."""

    def __init__(self, folder: str | Path, instruction: str = EMBEDDER_INSTRUCTION, dtype: torch.dtype = torch.float32):
        super().__init__()
        folder = weights_folder(folder, "Qwen3-VL-Embedding")
        self.model = Qwen3VLModel.from_pretrained(folder, dtype=dtype).eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.chat_template = chat_template(folder, self.tokenizer)
        self.instruction = with_full_stop(instruction) or EMBEDDER_INSTRUCTION
        self.width = self.model.config.text_config.hidden_size

    def chats(self, captions: list[str]) -> list[str]:
        """Each caption as the embedder reads it: system instruction, user caption, generation prompt."""
        conversations = [
            [
                {"role": "system", "content": [{"type": "text", "text": self.instruction}]},
                {"role": "user", "content": [{"type": "text", "text": caption or "NULL"}]},
            ]
            for caption in captions
        ]
        return self.tokenizer.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)

    def tokenize(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` ``[B, L]`` of the chats, right-padded."""
        return self.tokenizer(
            self.chats(captions),
            padding=True,
            truncation=True,
            max_length=EMBEDDER_MAX_TOKENS,
            padding_side="right",
            return_tensors="pt",
        )

    @torch.no_grad()
    def forward(self, captions: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        tokens = self.tokenize(captions).to(device)
        hidden = self.model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        return F.normalize(hidden[torch.arange(len(hidden)), last_attended(tokens.attention_mask)].float(), dim=-1)


def last_attended(mask: torch.Tensor) -> torch.Tensor:
    """Position of each row's last attended token ``[B]`` of a ``[B, L]`` attention mask (any padding side)."""
    return mask.shape[1] - 1 - mask.flip(1).int().argmax(1)
