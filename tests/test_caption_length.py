"""Captions longer than the text length: counted as `WanPipeline` cuts them, and warned of."""

import logging

import torch
from diffusers import WanPipeline

from sara.models.presets import wan_folder
from sara.stage2.encoders import warn_overlong


def test_a_caption_is_counted_as_cut_exactly_when_wan_cuts_it(tmp_path, caplog):
    pipe = WanPipeline.from_pretrained(wan_folder("tiny", tmp_path))
    words = "a red square moves from left to right over a striped background and".split()
    captions = [" ".join(words[:n]) for n in (3, 7, 13)]
    length = len(pipe.tokenizer(captions[1]).input_ids)  # the middle one fits exactly, </s> included

    def states(caption: str, max_length: int) -> torch.Tensor:
        return pipe.encode_prompt(caption, do_classifier_free_guidance=False, max_sequence_length=max_length)[0]

    # cut: what Wan reads at `max_length` is not what it reads with room to spare
    for max_length in (length - 1, length, length + 1):
        cut = [not torch.allclose(states(c, max_length), states(c, 64)[:, :max_length], atol=1e-5) for c in captions]
        assert warn_overlong(pipe.tokenizer, captions, max_length, "text_length") == sum(cut)
        assert cut == [False, max_length < length, True]

    with caplog.at_level(logging.WARNING, logger="sara.stage2.encoders"):
        assert warn_overlong(pipe.tokenizer, captions, length, "models.text_length") == 1
        longest = len(pipe.tokenizer(captions[2]).input_ids)
        assert f"1 of 3 captions are longer than models.text_length {length} umT5 tokens (the longest: {longest})" in (
            caplog.text
        )
        caplog.clear()
        assert warn_overlong(pipe.tokenizer, captions, longest, "text_length") == 0
        assert caplog.text == ""
