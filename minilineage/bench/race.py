"""The time-to-quality race: the course's `ddpm-mnist` CPU recipe against what a user of diffusers would train.

The contestants, each given the same wall time on mnist-5k on this machine, one after the other:

  ours       `minilineage train ddpm-mnist --steps N`: the recipe as shipped, with N the steps that fit the
             budget at the speed a short probe measured (so its warm-up and learning-rate decay end on time)
  diffusers  a UNet2DModel of the same parameter count (`reference_unet` at width 28: 0.58 M to our 0.57 M)
             trained with the defaults of diffusers' own example, examples/unconditional_image_generation/
             train_unconditional.py (DIFFUSERS_RECOMMENDED, with --use_ema as its README runs it), through
             diffusers' DDPMScheduler, get_scheduler and EMAModel; N again what fits the budget

Each run also stops at its budget (`TrainConfig.max_seconds`, and the same check in diffusers' loop) should the
probe have been optimistic, so neither trains longer than the other; a run that stopped early says so (steps
< planned_steps). Both are then sampled the same way (DDIM, 50 steps, classifier-free guidance 2: one network
call per step on a doubled batch, 1,000 digits asking for 0-9 in turn) and scored by `evaluate_samples`: FID-LeNet, the
real-data level at the same N, and the share classified as asked. Probing and sampling are not counted in
the budget; training wall time is what `fit`'s clock (ours) or the same perf_counter loop (theirs) records.

One change to diffusers' recipe, for like-for-like sampling: its example is unconditional, so the race
feeds the class label to UNet2DModel's `num_class_embeds` table and drops it at p = 0.1 (our p_uncond), which
is what lets both be guided. `run_race` runs it; `minilineage bench --race 2 5 10` prints the table.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minilineage.bench.reference import diffusers_sample, reference_unet
from minilineage.bench.runner import cpu_description, diffusers_version
from minilineage.data import load_dataset, to_uint8
from minilineage.metrics import evaluate_samples
from minilineage.models.unet import UNetConfig
from minilineage.recipes import get_recipe, train_recipe

RECIPE = "ddpm-mnist"
REFERENCE_WIDTH = 28  # UNet2DModel at (28, 56): 581,508 parameters to ddpm-mnist's 571,332 (+1.8 %)
# The defaults of diffusers' examples/unconditional_image_generation/train_unconditional.py (and its README's
# --use_ema): AdamW, cosine decay to 0 after 500 warm-up steps, gradient norm clipped at 1, EMA warmed up as
# 1 - (1 + step / inv_gamma)^-power up to 0.9999; DDPMScheduler's 1,000 linear-beta steps, eps-prediction.
DIFFUSERS_RECOMMENDED = {
    "train_batch_size": 16, "learning_rate": 1e-4, "lr_scheduler": "cosine", "lr_warmup_steps": 500,
    "adam_beta1": 0.95, "adam_beta2": 0.999, "adam_weight_decay": 1e-6, "adam_epsilon": 1e-8, "max_grad_norm": 1.0,
    "use_ema": True, "ema_inv_gamma": 1.0, "ema_power": 0.75, "ema_max_decay": 0.9999,
    "ddpm_num_steps": 1000, "ddpm_beta_schedule": "linear", "prediction_type": "epsilon",
}
SAMPLING = {"steps": 50, "guidance": 2.0}  # ddpm-mnist's defaults, used for both
PROBE_STEPS = 40  # timed steps that set how many steps fit a budget (the schedule's length)


def reference_network() -> nn.Module:
    """The diffusers contestant: UNet2DModel shaped as `reference_unet` makes it for ddpm-mnist, at width 28."""
    denoiser = get_recipe(RECIPE).config().denoiser["config"]
    return reference_unet(UNetConfig(**{**denoiser, "width": REFERENCE_WIDTH}), 28)


class DiffusersTrainer:
    """diffusers' recommended training of `reference_network` on mnist-5k, one step at a time."""

    def __init__(self, steps: int, seed: int = 0, settings: dict = DIFFUSERS_RECOMMENDED):
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        torch.manual_seed(seed)
        self.s, self.net = settings, reference_network()
        self.scheduler = DDPMScheduler(num_train_timesteps=settings["ddpm_num_steps"],
                                       beta_schedule=settings["ddpm_beta_schedule"],
                                       prediction_type=settings["prediction_type"])
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=settings["learning_rate"],
                                           betas=(settings["adam_beta1"], settings["adam_beta2"]),
                                           weight_decay=settings["adam_weight_decay"], eps=settings["adam_epsilon"])
        self.lr = get_scheduler(settings["lr_scheduler"], self.optimizer, num_warmup_steps=settings["lr_warmup_steps"],
                                num_training_steps=steps)
        self.ema = EMAModel(self.net.parameters(), decay=settings["ema_max_decay"], use_ema_warmup=True,
                            inv_gamma=settings["ema_inv_gamma"], power=settings["ema_power"])
        data = load_dataset("mnist-5k", "train")
        self.x, self.y = data.float_images(), data.labels  # (N, 1, 28, 28) in [-1, 1], (N,)
        self.generator = torch.Generator().manual_seed(seed)
        self.order, self.at = torch.randperm(len(self.x), generator=self.generator), 0
        self.classes = self.net.unet.config.num_class_embeds - 1  # the last row is the null label

    def batch(self) -> tuple[Tensor, Tensor]:
        """The next batch of a shuffled epoch (a DataLoader with shuffle=True, drop_last=True)."""
        size = self.s["train_batch_size"]
        if self.at + size > len(self.order):
            self.order, self.at = torch.randperm(len(self.x), generator=self.generator), 0
        index = self.order[self.at:self.at + size]
        self.at += size
        return self.x[index], self.y[index]

    def step(self, p_uncond: float) -> float:
        x0, y = self.batch()
        g = self.generator
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(x0),), generator=g)
        y = torch.where(torch.rand(len(y), generator=g) < p_uncond, self.classes, y)  # the null label for guidance
        loss = F.mse_loss(self.net(self.scheduler.add_noise(x0, noise, t), t, y), noise)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), self.s["max_grad_norm"])
        self.optimizer.step()
        self.lr.step()
        self.ema.step(self.net.parameters())
        return loss.item()

    def final_network(self) -> nn.Module:
        """The EMA weights (what train_unconditional.py saves with --use_ema)."""
        self.ema.copy_to(self.net.parameters())
        return self.net.eval()

    def sample(self, labels: Tensor, generator: torch.Generator, steps: int, guidance: float) -> Tensor:
        """Digits of `labels` in [-1, 1] from the network as it is now (call final_network first for the EMA)."""
        return diffusers_sample(self.net, self.scheduler, labels, (1, 28, 28), generator, steps, guidance,
                                null_label=self.classes).clamp(-1, 1)


def probe_reference(p_uncond: float) -> float:
    """Seconds per step of the diffusers contestant, timed over PROBE_STEPS after 3 untimed."""
    trainer = DiffusersTrainer(steps=PROBE_STEPS + 3)
    for _ in range(3):
        trainer.step(p_uncond)
    started = time.perf_counter()
    for _ in range(PROBE_STEPS):
        trainer.step(p_uncond)
    return (time.perf_counter() - started) / PROBE_STEPS


def probe_ours() -> float:
    """Seconds per step of ddpm-mnist's training, from `fit`'s clock over a short run."""
    result = train_recipe(RECIPE, steps=PROBE_STEPS + 3, out=None, evaluate=False, progress=False)
    return result.record["wall_time_s"] / (PROBE_STEPS + 3)


def steps_for(budget_s: float, seconds_per_step: float) -> int:
    return max(1, math.floor(budget_s / seconds_per_step))


def race_ours(budget_s: float, n: int, sampling: dict) -> dict:
    """`minilineage train ddpm-mnist --steps N` with the N that fits the budget, then sampled and scored."""
    steps = steps_for(budget_s, probe_ours())
    with tempfile.TemporaryDirectory() as folder:
        result = train_recipe(RECIPE, steps=steps, out=folder, evaluate=False, progress=False, max_seconds=budget_s,
                              command=f"minilineage train {RECIPE} --steps {steps}")
    pipeline = result.model.eval()
    scores = score(lambda y, g: pipeline.sample(len(y), g, labels=y, **sampling), n)
    return {"contestant": RECIPE, "planned_steps": steps, "steps": result.record["step"],
            "batch_size": result.record["train_config"]["batch_size"],
            "wall_time_s": result.record["wall_time_s"], "parameters": sum(p.numel() for p in pipeline.net.parameters()),
            **scores}


def race_reference(budget_s: float, n: int, sampling: dict, p_uncond: float) -> dict:
    """diffusers' recommended training for the steps that fit the budget, then sampled and scored as ours."""
    steps = steps_for(budget_s, probe_reference(p_uncond))
    trainer = DiffusersTrainer(steps)
    started, done = time.perf_counter(), 0
    while done < steps and time.perf_counter() - started < budget_s:  # the same hard stop as ours (max_seconds)
        trainer.step(p_uncond)
        done += 1
    wall = time.perf_counter() - started
    net = trainer.final_network()
    scores = score(lambda y, g: trainer.sample(y, g, **sampling), n)
    return {"contestant": "diffusers UNet2DModel", "planned_steps": steps, "steps": done,
            "batch_size": trainer.s["train_batch_size"],
            "wall_time_s": round(wall, 1), "parameters": sum(p.numel() for p in net.parameters()), **scores}


@torch.no_grad()
def score(sample, n: int) -> dict:
    """`sample(labels, generator)` -> images in [-1, 1]; scored in chunks of 500 (as `eval_digit_samples`)."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 10
    started = time.perf_counter()
    images = torch.cat([sample(chunk, generator) for chunk in labels.split(500)])
    seconds = time.perf_counter() - started
    return {**evaluate_samples(to_uint8(images), labels), "sample_seconds": round(seconds, 1)}


def run_race(budgets_min: tuple[float, ...] = (2, 5, 10), n: int = 1000, json_path: str | Path | None = None,
         sampling: dict = SAMPLING) -> dict:
    """Each budget: ours, then diffusers' recommended training, the same minutes each; sampled and scored alike."""
    p_uncond = get_recipe(RECIPE).config().p_uncond
    rows = []
    for minutes in budgets_min:
        rows.append({"budget_min": minutes, **race_ours(60.0 * minutes, n, sampling)})
        print_row(rows[-1])
        rows.append({"budget_min": minutes, **race_reference(60.0 * minutes, n, sampling, p_uncond)})
        print_row(rows[-1])
    result = {"cpu": cpu_description(), "threads": torch.get_num_threads(), "diffusers": diffusers_version(),
              "recommended": DIFFUSERS_RECOMMENDED, "sampling": {**sampling, "sampler": "DDIM", "n": n}, "rows": rows}
    if json_path is not None:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {json_path}")
    return result


def print_row(r: dict) -> None:
    stopped = f" of {r['planned_steps']} planned" if r["steps"] < r["planned_steps"] else ""
    print(f"{r['budget_min']:>5g} min  {r['contestant']:22s} {r['steps']:6d}{stopped} steps x {r['batch_size']:3d} "
          f"({r['wall_time_s']:6.1f} s)  FID-LeNet {r['fid_lenet']:7.2f} (real {r['real_floor']:.1f})  "
          f"accuracy {r['accuracy']:.3f}")
