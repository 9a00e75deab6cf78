"""A player for precomputed frames that keeps working in a static HTML page with no kernel.

Every frame is rendered to PNG once, up front, and held in an `ipywidgets.Stack` of `Image`
widgets. The Play button, the slider and the stack's `selected_index` are tied together with
`jslink`, which the browser runs by itself; `save_html` embeds the widget state (all frames and
the links) into the page. Chapters reuse the player for anything that is a sequence of images:
noise levels, the forward process over t, the reverse process step by step, SDEdit strengths.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import ipywidgets as widgets
import torch
import traitlets
from ipywidgets.embed import dependency_state, embed_minimal_html

from .images import grid, png_bytes, side_by_side, uint8_chw


class FramePlayer(widgets.VBox):
    """Play, step or scrub through precomputed frames: Play + slider -> Stack of Image widgets.

    frames: a tensor (T, C, H, W), or a sequence of images (each (C, H, W), a batch (B, C, H, W)
    that is tiled, or PNG bytes); float in [-1, 1] or uint8. captions: one string per frame,
    shown under it. Works without a kernel once exported with `save_html`.
    """

    def __init__(
        self,
        frames,
        captions: Sequence[str] | None = None,
        scale: int = 4,
        interval_ms: int = 200,
        description: str = "step",
        header: widgets.Widget | None = None,
    ):
        super().__init__()
        pngs = [frame if isinstance(frame, bytes) else png_bytes(frame, scale) for frame in frames]
        if not pngs:
            raise ValueError("FramePlayer needs at least one frame")
        if captions is not None and len(captions) != len(pngs):
            raise ValueError(f"{len(pngs)} frames but {len(captions)} captions")
        self.images = [widgets.Image(value=png, format="png") for png in pngs]
        self.captions = [widgets.HTML(value=c) for c in captions] if captions is not None else None
        pages = self.images
        if captions is not None:
            pages = [widgets.VBox(pair) for pair in zip(self.images, self.captions, strict=True)]
        last = len(pngs) - 1
        self.stack = widgets.Stack(pages, selected_index=0)
        self.slider = widgets.IntSlider(value=0, min=0, max=last, description=description)
        self.play = widgets.Play(value=0, min=0, max=last, interval=interval_ms, show_repeat=True)
        # In the browser: Play drives the slider, the slider picks the frame, no kernel involved.
        self.links = (
            widgets.jslink((self.play, "value"), (self.slider, "value")),
            widgets.jslink((self.slider, "value"), (self.stack, "selected_index")),
        )
        # In the kernel: setting `slider.value` from Python (or a test) also moves the stack.
        traitlets.dlink((self.slider, "value"), (self.stack, "selected_index"))
        controls = widgets.HBox([self.play, self.slider])
        self.children = ([header] if header is not None else []) + [self.stack, controls]

    def __len__(self) -> int:
        return len(self.images)

    def current_png(self) -> bytes:
        """The PNG bytes of the frame the stack shows now."""
        return self.images[self.stack.selected_index].value

    def save_html(self, path: str | Path, title: str = "minilineage") -> Path:
        """Write a standalone HTML page with this player's state (frames and links) embedded.

        Only this player's widgets and the jslinks between them go in, not every widget of the
        kernel. The page loads the ipywidgets JavaScript from a CDN when it is opened.
        """
        path = Path(path)
        state = dependency_state([self], drop_defaults=True)
        embed_minimal_html(path, views=[self], title=title, state=state)
        return path

    @classmethod
    def from_panels(
        cls,
        panels: Sequence,
        titles: Sequence[str] | None = None,
        captions: Sequence[str] | None = None,
        scale: int = 4,
        gap: int = 2,
        **kwargs,
    ) -> FramePlayer:
        """A player whose every frame is several images side by side, e.g. x_t | x0_hat | eps_hat.

        panels: one sequence of frames per panel, all of the same length T (panels[p][t]).
        titles: one per panel, shown above its column.
        """
        lengths = {len(frames) for frames in panels}
        if len(lengths) != 1:
            counts = [len(frames) for frames in panels]
            raise ValueError(f"every panel needs the same number of frames, got {counts}")
        if titles is not None and len(titles) != len(panels):
            raise ValueError(f"{len(panels)} panels but {len(titles)} titles")
        frames = [side_by_side(row, gap=gap) for row in zip(*panels, strict=True)]
        header = None
        if titles is not None:
            widths = [_width(frames[0]) * scale for frames in panels]
            header = _title_row(titles, widths, gap * scale)
        return cls(frames, captions=captions, scale=scale, header=header, **kwargs)


def _width(image) -> int:
    """Width in pixels of an image or batch as `side_by_side` lays it out."""
    x = uint8_chw(image)
    return (grid(x) if x.ndim == 4 else x).shape[-1]


def _title_row(titles: Sequence[str], widths: Sequence[int], gap: int) -> widgets.HBox:
    """Centred labels, each exactly as wide as the panel below it."""
    labels = [
        widgets.HTML(
            # narrow panels (one 28-pixel digit) wrap a long title onto two lines instead of overrunning the next
            value=f"<div style='text-align:center;font-size:smaller;line-height:1.2;overflow-wrap:anywhere'>{title}</div>",
            layout=widgets.Layout(width=f"{width}px", margin=f"0 {gap}px 0 0", padding="0"),
        )
        for title, width in zip(titles, widths, strict=True)
    ]
    return widgets.HBox(labels)


@torch.no_grad()
def denoise_player(
    x0: torch.Tensor,
    reconstruct: Callable[[torch.Tensor], torch.Tensor],
    levels: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0),
    generator: torch.Generator | None = None,
    scale: int = 4,
) -> FramePlayer:
    """Noisy input -> reconstruction at every noise level: x = x0 + sigma * eps, eps ~ N(0, I).

    A denoising autoencoder's first glimpse of denoising (Vincent et al. 2008). The same eps is
    used at every level, so the slider only turns sigma up. x0: a few digits (B, C, H, W) in
    [-1, 1]; reconstruct maps (B, C, H, W) -> (B, C, H, W). Each frame is two columns, one digit
    per row: noisy input | reconstruction. generator=None means a fresh one seeded with 0.
    """
    if x0.ndim != 4:
        raise ValueError(f"x0 must be a batch (B, C, H, W), got shape {tuple(x0.shape)}")
    if generator is None:
        generator = torch.Generator(device=x0.device).manual_seed(0)
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    noisy, restored = [], []
    for sigma in levels:
        x = x0 + sigma * eps
        x0_hat = reconstruct(x)
        if x0_hat.shape != x0.shape:
            raise ValueError(
                f"reconstruct returned shape {tuple(x0_hat.shape)}, expected {tuple(x0.shape)}"
            )
        noisy.append(grid(x, nrow=1))  # (C, B*(H+2)+2, W+4): one digit per row
        restored.append(grid(x0_hat, nrow=1))
    captions = [f"noise level σ = {float(sigma):.2f}" for sigma in levels]
    return FramePlayer.from_panels(
        [noisy, restored],
        titles=["noisy input", "reconstruction"],
        captions=captions,
        scale=scale,
        description="σ index",
    )
