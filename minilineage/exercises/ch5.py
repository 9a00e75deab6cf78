"""Chapter 5 (ViT patching): exercises and their reference answers."""

from __future__ import annotations

import torch

from minilineage.exercises.core import close_to, register
from minilineage.layers import patchify, sincos_1d, sincos_2d


def _token_shape(shape) -> bool:
    return tuple(shape) == tuple(patchify(torch.zeros(1, 3, 32, 32), 4)[0].shape[1:])


register("ch5.token_shape", _token_shape, "N = H W / p^2 tokens, and a token holds p * p * C numbers",
         solution=((32 // 4) ** 2, 4 * 4 * 3), wrong=(64, 16))


def _patchifies(my_patchify) -> bool:
    """The student's p = 4 patchify (reshape and permute only) gives the package's tokens, in its order."""
    x = torch.randn(3, 2, 28, 28, generator=torch.Generator().manual_seed(0))
    return close_to(patchify(x, 4)[0])(my_patchify(x))


def patchify_by_hand(x):
    B, C, H, W = x.shape
    return (x.reshape(B, C, H // 4, 4, W // 4, 4)  # (B, C, h, p1, w, p2)
            .permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p1, p2, C)
            .reshape(B, (H // 4) * (W // 4), 4 * 4 * C))  # (B, N, p p C)


register("ch5.patchify", _patchifies, "split H into (h, p) and W into (w, p), move h and w next to the batch with the "
         "channels last, then flatten", solution=patchify_by_hand,
         wrong=lambda x: x.reshape(x.shape[0], -1, 16 * x.shape[1]))

register("ch5.attention_crossover", close_to(384), "set 4 N^2 D = 24 N D^2 and solve for N", solution=6 * 64)


def _builds_2d(my_sincos_2d) -> bool:
    return all(close_to(sincos_2d((h, w), d), atol=1e-6)(my_sincos_2d(h, w, d)) for h, w, d in ((3, 5, 16), (4, 2, 8)))


def sincos_2d_by_hand(h, w, dim):
    rows, cols = torch.arange(h).repeat_interleave(w), torch.arange(w).repeat(h)  # (h w,) each, token order
    return torch.cat([sincos_1d(h, dim // 2)[rows], sincos_1d(w, dim // 2)[cols]], dim=1)  # (h w, dim)


register("ch5.sincos_2d", _builds_2d, "the first D/2 channels are the 1-D embedding (of width D/2) of the row, the "
         "last D/2 of the column, in row-major token order", solution=sincos_2d_by_hand)


# The binomial standard error of an accuracy: sqrt(p (1 - p) / n) at p = 0.952, n = 250.
register("ch5.standard_error", close_to((0.952 * 0.048 / 250) ** 0.5, rtol=0.03),
         "the number of right answers is binomial: its variance is n p (1 - p); divide its square root by n",
         solution=round((0.952 * 0.048 / 250) ** 0.5, 4), wrong=0.952 * 0.048 / 250)
