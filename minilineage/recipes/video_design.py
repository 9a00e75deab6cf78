"""Chapter 7's design study on the image rung: what the video DiT reads its prompt with.

The shipped model of chapter 7 once drew the asked-for digit in about 30 % of frames, and as badly when asked
for a single frame: it failed as an image model first. So the conditioning is measured where time plays no
part: the same video DiT (S, patch 2, pooled text + cross-attention) trained on single one-digit frames alone
(images as 1-frame videos, the first stage of `videodit-moving-mnist`), 3,000 steps of 64, one change at a time:

  videodit-image-label              a class label (the digit) in place of a prompt: the ceiling for conditioning
  videodit-image-clip-mnist         chapter 4's clip-mnist text encoder, frozen (it reads motion words as <unk>)
  videodit-image-clip-moving-mnist  clip-moving-mnist's text encoder, frozen: a CLIP on this chapter's captions
  videodit-image-own-text           a text encoder of its own, trained with the DiT from scratch (GLIDE's way)

Each evaluation asks for 200 one-digit images (`video_ladder.ladder_pairs`, digits in turn, 50 DDIM steps,
one generator seeded 0) at guidance 3, 5 and 8, and scores the share LeNet reads as the asked-for digit.
"""

from __future__ import annotations

import torch

from minilineage.data import ArrayData
from minilineage.data.video import masked_bucket_batches
from minilineage.diffusion import DiffusionPipeline, diffusion_loss
from minilineage.models.video_clip import VideoCLIPConfig
from minilineage.recipes.core import Preset, Recipe, register
from minilineage.recipes.video import VIDEODIT, one_digit_frames
from minilineage.recipes.video_modes import text_to_video
from minilineage.train import TrainConfig

GUIDANCE = (3.0, 5.0, 8.0)
EVAL_IMAGES = 200


def image_batches(_data: ArrayData, batch_size: int):
    frames = one_digit_frames()
    return masked_bucket_batches([frames], batch_size, temporal_stride=4)


@torch.no_grad()
def eval_image_rung(model: DiffusionPipeline, device: torch.device, n: int = EVAL_IMAGES) -> dict:
    """The share of n images read as the asked-for digit, at each guidance scale of GUIDANCE."""
    # imported here, not at the top: the ladder's command imports every recipe module first
    from minilineage.recipes.video_ladder import digit_figures, ladder_pairs, prompt

    pairs = ladder_pairs(n)
    asked = pairs[:, 0] if model.condition.option == "labels" else [prompt(d, k) for d, k in pairs.tolist()]
    figures = {}
    for g in GUIDANCE:
        images = text_to_video(model.eval(), asked, torch.Generator(device).manual_seed(0), frames=1, steps=50,
                               guidance=g)
        figures[f"g{g:g}"] = round(digit_figures(images.cpu(), pairs[:, 0])["accuracy"], 4)
    return figures


OWN_TEXT = VideoCLIPConfig().text_config()  # clip-moving-mnist's text sizes and words, untrained
STUDY_TRAIN = TrainConfig(steps=3000, batch_size=64, lr=1e-3, warmup_steps=100, ema_decay=0.999, checkpoint_every=500)
_S = VIDEODIT["denoiser"]["config"]
VARIANTS = {
    "label": ({"denoiser": {"cls": "VideoDiT", "config": {**_S, "pooled_context": False, "context_dim": None,
                                                          "num_classes": 10}}}, {}),
    "clip-mnist": ({}, {"clip": "clip-mnist"}),
    "clip-moving-mnist": ({}, {"clip": "clip-moving-mnist"}),
    "own-text": ({"text": OWN_TEXT, "train_text": True}, {}),
}
for _name, (_changes, _parts) in VARIANTS.items():
    register(Recipe(
        f"videodit-image-{_name}", f"Chapter 7's image-rung study: the video DiT on one-digit frames, prompts read by {_name}",
        DiffusionPipeline, {**VIDEODIT, **_changes}, diffusion_loss, {
            "cpu": Preset("moving-mnist", STUDY_TRAIN), "gpu": Preset("moving-mnist", STUDY_TRAIN),
        }, eval_image_rung, image_batches, parts={"autoencoder": "vae3d-moving-mnist", **_parts}))
