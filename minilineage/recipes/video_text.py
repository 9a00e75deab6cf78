"""Chapter 7's text encoder: `clip-moving-mnist`, a CLIP on (clip, motion caption) pairs, and how to judge it.

Its text half is what the video DiT reads prompts with (frozen, through cross-attention). It is judged
by retrieval on held-out one-digit clips: out of the 80 prompts "a D moves DIR", is the clip's own the
most similar? Reading the digit and reading the direction are scored apart.
"""

from __future__ import annotations

import torch

from minilineage.data import caption_batches, load_dataset
from minilineage.data.video import DIRECTIONS, motion_caption
from minilineage.models.video_clip import VideoCLIP, video_clip_loss
from minilineage.recipes.core import Preset, Recipe, register
from minilineage.train import TrainConfig

EVAL_CLIPS = 200


@torch.no_grad()
def eval_video_clip(model: VideoCLIP, device: torch.device, n: int = EVAL_CLIPS) -> dict:
    """Zero-shot retrieval over the 80 one-digit prompts on n held-out one-digit clips: the share whose most
    similar prompt names their digit, their direction, and both."""
    test = load_dataset("moving-mnist", "test", n=n, digits=1)
    pairs = [(d, k) for d in range(10) for k in range(len(DIRECTIONS))]
    chosen = torch.tensor(pairs)[model.eval().retrieval(test.float_images().to(device), [motion_caption([d], [k], [False]) for d, k in pairs]).cpu()]
    digit = chosen[:, 0] == test.info["digits"][:, 0]
    direction = chosen[:, 1] == test.info["directions"][:, 0]
    return {"digit": round(digit.float().mean().item(), 4), "direction": round(direction.float().mean().item(), 4),
            "both": round((digit & direction).float().mean().item(), 4)}


register(Recipe(
    "clip-moving-mnist", "Chapter 7: a CLIP on moving-mnist (clip, caption) pairs, whose text encoder knows the motion words",
    VideoCLIP, {}, video_clip_loss, {
        "cpu": Preset("moving-mnist", TrainConfig(steps=3000, batch_size=64, lr=1e-3, warmup_steps=100)),
        "gpu": Preset("moving-mnist", TrainConfig(steps=10_000, batch_size=256, lr=1e-3, warmup_steps=500),
                      {"text_width": 128, "video_width": 128}),
    }, eval_video_clip, caption_batches, parts={"autoencoder": "vae3d-moving-mnist"}))
