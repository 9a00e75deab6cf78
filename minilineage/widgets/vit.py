"""Chapter 5 widgets: an image cut into patch tokens, where position embeddings put each token, and a
noised image cut into the tokens a DiT sees.

Every frame is computed up front and the controls are tied to the frames with `jslink`, so all
three widgets play in an exported HTML page with no kernel (see `player.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import torch
import torch.nn.functional as F
import traitlets
from einops import rearrange
from ipywidgets.embed import dependency_state, embed_minimal_html
from matplotlib.figure import Figure

from minilineage.diffusion import NoiseSchedule, q_sample, randn
from minilineage.layers import patchify

from .diffusion import PlayerSwitch, noise_caption
from .images import encode_png, figure_png, grid, side_by_side, to_pixels
from .player import FramePlayer


def patch_mosaic(image: torch.Tensor, p: int, gap: int = 1) -> torch.Tensor:
    """One image (C, H, W) cut into its p x p patches, drawn with `gap` white pixels between them: uint8 (C, H', W')."""
    tokens, (_, w) = patchify(image[None], p)  # (1, N, p*p*C), grid (h, w)
    patches = rearrange(tokens[0], "n (p1 p2 c) -> n c p1 p2", p1=p, p2=p)  # (N, C, p, p) in token order
    return grid(patches, nrow=w, padding=gap)


def patch_figure(image: torch.Tensor, p: int) -> Figure:
    """Left: the image cut into p x p patches, numbered in reading order. Right: the sequence the
    transformer reads, one row per token (N rows of p*p*C pixel values). image: (C, H, W) in [-1, 1]."""
    tokens, (h, w) = patchify(image[None], p)  # (1, N, D)
    n, d = tokens.shape[1:]
    figure = Figure(figsize=(8.4, 3.9), dpi=72, layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=(1, 1.15))
    left.imshow(to_pixels(patch_mosaic(image, p, gap=1)), cmap="gray", vmin=0, vmax=255)
    if n <= 49:  # numbers on 196 patches would hide the digit
        for k in range(n):
            left.text(1 + (k % w) * (p + 1), 1 + (k // w) * (p + 1), str(k), color="tab:orange",
                      fontsize=8, va="top", ha="left")
    left.set_title(f"{p} x {p} patches: a {h} x {w} grid")
    right.imshow(tokens[0].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    right.set(title=f"the sequence: N = {n} tokens x D = {d} numbers", xlabel="pixel within the patch (row-major)",
              ylabel="token n")
    left.axis("off")
    return figure


class PatchGrid(widgets.VBox):
    """A patch-size slider over precomputed frames, one per patch size; plays without a kernel.

    The slider's `index` picks the page of a Stack through a jslink (in the browser) and a
    traitlets link (in the kernel), so `grid.slider.value = 7` from Python or a test works too.
    """

    def __init__(self, frames: Mapping[int, bytes], captions: Mapping[int, str], description: str = "patch size"):
        super().__init__()
        sizes = list(frames)
        self.images = [widgets.Image(value=frames[p], format="png") for p in sizes]
        self.captions = [widgets.HTML(value=captions[p]) for p in sizes]
        pages = [widgets.VBox([image, caption]) for image, caption in zip(self.images, self.captions)]
        self.stack = widgets.Stack(pages, selected_index=0)
        self.slider = widgets.SelectionSlider(options=sizes, value=sizes[0], description=description)
        self.links = (widgets.jslink((self.slider, "index"), (self.stack, "selected_index")),)
        traitlets.dlink((self.slider, "index"), (self.stack, "selected_index"))
        self.children = [self.slider, self.stack]

    def current_png(self) -> bytes:
        """The PNG bytes of the frame shown now."""
        return self.images[self.stack.selected_index].value

    def save_html(self, path: str | Path, title: str = "minilineage") -> Path:
        """A standalone HTML page with every frame and the link embedded."""
        path = Path(path)
        embed_minimal_html(path, views=[self], title=title, state=dependency_state([self], drop_defaults=True))
        return path


def patch_grid(image: torch.Tensor, patch_sizes: Sequence[int] = (2, 4, 7, 14)) -> PatchGrid:
    """Slide the patch size: the image cut into patches, and the token sequence beside it.

    Dosovitskiy et al. 2021, Eq. (1): an H x W image in p x p patches is N = HW / p^2 tokens of
    p^2 C numbers. Small patches: a long sequence of short tokens; attention's cost grows as N^2.
    image: (C, H, W) in [-1, 1]; every patch size must divide H and W.
    """
    if image.ndim != 3:
        raise ValueError(f"patch_grid shows one image (C, H, W), got shape {tuple(image.shape)}")
    frames, captions = {}, {}
    for p in patch_sizes:
        tokens, (h, w) = patchify(image[None], p)
        frames[p] = figure_png(patch_figure(image, p))
        captions[p] = (f"patch {p} x {p}: {h} x {w} = {h * w} tokens of {tokens.shape[2]} numbers; "
                       f"attention compares {(h * w) ** 2:,} pairs")
    return PatchGrid(frames, captions)


def cosine_similarities(pos: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between every two position embeddings: (N, D) -> (N, N)."""
    unit = F.normalize(pos.float(), dim=-1)
    return unit @ unit.T


def _shades(pos: torch.Tensor, grid_hw: tuple[int, int], p: int) -> tuple[torch.Tensor, float]:
    """Per patch k, the cosine similarity of every patch to k as an image (N, 1, H, W) in [-1, 1], each
    cell p x p pixels, shaded from the table's lowest similarity (-1, black) to 1 (white); and that lowest value."""
    h, w = grid_hw
    sims = cosine_similarities(pos)  # (N, N)
    low = sims.min().item()
    shade = (sims - low) / max(1 - low, 1e-8) * 2 - 1  # [low, 1] -> [-1, 1]
    maps = rearrange(shade, "k (h w) -> k 1 h w", h=h, w=w)  # (N, 1, h, w)
    return maps.repeat_interleave(p, 2).repeat_interleave(p, 3), low  # (N, 1, H, W)


def position_similarity(embeddings: Mapping[str, torch.Tensor], image: torch.Tensor, p: int,
                        scale: int = 5) -> FramePlayer:
    """Pick a patch: how similar every other patch's position embedding is to it, for each embedding side by side.

    Dosovitskiy et al. 2021, Fig. 7 (centre). embeddings: name -> (N, D) in token order for the grid
    of `image` (C, H, W) cut into p x p patches. Each frame: the image with the picked patch in red,
    then one map per embedding (cosine similarity, from the table's lowest value in black to 1 in
    white). The slider (the patch's raster index) is jslinked to the frames.
    """
    h, w = image.shape[1] // p, image.shape[2] // p
    shades, lows = [], []
    for name, pos in embeddings.items():
        if pos.shape[0] != h * w:
            raise ValueError(f"{name}: {pos.shape[0]} embeddings for a grid of {h} x {w} = {h * w} patches")
        maps, low = _shades(pos.detach().cpu(), (h, w), p)
        shades.append(maps)
        lows.append(f"{low:.2f}")
    gray = to_pixels(image.cpu())  # (H, W) uint8
    frames = []
    for k in range(h * w):
        marked = np.repeat(gray[..., None], 3, axis=-1)  # (H, W, 3)
        r, c = divmod(k, w)
        marked[r * p : (r + 1) * p, c * p : (c + 1) * p] = (255, 0, 0)
        panels = [torch.from_numpy(marked).permute(2, 0, 1)] + [maps[k] for maps in shades]  # each (C, H, W)
        frames.append(encode_png(side_by_side(panels, gap=p), scale))
    header = widgets.HTML(f"<b>image and patch · {' · '.join(embeddings)}</b>")
    captions = [f"patch {k} (row {k // w}, column {k % w}); black = each table's lowest similarity "
                f"({', '.join(lows)}), white = 1" for k in range(h * w)]
    return FramePlayer(frames, captions=captions, description="patch", header=header)


@torch.no_grad()
def noised_patches(x0: torch.Tensor, patch_sizes: Sequence[int] = (2, 4, 7), schedule: str = "cosine",
                   T: int = 1000, n_frames: int = 11, generator: torch.Generator | None = None,
                   scale: int = 3) -> PlayerSwitch:
    """What a DiT is given: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, cut into p x p tokens.

    Ho et al. 2020, Eq. (4); Peebles & Xie 2023 patchify x_t (a latent) exactly like this. A t slider
    (the same eps at every t) and a patch-size selector. x0: a few images (B, C, H, W) in [-1, 1].
    """
    if x0.ndim != 4:
        raise ValueError(f"x0 must be a batch (B, C, H, W), got shape {tuple(x0.shape)}")
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    sched = NoiseSchedule.named(schedule, T)
    eps = randn(tuple(x0.shape), generator, x0.device)
    timesteps = torch.linspace(0, T - 1, n_frames).round().long().tolist()
    noised = [q_sample(sched.to(x0.device), x0, torch.full((len(x0),), t, device=x0.device), eps).cpu()
              for t in timesteps]
    players = {}
    for p in patch_sizes:
        n = (x0.shape[2] // p) * (x0.shape[3] // p)
        frames = [side_by_side([patch_mosaic(image, p) for image in xt], gap=3) for xt in noised]
        captions = [f"{noise_caption(sched, t)} · {n} tokens of {p * p * x0.shape[1]} numbers" for t in timesteps]
        players[f"p = {p}"] = FramePlayer(frames, captions=captions, scale=scale, description="t")
    switch = PlayerSwitch(players, description="t", label="patch size")
    switch.timesteps = timesteps
    return switch
