"""CLIP for clips: a text encoder that learns every word of the motion captions by matching them to videos.

Chapter 4's `clip-mnist` learnt its words from captions of still digits ("a handwritten seven"), so it
reads "moves", "left" or "bounces" as the unknown token: a video model prompted through it can be told
the digit, never the motion. Sora conditions on a text encoder that knows the words its captions use;
here the same recipe as chapter 4 learns them from moving-mnist: the contrastive loss of Radford et al.
2021 (Fig. 3) between a caption and a *clip*. To tell "a 3 moves left" from "a 3 moves right" in a batch,
the text encoder must give the direction words their own meaning, and the video encoder must see motion.

  text encoder   chapter 4's `TextEncoder`, unchanged, over the 19 caption words: what the video DiT
                 reads through cross-attention, frozen
  video encoder  spacetime patches of the frozen causal VAE's latents, 3-D sin-cos positions, a small
                 transformer, the mean token projected (the video tower of the CoCa captioner)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch
from einops import rearrange
from torch import nn

from minilineage.data.video import CAPTION_WORDS
from minilineage.layers import sincos_3d
from minilineage.layers.transformer import TransformerBlock
from minilineage.models.clip import MiniCLIPConfig, clip_loss
from minilineage.models.latent import encode_latents
from minilineage.models.text import SPECIALS, TextEncoder, Tokenizer
from minilineage.models.vae3d import VAE3d, VAE3dConfig


@dataclass
class VideoCLIPConfig(MiniCLIPConfig):
    """A MiniCLIPConfig (the text encoder's sizes and vocabulary: what a pipeline's frozen text condition
    is rebuilt from) plus the video tower's."""

    vocab: list[str] = field(default_factory=lambda: [*SPECIALS, *CAPTION_WORDS])
    autoencoder: dict = field(default_factory=dict)  # the frozen VAE3d's config
    latent_scale: float = 1.0  # latents scaled to about unit variance
    patch: int = 2
    video_width: int = 64
    video_layers: int = 2
    video_heads: int = 4


class VideoCLIP(nn.Module):
    """Text encoder + video encoder on causal-VAE latents + a learnt temperature. Radford et al. 2021."""

    Config = VideoCLIPConfig

    def __init__(self, config: VideoCLIPConfig):
        super().__init__()
        self.config, w = config, config.video_width
        self.tokenizer = Tokenizer(config.vocab, config.context_length)
        self.text = TextEncoder(len(config.vocab), config.context_length, config.text_width, config.text_layers,
                                config.text_heads, config.embed_dim)
        self.autoencoder = VAE3d(VAE3dConfig(**config.autoencoder)).requires_grad_(False)
        self.patch_embed = nn.Linear(self.autoencoder.config.latent_channels * config.patch**2, w)
        self.video = nn.Sequential(*[TransformerBlock(w, config.video_heads) for _ in range(config.video_layers)])
        self.video_norm = nn.LayerNorm(w)
        self.video_proj = nn.Linear(w, config.embed_dim, bias=False)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's learnt temperature, from 0.07

    @classmethod
    def from_parts(cls, config: VideoCLIPConfig, autoencoder: VAE3d, x_train: torch.Tensor) -> VideoCLIP:
        """A fresh VideoCLIP on a copy of a trained VAE (frozen), its latent scale 1 / std of the mean latents
        of x_train (what the video tower reads)."""
        device = next(autoencoder.parameters()).device
        with torch.no_grad():
            scale = 1.0 / encode_latents(autoencoder, x_train.to(device), None).float().std().item()  # None: the means
        model = cls(replace(config, latent_scale=scale, autoencoder=asdict(autoencoder.config)))
        model.autoencoder.load_state_dict(autoencoder.state_dict())
        return model

    @property
    def logit_scale(self) -> torch.Tensor:
        """exp(t), clamped at 100 as in CLIP."""
        return self.log_scale.clamp(max=math.log(100)).exp()

    def encode_video(self, clips: torch.Tensor) -> torch.Tensor:
        """Clips (B, F, C, H, W) in [-1, 1] -> embeddings (B, E): the mean of the video tower's tokens, projected."""
        with torch.no_grad():
            z = self.config.latent_scale * self.autoencoder.encode(clips)[0]  # (B, f, c, h, w): the mean latent
        p = self.config.patch
        grid = (z.shape[1], z.shape[3] // p, z.shape[4] // p)
        tokens = self.patch_embed(rearrange(z, "b f c (h p) (w q) -> b (f h w) (c p q)", p=p, q=p))  # (B, N, D)
        tokens = self.video_norm(self.video(tokens + sincos_3d(grid, self.config.video_width).to(tokens)))
        return self.video_proj(tokens.mean(dim=1))  # (B, E)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Captions -> embeddings (B, E): the text encoder's pooled `<eos>` output."""
        tokens, mask = self.tokenizer.encode(texts)
        device = self.log_scale.device
        return self.text(tokens.to(device), mask.to(device))[1]

    def loss(self, clips: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """The symmetric contrastive loss of a batch of clips and their captions (`clip_loss`)."""
        return clip_loss(self.encode_video(clips), self.encode_text(texts), self.logit_scale)

    @torch.no_grad()
    def retrieval(self, clips: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """For each clip, the index of the most similar of `texts` (B,): 1.0 accuracy is every clip's own."""
        video = nn.functional.normalize(self.encode_video(clips), dim=-1)
        text = nn.functional.normalize(self.encode_text(texts), dim=-1)
        return (video @ text.T).argmax(dim=1)


def video_clip_loss(model: VideoCLIP, batch: dict, generator: torch.Generator) -> torch.Tensor:
    """The recipe loss: CLIP's contrastive loss on (clip, caption) pairs."""
    return model.loss(batch["x"], batch["captions"])
