"""SAM 3 video segmentation (`transformers.Sam3VideoModel`): text prompt → masks on every frame.

The model detects every instance of a prompt's concept on each frame and tracks it across
the video; an entity's mask is the union of its instances. Preprocessing is done here in
torch rather than by `Sam3VideoProcessor`, whose image and video processors need
torchvision: frames are resized to the model's square input, rescaled and normalised with
the mean and std of the folder's ``preprocessor_config.json``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, Sam3VideoConfig, Sam3VideoModel
from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

from sara.models.tokenizer import tiny_tokenizer
from sara.models.weights import read_normalisation, seeded, weights_folder, write_normalisation

PROMPT_TOKENS = 32  # SAM 3 pads every text prompt to this many tokens
MEAN, STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]  # SAM 3's defaults


def tiny_config(tokenizer_vocab: int, bos: int, eos: int) -> Sam3VideoConfig:
    """A SAM 3 of a few million parameters at 112×112 that runs every stage on CPU.

    Widths keep the tracker's fixed 64-channel memory below its hidden size, as in the
    full model. Detection thresholds are zero so that random weights still create and
    track objects — the tiny preset exists to exercise the pipeline, not to segment.
    """
    vit = {
        "model_type": "sam3_vit_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 112,
        "patch_size": 14,
        "window_size": 4,
        "global_attn_indexes": [1],
        "pretrain_image_size": 56,
    }
    vision = {"backbone_config": vit, "fpn_hidden_size": 128, "backbone_feature_sizes": [[32, 32], [16, 16], [8, 8]]}
    block = {"hidden_size": 128, "num_layers": 1, "num_attention_heads": 2, "intermediate_size": 128}
    detector = {
        "vision_config": vision,
        "text_config": {
            "hidden_size": 128,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "projection_dim": 128,
            "vocab_size": tokenizer_vocab,
            "max_position_embeddings": PROMPT_TOKENS,
            "bos_token_id": bos,
            "eos_token_id": eos,
        },
        "geometry_encoder_config": block,
        "detr_encoder_config": block,
        "detr_decoder_config": {**block, "num_queries": 4},
        "mask_decoder_config": {"hidden_size": 128, "num_attention_heads": 2},
    }
    tracker = {
        "vision_config": vision,
        "prompt_encoder_config": {"hidden_size": 128, "image_size": 112, "patch_size": 14},
        "mask_decoder_config": {
            "hidden_size": 128,
            "mlp_dim": 128,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": 128,
        },
        "memory_attention_hidden_size": 128,
        "memory_attention_num_layers": 1,
        "memory_attention_feed_forward_hidden_size": 128,
        "memory_attention_rope_feat_sizes": [8, 8],
        "memory_encoder_hidden_size": 128,
        "mask_downsampler_embed_dim": 128,
        "memory_fuser_embed_dim": 128,
        "memory_fuser_intermediate_dim": 128,
    }
    config = Sam3VideoConfig(
        detector_config=detector,
        tracker_config=tracker,
        low_res_mask_size=32,
        score_threshold_detection=0.0,
        new_det_thresh=0.0,
        hotstart_delay=0,
    )
    config.image_size = 112  # propagates to the tracker's prompt encoder
    return config


def save_tiny(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny SAM 3 folder (config, seeded weights, tokenizer, preprocessor config)."""
    out_dir = Path(out_dir)
    tokenizer = tiny_tokenizer("clip")
    with seeded(seed):
        model = Sam3VideoModel(tiny_config(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_normalisation(out_dir, MEAN, STD)
    return out_dir


class Sam3Segmenter:
    """A SAM 3 video model and its tokenizer, loaded from a local folder."""

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        folder = weights_folder(folder, "SAM 3")
        self.model = Sam3VideoModel.from_pretrained(folder, dtype=dtype).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        mean, std = read_normalisation(folder, MEAN, STD)
        self.mean, self.std = mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1)
        self.device, self.dtype = torch.device(device), dtype

    def _pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """``uint8 [T, 3, H, W]`` → the model's normalised ``[T, 3, S, S]`` input."""
        size = self.model.config.image_size
        x = F.interpolate(frames.float(), size=(size, size), mode="bilinear", align_corners=False) / 255.0
        return ((x - self.mean) / self.std).to(self.dtype)

    @torch.no_grad()
    def segment(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Masks of each prompt on every frame: ``uint8 [T, 3, H, W]`` → ``bool [P, T, H, W]``."""
        num_frames, _, height, width = frames.shape
        unique = list(dict.fromkeys(prompts))  # the session keeps one track set per distinct text
        session = Sam3VideoInferenceSession(
            video=self._pixels(frames),
            video_height=height,
            video_width=width,
            inference_device=self.device,
            inference_state_device=self.device,
            video_storage_device="cpu",
            dtype=self.dtype,
        )
        slot = {}  # prompt id in the session → row of the result
        for row, text in enumerate(unique):
            prompt_id = session.add_prompt(text)
            slot[prompt_id] = row
            tokens = self.tokenizer(text, return_tensors="pt", padding="max_length", max_length=PROMPT_TOKENS)
            session.prompt_input_ids[prompt_id] = tokens.input_ids[:, :PROMPT_TOKENS].to(self.device)
            session.prompt_attention_masks[prompt_id] = tokens.attention_mask[:, :PROMPT_TOKENS].to(self.device)
        masks = torch.zeros(len(unique), num_frames, height, width, dtype=torch.bool)
        for out in self.model.propagate_in_video_iterator(session):
            hidden = set(out.suppressed_obj_ids or ()) | set(session.hotstart_removed_obj_ids)
            for obj_id, low_res in out.obj_id_to_mask.items():  # low_res: (1, h, w) logits
                if obj_id in hidden:
                    continue
                full = F.interpolate(low_res[None].float(), size=(height, width), mode="bilinear", align_corners=False)
                masks[slot[session.obj_id_to_prompt_id[obj_id]], out.frame_idx] |= full[0, 0].cpu() > 0
        return masks[[unique.index(p) for p in prompts]]
