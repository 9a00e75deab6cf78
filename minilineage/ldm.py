"""Latent diffusion: DDPM in the latent space of an autoencoder, conditioned on text. Rombach et al. 2022.

Three networks, two of them frozen:
  LatentVAE     28x28 pixels <-> 7x7x4 latents (trained first, `latent-vae-mnist`), frozen;
  TextEncoder   prompt -> 16 token vectors (CLIP's text half, `clip-mnist`), frozen;
  UNet          eps_theta(z_t, t, text tokens): the only part trained here; it reads the text
                through cross-attention after its residual blocks (Rombach et al. 2022, Eq. (3)).
Training (`ldm_loss`) encodes each image to z0 = scale * z, z ~ q(z | x), replaces ~10 % of the
captions by the empty prompt "" (for classifier-free guidance) and regresses the noise, exactly
Algorithm 1 of Ho et al. 2020 on z0. Sampling runs DDIM on latents and decodes once at the end.
The frozen parts live inside the model, so one checkpoint holds everything `sample` needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minilineage.clip import CLIP, MiniCLIPConfig
from minilineage.data import DIGIT_WORDS
from minilineage.diffusion import NoiseSchedule, eps_loss
from minilineage.latent import (
    LatentVAE,
    LatentVAEConfig,
    latent_statistics,
    reparameterize,
)
from minilineage.layers import CrossAttention
from minilineage.samplers import guided, sample_with_steps
from minilineage.text import TextEncoder, Tokenizer, split_words
from minilineage.train import unwrap
from minilineage.unet import UNet, UNetConfig

NULL_PROMPT = ""  # the "no condition" of classifier-free guidance: the encoding of the empty prompt


def digit_prompts(n: int) -> list[str]:
    """"a handwritten zero", "a handwritten one", ... cycling over the ten digits, n prompts."""
    return [f"a handwritten {DIGIT_WORDS[i % 10]}" for i in range(n)]


def prompt_digit(prompt: str) -> int | None:
    """The one digit a prompt names ("a handwritten seven", "the digit 7" -> 7), else None.

    `minilineage sample --prompt` stores it as the samples' label, so `minilineage eval` can report
    prompt adherence; prompts naming no digit, or two different ones, get no label.
    """
    names = {word: i for i, word in enumerate(DIGIT_WORDS)} | {str(i): i for i in range(10)}
    found = {names[w] for w in split_words(prompt) if w in names}
    return found.pop() if len(found) == 1 else None


@dataclass
class LDMConfig:
    # one level at 7x7 (49 positions): self- and cross-attention there are cheap
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(
        in_channels=4, width=64, channel_mults=(1,), attention_levels=(0,), context_dim=64))
    vae: LatentVAEConfig = field(default_factory=LatentVAEConfig)
    clip: MiniCLIPConfig = field(default_factory=MiniCLIPConfig)  # sizes and vocabulary of the text encoder
    latent_scale: float = 1.0  # 1 / std of the training latents, set by `from_pretrained`
    clip_x0: float | None = None  # bound on predicted latents: the largest |z0| in the training data (ditto)
    schedule: str = "cosine"
    T: int = 1000
    p_uncond: float = 0.1  # caption dropout: how often training sees the empty prompt (for guidance)
    guidance: float = 3.0  # default guidance scale when sampling
    sample_steps: int = 50  # default number of DDIM steps when sampling

    def __post_init__(self):
        # nested configs come back from a checkpoint as dicts
        self.unet = UNetConfig(**self.unet) if isinstance(self.unet, dict) else self.unet
        self.vae = LatentVAEConfig(**self.vae) if isinstance(self.vae, dict) else self.vae
        self.clip = MiniCLIPConfig(**self.clip) if isinstance(self.clip, dict) else self.clip


class LatentDiffusion(nn.Module):
    """Text-to-image latent diffusion: frozen VAE, frozen text encoder, cross-attention U-Net. Rombach et al. 2022."""

    Config = LDMConfig
    sample_options = ("prompt", "steps", "guidance")

    def __init__(self, config: LDMConfig):
        super().__init__()
        if config.unet.in_channels != config.vae.latent_channels:
            raise ValueError(f"U-Net in_channels {config.unet.in_channels} != "
                             f"latent channels {config.vae.latent_channels}")
        if config.unet.context_dim != config.clip.text_width:
            raise ValueError(f"U-Net context_dim {config.unet.context_dim} != text width {config.clip.text_width}")
        self.config = config
        c = config.clip
        self.tokenizer = Tokenizer(c.vocab, c.context_length)
        self.net = UNet(config.unet)
        self.vae = LatentVAE(config.vae).requires_grad_(False)
        self.text = TextEncoder(len(c.vocab), c.context_length, c.text_width, c.text_layers, c.text_heads,
                                c.embed_dim).requires_grad_(False)
        self.sched = NoiseSchedule.named(config.schedule, config.T)

    @classmethod
    def from_pretrained(cls, config: LDMConfig, vae: LatentVAE, clip: CLIP, x_train: torch.Tensor) -> LatentDiffusion:
        """A fresh U-Net next to copies of a trained VAE and CLIP text encoder; the scale factor measured on x_train.

        The U-Net's input channels and context width are taken from the two parts.
        """
        text = MiniCLIPConfig(**{**vars(clip.config), "vocab": clip.tokenizer.vocab})
        unet = replace(config.unet, in_channels=vae.config.latent_channels, context_dim=text.text_width)
        scale, bound = latent_statistics(vae, x_train)
        model = cls(replace(config, unet=unet, vae=vae.config, clip=text, latent_scale=scale, clip_x0=bound))
        model.vae.load_state_dict(vae.state_dict())
        model.text.load_state_dict(clip.text.state_dict())
        return model

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.vae.latent_shape  # (4, 7, 7)

    def forward(self, z: torch.Tensor, t: torch.Tensor, context=None, context_mask=None) -> torch.Tensor:
        return self.net(z, t, context=context, context_mask=context_mask)  # eps_hat, (B, 4, 7, 7)

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token text features (B, N, D) and mask (B, N), the context cross-attention reads."""
        tokens, mask = self.tokenizer.encode(prompts)
        tokens, mask = tokens.to(self.device), mask.to(self.device)
        return self.text(tokens, mask)[0], mask

    def null_condition(self) -> dict[str, torch.Tensor]:
        """The unconditional input of guidance: the empty prompt's tokens, (1, N, D) and mask (1, N)."""
        context, mask = self.encode_text([NULL_PROMPT])
        return {"context": context, "context_mask": mask}

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Images (B, 1, 28, 28) -> scaled latents z0 = scale * z, z ~ q(z | x) (the mean if generator=None)."""
        mu, logvar = self.vae.encode(x)
        z = mu if generator is None else reparameterize(mu, logvar, generator)
        return self.config.latent_scale * z  # (B, 4, 7, 7), about unit variance

    @torch.no_grad()
    def decode(self, z0: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, 4, 7, 7) -> images (B, 1, 28, 28), roughly in [-1, 1]."""
        return self.vae.decode(z0 / self.config.latent_scale)

    def denoiser(self, guidance: float) -> nn.Module:
        """The callable a sampler uses: eps_theta, or its guided mix (one batched call) when guidance != 1."""
        return self if guidance == 1.0 else guided(self, guidance, self.null_condition())

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, prompt: str | list[str] | None = None,
               steps: int | None = None, guidance: float | None = None, trajectory: bool = False):
        """n images in [-1, 1] for a prompt (or one per item of a list; None: the ten digits in turn).

        DDIM with `steps` steps on latents (ancestral DDPM when steps >= T), then one decode. As pixels
        are clipped to [-1, 1], the predicted x0_hat is clipped to the range of the training latents,
        config.clip_x0: at t = T-1 the cosine schedule has alpha_bar = 2e-9, and x0_hat =
        (z_t - sqrt(1 - alpha_bar) eps_hat) / sqrt(alpha_bar) turns an error of 0.05 in eps_hat into
        1,000; unclipped, the chain never recovers (Chapter 4 measures it). With trajectory=True
        also returns the sampler's records {t, xt, x0_hat, eps_hat}, all in latent space.
        """
        if prompt is None:
            prompts = digit_prompts(n)
        else:
            prompts = [prompt] * n if isinstance(prompt, str) else list(prompt)
        if len(prompts) != n:
            raise ValueError(f"{n} samples but {len(prompts)} prompts")
        steps = steps or self.config.sample_steps
        guidance = self.config.guidance if guidance is None else guidance
        context, mask = self.encode_text(prompts)
        model, shape = self.denoiser(guidance), (n, *self.latent_shape)
        cond = {"context": context, "context_mask": mask}
        out = sample_with_steps(model, self.sched, shape, steps, generator, self.device, trajectory,
                                self.config.clip_x0, **cond)
        z0, frames = out if trajectory else (out, None)
        images = self.decode(z0).clamp(-1, 1)
        return (images, frames) if trajectory else images

    @torch.no_grad()
    def cross_attention_maps(self, zt: torch.Tensor, t: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Where each text token acts: attention weights (B, N_ctx, h, w) of one conditional U-Net call.

        Row i of a cross-attention's weights says how latent position i splits its attention over
        the N_ctx tokens; read column j instead and you get a map of where token j is used.
        Averaged over heads and over every cross-attention layer (all at 7x7 here).
        """
        layers = [m for m in self.net.modules() if isinstance(m, CrossAttention)]
        context, mask = self.encode_text(prompts)
        for layer in layers:
            layer.keep_weights = True
        try:
            self(zt, t, context=context, context_mask=mask)
            weights = [layer.last_weights.mean(dim=1) for layer in layers]  # each (B, N_q, N_ctx)
        finally:
            for layer in layers:
                layer.keep_weights, layer.last_weights = False, None
        h, w = zt.shape[-2:]
        maps = []
        for weight in weights:
            side = math.isqrt(weight.shape[1] * h // w)  # this layer's height; its map keeps the latent's aspect
            grid = rearrange(weight, "b (h w) n -> b n h w", h=side)  # (B, N_ctx, h', w')
            maps.append(grid if grid.shape[-2:] == (h, w) else F.interpolate(grid, size=(h, w), mode="bilinear"))
        return torch.stack(maps).mean(dim=0)  # (B, N_ctx, h, w)


def drop_captions(captions: list[str], p: float, generator: torch.Generator) -> list[str]:
    """Replace each caption by the empty prompt with probability p. Ho & Salimans 2022, Algorithm 1."""
    drop = torch.rand(len(captions), generator=generator, device=generator.device).tolist()
    return [NULL_PROMPT if u < p else caption for u, caption in zip(drop, captions, strict=True)]


def ldm_loss(model: nn.Module, batch: dict, generator: torch.Generator) -> torch.Tensor:
    """Algorithm 1 of Ho et al. 2020 on latents z0 = scale * E(x), captions dropped. Rombach et al. 2022, Eq. (2)."""
    core = unwrap(model)
    z0 = core.encode(batch["x"], generator)  # (B, 4, 7, 7)
    context, mask = core.encode_text(drop_captions(batch["captions"], core.config.p_uncond, generator))
    return eps_loss(model, core.sched.to(z0.device), z0, generator, context=context, context_mask=mask)
