"""A Vision Transformer classifier (Dosovitskiy et al. 2021): an image read as a sequence of patch tokens.

patches -> linear embedding -> + position embedding -> pre-norm transformer blocks -> mean -> class.

Choices, each the simpler one that works at MNIST scale (Beyer et al. 2022, "Better plain ViT
baselines", also use fixed 2-D sin-cos positions and mean pooling):
- Patch embedding: a linear layer on `patchify`'d pixels. A Conv2d with kernel = stride = p is the
  same map (the chapter checks it); the linear form shows that a token is just a flattened patch.
- Pooling: the mean of the output tokens, not a class token. One rule for every sequence length,
  and without position embeddings the model is exactly invariant to the order of the patches.
- Position embedding (config `pos_embed`): "sincos" (fixed 2-D, computed for whatever grid comes in),
  "learned" (a table for the training grid only), or "none".

Any image whose sides divide by the patch size is a valid input: a different resolution is only a
different number of tokens. What the positions of the new tokens should be is a choice `forward`
makes explicit through its `pos` argument (see `position_embedding`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from minilineage.layers import LearnedPositionEmbedding, TransformerBlock, patchify, sincos_2d

POSITION_EMBEDDINGS = ("sincos", "learned", "none")


@dataclass
class ViTConfig:
    image_size: int = 28  # the training resolution: it sets the learned table's grid
    channels: int = 1
    patch: int = 4  # p: 28 x 28 pixels -> a 7 x 7 grid of 49 tokens of p * p * C = 16 numbers
    width: int = 64  # D
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 10
    pos_embed: str = "sincos"  # one of POSITION_EMBEDDINGS

    def __post_init__(self):
        if self.pos_embed not in POSITION_EMBEDDINGS:
            raise ValueError(f"unknown pos_embed {self.pos_embed!r}; choose one of: {', '.join(POSITION_EMBEDDINGS)}")
        if self.image_size % self.patch:
            raise ValueError(f"image size {self.image_size} is not divisible by patch size {self.patch}")

    @property
    def grid(self) -> tuple[int, int]:
        """The (h, w) grid of patches at the training resolution."""
        side = self.image_size // self.patch
        return side, side


class ViT(nn.Module):
    """Vision Transformer classifier: images (B, C, H, W) in [-1, 1] -> class logits (B, num_classes)."""

    Config = ViTConfig

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        D = config.width
        self.embed = nn.Linear(config.patch * config.patch * config.channels, D)  # E in Eq. (1)
        if config.pos_embed == "learned":
            h, w = config.grid
            self.pos = LearnedPositionEmbedding(h * w, D)
        self.blocks = nn.ModuleList(TransformerBlock(D, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, config.num_classes)
        self.initialize_weights()

    def initialize_weights(self):
        # DiT / MAE: Xavier-uniform weights and zero biases in every linear layer. It keeps a patch's
        # embedding about as large as a sine-cosine position (rms 0.7), so neither drowns the other
        # (timm's std 0.02 makes the patches 10x smaller than the positions). The head starts at zero:
        # every class at p = 1/10.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.head.weight)

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor | None:
        """The model's own position embedding for a grid of patches, (h*w, D), or None for "none".

        "sincos": computed for any grid, at absolute positions (row i is row i at every size).
        "learned": only the training grid has one. Another grid has no defined answer: a 9 x 9 grid
        has 81 positions the table never learned, and the first 25 of 49 entries are not a 5 x 5
        grid. Pass `pos=resample_positions(...)` to `forward` to choose one on purpose.
        """
        if self.config.pos_embed == "none":
            return None
        if self.config.pos_embed == "sincos":
            return sincos_2d(grid, self.config.width).to(self.embed.weight.device)
        if tuple(grid) != self.config.grid:
            raise ValueError(f"this ViT learned position embeddings for a {self.config.grid[0]} x {self.config.grid[1]} "
                             f"grid, not {grid[0]} x {grid[1]}; pass pos=resample_positions(model.pos.table, "
                             f"{self.config.grid}, {tuple(grid)}) to interpolate them")
        return self.pos(grid[0] * grid[1])

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits for images x (B, C, H, W), H and W divisible by the patch size.

        pos: a position embedding (N, D) to use instead of the model's own (e.g. stretched or
        interpolated for another resolution).
        """
        tokens, grid = patchify(x, self.config.patch)  # (B, N, p*p*C), grid (h, w)
        h = self.embed(tokens)  # (B, N, D)
        pos = self.position_embedding(grid) if pos is None else pos
        if pos is not None:
            if pos.shape != h.shape[1:]:
                raise ValueError(f"pos must be (N, D) = {tuple(h.shape[1:])} for this input, got {tuple(pos.shape)}")
            h = h + pos  # (B, N, D)
        for block in self.blocks:
            h = block(h)  # (B, N, D)
        return self.head(self.norm(h).mean(dim=1))  # (B, D) -> (B, num_classes)
