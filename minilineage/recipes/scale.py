"""Recipes for users who outgrow the laptop: the course's pixel-space DDPM at CIFAR-10 scale.

  ddpm-cifar10   class-conditional DDPM on 32 x 32 colour images with the U-Net of Ho et al. 2020
                 (their CIFAR-10 model: width 128, levels 32-16-8-4, two residual blocks per level,
                 self-attention at 16 x 16, dropout 0.1; 35.7 M parameters there), plus the labels and
                 classifier-free guidance of chapter 3. Scored by standard FID on 10,000 samples
                 against the 50,000 training images when the Inception weights are present.

Its CPU preset is a smoke run (a small U-Net, 200 steps); the GPU preset is the real one. CIFAR-10
itself must be on disk (`minilineage.data`, the error says where to put it).
"""

from __future__ import annotations

from minilineage.diffusion import DiffusionPipeline, diffusion_loss
from minilineage.metrics import eval_cifar_samples
from minilineage.recipes.core import Preset, Recipe, register
from minilineage.train import TrainConfig

HO_CIFAR_UNET = {"in_channels": 3, "width": 128, "channel_mults": (1, 2, 2, 2), "blocks_per_level": 2,
                 "attention_levels": (1,), "heads": 4, "num_classes": 10, "dropout": 0.1}
DDPM_CIFAR10 = {"denoiser": {"cls": "UNet", "config": HO_CIFAR_UNET}, "shape": (3, 32, 32), "schedule": "cosine",
                "T": 1000, "p_uncond": 0.1, "guidance": 1.5, "sample_steps": 100}

register(Recipe(
    "ddpm-cifar10", "Scale: class-conditional DDPM on CIFAR-10 pixels, Ho et al.'s U-Net (a GPU recipe)",
    DiffusionPipeline, DDPM_CIFAR10, diffusion_loss,
    {
        "cpu": Preset("cifar10", TrainConfig(steps=200, batch_size=32, lr=1e-3, warmup_steps=20),
                      {"denoiser": {"config": {"width": 32, "blocks_per_level": 1}}}),
        # Ho et al. train 800k steps at batch 128 and lr 2e-4; 100k steps at batch 256 reach most of the
        # quality. bf16 autocast and fused AdamW are on by default on CUDA; the data sits on the GPU.
        "gpu": Preset("cifar10", TrainConfig(steps=100_000, batch_size=256, lr=2e-4, warmup_steps=5000,
                                             ema_decay=0.9999, grad_clip=1.0, checkpoint_every=5000)),
    },
    eval_cifar_samples))
