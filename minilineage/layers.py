"""Neural building blocks shared by the diffusion models: time embedding, ResBlock, attention.

Every residual branch here (ResBlock, self-attention, cross-attention) ends in a layer whose
weights start at zero, so a freshly built block is exactly its skip path and a deep stack of
them starts as the identity; training then grows each branch from nothing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def norm(ch: int) -> nn.GroupNorm:
    """GroupNorm with at most 8 groups, always a divisor of `ch`. Wu & He 2018.

    Batch statistics are noisy at the small batches of a laptop; GroupNorm normalises each image
    on its own. gcd(8, ch) keeps narrow layers valid: 4 channels -> 4 groups, 12 -> 4, 3 -> 1.
    """
    return nn.GroupNorm(math.gcd(8, ch), ch)


def zero_init(module: nn.Module) -> nn.Module:
    """Set a layer's weights and bias to zero, so the residual branch it ends starts silent."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps. Vaswani et al. 2017, Sec. 3.5; Ho et al. 2020.

    emb[:, k] = cos(t * f_k) and emb[:, half + k] = sin(t * f_k), with f_k = max_period^(-k / half)
    and half = dim // 2: first all cosines, then all sines (the DiT / guided-diffusion layout).
    An odd `dim` gets one trailing zero.  t: (B,)  ->  (B, dim)
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2 * half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))  # (B, dim)
    return emb


class TimeEmbedding(nn.Module):
    """Timestep t -> vector of size `dim`: sinusoids, then a small MLP. Ho et al. 2020, Appendix B.

    The MLP lets the network learn which frequencies matter; every block then reads this vector.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.dim))  # (B, dim)


class ResBlock(nn.Module):
    """Residual conv block conditioned on an embedding by scale and shift (FiLM).

    h = Conv(SiLU(GN(x))); h = GN(h) * (1 + scale) + shift; out = skip(x) + Conv(SiLU(h)).
    Ho et al. 2020 add the embedding to h; Dhariwal & Nichol 2021 (Sec. 3, "adaptive group
    normalization") found scale-shift better: the embedding can then multiply features, e.g.
    turn a channel off at high noise, not only move it. Perez et al. 2018 (FiLM).
    The last conv starts at zero, so a fresh block returns skip(x) exactly.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch))
        self.norm2 = norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        scale, shift = rearrange(self.emb_proj(emb), "b (two c) -> two b c 1 1", two=2)  # 2 x (B, C_out, 1, 1)
        h = self.norm2(h) * (1 + scale) + shift  # (B, C_out, H, W)
        h = self.conv2(self.dropout(F.silu(h)))  # (B, C_out, H, W)
        return self.skip(x) + h  # (B, C_out, H, W)


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
    Vaswani et al. 2017, Eq. (1); used for text conditioning by Rombach et al. 2022, Eq. (3).

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
    shows where in the image each word acts.
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


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 conv (learned, unlike pooling). Ho et al. 2020."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour x2, then a 3x3 conv (avoids the checkerboard of a
    transposed conv, Odena et al. 2016). Ho et al. 2020.

    `out_ch` below `ch` lets a U-Net shed channels while upsampling: the conv runs at the new,
    4x larger resolution, so producing fewer channels there is where the compute is saved.
    """

    def __init__(self, ch: int, out_ch: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(ch, out_ch or ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C_out, 2H, 2W)
