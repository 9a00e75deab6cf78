"""The course's recipes, chapter by chapter. `minilineage recipes` lists them with their presets.

Every CPU preset trains on `mnist-5k` in minutes on a laptop; every GPU preset on the full dataset.
"""

from __future__ import annotations

from minilineage.data import caption_batches
from minilineage.diffusion import DiffusionPipeline, diffusion_loss
from minilineage.metrics import (
    eval_classifier,
    eval_clip,
    eval_digit_samples,
    eval_latent_vae,
    eval_reconstruction,
    eval_vae,
)
from minilineage.models import VAE, Autoencoder, LatentVAE, LeNet, MiniCLIP
from minilineage.models.autoencoder import ae_loss, denoising_ae_loss, vae_loss
from minilineage.models.classifier import classifier_loss
from minilineage.models.clip import clip_recipe_loss
from minilineage.models.latent import latent_vae_loss
from minilineage.recipes.core import Preset, Recipe, register
from minilineage.train import TrainConfig


def _ae_presets(steps_cpu: int) -> dict[str, Preset]:
    return {
        "cpu": Preset("mnist-5k", TrainConfig(steps=steps_cpu, batch_size=128, lr=3e-3, ema_decay=0.0)),
        "gpu": Preset("mnist", TrainConfig(steps=10_000, batch_size=512, lr=2e-3, ema_decay=0.0)),
    }


def _diffusion_presets(steps_cpu: int, gpu_model: dict) -> dict[str, Preset]:
    """EMA, warm-up and a cosine-decayed learning rate, as every diffusion recipe here trains."""
    return {
        "cpu": Preset("mnist-5k", TrainConfig(steps=steps_cpu, batch_size=128, lr=2e-3, warmup_steps=200,
                                              ema_decay=0.999, checkpoint_every=500)),
        "gpu": Preset("mnist", TrainConfig(steps=40_000, batch_size=256, lr=1e-3, warmup_steps=1000,
                                           ema_decay=0.9999, checkpoint_every=2000), gpu_model),
    }


# Chapter 1: autoencoders.
register(Recipe("ae-mnist", "Chapter 1: autoencoder with a 2-D code (for the latent explorer)",
                Autoencoder, {"latent_dim": 2}, ae_loss, _ae_presets(2000), eval_reconstruction))
for _z in (4, 8, 16, 32):
    register(Recipe(f"ae-mnist-z{_z}", f"Chapter 1: autoencoder with a {_z}-number code (code-size study)",
                    Autoencoder, {"latent_dim": _z}, ae_loss, _ae_presets(2000), eval_reconstruction))
register(Recipe("dae-mnist", "Chapter 1: denoising autoencoder (inputs corrupted by Gaussian noise)",
                Autoencoder, {"latent_dim": 16}, denoising_ae_loss, _ae_presets(2000), eval_reconstruction))

# Chapter 2: VAEs.
register(Recipe("vae-mnist", "Chapter 2: VAE, 16-D code, beta = 1",
                VAE, {"latent_dim": 16, "beta": 1.0}, vae_loss, _ae_presets(3000), eval_vae))
for _beta in (0.2, 5.0):
    register(Recipe(f"vae-mnist-beta{_beta:g}", f"Chapter 2: VAE with beta = {_beta:g} (the beta slider)",
                    VAE, {"latent_dim": 16, "beta": _beta}, vae_loss, _ae_presets(3000), eval_vae))
register(Recipe("vae-mnist-z2", "Chapter 2: VAE with a 2-D code (the latent map and traversal)",
                VAE, {"latent_dim": 2, "beta": 1.0}, vae_loss, _ae_presets(3000), eval_vae))
# The true ELBO (beta = 1) with a decoder variance matched to the data: the residual variance of
# vae-mnist's own reconstructions is 0.05, not the 1/2 that a plain sum of squares assumes.
register(Recipe("vae-mnist-var0.05", "Chapter 2: VAE, 16-D code, true ELBO with decoder variance 0.05 (matched to the data)",
                VAE, {"latent_dim": 16, "beta": 1.0, "decoder_var": 0.05}, vae_loss, _ae_presets(3000), eval_vae))

# Chapter 3: class-conditional DDPM. The U-Net works on 14x14 maps of 2x2 pixel blocks (patch=2): a
# quarter of the positions, which is where a CPU spends its time (see the chapter's cost study).
DDPM_UNET = {"width": 32, "channel_mults": (1, 2), "attention_levels": (1,), "num_classes": 10, "patch": 2}
DDPM_MNIST = {"denoiser": {"cls": "UNet", "config": DDPM_UNET}, "shape": (1, 28, 28), "schedule": "cosine",
              "T": 1000, "p_uncond": 0.1, "guidance": 2.0, "sample_steps": 50}
register(Recipe(
    "ddpm-mnist", "Chapter 3: class-conditional DDPM (U-Net on 2x2 pixel blocks, cosine schedule)",
    DiffusionPipeline, DDPM_MNIST, diffusion_loss,
    _diffusion_presets(5000, {"denoiser": {"config": {"width": 64, "patch": 1, "channel_mults": (1, 2, 2),
                                                      "attention_levels": (1, 2)}}}),
    eval_digit_samples))
# Its twin that predicts v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 (Salimans & Ho 2022): the same
# network, data, steps and seed, only the target differs (chapter 3, "alpha_bar_T ~ 0 and v-prediction").
register(Recipe(
    "ddpm-mnist-v", "Chapter 3: ddpm-mnist's twin trained to predict v instead of eps (v-prediction)",
    DiffusionPipeline, {**DDPM_MNIST, "objective": "v"}, diffusion_loss,
    _diffusion_presets(5000, {"denoiser": {"config": {"width": 64, "patch": 1, "channel_mults": (1, 2, 2),
                                                      "attention_levels": (1, 2)}}}),
    eval_digit_samples))

# The independent judge: the classifier whose features define FID-LeNet (minilineage.metrics).
register(Recipe("lenet-mnist", "Evaluation: LeNet digit classifier behind `minilineage eval` (FID-LeNet, accuracy)",
                LeNet, {}, classifier_loss, {
                    "cpu": Preset("mnist-5k", TrainConfig(steps=1500, batch_size=128, lr=3e-3, weight_decay=0.05)),
                    "gpu": Preset("mnist", TrainConfig(steps=5000, batch_size=256, lr=3e-3, weight_decay=0.05)),
                }, eval_classifier))

# Chapter 4: latent diffusion with a CLIP-style text encoder. Three recipes, trained in this order:
# clip-mnist and latent-vae-mnist (independent), then ldm-mnist, which starts from both checkpoints.
register(Recipe("clip-mnist", "Chapter 4: CLIP-style text + image encoders trained from scratch on digit captions",
                MiniCLIP, {"text_width": 64, "text_layers": 2, "image_width": 16, "embed_dim": 32},
                clip_recipe_loss, {
                    "cpu": Preset("mnist-5k", TrainConfig(steps=1000, batch_size=128, lr=2e-3, warmup_steps=50)),
                    "gpu": Preset("mnist", TrainConfig(steps=5000, batch_size=512, lr=2e-3, warmup_steps=200)),
                }, eval_clip, caption_batches))
register(Recipe("latent-vae-mnist", "Chapter 4: KL-regularised autoencoder, 28x28 pixels <-> 7x7x4 latents",
                LatentVAE, {"width": 32, "latent_channels": 4, "beta": 0.01}, latent_vae_loss, {
                    "cpu": Preset("mnist-5k", TrainConfig(steps=1500, batch_size=128, lr=3e-3)),
                    "gpu": Preset("mnist", TrainConfig(steps=10_000, batch_size=512, lr=2e-3)),
                }, eval_latent_vae))
# One level at 7x7 (49 positions): self- and cross-attention there are cheap. The U-Net's in_channels
# and context_dim, the latent shape and scale come from the two parts (DiffusionPipeline.from_parts).
LDM_MNIST = {"denoiser": {"cls": "UNet", "config": {"width": 64, "channel_mults": (1,), "attention_levels": (0,)}},
             "schedule": "cosine", "T": 1000, "p_uncond": 0.1, "guidance": 3.0, "sample_steps": 50}
register(Recipe(
    "ldm-mnist", "Chapter 4: text-to-image latent diffusion (7x7x4 latents, cross-attention to CLIP text tokens)",
    DiffusionPipeline, LDM_MNIST, diffusion_loss,
    _diffusion_presets(2000, {"denoiser": {"config": {"width": 128, "blocks_per_level": 2}}}),
    eval_digit_samples, caption_batches, parts={"autoencoder": "latent-vae-mnist", "clip": "clip-mnist"}))
