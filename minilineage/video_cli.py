"""`minilineage sample` for video checkpoints: the inference modes, their input clips, and clips on disk.

A video checkpoint is a `DiffusionPipeline` whose autoencoder is the causal `VAE3d` (and whose
denoiser is a `VideoDiT`). Every mode is one function of `recipes.video_modes`; this module only
picks the mode, checks its inputs before any work, and writes the clips:

  .npz  uint8 `images` (N, F, C, H, W) (+ `labels`), the format --init-video reads back
  .gif  one grid of the N clips per frame (Pillow)     .mp4  the same grids as H.264 (PyAV, `video` extra)
  .png  one still grid: a row per clip, a column per frame (images, --frames 1: one square grid)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from minilineage.data import to_float, to_uint8
from minilineage.diffusion import DiffusionPipeline
from minilineage.metrics import load_samples
from minilineage.models import VAE3d
from minilineage.recipes import video_modes as modes

MODES = {  # mode -> what it does (the --mode help); INPUTS: how many --init-video files it takes
    "t2v": "text to video (--frames 1: text to image)",
    "i2v": "image to video: the first frame of each --init-video clip (or each image of an image .npz) is given",
    "extend": "continue each --init-video clip (or one drawn from the prompt) by --windows windows",
    "interpolate": "keep the first and last frames of each --init-video clip, regenerate those between",
    "merge": "clip i of the first --init-video file, a generated transition, then clip i of the second",
    "edit": "SDEdit: noise each --init-video clip part way (--strength) and denoise it with the prompt",
}
INPUTS = {"t2v": (0,), "i2v": (1,), "extend": (0, 1), "interpolate": (1,), "merge": (2,), "edit": (1,)}
VIDEO_FLAGS = ("frames", "size", "mode", "init_video", "strength", "windows", "keep", "fps")
CLIP_SUFFIXES = (".npz", ".gif", ".mp4", ".png")
EPILOG = "\n".join([
    "video modes (--mode):", *(f"  {mode:12s} {what}" for mode, what in MODES.items()),
    "Without --prompt a video model samples unconditionally (the empty prompt); a class-conditional one",
    "(videodit-ucf101) takes --labels instead, cycled over the clips (none: the classes in turn). For example:",
    '  minilineage sample CKPT --prompt "a 3 moves right" --n 8 --frames 17 --out v.gif',
    "  minilineage sample CKPT --init-video v.npz --strength 0.6 --out edited.npz",
    "  minilineage sample CKPT --mode extend --init-video v.npz --windows 3 --out long.mp4",
    "  minilineage sample runs/videodit-ucf101.pt --labels 0-9 --n 10 --out actions.gif",
])


def is_video_model(model) -> bool:
    """A diffusion pipeline inside the causal 3-D VAE: the checkpoints these modes apply to."""
    return isinstance(model, DiffusionPipeline) and isinstance(model.autoencoder, VAE3d)


def refuse_video_flags(model, args, images_ok: bool) -> None:
    """ValueError when a model that is not a video checkpoint is given video flags or a video --out."""
    given = [flag(name) for name in VIDEO_FLAGS if getattr(args, name) is not None]
    if given or not images_ok:
        what = ", ".join(given) or f"--out {Path(args.out).suffix}"
        raise ValueError(f"{type(model).__name__} ({model.checkpoint_info.get('recipe')}) is not a video model: {what} "
                         f"only appl{'y' if len(given) > 1 else 'ies'} to video checkpoints (a VAE3d autoencoder "
                         "with a VideoDiT, e.g. videodit-moving-mnist)")


def flag(name: str) -> str:
    """An argparse dest as the user typed it: init_video -> --init-video."""
    return "--" + name.replace("_", "-")


def resolve_mode(args) -> str:
    """The mode asked for (default: edit with --strength, else t2v), after checking the flags that go with it."""
    mode = args.mode or ("edit" if args.strength is not None else "t2v")
    files = len(args.init_video or ())
    if files not in INPUTS[mode]:
        wanted = " or ".join(f"{k} --init-video file{'s' if k > 1 else ''}" if k else "no --init-video" for k in INPUTS[mode])
        hint = "" if files == 0 or args.mode else "; with --init-video choose --mode i2v, extend, interpolate or merge, or give --strength (edit)"
        raise ValueError(f"--mode {mode} takes {wanted}, got {files}{hint}")
    only = {"strength": ("edit",), "windows": ("extend",), "keep": ("extend", "merge")}
    for name, valid in only.items():
        if getattr(args, name) is not None and mode not in valid:
            raise ValueError(f"{flag(name)} is for --mode {' or '.join(valid)}, not --mode {mode}")
    if mode == "edit" and args.strength is None:
        raise ValueError("--mode edit needs --strength S in [0, 1] (0 keeps the clip, 1 ignores it)")
    if args.strength is not None and not 0 <= args.strength <= 1:
        raise ValueError(f"--strength must be in [0, 1], got {args.strength}")
    drawn = {  # what a flag sets, and when there is such a clip: otherwise the --init-video clips fix it
        "frames": ("length", "made from the prompt or an image (--mode t2v, i2v, or extend without --init-video)",
                   mode in ("t2v", "i2v") or not files),
        "size": ("size", "drawn from the prompt (--mode t2v, or extend without --init-video)",
                 mode == "t2v" or (mode == "extend" and not files)),
    }
    for name, (what, when, allowed) in drawn.items():
        if getattr(args, name) is not None and not allowed:
            raise ValueError(f"{flag(name)} sets the {what} of a clip {when}; --mode {mode} keeps the {what} of its "
                             "--init-video clips")
    return mode


def check_fits(pipe: DiffusionPipeline, frames: int, height: int, width: int) -> None:
    """ValueError naming the lengths and sizes that fit: 1 + 4k frames (the causal VAE), and sides that
    are multiples of the VAE's downsampling times the DiT's patch."""
    f, _, h, _ = pipe.autoencoder.latent_size(frames, height, width)  # frames and the VAE's stride of 4
    p, p_t = pipe.net.config.patch, pipe.net.config.patch_t
    stride = height // h * p  # pixels per token side
    for side in (height, width):
        if side % stride:
            below = max(stride, side // stride * stride)
            raise ValueError(f"frame size {side} does not fit: the VAE's {height // h}x downsampling times the DiT's "
                             f"patch {p} needs a multiple of {stride}; use {below} or {below + stride}")
    if f % p_t:
        raise ValueError(f"{frames} frames give {f} latent frames, not a multiple of the DiT's temporal patch {p_t}")


def load_clips(path: str, pipe: DiffusionPipeline, images_ok: bool = False) -> Tensor:
    """Clips (N, F, C, H, W) in [-1, 1] from an .npz `minilineage sample` wrote; images (N, C, H, W) if images_ok."""
    array, _ = load_samples(path)
    c = pipe.autoencoder.config.channels
    shapes = "(N, F, C, H, W)" + (" or images (N, C, H, W)" if images_ok else "")
    if array.dtype != np.uint8 or array.ndim not in ((4, 5) if images_ok else (5,)) or array.shape[-3] != c:
        raise ValueError(f"{path}: expected uint8 `images` {shapes} with C = {c}, got {array.dtype} {array.shape}")
    frames, height, width = (1 if array.ndim == 4 else array.shape[1]), *array.shape[-2:]
    try:
        check_fits(pipe, frames, height, width)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return to_float(torch.from_numpy(array))


def run_mode(pipe: DiffusionPipeline, mode: str, inputs: list[Tensor], prompts: list[str],
             generator: torch.Generator, args) -> Tensor:
    """One batch of clips (n, F, C, H, W) in [-1, 1] from the mode's function in `recipes.video_modes`."""
    options = {"steps": args.steps, "guidance": args.guidance}
    keep = {} if args.keep is None else {"keep": args.keep}
    if mode == "t2v" or (mode == "extend" and not inputs):
        clips = modes.text_to_video(pipe, prompts, generator, args.frames, args.size, **options)
        return clips if mode == "t2v" else modes.extend(pipe, clips, prompts, generator, args.windows or 1, **keep, **options)
    if mode == "i2v":
        first = inputs[0] if inputs[0].ndim == 4 else inputs[0][:, 0]  # (n, C, H, W)
        return modes.image_to_video(pipe, first, prompts, generator, args.frames, **options)
    if mode == "extend":
        return modes.extend(pipe, inputs[0], prompts, generator, args.windows or 1, **keep, **options)
    if mode == "interpolate":
        return modes.interpolate(pipe, inputs[0], prompts, generator, **options)
    if mode == "merge":
        return modes.merge(pipe, inputs[0], inputs[1], prompts, generator, **keep, **options)
    return modes.edit(pipe, inputs[0], prompts, args.strength, generator, **options)


def sample_clips(pipe: DiffusionPipeline, args, generator: torch.Generator) -> np.ndarray:
    """uint8 clips (N, F, C, H, W) for `minilineage sample` on a video checkpoint, --batch-size at a time."""
    mode = resolve_mode(args)
    inputs = [load_clips(path, pipe, images_ok=mode == "i2v") for path in args.init_video or ()]
    if len(inputs) == 2 and inputs[0].shape[1:] != inputs[1].shape[1:]:
        raise ValueError(f"--mode merge needs clips of one shape, got {tuple(inputs[0].shape[1:])} and "
                         f"{tuple(inputs[1].shape[1:])}")
    if not inputs or mode == "i2v":
        config = pipe.autoencoder.config
        height, width = args.size if args.size else inputs[0].shape[-2:] if inputs else config.frame_size
        check_fits(pipe, args.frames or config.frames, height, width)
    n = args.n or max((len(x) for x in inputs), default=64)
    inputs = [x[torch.arange(n) % len(x)] for x in inputs]  # one output per input clip, cycled to --n
    prompts = clip_conditions(pipe, args, n)
    clips = []
    for start in range(0, n, args.batch_size):
        part = slice(start, start + args.batch_size)
        batch = [x[part].to(pipe.device) for x in inputs]
        clips.append(to_uint8(run_mode(pipe, mode, batch, prompts[part], generator, args)))
    return torch.cat(clips).numpy()


def clip_conditions(pipe: DiffusionPipeline, args, n: int) -> modes.Prompts:
    """What each of n clips is made from: --prompt for a text model (no prompt: the empty one, i.e.
    unconditional), --labels cycled to n for a class-conditional one (none: the classes in turn)."""
    if pipe.condition is not None and pipe.condition.option == "labels":
        return cycled(range(pipe.condition.num_classes) if args.labels is None else args.labels, n)
    return [args.prompt or ""] * n


def cycled(labels, n: int) -> Tensor:
    """n labels (n,) going round `labels` (--labels 0-9 for 25 clips: 0..9, 0..9, 0..4)."""
    labels = torch.as_tensor(list(labels))
    return labels[torch.arange(n) % len(labels)]


def frame_grids(clips: np.ndarray, pad: int = 2) -> np.ndarray:
    """Clips (N, F, C, H, W) uint8 -> one near-square grid of the N clips per frame, (F, H', W', 3) RGB with even sides."""
    from torchvision.utils import make_grid

    x = torch.from_numpy(clips)
    nrow = math.ceil(math.sqrt(len(x)))
    grids = torch.stack([make_grid(x[:, t], nrow=nrow, padding=pad) for t in range(x.shape[1])])  # (F, 3, H', W')
    grids = torch.nn.functional.pad(grids, (0, grids.shape[-1] % 2, 0, grids.shape[-2] % 2))  # H.264 wants even sides
    return grids.permute(0, 2, 3, 1).contiguous().numpy()  # (F, H', W', 3)


def write_gif(grids: np.ndarray, out: Path, fps: int) -> None:
    from PIL import Image

    frames = [Image.fromarray(g) for g in grids]
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)


def write_mp4(grids: np.ndarray, out: Path, fps: int) -> None:
    try:
        import av
    except ModuleNotFoundError:
        raise ModuleNotFoundError("writing .mp4 needs PyAV: pip install -e .[video] (or write .gif)") from None
    with av.open(str(out), mode="w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        stream.height, stream.width = grids.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for grid in grids:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(grid, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder's delayed frames


def save_clips(clips: np.ndarray, out: Path, labels: np.ndarray | None = None, fps: int = 8) -> None:
    """Clips (N, F, C, H, W) uint8 as .npz (`images`, `labels`), a .gif or .mp4 of frame grids, or a .png still."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        np.savez_compressed(out, images=clips, **({} if labels is None else {"labels": labels}))
    elif out.suffix == ".png":
        from torchvision.utils import make_grid, save_image

        frames = torch.from_numpy(clips).flatten(0, 1).float() / 255  # (N F, C, H, W): a row per clip
        per_row = clips.shape[1] if clips.shape[1] > 1 else math.ceil(math.sqrt(len(clips)))  # images: a square grid
        save_image(make_grid(frames, nrow=per_row, padding=2), out)
    else:
        (write_gif if out.suffix == ".gif" else write_mp4)(frame_grids(clips), out, fps)
