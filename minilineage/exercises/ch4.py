"""Chapter 4 (latent diffusion + CLIP): exercises and their reference answers."""

from __future__ import annotations

import math

import torch

from minilineage.checkpoint import load_model
from minilineage.data import load_dataset
from minilineage.exercises.core import close_to, register
from minilineage.models.latent import encode_latents

register("ch4.positions", close_to(16.0), "count the positions of a 28x28 image and of a 7x7 latent",
         solution=28 * 28 / (7 * 7))


def _scale(my_scale) -> bool:
    latents = encode_latents(load_model("latent-vae-mnist"), load_dataset("mnist-5k", "test").float_images(), None)
    return close_to(1 / latents.std().item(), rtol=0.05)(my_scale)


register("ch4.scale_factor", _scale, "one over the standard deviation of all the numbers of the mean latents",
         solution=1.1)


def _guides(my_guided) -> bool:
    g = torch.Generator().manual_seed(4)
    eps_cond, eps_uncond = torch.randn(2, 3, 4, generator=g).unbind(0)
    return all(close_to(eps_uncond + w * (eps_cond - eps_uncond))(my_guided(eps_cond, eps_uncond, w))
               for w in (0.0, 1.0, 3.0))


def guided_eps(eps_cond, eps_uncond, w):
    return eps_uncond + w * (eps_cond - eps_uncond)


register("ch4.guidance", _guides, "start from the unconditional prediction and move w times the difference",
         solution=guided_eps)

_E = math.exp(2 / math.sqrt(2))
register("ch4.attention_weights", close_to(torch.tensor([_E, 1.0, 0.0]) / (_E + 1.0)),
         "scores q.k / sqrt(d); the padding token gets -inf; then softmax", solution=[0.80443, 0.19557, 0.0])
