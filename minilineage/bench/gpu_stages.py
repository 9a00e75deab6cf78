"""What `minilineage bench --gpu-report` measures, stage by stage, in one worker process (`work`).

  environment  the device, torch, CUDA, diffusers, the device's dense bf16 peak
  tests        the CUDA-only tests (`pytest -m cuda tests/test_cuda.py`; they skip without a GPU)
  throughput   per model and mode (fp32 eager, bf16 autocast eager, bf16 + torch.compile): training and
               sampling images/s, ms per step, achieved TFLOP/s and its share of the bf16 peak, peak memory;
               ours, then the diffusers reference of the same size where there is one and diffusers imports;
               on batches of the CPU preset's data (mnist-5k ships, moving-mnist is made from it; a dataset
               not on the machine, CIFAR-10, is replaced by random images: throughput needs no real pixels)
  quality      a recipe's model and batch of one preset trained on mnist-5k for a fixed time (the schedule's
               length from a short probe, as the race sets it), then FID-LeNet and the share classified as
               asked from `eval_digit_samples`: a measured time-to-quality figure

`Plan` says what to run at which size; `stages` puts it in order, the most wanted figures first and the
slowest (compilation) late, each with the seconds it needs at least. `work` starts a stage only when that
much of the budget is left and prints each result as one line, so whatever was measured survives a stop.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from minilineage.bench.measure import (
    Job,
    bf16_peak_tflops,
    count_flops,
    peak_memory,
    restart_peak_memory,
    seconds_per_call,
    start_peak_memory,
    trainer,
)
from minilineage.bench.presets import preset_data
from minilineage.bench.race import steps_for
from minilineage.bench.runner import (
    cpu_description,
    diffusers_version,
    has_reference,
    recipe_job,
    reference_recipe_job,
)
from minilineage.data import image_batches, load_dataset
from minilineage.metrics import eval_digit_samples
from minilineage.recipes import get_recipe
from minilineage.train import describe_device, fit, pick_device

RESULT_PREFIX = "@gpu-report "  # a worker's result line: this, then one JSON object
ROOT = Path(__file__).resolve().parents[2]  # the checkout: tests/ and the package


@dataclass(frozen=True)
class Plan:
    """What the report measures, at which sizes, and the least time each stage needs to be worth starting."""

    device: str
    models: tuple[tuple[str, str], ...]  # (recipe, preset): measured eager in each of `eager_modes`
    compiled: tuple[tuple[str, str], ...]  # measured again through torch.compile (late: compiling is slow)
    quality: tuple[str, ...]  # recipes trained for `quality_s` each, the first before the compiled runs
    eager_modes: tuple[str, ...] = ("fp32", "bf16")
    batch: int | None = None  # training batch of the throughput runs; None: the preset's
    measure_s: float = 1.0  # timed training steps last about this long (at least `min_iters`)
    min_iters: int = 5
    sample_n: int = 64  # images per timed sample() call, `sample_steps` DDIM steps at guidance 1
    sample_steps: int = 50
    quality_preset: str = "gpu"  # the model size and batch trained, always on mnist-5k
    quality_batch: int | None = None
    quality_s: float = 120.0  # training seconds per quality run
    quality_n: int = 1000  # digits sampled to score it
    probe_steps: int = 30
    tests: str = "tests/test_cuda.py"
    tests_timeout_s: float = 150.0
    min_tests_s: float = 30.0
    min_throughput_s: float = 10.0
    min_compile_s: float = 45.0
    min_quality_s: float = 60.0  # training seconds below which a quality run is not worth it
    eval_reserve_s: float = 30.0  # left for sampling and scoring after a quality run's training


# One H100 (about 8 minutes): the course's two MNIST models as shipped and at their GPU presets, the CIFAR-10
# and video GPU presets, each against its diffusers reference; dit-mnist's GPU preset trained for 2 minutes;
# then ours compiled, as many as time allows, and ddpm-mnist's GPU preset trained if time is still left.
GPU_PLAN = Plan(
    device="cuda",
    models=(("ddpm-mnist", "cpu"), ("dit-mnist", "cpu"), ("ddpm-mnist", "gpu"), ("dit-mnist", "gpu"),
            ("ddpm-cifar10", "gpu"), ("dit-cifar10", "gpu"), ("videodit-moving-mnist", "gpu")),
    compiled=(("ddpm-mnist", "cpu"), ("dit-mnist", "cpu"), ("dit-mnist", "gpu"), ("ddpm-cifar10", "gpu"),
              ("dit-cifar10", "gpu"), ("videodit-moving-mnist", "gpu")),
    quality=("dit-mnist", "ddpm-mnist"))
# The same stages on a CPU in under a minute, so the command cannot rot before a GPU is lent: the shipped ddpm-mnist
# and its reference at batch 4, no compilation (tens of seconds on a CPU), dit-mnist's shipped model trained for 3 s.
CPU_PLAN = Plan(
    device="cpu", models=(("ddpm-mnist", "cpu"),), compiled=(), quality=("dit-mnist",),
    batch=4, measure_s=0.0, min_iters=1, sample_n=2, sample_steps=2, quality_preset="cpu", quality_batch=16,
    quality_s=3.0, quality_n=20, probe_steps=2, tests_timeout_s=60.0, min_tests_s=5.0, min_throughput_s=3.0,
    min_quality_s=2.0, eval_reserve_s=5.0)
MODES = {"fp32": (False, False), "bf16": (True, False), "bf16+compile": (True, True)}  # mode -> (bf16, compile)


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Plan, float], Iterator[dict]]  # (plan, deadline) -> results, each printed as it comes
    min_s: float  # start it only with at least this many seconds of the budget left


def stages(plan: Plan) -> list[Stage]:
    """The stages in the order they run: environment, tests, eager throughput, the first quality run,
    compiled throughput, the other quality runs."""
    def throughput_stage(name, preset, modes, min_s, references=True):
        return Stage(f"throughput {name} ({preset} size, {', '.join(modes)})",
                     lambda p, deadline: throughput(p, deadline, name, preset, modes, references), min_s)

    def quality_stage(name):
        return Stage(f"quality {name}", lambda p, deadline: quality(p, deadline, name), plan.min_quality_s + plan.eval_reserve_s)

    eager = [throughput_stage(n, preset, plan.eager_modes, plan.min_throughput_s) for n, preset in plan.models]
    compiled = [throughput_stage(n, preset, ("bf16+compile",), plan.min_compile_s, references=False)  # ours only
                for n, preset in plan.compiled]
    quality_runs = [quality_stage(n) for n in plan.quality]
    return [Stage("environment", environment, 0.0), Stage("tests", run_tests, plan.min_tests_s), *eager,
            *quality_runs[:1], *compiled, *quality_runs[1:]]


def work(plan: Plan, deadline: float) -> None:
    """Every stage in order, each started only with its minimum left before `deadline` (time.time()); each
    result printed as RESULT_PREFIX + JSON. A stage that fails is reported and the next one runs."""
    for stage in stages(plan):
        left = deadline - time.time()
        if left < stage.min_s:
            emit({"stage": stage.name, "not_run": f"budget: {left:.0f} s left, it needs {stage.min_s:.0f} s"})
            continue
        started = time.perf_counter()
        try:
            for result in stage.run(plan, deadline):
                emit({"stage": stage.name, **result})
        except Exception as error:  # one stage's failure (out of memory, a missing extra) must not cost the rest
            emit({"stage": stage.name, "error": f"{type(error).__name__}: {error}"[:600]})
        emit({"stage": stage.name, "done_s": round(time.perf_counter() - started, 1)})
        free_memory(pick_device(plan.device))


def emit(result: dict) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def environment(plan: Plan, deadline: float) -> Iterator[dict]:
    """The machine and the software: what every figure of the report depends on."""
    device = pick_device(plan.device)
    info = {"device": describe_device(device), "torch": torch.__version__, "diffusers": diffusers_version(),
            "python": platform.python_version(), "cpu": cpu_description()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {"gpu": props.name, "gpu_memory_GB": round(props.total_memory / 2**30, 1),
                 "multiprocessors": props.multi_processor_count, "cuda": torch.version.cuda,
                 "cudnn": torch.backends.cudnn.version(), "bf16_peak_tflop_s": bf16_peak_tflops(props.name)}
    yield info


def run_tests(plan: Plan, deadline: float) -> Iterator[dict]:
    """The CUDA-only tests in a pytest process of their own, stopped at `tests_timeout_s` or the budget."""
    path = ROOT / plan.tests
    if not path.exists():
        yield {"not_run": f"{plan.tests} is not here (run the report from a checkout)"}
        return
    timeout = max(1.0, min(plan.tests_timeout_s, deadline - time.time()))
    with tempfile.TemporaryDirectory() as folder:
        xml = Path(folder) / "cuda-tests.xml"
        command = [sys.executable, "-m", "pytest", str(path), "-m", "cuda", "-q", "-p", "no:cacheprovider",
                   "-o", "addopts=", f"--junitxml={xml}", "--rootdir", str(ROOT)]  # addopts: nbval may be absent
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # no other plugin is needed, and loading them takes seconds
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            yield {"error": f"the tests did not finish in {timeout:.0f} s"}
            return
        cases = test_cases(xml) if xml.exists() else []
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "skipped")}
    yield {**counts, "returncode": done.returncode, "tests": cases,
           **({"output": done.stdout[-1500:] + done.stderr[-1500:]} if counts["failed"] or not cases else {})}


def test_cases(xml: Path) -> list[dict]:
    """Each test case of a JUnit XML file: its name, seconds, outcome and, unless it passed, the message."""
    cases = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        problem = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        outcome = {"failure": "failed", "error": "failed", "skipped": "skipped"}.get(getattr(problem, "tag", None), "passed")
        cases.append({"name": case.get("name"), "seconds": float(case.get("time", 0)), "outcome": outcome,
                      **({"message": (problem.get("message") or "")[:300]} if problem is not None else {})})
    return cases


def report_job(name: str, preset: str, reference: bool = False) -> Job:
    """Recipe `name` at `preset`'s size (or its diffusers reference), fed batches of the recipe's own kind."""
    job = reference_recipe_job(name, preset) if reference else recipe_job(name, preset)
    recipe = get_recipe(name)
    if recipe.batches is image_batches:
        return job  # images and labels: random ones (`measure.random_batch`)
    data = preset_data(recipe, job.shape)  # captions, videos in size buckets: the recipe's own batches
    return replace(job, batch=lambda b, g: recipe.batches(data, b)(0, g))


def throughput(plan: Plan, deadline: float, name: str, preset: str, modes: tuple[str, ...],
               references: bool = True) -> Iterator[dict]:
    """One row per (ours, then the diffusers reference if asked and there is one) x mode, while the budget lasts.
    Peak memory on CUDA only (`max_memory_allocated`): a CPU process's peak RSS does not go down between models."""
    device = pick_device(plan.device)
    batch_size = plan.batch or get_recipe(name).presets[preset].train.batch_size
    kinds = [False] + ([True] if references and has_reference(name) and diffusers_version() is not None else [])
    for reference in kinds:
        free_memory(device)
        baseline = start_peak_memory(device)  # before the model: its weights count in the peak
        job = report_job(name, preset, reference)
        flops = count_flops(trainer(job, device, batch_size, bf16=False))  # one eager step (compiled ones count alike)
        for mode in modes:
            if time.time() > deadline:
                return
            row = measure_mode(job, device, batch_size, mode, plan)
            peak = peak_memory(device, baseline) if device.type == "cuda" else None
            yield {"recipe": name, "size": preset, "who": "diffusers" if reference else "ours", "model": job.name,
                   "mode": mode, "batch_size": batch_size, "params": sum(p.numel() for p in job.model.parameters()
                                                                         if p.requires_grad),
                   "train_flops": flops, **rates(row, flops, batch_size, device),
                   "peak_MB": None if peak is None else round(peak / 2**20, 1)}
        del job


def measure_mode(job: Job, device: torch.device, batch_size: int, mode: str, plan: Plan) -> dict:
    """Seconds per training step in `mode` (timed for about plan.measure_s) and, eager, per sample() call."""
    bf16, compiled = MODES[mode]
    for p in job.model.parameters():
        p.grad = None  # the last mode's gradients and optimizer are gone before this one's peak is taken
    free_memory(device)
    restart_peak_memory(device)
    job.model.train()
    step = trainer(job, device, batch_size, bf16=bf16, compile=compiled)
    started = time.perf_counter()
    for _ in range(3 if compiled else 1):  # a compiled step compiles at its first call
        step()
    warm_up_s = time.perf_counter() - started
    guess = seconds_per_call(step, device, plan.min_iters)
    iters = max(plan.min_iters, min(500, math.ceil(plan.measure_s / guess)))
    timed = {"train_s": seconds_per_call(step, device, iters), "iters": iters, "warm_up_s": round(warm_up_s, 2)}
    if job.sample is not None and not compiled:  # sampling eager only: compiling it is another graph, another wait
        generator = torch.Generator(device).manual_seed(0)

        def sample():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                return job.sample(job.model.eval(), plan.sample_n, plan.sample_steps, generator)

        sample()
        timed["sample_img_s"] = round(plan.sample_n / seconds_per_call(sample, device, 1), 2)
    return timed


def rates(timed: dict, flops: int, batch_size: int, device: torch.device) -> dict:
    """images/s, ms per step, achieved TFLOP/s and its share of the device's dense bf16 peak."""
    tflop_s = flops / timed["train_s"] / 1e12
    peak = bf16_peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    out = {"train_img_s": round(batch_size / timed["train_s"], 1), "ms_per_step": round(1e3 * timed["train_s"], 3),
           "train_tflop_s": round(tflop_s, 4), "share_of_bf16_peak": None if peak is None else round(tflop_s / peak, 4),
           "timed_steps": timed["iters"], "warm_up_s": timed["warm_up_s"]}
    return out | ({"sample_img_s": timed["sample_img_s"]} if "sample_img_s" in timed else {})


def quality(plan: Plan, deadline: float, name: str) -> Iterator[dict]:
    """Recipe `name`'s model and batch at plan.quality_preset, trained on mnist-5k for plan.quality_s (or what the
    budget leaves), then scored by `eval_digit_samples`: FID-LeNet, the real-data level, the share as asked."""
    device = pick_device(plan.device)
    recipe = get_recipe(name)
    if recipe.parts:
        raise ValueError(f"{name} starts from other checkpoints; the quality stage trains self-contained recipes")
    train = recipe.presets[plan.quality_preset].train
    train = replace(train, batch_size=plan.quality_batch or train.batch_size, checkpoint_every=10**9)
    data = load_dataset("mnist-5k", "train")
    data = data.to(device) if device.type == "cuda" else data  # 4 MB: on the GPU, as `train_recipe` puts it
    batches = recipe.batches(data, train.batch_size)
    torch.manual_seed(train.seed)
    probe = fit(recipe.build(plan.quality_preset), recipe.loss, batches, replace(train, steps=plan.probe_steps), device,
                progress=False)  # also warms the kernels up
    seconds_per_step = probe.wall_time_s / plan.probe_steps
    del probe
    seconds = min(plan.quality_s, deadline - time.time() - plan.eval_reserve_s)
    if seconds < plan.min_quality_s:
        yield {"not_run": f"budget: {seconds:.0f} s of training left after the probe"}
        return
    steps = steps_for(seconds, seconds_per_step)
    torch.manual_seed(train.seed)
    model = recipe.build(plan.quality_preset)
    state = fit(model, recipe.loss, batches, replace(train, steps=steps, max_seconds=seconds), device, progress=False)
    scores = eval_digit_samples(state.final_model, device, plan.quality_n)
    keep = ("fid_lenet", "real_floor", "real_floor_std", "accuracy", "samples", "sample_seconds", "guidance", "steps")
    yield {"recipe": name, "size": plan.quality_preset, "dataset": "mnist-5k", "batch_size": train.batch_size,
           "params": sum(p.numel() for p in model.parameters() if p.requires_grad), "budget_s": round(seconds, 1),
           "planned_steps": steps, "steps_done": state.step, "wall_time_s": round(state.wall_time_s, 1),
           "train_img_s": round(state.step * train.batch_size / state.wall_time_s, 1),
           "precision": str(train.autocast_dtype(device) or torch.float32).removeprefix("torch."),
           "compile": train.compile, "lr": train.lr, "ema_decay": train.ema_decay,
           **{("sample_steps" if k == "steps" else k): scores[k] for k in keep if k in scores}}


def worker_main(argv: list[str] | None = None) -> None:
    """The worker process's entry point: argv = [plan as JSON, deadline as time.time() seconds]."""
    plan_json, deadline = argv or sys.argv[1:3]
    fields = json.loads(plan_json)
    plan = Plan(**{k: tuple(tuple(v) if isinstance(v, list) else v for v in fields[k])
                   if isinstance(fields[k], list) else fields[k] for k in fields})
    work(plan, float(deadline))


def plan_json(plan: Plan) -> str:
    return json.dumps(asdict(plan))
