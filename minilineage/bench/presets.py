"""Every recipe's GPU preset on one page: parameters, FLOPs per step, training memory, time on one H100.

Per recipe, at its GPU preset's model size and batch size B (`minilineage bench --presets`):

  params      trainable parameters
  FLOPs/step  one training step (loss, backward) as `measure.count_flops` counts it, at batches b1 and
              b2 and extended to B linearly: every op here is per image, so this is exact (a test checks it)
  memory      fp32 training memory measured on the CPU: the model's parameters and buffers, plus the peak
              RSS above the baseline of a step (gradients, AdamW's two moments, activations) at b1 and b2,
              extended linearly to B where B > b2 ("scaled"), else measured at B. An upper bound for a GPU
              with bf16 autocast (activations about half), without the CUDA context (~0.5 GB) and the
              caching allocator's slack (add ~10-20 %)
  H100 time   an estimate, no GPU measured: steps x max(FLOPs/step / (ASSUMED_SHARE x H100 SXM bf16 peak),
              operators/step x LAUNCH_S), the second term the eager launch floor of small models

The batches come from the recipe's own `batches` on the CPU preset's dataset (the same shapes as the GPU
preset's, which may need a download), else on random images of the model's shape. Each recipe runs in
a fresh process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch

from minilineage.bench.measure import (
    BF16_PEAK_TFLOPS,
    Job,
    OpCounter,
    flop_counter,
    peak_memory,
    restart_peak_memory,
    start_peak_memory,
    trainer,
)
from minilineage.bench.runner import pixel_shape
from minilineage.data import ArrayData, DatasetUnavailable, load_dataset
from minilineage.diffusion import DiffusionPipeline
from minilineage.recipes import RECIPES, get_recipe

# Small models reach a low share of peak (fast-DiT: ~24 % of an A100 for DiT-XL/2, which is 100x larger
# than ours); 30 % is what a compiled bf16 run of the larger presets can reach, so for them the estimate is
# optimistic. The launch floor, ~5 us of CPU per eager operator, is what bounds the MNIST-sized ones.
ASSUMED_SHARE = 0.30
H100_PEAK_FLOPS = BF16_PEAK_TFLOPS["H100"] * 1e12
LAUNCH_S = 5e-6


def preset_data(recipe, shape: tuple[int, ...] | None) -> ArrayData:
    """The CPU preset's dataset (the same shapes as the GPU preset's, and no download), else 512 random
    uint8 images of `shape` with labels 0-9."""
    try:
        return load_dataset(recipe.presets["cpu"].dataset, "train")
    except DatasetUnavailable:
        g = torch.Generator().manual_seed(0)
        return ArrayData("random", torch.randint(0, 256, (512, *shape), dtype=torch.uint8, generator=g),
                         torch.randint(0, 10, (512,), generator=g), tuple(str(d) for d in range(10)))


def preset_job(name: str, preset: str = "gpu") -> Job:
    """Recipe `name` at `preset`'s model size with batches of its own kind (its `batches` on `preset_data`)."""
    recipe = get_recipe(name)
    cpu_dataset = recipe.presets["cpu"].dataset  # the parts' latent scale: same cost on either dataset
    local = replace(recipe, presets={**recipe.presets, preset: replace(recipe.presets[preset], dataset=cpu_dataset)})
    model = local.build(preset)
    shape = pixel_shape(model) if isinstance(model, DiffusionPipeline) else None
    data = preset_data(recipe, shape)
    return Job(name, model, recipe.loss, batch=lambda b, g: recipe.batches(data, b)(0, g))


def _counted_step(step) -> tuple[int, int]:
    """FLOPs and dispatched operators of one call of `step`."""
    with flop_counter() as flops, OpCounter() as ops:
        step()
    return flops.get_total_flops(), ops.ops


def preset_row(name: str, preset: str = "gpu", batches: tuple[int, int] = (8, 32)) -> dict:
    """Parameters, FLOPs/step, fp32 memory (CPU) and estimated H100 time of recipe `name`'s `preset` (see module)."""
    torch.manual_seed(0)
    train = get_recipe(name).presets[preset].train
    big, device = train.batch_size, torch.device("cpu")
    b1, b2 = min(batches[0], big), min(batches[1], big)
    job = preset_job(name, preset)
    trainer(job, device, 1)()  # loads library code and allocator state before the baseline
    model_bytes = sum(t.numel() * t.element_size() for t in (*job.model.parameters(), *job.model.buffers()))
    baseline = start_peak_memory(device)
    flops1, ops = _counted_step(trainer(job, device, b1))
    peak1 = peak_memory(device, baseline)
    restart_peak_memory(device)
    flops2, _ = _counted_step(trainer(job, device, b2)) if b2 > b1 else (flops1, ops)
    peak2 = peak_memory(device, baseline)
    per_image_flops = (flops2 - flops1) / (b2 - b1) if b2 > b1 else flops1 / b1
    flops = round(flops1 + (big - b1) * per_image_flops)
    memory = None
    if peak1 is not None:
        per_image = max(peak2 - peak1, 0) / (b2 - b1) if b2 > b1 else 0.0
        memory = model_bytes + (peak2 if b2 == big else peak1 + (big - b1) * per_image)
    step_s = max(flops / (ASSUMED_SHARE * H100_PEAK_FLOPS), ops * LAUNCH_S)
    return {"recipe": name, "dataset": get_recipe(name).presets[preset].dataset, "steps": train.steps,
            "batch_size": big, "params": sum(p.numel() for p in job.model.parameters() if p.requires_grad),
            "train_flops": flops, "ops_per_step": ops, "memory_GB": None if memory is None else memory / 2**30,
            "memory_batches": (b1, b2), "memory_scaled": b2 < big, "h100_step_ms": 1e3 * step_s,
            "h100_hours": train.steps * step_s / 3600, "launch_bound": ops * LAUNCH_S > flops / (ASSUMED_SHARE * H100_PEAK_FLOPS)}


def _row_in_fresh_process(name: str, batches: tuple[int, int]) -> dict:
    code = ("import json, sys; from minilineage.bench import preset_row; "
            "print(json.dumps(preset_row(sys.argv[1], batches=tuple(json.loads(sys.argv[2])))))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                     os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code, name, json.dumps(batches)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"recipe": name, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.splitlines()[-1])


def preset_table(names: tuple[str, ...] | None = None, batches: tuple[int, int] = (8, 32),
                 json_path: str | Path | None = None) -> list[dict]:
    """`preset_row` of every recipe (or `names`), each in a fresh process; print a Markdown table, optionally JSON."""
    print(f"GPU presets: fp32 training memory on the CPU (batches {batches[0]} and {batches[1]}, scaled linearly to the "
          f"preset's batch where larger); H100 time = steps x max(FLOPs / ({ASSUMED_SHARE:.0%} of "
          f"{H100_PEAK_FLOPS / 1e12:.0f} TFLOP/s), operators x {LAUNCH_S * 1e6:.0f} us): an estimate\n")
    print(TABLE_HEAD)
    rows = []
    for name in names or tuple(RECIPES):
        rows.append(_row_in_fresh_process(name, batches))
        print(table_line(rows[-1]), flush=True)
    print("\n* scaled linearly from the two measured batches")
    if json_path is not None:
        Path(json_path).write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {json_path}")
    return rows


TABLE_HEAD = ("| recipe | dataset | steps x batch | params | GFLOP/step | memory (GB, fp32) | H100 (est.) |\n"
              "|---|---|---|---:|---:|---:|---:|")


def table_line(row: dict) -> str:
    """One recipe's line of the Markdown table (`preset_row`'s figures)."""
    if "error" in row:
        return f"| {row['recipe']} | - | - | - | - | - | failed: {row['error'][:80]} |"
    memory = "n/a" if row["memory_GB"] is None else f"{row['memory_GB']:.2f}{'*' if row['memory_scaled'] else ''}"
    minutes = 60 * row["h100_hours"]
    time = f"{minutes:.1f} min" if minutes < 60 else f"{minutes / 60:.1f} h"
    return (f"| {row['recipe']} | {row['dataset']} | {row['steps']:,} x {row['batch_size']} | {row['params'] / 1e6:.2f} M "
            f"| {row['train_flops'] / 1e9:,.1f} | {memory} | {time}{' (launch-bound)' if row['launch_bound'] else ''} |")
