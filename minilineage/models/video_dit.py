"""The video Diffusion Transformer: chapter 6's DiT reading spacetime patches with 3-D positions.

    latent video (B, f, C, h, w) -> p_t x p x p spacetime patches -> linear -> + sin-cos (frame, row, column)
        -> N = (f / p_t)(h / p)(w / p) tokens (B, N, D) -> the DiT blocks of chapter 6, unchanged
        -> linear to p_t p p C numbers per token -> unpatchify -> (B, f, C, h, w)

This is the step the Sora report describes: turn videos of any size and duration into a sequence of
"spacetime patches" and let a transformer denoise the sequence (OpenAI 2024, "Video generation
models as world simulators"). Nothing in the blocks knows about time. Every token attends to every
other one, in its own frame and in the others, so frames are denoised together rather than one at a
time, which is what makes the clip coherent. Where a token sits in space and time is told only by
its position embedding, a fixed function of (frame, row, column) (`sincos_3d`, the split of
CogVideoX, Yang et al. 2024): a grid of another size or length is just another sequence, with no
table to outgrow.

Per-frame timesteps t (B, f) give every token its own frame's conditioning vector (the DiT's
`condition`): a frame given clean (t = 0) beside frames being generated is how one model serves
image-to-video, extension, interpolation and merging (Open-Sora's frame masks). A token then must
belong to one frame, so per-frame timesteps need p_t = 1 (the default, as CogVideoX 1.0 on its
4x-compressed latents); p_t > 1 works with one timestep per clip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from minilineage.layers import patchify_video, sincos_3d, unpatchify_video
from minilineage.models.dit import DiT, DiTConfig, FinalLayer


@dataclass
class VideoDiTConfig(DiTConfig):
    patch_t: int = 1  # p_t: latent frames per spacetime patch

    def __post_init__(self):
        super().__post_init__()
        if self.width % 16:
            raise ValueError(f"width {self.width} must be divisible by 16 (sin-cos for frame, row and column)")
        if self.patch_t < 1:
            raise ValueError(f"patch_t must be a positive integer, got {self.patch_t}")


class VideoDiT(DiT):
    """Noise predictor for videos (B, F, C, H, W) with per-clip t (B,) or per-frame t (B, F). Peebles & Xie 2023; Sora."""

    Config = VideoDiTConfig

    def __init__(self, config: VideoDiTConfig):
        super().__init__(config)
        # DiT sized its patch embedding for p x p patches; a spacetime patch holds p_t times more.
        self.embed = nn.Linear(config.patch_t * config.patch**2 * config.in_channels, config.width)
        self.initialize_weights()

    def make_final(self, out_dim: int) -> nn.Module:
        return FinalLayer(self.config.width, self.config.patch_t * out_dim)  # p_t p p C_out numbers per token

    def patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Videos (B, F, C, H, W) -> tokens (B, N, p_t*p*p*C) and grid (f, h, w); ValueError on bad sizes."""
        if x.ndim != 5 or x.shape[2] != self.config.in_channels:
            raise ValueError(f"expected videos of shape (B, F, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        return patchify_video(x, self.config.patch, self.config.patch_t)

    def position_embedding(self, grid: Sequence[int]) -> torch.Tensor:
        """Fixed 3-D sin-cos positions for this (f, h, w) grid: (N, D). A 1-frame grid is embedded like an image."""
        return sincos_3d(grid, self.config.width).to(self.embed.weight.device)

    def unpatchify(self, tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        return unpatchify_video(tokens, grid, self.config.patch, self.config.patch_t)  # (B, F, C, H, W)

    def forward(self, x, t, y=None, context=None, context_mask=None) -> torch.Tensor:
        """x: (B, F, C, H, W), t: (B,), (B, F) or a scalar -> eps_hat (B, F, C_out, H, W)."""
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 2 and self.config.patch_t != 1:
            raise ValueError(f"per-frame timesteps need patch_t = 1 (a token within one frame), got patch_t = "
                             f"{self.config.patch_t}")
        return super().forward(x, t, y, context, context_mask)


# Named sizes for moving-mnist latents (5 x 4 x 8 x 8 with patch 2: 80 tokens) on a CPU, and bigger on a GPU.
VIDEO_DIT_SIZES: dict[str, dict] = {
    "S": {"width": 96, "depth": 6, "heads": 4, "patch": 2},
    "B": {"width": 192, "depth": 8, "heads": 6, "patch": 2},
}
