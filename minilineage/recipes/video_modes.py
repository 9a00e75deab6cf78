"""Every inference mode of chapter 7 from one video diffusion checkpoint: which latent frames are given.

A video DiT trained with random frame masks (`data.video.frame_masks`, `masked_eps_loss`) reads
clean frames marked with timestep 0 as a condition. Choosing which latent frames to give is then
the whole difference between the modes (Open-Sora 1.x; the Sora report shows the same set):

  text_to_video    nothing given (text_to_image: the same, one frame)
  image_to_video   latent frame 0 = the encoded image
  continue_video   the first latent frames = a clip's encoded start (video prediction)
  extend           the last `keep` latents, again and again
  interpolate      the first and the last latent frame
  merge            the end of one clip, the start of another
  edit             no mask: SDEdit, the clip's latents noised part way and denoised (Meng et al. 2021)

All of it happens in the causal VAE's latent space, where an image is a 1-frame clip: its latent
is exactly the first latent frame of any clip that starts with it. Latents are decoded once, at the
end, so a clip extended to several windows is decoded as one long latent video.
"""

from __future__ import annotations

import torch
from torch import Tensor

from minilineage.diffusion import DiffusionPipeline, GivenFrames, sdedit

Prompts = list[str] | Tensor  # one prompt per clip, or one class label per clip (n,) for a label-conditioned model


def latent_shape(pipe: DiffusionPipeline, frames: int | None = None,
                 size: int | tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """(f, c, h, w) of clips of `frames` frames of size x size, or (H, W) = size (default: the autoencoder's
    training clips); ValueError naming the sizes that fit."""
    config = pipe.autoencoder.config
    height, width = config.frame_size if size is None else (size, size) if isinstance(size, int) else size
    return pipe.autoencoder.latent_size(config.frames if frames is None else frames, height, width)


def conditioning(pipe: DiffusionPipeline, prompts: Prompts, n: int) -> dict:
    """The denoiser's keywords for n clips: a prompt each for a text model, a class label each (n,) for
    a class-conditional one (`videodit-ucf101`), nothing for an unconditional one."""
    return {} if pipe.condition is None else pipe.conditioning(n, **{pipe.condition.option: prompts})


@torch.no_grad()
def sample_latents(pipe: DiffusionPipeline, prompts: Prompts, generator: torch.Generator, shape: tuple[int, ...],
                   given: GivenFrames | None = None, steps: int | None = None, guidance: float | None = None) -> Tensor:
    """Scaled latents z0 (n, f, c, h, w) for one prompt (or label) each: what `pipe.sample` makes before decoding."""
    cond = conditioning(pipe, prompts, len(prompts))
    guidance = pipe.config.guidance if guidance is None else guidance
    return pipe.objective.sample(pipe.denoiser(guidance), pipe.sched, (len(prompts), *shape),
                                 steps or pipe.config.sample_steps, generator, pipe.device, False,
                                 pipe.config.clip_x0, given, **cond)


def _given(z0: Tensor, slots: dict[int, Tensor]) -> GivenFrames:
    """GivenFrames over latents shaped like z0 (n, f, ...) with slots {latent frame index: latents (n, ...)}."""
    x0, mask = torch.zeros_like(z0), torch.zeros(z0.shape[:2], dtype=torch.bool, device=z0.device)
    for index, value in slots.items():
        x0[:, index], mask[:, index] = value, True
    return GivenFrames(x0, mask)


def text_to_video(pipe: DiffusionPipeline, prompts: Prompts, generator: torch.Generator, frames: int | None = None,
                  size: int | tuple[int, int] | None = None, **options) -> Tensor:
    """Clips (n, frames, C, H, W) from prompts alone, H = W = size or (H, W) = size; frames = 1 gives images
    (text-to-image)."""
    return pipe.decode(sample_latents(pipe, prompts, generator, latent_shape(pipe, frames, size), **options)).clamp(-1, 1)


def continue_video(pipe: DiffusionPipeline, starts: Tensor, prompts: Prompts, generator: torch.Generator,
                   frames: int | None = None, **options) -> Tensor:
    """Clips of `frames` frames that start with the given frames, starts (n, 1 + 4k, C, H, W): their k + 1 latent
    frames are fixed and the rest is sampled (video prediction). Returns the whole clips, the start re-decoded."""
    z = pipe.encode(starts)  # (n, k + 1, c, h, w)
    shape = latent_shape(pipe, frames, tuple(starts.shape[-2:]))
    if z.shape[1] >= shape[0]:
        raise ValueError(f"{starts.shape[1]} given frames ({z.shape[1]} latent frames) leave nothing to generate in a clip "
                         f"of {shape[0]} latent frames; ask for more frames")
    given = _given(torch.zeros(len(starts), *shape, device=pipe.device), dict(enumerate(z.unbind(1))))
    return pipe.decode(sample_latents(pipe, prompts, generator, shape, given, **options)).clamp(-1, 1)


def image_to_video(pipe: DiffusionPipeline, images: Tensor, prompts: Prompts, generator: torch.Generator,
                   frames: int | None = None, **options) -> Tensor:
    """Clips that start with the given images (n, C, H, W): latent frame 0 is each image's own latent."""
    return continue_video(pipe, images[:, None], prompts, generator, frames, **options)  # an image is a 1-frame video


def tail_latents(pipe: DiffusionPipeline, z: Tensor, keep: int, pixels: Tensor | None = None) -> Tensor:
    """The last `keep` latent frames of latents z (n, f, c, h, w) as a window's first `keep` slots: the last
    1 + r (keep - 1) frames encoded again (r: the VAE's frames per latent), so that slot 0 holds a first-frame
    latent, one frame encoded alone, the only kind training ever put there. z's own last latents would put a
    latent of r frames in the middle of a clip into slot 0. The frames are `pixels` (n, F, C, H, W) when the
    clip's own frames are at hand, else z decoded."""
    frames = 1 + pipe.autoencoder.config.temporal_downsample * (keep - 1)
    return pipe.encode((pipe.decode(z) if pixels is None else pixels)[:, -frames:])  # (n, keep, c, h, w)


def extend(pipe: DiffusionPipeline, clips: Tensor, prompts: Prompts, generator: torch.Generator, windows: int = 1,
           keep: int = 2, reencode: bool = False, **options) -> Tensor:
    """Continue clips (n, F, C, H, W) by `windows` more windows: each window is given the last `keep`
    latent frames so far and adds f - keep new ones. Returns the whole clip, decoded in one go.

    Slot 0 of a window then holds a latent of 4 frames from the middle of a clip, where training only ever
    put a first-frame latent; reencode=True gives it one (`tail_latents`). Measured on the first design of videodit-moving-mnist
    (100 clips, two windows, the 24 new frames read as the clip's digit; seeds 0 and 1): 41 % and 38 % as z's
    own against 38 % and 36 % re-encoded from the clip's frames (36 % from its reconstruction, seed 0), so the
    mismatch does not hurt that model; nor the shipped design (seed 0: 67.5 % as z's own, 65.9 % re-encoded from
    the frames), so the default keeps z's own."""
    z = pipe.encode(clips)  # (n, f, c, h, w)
    f = z.shape[1]
    if not 1 <= keep < f:
        raise ValueError(f"keep must be between 1 and {f - 1} latent frames, got {keep}")
    for window_index in range(windows):
        pixels = clips if window_index == 0 else None  # the input's own frames, not their reconstruction
        tail = tail_latents(pipe, z, keep, pixels) if reencode else z[:, -keep:]  # (n, keep, c, h, w)
        given = _given(z[:, :f], {i: tail[:, i] for i in range(keep)})
        window = sample_latents(pipe, prompts, generator, (f, *z.shape[2:]), given, **options)
        z = torch.cat([z, window[:, keep:]], dim=1)  # (n, f_so_far + f - keep, c, h, w)
    return pipe.decode(z).clamp(-1, 1)


def interpolate(pipe: DiffusionPipeline, clips: Tensor, prompts: Prompts, generator: torch.Generator,
                **options) -> Tensor:
    """Keep the first and the last latent frame of clips (n, F, C, H, W) and regenerate everything between."""
    z = pipe.encode(clips)
    given = _given(z, {0: z[:, 0], z.shape[1] - 1: z[:, -1]})
    return pipe.decode(sample_latents(pipe, prompts, generator, tuple(z.shape[1:]), given, **options)).clamp(-1, 1)


def merge(pipe: DiffusionPipeline, first: Tensor, second: Tensor, prompts: Prompts, generator: torch.Generator,
          keep: int = 2, reencode: bool = False, **options) -> Tensor:
    """One clip from two: the first clip, a transition the model fills in, then the second clip.

    The window is given the last `keep` latent frames of `first` at its start (re-encoded, reencode=True,
    so that slot 0 is a first-frame latent: see `extend`) and latent frames 1 .. keep of `second` at its end (latent 0
    of a clip encodes its first frame alone, a different kind of latent from those in the middle of a
    clip). Returns all of `first`, the new latents and the rest of `second`, decoded together.
    """
    za, zb = pipe.encode(first), pipe.encode(second)  # (n, f, c, h, w) each
    f = za.shape[1]
    if not 1 <= keep <= (f - 1) // 2:
        raise ValueError(f"keep must be between 1 and {(f - 1) // 2} latent frames to leave one to generate, got {keep}")
    tail = tail_latents(pipe, za, keep, first) if reencode else za[:, -keep:]  # (n, keep, c, h, w)
    slots = {i: tail[:, i] for i in range(keep)} | {f - keep + i: zb[:, 1 + i] for i in range(keep)}
    window = sample_latents(pipe, prompts, generator, tuple(za.shape[1:]), _given(za, slots), **options)
    z = torch.cat([za, window[:, keep : f - keep], zb[:, 1:]], dim=1)
    return pipe.decode(z).clamp(-1, 1)


@torch.no_grad()
def edit(pipe: DiffusionPipeline, clips: Tensor, prompts: Prompts, strength: float, generator: torch.Generator,
         steps: int | None = None, guidance: float | None = None) -> Tensor:
    """SDEdit on video latents: noise the clips' latents to t = strength T and denoise them with the prompts.

    Meng et al. 2021: strength 0 returns the clip (as the VAE reconstructs it), 1 ignores it.
    Every frame is noised to the same t and denoised together, so the edit stays coherent in time.
    """
    z0 = pipe.encode(clips)  # (n, f, c, h, w)
    cond = conditioning(pipe, prompts, len(z0))
    model = pipe.denoiser(pipe.config.guidance if guidance is None else guidance)
    z = sdedit(model, pipe.sched, z0, strength, steps or pipe.config.sample_steps, generator, 0.0, pipe.config.clip_x0,
               **cond)
    return pipe.decode(z).clamp(-1, 1)
