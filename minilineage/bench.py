"""`minilineage bench`: what each course model costs, and how our DDPM U-Net compares with diffusers'.

Per model: parameters; FLOPs of a training step (forward + backward as counted by FlopCounterMode:
matmuls, convolutions, attention; not elementwise ops); training images/s and TFLOP/s (the recipe's
loss, backward, AdamW); for denoisers, sampling images/s = one full `sample()` of N images with S
DDIM steps at guidance 1 (one network call per step); peak memory. Measurements, not assertions.

The reference is diffusers' `UNet2DModel` configured for the same job as a `UNetConfig`
(`reference_unet`). For ddpm-mnist (4x14x14 maps after 2x2 space-to-depth, widths 32 and 64,
attention at 7x7 and in the middle, 10 classes), MATCHED and DIFFERS below say it exactly, and the
bench prints them. In short: the space-to-depth is done outside UNet2DModel (4 channels in and out);
encoder, middle, class embedding and output are the same layers (same parameters and FLOPs, checked
in the tests); the decoder differs: UNet2DModel has layers_per_block + 1 = 2 ResBlocks per level to
our 1, extra skips and a wider upsampling conv; its time MLP reads 32 sinusoids to our 128. So the
reference has 0.758 M parameters to our 0.571 M and does 1.52x our FLOPs per image: "per image"
compares the same job, "per FLOP" the achieved FLOP/s, and both are printed.

Peak memory, per model: on CUDA torch.cuda.max_memory_allocated after reset_peak_memory_stats,
minus what was allocated then; on CPU (Linux) the peak RSS (VmHWM, reset through
/proc/self/clear_refs) minus the RSS right before the model is built. Each model runs in a fresh
process by default, after a throwaway batch-1 step that loads library code.
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from minilineage.diffusion import DiffusionPipeline
from minilineage.diffusion.pipeline import PipelineConfig
from minilineage.models.unet import UNetConfig
from minilineage.recipes import get_recipe
from minilineage.train import describe_device, pick_device


@dataclass
class BenchSettings:
    device: str = "auto"
    batch_size: int = 128  # training batch
    iters: int = 10  # timed training steps (after 2 warm-up steps)
    sample_n: int = 64  # images per sample() call
    sample_steps: int = 50  # DDIM steps per sample() call
    sample_iters: int = 2  # timed sample() calls (after 1 warm-up call)
    fresh_process: bool = True  # each model in a new Python process
    threads: int = field(default_factory=torch.get_num_threads)


@dataclass
class Job:
    """One model to measure: a training step's loss and, for a denoiser, a full sampling run."""

    name: str
    model: nn.Module
    loss: Callable[[nn.Module, dict, torch.Generator], Tensor]  # as a recipe's loss
    sample: Callable[[nn.Module, int, int, torch.Generator], Tensor] | None = None  # (model, n, steps, generator)
    network: nn.Module | None = None  # what a sampling step calls once (tests count the calls)
    shape: tuple[int, ...] = (1, 28, 28)  # one training image


# --- the reference: diffusers' UNet2DModel configured for the same job ------------------------------

class DiffusersUNet(nn.Module):
    """diffusers' UNet2DModel behind our interface: eps_hat = net(x, t, y), with our space-to-depth outside it."""

    def __init__(self, unet: nn.Module, patch: int):
        super().__init__()
        self.unet, self.patch = unet, patch

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        p = self.patch
        x = rearrange(x, "b c (h p1) (w p2) -> b (c p1 p2) h w", p1=p, p2=p)  # (B, C p p, H/p, W/p)
        out = self.unet(x, t, class_labels=y).sample  # (B, C p p, H/p, W/p)
        return rearrange(out, "b (c p1 p2) h w -> b c (h p1) (w p2)", p1=p, p2=p)  # (B, C, H, W)


def reference_unet(config: UNetConfig, size: int) -> DiffusersUNet:
    """The UNet2DModel that does the job of `UNet(config)` on size x size images (see the module docstring)."""
    from diffusers import UNet2DModel

    if config.context_dim is not None:
        raise ValueError("the reference has no text cross-attention (context_dim must be None)")
    widths = tuple(config.width * m for m in config.channel_mults)
    attention, p = set(config.attention_levels), config.patch
    groups = math.gcd(8, *widths)  # ours: gcd(8, channels) per layer; diffusers: one count for all
    unet = UNet2DModel(
        sample_size=size // p, in_channels=config.in_channels * p * p,
        out_channels=(config.out_channels or config.in_channels) * p * p,
        block_out_channels=widths, layers_per_block=config.blocks_per_level,
        down_block_types=tuple("AttnDownBlock2D" if i in attention else "DownBlock2D" for i in range(len(widths))),
        up_block_types=tuple("AttnUpBlock2D" if i in attention else "UpBlock2D" for i in reversed(range(len(widths)))),
        attention_head_dim=widths[-1] // config.heads,  # our heads at the deepest width (the middle's attention)
        norm_num_groups=groups, attn_norm_num_groups=groups, resnet_time_scale_shift="scale_shift",
        num_class_embeds=config.num_classes + 1 if config.num_classes else None, dropout=config.dropout)
    return DiffusersUNet(unet, p)


def reference_job(config: PipelineConfig, name: str = "diffusers UNet2DModel") -> Job:
    """UNet2DModel + DDIMScheduler doing what DiffusionPipeline(config) does: train on eps, sample with DDIM."""
    from diffusers import DDIMScheduler

    unet_config = UNetConfig(**config.denoiser["config"])
    scheduler = DDIMScheduler(num_train_timesteps=config.T, timestep_spacing="linspace",  # our DDIM timesteps
                              beta_schedule={"cosine": "squaredcos_cap_v2"}.get(config.schedule, "linear"),
                              clip_sample=config.clip_x0 is not None, clip_sample_range=config.clip_x0 or 1.0)
    classes = unet_config.num_classes

    def loss(net, batch, generator):  # Ho et al. 2020, Algorithm 1, with labels dropped at p_uncond as ours
        x0, y = batch["x"], batch["y"]
        t = torch.randint(0, config.T, (len(x0),), generator=generator, device=generator.device).to(x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device)
        drop = torch.rand(y.shape, generator=generator, device=generator.device).to(y.device) < config.p_uncond
        y = torch.where(drop, classes, y) if classes else None
        return F.mse_loss(net(scheduler.add_noise(x0, eps, t), t, y), eps)

    @torch.no_grad()
    def sample(net, n, steps, generator):  # the diffusers loop: set_timesteps, then one step() per call
        device = next(net.parameters()).device
        scheduler.set_timesteps(steps)
        x = torch.randn((n, *config.shape), generator=generator, device=generator.device).to(device)
        y = (torch.arange(n) % classes).to(device) if classes else None
        for t in scheduler.timesteps:
            x = scheduler.step(net(x, t.to(device).expand(n), y), t, x).prev_sample
        return x.clamp(-1, 1)

    net = reference_unet(unet_config, config.shape[-1])
    return Job(name, net, loss, sample, net.unet, config.shape)


# --- the course's models, and which reference each is compared with ---------------------------------

def recipe_job(name: str) -> Job:
    """A recipe's model at its CPU preset's size, its training loss and (for a pipeline) its sampler."""
    recipe = get_recipe(name)
    model = recipe.build()
    if not isinstance(model, DiffusionPipeline):
        return Job(name, model, recipe.loss)
    return Job(name, model, recipe.loss, pipeline_sample, model.net, model.config.shape)


def pipeline_sample(pipeline: DiffusionPipeline, n: int, steps: int, generator: torch.Generator) -> Tensor:
    """Our sampling job: DDIM with `steps` steps at guidance 1, i.e. one network call per step."""
    return pipeline.sample(n, generator, steps=steps, guidance=1.0)


# what `minilineage bench` measures, by name: zero-argument builders, so a fresh process can make its own
JOBS: dict[str, Callable[[], Job]] = {name: partial(recipe_job, name) for name in
                                      ("ae-mnist", "vae-mnist", "lenet-mnist", "ddpm-mnist")}
JOBS["diffusers:ddpm-mnist"] = lambda: reference_job(get_recipe("ddpm-mnist").config())
REFERENCES = {"ddpm-mnist": "diffusers:ddpm-mnist"}  # our model -> the job it is compared with


# --- measuring ----------------------------------------------------------------------------------------

def flop_counter() -> FlopCounterMode:
    """torch's FlopCounterMode, also counting the CPU attention kernel (it knows only the GPU ones)."""
    aten = torch.ops.aten
    return FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *_, **__: sdpa_flop_count(q, k, v),
        aten._scaled_dot_product_flash_attention_for_cpu_backward:
            lambda grad, q, k, v, *_, **__: sdpa_backward_flop_count(grad, q, k, v)})


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of everything `fn` runs (matmul, conv, attention; forward and backward)."""
    with flop_counter() as counter:
        fn()
    return counter.get_total_flops()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device, iters: int) -> float:
    """Seconds per call, over `iters` calls (warm up first)."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)  # CUDA runs asynchronously: wait for the work, not just its launch
    return (time.perf_counter() - start) / iters


def _proc_status(key: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident) of this process in bytes (Linux)."""
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def start_peak_memory(device: torch.device) -> int | None:
    """Reset the peak-memory counter; return what is held now (the baseline), or None where unmeasurable."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    if device.type == "cpu" and Path("/proc/self/clear_refs").exists():
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the RSS now
        return _proc_status("VmRSS")
    return None


def peak_memory(device: torch.device, baseline: int | None) -> int | None:
    """Peak bytes held since `start_peak_memory`, above its baseline."""
    if baseline is None:
        return None
    return (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _proc_status("VmHWM")) - baseline


def _trainer(job: Job, device: torch.device, batch_size: int) -> Callable[[], None]:
    """One training step of `job` on a fixed batch: its loss (bf16 autocast on CUDA), backward, AdamW."""
    model = job.model.to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, *job.shape, generator=g) * 2 - 1  # timing does not depend on the pixels
    batch = {"x": x.to(device), "y": torch.randint(0, 10, (batch_size,), generator=g).to(device)}
    generator = torch.Generator(device).manual_seed(0)

    def train_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = job.loss(model, batch, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return train_step


def _sampler(job: Job, device: torch.device, n: int, steps: int) -> Callable[[], Tensor]:
    generator = torch.Generator(device).manual_seed(0)
    return lambda: job.sample(job.model.eval(), n, steps, generator)


def _warm_up(make_job: Callable[[], Job], device: torch.device) -> None:
    """A throwaway step at batch 1 (and a 1-step sample), so that loading library code and lazily
    allocated runtime state (tens of MB of RSS in a fresh process) is not charged to the model."""
    job = make_job()
    _trainer(job, device, 1)()
    if job.sample is not None:
        _sampler(job, device, 1, 1)()
    del job
    gc.collect()


def measure(make_job: Callable[[], Job], settings: BenchSettings) -> dict:
    """Parameters, FLOPs and images/s of a training step and of sampling, and peak memory, of one job."""
    device = pick_device(settings.device)
    torch.manual_seed(0)
    _warm_up(make_job, device)
    baseline = start_peak_memory(device)
    job = make_job()
    train_step = _trainer(job, device, settings.batch_size)
    train_flops = count_flops(train_step)  # also the first warm-up step
    train_step()
    train_s = _timed(train_step, device, settings.iters)
    row = {"model": job.name, "params": sum(p.numel() for p in job.model.parameters() if p.requires_grad),
           "train_flops": train_flops, "train_img_s": settings.batch_size / train_s,
           "train_tflop_s": train_flops / train_s / 1e12}
    if job.sample is not None:
        sample = _sampler(job, device, settings.sample_n, settings.sample_steps)
        sample_flops = count_flops(sample)  # also the warm-up call
        sample_s = _timed(sample, device, settings.sample_iters)
        row |= {"sample_flops": sample_flops, "sample_img_s": settings.sample_n / sample_s,
                "sample_tflop_s": sample_flops / sample_s / 1e12}
    peak = peak_memory(device, baseline)
    return row | {"peak_MB": None if peak is None else peak / 2**20}


def measure_named(name: str, settings: BenchSettings) -> dict:
    """`measure(JOBS[name])` with the caller's thread count: the entry point of a fresh process."""
    torch.set_num_threads(settings.threads)
    return measure(JOBS[name], settings)


def measure_in_fresh_process(name: str, settings: BenchSettings) -> dict:
    """`measure_named` in a new Python process, so the model starts from a clean heap."""
    code = ("import json, sys; from minilineage.bench import BenchSettings, measure_named; "
            "print(json.dumps(measure_named(sys.argv[1], BenchSettings(**json.loads(sys.argv[2])))))")
    package_root = str(Path(__file__).resolve().parent.parent)  # this checkout, whatever the child's sys.path
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code, name, json.dumps(asdict(settings))],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {name} in a fresh process failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


# --- the report ---------------------------------------------------------------------------------------

MATCHED = (  # ddpm-mnist against UNet2DModel
    "same job: (B, 1, 28, 28) images, t and labels in, eps_hat out; the 2x2 space-to-depth is done outside "
    "UNet2DModel (in/out channels 4, 14x14 maps)",
    "levels and widths (32, 64); one ResBlock per encoder level (layers_per_block=1); stride-2 conv downsampling",
    "ResBlocks: GN-SiLU-conv3x3 twice, embedding as scale and shift (resnet_time_scale_shift='scale_shift'), "
    "1x1-conv skip where widths change",
    "self-attention at 7x7 and in the middle (ResBlock-attention-ResBlock), 4 heads x 16, GroupNorm 8 groups "
    "everywhere, biased q/k/v/out projections",
    "time + class embedding (11 = 10 classes + null) of width 128; output GN-SiLU-conv3x3",
)
DIFFERS = (
    "decoder: UNet2DModel has layers_per_block + 1 = 2 ResBlocks (and attentions) per level, ours 1, and it also "
    "reads the skips taken after conv_in and after the downsample",
    "its upsampling conv keeps 64 channels at 14x14; ours outputs 32 there",
    "its time MLP reads 32 sinusoids (block_out_channels[0]), ours 128; initialisation differs (no effect on cost)",
)


def diffusers_version() -> str | None:
    """The installed diffusers version, or None (then the reference is skipped)."""
    try:
        import diffusers
    except ImportError:
        return None
    return diffusers.__version__


def memory_method(device: torch.device, fresh_process: bool) -> str:
    where = "each model in a fresh process" if fresh_process else "all models in this process (may under-count)"
    if device.type == "cuda":
        return f"torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus what was allocated then; {where}"
    if device.type == "cpu" and Path("/proc/self/clear_refs").exists():
        return f"peak RSS (VmHWM, reset via /proc/self/clear_refs) minus the RSS right before the model is built; {where}"
    return f"not measured on {device.type}"


def compare(ours: dict, ref: dict) -> dict:
    """Ours / reference at the same job: per image (images/s) and per FLOP (achieved FLOP/s)."""
    kinds = [k for k in ("train", "sample") if f"{k}_img_s" in ours and f"{k}_img_s" in ref]
    return {"against": ref["model"], "reference_flops_ratio": ref["train_flops"] / ours["train_flops"],
            "per_image": {k: ours[f"{k}_img_s"] / ref[f"{k}_img_s"] for k in kinds},
            "per_flop": {k: ours[f"{k}_tflop_s"] / ref[f"{k}_tflop_s"] for k in kinds}}


def _print_rows(rows: list[dict]) -> None:
    print(f"{'model':22s} {'params':>8s} {'train GFLOP/step':>16s} {'train img/s':>11s} {'TFLOP/s':>8s} "
          f"{'sample img/s':>12s} {'TFLOP/s':>8s} {'peak MB':>8s}")
    for r in rows:
        sample = f"{r['sample_img_s']:12.1f} {r['sample_tflop_s']:8.4f}" if "sample_img_s" in r else f"{'-':>12s} {'-':>8s}"
        peak = "n/a" if r["peak_MB"] is None else f"{r['peak_MB']:.0f}"
        print(f"{r['model']:22s} {r['params'] / 1e6:7.3f}M {r['train_flops'] / 1e9:16.2f} {r['train_img_s']:11.0f} "
              f"{r['train_tflop_s']:8.4f} {sample} {peak:>8s}")


def _print_comparison(ours: dict, ref: dict, c: dict, version: str) -> None:
    print(f"\n{ours['model']} vs {ref['model']} (diffusers {version}), guidance 1 for both (one call per step)")
    print("\n".join([f"  matched: {line}" for line in MATCHED] + [f"  differs: {line}" for line in DIFFERS]))
    print(f"  parameters: ours {ours['params']:,}, reference {ref['params']:,} ({ref['params'] / ours['params']:.2f}x)")
    print(f"  FLOPs per training step: ours {ours['train_flops']:,}, reference {ref['train_flops']:,} "
          f"({c['reference_flops_ratio']:.2f}x)")
    ratios = lambda d: ", ".join(f"{'training' if k == 'train' else 'sampling'} {v:.2f}x" for k, v in d.items())  # noqa: E731
    print(f"  per image (images/s, ours / reference, same job): {ratios(c['per_image'])}")
    print(f"  per FLOP  (achieved FLOP/s, ours / reference):    {ratios(c['per_flop'])}")


def run(settings: BenchSettings | None = None, json_path: str | Path | None = None,
        models: tuple[str, ...] = tuple(JOBS)) -> dict:
    """Measure `models` (names in JOBS), print the table and the comparisons, optionally write JSON."""
    settings = settings or BenchSettings()
    device, version = pick_device(settings.device), diffusers_version()
    if version is None and set(models) & set(REFERENCES.values()):
        print("reference skipped: diffusers is not installed (`pip install -e .[bench]` adds it)")
        models = tuple(m for m in models if m not in REFERENCES.values())
    print(f"device: {describe_device(device)}; training batch {settings.batch_size}, {settings.iters} timed steps; "
          f"sampling {settings.sample_n} images x {settings.sample_steps} DDIM steps, {settings.sample_iters} timed calls")
    print(f"peak memory: {memory_method(device, settings.fresh_process)}")
    measure_one = measure_in_fresh_process if settings.fresh_process else lambda n, s: measure(JOBS[n], s)
    rows = {name: measure_one(name, settings) for name in models}
    _print_rows(list(rows.values()))
    for name, row in rows.items():
        ref = rows.get(REFERENCES.get(name))
        row["speedup_vs_reference"] = compare(row, ref) if ref else None
        if ref:
            _print_comparison(row, ref, row["speedup_vs_reference"], version)
    result = {"device": describe_device(device), "settings": asdict(settings), "diffusers": version,
              "memory_method": memory_method(device, settings.fresh_process),
              "reference_matching": {"matched": MATCHED, "differs": DIFFERS}, "models": rows}
    if json_path is not None:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {json_path}")
    return result
