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

Below the image rung is the VAE rung: no model on a VAE's latents draws a clip better than the VAE decodes a
real one. The shipped `vae3d-moving-mnist` keeps one digit reading in only 77 % of real one-digit clips, so
its variants are measured on that rung alone (`eval_vae_rung`: the ladder's 100 real clips through the VAE):

  vae3d-moving-mnist-wide   width 32 instead of 16: 4 x the weights, the same latents (5 x 4 x 8 x 8)
  vae3d-moving-mnist-t2     2 x compression in time instead of 4: 9 latent frames (9 x 4 x 8 x 8)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from minilineage.data import ArrayData
from minilineage.data.video import masked_bucket_batches
from minilineage.diffusion import DiffusionPipeline, diffusion_loss
from minilineage.models.vae3d import VAE3d, vae3d_loss
from minilineage.models.video_clip import VideoCLIPConfig
from minilineage.recipes.core import Preset, Recipe, get_recipe, register
from minilineage.recipes.recaption import caption_study_batches
from minilineage.recipes.video import VIDEODIT, one_digit_frames, reconstruction_figures
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


@torch.no_grad()
def vae_rung(reconstruct: Callable[[torch.Tensor], torch.Tensor]) -> dict:
    """The ladder's VAE rung for any autoencoder: its reconstructions of the ladder's 100 real one-digit test clips,
    `reconstruct` (N, F, 1, H, W) -> the same, scored by `digit_figures` and `motion_figures` as the ladder does,
    with `reconstruction_figures`."""
    from minilineage.recipes.video_ladder import digit_figures, motion_figures, real_clips

    real, digits, directions = real_clips(100)
    decoded = reconstruct(real).clamp(-1, 1).cpu()
    figures = reconstruction_figures(real, decoded) | digit_figures(decoded, digits) | motion_figures(decoded, directions)
    return {k: round(v, 4) for k, v in figures.items()}


def eval_vae_rung(model: VAE3d, device: torch.device) -> dict:
    """`vae_rung` for a video VAE, decoding each clip from its mean latents."""
    return vae_rung(lambda clips: model.eval()(clips.to(device)))


_VAE = get_recipe("vae3d-moving-mnist")
VAE_VARIANTS = {  # name: (what changes, the change)
    "wide": ("width 32: the same latents, 4 x the weights", {"width": 32}),
    "t2": ("2 x in time instead of 4: 9 latent frames, 1.8 x the numbers", {"temporal_downsample": 2}),
}
for _name, (_what, _change) in VAE_VARIANTS.items():
    register(Recipe(
        f"vae3d-moving-mnist-{_name}", f"Chapter 7's VAE-rung study: vae3d-moving-mnist at {_what}",
        VAE3d, {**_VAE.model_config, **_change}, vae3d_loss, {"cpu": _VAE.presets["cpu"], "gpu": _VAE.presets["cpu"]},
        eval_vae_rung, _VAE.batches))


# The VAE rung's best variant on the video rung, at equal budget: the re-captioning study's true-caption run
# (`videodit-captions-true`: the shipped network, 2,000 steps x 32 clips of one bucket, judged by
# `recaption.eval_caption_study`) once more, its autoencoder `vae3d-moving-mnist-t2`: 9 latent frames, 144 tokens.
_TRUE = get_recipe("videodit-captions-true")
register(Recipe(
    "videodit-clips-t2", "Chapter 7's VAE-rung study on the video rung: videodit-captions-true on vae3d-moving-mnist-t2's latents",
    DiffusionPipeline, _TRUE.model_config, diffusion_loss, _TRUE.presets, _TRUE.evaluate,
    caption_study_batches("true", temporal_stride=2), parts={**_TRUE.parts, "autoencoder": "vae3d-moving-mnist-t2"}))
