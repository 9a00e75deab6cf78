"""Chapter 7 (video): exercises and their reference answers."""

from __future__ import annotations

import torch

from minilineage.exercises.core import close_to, register
from minilineage.models.vae3d import CausalConv3d
from minilineage.recipes.video import reconstruction_figures

register("ch7.latent_frames", close_to(9), "a causal VAE keeps frame 0 alone and folds every later group of s = 4 "
         "frames into one latent frame: f = 1 + (F - 1) / s", solution=1 + (33 - 1) // 4, wrong=33 // 4)

register("ch7.tokens", close_to(324), "latent frames 1 + 32 / 4, latent side 48 / 4 = 12, then 12 / 2 patches per "
         "side: f * (h / p) * (w / p)", solution=(1 + 32 // 4) * (48 // 4 // 2) ** 2, wrong=33 * 24 * 24 // 4)


def _pads_causally(my_pad) -> bool:
    """The student's time padding gives the package's CausalConv3d output when fed to the same convolution."""
    torch.manual_seed(0)
    layer = CausalConv3d(2, 3, time_kernel=3)
    x = torch.randn(1, 2, 5, 4, 4, generator=torch.Generator().manual_seed(1))  # (B, C, F, H, W)
    return close_to(layer(x), atol=1e-6)(layer.conv(my_pad(x, 3)))


def causal_pad_by_hand(x, kernel):
    past = x[:, :, :1].repeat(1, 1, kernel - 1, 1, 1)  # (B, C, k-1, H, W): the first frame, held
    return torch.cat([past, x], dim=2)  # (B, C, k-1+F, H, W)


register("ch7.causal_pad", _pads_causally, "put k - 1 copies of the FIRST frame in front of the clip along the time "
         "axis (dim 2) and nothing after it", solution=causal_pad_by_hand,
         wrong=lambda x, k: torch.nn.functional.pad(x, (0, 0, 0, 0, (k - 1) // 2, (k - 1) // 2), mode="replicate"))


def _interpolation_mask(my_mask) -> bool:
    for f in (2, 5, 9):
        expected = torch.zeros(3, f, dtype=torch.bool)
        expected[:, 0] = expected[:, -1] = True
        mask = my_mask(3, f)
        if mask.dtype != torch.bool or not torch.equal(mask, expected):
            return False
    return True


def interpolation_mask_by_hand(n, f):
    index = torch.arange(f)
    return ((index == 0) | (index == f - 1)).expand(n, f).clone()  # (n, f): first and last given


register("ch7.interpolation_mask", _interpolation_mask, "a bool (n, f) tensor, True where a frame is given: the "
         "first and the last", solution=interpolation_mask_by_hand,
         wrong=lambda n, f: torch.arange(f).expand(n, f) == 0)


def _flicker(my_flicker) -> bool:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 6, 1, 8, 8, generator=g) * 2 - 1
    x_hat = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    return close_to(reconstruction_figures(x, x_hat)["flicker"], rtol=1e-4)(float(my_flicker(x, x_hat)))


def flicker_by_hand(x, x_hat):
    change = (x_hat[:, 1:] - x_hat[:, :-1]) - (x[:, 1:] - x[:, :-1])  # (N, F-1, C, H, W)
    return change.double().square().mean().sqrt()


register("ch7.flicker", _flicker, "take the frame-to-frame change of the reconstruction minus that of the input, "
         "then the root mean square", solution=flicker_by_hand,
         wrong=lambda x, x_hat: (x_hat - x).square().mean().sqrt())
