"""One training loop for every model in the course.

The loop knows nothing about the model: it is given `loss_fn(model, batch, generator) -> loss`
and `next_batch(step, generator) -> dict of tensors`. It adds what every run needs: device choice,
the fast paths (bf16 autocast, torch.compile, channels-last, fused AdamW on CUDA, the next batch built
in a background thread while the GPU works), EMA weights, gradient clipping, a tqdm bar, atomic
periodic checkpoints with resume, a NaN/inf guard, seeded determinism, and DistributedDataParallel
when a process group is open (`distributed.process_group`, under torchrun).

The host never waits for the device inside a step: the loss and a "was everything finite" flag stay
on the device and are read once per log step and before any checkpoint is written. Under torchrun
every process draws the same global batch and trains on its own slice (`data.shard`); DDP averages
the gradients, so N processes take the steps one process would take on the whole batch.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from minilineage import checkpoint, distributed
from minilineage.data import shard

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "bf16", "fp32")  # auto: bf16 autocast on CUDA, fp32 elsewhere


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
    precision: str = "auto"  # one of PRECISIONS: what the forward pass and loss run in (weights stay fp32)
    channels_last: bool = False  # NHWC layout for convolutional models (faster convolutions on CUDA tensor cores)
    prefetch: bool | None = None  # build the next batch in a thread (pinned memory) during the step; None: on CUDA
    pre_encode: bool = False  # latent models: encode the dataset once with the frozen autoencoder (`train_recipe`)
    # Hard stops for time-budgeted comparisons (`bench --race`): training ends at the first step whose wall time, or
    # this process's CPU time (`time.process_time`), reaches this many seconds, even before `steps` (whose count still
    # sets the schedule). Both are counted from the start of training, across resumes. One process only.
    max_seconds: float | None = None
    max_cpu_seconds: float | None = None

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}")

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """bf16 when asked for, or on CUDA by default; None means full fp32."""
        if self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda"):
            return torch.bfloat16
        return None


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
    """Exponential moving average of the trainable weights, with the usual warm-up of the decay.

    decay_k = min(decay, (1 + k) / (10 + k)): early on the average follows the weights closely, so
    short CPU runs are not dominated by the random initialisation (a fixed 0.999 would keep e^-2 of it
    after 2,000 steps). Only parameters that train are averaged: frozen parts (the autoencoder and
    text encoder of latent diffusion) never change, so their copy is left alone; buffers (running
    statistics, schedule tables) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            if p.requires_grad:
                ema_p.lerp_(p, 1 - d)  # ema + (1 - d) (p - ema) = d ema + (1 - d) p
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)


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
    cpu_time_s: float = 0.0  # this process's CPU time in training (time.process_time): all its threads, all cores
    history: list[tuple[int, float]] = field(default_factory=list)

    @property
    def final_model(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.model


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
    Inside `distributed.process_group` every process trains on its slice of each batch; rank 0
    alone writes files, shows the bar and calls `callbacks`.
    """
    if keep_every < 0:
        raise ValueError(f"keep_every must be 0 (off) or a positive number of steps, not {keep_every}")
    rank, world = distributed.rank_and_world()
    for name, limit in (("max_seconds", config.max_seconds), ("max_cpu_seconds", config.max_cpu_seconds)):
        if limit is not None and (world > 1 or limit <= 0):
            raise ValueError(f"{name} must be a positive number of seconds, for one process (got {limit}, {world} processes)")
    if world < distributed.launched()[1]:
        raise RuntimeError("torchrun started several processes, but no process group is open: call fit inside "
                           "`with distributed.process_group(device) as device:` (train_recipe does)")
    device = pick_device(device) if isinstance(device, str) else device
    model.to(device, memory_format=torch.channels_last if config.channels_last else torch.preserve_format)
    # fused: one kernel for the whole update of all parameters (CUDA only)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  fused=device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    state = TrainState(model, EMA(model, config.ema_decay) if config.ema_decay > 0 else None, step=0, wall_time_s=0.0)
    saved = None  # the step of this run's last checkpoint
    if resume and resume_path and Path(resume_path).exists():
        _restore(state, optimizer, scheduler, checkpoint.load(resume_path, map_location=device), meta or {}, rank)
        saved = state.step
    elif resume and rank == 0:
        print(f"no checkpoint at {resume_path}; starting from step 0")
    distributed.barrier()  # every process has read the resume file before rank 0 may overwrite it

    # The whole loss runs inside the (DDP-wrapped) objective's forward, so DDP averages the gradients of
    # every parameter the loss touches, however it calls the model (encode/decode, forward, ...).
    objective = Objective(torch.compile(model) if config.compile else model, loss_fn)
    train_objective = nn.parallel.DistributedDataParallel(objective) if world > 1 else objective
    bar = tqdm(total=config.steps, initial=state.step, disable=not progress or rank != 0, desc="train", mininterval=1.0)
    started, cpu_started = time.perf_counter() - state.wall_time_s, time.process_time() - state.cpu_time_s
    logged = checked = state.step
    # Read by the host only at log and checkpoint steps: waiting for the device every step would stall it.
    # The loss since the last log step is summed in float64, as Python sums floats (MPS has no float64).
    loss_sum = torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)
    finite = torch.ones((), dtype=torch.bool, device=device)  # every loss and gradient norm so far
    model.train()
    prefetch = config.prefetch if config.prefetch is not None else device.type == "cuda"
    batches = _batch_stream(next_batch, config.seed, rank, world, state.step, config.steps, prefetch, device.type == "cuda")
    while state.step < config.steps:
        step = state.step
        batch = _to_device(next(batches), device, config.channels_last)
        loss, ok = _train_step(train_objective, batch, step_generator(config.seed, step, device, rank), optimizer,
                               scheduler, config.grad_clip, config.autocast_dtype(device))
        if state.ema is not None:
            state.ema.update(model, step)
        loss_sum += loss
        finite &= ok
        state.step += 1
        log_now = state.step % config.log_every == 0 or state.step == config.steps
        save_now = state.step % config.checkpoint_every == 0 or state.step == config.steps
        keep_now = keep_every > 0 and state.step % keep_every == 0
        if log_now or save_now or keep_now:  # never write a checkpoint before checking every step since the last
            failed, mean = _reduce(finite, loss_sum, world)
            if failed:
                _diverged(failed, world, checked, state.step, resume_path, saved)
            checked = state.step
        if log_now:
            mean /= state.step - logged
            state.history.append((state.step, mean))
            loss_sum.zero_()
            logged = state.step
            bar.set_postfix(loss=f"{mean:.4f}")
            if rank == 0:
                for callback in callbacks:
                    callback(state.step, mean)
        bar.update(1)
        state.wall_time_s, state.cpu_time_s = time.perf_counter() - started, time.process_time() - cpu_started
        if save_now and resume_path:
            if rank == 0:
                checkpoint.save_atomic(_resume_dict(state, optimizer, scheduler, config, meta or {}), resume_path)
            saved = state.step
        if keep_now and resume_path and rank == 0:
            _keep(state, config, meta or {}, Path(resume_path))
        budgets = ((config.max_seconds, state.wall_time_s), (config.max_cpu_seconds, state.cpu_time_s))
        if state.step < config.steps and any(limit is not None and spent >= limit for limit, spent in budgets):
            _stop_at_budget(state, finite, loss_sum, checked, resume_path, saved, optimizer, scheduler, config, meta)
            break
    bar.close()
    batches.close()
    distributed.barrier()  # no process returns (and perhaps exits) before rank 0 has written the last checkpoint
    model.eval()
    return state


class Objective(nn.Module):
    """A model and its loss as one module: forward(batch, generator) = loss_fn(model, batch, generator).

    DistributedDataParallel synchronises the gradients of what runs inside the forward it wraps;
    wrapping the loss (not just the model) covers losses that call `model.encode`, `model.decode`
    or other methods besides `forward`.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, dict, torch.Generator], torch.Tensor]):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        return self.loss_fn(self.model, batch, generator)


def _batch_stream(next_batch, seed: int, rank: int, world: int, start: int, stop: int, prefetch: bool,
                  pin: bool) -> Iterator[dict]:
    """This rank's batches for steps start..stop-1. With `prefetch`, batch k + 1 is built in a background
    thread while step k runs (and pinned, for an asynchronous copy to the GPU). Each batch is still the
    pure function of (seed, step) that makes resume exact, so prefetching changes no number."""

    def build(step: int) -> dict:
        batch = shard(next_batch(step, step_generator(seed, step, torch.device("cpu"))), rank, world)  # the same on every rank
        if pin:
            batch = {k: v.pin_memory() if torch.is_tensor(v) and v.device.type == "cpu" else v for k, v in batch.items()}
        return batch

    if not prefetch:
        yield from (build(step) for step in range(start, stop))
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(build, start)
        for step in range(start, stop):
            batch = pending.result()
            if step + 1 < stop:
                pending = pool.submit(build, step + 1)
            yield batch


def _to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    def move(v):
        if not torch.is_tensor(v):
            return v
        layout = torch.channels_last if channels_last and v.ndim == 4 and v.is_floating_point() else torch.preserve_format
        return v.to(device, non_blocking=True, memory_format=layout)

    return {k: move(v) for k, v in batch.items()}


def _train_step(objective, batch, generator, optimizer, scheduler, grad_clip, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step. Returns the loss and whether it and the gradient norm are finite, both left on the device."""
    device_type = next(objective.parameters()).device.type
    with torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        loss = objective(batch, generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # under DDP this also averages the gradients over the processes
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    optimizer.step()
    scheduler.step()
    loss = loss.detach()
    return loss, torch.isfinite(loss) & torch.isfinite(grad_norm)


def _reduce(finite: torch.Tensor, loss_sum: torch.Tensor, world: int) -> tuple[int, float]:
    """(how many processes saw a non-finite step, the loss sum averaged over processes): one all-reduce, one wait."""
    failed, total = distributed.all_reduce_sum(torch.stack([(~finite).to(loss_sum.dtype), loss_sum])).tolist()
    return int(failed), total / world


def _stop_at_budget(state: TrainState, finite, loss_sum, checked: int, resume_path, saved, optimizer, scheduler,
                    config: TrainConfig, meta: dict | None) -> None:
    """End a run at its time budget as it would end at its last step: every step checked, the resume state written."""
    failed, _ = _reduce(finite, loss_sum, 1)
    if failed:
        _diverged(failed, 1, checked, state.step, resume_path, saved)
    if resume_path and saved != state.step:
        checkpoint.save_atomic(_resume_dict(state, optimizer, scheduler, config, meta or {}), resume_path)


def _diverged(failed: int, world: int, checked: int, step: int, resume_path, saved: int | None) -> None:
    where = f" on {failed} of {world} processes" if world > 1 else ""
    kept = f"the last good checkpoint {resume_path} (step {saved}) is kept" if saved is not None else "no checkpoint was written"
    raise TrainingDiverged(f"training diverged between steps {checked} and {step}: the loss or the gradient norm stopped "
                           f"being finite{where}; {kept}. Lower the learning rate or clip the gradients harder.")


def _keep(state: TrainState, config: TrainConfig, meta: dict, resume_path: Path) -> None:
    """NAME-stepK.pt next to NAME.resume.pt: the weights a run would ship at step K, with its wall time."""
    name = resume_path.name.removesuffix(".resume.pt")
    snapshot = {"format": checkpoint.FORMAT, **meta, "model": state.final_model.state_dict(),
                "step": state.step, "seed": config.seed, "wall_time_s": round(state.wall_time_s, 1)}
    checkpoint.save_atomic(snapshot, resume_path.with_name(f"{name}-step{state.step}.pt"))


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
        "cpu_time_s": state.cpu_time_s,
        "history": state.history,
    }


def _restore(state: TrainState, optimizer, scheduler, ckpt: dict, meta: dict, rank: int = 0) -> None:
    """Load a resume file into the run, after checking that it belongs to this run's recipe and model."""
    for key in ("recipe", "model_class"):
        if key in meta and ckpt.get(key) != meta[key]:
            raise ValueError(f"the resume file holds {key} {ckpt.get(key)!r}, but this run trains {meta[key]!r}; "
                             f"delete it or train with another --out folder")
    if "raw_model" not in ckpt:
        raise ValueError("this file is a finished checkpoint, not a resume file (NAME.resume.pt)")
    state.model.load_state_dict(ckpt["raw_model"])
    if state.ema is not None and ckpt.get("ema") is not None:
        state.ema.model.load_state_dict(ckpt["ema"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    state.step, state.wall_time_s, state.history = ckpt["step"], ckpt["wall_time_s"], list(ckpt["history"])
    state.cpu_time_s = ckpt.get("cpu_time_s", 0.0)  # resume files written before it was recorded have none
    if rank == 0:
        print(f"resumed from step {state.step}")
