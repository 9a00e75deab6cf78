"""The ladder that judges a text-to-video model on moving-mnist, one rung at a time (chapter 7).

  real     held-out one-digit test clips: what the judge itself reads right (its ceiling)
  vae      the same clips through the video autoencoder: the most any generator on its latents can reach
  t2i      the model asked for one frame (an image): does it draw the asked-for digit at all?
  t2v      17-frame clips: the asked-for digit in every frame, and one digit per clip
  motion   does the ink move the way the prompt says? Beside it the same clips scored against a
           shuffled direction (chance) and the real clips' own figure
  modes    image-to-video and extension, scored on the frames they generate (not the given ones)

Digits are read by the course's LeNet on each frame cut to its digit (`frame_consistency`); motion is
the centre of ink's path over the first four frames. Every rung can be asked on digit x direction
pairs the model was trained on or on pairs held out of its training (`HELD_OUT_PAIRS`): that tests
compositional generalisation, as the captioned Moving MNIST papers (Sync-DRAW, MAGE) set it up.

`ladder(pipe)` climbs every rung for a text-to-video pipeline; the command writes its record:

    python -m minilineage.recipes.video_ladder videodit-moving-mnist   # -> assets/studies/ladder-videodit-moving-mnist.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from minilineage.checkpoint import load_model
from minilineage.data import load_dataset
from minilineage.data.video import DIRECTIONS, HELD_OUT_PAIRS, motion_caption, without_pairs  # noqa: F401 (the ladder names them too)
from minilineage.diffusion import DiffusionPipeline
from minilineage.recipes.dit_studies import STUDY_DIR
from minilineage.recipes.video import centres, frame_consistency, read_digits
from minilineage.recipes.video_modes import extend, image_to_video, text_to_video

MOTION_FRAMES = 4  # the motion is read over the first four frames, before most digits reach a wall
MAX_ANGLE = 60.0  # degrees between the ink's move and the prompt's direction
MIN_MOVE = 1.0  # pixels: a digit that moves less has not moved
ONE_DIGIT = 0.9  # a clip shows one digit when LeNet reads one class in at least this share of its frames

def prompt(digit: int, direction: int) -> str:
    """The one-digit prompt of a pair, in the captions' own words: "a 3 moves up-left", "an 8 moves down"."""
    return motion_caption([digit], [direction], [False])


def ladder_pairs(n: int, held_out: bool = False) -> torch.Tensor:
    """n (digit, direction) pairs (n, 2): digit i % 10 for the i-th, so every ten prompts ask for each digit once.

    Seen pairs (held_out=False) give digit d its 7 seen directions in turn, shifted by d so that each ten
    prompts spread over the directions too: 70 prompts ask every seen pair once. held_out=True gives each
    digit its held-out direction.
    """
    held = dict(HELD_OUT_PAIRS)
    pairs = []
    for i in range(n):
        d = i % 10
        seen = [k for k in range(len(DIRECTIONS)) if k != held[d]]
        pairs.append((d, held[d] if held_out else seen[(i // 10 + d) % len(seen)]))
    return torch.tensor(pairs)


def ink_moves(videos: torch.Tensor, directions: torch.Tensor, frames: int = MOTION_FRAMES) -> torch.Tensor:
    """Does each clip's ink move the way its direction says? (N,) bool, videos (N, F, 1, H, W), directions (N,).

    The move is the centre of ink's displacement from frame 0 to frame `frames` - 1; it follows the
    direction when it is at least MIN_MOVE pixels long and within MAX_ANGLE degrees of it.
    """
    path = centres(videos[:, :frames])  # (N, frames, 2) as (row, column)
    move = (path[:, -1] - path[:, 0]).flip(-1)  # (N, 2) as (x, y), y downwards like DIRECTIONS
    unit = torch.tensor([d for _, d in DIRECTIONS], dtype=torch.float32)[torch.as_tensor(directions)]  # (N, 2)
    cosine = (move * unit).sum(-1) / (move.norm(dim=-1) * unit.norm(dim=-1)).clamp(min=1e-6)
    return (move.norm(dim=-1) >= MIN_MOVE) & (cosine >= math.cos(math.radians(MAX_ANGLE)))


def motion_figures(videos: torch.Tensor, directions: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """motion: the share of clips whose ink moves as asked; motion_shuffled: the same clips scored against
    the directions of other clips (a random permutation), what a model that ignores the prompt gets."""
    directions = torch.as_tensor(directions)
    shuffled = directions[torch.randperm(len(directions), generator=torch.Generator().manual_seed(seed))]
    return {"motion": ink_moves(videos, directions).float().mean().item(),
            "motion_shuffled": ink_moves(videos, shuffled).float().mean().item()}


@torch.no_grad()
def digit_figures(videos: torch.Tensor, digits: torch.Tensor, classifier: nn.Module | None = None) -> dict[str, float]:
    """accuracy: the share of frames LeNet reads as the asked-for digit; for clips of 3 frames or more also
    `frame_consistency`'s identity, restyle, jump and jitter, and one_digit: the share of clips whose
    frames LeNet reads as one class in at least ONE_DIGIT of them. Videos (N, F, 1, H, W), digits (N,)."""
    classes, _ = read_digits(videos, classifier)  # (N, F)
    figures = {"accuracy": (classes == torch.as_tensor(digits)[:, None]).float().mean().item()}
    if videos.shape[1] < 3:
        return figures
    majority = classes.mode(dim=1).values  # (N,)
    agree = (classes == majority[:, None]).float().mean(dim=1)  # (N,)
    return {**frame_consistency(videos, digits, classifier), "one_digit": (agree >= ONE_DIGIT).float().mean().item()}


def real_clips(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n one-digit moving-mnist test clips (n, 17, 1, 32, 32) in [-1, 1], with their digits and directions (n,)."""
    data = load_dataset("moving-mnist", "test", n=n, digits=1)
    return data.float_images(), data.info["digits"][:, 0], data.info["directions"][:, 0]


@torch.no_grad()
def ladder(pipe: DiffusionPipeline, n: int = 100, steps: int = 50, guidance: float | None = None, seed: int = 0) -> dict:
    """Every rung for a text-to-video pipeline on moving-mnist: {rung: figures}.

    real and vae: n one-digit test clips and their reconstructions by the pipeline's autoencoder, each scored
    against its own digit and direction; t2i, t2v and held_out: n prompts of `ladder_pairs` (seen pairs;
    held-out pairs for held_out); i2v and extend: the real clips' first frames made into clips, and the real
    clips extended by two windows, each with its own clip's prompt and scored on the generated frames only.
    All sampled with DDIM `steps` at `guidance` (the pipeline's own by default) from generators seeded `seed`.
    """
    real, digits, directions = real_clips(n)
    rungs = {"real": {**digit_figures(real, digits), **motion_figures(real, directions)}}
    reconstructed = pipe.decode(pipe.encode(real.to(pipe.device))).clamp(-1, 1).cpu()
    rungs["vae"] = {**digit_figures(reconstructed, digits), **motion_figures(reconstructed, directions)}
    options = {"steps": steps, "guidance": pipe.config.guidance if guidance is None else guidance}
    for rung, frames, held_out in (("t2i", 1, False), ("t2v", None, False), ("held_out", None, True)):
        pairs = ladder_pairs(n, held_out)
        prompts = [prompt(d, k) for d, k in pairs.tolist()]
        started = time.perf_counter()
        clips = text_to_video(pipe, prompts, torch.Generator().manual_seed(seed), frames=frames, **options).cpu()
        figures = digit_figures(clips, pairs[:, 0])
        if clips.shape[1] > 1:
            figures |= motion_figures(clips, pairs[:, 1])
        rungs[rung] = {**figures, "sample_seconds": round(time.perf_counter() - started, 1)}
    # The modes that are given real frames, scored on the frames they generate only (the given ones would flatter
    # them): image-to-video from each real clip's first frame, and extension by two windows (24 new frames).
    prompts = [prompt(d, k) for d, k in zip(digits.tolist(), directions.tolist(), strict=True)]
    for rung, make, new in (("i2v", lambda g: image_to_video(pipe, real[:, 0], prompts, g, **options), 1),
                            ("extend", lambda g: extend(pipe, real, prompts, g, windows=2, **options), real.shape[1])):
        started = time.perf_counter()
        clips = make(torch.Generator().manual_seed(seed)).cpu()
        rungs[rung] = {**digit_figures(clips[:, new:], digits), "frames_scored": clips.shape[1] - new,
                       "sample_seconds": round(time.perf_counter() - started, 1)}
    return {"n": n, "steps": steps, **options, "rungs": rungs}


RUNGS = {  # rung: what it judges, as the table prints it
    "real": "held-out one-digit test clips",
    "vae": "the same clips through the VAE",
    "t2i": "text-to-image (frames=1)",
    "t2v": "text-to-video, seen pairs",
    "held_out": "text-to-video, held-out pairs",
    "i2v": "image-to-video, generated frames",
    "extend": "extension x2, the 24 new frames",
}


def study_record(kind: str, model: str) -> dict:
    """A video study's record of a shipped checkpoint, assets/studies/KIND-MODEL.json, made by `run_study` (the
    command `python -m minilineage.recipes.video_KIND MODEL`)."""
    path = STUDY_DIR / f"{kind}-{model}.json"
    if not path.exists():
        raise FileNotFoundError(f"no record {path}: make it with `python -m minilineage.recipes.video_{kind} {model}`")
    return json.loads(path.read_text())


def ladder_record(model: str) -> dict:
    """The ladder record of a shipped checkpoint, assets/studies/ladder-MODEL.json (made by this module's command)."""
    return study_record("ladder", model)


def ladder_table(record: dict) -> str:
    """A ladder record as a text table: per rung the asked-for digit, one digit per clip, identity and motion
    (with its shuffled-direction control), in percent; "-" where a rung has no such figure."""
    def cell(figures: dict, key: str) -> str:
        return f"{figures[key]:.0%}" if key in figures else "-"

    lines = [f"{record['n']} clips or prompts per rung, {record['steps']} DDIM steps, guidance {record['guidance']:g}",
             f"{'rung':34s} {'digit':>6s} {'one digit':>10s} {'identity':>9s} {'motion':>7s} {'shuffled':>9s}"]
    for rung, figures in record["rungs"].items():
        lines.append(f"{RUNGS.get(rung, rung):34s} {cell(figures, 'accuracy'):>6s} {cell(figures, 'one_digit'):>10s} "
                     f"{cell(figures, 'identity'):>9s} {cell(figures, 'motion'):>7s} {cell(figures, 'motion_shuffled'):>9s}")
    return "\n".join(lines)


def run_study(kind: str, parser: argparse.ArgumentParser, argv: list[str] | None,
              measure: Callable[[DiffusionPipeline, argparse.Namespace], dict], table: Callable[[dict], str]) -> dict:
    """The command of a video study (`python -m minilineage.recipes.video_KIND MODEL --n N --steps S ...`): load the
    text-to-video checkpoint, `measure` it, and write its record (how it was made, then the figures) to `--out`,
    by default assets/studies/KIND-MODEL.json; print it as `table` prints it. The parser has the study's options."""
    parser.add_argument("model", help="a checkpoint name (videodit-moving-mnist) or a .pt path")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default: 50)")
    parser.add_argument("--out", type=Path, default=None, help=f"the record's path (default: {STUDY_DIR.name}/{kind}-MODEL.json)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.steps < 1:
        parser.error("--n and --steps must be at least 1")
    pipe = load_model(args.model).eval()
    if not isinstance(pipe, DiffusionPipeline) or pipe.autoencoder is None:
        parser.error(f"{args.model} is not a latent text-to-video pipeline (e.g. videodit-moving-mnist)")
    load, started = os.getloadavg()[0], time.perf_counter()
    record = {"model": args.model, "command": f"python -m minilineage.recipes.video_{kind} " + " ".join(argv or sys.argv[1:]),
              "device": f"cpu ({torch.get_num_threads()} threads)", "machine": platform.processor() or platform.machine(),
              "load_average_at_start": round(load, 2), "torch": torch.__version__,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **measure(pipe, args)}
    record["wall_time_s"] = round(time.perf_counter() - started, 1)
    out = args.out or STUDY_DIR / f"{kind}-{Path(args.model).stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(table(record))
    print(f"wrote {out} in {record['wall_time_s']} s", file=sys.stderr)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minilineage.recipes.video_ladder",
                                     description="Climb chapter 7's ladder for a text-to-video checkpoint and write its record.")
    parser.add_argument("--n", type=int, default=100, help="clips and prompts per rung (default: 100)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the pipeline's own)")
    run_study("ladder", parser, argv, lambda pipe, args: ladder(pipe, args.n, args.steps, args.guidance), ladder_table)


if __name__ == "__main__":
    main()
