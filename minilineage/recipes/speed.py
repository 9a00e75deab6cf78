"""ddpm-mnist in 40 % of its CPU time, and the study that shows what each change bought (chapter 3, section 14).

Today's `ddpm-mnist` trains 5,000 steps of 128 digits. `ddpm-mnist-fast` keeps its network, data,
noise schedule and sampler, and trains 3,600 steps of 64 digits (36 % of the images), arranged so that
a short run learns fast:

  ddpm-speed-cut      ddpm-mnist cut to 2,000 steps (40 % of its compute), nothing else changed: the baseline
  ddpm-speed-minsnr   + Min-SNR-5 loss weights (Hang et al. 2023; `losses.min_snr_eps_loss`)
  ddpm-mnist-fast     + more updates of half the batch (3,600 x 64), a 100-step warm-up, channels-last
                      convolutions (about 10 % faster per image on a CPU, the same maths)

All three sample at GUIDANCE_FAST, and each is also scored at ddpm-mnist's guidance 2
(`eval_two_guidances`): the scale trades accuracy (more typical digits) against FID-LeNet (the variety
of real digits), so a run is only judged fairly at more than one.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from minilineage.metrics import eval_digit_samples
from minilineage.recipes.core import Preset, Recipe, get_recipe, register
from minilineage.train import TrainConfig

TODAY_RECIPE = get_recipe("ddpm-mnist")  # what the study starts from and compares against
TODAY = TODAY_RECIPE.presets["cpu"].train
GUIDANCE_FAST = 1.75  # the fast recipe's sampling scale, from a sweep on its checkpoint (1.5, 1.75, 2: chapter 3, section 14)
GUIDANCE_TODAY = TODAY_RECIPE.model_config["guidance"]  # 2


def eval_two_guidances(model: nn.Module, device: torch.device, n: int = 1000) -> dict:
    """`eval_digit_samples` at the model's own guidance, and under "at_guidance_2" the same at ddpm-mnist's (2)."""
    scores = eval_digit_samples(model, device, n)
    if model.config.guidance != GUIDANCE_TODAY:
        scores["at_guidance_2"] = eval_digit_samples(model, device, n, guidance=GUIDANCE_TODAY)
    return scores


def _variant(name: str, summary: str, objective: str, train: TrainConfig) -> Recipe:
    """ddpm-mnist with another objective and CPU training, sampled at GUIDANCE_FAST."""
    config = {**TODAY_RECIPE.model_config, "objective": objective, "guidance": GUIDANCE_FAST}
    presets = {"cpu": Preset("mnist-5k", train), "gpu": TODAY_RECIPE.presets["gpu"]}
    return register(dataclasses.replace(TODAY_RECIPE, name=name, summary=summary, model_config=config, presets=presets,
                                        evaluate=eval_two_guidances))


_variant("ddpm-speed-cut", "Chapter 3 speed study: ddpm-mnist cut to 2,000 steps (40 % of its compute)", "eps",
         dataclasses.replace(TODAY, steps=2000))
_variant("ddpm-speed-minsnr", "Chapter 3 speed study: + Min-SNR-5 loss weights", "eps-min-snr",
         dataclasses.replace(TODAY, steps=2000))
_variant("ddpm-mnist-fast", "Chapter 3: ddpm-mnist in 40 % of its CPU time (Min-SNR-5, batch 64, channels-last)",
         "eps-min-snr", dataclasses.replace(TODAY, steps=3600, batch_size=64, warmup_steps=100, channels_last=True))
SPEED_STUDY = ("ddpm-speed-cut", "ddpm-speed-minsnr", "ddpm-mnist-fast")
