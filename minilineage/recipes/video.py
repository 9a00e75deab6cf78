"""Chapter 7's recipes and the figures that judge them: video autoencoding and video diffusion.

  vae3d-moving-mnist      the causal spatio-temporal VAE: 17 x 32 x 32 clips <-> 5 x 4 x 8 x 8 latents
  videodit-moving-mnist   a video DiT on those latents, text prompts, random frame masks (every mode)
  vae3d-ucf101            the same VAE for UCF-101's RGB clips, 17 x 48 x 64 <-> 5 x 8 x 12 x 16 (GPU)
  videodit-ucf101         a class-conditional video DiT on those latents, 240 tokens (GPU)

The figures (used by the recipes' evaluations, by chapter 7 and by its tests):
  reconstruction_figures  squared error, PSNR and temporal flicker of reconstructed clips
  frame_consistency       does a clip keep its digit, and does the digit move smoothly?
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import torch
from torch import nn
from torchvision.ops import roi_align

from minilineage.checkpoint import load_model
from minilineage.data import ArrayData, load_dataset, staged_batches
from minilineage.data.video import (
    DIRECTIONS,
    masked_bucket_batches,
    window_batches,
    without_pairs,
)
from minilineage.diffusion import DiffusionPipeline, diffusion_loss
from minilineage.metrics import lenet_features, load_classifier
from minilineage.models.latent import LatentVAE
from minilineage.models.vae3d import VAE3d, vae3d_loss
from minilineage.models.video_dit import VIDEO_DIT_SIZES
from minilineage.recipes.core import Preset, Recipe, register
from minilineage.train import TrainConfig

EVAL_CLIPS = 100  # moving-mnist test clips (17 frames of 32 x 32) behind every reconstruction figure


@torch.no_grad()
def reconstruction_figures(x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, float]:
    """How close reconstructed clips x_hat are to clips x, both (N, F, C, H, W) in [-1, 1].

    mse      mean squared error per pixel, in the [-1, 1] units the models see.
    psnr     10 log10(1 / mse') in dB, mse' measured on [0, 1] pixels (mse / 4), as usual for images.
    flicker  root mean square of (x_hat[f+1] - x_hat[f]) - (x[f+1] - x[f]): the change from one frame
             to the next that the reconstruction invents or misses. A per-frame coder can match every
             frame well on average and still flicker, because its errors are independent frame to frame.
    """
    if x.shape != x_hat.shape or x.ndim != 5 or x.shape[1] < 2:
        raise ValueError(f"need two batches of clips (N, F >= 2, C, H, W) of one shape, got {tuple(x.shape)} "
                         f"and {tuple(x_hat.shape)}")
    x, x_hat = x.double(), x_hat.double().clamp(-1, 1)
    mse = (x_hat - x).square().mean().item()
    change = (x_hat[:, 1:] - x_hat[:, :-1]) - (x[:, 1:] - x[:, :-1])  # (N, F-1, C, H, W)
    psnr = 10 * math.log10(4 / mse) if mse > 0 else math.inf
    return {"mse": mse, "psnr": psnr, "flicker": change.square().mean().sqrt().item()}


@torch.no_grad()
def per_frame(autoencoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Reconstruct clips (N, F, C, H, W) with an image autoencoder applied to every frame alone (mean latent)."""
    frames = x.flatten(0, 1)  # (N F, C, H, W)
    return autoencoder.decode(autoencoder.encode(frames)[0]).reshape(x.shape)


def image_vae_at(size: int, device: torch.device | str = "cpu") -> LatentVAE:
    """Chapter 4's 2-D VAE (`latent-vae-mnist`, trained on 28 x 28 digits) for size x size frames.

    The network is fully convolutional, so the same weights apply to any size divisible by 4;
    only the config's size (which `encode` checks) changes.
    """
    trained = load_model("latent-vae-mnist", device=device)
    vae = LatentVAE(replace(trained.config, size=size)).to(device)
    vae.load_state_dict(trained.state_dict())
    return vae.eval()


def eval_clips(n: int = EVAL_CLIPS) -> torch.Tensor:
    """The held-out clips every reconstruction figure is measured on: (n, 17, 1, 32, 32) floats."""
    return load_dataset("moving-mnist", "test", n=n).float_images()


@torch.no_grad()
def eval_vae3d(model: VAE3d, device: torch.device) -> dict:
    """Reconstruction figures of the spatio-temporal VAE, beside chapter 4's 2-D VAE applied per frame."""
    x = eval_clips().to(device)
    model = model.eval()
    figures = {f"vae3d_{k}": round(v, 5) for k, v in reconstruction_figures(x, model(x)).items()}
    image_vae = image_vae_at(model.config.size, device)
    figures |= {f"vae2d_{k}": round(v, 5) for k, v in reconstruction_figures(x, per_frame(image_vae, x)).items()}
    f, c, h, w = model.latent_shape
    figures["numbers_per_clip"] = {"pixels": math.prod(x.shape[1:]), "vae3d_latent": f * c * h * w,
                                   "vae2d_latent": x.shape[1] * image_vae.config.latent_channels * h * w}
    return figures


# The VAE trains on 9-frame windows (2 latent frames), where every frame gets its turn in first
# place; being fully convolutional and causal it then encodes clips of any 1 + 4k frames.
# Steps, not latent width, decide how well its clips keep their digit: on 100 held-out clips the
# course's LeNet read the right digit in 67 % of reconstructed frames after 700 steps, 86 % after
# 3,000, and the same with 8 latent channels as with 4 (issue 13's note). Below ~80 % no video DiT
# on these latents could reach the chapter's target, so the CPU preset trains 4,500 steps.
register(Recipe(
    "vae3d-moving-mnist", "Chapter 7: causal spatio-temporal VAE, 17x32x32 clips <-> 5x4x8x8 latents (4x in time, 4x4 in space)",
    VAE3d, {"width": 16, "latent_channels": 4, "temporal_downsample": 4, "beta": 0.01}, vae3d_loss, {
        "cpu": Preset("moving-mnist", TrainConfig(steps=4500, batch_size=16, lr=3e-3, warmup_steps=50)),
        "gpu": Preset("moving-mnist", TrainConfig(steps=10_000, batch_size=64, lr=2e-3, warmup_steps=200),
                      {"width": 64}),
    }, eval_vae3d, lambda data, batch_size: window_batches(data, batch_size, 9)))


def crops_at(frames: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Frames (M, 1, H, W) cut to a digit's box, an S/2 x S/2 square (a moving-mnist digit's size, S = min(H, W))
    around each centre (M, 2) as (x, y) pixels, resized to MNIST's 28 x 28: (M, 1, 28, 28)."""
    half = min(frames.shape[-2:]) / 4
    x, y = centres[:, 0], centres[:, 1]
    boxes = torch.stack([torch.arange(len(frames)).float(), x - half + 0.5, y - half + 0.5,
                         x + half + 0.5, y + half + 0.5], dim=1)  # (M, 5): item, x1, y1, x2, y2 in pixel corners
    return roi_align(frames.float() + 1, boxes, output_size=28, aligned=True) - 1


def digit_crops(videos: torch.Tensor) -> torch.Tensor:
    """Every frame of clips of one digit (N, F, 1, H, W) cut to the digit and resized to MNIST's 28 x 28.

    The crop is an S/2 x S/2 box (a moving-mnist digit's size) centred on the frame's centre of ink,
    so the classifier sees the digit as large and as centred as in MNIST. Returns (N F, 1, 28, 28).
    """
    return crops_at(videos.flatten(0, 1), centres(videos).flatten(0, 1).flip(-1))  # centres as (x, y)


def centres(videos: torch.Tensor) -> torch.Tensor:
    """The centre of ink of every frame of clips (N, F, 1, H, W): (N, F, 2) as (row, column) in pixels."""
    ink = (videos[:, :, 0].float() + 1).clamp(min=0)  # (N, F, H, W)
    mass = ink.sum(dim=(2, 3)).clamp(min=1e-6)  # (N, F)
    rows, cols = torch.arange(videos.shape[3]).float(), torch.arange(videos.shape[4]).float()
    return torch.stack([(ink.sum(3) * rows).sum(2) / mass, (ink.sum(2) * cols).sum(2) / mass], dim=-1)


@torch.no_grad()
def read_digits(videos: torch.Tensor, classifier: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """LeNet's class (N, F) and 64 penultimate features (N, F, 64) of every frame of clips (N, F, 1, H, W),
    each frame cut to its digit (`digit_crops`). The classifier is the course's `lenet-mnist` by default."""
    classifier = classifier or load_classifier()
    n, frames = videos.shape[:2]
    crops = digit_crops(videos).to(next(classifier.parameters()).device)
    classes = classifier(crops).argmax(-1).cpu().reshape(n, frames)  # (N, F)
    return classes, lenet_features(classifier, crops).cpu().reshape(n, frames, -1)


@torch.no_grad()
def frame_consistency(videos: torch.Tensor, digits: torch.Tensor | None = None,
                      classifier: nn.Module | None = None) -> dict[str, float]:
    """Is a clip of one moving digit coherent? Videos (N, F, 1, H, W) in [-1, 1], frames of any size.

    Each frame is cut to its digit (`digit_crops`) and read by the course's independent classifier
    (`lenet-mnist`, never trained on anything generated).
    identity  fraction of frames whose class is the clip's most common class (1 for a stable digit)
    accuracy  with `digits` (N,): fraction of frames classed as the digit asked for
    jump      mean distance in pixels that the centre of ink moves between consecutive frames;
              moving-mnist digits at 32 x 32 move 0.5 to 2 pixels a frame
    jitter    mean length of the change of that move from one frame to the next (pixels per frame,
              per frame): near 0 for constant velocity, larger at bounces and for a digit that hops
    restyle   mean 1 - cosine similarity of the classifier's features (its 64-number penultimate
              layer) of consecutive frames: how much the handwriting changes, even when the class does not
    """
    if videos.ndim != 5 or videos.shape[2] != 1 or videos.shape[1] < 3:
        raise ValueError(f"need videos (N, F >= 3, 1, H, W), got {tuple(videos.shape)}")
    classes, features = read_digits(videos, classifier)  # (N, F), (N, F, 64)
    majority = classes.mode(dim=1).values  # (N,)
    figures = {"identity": (classes == majority[:, None]).float().mean().item()}
    if digits is not None:
        figures["accuracy"] = (classes == torch.as_tensor(digits)[:, None]).float().mean().item()
    step = centres(videos).diff(dim=1)  # (N, F-1, 2)
    figures["jump"] = step.norm(dim=-1).mean().item()
    figures["jitter"] = step.diff(dim=1).norm(dim=-1).mean().item()
    similarity = torch.nn.functional.cosine_similarity(features[:, 1:], features[:, :-1], dim=-1)  # (N, F-1)
    figures["restyle"] = (1 - similarity).mean().item()
    return figures


def naive_clips(frames: torch.Tensor, positions: torch.Tensor, size: int = 32) -> torch.Tensor:
    """The naive baseline's clips: independently generated digit images (N, F, 1, 28, 28), each shrunk to a
    moving-mnist digit (size / 2) and pasted where a real clip's digit is, positions (N, F, 2) top-left (x, y).

    The baseline is even handed the motion; what it lacks is any link between its frames.
    """
    d = size // 2
    small = torch.nn.functional.interpolate(frames.flatten(0, 1) + 1, size=(d, d), mode="bilinear", antialias=True,
                                            align_corners=False).reshape(*frames.shape[:2], 1, d, d)  # ink >= 0
    clips = torch.zeros(*frames.shape[:2], 1, size, size)
    for i, f in torch.cartesian_prod(torch.arange(frames.shape[0]), torch.arange(frames.shape[1])).tolist():
        x, y = positions[i, f].tolist()
        clips[i, f, :, y : y + d, x : x + d] = small[i, f]
    return clips - 1  # (N, F, 1, size, size) in [-1, 1]


IMAGE_STEPS = 3000  # videodit-moving-mnist's first stage: one-digit frames alone (images as 1-frame videos)


def one_digit_frames(n: int = 4500) -> ArrayData:
    """Single 32 x 32 frames of one-digit clips, none of a held-out digit x direction pair: the image stage's data."""
    return without_pairs(load_dataset("moving-mnist", "train", frames=1, digits=1, n=n, seed=3))


def video_buckets(data: ArrayData, batch_size: int, image_steps: int = IMAGE_STEPS):
    """Training batches for the video DiT: images first, then four size/length buckets, captions, frame masks.

    The first `image_steps` steps see single 32 x 32 frames of one-digit clips, twice as many per batch
    (an image is 16 tokens, a clip 80): the model learns what each digit looks like before it learns how
    digits move (Open-Sora 1.x, Movie Gen). Then data (17 frames of 32 x 32) is one bucket; beside it
    9-frame clips, 17-frame clips of 24 x 24 and single 32 x 32 frames (images stay in the mix, as Sora
    trains them as 1-frame videos). No clip is cropped or padded: each batch comes from one bucket, so the
    model sees grids of (5, 4, 4), (3, 4, 4), (5, 3, 3) and (1, 4, 4) patches, with frame masks over the
    latent frames. Every clip of a held-out digit x direction pair (`HELD_OUT_PAIRS`) is left out, so
    the ladder can ask for pairs the model never saw.
    """
    images = one_digit_frames()
    buckets = [without_pairs(b) for b in (
        data, load_dataset("moving-mnist", "train", frames=9, n=2000, seed=1),
        load_dataset("moving-mnist", "train", size=24, n=2000, seed=2),
        load_dataset("moving-mnist", "train", frames=1, n=1500, seed=3))]
    return staged_batches([(image_steps, masked_bucket_batches([images], 2 * batch_size, temporal_stride=4))],
                          masked_bucket_batches(buckets, batch_size, temporal_stride=4))


@torch.no_grad()
def eval_videodit(model: DiffusionPipeline, device: torch.device, n: int = 50) -> dict:
    """Text-to-video with one-digit prompts ("a 3 moves right", digits in turn), judged by `frame_consistency`."""
    digits = torch.arange(n) % 10
    prompts = [f"a {d} moves {DIRECTIONS[i % 8][0]}" for i, d in enumerate(digits.tolist())]
    videos = model.eval().sample(n, torch.Generator(device).manual_seed(0), prompt=prompts)  # (n, 17, 1, 32, 32)
    return {k: round(v, 4) for k, v in frame_consistency(videos.cpu(), digits).items()}


# The video DiT on vae3d latents (5 x 4 x 8 x 8, patch 2: 80 tokens). Its prompts are read by `clip-moving-mnist`'s
# text encoder, frozen: a CLIP trained on this chapter's (clip, motion caption) pairs, so it knows every caption word.
# Chapter 4's clip-mnist read the motion words as <unk>. The mean text token also joins the adaLN condition
# (`pooled_context`, Imagen / SD3's pooled vector) beside cross-attention to every token. Measured on the image rung
# (one-digit frames alone, 3,000 steps x 64, the asked-for digit in 200 images at guidance 3 / 5 / 8): clip-mnist
# cross-attention 58 / 67 / 71 %, clip-moving-mnist + pooled 72.5 / 80 / 78.5 %, a text encoder trained with the DiT
# from scratch (GLIDE's way, `train_text=True`) 66.5 / 75 %, a class label in place of text 77 / 85.5 / 88.5 %.
# v-prediction, not eps: chapter 6's objective study measured a small DiT predicting eps still drawing patchwork
# where v (and flow) drew digits; the frame-masked loss has a v form (`masked_v_loss`), flow's is not written yet.
VIDEODIT = {"denoiser": {"cls": "VideoDiT", "config": {**VIDEO_DIT_SIZES["S"], "pooled_context": True,
                                                       "context_dim": 64}},
            "schedule": "cosine", "T": 1000, "objective": "v",
            "p_uncond": 0.1, "guidance": 5.0, "sample_steps": 50}
register(Recipe(
    "videodit-moving-mnist", "Chapter 7: text-to-video DiT over spacetime patches of vae3d latents, clip-moving-mnist prompts, images first, size buckets, frame masks",
    DiffusionPipeline, VIDEODIT, diffusion_loss, {
        "cpu": Preset("moving-mnist", TrainConfig(steps=IMAGE_STEPS + 6000, batch_size=32, lr=1e-3, warmup_steps=100,
                                                  ema_decay=0.999, checkpoint_every=500)),
        "gpu": Preset("moving-mnist", TrainConfig(steps=40_000, batch_size=128, lr=5e-4, warmup_steps=1000,
                                                  ema_decay=0.9999, checkpoint_every=2000),
                      {"denoiser": {"config": dict(VIDEO_DIT_SIZES["B"])}}),
    }, eval_videodit, video_buckets, parts={"autoencoder": "vae3d-moving-mnist", "clip": "clip-moving-mnist"}))


# UCF-101: real videos, GPU recipes (their CPU presets are smoke runs). `load_dataset("ucf101")` keeps 17 frames of
# 48 x 64 (every 2nd frame, 3:4 like the 320 x 240 originals, not cropped): 17 = 1 + 4 k, what the causal VAE encodes
# whole, so 17 x 48 x 64 clips become 5 x 8 x 12 x 16 latents and 240 tokens. The 101 actions are class labels, not
# prompts: `clip-mnist` knows no words for them, and a label per clip is all the data has ("a video of {action}").
UCF_VAE = {"channels": 3, "width": 16, "latent_channels": 8, "temporal_downsample": 4, "beta": 0.01,
           "frames": 17, "size": (48, 64)}
UCF_EVAL_CLIPS = 64


def ucf_eval_clips(n: int = UCF_EVAL_CLIPS) -> torch.Tensor:
    """The first n UCF-101 test clips (split 1), (n, 17, 3, 48, 64) floats."""
    test = load_dataset("ucf101", "test")
    return test.float_images()[:n]


@torch.no_grad()
def eval_vae3d_ucf101(model: VAE3d, device: torch.device) -> dict:
    """Reconstruction figures (PSNR, flicker) of the UCF-101 VAE on held-out clips."""
    x = ucf_eval_clips().to(device)
    model = model.eval()
    x_hat = torch.cat([model(chunk) for chunk in x.split(16)])
    return {k: round(v, 5) for k, v in reconstruction_figures(x, x_hat).items()}


register(Recipe(
    "vae3d-ucf101", "Chapter 7 at scale: causal spatio-temporal VAE for UCF-101, 17x48x64 RGB clips <-> 5x8x12x16 latents (a GPU recipe)",
    VAE3d, UCF_VAE, vae3d_loss, {
        "cpu": Preset("ucf101", TrainConfig(steps=20, batch_size=4, lr=1e-3, warmup_steps=5)),  # a smoke run
        "gpu": Preset("ucf101", TrainConfig(steps=30_000, batch_size=32, lr=1e-3, warmup_steps=500,
                                            checkpoint_every=2000), {"width": 64}),
    }, eval_vae3d_ucf101, lambda data, batch_size: window_batches(data, batch_size, 9)))


def ucf_buckets(data: ArrayData, batch_size: int):
    """The video DiT's UCF-101 batches: whole 17-frame clips, and their first frames as 1-frame videos
    (images in the same model, as on moving-mnist), with labels and frame masks."""
    frames = ArrayData(data.name, data.images[:, :1], data.labels, data.classes, data.templates)
    return masked_bucket_batches([data, frames], batch_size, temporal_stride=4)


@torch.no_grad()
def eval_videodit_ucf101(model: DiffusionPipeline, device: torch.device, n: int = 16) -> dict:
    """n clips of the classes in turn: how long they take, and how much they move from frame to frame (the RMS
    change per pixel) beside the held-out clips: frozen clips score near 0, flickering ones far above."""
    started = time.perf_counter()
    clips = model.eval().sample(n, torch.Generator(device).manual_seed(0), labels=torch.arange(n, device=device) % 101)
    seconds = time.perf_counter() - started
    motion = lambda x: (x[:, 1:] - x[:, :-1]).double().square().mean().sqrt().item()  # noqa: E731
    return {"samples": n, "sample_seconds": round(seconds, 1), "motion": round(motion(clips.cpu()), 4),
            "motion_real": round(motion(ucf_eval_clips(n)), 4)}


register(Recipe(
    "videodit-ucf101", "Chapter 7 at scale: class-conditional video DiT on vae3d-ucf101 latents, 240 tokens, frame masks (a GPU recipe)",
    DiffusionPipeline, {"denoiser": {"cls": "VideoDiT", "config": {**VIDEO_DIT_SIZES["S"], "num_classes": 101}},
                        "schedule": "cosine", "T": 1000, "objective": "v", "p_uncond": 0.1, "guidance": 3.0,
                        "sample_steps": 50}, diffusion_loss, {
        "cpu": Preset("ucf101", TrainConfig(steps=20, batch_size=4, lr=1e-3, warmup_steps=5)),  # a smoke run
        "gpu": Preset("ucf101", TrainConfig(steps=100_000, batch_size=64, lr=2e-4, warmup_steps=2000,
                                            ema_decay=0.9999, checkpoint_every=5000),
                      {"denoiser": {"config": {"width": 384, "depth": 12, "heads": 6}}}),
    }, eval_videodit_ucf101, ucf_buckets, parts={"autoencoder": "vae3d-ucf101"}))
