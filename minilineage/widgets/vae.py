"""Chapter 2 widgets: look inside a VAE by sampling q(z | x), walking the latent axes, and varying beta.

Each widget runs the model once, up front, and hands the frames to a `FramePlayer`, so it plays
in a static HTML page. They need only `vae.encode(x) -> (mu, logvar)` and `vae.decode(z)`, so a
test can pass a fake. Put the model in eval mode first; nothing here changes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from einops import rearrange

from minilineage.diffusion import randn
from minilineage.models.autoencoder import kl_to_standard_normal

from .images import grid
from .player import FramePlayer


def _check_batch(x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of images (B, C, H, W), got shape {tuple(x.shape)}")


def _default_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator:
    """The generator to use; None means a fresh one seeded with 0, so a notebook cell is repeatable."""
    return torch.Generator(device=device).manual_seed(0) if generator is None else generator


@torch.no_grad()
def posterior_sampler(
    vae,
    x: torch.Tensor,
    temperatures: Sequence[float] = (0.0, 0.5, 1.0, 1.5, 2.0),
    n_draws: int = 8,
    generator: torch.Generator | None = None,
    scale: int = 2,
) -> FramePlayer:
    """Encode -> z = mu + T sigma eps -> decode, with a slider over the temperature T.

    Sampling q(z | x) = N(mu, sigma^2) with the reparameterisation trick (Kingma & Welling 2014,
    Sec. 2.4), the noise scaled by T: T = 0 decodes the mean, T = 1 the true posterior. The same
    eps (n_draws per digit) is used at every T, so the slider only turns the spread up. Each
    frame: the inputs, one digit per row | n_draws decodings of that digit along the row.
    """
    _check_batch(x)
    generator = _default_generator(generator, x.device)
    mu, logvar = vae.encode(x)  # (B, D) each
    sigma = torch.exp(0.5 * logvar)
    eps = randn((n_draws, *mu.shape), generator, x.device)  # (n, B, D)
    inputs, decodings = [], []
    for T in temperatures:
        z = mu + T * sigma * eps  # (n, B, D), broadcast over the n draws
        x_hat = vae.decode(rearrange(z, "n b d -> (b n) d"))  # (B * n, C, H, W), digit-major
        inputs.append(grid(x, nrow=1))  # (C, B*(H+2)+2, W+4)
        decodings.append(grid(x_hat, nrow=n_draws))  # (C, B*(H+2)+2, n*(W+2)+2): one digit per row
    captions = [f"temperature {float(T):g}: z = μ + {float(T):g}·σ·ε" for T in temperatures]
    player = FramePlayer.from_panels(
        [inputs, decodings],
        titles=["input x", f"{n_draws} decodings of z ~ q(z | x)"],
        captions=captions,
        scale=scale,
        description="T",
    )
    player.slider.readout = False  # the slider moves an index; the caption says the temperature
    return player


@torch.no_grad()
def traversal_player(
    vae,
    x_or_z: torch.Tensor,
    dims: Sequence[int] | None = None,
    values: Sequence[float] | torch.Tensor | None = None,
    scale: int = 3,
) -> FramePlayer:
    """Latent traversal: decode z with one coordinate z_d set to a value, a slider over the value.

    Higgins et al. 2017 (beta-VAE), Fig. 1. x_or_z: images (B, C, H, W) or (C, H, W), encoded to
    their mean codes, or codes (B, D) or (D,). Each frame holds one row per dimension in `dims`
    (default the first 8) and one column per code: row i is the codes with z[dims[i]] = value,
    every other coordinate kept. values default to 13 points in [-3, 3] (the prior's +-3 sigma).
    """
    z = x_or_z
    if z.ndim in (3, 4):
        z = vae.encode(z if z.ndim == 4 else z[None])[0]  # the mean code mu, (B, D)
    elif z.ndim == 1:
        z = z[None]  # (1, D)
    elif z.ndim != 2:
        raise ValueError(
            f"x_or_z must be images (B, C, H, W) or codes (B, D), got shape {tuple(z.shape)}"
        )
    D = z.shape[1]
    dims = list(range(min(D, 8))) if dims is None else [int(d) for d in dims]
    if not dims or not all(0 <= d < D for d in dims):
        raise ValueError(f"dims must be latent dimensions in [0, {D - 1}], got {dims}")
    values = (
        torch.linspace(-3, 3, 13)
        if values is None
        else torch.as_tensor(values, dtype=torch.float32)
    )
    frames = []
    for value in values.tolist():
        zs = z.repeat(len(dims), 1, 1)  # (R, B, D): one copy of the codes per row
        zs[torch.arange(len(dims)), :, dims] = value  # paired indices: row r sets only z[dims[r]]
        x_hat = vae.decode(rearrange(zs, "r b d -> (r b) d"))  # (R * B, C, H, W), row-major
        frames.append(grid(x_hat, nrow=z.shape[0]))
    rows = ", ".join(str(d) for d in dims)
    captions = [
        f"z_d = {value:+.2f} in the row of each d = {rows}; other coordinates kept"
        for value in values.tolist()
    ]
    player = FramePlayer(frames, captions=captions, scale=scale, description="z_d")
    player.slider.readout = False
    return player


def _knob(beta: float, vae) -> str:
    """'β = 0.1', or 'β = 0.1 (β = 1 at σ² = 0.05)' for a model trained at another decoder variance."""
    config = getattr(vae, "config", None)
    var = getattr(config, "decoder_var", 0.5)
    return f"β = {beta:g}" if var == 0.5 else f"β = {beta:g} (β = {config.beta:g} at σ² = {var:g})"


@torch.no_grad()
def beta_player(
    models_by_beta: Mapping[float, torch.nn.Module],
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    samples_per_row: int = 6,
    scale: int = 2,
) -> FramePlayer:
    """VAEs trained with different beta, side by side: a slider over beta, smallest first.

    The beta-VAE objective: reconstruction + beta * KL(q(z | x) || N(0, I)) (Higgins et al. 2017).
    Small beta: sharp reconstructions but codes that ignore the prior, so prior samples are poor;
    large beta: the reverse. Each frame: inputs | reconstructions decode(mu) | prior samples
    decode(z), z ~ N(0, I). Every model decodes the same z (when latent sizes match), so only
    the model changes. The caption gives the reconstruction MSE (pixels in [0, 1]) and the KL.
    Only 2 sigma^2 beta matters (sigma^2 the decoder variance), so the keys are the beta at
    sigma^2 = 1/2; a model trained at another `config.decoder_var` says so in its caption.
    """
    _check_batch(x)
    if not models_by_beta:
        raise ValueError("beta_player needs at least one model")
    generator = _default_generator(generator, x.device)
    start = generator.get_state()
    inputs, reconstructions, samples, captions = [], [], [], []
    for beta in sorted(models_by_beta):
        vae = models_by_beta[beta]
        mu, logvar = vae.encode(x)  # (B, D) each
        generator.set_state(start)  # the same z for every model
        z = randn((len(x) * samples_per_row, mu.shape[1]), generator, x.device)
        x_hat = vae.decode(mu).clamp(-1, 1)
        inputs.append(grid(x, nrow=1))
        reconstructions.append(grid(x_hat, nrow=1))
        samples.append(grid(vae.decode(z), nrow=samples_per_row))  # as many rows as inputs
        kl = kl_to_standard_normal(mu, logvar).mean().item()
        mse = (
            ((x_hat - x) / 2).pow(2).mean().item()
        )  # on the [0, 1] pixel scale, as students quote it
        captions.append(f"{_knob(beta, vae)} · reconstruction MSE {mse:.4f} · KL {kl:.1f} nats")
    player = FramePlayer.from_panels(
        [inputs, reconstructions, samples],
        titles=["input x", "decode(μ)", "prior samples"],
        captions=captions,
        scale=scale,
        description="β",
    )
    player.slider.readout = False
    return player
