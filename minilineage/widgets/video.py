"""Chapter 7 widgets: clips played side by side, a clip denoised with all its frames at once, SDEdit strength.

Every one is a `FramePlayer` of precomputed frames, so it plays in an exported HTML page with no
kernel. Two ways to show a clip:
  play over time   `video_player`: the player's frame f shows frame f of every clip of every panel
  strip of frames  `strips`: a clip laid out as a row of its frames, one player frame per setting
                   (a reverse step, an SDEdit strength, an inference mode, a size)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange

from .images import grid
from .player import FramePlayer


def _clips(clips: torch.Tensor) -> torch.Tensor:
    if clips.ndim != 5:
        raise ValueError(f"expected clips (N, F, C, H, W), got {tuple(clips.shape)}")
    return clips.float().clamp(-1, 1) if clips.is_floating_point() else clips.float() / 127.5 - 1


def strip(clips: torch.Tensor, padding: int = 1) -> torch.Tensor:
    """Clips (N, F, C, H, W) as one image, a row of frames per clip: uint8 (C, H', W')."""
    clips = _clips(clips)
    return grid(rearrange(clips, "n f c h w -> (n f) c h w"), nrow=clips.shape[1], padding=padding)


def video_player(panels: Sequence[torch.Tensor], titles: Sequence[str] | None = None, scale: int = 3,
                 interval_ms: int = 150) -> FramePlayer:
    """Clips played over time, panels side by side (real | generated, naive | video model, ...).

    panels: each (N, F, C, H, W) in [-1, 1] or uint8, with the same F; frame f of the player shows
    frame f of every clip, the N clips of a panel in a column.
    """
    panels = [_clips(p) for p in panels]
    lengths = {p.shape[1] for p in panels}
    if len(lengths) != 1:
        raise ValueError(f"every panel needs the same number of frames, got {[p.shape[1] for p in panels]}")
    n = lengths.pop()
    frames = [[grid(p[:, f], nrow=1) for f in range(n)] for p in panels]
    captions = [f"frame {f + 1} of {n}" for f in range(n)]
    return FramePlayer.from_panels(frames, titles=titles, captions=captions, scale=scale, interval_ms=interval_ms,
                                   description="frame")


def strips(clips: Sequence[torch.Tensor], captions: Sequence[str], scale: int = 3, description: str = "step",
           interval_ms: int = 400) -> FramePlayer:
    """One player frame per entry of `clips` (each (N, F, C, H, W); sizes and lengths may differ), drawn as `strip`s."""
    return FramePlayer([strip(c) for c in clips], captions=list(captions), scale=scale, description=description,
                       interval_ms=interval_ms)


@torch.no_grad()
def denoising_player(pipe, prompts: Sequence[str], steps: int = 20, seed: int = 0, shape: tuple | None = None,
                     scale: int = 3, show: Sequence[str] = ("x0_hat",)) -> FramePlayer:
    """Every frame of a clip denoised at once: at each reverse step, the clip as `show` asks, decoded.

    show picks the rows per prompt: "xt" the noisy clip x_t the sampler holds at that step (decoded
    as the VAE reads that noisy latent), "x0_hat" the model's prediction of the clean clip. The video
    DiT denoises all latent frames together, so the clip sharpens as a whole rather than frame after frame.
    """
    names = {"xt": "the noisy clip x_t", "x0_hat": "predicted clean clip"}
    if not show or any(key not in names for key in show):
        raise ValueError(f"show must name one or more of {', '.join(names)}, got {list(show)}")
    generator = torch.Generator(device=pipe.device).manual_seed(seed)
    videos, records = pipe.sample(len(prompts), generator, prompt=list(prompts), steps=steps, shape=shape,
                                  trajectory=True)
    decoded = [torch.cat([pipe.decode(r[key].to(pipe.device)).clamp(-1, 1) for key in show]) for r in records]
    rows = " over ".join(names[key] for key in show)
    captions = [f"step {i + 1} of {len(records)} · t = {r['t']} · {rows}, all frames at once"
                for i, r in enumerate(records)]
    return strips([*decoded, videos], [*captions, "the sample"], scale=scale)


@torch.no_grad()
def sdedit_player(edit, clips: torch.Tensor, prompts: Sequence[str], strengths: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
                  seed: int = 0, scale: int = 3) -> FramePlayer:
    """SDEdit strength slider: the clips edited towards `prompts` at each strength (top row of each: the input).

    edit(clips, prompts, strength, generator) -> edited clips, e.g. `recipes.video_modes.edit` bound to a pipeline.
    """
    shown = []
    for strength in strengths:
        generator = torch.Generator().manual_seed(seed)
        shown.append(torch.cat([clips[:1], edit(clips, list(prompts), strength, generator).cpu()]))
    captions = [f"strength {s:.1f}: noised to t = {round(s * 1000)} of 1000 and denoised; top row: the input"
                for s in strengths]
    return strips(shown, captions, scale=scale, description="strength")
