"""Chapter 6's recipes: the Diffusion Transformer on pixels and on chapter 4's latents, trained with
v-prediction (DDPM's process, sampled with DDIM) or with rectified flow, and the small families behind
the chapter's studies.

  dit-mnist               DiT-XS/4 on 28 x 28 pixels in 4 x 4 patches (49 tokens), class labels, v objective
  dit-mnist-flow          the same network and data, trained with rectified flow (Euler sampling)
  dit-mnist-latent        DiT-XS/1 on the 4 x 7 x 7 latents of `latent-vae-mnist` (49 tokens): "VAE encoder +
                          ViT + DDPM + VAE decoder"
  dit-cifar10             DiT-S/2 on CIFAR-10 pixels (256 tokens): a GPU recipe (its CPU preset is a smoke run)
  dit-obj-{eps,v,flow}    the objective study: the same DiT-XS/4 and steps, only what it predicts differs
  dit-init-{ours,paper}   the init study: dit-obj-v with the course's and with DiT's initialisation of the condition
  dit-scale-{XXS,XS,S}{4,7}   the scaling study: 3 sizes x patches 4 and 7 on pixels, same steps and batch
  dit-cond-{incontext,cross,adaln,adaln-zero}   the conditioning variants of DiT's Fig. 3, same size and steps

Why v and not eps: at high noise x0_hat = (x_t - sqrt(1 - alpha_bar) eps_hat) / sqrt(alpha_bar) turns a
small error of eps_hat into a large one of x0_hat, so an eps-model must reproduce x_t almost exactly
where only the label says which digit to draw. The U-Net's convolutions manage; a small DiT, whose
final layer rebuilds each 4 x 4 patch from one LayerNorm-ed token, does not, and its samples fell apart
into patches (chapter 6 measures it: `dit-obj-eps`). v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0
(Salimans & Ho 2022) asks for x0 itself at high noise, and rectified flow's x0 = x_t - t v has no
division at all.

Min-SNR weights, which bought chapter 3's U-Net about 15 points of accuracy in a short run, do not help this
DiT: dit-mnist with the objective "v-min-snr" (8,000 steps then) scored FID-LeNet 84.3 and 96.4 % at n = 500
against 85.9 and 98.8 % (2026-12-03). They weigh the nearly clean steps down, and what this DiT's samples
lack is exactly the fine detail of those steps (ragged strokes, stray pixels), not the digits' shapes.
Smaller patches at the same time do not help either: DiT-XS/2 (196 tokens) managed 2,000 steps of 64 in
the time of 8,000 at patch 4 and scored FID 139.0, 98.2 %. Nor does a convolution at the ends, U-ViT's fix for
strokes that break at patch boundaries (2026-12-04, 8,000 steps, FID at n = 500 and guidance 2): a 3 x 3 conv
after the output layer (16 channels a pixel) scored 115.9, with a conv stem before the patches too 88.4,
against 85.5 for the plain DiT on the same machine. What did help is time and less guidance: twice the steps
(16,000) with guidance 1.5 scored 59.8, where 16,000 steps at guidance 2 scored 91.7 (see MAIN_GUIDANCE).

Every DiT here is one `DiffusionPipeline` with denoiser class "DiT" (or a variant): the pipeline, its
objective and its samplers are those of chapters 3 and 4. The study families are scored by
`eval_quick` (fewer samples and steps than `eval_digit_samples`), so all thirteen runs fit in minutes.
"""

from __future__ import annotations

import dataclasses
import json
import time

import torch
from torch import nn

from minilineage.checkpoint import CHECKPOINT_DIR
from minilineage.data import to_uint8
from minilineage.diffusion import DiffusionPipeline, diffusion_loss
from minilineage.metrics import eval_cifar_samples, evaluate_samples
from minilineage.models.dit import DIT_SIZES
from minilineage.recipes.core import Preset, Recipe, register, train_recipe
from minilineage.train import TrainConfig

LATENT = {"autoencoder": "latent-vae-mnist"}  # `from_parts` takes in_channels, shape, scale and x0 bound from it
PIXELS = {"in_channels": 1}


def _pipeline(dit: dict, objective: str = "eps", **changes) -> dict:
    """A class-conditional pipeline around a DiT config, with chapter 3's schedule and chapter 4's guidance."""
    return {"denoiser": {"cls": dit.pop("cls", "DiT"), "config": {"num_classes": 10, **dit}},
            "schedule": "cosine", "T": 1000, "objective": objective, "p_uncond": 0.1, "guidance": 2.0,
            "sample_steps": 50, **changes}


def _presets(cpu: TrainConfig, gpu_dataset: str = "mnist", gpu_model: dict | None = None) -> dict[str, Preset]:
    """A CPU preset and a GPU preset (the full dataset, a larger DiT, batch 256, 40k steps)."""
    gpu = TrainConfig(steps=40_000, batch_size=256, lr=5e-4, warmup_steps=1000, ema_decay=0.9999,
                      checkpoint_every=2000)
    return {"cpu": Preset("mnist-5k", cpu), "gpu": Preset(gpu_dataset, gpu, gpu_model or {})}


SWEEP_STEPS = (5, 10, 25)


@torch.no_grad()
def eval_with_steps(model: nn.Module, device: torch.device, n: int = 500, n_sweep: int = 250) -> dict:
    """The figures of `metrics.eval_digit_samples` (n samples with the model's 50 steps), then quality against the number of
    sampling steps, under "by_steps": n_sweep samples at each of SWEEP_STEPS and at 50 steps, all from the same
    starting noise (DDIM for eps, Euler for rectified flow; the 50-step entry scores the first n_sweep of the n)."""
    steps = model.config.sample_steps
    generator = torch.Generator(device=device).manual_seed(0)
    labels = torch.arange(n) % 10
    started = time.perf_counter()
    images = torch.cat([model.sample(n_sweep, generator, labels=labels[i:i + n_sweep].to(device))
                        for i in range(0, n, n_sweep)])  # chunks of n_sweep: the first is eval_quick's draw
    seconds = time.perf_counter() - started
    scores = {**evaluate_samples(to_uint8(images), labels), "samples": n, "sample_seconds": round(seconds, 1),
              "guidance": model.config.guidance, "steps": steps}
    by_steps = {str(k): eval_quick(model, device, n=n_sweep, steps=k) for k in SWEEP_STEPS}
    by_steps[str(steps)] = {**evaluate_samples(to_uint8(images[:n_sweep]), labels[:n_sweep]), "samples": n_sweep,
                            "sample_seconds": round(seconds * n_sweep / n, 1), "guidance": model.config.guidance,
                            "steps": steps}
    return {**scores, "by_steps": by_steps}


# AdamW with warm-up, cosine decay and EMA weights, as the U-Net recipes; batch 64 rather than 128, since
# on a CPU more small steps beat fewer large ones at equal compute; size XS rather than S for the same reason
# (measured: DiT-S/4 for 1,250 steps lost to DiT-XS/4 for 3,000 in the same time, and DiT-S/4 for 8,000 steps,
# 826 s, scored FID 58.0 at its best guidance against XS/4's 58.4 for 16,000 steps in 638 s); peak rate 1e-3
# (2e-3 made the transformer's loss spike early). 16,000 steps took 10.6 minutes on a 2-core Intel Xeon
# (2026-12-04); the 2-core AMD EPYC of earlier runs needed 11-15 minutes for 8,000.
CPU_MAIN = TrainConfig(steps=16_000, batch_size=64, lr=1e-3, warmup_steps=200, ema_decay=0.999, checkpoint_every=1000)
DIT_MNIST = {**PIXELS, **DIT_SIZES["XS"], "patch": 4}  # 49 tokens of 4 x 4 pixels each
GPU_PIXELS = {"denoiser": {"config": {**DIT_SIZES["B"], "patch": 2}}}  # DiT-B/2: 196 tokens
# Guidance 1.5, not the studies' 2: the better a model, the less guidance it wants. At 8,000 steps dit-mnist scored best
# at 2 (FID 85.9; 91.5 at 1.5); at 16,000 steps, 1.4-1.5 (58.4-59.8, at 2 91.7, at 1.25 62.8; n = 500, 50 steps).
MAIN_GUIDANCE = 1.5
for _name, _objective, _what in (("dit-mnist", "v", "v-prediction (DDPM/DDIM)"),
                                 ("dit-mnist-flow", "flow", "rectified flow (Euler sampling)")):
    register(Recipe(_name, f"Chapter 6: class-conditional DiT-XS/4 on 28x28 pixels (49 tokens), adaLN-Zero, {_what}",
                    DiffusionPipeline, _pipeline(dict(DIT_MNIST), _objective, shape=(1, 28, 28), guidance=MAIN_GUIDANCE),
                    diffusion_loss, _presets(CPU_MAIN, gpu_model=GPU_PIXELS), eval_with_steps))

# The same DiT on chapter 4's 4 x 7 x 7 latents (patch 1: 49 tokens of 4 numbers): "VAE encoder + ViT + DDPM +
# VAE decoder". v objective, steps, batch and guidance as dit-mnist, so the two differ only in where diffusion runs
# (chapter 6 sweeps the guidance of both). The frozen encoder runs once over the data (`pre_encode`: the same
# draws of z ~ q(z | x), 18 % less time per step than encoding every batch, measured on one thread).
CPU_LATENT = dataclasses.replace(CPU_MAIN, pre_encode=True)
register(Recipe("dit-mnist-latent", "Chapter 6: class-conditional DiT-XS/1 on the 4x7x7 latents of latent-vae-mnist",
                DiffusionPipeline, _pipeline({**DIT_SIZES["XS"], "patch": 1}, "v", guidance=MAIN_GUIDANCE),
                diffusion_loss, _presets(CPU_LATENT, gpu_model={"denoiser": {"config": dict(DIT_SIZES["B"])}}),
                eval_with_steps, parts=LATENT))

# CIFAR-10 in pixel space: 3 x 32 x 32 in 2 x 2 patches = 256 tokens; scored as `ddpm-cifar10` (standard FID).
register(Recipe("dit-cifar10", "Chapter 6: class-conditional DiT-S/2 on CIFAR-10 pixels (256 tokens; a GPU recipe)",
                DiffusionPipeline,
                _pipeline({"in_channels": 3, **DIT_SIZES["S"], "patch": 2}, shape=(3, 32, 32)),
                diffusion_loss,
                {"cpu": Preset("cifar10", TrainConfig(steps=200, batch_size=32, lr=1e-3, warmup_steps=20)),
                 "gpu": Preset("cifar10", TrainConfig(steps=100_000, batch_size=256, lr=2e-4, warmup_steps=2000,
                                                      ema_decay=0.9999, checkpoint_every=5000),
                               {"denoiser": {"config": {"width": 384, "depth": 12, "heads": 6}}})},
                eval_cifar_samples))


@torch.no_grad()
def eval_quick(model: nn.Module, device: torch.device, n: int = 250, steps: int = 10) -> dict:
    """The studies' score: n samples of the digits 0-9 in turn with `steps` sampling steps, FID-LeNet and
    accuracy (as `eval_digit_samples`, cheaper; compare only runs scored the same way)."""
    generator = torch.Generator(device=device).manual_seed(0)
    started = time.perf_counter()
    images = model.sample(n, generator, labels=torch.arange(n, device=device) % 10, steps=steps)
    seconds = time.perf_counter() - started
    scores = evaluate_samples(to_uint8(images), torch.arange(n) % 10)
    return {**scores, "samples": n, "sample_seconds": round(seconds, 1), "guidance": model.config.guidance,
            "steps": steps}


# The objective study: dit-mnist's network and data, an eighth of its steps at guidance 2, only the objective differs.
OBJECTIVES = ("eps", "v", "flow")
OBJ_TRAIN = TrainConfig(steps=2000, batch_size=64, lr=1e-3, warmup_steps=100, ema_decay=0.995, checkpoint_every=2000)
for _objective in OBJECTIVES:
    register(Recipe(f"dit-obj-{_objective}", f"Chapter 6 objective study: DiT-XS/4 on pixels predicting {_objective}, 2,000 steps",
                    DiffusionPipeline, _pipeline(dict(DIT_MNIST), _objective, shape=(1, 28, 28)), diffusion_loss,
                    _presets(OBJ_TRAIN), eval_quick))



@torch.no_grad()
def eval_condition(model: nn.Module, device: torch.device) -> dict:
    """`eval_quick`, plus how large each part of the condition c = embed(t) + embed(y) ended: the std of the ten
    class rows of the label table, and of embed(t) over t = 0, 100, ..., 900 (the init study)."""
    net = model.net
    time = net.time_embed(torch.arange(0, 1000, 100, device=device))  # (10, D)
    return {**eval_quick(model, device), "label_table_std": round(net.label_embed.weight[:10].std().item(), 4),
            "time_embedding_std": round(time.std().item(), 4)}


# The init study: dit-obj-v's run (the same network, data, steps and guidance) with the course's unit-scale
# condition (DiT) and with DiT's own initialisation of it (PaperInitDiT: std 0.02, zero biases, 256 frequencies).
INITS = {"ours": "DiT", "paper": "PaperInitDiT"}
for _init, _cls in INITS.items():
    register(Recipe(f"dit-init-{_init}", f"Chapter 6 init study: DiT-XS/4 on pixels predicting v, {_cls}'s initialisation",
                    DiffusionPipeline, _pipeline({"cls": _cls, **DIT_MNIST}, "v", shape=(1, 28, 28)), diffusion_loss,
                    _presets(OBJ_TRAIN), eval_condition))

# The studies: pixels, so the patch size is free (4: 49 tokens, 7: 16 tokens); rectified flow (the objective
# that learns fastest here, see above); short runs, all alike.
STUDY_TRAIN = TrainConfig(steps=1000, batch_size=64, lr=1e-3, warmup_steps=50, ema_decay=0.99, checkpoint_every=1000)
SCALING_SIZES = ("XXS", "XS", "S")
SCALING_PATCHES = (4, 7)
for _size in SCALING_SIZES:
    for _p in SCALING_PATCHES:
        register(Recipe(f"dit-scale-{_size}{_p}", f"Chapter 6 scaling study: DiT-{_size}/{_p} on pixels, 1,000 short steps",
                        DiffusionPipeline,
                        _pipeline({**PIXELS, **DIT_SIZES[_size], "patch": _p}, "flow", shape=(1, 28, 28)),
                        diffusion_loss, _presets(STUDY_TRAIN), eval_quick))

# dit-cond-adaln-zero is the same run as dit-scale-XS7 (DiT-XS/7, the same training): the two studies share that point.
CONDITIONING = {"incontext": "InContextDiT", "cross": "CrossAttentionDiT", "adaln": "AdaLNDiT", "adaln-zero": "DiT"}
for _variant, _cls in CONDITIONING.items():
    register(Recipe(f"dit-cond-{_variant}", f"Chapter 6 conditioning study: {_cls} (DiT-XS/7 on pixels), 1,000 short steps",
                    DiffusionPipeline,
                    _pipeline({"cls": _cls, **PIXELS, **DIT_SIZES["XS"], "patch": 7}, "flow", shape=(1, 28, 28)),
                    diffusion_loss, _presets(STUDY_TRAIN), eval_quick))


def study_records(names: list[str], retrain: bool = False, out: str = "runs") -> dict[str, dict]:
    """The records (sidecars) of a study's runs: read from assets/checkpoints/NAME.json (each the sidecar that
    `minilineage train NAME` wrote, its command line inside), or, with retrain=True, trained here one after
    the other into `out` (the same recipes, so the same numbers up to the machine's rounding)."""
    if retrain:
        return {name: train_recipe(name, out=out, progress=False).record for name in names}
    missing = [name for name in names if not (CHECKPOINT_DIR / f"{name}.json").exists()]
    if missing:
        raise FileNotFoundError(f"no stored results for {', '.join(missing)} in {CHECKPOINT_DIR}: train them with "
                                f"`minilineage train NAME --out {CHECKPOINT_DIR}` or pass retrain=True")
    return {name: json.loads((CHECKPOINT_DIR / f"{name}.json").read_text()) for name in names}
