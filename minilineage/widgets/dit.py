"""Chapter 5 and 6 widgets: what a DiT recovers from noisy tokens, and its reverse process as a grid of tokens.

A DiT never sees an image, only N tokens in an h x w grid. `token_player` runs one sampling
trajectory up front and shows, at every step, the noisy input x_t cut into its tokens and the
model's prediction of the clean image cut along the same token boundaries: each cell is what one
token stands for, and the grid sharpens cell by cell. Frames are precomputed and jslinked
(`FramePlayer`), so the player works in an exported HTML page with no kernel.

`denoised_tokens` (chapter 5's bridge to chapter 6) takes no sampling steps: for real images noised to a
chosen t, it shows the tokens x_t and the clean image one network call predicts from them, given the
true label and given none, token by token. Precomputed and jslinked too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange

from minilineage.diffusion import NoiseSchedule, predict_x0, q_sample, randn

from .diffusion import noise_caption
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


def x0_prediction(model, xt: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
    """One call of a DDPM-objective pipeline's network: x0_hat = (x_t - sqrt(1 - alpha_bar) eps_hat) / sqrt(alpha_bar),
    Ho et al. 2020, Eq. (15), clipped to [-1, 1]. t: (B,) step indices."""
    sched: NoiseSchedule = model.sched.to(xt.device)
    return predict_x0(sched, xt, t, model.predict_eps(xt, t, **cond)).clamp(-1, 1)


@torch.no_grad()
def denoised_tokens(model, x0: torch.Tensor, labels: Sequence[int] | torch.Tensor,
                    timesteps: Sequence[int] = (50, 200, 400, 600, 800, 900, 950, 990),
                    generator: torch.Generator | None = None, scale: int = 3) -> FramePlayer:
    """Pick t: real images noised to x_t, cut into a DiT's tokens, and what its network recovers from them in one call.

    model: a pixel-space `DiffusionPipeline` with a DDPM objective ("eps", "v") and a DiT denoiser (`config.patch`).
    Four columns per frame, every image cut along the token boundaries: x_t | x0_hat given the true label |
    x0_hat given the null label (no class) | x0. x_t = q_sample(x0, t, eps) with one eps for every t (Ho et al.
    2020, Eq. 4); each caption gives t, alpha_bar, SNR and the mean squared error of both predictions.
    """
    if model.autoencoder is not None:
        raise ValueError("denoised_tokens shows pixel tokens: pass a pixel-space DiT, not a latent one")
    p, n = model.net.config.patch, len(x0)
    labels = torch.as_tensor(labels)
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    eps = randn(tuple(x0.shape), generator, x0.device)
    sched = model.sched.to(x0.device)
    noisy, with_label, without, captions = [], [], [], []
    for t_value in timesteps:
        t = torch.full((n,), t_value, device=x0.device)
        xt = q_sample(sched, x0, t, eps)  # (B, C, H, W)
        guess = x0_prediction(model, xt, t, y=labels)
        blind = x0_prediction(model, xt, t, y=torch.full_like(labels, model.net.null_label))
        noisy.append(_column(xt, p))
        with_label.append(_column(guess, p))
        without.append(_column(blind, p))
        errors = [(z - x0).square().mean().item() for z in (guess, blind)]
        captions.append(f"{noise_caption(model.sched, t_value)} · squared error per pixel of x̂0: "
                        f"{errors[0]:.3f} with the label, {errors[1]:.3f} without")
    clean = [_column(x0, p)] * len(timesteps)
    return FramePlayer.from_panels([noisy, with_label, without, clean],
                                   titles=["x_t as tokens", "x̂0, given the label", "x̂0, no label", "x0"],
                                   captions=captions, scale=scale, description="t")
