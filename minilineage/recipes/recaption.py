"""Chapter 7's re-captioning pieces (DALL·E 3, Sora): a captioner trained on clips with good captions.

  captioner-moving-mnist   a CoCa-style captioner on vae3d latents (`models.captioner`), trained on the
                           motion captions of moving-mnist; it writes captions for clips that have none
  videodit-captions-true, -poor, -recaptioned
                           the re-captioning study: one video DiT trained on the same clips with their true
                           captions, the poor caption, or the captioner's

`recaption` writes a caption for every clip of a dataset (whatever captions it had: the poor one, say);
`caption_figures` judges written captions against the true ones: exact match, and whether they name
the right digits and the right motions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from minilineage.checkpoint import load_model
from minilineage.data import ArrayData, caption_batches, load_dataset, to_float
from minilineage.data.captions import split_words
from minilineage.data.video import CAPTION_WORDS, masked_bucket_batches
from minilineage.diffusion import DiffusionPipeline, diffusion_loss
from minilineage.models.captioner import VideoCaptioner, captioner_loss
from minilineage.models.text import SPECIALS
from minilineage.recipes.core import Preset, Recipe, register
from minilineage.recipes.video import VIDEODIT
from minilineage.recipes.video_modes import text_to_video
from minilineage.train import TrainConfig


def digits_named(caption: str) -> list[str]:
    """The digits a caption names, in order: "a 3 moves up, an 8 moves left" -> ["3", "8"]."""
    return [w for w in split_words(caption) if w.isdigit()]


def motions_named(caption: str) -> list[str]:
    """The motion a caption gives each digit, in order: "a 3 moves up and bounces, an 8 moves down-left" ->
    ["moves up and bounces", "moves down left"] (the words after each digit, up to the next clause's article)."""
    clauses: list[list[str]] = []
    for word in split_words(caption):
        if word.isdigit():
            clauses.append([])
        elif clauses:
            clauses[-1].append(word)
    return [" ".join(c[:-1] if c and c[-1] in ("a", "an") else c) for c in clauses]


def caption_figures(written: list[str], truth: list[str]) -> dict[str, float]:
    """exact: the share of captions equal to the true one word for word; digits: the share that name the
    true digits, motion: the share that give the true motions (direction and bounce), each in any order."""
    pairs = list(zip(written, truth, strict=True))
    same = [split_words(a) == split_words(b) for a, b in pairs]
    digits = [sorted(digits_named(a)) == sorted(digits_named(b)) for a, b in pairs]
    motions = [sorted(motions_named(a)) == sorted(motions_named(b)) for a, b in pairs]
    return {"exact": sum(same) / len(same), "digits": sum(digits) / len(digits), "motion": sum(motions) / len(motions)}


@torch.no_grad()
def recaption(captioner: VideoCaptioner, data: ArrayData, batch_size: int = 256) -> list[str]:
    """A caption written by `captioner` for every clip of `data`, in order (DALL·E 3's re-captioning step)."""
    device = next(captioner.parameters()).device
    return [text for chunk in data.images.split(batch_size) for text in captioner.eval().caption(to_float(chunk).to(device))]


@torch.no_grad()
def eval_captioner(model: VideoCaptioner, device: torch.device, n: int = 100) -> dict:
    """Captions written for n held-out clips (1 or 2 digits), judged by `caption_figures`."""
    test = load_dataset("moving-mnist", "test", n=n)
    written = recaption(model, test)
    return {k: round(v, 4) for k, v in caption_figures(written, list(test.texts)).items()}


register(Recipe(
    "captioner-moving-mnist", "Chapter 7: a CoCa-style video captioner on vae3d latents (contrastive + captioning), for re-captioning",
    VideoCaptioner, {"vocab": [*SPECIALS, *CAPTION_WORDS]}, captioner_loss, {
        # 1,500 steps (2 min) named the right digits in 41 % of held-out captions, loss still falling: 5,000 here.
        "cpu": Preset("moving-mnist", TrainConfig(steps=5000, batch_size=32, lr=1e-3, warmup_steps=100)),
        "gpu": Preset("moving-mnist", TrainConfig(steps=10_000, batch_size=128, lr=5e-4, warmup_steps=500),
                      {"width": 128, "heads": 4}),
    }, eval_captioner, caption_batches, parts={"autoencoder": "vae3d-moving-mnist"}))


# The re-captioning study (DALL·E 3, Sec. 3 and 4, at small size): one video DiT trained three times on the same
# clips, only their captions differ. The clips are a fresh draw (seed 7) of training clips, none of which the captioner
# saw (it trained on seed 0's), so its captions for them are written, not remembered. The network is the shipped
# design of videodit-moving-mnist (prompts read by clip-moving-mnist, which knows every caption word, so a caption's
# motion can be followed too), trained on one bucket (17 frames of 32 x 32) for 2,000 steps, without the image stage
# (its captions would be true ones). Judged on digit and motion (`eval_caption_study`).
STUDY_SEED = 7
STUDY_PROMPTS = 100
CAPTION_SOURCES = {
    "true": "the clips' true motion captions",
    "poor": 'one poor caption for every clip, "a video of digits"',
    "recaptioned": "captions written by captioner-moving-mnist for the poorly captioned clips",
}


def study_clips(source: str, n: int | None = None) -> ArrayData:
    """The study's training clips with the captions of `source` (one of CAPTION_SOURCES)."""
    if source not in CAPTION_SOURCES:
        raise ValueError(f"unknown caption source {source!r}; choose one of: {', '.join(CAPTION_SOURCES)}")
    data = load_dataset("moving-mnist", "train", n=n, seed=STUDY_SEED, captions="motion" if source == "true" else "poor")
    if source == "recaptioned":
        written = recaption(load_model("captioner-moving-mnist"), data)
        data = ArrayData(data.name, data.images, data.labels, data.classes, data.templates, written, data.info)
    return data


@torch.no_grad()
def eval_caption_study(model: DiffusionPipeline, device: torch.device, n: int = STUDY_PROMPTS) -> dict:
    """n one-digit prompts of seen digit x direction pairs ("a 3 moves up", `video_ladder.ladder_pairs`), 17
    frames each, 50 DDIM steps at the pipeline's guidance: the ladder's text-to-video rung, digit and motion."""
    # imported here, not at the top: the ladder's command imports every recipe module first
    from minilineage.recipes.video_ladder import digit_figures, ladder_pairs, motion_figures, prompt

    pairs = ladder_pairs(n)
    clips = text_to_video(model.eval(), [prompt(d, k) for d, k in pairs.tolist()],
                          torch.Generator(device).manual_seed(0), steps=50).cpu()
    figures = digit_figures(clips, pairs[:, 0]) | motion_figures(clips, pairs[:, 1])
    return {k: round(v, 4) for k, v in figures.items()}


def caption_study_batches(source: str, temporal_stride: int = 4) -> Callable:
    """The study's `batches`: its clips with `source`'s captions, frame masks as in videodit-moving-mnist (over the
    latent frames of a VAE with `temporal_stride` frames per latent frame)."""
    return lambda data, batch_size: masked_bucket_batches([study_clips(source)], batch_size, temporal_stride)


for _source, _what in CAPTION_SOURCES.items():
    register(Recipe(
        f"videodit-captions-{_source}", f"Chapter 7's re-captioning study: videodit-moving-mnist's network trained on {_what}",
        DiffusionPipeline, VIDEODIT, diffusion_loss, {
            "cpu": Preset("moving-mnist", TrainConfig(steps=2000, batch_size=32, lr=1e-3, warmup_steps=100,
                                                      ema_decay=0.999, checkpoint_every=500)),
            "gpu": Preset("moving-mnist", TrainConfig(steps=20_000, batch_size=128, lr=5e-4, warmup_steps=1000,
                                                      ema_decay=0.9999, checkpoint_every=2000)),
        }, eval_caption_study, caption_study_batches(_source),
        parts={"autoencoder": "vae3d-moving-mnist", "clip": "clip-moving-mnist"}))
