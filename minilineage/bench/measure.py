"""Measuring one job: FLOPs (counted), seconds (timed), peak memory, and a device's bf16 peak.

A `Job` is what the bench measures: a model, its training loss and, for a denoiser, a full sampler.
`measure` gives parameters, FLOPs of a training step (forward + backward as counted by
FlopCounterMode: matmuls, convolutions, attention; not elementwise ops), training and sampling
images/s, achieved TFLOP/s and peak memory. Measurements, not assertions.

Peak memory: on CUDA torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus what was
allocated then; on CPU (Linux) the peak RSS (VmHWM, reset through /proc/self/clear_refs) minus the
RSS right before the model is built.
"""

from __future__ import annotations

import gc
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from minilineage.train import pick_device


@dataclass
class BenchSettings:
    device: str = "auto"
    batch_size: int = 128  # training batch
    iters: int = 10  # timed training steps (after 2 warm-up steps)
    sample_n: int = 64  # images per sample() call
    sample_steps: int = 50  # DDIM steps per sample() call
    sample_iters: int = 2  # timed sample() calls (after 1 warm-up call)
    fresh_process: bool = True  # each model in a new Python process
    rounds: int = 1  # measure every model this many times, in turn (ours, reference, ours, ...); keep the fastest
    threads: int = field(default_factory=torch.get_num_threads)


@dataclass
class Job:
    """One model to measure: a training step's loss and, for a denoiser, a full sampling run."""

    name: str
    model: nn.Module
    loss: Callable[[nn.Module, dict, torch.Generator], Tensor]  # as a recipe's loss
    sample: Callable[[nn.Module, int, int, torch.Generator], Tensor] | None = None  # (model, n, steps, generator)
    network: nn.Module | None = None  # what a sampling step calls once (tests count the calls)
    shape: tuple[int, ...] = (1, 28, 28)  # one training image (pixels, also for a latent model)
    batch: Callable[[int, torch.Generator], dict] | None = None  # (batch size, generator) -> batch; None: x and y


# Dense (not 2:4 sparse) bf16 tensor-core peaks with fp32 accumulation, in TFLOP/s, from the vendors'
# data sheets; the first name that occurs in torch.cuda.get_device_name wins, so longer names first.
BF16_PEAK_TFLOPS: dict[str, float] = {
    "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "H200": 989.4, "H800": 989.4, "GH200": 989.4,
    "B200": 2250.0, "A100": 312.0, "A800": 312.0, "L40S": 362.1, "L40": 181.0, "L4": 121.0, "A10G": 70.0,
    "A10": 125.0, "RTX 4090": 165.2, "RTX 4080": 97.5, "RTX 3090": 71.0, "RTX A6000": 154.8,
}


def bf16_peak_tflops(device_name: str) -> float | None:
    """The device's dense bf16 peak from BF16_PEAK_TFLOPS, or None for a device not in the table."""
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in device_name), None)


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


class OpCounter(TorchDispatchMode):
    """Counts the aten operators dispatched inside it (`with OpCounter() as counter: ...; counter.ops`)."""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn: Callable[[], object]) -> int:
    """How many aten operators `fn` dispatches: in eager mode on a GPU, about one kernel launch each."""
    with OpCounter() as counter:
        fn()
    return counter.ops


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], device: torch.device, iters: int) -> float:
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


def restart_peak_memory(device: torch.device) -> None:
    """Reset the peak counter to what is held now, keeping the earlier baseline (for a second batch size)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif device.type == "cpu" and Path("/proc/self/clear_refs").exists():
        Path("/proc/self/clear_refs").write_text("5")


def random_batch(shape: tuple[int, ...]) -> Callable[[int, torch.Generator], dict]:
    """Images in [-1, 1] of `shape` and labels 0-9: timing does not depend on the pixels."""
    def batch(batch_size: int, g: torch.Generator) -> dict:
        return {"x": torch.rand(batch_size, *shape, generator=g) * 2 - 1,
                "y": torch.randint(0, 10, (batch_size,), generator=g)}
    return batch


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


def trainer(job: Job, device: torch.device, batch_size: int, bf16: bool | None = None,
            compile: bool = False) -> Callable[[], None]:
    """One training step of `job` on a fixed batch: its loss (bf16 autocast on CUDA), backward, AdamW (fused on
    CUDA, as `fit` builds it); with `compile` the loss calls the model through torch.compile, as `fit` does."""
    model = job.model.to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                                  fused=device.type == "cuda")
    called = torch.compile(model) if compile else model
    batch = _to((job.batch or random_batch(job.shape))(batch_size, torch.Generator().manual_seed(0)), device)
    generator = torch.Generator(device).manual_seed(0)
    bf16 = device.type == "cuda" if bf16 is None else bf16

    def train_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = job.loss(called, batch, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return train_step


def _sampler(job: Job, device: torch.device, n: int, steps: int) -> Callable[[], Tensor]:
    generator = torch.Generator(device).manual_seed(0)
    return lambda: job.sample(job.model.eval(), n, steps, generator)


def warm_up(make_job: Callable[[], Job], device: torch.device) -> None:
    """A throwaway step at batch 1 (and a 1-step sample), so that loading library code and lazily
    allocated runtime state (tens of MB of RSS in a fresh process) is not charged to the model."""
    job = make_job()
    trainer(job, device, 1)()
    if job.sample is not None:
        _sampler(job, device, 1, 1)()
    del job
    gc.collect()


def measure(make_job: Callable[[], Job], settings: BenchSettings) -> dict:
    """Parameters, FLOPs and images/s of a training step and of sampling, and peak memory, of one job."""
    device = pick_device(settings.device)
    torch.manual_seed(0)
    warm_up(make_job, device)
    baseline = start_peak_memory(device)
    job = make_job()
    train_step = trainer(job, device, settings.batch_size)
    train_flops = count_flops(train_step)  # also the first warm-up step
    train_step()
    train_s = seconds_per_call(train_step, device, settings.iters)
    row = {"model": job.name, "params": sum(p.numel() for p in job.model.parameters() if p.requires_grad),
           "train_flops": train_flops, "train_img_s": settings.batch_size / train_s,
           "train_tflop_s": train_flops / train_s / 1e12}
    if job.sample is not None:
        sample = _sampler(job, device, settings.sample_n, settings.sample_steps)
        sample_flops = count_flops(sample)  # also the warm-up call
        sample_s = seconds_per_call(sample, device, settings.sample_iters)
        row |= {"sample_flops": sample_flops, "sample_img_s": settings.sample_n / sample_s,
                "sample_tflop_s": sample_flops / sample_s / 1e12}
    peak = peak_memory(device, baseline)
    row |= {"peak_MB": None if peak is None else peak / 2**20}
    if device.type == "cuda":
        peak_tflops = bf16_peak_tflops(torch.cuda.get_device_name(device))
        row |= {"bf16_peak_tflop_s": peak_tflops,
                "train_share_of_bf16_peak": None if peak_tflops is None else row["train_tflop_s"] / peak_tflops}
    return row
