"""Several processes training one model: the process group `torchrun` asks for, and its collectives.

`torchrun --nproc_per_node=N` starts N copies of the same program and tells each who it is with
environment variables: RANK (0 .. WORLD_SIZE-1 over all machines), WORLD_SIZE and LOCAL_RANK (which
GPU of this machine). Whoever starts a run (`train_recipe`, hence the CLI) opens the group with
`process_group`, which closes it again on the way out, error or not; `fit` only asks
`rank_and_world`. Outside torchrun (a notebook, a plain `python`) nothing here does anything: the
process is rank 0 of 1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist


def launched() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) as torchrun set them, (0, 1) without torchrun; whether or not a group is open."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the open process group, or (0, 1) when none is open."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Open the default process group when torchrun started more than one process; close it on exit.

    Yields the device this process trains on: on CUDA, GPU number LOCAL_RANK, also made the current
    GPU so that NCCL and every bare "cuda" tensor land there (N processes on GPU 0 would share one
    card). NCCL talks between GPUs; gloo between CPU processes.
    """
    if launched()[1] == 1 or (dist.is_available() and dist.is_initialized()):  # nothing to open, or not ours to close
        yield device
        return
    with open_group(device) as device:
        yield device


@contextmanager
def open_group(device: torch.device) -> Iterator[torch.device]:
    """Open the default process group of this torchrun process whatever the world size, and close it on exit.

    `process_group` opens one only for several processes; opened alone (world size 1), as the CUDA-only
    tests do on one GPU, it lets DistributedDataParallel and NCCL run on a machine with a single GPU.
    """
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all processes, in place (on every process); a no-op without a group."""
    if rank_and_world()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    """Wait until every process has got here (e.g. until rank 0 has finished writing a file)."""
    if rank_and_world()[1] > 1:
        dist.barrier()


@contextmanager
def rank_zero_first() -> Iterator[None]:
    """Run the block on rank 0 first, then on the others: for a download that every process needs."""
    rank = rank_and_world()[0]
    if rank > 0:
        barrier()
    yield
    if rank == 0:
        barrier()
