"""Other ways to give a DiT its timestep and label: the variants Peebles & Xie 2023 compared (Fig. 3 and 5).

  InContextDiT       the embeddings of t and y are two more tokens in the sequence, read by plain
                     pre-norm ViT blocks and dropped after the last one
  CrossAttentionDiT  t and y as a sequence of two tokens that the image tokens cross-attend to after
                     self-attention, as chapter 4's U-Net reads text
  AdaLNDiT           adaptive LayerNorm: shift and scale from c, but no gates, so every residual
                     branch is open from the first step
  DiT (`dit`)        adaLN-Zero: the same plus zero-initialised gates; a fresh block is the identity
  PaperInitDiT       adaLN-Zero with DiT's own initialisation of the condition (256 time frequencies,
                     std 0.02, zero biases) instead of the course's unit-scale c: chapter 6's init study

Each is `DiT` with other blocks; patches, positions, embeddings and the zeroed output layer are shared,
so the chapter's comparison isolates how the condition gets in. The two token variants end in a
plain LayerNorm + linear output layer: an adaLN output layer would give them c a second way in.
"""

from __future__ import annotations

import torch
from torch import nn

from minilineage.layers import (
    MLP,
    CrossAttention,
    SelfAttention,
    TransformerBlock,
    timestep_embedding,
)
from minilineage.models.dit import DiT, modulate


class AdaLNBlock(nn.Module):
    """A transformer block whose LayerNorms take shift and scale from c, with no gates. Perez et al. 2018."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, context_dim: int | None = None):
        super().__init__()
        if context_dim is not None:
            raise ValueError("the conditioning variants read no text: context_dim must be None")
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(dim, mlp_ratio)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 4 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, context=None, context_mask=None) -> torch.Tensor:
        shift_msa, scale_msa, shift_mlp, scale_mlp = self.adaLN_modulation(c).chunk(4, dim=-1)  # (B, 1, D) each
        x = x + self.attn(modulate(self.norm1(x), shift_msa, scale_msa))  # (B, N, D)
        return x + self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))  # (B, N, D)


class CrossConditionBlock(nn.Module):
    """Pre-norm block with cross-attention to the condition tokens between self-attention and the MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, context_dim: int | None = None):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.cross = CrossAttention(dim, dim, heads, head_dim=dim // heads)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, c: torch.Tensor, context=None, context_mask=None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (B, N, D)
        x = x + self.cross(self.norm2(x), c)  # (B, N, D): queries from the image, keys and values from (t, y)
        return x + self.mlp(self.norm3(x))  # (B, N, D)


class TokenFinalLayer(nn.Module):
    """LayerNorm, then a linear map to the p*p*C numbers of a patch; the condition is not read again."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))  # (B, N, p*p*C_out)


class AdaLNDiT(DiT):
    """DiT with adaLN blocks (no gates). Its modulation starts at zero like DiT's, so a fresh block is a
    plain pre-norm block: the only difference from adaLN-Zero is that the branches are open from the start."""

    Block = AdaLNBlock


class _TokenConditioned(DiT):
    """Shared by the two variants that read t and y as tokens rather than through the norms."""

    def __init__(self, config):
        if config.context_dim is not None:
            raise ValueError("the conditioning variants read no text: context_dim must be None")
        super().__init__(config)

    def make_final(self, out_dim: int) -> nn.Module:
        return TokenFinalLayer(self.config.width, out_dim)

    def condition(self, t: torch.Tensor, y: torch.Tensor | None, grid, context=None, context_mask=None) -> torch.Tensor:
        """The embeddings of t and of y as two tokens (B, 2, D) (one, (B, 1, D), without labels); text, if any,
        reaches these variants through cross-attention only."""
        if self.context_pool is not None:
            raise ValueError(f"{type(self).__name__} conditions through tokens; pooled_context is not offered")
        if t.ndim != 1:
            raise ValueError(f"{type(self).__name__} takes one timestep per sample, got t of shape {tuple(t.shape)}")
        tokens = [self.time_embed(t)]  # (B, D)
        if self.label_embed is not None:
            y = torch.as_tensor(self.null_label if y is None else y, device=t.device).expand(t.shape)  # (B,)
            tokens.append(self.label_embed(y))  # (B, D)
        return torch.stack(tokens, dim=1)  # (B, 2, D)


class CrossAttentionDiT(_TokenConditioned):
    """DiT whose blocks cross-attend to the (t, y) tokens."""

    def make_block(self) -> nn.Module:
        return CrossConditionBlock(self.config.width, self.config.heads, self.config.mlp_ratio)


class InContextDiT(_TokenConditioned):
    """DiT with the (t, y) tokens prepended to the image tokens and plain ViT blocks."""

    def make_block(self) -> nn.Module:
        return TransformerBlock(self.config.width, self.config.heads, self.config.mlp_ratio)

    def forward(self, x, t, y=None, context=None, context_mask=None) -> torch.Tensor:
        """x: (B, C, H, W), t: (B,), y: (B,) -> (B, C_out, H, W); no text."""
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t  # a scalar t applies to the whole batch
        tokens, grid = self.patchify(x)  # (B, N, p*p*C), grid (h, w)
        h = self.embed(tokens) + self.position_embedding(grid)  # (B, N, D)
        c = self.condition(t, y, grid)  # (B, M, D), M = 2 (t, y)
        h = torch.cat([c, h], dim=1)  # (B, M + N, D): the condition is just more tokens
        for block in self.blocks:
            h = block(h)  # (B, M + N, D)
        out = self.final(h[:, c.shape[1]:], c)  # (B, N, p*p*C_out): the condition tokens are dropped
        return self.unpatchify(out, grid)  # (B, C_out, H, W)


class FrequencyTimeEmbedding(nn.Module):
    """DiT's TimestepEmbedder: t -> 256 sinusoids -> Linear(256, D), SiLU, Linear(D, D). Peebles & Xie 2023 (code)."""

    def __init__(self, dim: int, frequencies: int = 256):
        super().__init__()
        self.frequencies = frequencies
        self.mlp = nn.Sequential(nn.Linear(frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.frequencies))  # (B, D)


class PaperInitDiT(DiT):
    """DiT initialised as Peebles & Xie's `initialize_weights` does it: 256 time frequencies, every bias zero,
    the time MLP's weights and the label table N(0, 0.02); adaLN-Zero and the zeroed output as in `DiT`."""

    def make_time_embed(self) -> nn.Module:
        return FrequencyTimeEmbedding(self.config.width)

    def initialize_weights(self):
        super().initialize_weights()
        for layer in (self.time_embed.mlp[0], self.time_embed.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        if self.label_embed is not None:
            nn.init.normal_(self.label_embed.weight, std=0.02)
