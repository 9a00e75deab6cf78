"""The program tests/test_cuda.py starts under torchrun on one GPU: DistributedDataParallel over `fit`'s Objective.

    python -m torch.distributed.run --standalone --nproc_per_node=1 tests/cuda_ddp_worker.py OUT.json [--device cpu]

`distributed.open_group` opens the process group for this one process (NCCL on CUDA, gloo otherwise) and
makes GPU LOCAL_RANK the current one; the Objective (the loss inside the module DDP wraps, as `fit` wraps
it for N processes) then takes a bf16-autocast backward whose gradients DDP all-reduces. OUT.json says
on which device, over which backend, and how far the gradients are from those of the same model without
DDP (an average over one process: the same numbers). `--device cpu` checks the worker itself, over gloo.
Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from minilineage import distributed
from minilineage.train import Objective


def loss_fn(model, batch, generator):
    return F.mse_loss(model(batch["x"]).squeeze(1).float(), batch["y"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    with distributed.open_group(torch.device(args.device)) as device:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1)).to(device)
        plain = copy.deepcopy(model)
        wrapped = nn.parallel.DistributedDataParallel(Objective(model, loss_fn))
        generator = torch.Generator(device).manual_seed(0)
        x = torch.randn(32, 4, generator=generator, device=device)  # (B, 4)
        batch = {"x": x, "y": x @ torch.tensor([1.0, -2.0, 0.5, 3.0], device=device)}
        with torch.autocast(device.type, dtype=torch.bfloat16):
            wrapped(batch, generator).backward()  # DDP all-reduces the gradients during this backward
            loss_fn(plain, batch, generator).backward()
        gap = max((a.grad - b.grad).abs().max().item() for a, b in zip(model.parameters(), plain.parameters()))
        result = {"device": str(device), "current": torch.cuda.current_device() if device.type == "cuda" else None,
                  "backend": dist.get_backend(), "rank_and_world": list(distributed.rank_and_world()),
                  "gradient_gap": gap, "gradient_norm": sum(p.grad.norm().item() for p in model.parameters())}
    result["closed"] = not dist.is_initialized()
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
