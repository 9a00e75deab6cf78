"""Convolutional blocks of the U-Net: the time-conditioned residual block, down- and upsampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minilineage.layers.common import norm, zero_init


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
