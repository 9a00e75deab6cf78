"""Chapter 3 widgets: the forward process over t for several schedules, the reverse process, the
effect of the step count, and a walk between two images through DDIM's noise space.

All frames are computed up front, so every widget here plays in a static HTML page. Timesteps are
0-based indices as in `minilineage.diffusion`: index t is the paper's step t + 1, and
alpha_bar_t in a caption is `sched.alpha_bar[t]`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import ipywidgets as widgets
import torch
import traitlets
from ipywidgets.embed import dependency_state, embed_minimal_html
from matplotlib.figure import Figure

from minilineage.diffusion import NoiseSchedule, q_sample, randn
from minilineage.diffusion.samplers import ddim_denoise, ddim_timesteps

from .images import grid
from .player import FramePlayer

# eps_hat ~ N(0, I) is shown divided by this, so +-3 sigma fills the grey range [-1, 1].
EPS_DISPLAY_SCALE = 3.0


class PlayerSwitch(widgets.VBox):
    """Several FramePlayers of equal length behind one selector and one shared Play + slider.

    players: name -> FramePlayer. The selector's `index` picks a page of an outer Stack, and the
    shared slider drives every player's slider, so switching keeps the frame position. All of it
    is jslinked, so it works in a static HTML page; kernel-side links make it work from Python.
    The players' own Play buttons and sliders are hidden: one timer, not one per player.
    """

    def __init__(
        self, players: Mapping[str, FramePlayer], description: str = "step", label: str = ""
    ):
        super().__init__()
        if not players:
            raise ValueError("PlayerSwitch needs at least one player")
        lengths = {name: len(player) for name, player in players.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"every player needs the same number of frames, got {lengths}")
        self.players = dict(players)
        last = next(iter(lengths.values())) - 1
        self.selector = widgets.ToggleButtons(options=list(players), index=0, description=label)
        self.stack = widgets.Stack(list(players.values()), selected_index=0)
        self.slider = widgets.IntSlider(
            value=0, min=0, max=last, description=description, readout=False
        )
        self.play = widgets.Play(value=0, min=0, max=last, interval=200, show_repeat=True)
        for player in players.values():
            player.play.layout.display = player.slider.layout.display = "none"
        # In the browser: selector -> outer page, Play -> shared slider -> every player's slider.
        self.links = (
            widgets.jslink((self.selector, "index"), (self.stack, "selected_index")),
            widgets.jslink((self.play, "value"), (self.slider, "value")),
            *(
                widgets.jslink((self.slider, "value"), (p.slider, "value"))
                for p in players.values()
            ),
        )
        # In the kernel: the same, so setting `selector.index` or `slider.value` from Python works.
        traitlets.dlink((self.selector, "index"), (self.stack, "selected_index"))
        for player in players.values():
            traitlets.dlink((self.slider, "value"), (player.slider, "value"))
        self.children = [self.selector, self.stack, widgets.HBox([self.play, self.slider])]

    @property
    def current(self) -> FramePlayer:
        """The player on show."""
        return self.stack.children[self.stack.selected_index]

    def current_png(self) -> bytes:
        """The PNG bytes of the frame shown now."""
        return self.current.current_png()

    def save_html(self, path: str | Path, title: str = "minilineage") -> Path:
        """Write a standalone HTML page with every player's frames and all the links embedded."""
        path = Path(path)
        state = dependency_state([self], drop_defaults=True)
        embed_minimal_html(path, views=[self], title=title, state=state)
        return path


def _number(x: float) -> str:
    """Four significant digits, in scientific notation only when far from 1 (alpha_bar, SNR)."""
    return f"{x:.4g}" if x == 0 or 1e-3 <= abs(x) < 1e4 else f"{x:.2e}"


def noise_caption(sched: NoiseSchedule, t: int) -> str:
    """`t = 249 · ᾱ_t = 0.2843 · SNR(t) = 0.3972 (log SNR -0.92)`, SNR = alpha_bar / (1 - alpha_bar)."""
    alpha_bar = sched.alpha_bar[t].item()
    snr = sched.snr(torch.tensor(t)).item()
    return f"t = {t} · ᾱ_t = {_number(alpha_bar)} · SNR(t) = {_number(snr)} (log SNR {math.log(snr):+.2f})"


@torch.no_grad()
def noising_explorer(
    x0: torch.Tensor,
    schedules: Sequence[str] = ("linear", "quadratic", "cosine"),
    T: int = 1000,
    n_frames: int = 50,
    generator: torch.Generator | None = None,
    scale: int = 2,
    nrow: int = 8,
) -> PlayerSwitch:
    """The forward process x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps over t, per schedule.

    Ho et al. 2020, Eq. (4). A t slider and a schedule selector (linear and quadratic from Ho et
    al., cosine from Nichol & Dhariwal 2021). The same eps is used for every t and schedule, so
    only the amount of noise changes. Frames at `timesteps` (n_frames indices evenly spaced over
    0 ... T-1, stored on the result); captions give t, alpha_bar_t and SNR(t).
    """
    if x0.ndim != 4:
        raise ValueError(f"x0 must be a batch (B, C, H, W), got shape {tuple(x0.shape)}")
    if generator is None:
        generator = torch.Generator(device=x0.device).manual_seed(0)
    eps = randn(tuple(x0.shape), generator, x0.device)
    timesteps = torch.linspace(0, T - 1, min(n_frames, T)).round().long().tolist()
    players = {}
    for name in schedules:
        sched = NoiseSchedule.named(name, T)  # on the CPU, for the captions
        on_device = sched.to(x0.device)
        frames = []
        for t in timesteps:
            xt = q_sample(on_device, x0, torch.full((len(x0),), t, device=x0.device), eps)
            frames.append(grid(xt, nrow=nrow))
        captions = [f"{name}: {noise_caption(sched, t)}" for t in timesteps]
        players[name] = FramePlayer(frames, captions=captions, scale=scale, description="t")
    explorer = PlayerSwitch(players, description="t", label="schedule")
    explorer.timesteps = timesteps
    return explorer


def schedule_figure(
    T: int = 1000, schedules: Sequence[str] = ("linear", "quadratic", "cosine")
) -> Figure:
    """alpha_bar_t and log SNR(t) against t/T for each schedule, as a matplotlib Figure (no pyplot).

    Shows why Nichol & Dhariwal 2021 (Fig. 5) prefer the cosine schedule: the linear one reaches
    alpha_bar ~ 0 well before t = T, so its last steps are almost pure noise.
    """
    figure = Figure(figsize=(9, 3.2), layout="constrained")
    left, right = figure.subplots(1, 2)
    t = torch.arange(T)
    for name in schedules:
        sched = NoiseSchedule.named(name, T)
        left.plot(t / T, sched.alpha_bar, label=name)
        right.plot(t / T, sched.snr(t).log(), label=name)
    left.set(
        xlabel="t / T",
        ylabel=r"$\bar\alpha_t$",
        title=r"signal kept: $\bar\alpha_t$",
        ylim=(0, 1.02),
    )
    right.set(
        xlabel="t / T",
        ylabel=r"$\log \mathrm{SNR}(t)$",
        title=r"$\log \mathrm{SNR}(t) = \log(\bar\alpha_t / (1 - \bar\alpha_t))$",
    )
    right.axhline(0, color="grey", lw=0.8, ls=":")  # SNR = 1: as much noise as signal
    left.legend()
    return figure


def _shown_steps(trajectory: Sequence[dict], every: int) -> list[int]:
    """Indices of every `every`-th record counted back from the last, so the final step is always shown."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if not trajectory:
        raise ValueError("the trajectory is empty; sample with trajectory=True")
    missing = {"t", "xt", "x0_hat", "eps_hat"} - set(trajectory[0])
    if missing:
        raise ValueError(
            f"trajectory records need keys t, xt, x0_hat, eps_hat; missing {sorted(missing)}"
        )
    shown = list(range(len(trajectory) - 1, -1, -every))[::-1]
    return shown if shown[0] == 0 else [0, *shown]  # the first record too: x_T, where sampling starts


def reverse_player(
    trajectory: Sequence[dict], every: int = 1, scale: int = 2, nrow: int = 4
) -> FramePlayer:
    """The reverse process step by step: x_t | predicted x0_hat | predicted eps_hat, for a batch.

    trajectory: from `ddpm_sample(..., trajectory=True)` or `ddim_sample`, records {t, xt,
    x0_hat, eps_hat} from t = T-1 down to 0. x0_hat is Eq. (15) of Ho et al. 2020, the network's
    guess of the clean image at that step; eps_hat is shown divided by 3 (+-3 sigma = black to
    white). Shows every `every`-th step counted back from the last, and the first (x_T) as well.
    """
    shown = _shown_steps(trajectory, every)
    records = [trajectory[i] for i in shown]
    panels = [[grid(r[key], nrow=nrow) for r in records] for key in ("xt", "x0_hat")]
    panels.append([grid(r["eps_hat"] / EPS_DISPLAY_SCALE, nrow=nrow) for r in records])
    n = len(trajectory)
    captions = [f"t = {int(trajectory[i]['t'])} · reverse step {i + 1} of {n}" for i in shown]
    player = FramePlayer.from_panels(
        panels,
        titles=["x_t", "predicted x̂_0", f"predicted ε̂ (÷{EPS_DISPLAY_SCALE:g})"],
        captions=captions,
        scale=scale,
        description="step",
    )
    player.slider.readout = False
    return player


class _CountCalls:
    """Wraps a model and counts its forward calls: the number of network evaluations (NFE)."""

    def __init__(self, model: Callable[..., torch.Tensor]):
        self.model, self.calls = model, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        self.calls += 1
        return self.model(x, t, **cond)


@torch.no_grad()
def step_comparison(
    model: Callable[..., torch.Tensor],
    sched: NoiseSchedule,
    shape: tuple[int, ...],
    steps_list: Sequence[int] = (5, 10, 25, 50),
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    device: torch.device | str = "cpu",
    scale: int = 2,
    nrow: int = 8,
    **cond: torch.Tensor,
) -> FramePlayer:
    """DDIM samples from the same x_T with more and more steps: a slider over the step count.

    Song et al. 2021, Eq. (12), timesteps from `ddim_timesteps`. Every run starts from one x_T
    drawn with `generator`, so with eta = 0 the only difference is the number of steps. The
    caption counts the network evaluations actually made (one per step; a `guided` model makes
    one call on a doubled batch). `cond` goes to the model unchanged.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    xT = randn(tuple(shape), generator, device)
    frames, captions = [], []
    for steps in steps_list:
        counted = _CountCalls(model)
        x0 = ddim_denoise(
            counted, sched, xT, ddim_timesteps(sched.T, steps), generator, eta, **cond
        )
        frames.append(grid(x0, nrow=nrow))
        captions.append(
            f"DDIM, {steps} steps · {counted.calls} network evaluations (DDPM: {sched.T})"
        )
    player = FramePlayer(frames, captions=captions, scale=scale, description="steps")
    player.slider.readout = False
    return player


def slerp(a: torch.Tensor, b: torch.Tensor, weight: float) -> torch.Tensor:
    """Spherical interpolation between batches a and b (B, ...), per sample. Shoemake 1985.

    Gaussian noise of dimension D lies near the sphere of radius sqrt(D); a straight line between two
    such points passes well inside it (at weight 1/2 its norm is about 0.71 sqrt(D)), where no x_T is
    ever drawn. The great circle stays on the sphere, as in Song et al. 2021 (DDIM), Sec. 5.3.
    """
    flat_a, flat_b = a.flatten(1), b.flatten(1)  # (B, D)
    cos = (flat_a * flat_b).sum(1) / (flat_a.norm(dim=1) * flat_b.norm(dim=1))
    theta = cos.clamp(-1, 1).acos().reshape(-1, *[1] * (a.ndim - 1))  # (B, 1, ..., 1)
    return (torch.sin((1 - weight) * theta) * a + torch.sin(weight * theta) * b) / torch.sin(theta)


@torch.no_grad()
def interpolation_player(
    model: Callable[..., torch.Tensor],
    sched: NoiseSchedule,
    xT_a: torch.Tensor,
    xT_b: torch.Tensor,
    steps: int = 25,
    n_frames: int = 9,
    scale: int = 3,
    clip_x0: float | None = 1.0,
    **cond: torch.Tensor,
) -> FramePlayer:
    """Walk from one noise x_T to another along the sphere and decode every point with DDIM (eta = 0).

    Song et al. 2021, Sec. 5.3. xT_a, xT_b: (B, C, H, W), e.g. from `ddim_invert` of two images, so
    the first and last frames decode back to (about) those images. Frame k decodes
    slerp(xT_a, xT_b, k / (n_frames - 1)); all frames are decoded in one batch with `steps` DDIM
    steps. Each frame: the noise | what DDIM makes of it. `cond` goes to the model, its batch axis
    matching xT_a's.
    """
    if xT_a.shape != xT_b.shape or xT_a.ndim != 4:
        raise ValueError(f"need two noises of one shape (B, C, H, W), got {tuple(xT_a.shape)} and {tuple(xT_b.shape)}")
    if n_frames < 2:
        raise ValueError(f"n_frames must be >= 2, got {n_frames}")
    weights = [k / (n_frames - 1) for k in range(n_frames)]
    noise = torch.cat([slerp(xT_a, xT_b, w) for w in weights])  # (n_frames * B, C, H, W)
    repeated = {key: value.repeat(n_frames, *[1] * (value.ndim - 1)) for key, value in cond.items()}
    decoded = ddim_denoise(model, sched, noise, ddim_timesteps(sched.T, steps), None, 0.0, clip_x0=clip_x0, **repeated)
    B = len(xT_a)
    panels = [[grid(x[k * B : (k + 1) * B], nrow=1) for k in range(n_frames)] for x in (noise, decoded)]
    captions = [f"weight {w:.2f} of the second noise · DDIM, {steps} steps" for w in weights]
    player = FramePlayer.from_panels(panels, titles=["x_T", "DDIM's x_0"], captions=captions, scale=scale,
                                     description="weight")
    player.slider.readout = False
    return player
