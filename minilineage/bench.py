"""`minilineage bench`: parameters, training and sampling throughput, peak memory and FLOP/s per model.

Each course model is timed at the size its recipe trains; where a widely used reference exists
(diffusers' UNet2DModel for the DDPM denoiser) it is timed beside it at a matched size, in the same
process, and the ratio printed. Numbers are measurements on the current device, not assertions.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from minilineage.train import describe_device, pick_device


@dataclass
class Job:
    """One thing to time: a model, a batch maker, and the loss for a training step."""

    name: str
    model: nn.Module
    batch: Callable[[int, torch.device], tuple]
    loss: Callable[[nn.Module, tuple], torch.Tensor]
    forward: Callable[[nn.Module, tuple], torch.Tensor]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> float:
    """Seconds per call after `warmup` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / iters


def measure(job: Job, device: torch.device, batch_size: int, iters: int = 10) -> dict:
    """Training images/s (fwd + bwd + AdamW), forward images/s, FLOP per training step, peak memory."""
    model = job.model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = job.batch(batch_size, device)

    def train_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = job.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        train_step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_s = _timed(train_step, device, warmup=2, iters=iters)
    with torch.no_grad():
        forward_s = _timed(lambda: job.forward(model, batch), device, warmup=1, iters=iters)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "model": job.name,
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "train_img_s": batch_size / train_s,
        "forward_img_s": batch_size / forward_s,
        "tflop_s": counter.get_total_flops() / train_s / 1e12,
        "peak_MB": peak / 2**20,
    }


def _digits(n: int, device: torch.device) -> tuple:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 28, 28, generator=g) * 2 - 1
    return x.to(device), torch.randint(0, 1000, (n,), generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(device)


def course_jobs() -> list[Job]:
    from minilineage.recipes import get_recipe

    def eps_mse(model, b):
        return (model(b[0], b[1], b[2]) - b[0]).pow(2).mean()

    jobs = []
    for name in ("ae-mnist", "vae-mnist", "lenet-mnist"):
        m = get_recipe(name).build()  # a squared-output loss: what is timed is the network, not its objective
        jobs.append(Job(name, m, _digits, lambda m, b: m(b[0]).float().pow(2).mean(), lambda m, b: m(b[0])))
    ddpm = get_recipe("ddpm-mnist").build()
    jobs.append(Job("ddpm-mnist U-Net (patch 2)", ddpm, _digits, eps_mse, lambda m, b: m(b[0], b[1], b[2])))
    return jobs


def reference_jobs() -> list[Job]:
    """diffusers' UNet2DModel at a size matched to ddpm-mnist (needs the `bench` extra)."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        print("(diffusers not installed: `pip install -e .[bench]` adds the reference implementation)")
        return []
    ref = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(32, 64), layers_per_block=1,
                      down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                      num_class_embeds=11, norm_num_groups=8)

    def loss(m, b):
        return (m(b[0], b[1], class_labels=b[2]).sample - b[0]).pow(2).mean()

    return [Job("diffusers UNet2DModel (reference)", ref, _digits, loss, lambda m, b: m(b[0], b[1], class_labels=b[2]).sample)]


def run(device: str = "auto", batch_size: int = 128, iters: int = 10) -> list[dict]:
    dev = pick_device(device)
    print(f"device: {describe_device(dev)}; batch {batch_size}; {iters} timed iterations")
    rows = [measure(job, dev, batch_size, iters) for job in course_jobs() + reference_jobs()]
    print(f"{'model':36s} {'params':>8s} {'train img/s':>12s} {'fwd img/s':>10s} {'TFLOP/s':>8s} {'peak MB':>8s}")
    for r in rows:
        print(f"{r['model']:36s} {r['params_M']:7.2f}M {r['train_img_s']:12.0f} {r['forward_img_s']:10.0f} "
              f"{r['tflop_s']:8.3f} {r['peak_MB']:8.0f}")
    ours = next(r for r in rows if r["model"].startswith("ddpm-mnist"))
    for r in rows:
        if "reference" in r["model"]:
            print(f"ddpm-mnist U-Net vs reference: training {ours['train_img_s'] / r['train_img_s']:.2f}x, "
                  f"sampling {ours['forward_img_s'] / r['forward_img_s']:.2f}x the reference's throughput")
    return rows


def add_bench_command(subparsers) -> None:
    p = subparsers.add_parser("bench", help="time every model (and a reference implementation)",
                              description="Print parameters, training and forward images/s, TFLOP/s and peak memory per model.")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128)")
    p.add_argument("--iters", type=int, default=10, help="timed iterations per measurement (default: 10)")
    p.set_defaults(func=lambda args: run(args.device, args.batch_size, args.iters))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m minilineage.bench")
    sub = parser.add_subparsers(dest="command", required=True)
    add_bench_command(sub)
    args = parser.parse_args(["bench"])
    args.func(args)
