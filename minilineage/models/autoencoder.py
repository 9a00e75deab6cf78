"""Autoencoders: the plain AE of Chapter 1 and the VAE of Chapter 2.

Both squeeze a 28x28 image through a small code z and rebuild it. The AE maps x to one point;
the VAE maps x to a Gaussian q(z | x) and is pulled towards the prior N(0, I).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def conv_encoder(in_channels: int, width: int) -> nn.Sequential:
    """28x28 -> 7x7 feature map with 2*width channels (two stride-2 convolutions)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.SiLU(),  # (B, w, 14, 14)
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),  # (B, 2w, 7, 7)
    )


def conv_decoder(out_channels: int, width: int) -> nn.Sequential:
    """7x7 feature map with 2*width channels -> 28x28 image (upsample + conv, then a transposed conv).

    The last stage goes straight from 14x14 features to pixels: convolutions at full resolution
    dominate the cost on a CPU, and MNIST strokes do not need them.
    """
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * width, width, 3, padding=1), nn.SiLU(),  # (B, w, 14, 14)
        nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
        nn.ConvTranspose2d(width, out_channels, 4, stride=2, padding=1),  # (B, C, 28, 28)
    )


@dataclass
class AEConfig:
    channels: int = 1
    size: int = 28
    width: int = 16
    latent_dim: int = 2


class Autoencoder(nn.Module):
    """A convolutional autoencoder: x -> z (latent_dim numbers) -> x_hat. Hinton & Salakhutdinov 2006."""

    Config = AEConfig

    def __init__(self, config: AEConfig):
        super().__init__()
        if config.size % 4:
            raise ValueError(f"image size {config.size} must be divisible by 4 (two stride-2 stages)")
        self.config = config
        side = config.size // 4
        flat = 2 * config.width * side * side
        self.encoder = nn.Sequential(conv_encoder(config.channels, config.width), nn.Flatten(), nn.Linear(flat, config.latent_dim))
        self.from_code = nn.Linear(config.latent_dim, flat)
        self.decoder = conv_decoder(config.channels, config.width)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # (B, latent_dim)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        side = self.config.size // 4
        h = rearrange(self.from_code(z), "b (c h w) -> b c h w", h=side, w=side)  # (B, 2w, 7, 7)
        return self.decoder(h)  # (B, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, **_) -> torch.Tensor:
        """Decode codes drawn from N(0, I): the AE never asked its codes to look like that (Chapter 1)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=device)
        return self.decode(z).clamp(-1, 1)


def ae_loss(model: Autoencoder, batch: dict, generator: torch.Generator) -> torch.Tensor:
    """Reconstruction error ||x - D(E(x))||^2, averaged over pixels."""
    return F.mse_loss(model(batch["x"]), batch["x"])


def denoising_ae_loss(model: Autoencoder, batch: dict, generator: torch.Generator, max_sigma: float = 1.0) -> torch.Tensor:
    """Denoising AE (Vincent et al. 2008): rebuild the clean x from x + sigma * noise, sigma ~ U(0, max)."""
    x = batch["x"]
    sigma = max_sigma * torch.rand(len(x), 1, 1, 1, generator=generator, device=x.device)
    noisy = x + sigma * torch.randn(x.shape, generator=generator, device=x.device)
    return F.mse_loss(model(noisy), x)


@dataclass
class VAEConfig:
    channels: int = 1
    size: int = 28
    width: int = 16
    latent_dim: int = 16
    beta: float = 1.0  # weight of the KL term (Higgins et al. 2017)
    # sigma^2 of the decoder p(x | z) = N(x_hat, sigma^2 I), pixels in [-1, 1]. The loss is the true
    # negative ELBO (up to a constant) only at beta = 1, and only beta * sigma^2 matters. The default
    # 1/2 makes the reconstruction term a plain sum of squares; it is ~10x the residual variance
    # (0.05) of vae-mnist's own reconstructions (Chapter 2, section 5).
    decoder_var: float = 0.5


class VAE(Autoencoder):
    """Variational autoencoder: q(z | x) = N(mu, diag sigma^2), prior N(0, I). Kingma & Welling 2014."""

    Config = VAEConfig

    def __init__(self, config: VAEConfig):
        super().__init__(AEConfig(config.channels, config.size, config.width, 2 * config.latent_dim))
        self.config = config
        self.from_code = nn.Linear(config.latent_dim, self.from_code.out_features)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The parameters of q(z | x): mean and log-variance, each (B, latent_dim)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct from the mean code (deterministic; used for reconstruction error)."""
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, temperature: float = 1.0, **_) -> torch.Tensor:
        """Decode z ~ N(0, temperature^2 I): sampling from the prior, which the KL term made meaningful."""
        device = next(self.parameters()).device
        z = temperature * torch.randn(n, self.config.latent_dim, generator=generator, device=device)
        return self.decode(z).clamp(-1, 1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): the noise moves outside the gradient path. Kingma & Welling 2014, Sec. 2.4."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per item = 1/2 sum(mu^2 + sigma^2 - 1 - log sigma^2). Kingma & Welling 2014, App. B."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(dim=1)


def gaussian_log_likelihood(x: torch.Tensor, x_hat: torch.Tensor, var: float) -> torch.Tensor:
    """log N(x; x_hat, var I) per image, in nats: -||x - x_hat||^2 / (2 var) - (D / 2) log(2 pi var)."""
    D = x[0].numel()
    return -(x - x_hat).pow(2).flatten(1).sum(dim=1) / (2 * var) - 0.5 * D * math.log(2 * math.pi * var)


def vae_loss(model: VAE, batch: dict, generator: torch.Generator) -> torch.Tensor:
    """Negative ELBO per image, one z per image, up to the constant (D / 2) log(2 pi sigma^2). Kingma & Welling 2014, Eq. (10).

    ||x - x_hat||^2 / (2 sigma^2) + beta * KL; at the default sigma^2 = 1/2 the first term is the
    plain sum of squared errors, and the constant left out is (D / 2) log(pi) = 448.7 nats for MNIST.
    """
    x = batch["x"]
    mu, logvar = model.encode(x)
    x_hat = model.decode(reparameterize(mu, logvar, generator))
    reconstruction = (x_hat - x).pow(2).flatten(1).sum(dim=1) / (2 * model.config.decoder_var)
    return (reconstruction + model.config.beta * kl_to_standard_normal(mu, logvar)).mean()


def negative_elbo(model: VAE, x: torch.Tensor, generator: torch.Generator, var: float | None = None) -> torch.Tensor:
    """-ELBO per image in nats, constant included, one z per image (beta ignored): -log p(x | z) + KL(q || p).

    var: the decoder variance to score with (default: the one the model was trained with).
    """
    mu, logvar = model.encode(x)
    x_hat = model.decode(reparameterize(mu, logvar, generator))
    var = model.config.decoder_var if var is None else var
    return -gaussian_log_likelihood(x, x_hat, var) + kl_to_standard_normal(mu, logvar)


@torch.no_grad()
def reconstruction_mse(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> float:
    """Mean squared error per pixel on the [0, 1] pixel scale (what students usually quote)."""
    total = 0.0
    for chunk in x.split(batch_size):
        x_hat = model(chunk).clamp(-1, 1)
        total += F.mse_loss((x_hat + 1) / 2, (chunk + 1) / 2, reduction="sum").item()
    return total / x.numel()
