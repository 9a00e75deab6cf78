"""A tiny video captioner in the manner of CoCa (Yu et al. 2022): contrastive and captioning losses at once.

DALL·E 3 (Betker et al. 2023) and Sora re-caption their training data: a captioner trained on well
described examples writes detailed captions for the rest, and the generator trains on those. The
captioner the Sora report points to is of CoCa's kind, which is three pieces:

  video encoder      spacetime patches of the frozen causal VAE's latents -> tokens (B, N, D), and
                     their mean, projected, as the clip's embedding
  unimodal decoder   causal self-attention over the caption's tokens, with one extra token at the end
                     whose output, projected, is the caption's embedding (CoCa's [CLS])
  multimodal decoder causal self-attention again, plus cross-attention to the video tokens -> the
                     next word at every position

The loss is CLIP's contrastive loss between the two embeddings plus the next-word cross-entropy
(CoCa, Eq. 4, both weights 1). Captions are written greedily, a word at a time (`caption`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minilineage.layers import sincos_3d
from minilineage.layers.transformer import TransformerBlock
from minilineage.models.clip import clip_loss
from minilineage.models.latent import encode_latents
from minilineage.models.text import BOS, EOS, PAD, UNK, Tokenizer
from minilineage.models.vae3d import VAE3d, VAE3dConfig


@dataclass
class CaptionerConfig:
    vocab: list[str] = field(default_factory=lambda: ["<pad>", "<bos>", "<eos>", "<unk>"])
    context_length: int = 20  # <bos> + up to 18 words + <eos>
    autoencoder: dict = field(default_factory=dict)  # the frozen VAE3d's config
    latent_scale: float = 1.0  # latents are scaled to about unit variance, as for diffusion
    patch: int = 2
    width: int = 64
    heads: int = 4
    video_layers: int = 2
    text_layers: int = 2  # unimodal
    multimodal_layers: int = 2
    embed_dim: int = 32


def _text_layer(width: int, heads: int, cross: bool) -> nn.Module:
    """A pre-norm transformer layer of torch's own (decoder layers add cross-attention to the video)."""
    kind = nn.TransformerDecoderLayer if cross else nn.TransformerEncoderLayer
    return kind(width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)


class VideoCaptioner(nn.Module):
    """CoCa on causal-VAE latents: `loss(batch)` trains it, `caption(clips)` writes captions."""

    Config = CaptionerConfig

    def __init__(self, config: CaptionerConfig):
        super().__init__()
        self.config, w = config, config.width
        self.tokenizer = Tokenizer(config.vocab, config.context_length)
        self.autoencoder = VAE3d(VAE3dConfig(**config.autoencoder)).requires_grad_(False)
        self.patch_embed = nn.Linear(self.autoencoder.config.latent_channels * config.patch**2, w)
        self.video = nn.Sequential(*[TransformerBlock(w, config.heads) for _ in range(config.video_layers)])
        self.video_norm = nn.LayerNorm(w)
        self.video_proj = nn.Linear(w, config.embed_dim, bias=False)
        self.token_embedding = nn.Embedding(len(self.tokenizer), w)
        self.cls = nn.Parameter(torch.zeros(w))  # appended after the caption; its output is the caption's embedding
        self.position = nn.Parameter(torch.randn(config.context_length + 1, w) * 0.01)
        self.unimodal = nn.TransformerEncoder(_text_layer(w, config.heads, False), config.text_layers,
                                              enable_nested_tensor=False)
        self.text_norm = nn.LayerNorm(w)
        self.text_proj = nn.Linear(w, config.embed_dim, bias=False)
        self.multimodal = nn.TransformerDecoder(_text_layer(w, config.heads, True), config.multimodal_layers)
        self.lm_norm = nn.LayerNorm(w)
        self.lm_head = nn.Linear(w, len(self.tokenizer))
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's learnt temperature
        nn.init.normal_(self.token_embedding.weight, std=0.02)

    @classmethod
    def from_parts(cls, config: CaptionerConfig, autoencoder: VAE3d, x_train: torch.Tensor) -> VideoCaptioner:
        """A fresh captioner on a copy of a trained VAE (frozen), its latent scale measured on x_train: 1 / std
        of the mean latents, which are what it reads (a diffusion model's scale is measured on samples)."""
        device = next(autoencoder.parameters()).device
        with torch.no_grad():
            scale = 1.0 / encode_latents(autoencoder, x_train.to(device), None).float().std().item()  # None: the means
        model = cls(replace(config, latent_scale=scale, autoencoder=asdict(autoencoder.config)))
        model.autoencoder.load_state_dict(autoencoder.state_dict())
        return model

    def encode_video(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips (B, F, C, H, W) in [-1, 1] -> video tokens (B, N, D) and the clip's embedding (B, E)."""
        with torch.no_grad():
            z = self.config.latent_scale * self.autoencoder.encode(clips)[0]  # (B, f, c, h, w): the mean latent
        p, (f, h, w) = self.config.patch, (z.shape[1], z.shape[3] // self.config.patch, z.shape[4] // self.config.patch)
        tokens = self.patch_embed(rearrange(z, "b f c (h p) (w q) -> b (f h w) (c p q)", p=p, q=p))
        tokens = self.video_norm(self.video(tokens + sincos_3d((f, h, w), self.config.width).to(tokens)))
        return tokens, self.video_proj(tokens.mean(dim=1))  # (B, N, D), (B, E)

    def _unimodal(self, tokens: torch.Tensor, with_cls: bool) -> torch.Tensor:
        """Caption tokens (B, L) -> causal features (B, L (+1 for the [CLS] token), D)."""
        h = self.token_embedding(tokens)
        if with_cls:
            h = torch.cat([h, self.cls.expand(len(h), 1, -1)], dim=1)
        n = h.shape[1]
        pad = torch.cat([tokens == PAD, torch.zeros(len(h), n - tokens.shape[1], dtype=torch.bool, device=h.device)], 1)
        causal = nn.Transformer.generate_square_subsequent_mask(n, device=h.device, dtype=torch.bool)
        return self.unimodal(h + self.position[:n], mask=causal, src_key_padding_mask=pad, is_causal=True)

    def _next_words(self, h: torch.Tensor, tokens: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """Logits of the next word at every caption position (B, L, V), from unimodal features h (B, L, D)."""
        n = h.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(n, device=h.device, dtype=torch.bool)
        out = self.multimodal(h, video, tgt_mask=causal, tgt_key_padding_mask=tokens == PAD, tgt_is_causal=True)
        return self.lm_head(self.lm_norm(out))

    def losses(self, clips: torch.Tensor, captions: list[str]) -> dict[str, torch.Tensor]:
        """CoCa's two losses on clips (B, F, C, H, W) and their captions: contrastive and next-word."""
        tokens = self.tokenizer.encode(captions)[0].to(clips.device)  # (B, L)
        video, video_emb = self.encode_video(clips)
        h = self._unimodal(tokens, with_cls=True)  # (B, L + 1, D)
        text_emb = self.text_proj(self.text_norm(h[:, -1]))  # the [CLS] token's output
        logits = self._next_words(h[:, :-1], tokens, video)  # (B, L, V)
        words = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), ignore_index=PAD)
        contrast = clip_loss(F.normalize(video_emb, dim=-1), F.normalize(text_emb, dim=-1), self.log_scale.exp())
        return {"contrastive": contrast, "captioning": words}

    @torch.no_grad()
    def caption(self, clips: torch.Tensor) -> list[str]:
        """Greedy captions of clips (B, F, C, H, W), a word at a time until <eos> (or the context is full)."""
        video, _ = self.encode_video(clips)
        tokens = torch.full((len(clips), 1), BOS, dtype=torch.long, device=clips.device)
        done = torch.zeros(len(clips), dtype=torch.bool, device=clips.device)
        for _ in range(self.config.context_length - 1):
            logits = self._next_words(self._unimodal(tokens, with_cls=False), tokens, video)[:, -1]  # (B, V)
            logits[:, [PAD, BOS, UNK]] = -torch.inf  # a caption is words and an <eos>, never padding or <unk>
            word = logits.argmax(-1)
            word = torch.where(done, PAD, word)  # finished captions only grow padding
            tokens, done = torch.cat([tokens, word[:, None]], dim=1), done | (word == EOS)
            if done.all():
                break
        return self.tokenizer.decode(tokens)


def captioner_loss(model: VideoCaptioner, batch: dict, generator: torch.Generator) -> torch.Tensor:
    """The recipe loss: CoCa's contrastive + captioning losses, weighted 1 and 1."""
    return sum(model.losses(batch["x"], batch["captions"]).values())
