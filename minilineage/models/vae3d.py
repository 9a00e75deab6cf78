"""The spatio-temporal VAE of video latent diffusion: a clip of F frames <-> a shorter, smaller latent clip.

Sora's "video compression network" compresses time as well as space; its report gives no details,
but the open video models agree on one design (MAGVIT-v2, Yu et al. 2024; CogVideoX, Yang et al.
2024; Open-Sora): 3-D convolutions that are *causal in time*. Each one is padded only on the past
side (with copies of the first frame, as CogVideoX does), so an output frame sees the present and
earlier frames, never later ones. Strided in time, the first frame is kept alone:

    frames  F = 1 + k * s   ->   latent frames  f = 1 + k        (s = temporal_downsample, 1, 2 or 4)
    pixels  H x W           ->   latent pixels  H/4 x W/4        (two stride-2 stages, as chapter 4's LatentVAE)

Latent frame 0 encodes frame 0 alone, latent frame j the frames s(j-1)+1 .. sj given what came before.
An image is therefore a 1-frame video (F = 1 -> f = 1): one model encodes images and videos, and a
video model can be given its first frame as an image (image-to-video). Training follows chapter 4:
squared error plus a small KL pull towards N(0, I) (Rombach et al. 2022, "KL-reg.").

Videos are (B, F, C, H, W) everywhere in the package; the convolutions want (B, C, F, H, W), so
`encode` and `decode` rearrange at the door. Latents are latent videos (B, f, c, h, w).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minilineage.models.autoencoder import kl_to_standard_normal, reparameterize
from minilineage.models.latent import LatentAutoencoder


class CausalConv3d(nn.Module):
    """3-D convolution, k_t x k x k, whose output frame t sees input frames up to t only.

    Time is padded with k_t - 1 copies of the first frame in front and nothing behind; space with
    k // 2 zeros on each side as usual. With stride s in time an input of 1 + n s frames gives
    1 + n frames, output t reading frames s t - k_t + 1 .. s t (before 0: the first frame again).
    k_t = 1 is a 2-D convolution applied to every frame alone.
    """

    def __init__(self, in_ch: int, out_ch: int, time_kernel: int = 3, stride: tuple[int, int, int] = (1, 1, 1),
                 kernel: int = 3):
        super().__init__()
        self.time_pad = time_kernel - 1
        self.conv = nn.Conv3d(in_ch, out_ch, (time_kernel, kernel, kernel), stride=stride,
                              padding=(0, kernel // 2, kernel // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        past = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)  # (B, C, k-1, H, W): the first frame, held
        return self.conv(torch.cat([past, x], dim=2))  # (B, C_out, 1 + (F-1)/s_t, H/s, W/s)


class TimeUpsample(nn.Module):
    """Double the frames after the first, learnt: (B, C, 1 + n, H, W) -> (B, C, 1 + 2n, H, W).

    A causal convolution makes 2C channels per frame and each later frame's channels are split into
    two frames ("depth to time", the time version of MAGVIT-v2's depth-to-space), so the two frames
    of a pair get their own features. Frame 0 stays alone, as the encoder kept it: it keeps the
    first C channels.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv3d(channels, 2 * channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)  # (B, 2C, 1 + n, H, W)
        first = h[:, : x.shape[1], :1]  # (B, C, 1, H, W)
        later = rearrange(h[:, :, 1:], "b (two c) f h w -> b c (f two) h w", two=2)  # (B, C, 2n, H, W)
        return torch.cat([first, later], dim=2)  # (B, C, 1 + 2n, H, W)


def upsample_space(x: torch.Tensor) -> torch.Tensor:
    """Double H and W of every frame, nearest neighbour: (B, C, F, H, W) -> (B, C, F, 2H, 2W)."""
    return F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")


@dataclass
class VAE3dConfig:
    channels: int = 1
    width: int = 32  # the half-resolution stage has `width` channels, the quarter-resolution ones 2 * width
    latent_channels: int = 4
    temporal_downsample: int = 4  # s: 1 + k s frames -> 1 + k latent frames; 1, 2 or 4
    beta: float = 0.01  # weight of the KL term, small as in chapter 4: the latent keeps the detail
    frames: int = 17  # the clip size it is trained on: `latent_shape` and `sample` use it; any 1 + k s works
    size: int | tuple[int, int] = 32  # and its frame size: square, or (H, W) (UCF-101's are 3:4)

    def __post_init__(self):
        if self.temporal_downsample not in (1, 2, 4):
            raise ValueError(f"temporal_downsample must be 1, 2 or 4, got {self.temporal_downsample}")
        if not isinstance(self.size, int):
            self.size = tuple(self.size)  # a config read back from a checkpoint holds a list
            if len(self.size) != 2:
                raise ValueError(f"size must be one side or (height, width), got {self.size}")

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the training frames."""
        return (self.size, self.size) if isinstance(self.size, int) else self.size


class VAE3d(LatentAutoencoder):
    """Causal spatio-temporal VAE: (B, 1 + k s, C, H, W) <-> latents (B, 1 + k, c, H/4, W/4). Yu et al. 2024."""

    Config = VAE3dConfig

    def __init__(self, config: VAE3dConfig):
        super().__init__()
        self.config = config
        w, c, s = config.width, config.latent_channels, config.temporal_downsample
        t1, t2 = (2 if s == 4 else 1), (2 if s >= 2 else 1)  # time strides of the two compressing stages
        # The full- and half-resolution layers are 2-D (time kernel 1): there a 3 x 3 x 3 kernel would
        # cost 3 times as much where most of the pixels are. Time is mixed at quarter resolution.
        self.encoder = nn.Sequential(
            CausalConv3d(config.channels, w, 1, stride=(1, 2, 2)), nn.SiLU(),  # (B, w, F, H/2, W/2)
            CausalConv3d(w, 2 * w, stride=(t1, 2, 2)), nn.SiLU(),  # (B, 2w, 1 + (F-1) t2/s, H/4, W/4)
            CausalConv3d(2 * w, 2 * w, stride=(t2, 1, 1)), nn.SiLU(),  # (B, 2w, f, H/4, W/4)
            CausalConv3d(2 * w, 2 * c),  # (B, 2c, f, H/4, W/4): mean and log-variance
        )
        self.decoder_in = nn.Sequential(CausalConv3d(c, 2 * w), nn.SiLU(), CausalConv3d(2 * w, 2 * w), nn.SiLU())
        self.decoder_time = nn.Sequential(*[m for stride in (t2, t1) if stride == 2 for m in (TimeUpsample(2 * w), nn.SiLU())])
        self.decoder_up = nn.Sequential(CausalConv3d(2 * w, w, 1), nn.SiLU())  # after one 2x in space
        self.decoder_out = CausalConv3d(w, config.channels, 1)  # after the last 2x in space

    def check_frames(self, frames: int) -> int:
        """Latent frames of a clip of `frames`: 1 + (frames - 1) / s, or a ValueError saying what would fit."""
        s = self.config.temporal_downsample
        if frames < 1 or (frames - 1) % s:
            below = 1 + max(0, (frames - 1) // s) * s
            raise ValueError(f"a causal VAE with temporal downsampling {s} takes 1 + k*{s} frames (1, {1 + s}, "
                             f"{1 + 2 * s}, ...), got {frames}; use {below} or {below + s} frames")
        return 1 + (frames - 1) // s

    def latent_size(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(f, c, h, w) of the latents of clips (frames, C, height, width); ValueError if they do not fit."""
        f = self.check_frames(frames)
        if height % 4 or width % 4 or min(height, width) < 4:
            raise ValueError(f"frame size {height}x{width} must be divisible by 4 (two stride-2 stages)")
        return (f, self.config.latent_channels, height // 4, width // 4)

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """(f, c, h, w) for the training clip size: (5, 4, 8, 8) for 17 frames of 32 x 32, 1,280 numbers for 17,408 pixels."""
        return self.latent_size(self.config.frames, *self.config.frame_size)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The parameters of q(z | x) for videos (B, F, C, H, W): mean and log-variance, each (B, f, c, H/4, W/4)."""
        if x.ndim != 5 or x.shape[2] != self.config.channels:
            raise ValueError(f"expected videos (B, F, {self.config.channels}, H, W), got {tuple(x.shape)}")
        self.latent_size(x.shape[1], x.shape[3], x.shape[4])
        h = self.encoder(rearrange(x, "b f c h w -> b c f h w"))  # (B, 2c, f, H/4, W/4)
        mu, logvar = rearrange(h, "b (two c) f h w -> two b f c h w", two=2)  # 2 x (B, f, c, H/4, W/4)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent videos (B, f, c, h, w) -> videos (B, 1 + (f-1) s, C, 4h, 4w). Causal too: frame t reads latents up to its own."""
        if z.ndim != 5 or z.shape[2] != self.config.latent_channels:
            raise ValueError(f"expected latents (B, f, {self.config.latent_channels}, h, w), got {tuple(z.shape)}")
        h = self.decoder_in(rearrange(z, "b f c h w -> b c f h w"))  # (B, 2w, f, h, w)
        h = self.decoder_time(h)  # (B, 2w, 1 + (f-1) s, h, w)
        h = self.decoder_up(upsample_space(h))  # (B, w, F, 2h, 2w)
        h = self.decoder_out(upsample_space(h))  # (B, C, F, 4h, 4w)
        return rearrange(h, "b c f h w -> b f c h w")  # (B, F, C, H, W)


def vae3d_loss(model: VAE3d, batch: dict, generator: torch.Generator) -> torch.Tensor:
    """Negative ELBO per clip with a weighted KL: sum of squared errors + beta * KL(q(z|x) || N(0, I))."""
    x = batch["x"]  # (B, F, C, H, W)
    mu, logvar = model.encode(x)
    x_hat = model.decode(reparameterize(mu, logvar, generator))
    reconstruction = (x_hat - x).pow(2).flatten(1).sum(dim=1)  # (B,)
    kl = kl_to_standard_normal(mu.flatten(1), logvar.flatten(1))  # (B,), summed over f * c * h * w latent numbers
    return (reconstruction + model.config.beta * kl).mean()
