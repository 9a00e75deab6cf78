"""One training loop for every model in the course.

The loop knows nothing about the model: it is given `loss_fn(model, batch, generator) -> loss`
and `next_batch(step, generator) -> dict of tensors`. It adds what every run needs: device choice,
bf16 autocast on CUDA, optional torch.compile, EMA weights, gradient clipping, a tqdm bar, atomic
periodic checkpoints with resume, a NaN/inf guard, seeded determinism, and DistributedDataParallel
when started with `torchrun`.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from minilineage import checkpoint

DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_schedule: str = "cosine"  # "cosine" decays to 10 % of lr; "constant" keeps it
    ema_decay: float = 0.0  # 0 turns EMA off
    grad_clip: float = 1.0
    checkpoint_every: int = 500
    log_every: int = 25
    seed: int = 0
    compile: bool = False


class TrainingDiverged(RuntimeError):
    """The loss or the gradients stopped being finite; the last good checkpoint is kept."""


def pick_device(name: str | None = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU."""
    name = name or "auto"
    if name.split(":")[0] not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)} (or cuda:N)")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but torch sees no CUDA GPU; use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' asked for, but this torch has no MPS backend; use --device cpu")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


class EMA:
    """Exponential moving average of the weights, with the usual warm-up of the decay.

    decay_k = min(decay, (1 + k) / (10 + k)): early on the average follows the weights closely, so
    short CPU runs are not dominated by the random initialisation (a fixed 0.999 would keep e^-2 of it
    after 2,000 steps).
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for ema_p, p in zip(self.model.state_dict().values(), model.state_dict().values()):
            if ema_p.is_floating_point():
                ema_p.lerp_(p.detach(), 1 - d)
            else:
                ema_p.copy_(p)


def lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 10 % (or constant)."""

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.lr_schedule == "constant":
            return 1.0
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel or torch.compile wrapper (for its attributes)."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def step_generator(seed: int, step: int, device: torch.device, rank: int = 0) -> torch.Generator:
    """A generator for one step, derived from (seed, step, rank): a resumed run draws the same numbers."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step) * 101 + rank)
    return g


@dataclass
class TrainState:
    """Everything `fit` returns: the trained model, its EMA copy and the loss history."""

    model: nn.Module
    ema: EMA | None
    step: int
    wall_time_s: float
    history: list[tuple[int, float]] = field(default_factory=list)

    @property
    def final_model(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.model


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises torch.distributed when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (torch.distributed.get_rank() if world > 1 else 0), world


@torch.enable_grad()  # a notebook may have switched gradients off globally; training needs them
def fit(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, dict, torch.Generator], torch.Tensor],
    next_batch: Callable[[int, torch.Generator], dict],
    config: TrainConfig,
    device: torch.device | str = "auto",
    resume_path: str | Path | None = None,
    resume: bool = False,
    meta: dict | None = None,
    callbacks: tuple[Callable[[int, float], None], ...] = (),
    progress: bool = True,
    keep_every: int = 0,
) -> TrainState:
    """Train `model` for `config.steps` steps; write `resume_path` every `checkpoint_every` steps.

    `keep_every > 0` also keeps a loadable snapshot of the weights a run would ship (EMA if on)
    every that many steps, next to `resume_path`: NAME-step500.pt, NAME-step1000.pt, ... Each
    records its step and training wall time, so quality can be plotted against training minutes.
    """
    if keep_every < 0:
        raise ValueError(f"keep_every must be 0 (off) or a positive number of steps, not {keep_every}")
    device = pick_device(device) if isinstance(device, str) else device
    rank, world = _distributed()
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    ema = EMA(model, config.ema_decay) if config.ema_decay > 0 else None
    state = TrainState(model, ema, step=0, wall_time_s=0.0)

    if resume and resume_path and Path(resume_path).exists():
        _restore(state, optimizer, scheduler, checkpoint.load(resume_path, map_location=device))
    elif resume:
        print(f"no checkpoint at {resume_path}; starting from step 0")

    train_model = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if config.compile:
        train_model = torch.compile(train_model)

    def save():
        if rank == 0 and resume_path:
            checkpoint.save_atomic(_resume_dict(state, optimizer, scheduler, config, meta or {}), resume_path)

    def keep():
        if rank == 0 and resume_path:
            name = Path(resume_path).name.removesuffix(".resume.pt")
            snapshot = {"format": checkpoint.FORMAT, **(meta or {}), "model": state.final_model.state_dict(),
                        "step": state.step, "seed": config.seed, "wall_time_s": round(state.wall_time_s, 1)}
            checkpoint.save_atomic(snapshot, Path(resume_path).with_name(f"{name}-step{state.step}.pt"))

    bar = tqdm(total=config.steps, initial=state.step, disable=not progress or rank != 0, desc="train", mininterval=1.0)
    started, running = time.perf_counter() - state.wall_time_s, []
    model.train()
    while state.step < config.steps:
        step = state.step
        batch = next_batch(step, step_generator(config.seed, step, torch.device("cpu"), rank))
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_fn(train_model, batch, step_generator(config.seed, step, device, rank))
        if not torch.isfinite(loss):
            _diverged(f"loss became {loss.item()}", step, resume_path)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip if config.grad_clip > 0 else float("inf"))
        if not torch.isfinite(grad_norm):
            _diverged(f"gradient norm became {grad_norm.item()}", step, resume_path)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(model, step)
        state.step += 1
        running.append(loss.item())
        if state.step % config.log_every == 0 or state.step == config.steps:
            mean = sum(running) / len(running)
            state.history.append((state.step, mean))
            running.clear()
            bar.set_postfix(loss=f"{mean:.4f}")
            for callback in callbacks:
                callback(state.step, mean)
        bar.update(1)
        state.wall_time_s = time.perf_counter() - started
        if state.step % config.checkpoint_every == 0 or state.step == config.steps:
            save()
        if keep_every > 0 and state.step % keep_every == 0:
            keep()
    bar.close()
    model.eval()
    return state


def _diverged(what: str, step: int, resume_path) -> None:
    kept = f"the last good checkpoint {resume_path} is kept" if resume_path and Path(resume_path).exists() else "no checkpoint was written yet"
    raise TrainingDiverged(f"training stopped at step {step}: {what}; {kept}. Lower the learning rate or raise grad clipping.")


def _resume_dict(state: TrainState, optimizer, scheduler, config: TrainConfig, meta: dict) -> dict:
    return {
        "format": checkpoint.FORMAT,
        **meta,
        "model": state.final_model.state_dict(),
        "raw_model": state.model.state_dict(),
        "ema": state.ema.model.state_dict() if state.ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": state.step,
        "seed": config.seed,
        "train_config": asdict(config),
        "wall_time_s": state.wall_time_s,
        "history": state.history,
    }


def _restore(state: TrainState, optimizer, scheduler, ckpt: dict) -> None:
    state.model.load_state_dict(ckpt["raw_model"])
    if state.ema is not None and ckpt.get("ema") is not None:
        state.ema.model.load_state_dict(ckpt["ema"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    state.step, state.wall_time_s, state.history = ckpt["step"], ckpt["wall_time_s"], list(ckpt["history"])
    print(f"resumed from step {state.step}")
