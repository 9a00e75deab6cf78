"""The race's diffusers contestants: a UNet2DModel the size of ddpm-mnist, trained by diffusers' own parts.

Both train `reference_network` on mnist-5k through diffusers' DDPMScheduler (`add_noise`) and EMAModel, in
the loop of diffusers' example examples/unconditional_image_generation/train_unconditional.py (shuffled
epochs, AdamW, the gradient norm clipped, a learning-rate schedule stepped every batch). They differ in
their settings only:

  DIFFUSERS_RECOMMENDED  that example's defaults and its README's --use_ema: batch 16, lr 1e-4, 500
                         warm-up steps then cosine to 0, EMA warmed up to 0.9999, 1,000 linear betas
  ddpm_mnist_settings()  ddpm-mnist's own: its CPU preset's batch, lr, warm-up and decay (`train.lr_lambda`:
                         cosine to 10 %), AdamW as `fit` builds it, its EMA (EMAModel without warm-up is
                         min(decay, (1 + k) / (10 + k)), `train.EMA`'s rule), its cosine schedule
                         (diffusers' "squaredcos_cap_v2" gives the same alpha_bar) and DDIM timesteps

So the race can tell what our recipe buys (the two diffusers rows) from what our network and code buy
(ddpm-mnist against diffusers with ddpm-mnist's settings). The one change to diffusers' example, for both:
the class label goes to UNet2DModel's `num_class_embeds` table and is dropped at p_uncond (ours, 0.1) to the
extra null row, so that every contestant can be sampled with classifier-free guidance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minilineage.bench.reference import diffusers_sample, reference_unet
from minilineage.data import load_dataset
from minilineage.models.unet import UNetConfig
from minilineage.recipes import get_recipe
from minilineage.train import TrainConfig, lr_lambda

RECIPE = "ddpm-mnist"
REFERENCE_WIDTH = 28  # UNet2DModel at (28, 56): 581,508 parameters to ddpm-mnist's 571,332 (+1.8 %)
# The defaults of diffusers' examples/unconditional_image_generation/train_unconditional.py (and its README's
# --use_ema): AdamW, cosine decay to 0 after 500 warm-up steps, gradient norm clipped at 1, EMA warmed up as
# 1 - (1 + step / inv_gamma)^-power up to 0.9999; DDPMScheduler's 1,000 linear-beta steps, eps-prediction.
DIFFUSERS_RECOMMENDED = {
    "train_batch_size": 16, "learning_rate": 1e-4, "lr_scheduler": "cosine", "lr_warmup_steps": 500,
    "adam_beta1": 0.95, "adam_beta2": 0.999, "adam_weight_decay": 1e-6, "adam_epsilon": 1e-8, "max_grad_norm": 1.0,
    "use_ema": True, "ema_warmup": True, "ema_inv_gamma": 1.0, "ema_power": 0.75, "ema_max_decay": 0.9999,
    "ddpm_num_steps": 1000, "ddpm_beta_schedule": "linear", "prediction_type": "epsilon",
}
OUR_LR_SCHEDULE = "warm-up, then cosine to 10 % (minilineage.train.lr_lambda)"
BETA_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}  # ours -> diffusers' beta_schedule


def ddpm_mnist_settings() -> dict:
    """ddpm-mnist's training (its CPU preset's TrainConfig and its PipelineConfig) in DIFFUSERS_RECOMMENDED's keys."""
    recipe = get_recipe(RECIPE)
    train, config = recipe.presets["cpu"].train, recipe.config()
    if config.objective != "eps" or train.lr_schedule != "cosine":
        raise ValueError(f"the diffusers contestant trains eps with a cosine decay; {RECIPE} now has "
                         f"{config.objective!r} and {train.lr_schedule!r}")
    return {
        "train_batch_size": train.batch_size, "learning_rate": train.lr, "lr_scheduler": OUR_LR_SCHEDULE,
        "lr_warmup_steps": train.warmup_steps,
        "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8,  # torch's AdamW defaults, as `fit` builds it
        "adam_weight_decay": train.weight_decay, "max_grad_norm": train.grad_clip,
        "use_ema": train.ema_decay > 0, "ema_warmup": False, "ema_max_decay": train.ema_decay,
        "ddpm_num_steps": config.T, "ddpm_beta_schedule": BETA_SCHEDULES[config.schedule], "prediction_type": "epsilon",
        "timestep_spacing": "linspace", "clip_sample": config.clip_x0 is not None,  # our DDIM's timesteps and x0 clip
    }


def reference_network() -> nn.Module:
    """The diffusers contestant: UNet2DModel shaped as `reference_unet` makes it for ddpm-mnist, at width 28."""
    denoiser = get_recipe(RECIPE).config().denoiser["config"]
    return reference_unet(UNetConfig(**{**denoiser, "width": REFERENCE_WIDTH}), 28)


def lr_scheduler(settings: dict, optimizer: torch.optim.Optimizer, steps: int):
    """diffusers' `get_scheduler` by name, or ddpm-mnist's own schedule (OUR_LR_SCHEDULE), stepped once per batch."""
    if settings["lr_scheduler"] == OUR_LR_SCHEDULE:
        config = TrainConfig(steps=steps, warmup_steps=settings["lr_warmup_steps"], lr_schedule="cosine")
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    from diffusers.optimization import get_scheduler

    return get_scheduler(settings["lr_scheduler"], optimizer, num_warmup_steps=settings["lr_warmup_steps"],
                         num_training_steps=steps)


class DiffusersTrainer:
    """`reference_network` trained on mnist-5k with `settings` through diffusers' parts, one step at a time."""

    def __init__(self, steps: int, seed: int = 0, settings: dict = DIFFUSERS_RECOMMENDED):
        from diffusers import DDPMScheduler
        from diffusers.training_utils import EMAModel

        torch.manual_seed(seed)
        self.s, self.net = settings, reference_network()
        sampling = {k: settings[k] for k in ("timestep_spacing", "clip_sample") if k in settings}
        self.scheduler = DDPMScheduler(num_train_timesteps=settings["ddpm_num_steps"],
                                       beta_schedule=settings["ddpm_beta_schedule"],
                                       prediction_type=settings["prediction_type"], **sampling)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=settings["learning_rate"],
                                           betas=(settings["adam_beta1"], settings["adam_beta2"]),
                                           weight_decay=settings["adam_weight_decay"], eps=settings["adam_epsilon"])
        self.lr = lr_scheduler(settings, self.optimizer, steps)
        warmup = {"inv_gamma": settings["ema_inv_gamma"], "power": settings["ema_power"]} if settings["ema_warmup"] else {}
        self.ema = EMAModel(self.net.parameters(), decay=settings["ema_max_decay"], use_ema_warmup=settings["ema_warmup"],
                            **warmup) if settings["use_ema"] else None
        data = load_dataset("mnist-5k", "train")
        self.x, self.y = data.float_images(), data.labels  # (N, 1, 28, 28) in [-1, 1], (N,)
        self.generator = torch.Generator().manual_seed(seed)
        self.order, self.at = torch.randperm(len(self.x), generator=self.generator), 0
        self.classes = self.net.unet.config.num_class_embeds - 1  # the last row is the null label

    def batch(self) -> tuple[Tensor, Tensor]:
        """The next batch of a shuffled epoch (a DataLoader with shuffle=True, drop_last=True)."""
        size = self.s["train_batch_size"]
        if self.at + size > len(self.order):
            self.order, self.at = torch.randperm(len(self.x), generator=self.generator), 0
        index = self.order[self.at:self.at + size]
        self.at += size
        return self.x[index], self.y[index]

    def step(self, p_uncond: float) -> float:
        """One step of Ho et al. 2020, Algorithm 1, with labels dropped at p_uncond to the null row."""
        x0, y = self.batch()
        g = self.generator
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(x0),), generator=g)
        y = torch.where(torch.rand(len(y), generator=g) < p_uncond, self.classes, y)  # the null label for guidance
        loss = F.mse_loss(self.net(self.scheduler.add_noise(x0, noise, t), t, y), noise)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), self.s["max_grad_norm"])
        self.optimizer.step()
        self.lr.step()
        if self.ema is not None:
            self.ema.step(self.net.parameters())
        return loss.item()

    def final_network(self) -> nn.Module:
        """The EMA weights (what train_unconditional.py saves with --use_ema), else the trained ones."""
        if self.ema is not None:
            self.ema.copy_to(self.net.parameters())
        return self.net.eval()

    def sample(self, labels: Tensor, generator: torch.Generator, steps: int, guidance: float) -> Tensor:
        """Digits of `labels` in [-1, 1] from the network as it is now (call final_network first for the EMA)."""
        return diffusers_sample(self.net, self.scheduler, labels, (1, 28, 28), generator, steps, guidance,
                                null_label=self.classes).clamp(-1, 1)
