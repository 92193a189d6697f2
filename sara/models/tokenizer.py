"""Tokenizers for tiny presets, trained offline with `tokenizers` on a fixed corpus.

Real presets load the tokenizer saved beside their weights. A tiny preset has no such
file and no hub to fetch one from, so it trains a small byte-level BPE here: every string
encodes (bytes are the fallback alphabet), and the words of the shapes world — the text
the tiny models are trained on — end up as whole tokens. The corpus and trainer are
fixed, so the same vocabulary comes out on every machine.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

# the shapes world's words, from above models on purpose: the tiny presets' tokenizers learn them as whole
# tokens; that module imports nothing of sara, so nothing above comes with it
from sara.shapes.vocabulary import COLOURS, MOTIONS, NUMBERS, SHAPES

_WORDS = """
a an the and or of in on at to from with while by its their is are moves move moving crosses passes
left right top bottom centre center over under behind front background foreground scene shot camera
static slowly quickly frame video clip shape shapes object objects noise stripes gradient clutter
person dog cat car ball man woman child table chair tree house street water sky grass red green blue
yellow purple orange cyan white black grey brown pink small large big tiny bright dark one two three
system user assistant represent input
""".split()

FAMILIES = ("clip", "t5", "qwen")
CHAT_TURNS = ("<|im_start|>", "<|im_end|>")  # Qwen's chat-turn markers
# Qwen3-VL's chat template, text parts only: one `<|im_start|>role\n … <|im_end|>\n` turn per
# message, then `<|im_start|>assistant\n` for the generation prompt — the string the real
# template renders for text-only conversations, so tiny and real embedders share one code path.
QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)


def _corpus() -> list[str]:
    words = [*_WORDS, *SHAPES, *COLOURS, *NUMBERS.values(), *" ".join(MOTIONS).split()]
    phrases = [f"the {c} {s}" for c in COLOURS for s in SHAPES]
    phrases += [f"a {c} {s} moves from {m}" for c, s, m in zip(COLOURS, SHAPES * 2, MOTIONS)]
    # Repetition ranks the world's words high enough to be merged into whole tokens.
    return words * 4 + phrases * 2


def _specials(family: str) -> dict[str, str]:
    if family == "clip":
        return {"bos": "<|startoftext|>", "eos": "<|endoftext|>", "pad": "<|endoftext|>", "unk": "<|endoftext|>"}
    if family == "t5":
        return {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"}
    if family == "qwen":
        return {"eos": "<|endoftext|>", "pad": "<|endoftext|>"}
    raise ValueError(f"unknown tokenizer family {family!r}; choose one of {', '.join(FAMILIES)}")


def tiny_tokenizer(family: str, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with `family`'s special tokens (clip, t5 or qwen)."""
    specials = _specials(family)
    turns = list(CHAT_TURNS) if family == "qwen" else []
    ordered = list(dict.fromkeys([*specials.values(), *turns]))  # t5 wants <pad> = 0, </s> = 1
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=ordered,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    if family == "clip":  # CLIP frames every prompt with start and end tokens
        bos, eos = specials["bos"], specials["eos"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}", special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))]
        )
    elif family == "t5":  # T5 ends every sequence with </s>
        eos = specials["eos"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A {eos}", special_tokens=[(eos, tok.token_to_id(eos))]
        )
    # qwen adds no tokens around a text: its chat template frames the turns (below)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, **{f"{k}_token": v for k, v in specials.items()}, model_max_length=512
    )
    if family == "qwen":
        tokenizer.add_special_tokens({"additional_special_tokens": turns})
        tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer
