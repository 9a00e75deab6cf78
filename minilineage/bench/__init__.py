"""`minilineage bench`: what each course model costs, and how it compares with the diffusers model a user would pick.

Per model and device: parameters; FLOPs of a training step (forward + backward as counted by
FlopCounterMode: matmuls, convolutions, attention; not elementwise ops); training images/s and
TFLOP/s (the recipe's loss, backward, AdamW); for denoisers, sampling images/s = one full `sample()`
of N images with S DDIM steps at guidance 1 (one network call per step); peak memory; on CUDA the
share of the device's dense bf16 peak (`measure.BF16_PEAK_TFLOPS`, "unknown" for other devices).

With `against="diffusers"` each model that has one is followed by its reference (`reference`):
ddpm-mnist by UNet2DModel + DDIMScheduler, dit-mnist by DiTTransformer2DModel + DDIMScheduler, each
configured to our model's size; REFERENCE_NOTES says exactly what is matched and what differs. In
short: the U-Net reference has a deeper decoder (0.758 M parameters to our 0.571 M, 1.52x our FLOPs
per image); the DiT reference has a timestep MLP and label table in every block (its parameters grow
with depth, its FLOPs barely). "Per image" compares the same job, "per FLOP" the achieved FLOP/s.

`presets` tabulates every recipe's GPU preset: parameters, FLOPs per step, fp32 training memory
measured on the CPU, and an estimated time on one H100 (`minilineage bench --presets`).

  measure.py    BenchSettings, Job, FLOP and operator counting, timing, peak memory, bf16 peaks
  reference.py  the diffusers networks configured to our sizes, and their training and sampling jobs
  runner.py     jobs by name, fresh processes, the table, the comparisons, JSON
  presets.py    the GPU-preset table
  race.py       the time-to-quality race: ddpm-mnist, ddpm-mnist-fast and a diffusers UNet2DModel trained with
                ddpm-mnist's settings and with diffusers' recommended ones, the same CPU minutes each
  diffusers_training.py  the race's diffusers contestants (UNet2DModel, DDPMScheduler, EMAModel) and their settings
  gpu_report.py the one command for a lent GPU (`minilineage bench --gpu-report OUT`): a watchdog over the
                stages of gpu_stages.py (CUDA-only tests, throughput, time to quality), stopped at its budget
"""

from __future__ import annotations

from minilineage.bench.diffusers_training import (
    DIFFUSERS_RECOMMENDED,
    DiffusersTrainer,
    ddpm_mnist_settings,
    reference_network,
)
from minilineage.bench.gpu_report import run_gpu_report
from minilineage.bench.measure import (
    BF16_PEAK_TFLOPS,
    BenchSettings,
    Job,
    bf16_peak_tflops,
    count_flops,
    count_ops,
    flop_counter,
    measure,
    peak_memory,
    start_peak_memory,
)
from minilineage.bench.presets import preset_row, preset_table
from minilineage.bench.race import CONTESTANTS, race_tables, run_race
from minilineage.bench.reference import (
    DIT_DIFFERS,
    DIT_MATCHED,
    REFERENCE_NOTES,
    UNET_DIFFERS,
    UNET_MATCHED,
    DiffusersDiT,
    DiffusersUNet,
    diffusers_sample,
    reference_dit,
    reference_job,
    reference_unet,
)
from minilineage.bench.runner import (
    DEFAULT_MODELS,
    compare,
    diffusers_version,
    has_reference,
    make_job,
    measure_in_fresh_process,
    measure_named,
    memory_method,
    pipeline_sample,
    recipe_job,
    run,
)

MATCHED, DIFFERS = UNET_MATCHED, UNET_DIFFERS  # the names of package v2 (ddpm-mnist against UNet2DModel)

__all__ = [
    "BF16_PEAK_TFLOPS", "DEFAULT_MODELS", "DIFFERS", "DIT_DIFFERS", "DIT_MATCHED", "MATCHED", "REFERENCE_NOTES",
    "CONTESTANTS", "DIFFUSERS_RECOMMENDED", "UNET_DIFFERS", "UNET_MATCHED", "DiffusersTrainer", "ddpm_mnist_settings",
    "race_tables", "reference_network", "run_gpu_report", "run_race", "BenchSettings", "DiffusersDiT", "DiffusersUNet", "Job", "bf16_peak_tflops", "compare", "count_flops",
    "count_ops", "diffusers_sample", "diffusers_version", "flop_counter", "has_reference", "make_job", "measure", "measure_in_fresh_process",
    "measure_named", "memory_method", "peak_memory", "pipeline_sample", "preset_row", "preset_table", "recipe_job", "reference_dit",
    "reference_job", "reference_unet", "run", "start_peak_memory",
]
