"""Image helpers for the widgets: model tensors -> uint8 pixels -> PNG bytes.

Models work on float images in [-1, 1], shape (B, C, H, W); browsers want PNG bytes. Everything a
widget shows goes through `to_pixels` and `png_bytes`, so a test can compute exactly the bytes a
widget should show.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from einops import rearrange
from PIL import Image
from torchvision.utils import make_grid

from minilineage.data import to_uint8

# White, like the page around the widgets: padding between tiles and panels reads as empty space.
PAD_VALUE = 255


def uint8_chw(images) -> torch.Tensor:
    """Images as uint8, channels first (`data.to_uint8`), checked to be something a page can show.

    Accepts tensors or numpy arrays of shape (H, W), (C, H, W) or (B, C, H, W), either float in
    [-1, 1] (clamped) or already uint8; a list of (C, H, W) images is stacked into a batch.
    """
    if isinstance(images, (list, tuple)):
        images = torch.stack([uint8_chw(image) for image in images])
    x = to_uint8(images)
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"expected (H, W), (C, H, W) or (B, C, H, W), got shape {tuple(x.shape)}")
    if x.ndim >= 3 and x.shape[-3] not in (1, 3, 4):
        raise ValueError(
            f"expected 1, 3 or 4 channels first, got shape {tuple(x.shape)} (channels-last input?)"
        )
    return x


def to_pixels(images) -> np.ndarray:
    """Images as uint8 numpy pixels, channels last, as image files want them: (C, H, W) -> (H, W, C),
    or (H, W) if C = 1. A batch (B, C, H, W) gives (B, H, W, C) or (B, H, W). Float input is read as [-1, 1].
    """
    x = uint8_chw(images)
    if x.ndim == 2:
        return x.numpy()
    x = rearrange(x, "... c h w -> ... h w c")
    if x.shape[-1] == 1:
        x = x[..., 0]  # (..., H, W): grayscale PNGs are a third the size of RGB ones
    return np.ascontiguousarray(x.numpy())


def grid(images, nrow: int = 8, padding: int = 2) -> torch.Tensor:
    """A batch (B, C, H, W) tiled into one uint8 image (C, H', W'), `nrow` images per row.

    Thin wrapper over `torchvision.utils.make_grid` that keeps grayscale images grayscale.
    """
    x = uint8_chw(images)
    if x.ndim != 4:
        raise ValueError(f"grid expects a batch (B, C, H, W), got shape {tuple(x.shape)}")
    tiled = make_grid(x, nrow=nrow, padding=padding, pad_value=PAD_VALUE)  # (3, H', W') if C = 1
    return tiled[: x.shape[1]]


def side_by_side(panels: Sequence, gap: int = 2) -> np.ndarray:
    """Several images of equal height laid left to right with `gap` white columns between them.

    Each panel is anything `to_pixels` accepts, or a batch (tiled with `grid`). Returns (H, W[, C]).
    """
    arrays = [to_pixels(grid(p)) if uint8_chw(p).ndim == 4 else to_pixels(p) for p in panels]
    heights = {a.shape[0] for a in arrays}
    if len(heights) != 1:
        raise ValueError(f"panels must have the same height, got heights {[a.shape[0] for a in arrays]}")
    if any(a.ndim == 3 for a in arrays):  # mixed gray and colour: promote everything to RGB
        arrays = [np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a[..., :3] for a in arrays]
    spacer = np.full((arrays[0].shape[0], gap, *arrays[0].shape[2:]), PAD_VALUE, dtype=np.uint8)
    pieces = [piece for a in arrays for piece in (a, spacer)][:-1]
    return np.concatenate(pieces, axis=1)


def png_bytes(image, scale: int = 4) -> bytes:
    """One image encoded as PNG, enlarged `scale` times with nearest-neighbour pixels.

    Nearest-neighbour keeps every pixel a crisp square, so a 28x28 digit stays readable and the
    PNG can be decoded back to the original pixels. A batch (B, C, H, W) is tiled with `grid`.
    """
    x = uint8_chw(image)
    return encode_png(to_pixels(grid(x) if x.ndim == 4 else x), scale)


def encode_png(pixels: np.ndarray, scale: int = 1) -> bytes:
    """uint8 pixels (H, W) or (H, W, C), channels last, encoded as PNG and enlarged `scale` times."""
    picture = Image.fromarray(pixels)
    if scale != 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="png")
    return buffer.getvalue()


def decode_png(data: bytes, scale: int = 1) -> np.ndarray:
    """PNG bytes back to uint8 pixels (H, W[, C]), undoing a nearest-neighbour `scale`."""
    pixels = np.asarray(Image.open(io.BytesIO(data)))
    return pixels[::scale, ::scale]


def figure_png(fig) -> bytes:
    """A matplotlib Figure rendered to PNG bytes (no pyplot, so nothing leaks into a notebook)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
