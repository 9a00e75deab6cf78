"""What a recipe is, the registry of them, and `train_recipe`, which runs one and writes its checkpoint.

A recipe is a model class and config + a dataset + a loss + a CPU and a GPU preset + an evaluation.
`train_recipe("ae-mnist")` (or `minilineage train ae-mnist`) trains one and writes `OUT/NAME.pt`
(weights + how they were made), `OUT/NAME.json` (the same record, readable) and, while training,
`OUT/NAME.resume.pt` (optimizer state too) for `--resume`.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from minilineage import checkpoint
from minilineage.data import (
    ArrayData,
    caption_batches,
    encoded_batches,
    image_batches,
    load_dataset,
    to_float,
)
from minilineage.distributed import barrier, process_group, rank_and_world, rank_zero_first
from minilineage.train import TrainConfig, describe_device, fit, pick_device

PRESETS = ("cpu", "gpu")
# The latent scale (1 / std of the training latents) and x0 bound of a model built from parts are measured on at most
# this many training items, a seeded random subset: the std of their 10^6 or more latent numbers is within 0.2 % of the
# whole set's (moving-mnist: 1.1320 on 1,000 clips, 1.1342 on all 4,500), the encoder pass takes a second on a CPU,
# not 7, and a big video set (UCF-101: 6 GB of float clips) need not go through a GPU in one piece.
LATENT_STATISTICS_ITEMS = 1000


@dataclass
class Preset:
    dataset: str
    train: TrainConfig
    model: dict = field(default_factory=dict)  # overrides of the recipe's model config


@dataclass
class Recipe:
    """A named, reproducible training run.

    `parts` names checkpoints the model starts from (e.g. {"autoencoder": "latent-vae-mnist",
    "clip": "clip-mnist"} for latent diffusion); each is taken from the run's own folder when it
    was trained there, else the shipped one is used, and handed to `model_cls.from_parts`.
    """

    name: str
    summary: str
    model_cls: type[nn.Module]
    model_config: dict
    loss: Callable[[nn.Module, dict, torch.Generator], torch.Tensor]
    presets: dict[str, Preset]
    evaluate: Callable[[nn.Module, torch.device], dict] | None = None
    batches: Callable[[ArrayData, int], Callable[[int, torch.Generator], dict]] = image_batches
    parts: dict[str, str] = field(default_factory=dict)

    def config(self, preset: str = "cpu"):
        """The model config of a preset: the recipe's, with the preset's overrides merged in."""
        return self.model_cls.Config(**merge(self.model_config, self.presets[preset].model))

    def build(self, preset: str = "cpu", out: Path | None = None) -> nn.Module:
        """A fresh model for `preset`. `out` is the run's folder, where `parts` are looked for first."""
        if not self.parts:
            return self.model_cls(self.config(preset))
        loaded = {}
        for role, name in self.parts.items():
            own = Path(out) / f"{name}.pt" if out is not None else None
            loaded[role] = checkpoint.load_model(own if own is not None and own.exists() else name)
        data = load_dataset(self.presets[preset].dataset, "train")
        if len(data) > LATENT_STATISTICS_ITEMS:  # random, not the first ones: some datasets are sorted by class
            data = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:LATENT_STATISTICS_ITEMS])
        return self.model_cls.from_parts(self.config(preset), x_train=data.float_images(), **loaded)


def merge(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` applied, recursively into nested dicts."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    return RECIPES[name]


@dataclass
class TrainResult:
    model: nn.Module
    record: dict
    path: Path | None


def _write(model: nn.Module, record: dict, out: Path | None, name: str) -> Path | None:
    """OUT/NAME.pt (weights + record) and OUT/NAME.json (the record without the loss history)."""
    if out is None:
        return None
    path = checkpoint.save_atomic({**record, "model": model.state_dict()}, out / f"{name}.pt")
    sidecar = {k: v for k, v in record.items() if k != "history"}
    (out / f"{name}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return path


def train_recipe(
    name: str,
    preset: str = "cpu",
    steps: int | None = None,
    out: str | Path | None = "runs",
    device: str = "auto",
    resume: bool = False,
    seed: int | None = None,
    progress: bool = True,
    callbacks: tuple[Callable[[int, float], None], ...] = (),
    keep_every: int = 0,
    command: str | None = None,
    compile: bool | None = None,
    evaluate: bool = True,
    precision: str | None = None,
    channels_last: bool | None = None,
    pre_encode: bool | None = None,
    max_seconds: float | None = None,
    max_cpu_seconds: float | None = None,
) -> TrainResult:
    """Train a named recipe; write OUT/NAME.pt and OUT/NAME.json (out=None writes nothing).

    `callbacks` are called as f(step, mean loss) at every log step (a `widgets.LossPlot` draws the
    curve in a notebook). `keep_every=N` also keeps OUT/NAME-stepN.pt, OUT/NAME-step2N.pt, ...
    (see `fit`). `command` is recorded as how the checkpoint was made (the CLI passes its command line).
    `compile`, `precision`, `channels_last` and `pre_encode` override the preset's fast paths
    (`TrainConfig`; None keeps the preset's choice); `max_seconds` stops training at that wall time even
    before `steps`, `max_cpu_seconds` at that CPU time of the process (for time-budgeted comparisons,
    `bench --race`). `evaluate=False` skips the recipe's evaluation (for a quick demonstration run; it can
    take a minute). Under torchrun the processes split every batch of the preset; rank 0 alone writes the
    files and evaluates.
    """
    recipe = get_recipe(name)
    if preset not in recipe.presets:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(recipe.presets)}")
    p = recipe.presets[preset]
    overrides = {"steps": steps, "seed": seed, "compile": compile, "precision": precision,
                 "channels_last": channels_last, "pre_encode": pre_encode, "max_seconds": max_seconds,
                 "max_cpu_seconds": max_cpu_seconds}
    config = replace(p.train, **{k: v for k, v in overrides.items() if v is not None})
    if config.steps < 1:
        raise ValueError(f"steps must be a positive number, got {config.steps}")
    out = Path(out) if out is not None else None
    with process_group(pick_device(device)) as device:  # opened under torchrun, closed even on an error
        rank, world = rank_and_world()
        if config.batch_size % world:
            raise ValueError(f"the batch of {config.batch_size} does not split over {world} processes; "
                             f"start a number of processes that divides it")
        torch.manual_seed(config.seed)
        with rank_zero_first():  # rank 0 downloads the dataset if it must, then the others read it
            model = recipe.build(preset, out)
            data = load_dataset(p.dataset, "train")
        meta = {
            "recipe": name, "preset": preset, "model_class": type(model).__name__,
            "model_config": asdict(model.config), "dataset": p.dataset,
            "command": command or f"train_recipe({name!r}, preset={preset!r}, steps={config.steps})",
        }
        state = fit(model, recipe.loss, _batches(recipe, model, data, config, device), config, device,
                    resume_path=out / f"{name}.resume.pt" if out else None, resume=resume, meta=meta,
                    callbacks=callbacks, progress=progress, keep_every=keep_every)
        final = state.final_model
        record = _record(meta, state, config, describe_device(device) + (f" x {world} processes" if world > 1 else ""))
        path = _write(final, record, out, name) if rank == 0 else None  # before evaluating: a failing evaluation never loses the model
        barrier()  # the checkpoint is on disk before any process returns
        if recipe.evaluate and evaluate and rank == 0:
            record["metrics"] = recipe.evaluate(final, device)
            path = _write(final, record, out, name)
    final.checkpoint_info = record
    return TrainResult(final, record, path)


def _batches(recipe: Recipe, model: nn.Module, data: ArrayData, config: TrainConfig, device: torch.device):
    """The recipe's batch maker, fed from the GPU when the dataset fits there, and from the frozen
    autoencoder's precomputed moments with `pre_encode` (the same draws either way: `data.encoded_batches`)."""
    if device.type == "cuda" and data.images.numel() < 0.25 * torch.cuda.mem_get_info(device)[0]:
        data = data.to(device)  # uint8 on the GPU: no host-to-device copy per step (MNIST is 47 MB, CIFAR-10 150 MB)
    if not config.pre_encode:
        return recipe.batches(data, config.batch_size)
    if getattr(model, "autoencoder", None) is None or recipe.batches not in (image_batches, caption_batches):
        raise ValueError(f"pre_encode needs a latent diffusion recipe (a frozen autoencoder and image batches); "
                         f"{recipe.name} has none")
    model.to(device)
    codes = torch.cat([model.pre_encode(to_float(chunk.to(device))) for chunk in data.images.split(1000)])
    return encoded_batches(data, codes, config.batch_size, with_captions=recipe.batches is caption_batches)


def _record(meta: dict, state, config: TrainConfig, device: str) -> dict:
    """How a checkpoint was made: recipe, config, steps, time, machine, software (metrics come later)."""
    return {
        "format": checkpoint.FORMAT, **meta, "step": state.step, "seed": config.seed,
        "train_config": asdict(config), "wall_time_s": round(state.wall_time_s, 1),
        "cpu_time_s": round(state.cpu_time_s, 1),
        "device": device, "torch": torch.__version__, "python": platform.python_version(),
        "parameters": sum(q.numel() for q in state.final_model.parameters()), "metrics": {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "history": state.history,
    }
