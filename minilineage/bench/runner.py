"""`minilineage bench`: the jobs by name, each measured in a fresh process, the table, the comparisons, JSON.

A job name is a recipe ("ddpm-mnist", at its CPU preset's size) or "diffusers:RECIPE", the diffusers
reference of that recipe's denoiser (`reference.reference_job`). A recipe has a reference when it is
an eps- or v-prediction DiffusionPipeline whose denoiser is a UNet or a DiT conditioned on class labels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor, nn

from minilineage.bench.measure import BenchSettings, Job, measure
from minilineage.bench.reference import PREDICTION_TYPES, REFERENCE_NOTES, reference_job, size_line
from minilineage.diffusion import DiffusionPipeline
from minilineage.recipes import get_recipe
from minilineage.train import describe_device, pick_device

DEFAULT_MODELS = ("ae-mnist", "vae-mnist", "lenet-mnist", "ddpm-mnist", "dit-mnist")
REFERENCE_PREFIX = "diffusers:"


def pipeline_sample(pipeline: DiffusionPipeline, n: int, steps: int, generator: torch.Generator) -> Tensor:
    """Our sampling job: DDIM with `steps` steps at guidance 1, i.e. one network call per step."""
    return pipeline.sample(n, generator, steps=steps, guidance=1.0)


def pixel_shape(pipeline: DiffusionPipeline) -> tuple[int, ...]:
    """One training image as the pipeline is fed it: its diffusion shape, or what its decoder makes of a latent."""
    if pipeline.autoencoder is None:
        return pipeline.config.shape
    with torch.no_grad():
        return tuple(pipeline.decode(torch.zeros(1, *pipeline.config.shape)).shape[1:])


def recipe_job(name: str, preset: str = "cpu") -> Job:
    """A recipe's model at a preset's size (its CPU preset's by default), its training loss and (for a pipeline) its sampler."""
    recipe = get_recipe(name)
    model = recipe.build(preset)
    if not isinstance(model, DiffusionPipeline):
        return Job(name, model, recipe.loss)
    return Job(name, model, recipe.loss, pipeline_sample, model.net, pixel_shape(model))


def has_reference(name: str) -> bool:
    """Whether `name` has a diffusers reference: eps or v, a UNet or DiT denoiser, class labels or none, no text."""
    recipe = get_recipe(name)
    if recipe.model_cls is not DiffusionPipeline or "clip" in recipe.parts:
        return False
    config = recipe.config()
    denoiser = config.denoiser["config"]
    return (config.objective in PREDICTION_TYPES and config.denoiser["cls"] in REFERENCE_NOTES and denoiser.get("context_dim") is None
            and (config.denoiser["cls"] == "UNet" or bool(denoiser.get("num_classes"))))


def reference_recipe_job(name: str, preset: str = "cpu") -> Job:
    """The diffusers reference of recipe `name` at a preset's size, through the same frozen autoencoder."""
    pipeline = get_recipe(name).build(preset)
    shape = pixel_shape(pipeline)
    pipeline.net = nn.Identity()  # only its autoencoder (encode, decode) is shared with the reference
    codec = pipeline if pipeline.autoencoder is not None else None
    return reference_job(pipeline.config, f"{REFERENCE_PREFIX}{name}", codec, shape)


def make_job(name: str) -> Job:
    """The job called `name`: a recipe, or "diffusers:RECIPE" for its reference."""
    if name.startswith(REFERENCE_PREFIX):
        return reference_recipe_job(name.removeprefix(REFERENCE_PREFIX))
    return recipe_job(name)


def measure_named(name: str, settings: BenchSettings) -> dict:
    """`measure(make_job(name))` with the caller's thread count: the entry point of a fresh process."""
    torch.set_num_threads(settings.threads)
    return measure(lambda: make_job(name), settings)


def measure_in_fresh_process(name: str, settings: BenchSettings) -> dict:
    """`measure_named` in a new Python process, so the model starts from a clean heap."""
    code = ("import json, sys; from minilineage.bench import BenchSettings, measure_named; "
            "print(json.dumps(measure_named(sys.argv[1], BenchSettings(**json.loads(sys.argv[2])))))")
    package_root = str(Path(__file__).resolve().parents[2])  # this checkout, whatever the child's sys.path
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code, name, json.dumps(asdict(settings))],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {name} in a fresh process failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def diffusers_version() -> str | None:
    """The installed diffusers version, or None (then the reference is skipped)."""
    try:
        import diffusers
    except ImportError:
        return None
    return diffusers.__version__


def cpu_description() -> str:
    """The CPU's model and widest vector extension (Linux /proc/cpuinfo): CPU timings differ a lot between machines."""
    info = Path("/proc/cpuinfo")
    if not info.exists():
        return "unknown CPU"
    text = info.read_text()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "unknown CPU")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model}, {vector}, {os.cpu_count()} logical cores"


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
          f"{'sample img/s':>12s} {'TFLOP/s':>8s} {'peak MB':>8s} {'% bf16 peak':>11s}")
    for r in rows:
        sample = f"{r['sample_img_s']:12.1f} {r['sample_tflop_s']:8.4f}" if "sample_img_s" in r else f"{'-':>12s} {'-':>8s}"
        peak = "n/a" if r["peak_MB"] is None else f"{r['peak_MB']:.0f}"
        share = r.get("train_share_of_bf16_peak", "cpu" if "bf16_peak_tflop_s" not in r else None)
        share = "-" if share == "cpu" else "unknown" if share is None else f"{100 * share:.1f}"
        print(f"{r['model']:22s} {r['params'] / 1e6:7.3f}M {r['train_flops'] / 1e9:16.2f} {r['train_img_s']:11.0f} "
              f"{r['train_tflop_s']:8.4f} {sample} {peak:>8s} {share:>11s}")


def _print_comparison(ours: dict, ref: dict, c: dict, version: str, notes: dict) -> None:
    print(f"\n{ours['model']} vs {ref['model']} (diffusers {version} {notes['reference']}), guidance 1 for both "
          "(one call per step)")
    print("\n".join([f"  matched: {line}" for line in notes["matched"]] + [f"  differs: {line}" for line in notes["differs"]]))
    print(f"  parameters: ours {ours['params']:,}, reference {ref['params']:,} ({ref['params'] / ours['params']:.2f}x)")
    print(f"  FLOPs per training step: ours {ours['train_flops']:,}, reference {ref['train_flops']:,} "
          f"({c['reference_flops_ratio']:.2f}x)")
    ratios = lambda d: ", ".join(f"{'training' if k == 'train' else 'sampling'} {v:.2f}x" for k, v in d.items())  # noqa: E731
    print(f"  per image (images/s, ours / reference, same job): {ratios(c['per_image'])}")
    print(f"  per FLOP  (achieved FLOP/s, ours / reference):    {ratios(c['per_flop'])}")


def fastest(rows: list[dict]) -> dict:
    """One row from several measurements of a model: the fastest training and sampling runs (the least disturbed)."""
    best = dict(max(rows, key=lambda r: r["train_img_s"]))
    if "sample_img_s" in best:
        sample = max(rows, key=lambda r: r["sample_img_s"])
        best |= {k: sample[k] for k in ("sample_img_s", "sample_tflop_s")}
    return best | {"peak_MB": max((r["peak_MB"] for r in rows if r["peak_MB"] is not None), default=None)}


def with_references(models: tuple[str, ...], version: str | None) -> tuple[str, ...]:
    """`models`, each followed by its diffusers reference where it has one (none when diffusers is missing)."""
    if version is None:
        print("reference skipped: diffusers is not installed (`pip install -e .[bench]` adds it)")
        return models
    return tuple(n for m in models for n in ((m, REFERENCE_PREFIX + m) if has_reference(m) else (m,)))


def run(settings: BenchSettings | None = None, json_path: str | Path | None = None,
        models: tuple[str, ...] = DEFAULT_MODELS, against: str | None = None) -> dict:
    """Measure `models` (recipe names), with against="diffusers" each next to its reference; print, optionally write JSON."""
    settings = settings or BenchSettings()
    device, version = pick_device(settings.device), diffusers_version()
    models = tuple(m for m in models if not m.startswith(REFERENCE_PREFIX))
    models = with_references(models, version) if against == "diffusers" else models
    print(f"device: {describe_device(device)}; training batch {settings.batch_size}, {settings.iters} timed steps; "
          f"sampling {settings.sample_n} images x {settings.sample_steps} DDIM steps, {settings.sample_iters} timed calls; "
          f"{settings.rounds} round(s), the fastest kept")
    print(f"cpu: {cpu_description()}; {settings.threads} torch thread(s)")
    print(f"peak memory: {memory_method(device, settings.fresh_process)}")
    measure_one = measure_in_fresh_process if settings.fresh_process else measure_named
    runs = {name: [] for name in models}
    for _ in range(settings.rounds):  # each model, then its reference, then again: alternating
        for name in models:
            runs[name].append(measure_one(name, settings))
    rows = {name: fastest(measured) for name, measured in runs.items()}
    _print_rows(list(rows.values()))
    matching = {}
    for name, row in rows.items():
        ref = rows.get(REFERENCE_PREFIX + name)
        row["speedup_vs_reference"] = compare(row, ref) if ref else None
        if ref:
            config = get_recipe(name).config()
            notes = REFERENCE_NOTES[config.denoiser["cls"]]
            notes = {**notes, "matched": (size_line(config), *notes["matched"])}
            matching[name] = notes
            _print_comparison(row, ref, row["speedup_vs_reference"], version, notes)
    result = {"device": describe_device(device), "cpu": cpu_description(), "settings": asdict(settings), "diffusers": version,
              "memory_method": memory_method(device, settings.fresh_process),
              "reference_matching": matching, "models": rows}
    if json_path is not None:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {json_path}")
    return result
