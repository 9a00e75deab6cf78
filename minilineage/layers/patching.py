"""Images and videos as sequences of patch tokens, and where each token sits (position embeddings).

A transformer reads a sequence. Dosovitskiy et al. 2021 (ViT) make one from an image by cutting it
into p x p patches and flattening each; a video is cut the same way into p_t x p x p spacetime
patches (Sora; Arnab et al. 2021, ViViT "tubelets").

The layout, fixed here once for every model of the course:
  tokens  (B, N, D), N = f * h * w, in row-major order over the (f, h, w) grid of patches:
          token n is the patch at frame n // (h w), row (n // w) % h, column n % w (f = 1 for images).
  token   D = p_t * p * p * C numbers: the patch's pixels in row-major order over (p_t, p, p, C),
          channels fastest (the layout of lucidrains' vit-pytorch and of DiT's unpatchify).
  grid    (h, w) for images, (f, h, w) for videos, returned by `patchify*` and handed back to
          `unpatchify*`, so the image size is never guessed from N.

The attention in a transformer treats its input as a set: permute the tokens and the outputs are
permuted the same way. Position embeddings are what tell it where a patch came from. All of them
here are functions of (grid, dim) computed at call time, so one model can read any grid size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minilineage.layers.embeddings import timestep_embedding


def _divisible(size: int, p: int, what: str, patch: str = "patch size") -> int:
    if p < 1:
        raise ValueError(f"{patch} must be a positive integer, got {p}")
    if size % p:
        raise ValueError(f"{what} {size} is not divisible by {patch} {p}")
    return size // p


def patchify(x: torch.Tensor, p: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Cut images into p x p patches: (B, C, H, W) -> tokens (B, N, p*p*C) and grid (h, w).

    Dosovitskiy et al. 2021, Eq. (1): x_p in R^{N x (P^2 C)}, N = HW / P^2.
    """
    if x.ndim != 4:
        raise ValueError(f"patchify expects images (B, C, H, W), got shape {tuple(x.shape)}")
    h = _divisible(x.shape[2], p, "image height")
    w = _divisible(x.shape[3], p, "image width")
    tokens = rearrange(x, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p)  # (B, h*w, p*p*C)
    return tokens, (h, w)


def unpatchify(tokens: torch.Tensor, grid: Sequence[int], p: int) -> torch.Tensor:
    """Put patch tokens back together: (B, N, p*p*C) with grid (h, w) -> images (B, C, h*p, w*p)."""
    h, w = _check_tokens(tokens, grid, 2, p * p, f"p*p = {p * p}")
    return rearrange(tokens, "b (h w) (p1 p2 c) -> b c (h p1) (w p2)", h=h, w=w, p1=p, p2=p)  # (B, C, H, W)


def patchify_video(x: torch.Tensor, p: int, p_t: int = 1) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Cut videos into p_t x p x p spacetime patches: (B, F, C, H, W) -> tokens (B, N, p_t*p*p*C), grid (f, h, w).

    p_t = 1 gives one frame per patch (each frame patchified like an image, frames one after another).
    """
    if x.ndim != 5:
        raise ValueError(f"patchify_video expects videos (B, F, C, H, W), got shape {tuple(x.shape)}")
    f = _divisible(x.shape[1], p_t, "frame count", "temporal patch size")
    h = _divisible(x.shape[3], p, "frame height")
    w = _divisible(x.shape[4], p, "frame width")
    tokens = rearrange(x, "b (f pt) c (h p1) (w p2) -> b (f h w) (pt p1 p2 c)", pt=p_t, p1=p, p2=p)  # (B, N, D)
    return tokens, (f, h, w)


def unpatchify_video(tokens: torch.Tensor, grid: Sequence[int], p: int, p_t: int = 1) -> torch.Tensor:
    """Inverse of `patchify_video`: (B, N, p_t*p*p*C) with grid (f, h, w) -> videos (B, f*p_t, C, h*p, w*p)."""
    f, h, w = _check_tokens(tokens, grid, 3, p_t * p * p, f"p_t*p*p = {p_t * p * p}")
    pattern = "b (f h w) (pt p1 p2 c) -> b (f pt) c (h p1) (w p2)"
    return rearrange(tokens, pattern, f=f, h=h, w=w, pt=p_t, p1=p, p2=p)  # (B, F, C, H, W)


def _check_tokens(tokens: torch.Tensor, grid: Sequence[int], axes: int, per_channel: int, name: str) -> tuple:
    """The grid as ints, after checking that tokens (B, N, D) fit it: N = prod(grid), D a multiple of `per_channel`."""
    grid = tuple(int(g) for g in grid)
    if len(grid) != axes:
        raise ValueError(f"grid must have {axes} sizes, got {grid}")
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be (B, N, D), got shape {tuple(tokens.shape)}")
    if tokens.shape[1] != math.prod(grid):
        raise ValueError(f"{tokens.shape[1]} tokens do not fill a grid of {' x '.join(map(str, grid))} = {math.prod(grid)}")
    if tokens.shape[2] % per_channel:
        raise ValueError(f"token width {tokens.shape[2]} is not a multiple of {name}")
    return grid


# --- position embeddings -------------------------------------------------------------------------


def grid_positions(grid: Sequence[int]) -> torch.Tensor:
    """Integer coordinates of every token, in token order: (N, len(grid)), e.g. (row, column) for (h, w)."""
    axes = [torch.arange(n) for n in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(grid))  # (N, axes)


def _scales(scale: float | Sequence[float], axes: int) -> tuple[float, ...]:
    scales = (scale,) * axes if isinstance(scale, (int, float)) else tuple(scale)
    if len(scales) != axes:
        raise ValueError(f"scale needs one number or {axes}, got {scale}")
    return scales


def _even_split(dim: int, parts: int, name: str) -> None:
    if dim % (2 * parts):
        raise ValueError(f"{name} needs dim divisible by {2 * parts} (a sine and a cosine per axis), got {dim}")


def sincos_1d(length: int, dim: int, scale: float = 1.0) -> torch.Tensor:
    """Fixed sine-cosine embeddings of positions 0 ... length-1, (length, dim). Vaswani et al. 2017, Sec. 3.5.

    The same sinusoids as the diffusion timestep (`timestep_embedding`: dim/2 cosines, then dim/2 sines,
    frequencies 10000^(-k / (dim/2))), at position n * scale. For images this reads the raster index
    n = row * w + column: neighbours across a row boundary come out as close as neighbours within a row.
    """
    _even_split(dim, 1, "sincos_1d")
    return timestep_embedding(torch.arange(length) * scale, dim)  # (length, dim)


def sincos_2d(grid: Sequence[int], dim: int, scale: float | Sequence[float] = 1.0) -> torch.Tensor:
    """Fixed 2-D sine-cosine embeddings for an (h, w) grid, (h*w, dim), in token order. MAE; DiT.

    He et al. 2022 (MAE) and Peebles & Xie 2023 (DiT): the first dim/2 channels are the 1-D
    embedding of the patch's row, the last dim/2 that of its column, so two patches in the same
    row share half their channels. Position = index * scale (per axis if two numbers): scale 1
    keeps absolute positions, scale = trained size / new size stretches a new grid over the old range.
    """
    _even_split(dim, 2, "sincos_2d")
    s_h, s_w = _scales(scale, 2)
    rows, cols = grid_positions(grid).unbind(-1)  # (N,) each
    return torch.cat([timestep_embedding(rows * s_h, dim // 2), timestep_embedding(cols * s_w, dim // 2)], dim=-1)


def sincos_3d(grid: Sequence[int], dim: int, scale: float | Sequence[float] = 1.0) -> torch.Tensor:
    """Fixed sine-cosine embeddings for an (f, h, w) spacetime grid, (f*h*w, dim), in token order.

    The split of CogVideoX (Yang et al. 2024): the first dim/4 channels encode the frame, the other
    3 dim/4 are `sincos_2d` of (row, column). At f = 1 the time part is the same for every token
    (cos 0 = 1, sin 0 = 0) and the rest is exactly `sincos_2d(grid[1:], 3 * dim // 4)`: a single
    frame is embedded like an image. dim must be a multiple of 16.
    """
    if dim % 16:
        raise ValueError(f"sincos_3d needs dim divisible by 16 (dim/4 for time, 3 dim/4 for rows and columns), got {dim}")
    s_f, s_h, s_w = _scales(scale, 3)
    frames = grid_positions(grid)[:, 0]  # (N,)
    time = timestep_embedding(frames * s_f, dim // 4)  # (N, dim/4)
    space = sincos_2d(grid[1:], 3 * dim // 4, (s_h, s_w))  # (h*w, 3 dim/4), repeated for every frame
    return torch.cat([time, space.repeat(grid[0], 1)], dim=-1)  # (f*h*w, dim)


class LearnedPositionEmbedding(nn.Module):
    """A learned vector per position 0 ... max_len-1 (Dosovitskiy et al. 2021, E_pos): forward(n) -> (n, dim).

    Any length up to max_len is covered; beyond it there is nothing to look up, and asking is an error.
    The table knows only a 1-D index: for a 2-D grid of another shape than it was trained on, the
    first n rows are the wrong places (see `resample_positions`).
    """

    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.max_len = max_len
        self.table = nn.Parameter(torch.randn(max_len, dim) * 0.02)  # ViT's init: small, so patches dominate at first

    def forward(self, n: int) -> torch.Tensor:
        if n > self.max_len:
            raise ValueError(f"learned position embeddings exist for {self.max_len} positions, asked for {n}: "
                             f"a learned table has no entry beyond its length (interpolate it, or use sincos)")
        return self.table[:n]  # (n, dim)


def resample_positions(table: torch.Tensor, grid: Sequence[int], new_grid: Sequence[int]) -> torch.Tensor:
    """A 2-D position table (h*w, D) for grid (h, w) interpolated to new_grid: (h'*w', D).

    What ViT does to fine-tune at a higher resolution (Dosovitskiy et al. 2021, Sec. 3.2): read the
    table as a D-channel h x w image and resize it (bicubic, as timm does). Each new patch gets the
    embedding of the place it covers in relative terms, i.e. the grid is stretched over the old one.
    """
    h, w = grid
    if table.shape[0] != h * w:
        raise ValueError(f"a table of {table.shape[0]} positions is not a {h} x {w} grid")
    image = rearrange(table, "(h w) d -> 1 d h w", h=h, w=w)  # (1, D, h, w)
    resized = F.interpolate(image, size=tuple(new_grid), mode="bicubic", align_corners=False)  # (1, D, h', w')
    return rearrange(resized, "1 d h w -> (h w) d")  # (h'*w', D)
