"""Object permanence on moving-mnist (chapter 7): two digits cross; does each come out of the overlap as itself?

The Sora report says its model keeps a thing's identity when it is hidden for a while and comes back. Here the
test fits in 32 x 32: two-digit test clips whose digits (two different classes) start apart, overlap in the
middle of the clip and part again (`crossing_clips`). The model is given the first five frames (two latent
frames: the digits, where they are and how they move) and the clip's caption, and generates the other twelve
(`video_modes.continue_video`); a tracker that knows how digits move (`track`) follows each digit through the overlap, and
the course's LeNet reads each digit after they part. A digit is kept when LeNet reads it as itself in most of
those frames, swapped when it reads it as the other digit.

The same judge reads the real clips (its ceiling) and their VAE reconstructions. The command writes the record
that chapter 7 prints:

    python -m minilineage.recipes.video_permanence videodit-moving-mnist   # -> assets/studies/permanence-....json
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple

import torch
from torch import nn

from minilineage.data import load_dataset
from minilineage.diffusion import DiffusionPipeline
from minilineage.metrics import load_classifier
from minilineage.recipes.video import crops_at
from minilineage.recipes.video_ladder import run_study, study_record
from minilineage.recipes.video_modes import continue_video

GIVEN = 5  # frames given to the model: 1 + 4, two latent frames
APART = 10.0  # pixels between the two digits' centres (16-pixel digits): they hardly overlap
MEET = 4.0  # pixels between their centres at the crossing: they cover each other
CANDIDATES = 20_000  # two-digit test clips searched for crossings (about 1 in 100 qualifies)


class Crossings(NamedTuple):
    clips: torch.Tensor  # (n, F, 1, S, S) in [-1, 1]
    digits: torch.Tensor  # (n, 2): two different classes
    centres: torch.Tensor  # (n, F, 2, 2): the middle of each digit's box, (x, y) pixels
    velocities: torch.Tensor  # (n, F, 2, 2): pixels per frame
    captions: list[str]


def crossing_clips(n: int, seed: int = 0) -> Crossings:
    """n two-digit test clips of 17 frames of 32 x 32 whose digits are two different classes, at least APART pixels
    apart over the GIVEN frames, at most MEET apart at some later frame, and APART again in three frames or more
    after it."""
    data = load_dataset("moving-mnist", "test", n=CANDIDATES, digits=2, seed=seed)
    digits = data.info["digits"]  # (N, 2)
    size = data.images.shape[-1] // 2  # the digits' side
    centre = data.info["positions"].float() + (size - 1) / 2  # (N, F, 2, 2)
    distance = (centre[:, :, 0] - centre[:, :, 1]).norm(dim=-1)  # (N, F)
    met = distance[:, GIVEN:].argmin(dim=1) + GIVEN  # (N,) the frame where they are closest
    after = torch.arange(distance.shape[1]) > met[:, None]  # (N, F)
    chosen = ((digits[:, 0] != digits[:, 1]) & (distance[:, :GIVEN].amin(dim=1) >= APART)
              & (distance.gather(1, met[:, None])[:, 0] <= MEET) & ((distance >= APART) & after).sum(1).ge(3))
    index = chosen.nonzero()[:, 0]
    if len(index) < n:
        raise ValueError(f"only {len(index)} crossing clips among {CANDIDATES} test clips, asked for {n}")
    index = index[:n]
    return Crossings(data.float_images()[index], digits[index], centre[index], data.info["velocities"][index],
                     [data.texts[i] for i in index.tolist()])


def reflect(centre: torch.Tensor, velocity: torch.Tensor, low: float, high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounce centres (..., 2) that left [low, high] back inside, turning their velocity (..., 2) as the walls do."""
    below, above = centre < low, centre > high
    centre = torch.where(below, 2 * low - centre, torch.where(above, 2 * high - centre, centre))
    return centre, torch.where(below | above, -velocity, velocity)


def ink_centres(ink: torch.Tensor, guess: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The centre of each digit's ink, guess (N, 2, 2) the two digits' guessed centres (x, y), ink (N, H, W) >= 0.

    A digit's ink is taken in a box of half the frame's side around its guess, from the pixels nearer its own
    guess than the other's (so that two boxes that overlap do not share ink). Returns the centres (N, 2, 2) and
    the ink's mass in each box (N, 2)."""
    height, width = ink.shape[-2:]
    half = min(height, width) / 4
    rows, cols = torch.arange(height).float(), torch.arange(width).float()
    dx = cols - guess[..., 0:1]  # (N, 2, W)
    dy = rows - guess[..., 1:2]  # (N, 2, H)
    box = (dy.abs() <= half).float()[..., :, None] * (dx.abs() <= half).float()[..., None, :]  # (N, 2, H, W)
    near = dy[..., :, None] ** 2 + dx[..., None, :] ** 2  # (N, 2, H, W): squared distance to each guess
    window = ink[:, None] * box * (near <= near.flip(1))  # (N, 2, H, W)
    mass = window.sum(dim=(2, 3))  # (N, 2)
    found = torch.stack([(window.sum(2) * cols).sum(2), (window.sum(3) * rows).sum(2)], dim=-1)
    return found / mass.clamp(min=1e-6)[..., None], mass


def track(videos: torch.Tensor, centre: torch.Tensor, velocity: torch.Tensor, start: int = GIVEN - 1) -> torch.Tensor:
    """Follow two digits through clips (N, F, 1, S, S) from frame `start` on, where their centres are `centre` and
    their velocities `velocity` (N, 2, 2), (x, y) in pixels. Returns the centres (N, F, 2, 2), `centre` before `start`.

    Each next centre is predicted from the last one and the digit's velocity, bounced off the walls. While the two
    predictions are APART, each is corrected to the centre of ink in a box of half the frame's side around it and
    the velocity half-way to the move made; while they overlap the ink cannot be told apart, and both coast.
    """
    frames, height, width = videos.shape[1], videos.shape[3], videos.shape[4]
    side = min(height, width) // 2  # a digit's side
    low, high = (side - 1) / 2, min(height, width) - 1 - (side - 1) / 2  # where a digit's centre can be
    ink = (videos[:, :, 0].float() + 1).clamp(min=0)  # (N, F, H, W), 0 on the black background
    centre, _ = ink_centres(ink[:, start], centre)  # the ink's own centres: corrections below move towards those
    path = [centre] * (start + 1)
    for t in range(start + 1, frames):
        predicted, velocity = reflect(path[-1] + velocity, velocity, low, high)  # (N, 2, 2)
        found, mass = ink_centres(ink[:, t], predicted)
        apart = (predicted[:, 0] - predicted[:, 1]).norm(dim=-1) >= APART  # (N,)
        use = (apart[:, None] & (mass > 0))[..., None]  # (N, 2, 1)
        centre = torch.where(use, found, predicted)
        velocity = torch.where(use, (velocity + centre - path[-1]) / 2, velocity)
        path.append(centre)
    return torch.stack(path, dim=1)  # (N, F, 2, 2)


@torch.no_grad()
def read_tracks(videos: torch.Tensor, centres: torch.Tensor, classifier: nn.Module | None = None) -> torch.Tensor:
    """LeNet's class of each tracked digit in every frame, (N, F, 2): an S/2 box around each centre (N, F, 2, 2),
    resized to MNIST's 28 x 28 as `video.digit_crops` does."""
    classifier = classifier or load_classifier()
    n, frames = videos.shape[:2]
    crops = crops_at(videos.flatten(0, 1).repeat_interleave(2, dim=0), centres.reshape(-1, 2))  # (N F 2, 1, 28, 28)
    device = next(classifier.parameters()).device
    return classifier(crops.to(device)).argmax(-1).cpu().reshape(n, frames, 2)


def permanence_figures(videos: torch.Tensor, crossings: Crossings) -> dict[str, float]:
    """Track both digits of clips (N, F, 1, S, S) from the last given frame of `crossings` (the real clips they show
    or continue) and read them after they part.

    crossed  the share of clips whose tracked digits met (within MEET + 2 pixels) after the given frames and
             were APART again in at least one later frame; the rest are not a test of permanence
    kept     of the digits of crossed clips, the share that LeNet reads as themselves in most frames after
             they part; swapped: as the other digit; the rest (neither) are lost: blurred, merged or restyled
    """
    digits = crossings.digits
    centres = track(videos, crossings.centres[:, GIVEN - 1], crossings.velocities[:, GIVEN - 1])  # (N, F, 2, 2)
    classes = read_tracks(videos, centres)  # (N, F, 2)
    distance = (centres[:, :, 0] - centres[:, :, 1]).norm(dim=-1)[:, GIVEN:]  # (N, F - GIVEN)
    met = distance.argmin(dim=1)  # (N,)
    after = (torch.arange(distance.shape[1]) > met[:, None]) & (distance >= APART)  # (N, F - GIVEN)
    crossed = (distance.amin(dim=1) <= MEET + 2) & after.any(dim=1)  # (N,)
    later = classes[:, GIVEN:]  # (N, F - GIVEN, 2)
    weight = after[..., None].float()  # (N, F - GIVEN, 1)
    own = ((later == digits[:, None, :]).float() * weight).sum(1) / weight.sum(1).clamp(min=1)  # (N, 2)
    other = ((later == digits.flip(1)[:, None, :]).float() * weight).sum(1) / weight.sum(1).clamp(min=1)
    tracks = crossed[:, None].expand(-1, 2)  # (N, 2)
    count = max(int(tracks.sum()), 1)
    return {"crossed": crossed.float().mean().item(), "kept": ((own > 0.5) & tracks).sum().item() / count,
            "swapped": ((other > 0.5) & tracks).sum().item() / count}


@torch.no_grad()
def permanence(pipe: DiffusionPipeline, n: int = 50, steps: int = 50, seed: int = 0) -> dict:
    """`permanence_figures` for n crossing clips: real, through the VAE, and continued by the model from their first
    GIVEN frames with their own captions (the frames it generates are scored; the given ones are before the crossing)."""
    crossings = crossing_clips(n)
    clips = crossings.clips
    rows = {"real": clips, "vae": pipe.decode(pipe.encode(clips.to(pipe.device))).clamp(-1, 1).cpu()}
    started = time.perf_counter()
    rows["model"] = continue_video(pipe, clips[:, :GIVEN].to(pipe.device), crossings.captions,
                                   torch.Generator().manual_seed(seed), clips.shape[1], steps=steps).cpu()
    seconds = round(time.perf_counter() - started, 1)
    figures = {name: permanence_figures(videos, crossings) for name, videos in rows.items()}
    figures["model"]["sample_seconds"] = seconds
    return {"n": n, "searched": CANDIDATES, "steps": steps, "guidance": pipe.config.guidance, "given_frames": GIVEN,
            "rows": figures}


def permanence_table(record: dict) -> str:
    """A permanence record as a text table, in percent."""
    lines = [f"{record['n']} crossing clips (the first found among {record['searched']:,} two-digit test clips), "
             f"{record['given_frames']} frames given, {record['steps']} DDIM steps, guidance {record['guidance']:g}",
             f"{'clips':34s} {'crossed':>8s} {'kept':>6s} {'swapped':>8s}"]
    names = {"real": "real test clips", "vae": "through the VAE", "model": "continued by the model"}
    for name, f in record["rows"].items():
        lines.append(f"{names.get(name, name):34s} {f['crossed']:8.0%} {f['kept']:6.0%} {f['swapped']:8.0%}")
    return "\n".join(lines)


def permanence_record(model: str) -> dict:
    """The permanence record of a shipped checkpoint, assets/studies/permanence-MODEL.json (made by this command)."""
    return study_record("permanence", model)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minilineage.recipes.video_permanence",
                                     description="Measure object permanence (two digits crossing) and write the record.")
    parser.add_argument("--n", type=int, default=100, help="crossing clips (default: 100)")
    run_study("permanence", parser, argv, lambda pipe, args: permanence(pipe, args.n, args.steps), permanence_table)


if __name__ == "__main__":
    main()
