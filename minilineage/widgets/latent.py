"""Explore a 2-D latent space: move a point with two sliders and see what the decoder makes of it."""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .images import encode_png, png_bytes


class LatentExplorer(widgets.HBox):
    """Two sliders (z1, z2) -> decode(z) shown live, beside a map of the encoded dataset.

    decode: maps z (1, 2) to an image (1, C, H, W) in [-1, 1]. codes (N, 2) and labels (N,):
    the dataset's codes, drawn as a scatter coloured by label with a marker at the current z.
    Needs a running kernel: every slider move calls `decode`, so in a static HTML export the
    sliders move but the image does not change.
    """

    def __init__(
        self,
        decode: Callable[[torch.Tensor], torch.Tensor],
        codes=None,
        labels=None,
        extent: float = 3.0,
        scale: int = 6,
    ):
        super().__init__()
        self.decode = decode
        self.scale = scale
        self.sliders = tuple(
            widgets.FloatSlider(value=0.0, min=-extent, max=extent, step=0.05, description=name)
            for name in ("z1", "z2")
        )
        self.image = widgets.Image(format="png")
        self.plot = widgets.Image(format="png")
        self._map = LatentMap(codes, labels, extent)
        for slider in self.sliders:
            slider.observe(self._redraw, names="value")
        self._redraw()
        self.children = [widgets.VBox([self.image, *self.sliders]), self.plot]

    @property
    def z(self) -> torch.Tensor:
        """The current latent point, (1, 2) float32."""
        return torch.tensor([[s.value for s in self.sliders]], dtype=torch.float32)

    @z.setter
    def z(self, value) -> None:
        z1, z2 = torch.as_tensor(value, dtype=torch.float32).flatten().tolist()
        self.sliders[0].value, self.sliders[1].value = z1, z2

    def current_png(self) -> bytes:
        """The PNG bytes of the decoded image shown now."""
        return self.image.value

    @torch.no_grad()
    def _redraw(self, change=None) -> None:
        z = self.z
        x = self.decode(z)  # (1, C, H, W) in [-1, 1]
        if x.ndim != 4 or x.shape[0] != 1:
            raise ValueError(f"decode must return one image (1, C, H, W), got shape {tuple(x.shape)}")
        self.image.value = png_bytes(x[0], self.scale)
        self.plot.value = self._map.render(z[0].tolist())


class LatentMap:
    """A scatter of codes (N, 2) coloured by label, with one movable marker, rendered to PNG.

    The scatter is drawn once; each `render` pastes the saved background back and draws only the
    marker (matplotlib blitting), so moving the point stays fast with thousands of codes.
    """

    def __init__(self, codes=None, labels=None, extent: float = 3.0, size_px: int = 280):
        dpi = 80
        self.figure = Figure(figsize=(size_px / dpi, size_px / dpi), dpi=dpi, layout="constrained")
        self.canvas = FigureCanvasAgg(self.figure)
        ax = self.figure.add_subplot()
        if codes is not None:
            codes = np.asarray(torch.as_tensor(codes).detach().cpu())
            if codes.ndim != 2 or codes.shape[1] != 2:
                raise ValueError(f"codes must be (N, 2), got shape {codes.shape}")
            colours = None if labels is None else np.asarray(torch.as_tensor(labels).cpu())
            points = ax.scatter(codes[:, 0], codes[:, 1], c=colours, cmap="tab10", s=3, alpha=0.5)
            if labels is not None:
                ax.legend(*points.legend_elements(), fontsize=6, loc="upper right", markerscale=0.6)
        ax.set(xlim=(-extent, extent), ylim=(-extent, extent), xlabel="z1", ylabel="z2", aspect="equal")
        (self.marker,) = ax.plot([0.0], [0.0], "X", color="red", mec="black", ms=12, animated=True)
        self.axes = ax
        self.canvas.draw()  # animated artists are left out, so the background has no marker
        self.background = self.canvas.copy_from_bbox(self.figure.bbox)

    def render(self, z: list[float]) -> bytes:
        """PNG of the map with the marker at z = [z1, z2]."""
        self.canvas.restore_region(self.background)
        self.marker.set_data([z[0]], [z[1]])
        self.axes.draw_artist(self.marker)
        pixels = np.asarray(self.canvas.buffer_rgba())[..., :3]  # (H, W, 3)
        return encode_png(np.ascontiguousarray(pixels))
