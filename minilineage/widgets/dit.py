"""Chapter 6 widget: the reverse process of a DiT shown as the grid of tokens it works on.

A DiT never sees an image, only N tokens in an h x w grid. `token_player` runs one sampling
trajectory up front and shows, at every step, the noisy input x_t cut into its tokens and the
model's prediction of the clean image cut along the same token boundaries: each cell is what one
token stands for, and the grid sharpens cell by cell. Frames are precomputed and jslinked
(`FramePlayer`), so the player works in an exported HTML page with no kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange

from .images import grid
from .player import FramePlayer
from .vit import patch_mosaic


def token_tiles(x: torch.Tensor, p: int) -> torch.Tensor:
    """What the tokens of x (B, C, H, W) hold, drawn as images (B, C', H', W') for `patch_mosaic` with patch p'.

    Pixels (C = 1 or 3): the image itself, each token a p x p patch. Latents (C = 4): each position
    drawn as a 2 x 2 square of its four channels, so a token is a 2p x 2p square of its 4 p^2 numbers,
    scaled from the latents' unit variance to [-1, 1]. Returns the images and p'.
    """
    if x.shape[1] in (1, 3):
        return x, p
    if x.shape[1] != 4:
        raise ValueError(f"token_tiles draws 1-, 3- or 4-channel inputs, got {x.shape[1]} channels")
    tiles = rearrange(x, "b (c1 c2) h w -> b 1 (h c1) (w c2)", c1=2, c2=2)  # (B, 1, 2H, 2W)
    return (tiles / 2.5).clamp(-1, 1), 2 * p


def _column(images: torch.Tensor, p: int, gap: int = 1) -> torch.Tensor:
    """A batch (B, C, H, W) in [-1, 1] cut into p x p tokens, one image per row: uint8 (C, H', W')."""
    return grid(torch.stack([patch_mosaic(image, p, gap) for image in images.clamp(-1, 1)]), nrow=1, padding=3)


def _caption(t, step: int, steps: int, tokens: int) -> str:
    time = f"t = {t:.3f} (rectified flow)" if isinstance(t, float) else f"t = {t}"
    return f"step {step + 1} of {steps} · {time} · {tokens} tokens, each cell one token"


@torch.no_grad()
def token_player(model, labels: Sequence[int] | torch.Tensor = (0, 3, 7), steps: int = 20, seed: int = 0,
                 guidance: float | None = None, scale: int = 4) -> FramePlayer:
    """Play a DiT's reverse process token by token: x_t in tokens | predicted image in the same token grid.

    model: a `DiffusionPipeline` whose denoiser has a `config.patch` (a DiT), on pixels or on the
    latents of an autoencoder (then the prediction is decoded, and each token covers the pixels
    its latent patch decodes to). One row per label; `steps` sampler steps from pure noise.
    """
    p = model.net.config.patch
    labels = torch.as_tensor(labels)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    images, frames = model.sample(len(labels), generator, labels=labels, steps=steps, guidance=guidance,
                                  trajectory=True)
    h, w = frames[0]["xt"].shape[-2] // p, frames[0]["xt"].shape[-1] // p
    pixel_patch = images.shape[-1] // w  # the pixels one token covers in the decoded image
    noisy, clean, captions = [], [], []
    for k, frame in enumerate(frames):
        tiles, tile_p = token_tiles(frame["xt"], p)
        zoom = max(1, pixel_patch // tile_p)  # draw a token as large as the pixels it stands for
        tiles = tiles.repeat_interleave(zoom, dim=-2).repeat_interleave(zoom, dim=-1)
        noisy.append(_column(tiles, tile_p * zoom))
        decoded = model.decode(frame["x0_hat"].to(model.device)).cpu()  # (B, C, H, W) pixels
        clean.append(_column(decoded, pixel_patch))
        captions.append(_caption(frame["t"], k, len(frames), h * w))
    final = _column(images.cpu(), pixel_patch)
    noisy.append(noisy[-1])
    clean.append(final)
    captions.append(f"the sample: {h * w} tokens put back together")
    return FramePlayer.from_panels([noisy, clean], titles=["x_t as tokens", "predicted image, token by token"],
                                   captions=captions, scale=scale, description="step")
