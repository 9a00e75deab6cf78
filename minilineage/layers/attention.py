"""Attention layers: self-attention over a feature map, and cross-attention to text tokens."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minilineage.layers.common import norm, zero_init


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, with a residual. Vaswani et al. 2017.

    Every position attends to every other, so a 7x7 map can relate a digit's top to its bottom,
    which a few 3x3 convolutions cannot. Cost grows as (H*W)^2: use it at low resolution.
    """

    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        if ch % heads:
            raise ValueError(f"channels {ch} must be divisible by heads {heads}")
        self.heads = heads
        self.norm = norm(ch)
        self.to_qkv = nn.Linear(ch, 3 * ch)
        self.proj_out = zero_init(nn.Linear(ch, ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, height, width = x.shape
        tokens = rearrange(self.norm(x), "b c h w -> b (h w) c")  # (B, N, C), N = H*W
        q, k, v = rearrange(self.to_qkv(tokens), "b n (three heads d) -> three b heads n d", three=3, heads=self.heads)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d): softmax(q k^T / sqrt(d)) v
        h = self.proj_out(rearrange(h, "b heads n d -> b n (heads d)"))  # (B, N, C)
        return x + rearrange(h, "b (h w) c -> b c h w", h=height, w=width)  # (B, C, H, W)


class CrossAttention(nn.Module):
    """Attention with queries from image tokens and keys/values from context (text) tokens.

    out = softmax(Q K^T / sqrt(d) + mask) V, Q = x W_q, K = c W_k, V = c W_v.
    Vaswani et al. 2017, Eq. (1); used for text conditioning by Rombach et al. 2022, Sec. 3.3 (the
    unnumbered equation just before their Eq. (3), in column-vector form: Q = W_Q phi(z_t), K = W_K tau(y)).

    `mask` (B, N_ctx) bool is True for real context tokens and False for padding, which then
    gets exactly zero weight. Written with einsum and softmax, not a fused kernel, so the
    attention weights exist as a tensor: set `keep_weights = True` and each forward stores
    them, detached, in `last_weights` (B, heads, N_q, N_ctx). A flag on the module, rather
    than a second return value, lets a widget read the maps from deep inside a U-Net whose
    forward it does not control.
    """

    def __init__(self, query_dim: int, context_dim: int, heads: int = 4, head_dim: int = 32):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Linear(inner, query_dim)
        self.keep_weights = False
        self.last_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, N_q, query_dim), context: (B, N_ctx, context_dim), mask: (B, N_ctx) -> (B, N_q, query_dim)."""
        split = "b n (heads d) -> b heads n d"
        q = rearrange(self.to_q(x), split, heads=self.heads)  # (B, heads, N_q, d)
        k = rearrange(self.to_k(context), split, heads=self.heads)  # (B, heads, N_ctx, d)
        v = rearrange(self.to_v(context), split, heads=self.heads)  # (B, heads, N_ctx, d)
        scores = torch.einsum("b h i d, b h j d -> b h i j", q, k) / math.sqrt(self.head_dim)  # (B, heads, N_q, N_ctx)
        if mask is not None:
            if mask.shape != context.shape[:2]:
                raise ValueError(f"mask must be (B, N_ctx) = {tuple(context.shape[:2])}, got {tuple(mask.shape)}")
            # finfo.min, not -inf: a row whose keys are all padding stays finite (uniform), never NaN
            scores = scores.masked_fill(~mask.bool()[:, None, None, :], torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1)  # (B, heads, N_q, N_ctx), each row sums to 1 over keys
        if self.keep_weights:
            self.last_weights = weights.detach()
        h = torch.einsum("b h i j, b h j d -> b h i d", weights, v)  # (B, heads, N_q, d)
        return self.to_out(rearrange(h, "b heads n d -> b n (heads d)"))  # (B, N_q, query_dim)


class SpatialCrossAttention(nn.Module):
    """Cross-attention for a (B, C, H, W) feature map: every pixel queries the text, plus a residual.

    The pixels become H*W tokens, attend to the context tokens, and the result is added back
    (Rombach et al. 2022, Sec. 3.3). The output projection starts at zero, so before training
    the text changes nothing. `self.attn.last_weights` reshaped to (B, heads, H, W, N_ctx)
    shows where in the image each context token's vector is read; that is not where a word acts
    (see `DiffusionPipeline.cross_attention_maps`).
    """

    def __init__(self, ch: int, context_dim: int, heads: int = 4):
        super().__init__()
        if ch % heads:
            raise ValueError(f"channels {ch} must be divisible by heads {heads}")
        self.norm = norm(ch)
        self.attn = CrossAttention(ch, context_dim, heads, head_dim=ch // heads)
        zero_init(self.attn.to_out)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        _, _, height, width = x.shape
        tokens = rearrange(self.norm(x), "b c h w -> b (h w) c")  # (B, H*W, C)
        h = self.attn(tokens, context, mask)  # (B, H*W, C)
        return x + rearrange(h, "b (h w) c -> b c h w", h=height, w=width)  # (B, C, H, W)
