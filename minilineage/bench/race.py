"""The time-to-quality race: four trainings given the same CPU minutes on mnist-5k, one after the other.

  ddpm-mnist                     `minilineage train ddpm-mnist --steps N`: our network, code and recipe
  diffusers, ddpm-mnist's        diffusers' UNet2DModel of the same size (`reference_network`, 0.58 M to our
    settings                     0.57 M) trained by diffusers' DDPMScheduler and EMAModel with ddpm-mnist's own
                                 settings (`diffusers_training.ddpm_mnist_settings`)
  diffusers, recommended         the same network trained with the defaults of diffusers' own example,
                                 train_unconditional.py (`DIFFUSERS_RECOMMENDED`)
  ddpm-mnist-fast                `minilineage train ddpm-mnist-fast --steps N`: the course's answer to "what
                                 should I train in 20 minutes?" (`recipes.speed`)

Read together: ddpm-mnist against diffusers with its settings is our network and code (the recipe is the
same); the two diffusers rows are the recipe (the network and code are the same); the fast recipe is what
the course would train instead. Each contestant's training images per CPU-second is measured in the same run,
so a gap can be split into throughput (more images seen) and what each image teaches.

The budget is CPU time of the training process (`time.process_time`), with one torch thread for everyone:
on a machine shared with other work a wall-clock budget gives each row whatever share of the cores the
others leave it, so rows would see different loads and the race would not repeat. On an idle machine with
one thread, CPU seconds are wall seconds, so "2 min" keeps its meaning; each row records both, and the load
average at its start and end. N is the steps a short probe (CPU seconds per step) says fit the budget (so
warm-up and decay end on time), and every run also stops at its budget (`TrainConfig.max_cpu_seconds`, the
same check in diffusers' loop) should the probe have been optimistic; a run that stopped early says so
(steps < planned_steps). All are then sampled the same way (DDIM, 50 steps, classifier-free guidance 2:
one network call per step on a doubled batch, n digits asking for 0-9 in turn) and scored by
`evaluate_samples`: FID-LeNet, the real-data level at the same n, and the share classified as asked; a
recipe whose own guidance differs (ddpm-mnist-fast: 1.75) is scored at that too. Probing and sampling are
not counted in the budget. `run_race` runs it, writing the record after every row; `minilineage bench
--race 2 5 10 20` prints the rows and the tables of `race_tables`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from minilineage.bench.diffusers_training import (
    DIFFUSERS_RECOMMENDED,
    DiffusersTrainer,
    ddpm_mnist_settings,
    reference_network,
)
from minilineage.bench.runner import cpu_description, diffusers_version
from minilineage.data import to_uint8
from minilineage.metrics import evaluate_samples
from minilineage.recipes import get_recipe, train_recipe

RECIPE = "ddpm-mnist"
SAMPLING = {"steps": 50, "guidance": 2.0}  # ddpm-mnist's defaults, used for every contestant
PROBE_STEPS = 40  # timed steps that set how many steps fit a budget (the schedule's length)
SCORED_KEYS = ("fid_lenet", "real_floor", "accuracy")


def steps_for(budget_s: float, seconds_per_step: float) -> int:
    return max(1, math.floor(budget_s / seconds_per_step))


@torch.no_grad()
def score(sample, n: int) -> dict:
    """`sample(labels, generator)` -> images in [-1, 1]; scored in chunks of 500 (as `eval_digit_samples`)."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 10
    started = time.perf_counter()
    images = torch.cat([sample(chunk, generator) for chunk in labels.split(500)])
    seconds = time.perf_counter() - started
    return {**evaluate_samples(to_uint8(images), labels), "sample_seconds": round(seconds, 1)}


def probe_recipe(name: str) -> float:
    """CPU seconds per step of recipe `name`'s CPU training, from `fit`'s clock over a short run."""
    result = train_recipe(name, steps=PROBE_STEPS + 3, out=None, evaluate=False, progress=False)
    return result.record["cpu_time_s"] / (PROBE_STEPS + 3)


def race_recipe(name: str, budget_s: float, n: int, sampling: dict) -> dict:
    """`minilineage train NAME --steps N` with the N that fits the budget, then sampled and scored (also at the
    recipe's own guidance when that differs from the race's)."""
    seconds_per_step = probe_recipe(name)
    steps = steps_for(budget_s, seconds_per_step)
    with tempfile.TemporaryDirectory() as folder:
        result = train_recipe(name, steps=steps, out=folder, evaluate=False, progress=False, max_cpu_seconds=budget_s,
                              command=f"minilineage train {name} --steps {steps}")
    pipeline, record = result.model.eval(), result.record
    row = {"planned_steps": steps, "steps": record["step"], "batch_size": record["train_config"]["batch_size"],
           "cpu_time_s": record["cpu_time_s"], "wall_time_s": record["wall_time_s"],
           "probe_cpu_s_per_step": round(seconds_per_step, 4),
           "parameters": sum(p.numel() for p in pipeline.net.parameters()), "guidance": sampling["guidance"],
           **score(lambda y, g: pipeline.sample(len(y), g, labels=y, **sampling), n)}
    own = pipeline.config.guidance
    if own != sampling["guidance"]:
        scores = score(lambda y, g: pipeline.sample(len(y), g, labels=y, **{**sampling, "guidance": own}), n)
        row["at_own_guidance"] = {"guidance": own, **{k: scores[k] for k in (*SCORED_KEYS, "sample_seconds")}}
    return row


def probe_diffusers(settings: dict, p_uncond: float) -> float:
    """CPU seconds per step of a diffusers contestant, timed over PROBE_STEPS after 3 untimed."""
    trainer = DiffusersTrainer(steps=PROBE_STEPS + 3, settings=settings)
    for _ in range(3):
        trainer.step(p_uncond)
    started = time.process_time()
    for _ in range(PROBE_STEPS):
        trainer.step(p_uncond)
    return (time.process_time() - started) / PROBE_STEPS


def race_diffusers(settings: dict, budget_s: float, n: int, sampling: dict) -> dict:
    """A diffusers contestant trained for the steps that fit the budget, then sampled and scored as ours."""
    p_uncond = get_recipe(RECIPE).config().p_uncond
    seconds_per_step = probe_diffusers(settings, p_uncond)
    steps = steps_for(budget_s, seconds_per_step)
    trainer = DiffusersTrainer(steps, settings=settings)
    started, cpu_started, done = time.perf_counter(), time.process_time(), 0
    while done < steps and time.process_time() - cpu_started < budget_s:  # the same hard stop as ours (max_cpu_seconds)
        trainer.step(p_uncond)
        done += 1
    cpu, wall = time.process_time() - cpu_started, time.perf_counter() - started
    net = trainer.final_network()
    return {"planned_steps": steps, "steps": done, "batch_size": settings["train_batch_size"],
            "cpu_time_s": round(cpu, 1), "wall_time_s": round(wall, 1), "probe_cpu_s_per_step": round(seconds_per_step, 4),
            "parameters": sum(p.numel() for p in net.parameters()), "guidance": sampling["guidance"],
            **score(lambda y, g: trainer.sample(y, g, **sampling), n)}


@dataclass(frozen=True)
class Contestant:
    """One row per budget: who trains (network), how (settings), and the run that trains and scores it."""

    name: str
    network: str
    settings: str
    run: Callable[[float, int, dict], dict]  # (budget in CPU seconds, n, sampling) -> the row's figures


CONTESTANTS = (
    Contestant("ddpm-mnist", "ours (U-Net)", "ddpm-mnist", partial(race_recipe, "ddpm-mnist")),
    Contestant("diffusers-ddpm-mnist-settings", "diffusers UNet2DModel", "ddpm-mnist's",
               lambda budget_s, n, sampling: race_diffusers(ddpm_mnist_settings(), budget_s, n, sampling)),
    Contestant("diffusers-recommended", "diffusers UNet2DModel", "diffusers' example",
               partial(race_diffusers, DIFFUSERS_RECOMMENDED)),
    Contestant("ddpm-mnist-fast", "ours (U-Net)", "ddpm-mnist-fast", partial(race_recipe, "ddpm-mnist-fast")),
)


def machine() -> dict:
    """What the race ran on: CPU timings differ a lot between machines, and with what else runs there."""
    return {"cpu": cpu_description(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "diffusers": diffusers_version(), "python": platform.python_version(), "platform": platform.platform()}


def run_race(budgets_min: tuple[float, ...] = (2, 5, 10, 20), n: int = 1000, json_path: str | Path | None = None,
             sampling: dict = SAMPLING, contestants: tuple[Contestant, ...] = CONTESTANTS) -> dict:
    """Each budget: every contestant in turn, the same CPU minutes each, on one torch thread (set here, for the rest
    of the process); sampled and scored alike. The record (and `json_path`, rewritten after every row, so a stopped
    race keeps its rows) names the machine and the load. A `json_path` that already holds a race sampled the same
    way is resumed: its rows are kept and only the missing (budget, contestant) rows run."""
    torch.set_num_threads(1)  # one core's CPU seconds for everyone: the budget means the same whatever else runs
    result = {**machine(), "budget_clock": "CPU time of the training process (time.process_time)",
              "load_average_start": os.getloadavg(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "contestants": [{"name": c.name, "network": c.network, "settings": c.settings} for c in contestants],
              "settings": {"ddpm-mnist's": ddpm_mnist_settings(), "recommended": DIFFUSERS_RECOMMENDED},
              "reference_parameters": sum(p.numel() for p in reference_network().parameters()),
              "sampling": {**sampling, "sampler": "DDIM", "n": n}, "rows": []}
    result = resumed(result, json_path)
    done = {(r["budget_min"], r["contestant"]) for r in result["rows"]}
    for minutes in budgets_min:
        for c in contestants:
            if (minutes, c.name) in done:
                continue
            load = os.getloadavg()
            row = {"budget_min": minutes, "contestant": c.name, "network": c.network, "settings": c.settings,
                   **c.run(60.0 * minutes, n, sampling), "load_average_start": load, "load_average_end": os.getloadavg()}
            row["train_img_per_cpu_s"] = round(row["steps"] * row["batch_size"] / row["cpu_time_s"], 1)
            result["rows"].append(row)
            print_row(row)
            result["load_average_end"] = os.getloadavg()
            if json_path is not None:
                Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    if json_path is not None:
        print(f"wrote {json_path}")
    print("\n" + race_tables(result))
    return result


def resumed(fresh: dict, json_path: str | Path | None) -> dict:
    """The record at `json_path` to carry on with, when it is a race of the same contestants sampled the same way
    (its start, machine and rows kept; this run's start added under "resumed"); otherwise `fresh`."""
    if json_path is None or not Path(json_path).exists():
        return fresh
    old = json.loads(Path(json_path).read_text())
    if old.get("sampling") != fresh["sampling"] or old.get("contestants") != fresh["contestants"]:
        raise ValueError(f"{json_path} holds a race sampled or contested differently ({old.get('sampling')}); "
                         "give --json a new file to start a fresh race")
    print(f"resuming {json_path}: {len(old['rows'])} rows kept")
    return {**old, "resumed": [*old.get("resumed", []), fresh["started"]]}


def print_row(r: dict) -> None:
    stopped = f" of {r['planned_steps']} planned" if r["steps"] < r["planned_steps"] else ""
    own = r.get("at_own_guidance")
    own = f"; at guidance {own['guidance']:g}: {own['fid_lenet']:.2f}, {own['accuracy']:.3f}" if own else ""
    print(f"{r['budget_min']:>5g} min  {r['contestant']:30s} {r['steps']:6d}{stopped} steps x {r['batch_size']:3d} "
          f"({r['cpu_time_s']:6.1f} CPU s, {r['wall_time_s']:6.1f} wall s, {r['train_img_per_cpu_s']:6.1f} img/CPU-s, "
          f"load {r['load_average_start'][0]:.1f}-{r['load_average_end'][0]:.1f})  FID-LeNet {r['fid_lenet']:7.2f} "
          f"(real {r['real_floor']:.1f})  accuracy {r['accuracy']:.3f}{own}", flush=True)


GAPS = (  # (a, b, what differs between them): the second table of `race_tables`
    ("ddpm-mnist", "diffusers-ddpm-mnist-settings", "network and code (same recipe)"),
    ("diffusers-ddpm-mnist-settings", "diffusers-recommended", "recipe (same network and code)"),
    ("ddpm-mnist-fast", "ddpm-mnist", "recipe (same network and code)"),
)


def race_tables(result: dict) -> str:
    """The race as two Markdown tables: every row, then where each gap comes from (a against b, per budget)."""
    rows, floor = result["rows"], result["rows"][0]["real_floor"] if result["rows"] else float("nan")
    load = (f"; load average {result['load_average_start'][0]:.1f} at the start, {result['load_average_end'][0]:.1f} "
            "at the end" if "load_average_end" in result else "")
    lines = [f"Machine: {result['cpu']}, {result['threads']} torch threads{load}; torch {result['torch']}, diffusers "
             f"{result['diffusers']}; budget: CPU time of the training process; sampling: DDIM "
             f"{result['sampling']['steps']} steps, guidance {result['sampling']['guidance']:g}, n = {result['sampling']['n']}",
             "", f"| budget | contestant | network | settings | steps × batch | training CPU s | wall s | load | images per "
             f"CPU-s | FID-LeNet (real digits: {floor:.1f}) | classified as asked |",
             "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        stopped = f" (of {r['planned_steps']:,})" if r["steps"] < r["planned_steps"] else ""
        own = r.get("at_own_guidance")
        fid = f"{r['fid_lenet']:,.1f}" + (f" (at {own['guidance']:g}: {own['fid_lenet']:,.1f})" if own else "")
        accuracy = f"{r['accuracy']:.0%}" + (f" (at {own['guidance']:g}: {own['accuracy']:.0%})" if own else "")
        lines.append(f"| {r['budget_min']:g} min | {r['contestant']} | {r['network']} | {r['settings']} "
                     f"| {r['steps']:,}{stopped} × {r['batch_size']} | {r['cpu_time_s']:.0f} | {r['wall_time_s']:.0f} "
                     f"| {r['load_average_start'][0]:.1f}–{r['load_average_end'][0]:.1f} | {r['train_img_per_cpu_s']:.0f} "
                     f"| {fid} | {accuracy} |")
    lines += ["", "| budget | a | b | what differs | FID-LeNet, a vs b | as asked, a vs b | images per CPU-s, a / b |",
              "|---:|---|---|---|---:|---:|---:|"]
    by = {(r["budget_min"], r["contestant"]): r for r in rows}
    for budget in dict.fromkeys(r["budget_min"] for r in rows):
        for a, b, differs in GAPS:
            if (budget, a) in by and (budget, b) in by:
                ra, rb = by[budget, a], by[budget, b]
                lines.append(f"| {budget:g} min | {a} | {b} | {differs} | {ra['fid_lenet']:,.1f} vs {rb['fid_lenet']:,.1f} "
                             f"({rb['fid_lenet'] / ra['fid_lenet']:.2f}x) | {ra['accuracy']:.0%} vs {rb['accuracy']:.0%} "
                             f"| {ra['train_img_per_cpu_s'] / rb['train_img_per_cpu_s']:.2f}x |")
    return "\n".join(lines)
