"""Chapter 4 widgets: CLIP's N x N similarity matrix, and text-to-image with guidance and attention maps.

`similarity_explorer` precomputes every batch, so it plays in a static HTML page. `TextToImage`
precomputes the reverse process for every guidance value of one prompt (the guidance slider and
the step slider are jslinked, so they too work without a kernel); typing a new prompt needs a
kernel, since it runs the model again.
"""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import torch
import torch.nn.functional as F
import traitlets
from einops import rearrange
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from minilineage.models.clip import similarity

from .images import figure_png, grid, to_pixels
from .player import FramePlayer

LATENT_DISPLAY_SCALE = 3.0  # scaled latents have unit std: +-3 fills the grey range
INK_THRESHOLD = 0.2  # a cell of an attention map is "stroke" when its pixels average over 20 % ink


def similarity_figure(images: torch.Tensor, captions: Sequence[str], logits: torch.Tensor, labels: torch.Tensor,
                      caption_labels: torch.Tensor) -> Figure:
    """The N x N matrix of scaled cosine similarities, images down the side, captions along the top.

    Row i is an N-way classification "which caption is image i's?": its softmax is shaded and
    printed in every cell that holds at least 1 % of the row, and its argmax is boxed, green when
    the picked caption names the image's digit, red otherwise. Sized for a projector: 18 pt
    captions and 17 pt numbers on cells under an inch wide.
    """
    n = len(images)
    probs = logits.softmax(dim=1)  # (N, N), each row sums to 1
    cell = 0.85  # inches per matrix cell
    figure = Figure(figsize=(cell * (n + 1) + 3.2, cell * n + 3.4), dpi=80, layout="constrained")
    ax = figure.add_subplot()
    ax.imshow(probs.numpy(), cmap="Blues", vmin=0, vmax=1, extent=(-0.5, n - 0.5, n - 0.5, -0.5))
    for i in range(n):
        ax.imshow(to_pixels(images[i]), cmap="gray", vmin=0, vmax=255, extent=(-1.55, -0.6, i + 0.45, i - 0.45))
        for j in range(n):
            if probs[i, j] >= 0.01:  # dark cells get white digits, light ones black
                ax.text(j, i, f"{probs[i, j]:.2f}".lstrip("0"), ha="center", va="center", fontsize=17,
                        color="white" if probs[i, j] > 0.5 else "black")
        j = int(probs[i].argmax())
        color = "green" if int(caption_labels[j]) == int(labels[i]) else "red"
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=color, lw=3.5))
    ax.set_xlim(-1.6, n - 0.5), ax.set_ylim(n - 0.5, -0.5)
    ax.set_xticks(range(n), captions, rotation=40, ha="left", va="bottom", rotation_mode="anchor", fontsize=18)
    ax.xaxis.tick_top()
    ax.tick_params(axis="x", length=0, pad=4)
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    return figure


@torch.no_grad()
def similarity_explorer(clip, data, batch_size: int = 8, n_batches: int = 4,
                        generator: torch.Generator | None = None) -> FramePlayer:
    """Pick a batch: its N x N similarity matrix and each row's classification. Radford et al. 2021, Fig. 3.

    clip: a CLIP (encode_image, encode_text, logit_scale); data: an ArrayData whose random-template
    captions are paired with its images. The logits of every batch are kept in `.logits` (a list of
    (N, N) tensors) and the batches' labels in `.labels`.
    """
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    device = clip.log_scale.device
    frames, captions_shown, all_logits, all_labels = [], [], [], []
    for _ in range(n_batches):
        idx = torch.randperm(len(data), generator=generator)[:batch_size]
        x, y = data.float_images()[idx], data.labels[idx]
        captions = data.captions(idx, generator)
        logits = similarity(clip.encode_image(x.to(device)), clip.encode_text(captions), clip.logit_scale).cpu()
        picked = logits.argmax(dim=1)
        own, same_digit = (picked == torch.arange(len(x))).sum().item(), (y[picked] == y).sum().item()
        frames.append(figure_png(similarity_figure(x, captions, logits, y, y)))
        captions_shown.append(f"{own} of {len(x)} images pick their own caption; "
                              f"{same_digit} of {len(x)} pick a caption of their digit")
        all_logits.append(logits)
        all_labels.append(y)
    player = FramePlayer(frames, captions=captions_shown, scale=1, description="batch")
    player.logits, player.labels = all_logits, all_labels
    return player


def latent_strip(z: torch.Tensor, upscale: int = 4) -> torch.Tensor:
    """Latents (B, c, h, w) -> images (B, 1, u*h, u*c*w): the c channels side by side, in [-1, 1]."""
    strip = rearrange(z, "b c h w -> b 1 h (c w)") / LATENT_DISPLAY_SCALE  # (B, 1, h, c*w)
    return strip.repeat_interleave(upscale, dim=-2).repeat_interleave(upscale, dim=-1)  # nearest-neighbour


def ink_mask(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Which cells of an h x w grid over each image hold stroke: images (B, 1, H, W) in [-1, 1] -> (B, h, w) bool.

    A cell is stroke when its pixels average more than INK_THRESHOLD ink (ink = (x + 1) / 2): for
    MNIST at 7 x 7 that is about a quarter of the cells.
    """
    ink = F.adaptive_avg_pool2d((images + 1) / 2, size)[:, 0]  # (B, h, w), mean ink per cell
    return ink > INK_THRESHOLD


def stroke_lift(maps: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """How strongly each token's attention map sits on the strokes: maps (B, N, h, w), images (B, 1, H, W) -> (B, N).

    (share of the map's weight on stroke cells) / (share of the cells that are stroke): 1 means the
    token is read no more on the strokes than anywhere else, 2 twice as much, 0.5 half as much (it is
    read on the background). NaN for an image without strokes.
    """
    stroke = ink_mask(images, maps.shape[-2:]).float()[:, None]  # (B, 1, h, w)
    on_ink = (maps * stroke).sum(dim=(-2, -1)) / maps.sum(dim=(-2, -1))  # (B, N)
    return on_ink / stroke.mean(dim=(-2, -1))  # 0 / 0 = NaN without strokes


def attention_figure(images: torch.Tensor, maps: torch.Tensor, tokens: Sequence[str]) -> Figure:
    """Each image and each token's cross-attention map (rows: images, columns: tokens), all on one colour scale.

    maps (B, N, h, w): attention weights, summing to 1 over the N tokens at each position. Every map
    is shaded on the same (square-root) scale, 0 to the largest weight in the figure, so a dark map is
    a token that gets little attention; the cyan line is the image's strokes. Above each map: the token's share of
    all the attention (how much it is read) and its `stroke_lift` (where: x1 no preference, above 1
    on the strokes, below 1 on the background).
    """
    b, n = maps.shape[:2]
    lift = stroke_lift(maps, images)  # (B, N)
    size = images.shape[-1]
    extent = (-0.5, size - 0.5, size - 0.5, -0.5)  # the h x w map stretched over the H x W image
    shade = PowerNorm(0.5, vmin=0, vmax=float(maps.max()))  # one scale for all; the square root keeps faint maps visible
    figure = Figure(figsize=(1.6 * (n + 1) + 1.0, 1.75 * b + 0.5), dpi=100, layout="constrained")
    axes = np.array(figure.subplots(b, n + 1, squeeze=False))
    for i in range(b):
        axes[i, 0].imshow(to_pixels(images[i]), cmap="gray", vmin=0, vmax=255)
        for j in range(n):
            ax = axes[i, j + 1]
            shown = ax.imshow(maps[i, j].numpy(), cmap="magma", norm=shade, extent=extent, interpolation="nearest")
            ax.contour(images[i, 0].numpy(), levels=[0.0], colors="cyan", linewidths=1.2)
            numbers = f"{maps[i, j].mean():.0%} · ×{lift[i, j]:.1f}"
            ax.set_title(f"{tokens[j]}\n{numbers}" if i == 0 else numbers, fontsize=13)
    axes[0, 0].set_title("image\n", fontsize=13)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    figure.colorbar(shown, ax=axes[:, 1:], shrink=0.9, pad=0.02).set_label("attention weight", fontsize=12)
    return figure


class TextToImage(widgets.VBox):
    """Prompt box -> the latent being denoised next to its decoding, a guidance slider, per-token attention maps.

    For every value in `guidances`, the model samples `n` images with `steps` DDIM steps from the
    same starting noise (seed), and keeps every `every`-th step: latent z_t | decoder(predicted z0).
    Below them, each real token's cross-attention map (averaged over the steps, heads and layers)
    over the first final image (all n are in `.page.maps`). Guidance slider, step slider and Play
    are jslinked; a new prompt reruns the model.
    """

    def __init__(self, model, prompt: str = "a handwritten seven", guidances: Sequence[float] = (1.0, 2.0, 3.0, 5.0),
                 n: int = 4, steps: int = 20, every: int = 2, seed: int = 0, scale: int = 2):
        super().__init__()
        if steps % every:
            raise ValueError(f"steps {steps} must be a multiple of every {every}")
        self.model, self.guidances, self.n, self.steps, self.every, self.seed, self.scale = (
            model, tuple(guidances), n, steps, every, seed, scale)
        default = min(range(len(guidances)), key=lambda i: abs(guidances[i] - model.config.guidance))
        self.prompt = widgets.Text(value=prompt, description="prompt", continuous_update=False)
        self.guidance = widgets.SelectionSlider(options=[f"{g:g}" for g in guidances], index=default,
                                                description="guidance")
        last = steps // every - 1
        self.step = widgets.IntSlider(value=last, min=0, max=last, description="step", readout=False)
        self.play = widgets.Play(value=last, min=0, max=last, interval=250, show_repeat=True)
        self.stack, self._page_links = widgets.Stack([], selected_index=None), []
        self.generate(prompt)  # fills the stack: one page per guidance value
        self.links = [widgets.jslink((self.guidance, "index"), (self.stack, "selected_index")),
                      widgets.jslink((self.play, "value"), (self.step, "value"))]
        traitlets.dlink((self.guidance, "index"), (self.stack, "selected_index"))
        self.children = [self.prompt, self.guidance, widgets.HBox([self.play, self.step]), self.stack]
        self.prompt.observe(lambda change: self.generate(change["new"]), names="value")

    @torch.no_grad()
    def _page(self, prompt: str, guidance: float) -> widgets.VBox:
        """The player (z_t | decoded z0_hat over the steps) and the attention figure for one guidance value."""
        model = self.model
        generator = torch.Generator(device=model.device).manual_seed(self.seed)
        images, frames = model.sample(self.n, generator, prompt=prompt, steps=self.steps, guidance=guidance,
                                      trajectory=True)
        shown = frames[self.every - 1 :: self.every]
        latents = [grid(latent_strip(r["xt"]), nrow=1) for r in shown]
        decoded = [grid(model.decode(r["x0_hat"].to(model.device)).clamp(-1, 1), nrow=1) for r in shown]
        captions = [f"guidance {guidance:g} · t = {r['t']} · step {i * self.every + self.every} of {self.steps}"
                    for i, r in enumerate(shown)]
        player = FramePlayer.from_panels([latents, decoded], titles=["latent z_t (4 channels)", "decoder(ẑ_0)"],
                                         captions=captions, scale=self.scale, description="step")
        player.play.layout.display = player.slider.layout.display = "none"
        prompts = [prompt] * self.n
        maps = sum(model.cross_attention_maps(r["xt"].to(model.device), torch.tensor(r["t"], device=model.device),
                                              prompts) for r in frames) / len(frames)  # (B, N_ctx, h, w)
        tokenizer = model.condition.tokenizer
        tokens, mask = tokenizer.encode(prompt)
        real = int(mask.sum())
        maps = maps[:, :real].cpu()  # padding tokens get zero weight: show only the prompt's real tokens
        names = [tokenizer.vocab[i] for i in tokens[0, :real].tolist()]
        picture = widgets.Image(value=figure_png(attention_figure(images[:1].cpu(), maps[:1], names)), format="png")
        legend = widgets.HTML("<b>cross-attention per token</b>, averaged over the steps; above each map: the token's share "
                              "of the attention · how much more of it lands on the strokes than chance (×1)")
        page = widgets.VBox([player, legend, picture])
        page.player, page.images, page.maps, page.tokens = player, images.cpu(), maps, names
        return page

    def generate(self, prompt: str) -> None:
        """Sample every guidance value for `prompt` and show the pages (runs the model)."""
        pages = [self._page(prompt, g) for g in self.guidances]
        for link in self._page_links:
            link.unlink()
        self._page_links = [link for page in pages for link in (
            widgets.jslink((self.step, "value"), (page.player.slider, "value")),
            traitlets.dlink((self.step, "value"), (page.player.slider, "value")))]
        self.stack.children = pages
        self.stack.selected_index = self.guidance.index

    @property
    def page(self) -> widgets.VBox:
        """The page on show (one guidance value)."""
        return self.stack.children[self.stack.selected_index]

    def current_png(self) -> bytes:
        """The PNG bytes of the denoising frame shown now."""
        return self.page.player.current_png()


def text_to_image(model, prompt: str = "a handwritten seven", **kwargs) -> TextToImage:
    """One line in a notebook: `text_to_image(ldm)`; see `TextToImage` for the options."""
    return TextToImage(model, prompt, **kwargs)

