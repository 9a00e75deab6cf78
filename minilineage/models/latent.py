"""The latent autoencoder of latent diffusion: 28x28 pixels <-> a 7x7 map of 4 latent channels.

Rombach et al. 2022, Sec. 3.1: train an autoencoder once, with a *small* KL pull towards N(0, I)
(their "KL-reg."), then run diffusion on its latents. Unlike Chapter 2's VAE, the code keeps its
spatial layout (a 7x7 map, not a vector), so a U-Net can still work on it, and the KL weight is
tiny, so the code keeps almost all the detail; diffusion, not the prior, will generate.
The latents then have some arbitrary spread, so latent diffusion multiplies them by a scale
factor computed from the data (`latent_scale_factor`) to give them unit variance, like the noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from minilineage.models.autoencoder import (
    conv_decoder,
    conv_encoder,
    kl_to_standard_normal,
    reparameterize,
)


@dataclass
class LatentVAEConfig:
    channels: int = 1
    size: int = 28
    width: int = 32  # the 14x14 stage has `width` channels, the 7x7 stage 2 * width
    latent_channels: int = 4
    beta: float = 0.01  # weight of the KL term; Rombach et al. use a tiny one so latents keep the detail


class LatentAutoencoder(nn.Module):
    """What the latent autoencoders share (`LatentVAE`, chapter 7's `VAE3d`): given `encode` (-> mu, logvar),
    `decode` and `latent_shape`, a deterministic reconstruction and decoded prior draws."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct from the mean latent (deterministic; used for reconstruction error)."""
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, **_) -> torch.Tensor:
        """Decode latents drawn from N(0, I): with a tiny KL weight this is NOT a generator (Chapter 4 shows why)."""
        device = next(self.parameters()).device
        z = torch.randn((n, *self.latent_shape), generator=generator, device=device)
        return self.decode(z).clamp(-1, 1)


class LatentVAE(LatentAutoencoder):
    """KL-regularised autoencoder with a spatial latent: (B, C, S, S) <-> (B, 4, S/4, S/4). Rombach et al. 2022."""

    Config = LatentVAEConfig

    def __init__(self, config: LatentVAEConfig):
        super().__init__()
        if config.size % 4:
            raise ValueError(f"image size {config.size} must be divisible by 4 (two stride-2 stages)")
        self.config = config
        w, c = config.width, config.latent_channels
        self.encoder = nn.Sequential(conv_encoder(config.channels, w), nn.Conv2d(2 * w, 2 * c, 3, padding=1))
        self.decoder = nn.Sequential(nn.Conv2d(c, 2 * w, 3, padding=1), nn.SiLU(), conv_decoder(config.channels, w))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(latent channels, S/4, S/4): (4, 7, 7) for MNIST, 196 numbers for 784 pixels."""
        side = self.config.size // 4
        return (self.config.latent_channels, side, side)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The parameters of q(z | x): mean and log-variance, each (B, 4, S/4, S/4)."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.config.channels, self.config.size, self.config.size):
            raise ValueError(f"expected images (B, {self.config.channels}, {self.config.size}, {self.config.size}), "
                             f"got {tuple(x.shape)}")
        mu, logvar = self.encoder(x).chunk(2, dim=1)  # 2 x (B, c, S/4, S/4)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)  # (B, C, S, S)


def latent_vae_loss(model: LatentVAE, batch: dict, generator: torch.Generator) -> torch.Tensor:
    """Negative ELBO per image with a weighted KL: sum of squared errors + beta * KL(q(z|x) || N(0, I))."""
    x = batch["x"]
    mu, logvar = model.encode(x)
    x_hat = model.decode(reparameterize(mu, logvar, generator))
    reconstruction = (x_hat - x).pow(2).flatten(1).sum(dim=1)  # (B,)
    kl = kl_to_standard_normal(mu.flatten(1), logvar.flatten(1))  # (B,), summed over the 196 latent numbers
    return (reconstruction + model.config.beta * kl).mean()


@torch.no_grad()
def encode_latents(vae: LatentVAE, x: torch.Tensor, generator: torch.Generator | None,
                   batch_size: int = 500) -> torch.Tensor:
    """Latents z ~ q(z | x) of images (N, C, S, S) -> (N, 4, S/4, S/4), unscaled; generator=None gives the means."""
    parts = []
    for chunk in x.split(batch_size):
        mu, logvar = vae.encode(chunk)
        parts.append(mu if generator is None else reparameterize(mu, logvar, generator))
    return torch.cat(parts)


@torch.no_grad()
def latent_statistics(vae: LatentVAE, x: torch.Tensor, seed: int = 0) -> tuple[float, float]:
    """(scale factor, largest |scaled latent|) of the latents of `x`, from one pass of the encoder.

    The second number is where latent diffusion clips its predicted x0 (see `minilineage.samplers`).
    """
    device = next(vae.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    z = encode_latents(vae, x.to(device), generator)  # (N, 4, S/4, S/4)
    scale = 1.0 / z.float().std().item()
    return scale, scale * z.abs().max().item()


def latent_scale_factor(vae: LatentVAE, x: torch.Tensor, seed: int = 0) -> float:
    """1 / std of the latents of `x`, so scaled latents have unit variance. Rombach et al. 2022, Appendix G.

    The forward process assumes data of roughly unit variance: with latents of std 5 the noise
    at the cosine schedule's middle steps would be far too weak to hide them, with std 0.2 far
    too strong. One number, measured once on the training data, fixes that.
    """
    return latent_statistics(vae, x, seed)[0]
