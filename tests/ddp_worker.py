"""The program tests/test_distributed.py starts under torchrun: `fit` on a tiny regression, one run.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py OUT [options]

Every process writes OUT/rank{R}.pt: its final weights, the loss history, the files it wrote and when
the callbacks ran. A run that diverges writes OUT/diverged-rank{R}.txt with the message first.
`--restart-at S` stops every process before step S, as when the whole job is killed, and then
trains a fresh model from OUT/run.resume.pt to the end, as `--resume` does.
Not collected by pytest (no test_ prefix); `tiny_task` is also the single-process reference.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from minilineage import checkpoint, distributed
from minilineage.train import TrainConfig, TrainingDiverged, fit

CONFIG = TrainConfig(steps=12, batch_size=32, lr=1e-2, warmup_steps=2, checkpoint_every=4, log_every=4, ema_decay=0.9)


def tiny_task(nan_rank: int = -1, nan_step: int = -1, stop_at: int = -1):
    """(model, loss_fn, next_batch): y = x @ w by a small MLP; the loss has no randomness, so a rank's slice is all that differs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    now = {"step": 0}

    def next_batch(step, generator):
        if step == stop_at:
            raise Stopped(step)
        now["step"] = step
        x = torch.randn(CONFIG.batch_size, 4, generator=generator)
        return {"x": x, "y": x @ w}

    def loss_fn(m, batch, generator):
        loss = F.mse_loss(m(batch["x"]).squeeze(1), batch["y"])
        if now["step"] == nan_step and distributed.rank_and_world()[0] == nan_rank:
            return loss + float("nan")  # a non-finite loss on this rank only; the gradients stay finite
        return loss

    return model, loss_fn, next_batch


class Stopped(Exception):
    """Every process stops at the same step, as when a whole job is killed."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--nan-rank", type=int, default=-1)
    parser.add_argument("--nan-step", type=int, default=-1)
    parser.add_argument("--restart-at", type=int, default=-1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    writes, calls, path = [], [], args.out / "run.resume.pt"

    def counted_save(obj, path):
        writes.append(Path(path).name)
        return save_atomic(obj, path)

    save_atomic, checkpoint.save_atomic = checkpoint.save_atomic, counted_save
    with distributed.process_group(torch.device("cpu")) as device:
        rank, world = distributed.rank_and_world()
        options = {"resume_path": path, "progress": False, "callbacks": (lambda step, loss: calls.append(step),)}
        if args.restart_at >= 0:
            try:
                fit(*tiny_task(stop_at=args.restart_at), CONFIG, device, **options)
            except Stopped:
                writes.append(f"stopped; resuming from step {checkpoint.load(path)['step']}")
        try:
            state = fit(*tiny_task(args.nan_rank, args.nan_step), CONFIG, device, resume=args.restart_at >= 0, **options)
        except TrainingDiverged as error:
            (args.out / f"diverged-rank{rank}.txt").write_text(str(error))
            distributed.barrier()  # both files exist before either process exits (torchrun then stops the other)
            raise
    record = {"model": state.model.state_dict(), "final": state.final_model.state_dict(), "history": state.history,
              "writes": writes, "callbacks": calls, "world": world}
    torch.save(record, args.out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
