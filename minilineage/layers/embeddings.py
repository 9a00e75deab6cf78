"""Embeddings of the diffusion timestep: sinusoids, then a small MLP."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


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
