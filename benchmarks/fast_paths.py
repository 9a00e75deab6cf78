"""What each training fast path costs or saves on this machine: CPU seconds per training step.

    OMP_NUM_THREADS=1 python benchmarks/fast_paths.py [--device cpu] [--json out.json]

Each recipe trains for 10 and then 30 steps (no evaluation, nothing written); the difference / 20 is
the cost of one step, so one-time set-up (building the model, pre-encoding the dataset) cancels out.
CPU time (process time) rather than wall time, so a shared machine disturbs it less. The loss after 30
steps is printed too: a fast path must not change it beyond rounding.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from minilineage.recipes import train_recipe

RUNS = (("ddpm-mnist", {}), ("ddpm-mnist", {"precision": "bf16"}), ("ddpm-mnist", {"channels_last": True}),
        ("ldm-mnist", {}), ("ldm-mnist", {"pre_encode": True}))


def cpu_seconds(name: str, steps: int, device: str, options: dict) -> tuple[float, dict]:
    started = time.process_time()
    result = train_recipe(name, steps=steps, out=None, device=device, progress=False, evaluate=False, **options)
    return time.process_time() - started, result.record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    rows = []
    for name, options in RUNS:
        short, _ = cpu_seconds(name, 10, args.device, options)
        long, record = cpu_seconds(name, 30, args.device, options)
        rows.append({"recipe": name, **options, "cpu_s_per_step": round((long - short) / 20, 3),
                     "loss_at_30": round(record["history"][-1][1], 4), "threads": torch.get_num_threads()})
        print(rows[-1], flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
