"""The transformer's parts for token sequences (B, N, D): self-attention, the MLP, a pre-norm block.

Vaswani et al. 2017; the pre-norm arrangement (LayerNorm before each branch, the residual stream
left untouched) of GPT-2 and ViT (Dosovitskiy et al. 2021, Eqs. 2-3), which trains stably without
warm-up tricks. DiT (Chapter 6) keeps `SelfAttention` and `MLP` and changes only how the block is
normalised and conditioned (adaLN-Zero), as facebookresearch/DiT does with timm's Attention and Mlp.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class SelfAttention(nn.Module):
    """Multi-head self-attention over tokens: softmax(Q K^T / sqrt(d)) V per head. Vaswani et al. 2017, Eq. (1).

    Through `F.scaled_dot_product_attention`, which picks a fused kernel (flash attention on GPUs)
    and never stores the N x N weights; a module that must show its weights uses an explicit
    softmax instead (see `CrossAttention`).
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three heads d) -> three b heads n d", three=3, heads=self.heads)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d)
        return self.proj(rearrange(h, "b heads n d -> b n (heads d)"))  # (B, N, D)


class MLP(nn.Module):
    """The per-token feed-forward network: Linear -> GELU -> Linear, hidden width mlp_ratio * dim."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # (B, N, D)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then + MLP(LN(x)). Dosovitskiy et al. 2021, Eqs. (2)-(3)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (B, N, D)
        return x + self.mlp(self.norm2(x))  # (B, N, D)
