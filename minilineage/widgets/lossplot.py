"""A live loss plot for training in a notebook, redrawn in place; silent anywhere else."""

from __future__ import annotations

import math

import numpy as np
from IPython.display import Image, display
from matplotlib.figure import Figure

from minilineage.recipes import get_recipe, train_recipe

from .images import figure_png


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, classic, VS Code, nbval), False in scripts and tests."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in shell.config


class LossPlot:
    """Training loss against step: raw points, a smoothed curve, log-scaled y.

    `update(step, loss)` redraws the same output cell every `every` steps (one display handle,
    so a long run leaves one figure, not hundreds); `close()` draws the final figure. Outside a
    notebook kernel both do nothing, so a training loop can call them unconditionally.
    """

    smoothing = 0.9  # EMA weight of the past; debiased like Adam's moments (Kingma & Ba 2015)

    def __init__(self, every: int = 50, title: str = ""):
        self.every = every
        self.title = title
        self.enabled = in_notebook()
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.handle = None
        self._drawn_at: int | None = None

    def update(self, step: int, loss: float) -> None:
        """Record one loss; redraw if `every` steps have passed since the last drawing."""
        if not self.enabled:
            return
        self.steps.append(int(step))
        self.losses.append(float(loss))
        if self._drawn_at is None or step - self._drawn_at >= self.every:
            self._draw()

    def close(self) -> None:
        """Draw the final figure once (all recorded steps)."""
        if self.enabled and self.steps and self._drawn_at != self.steps[-1]:
            self._draw()

    def _draw(self) -> None:
        image = Image(data=figure_png(self.figure()), format="png")
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)
        self._drawn_at = self.steps[-1]

    def figure(self) -> Figure:
        """The plot as a matplotlib Figure (not shown; pyplot is never touched)."""
        steps, losses = np.array(self.steps), np.array(self.losses)
        finite = np.isfinite(losses)  # a NaN step would break the curve and the log scale
        steps, losses = steps[finite], losses[finite]
        fig = Figure(figsize=(6, 3), dpi=90, layout="constrained")
        ax = fig.add_subplot()
        ax.plot(steps, losses, ".", ms=2, alpha=0.3, color="tab:blue", label="loss")
        ax.plot(steps, ema(losses, self.smoothing), color="tab:blue", label=f"EMA {self.smoothing}")
        if len(losses) and losses.min() > 0:
            ax.set_yscale("log")
        last = f"step {self.steps[-1]}: loss {self.losses[-1]:.4g}" if self.steps else ""
        ax.set(xlabel="step", ylabel="loss", title=" - ".join(t for t in (self.title, last) if t))
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3, which="both")
        return fig


def ema(values: np.ndarray, beta: float) -> np.ndarray:
    """Debiased exponential moving average: m_k / (1 - beta^k), m_k = beta m_{k-1} + (1 - beta) v_k."""
    out, m = np.empty(len(values)), 0.0
    for k, v in enumerate(values, start=1):
        m = beta * m + (1 - beta) * v
        out[k - 1] = m / (1 - math.pow(beta, k))
    return out


def train_with_plot(name: str, **options):
    """`minilineage.recipes.train_recipe(name, **options)` with a live loss plot in the notebook."""
    steps = options.get("steps") or get_recipe(name).presets[options.get("preset", "cpu")].train.steps
    plot = LossPlot(every=max(25, steps // 40), title=name)  # about 40 redraws per run
    try:
        return train_recipe(name, callbacks=(plot.update,), **options)
    finally:
        plot.close()
