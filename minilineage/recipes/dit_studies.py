"""Chapter 6's sampling studies: shipped checkpoints sampled at other guidance scales and on other noise levels.

The training studies of chapter 6 are recipes (`minilineage train dit-scale-XS4`, ...). These train nothing,
they only sample shipped diffusion checkpoints, so this module writes their records itself:

    python -m minilineage.recipes.dit_studies guidance   # -> assets/studies/guidance.json
    python -m minilineage.recipes.dit_studies levels     # -> assets/studies/levels.json

  guidance  each model of GUIDANCE_MODELS at every scale of GUIDANCE_SCALES: 500 samples with 50 steps
  levels    the v-DiT (DDIM) and the flow DiT (Euler) each on its own noise levels and on the other's,
            at 5, 10, 25 and 50 steps, 250 samples (`flow.sample_at_levels`; chapter 6, section 7)

Every setting draws its samples as the DiT recipes' evaluation does (`dit.eval_with_steps`): the digits 0-9
in turn, chunks of 250 from one generator seeded 0, scored by `metrics.evaluate_samples` (FID-LeNet against
the mnist-5k test digits, the real-data level at the same n, the share LeNet reads as the digit asked for).
A record holds the command, the machine and its threads, the load average, and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable

import torch

from minilineage.checkpoint import CHECKPOINT_DIR, load_model
from minilineage.data import to_uint8
from minilineage.diffusion.flow import ddim_levels, euler_levels, sample_at_levels
from minilineage.metrics import evaluate_samples

STUDY_DIR = CHECKPOINT_DIR.parent / "studies"
GUIDANCE_MODELS = ("ddpm-mnist", "dit-mnist", "dit-mnist-flow", "dit-mnist-latent")
GUIDANCE_SCALES = (1.0, 1.25, 1.5, 2.0, 3.0)
LEVEL_MODELS = ("dit-mnist", "dit-mnist-flow")
LEVEL_STEPS = (5, 10, 25, 50)
CHUNK = 250


def score(draw: Callable[[int, torch.Generator, torch.Tensor], torch.Tensor], n: int) -> dict:
    """Figures of n samples of the digits 0-9 in turn, drawn by `draw(k, generator, labels)` in chunks of CHUNK."""
    generator, labels = torch.Generator().manual_seed(0), torch.arange(n) % 10
    started = time.perf_counter()
    images = torch.cat([draw(len(part), generator, part) for part in labels.split(CHUNK)])
    seconds = time.perf_counter() - started
    return {**evaluate_samples(to_uint8(images), labels), "sample_seconds": round(seconds, 1)}


def guidance_study(n: int = 500) -> dict:
    """{model: {scale: figures}}: each model of GUIDANCE_MODELS at each scale, with its own 50 steps."""
    return {name: _at_scales(load_model(name).eval(), n) for name in GUIDANCE_MODELS}


def _at_scales(model, n: int) -> dict:
    return {str(w): score(lambda k, g, y, w=w: model.sample(k, g, labels=y, guidance=w), n) for w in GUIDANCE_SCALES}


def levels_study(n: int = CHUNK) -> dict:
    """{model: {"ddim" | "euler": {steps: figures}}}: each DiT of LEVEL_MODELS on DDIM's noise levels (the
    cosine schedule's steps, evenly spaced) and on the flow sampler's (flow times evenly spaced)."""
    return {name: _on_levels(load_model(name).eval(), n) for name in LEVEL_MODELS}


def _on_levels(model, n: int) -> dict:
    grids = {"ddim": lambda k: ddim_levels(model.sched, k), "euler": euler_levels}
    return {grid: {str(k): _score_at(model, levels(k), n) for k in LEVEL_STEPS} for grid, levels in grids.items()}


def _score_at(model, levels, n: int) -> dict:
    return score(lambda k, g, y: sample_at_levels(model, k, g, levels, labels=y), n)


STUDIES: dict[str, Callable[[], dict]] = {"guidance": guidance_study, "levels": levels_study}


def run_study(name: str, out=STUDY_DIR) -> dict:
    """Run study `name` on one thread and write OUT/NAME.json: the results and how they were made."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; choose one of: {', '.join(STUDIES)}")
    torch.set_num_threads(1)
    load, started = os.getloadavg()[0], time.perf_counter()
    results = STUDIES[name]()
    record = {"study": name, "command": f"python -m minilineage.recipes.dit_studies {name}",
              "device": f"cpu ({torch.get_num_threads()} thread)", "machine": platform.processor() or platform.machine(),
              "load_average_at_start": round(load, 2), "wall_time_s": round(time.perf_counter() - started, 1),
              "torch": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "results": results}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def sampling_study(name: str, recompute: bool = False) -> dict:
    """The record of study `name`: read from assets/studies/NAME.json, or computed again here (recompute=True, minutes)."""
    path = STUDY_DIR / f"{name}.json"
    if recompute:
        return run_study(name, out=STUDY_DIR.parent.parent / "runs" / "studies")
    if not path.exists():
        raise FileNotFoundError(f"no record {path}: make it with `python -m minilineage.recipes.dit_studies {name}`")
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minilineage.recipes.dit_studies", description=__doc__.split("\n")[0])
    parser.add_argument("study", choices=list(STUDIES))
    args = parser.parse_args(argv)
    record = run_study(args.study)
    print(f"wrote {STUDY_DIR / (args.study + '.json')} in {record['wall_time_s']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
