"""What only a CUDA GPU can check: marked `cuda` and skipped without one; `minilineage bench --gpu-report` runs
them first (`pytest -m cuda tests/test_cuda.py`).

torchrun on one GPU (GPU LOCAL_RANK made current, NCCL, DDP over `fit`'s Objective, the train command),
fused AdamW, bf16 autocast as the CUDA default, `--compile` on a DiffusionPipeline, the dataset moved to
the GPU with the same batches, batches built in a thread and pinned, the bench's CUDA figures.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minilineage import checkpoint
from minilineage.bench import BenchSettings, Job, measure, pipeline_sample
from minilineage.data import ArrayData, image_batches, load_dataset
from minilineage.diffusion import DiffusionPipeline, diffusion_loss
from minilineage.diffusion.pipeline import PipelineConfig
from minilineage.recipes import train_recipe
from minilineage.train import TrainConfig, fit

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
ROOT = Path(__file__).resolve().parent.parent
CUDA = torch.device("cuda")
CONFIG = TrainConfig(steps=6, batch_size=32, lr=1e-2, warmup_steps=2, log_every=3, ema_decay=0.0)


def torchrun_one(*args, timeout: float = 180) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=1 ARGS` on this machine's GPU; fail the test if it hangs."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", *map(str, args)]
    proc = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"torchrun {' '.join(map(str, args))} did not finish in {timeout} s")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def regression(seen: list | None = None):
    """(model, loss_fn, next_batch): y = x @ w by a small MLP (matmuls only: no TF32 convolutions); the loss
    records the dtype the forward ran in and each batch the thread that built it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    seen = [] if seen is None else seen

    def next_batch(step, generator):
        x = torch.randn(CONFIG.batch_size, 4, generator=generator)
        return {"x": x, "y": x @ w, "thread": threading.current_thread().name}

    def loss_fn(m, batch, generator):
        out = m(batch["x"]).squeeze(1)
        seen.append((out.dtype, batch["x"].device.type, batch["thread"]))
        return F.mse_loss(out.float(), batch["y"])

    return model, loss_fn, next_batch


def weights(model):
    return torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])


def test_torchrun_on_one_gpu_makes_it_current_and_ddp_all_reduces_over_nccl(tmp_path):
    result = torchrun_one(ROOT / "tests" / "cuda_ddp_worker.py", tmp_path / "out.json")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["device"] == "cuda:0" and out["current"] == 0 and out["backend"] == "nccl"
    assert out["rank_and_world"] == [0, 1] and out["closed"]
    assert out["gradient_norm"] > 0 and out["gradient_gap"] < 1e-6  # the average over one process: the same gradients


def test_the_train_command_under_torchrun_trains_on_the_gpu_and_writes_once(tmp_path):
    result = torchrun_one("-m", "minilineage.cli", "train", "ae-mnist", "--steps", 3, "--out", tmp_path, "--device", "cuda")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote ") == 1
    record = checkpoint.load(tmp_path / "ae-mnist.pt")
    assert record["step"] == 3 and record["device"].startswith("cuda (") and record["metrics"]


def test_fit_on_cuda_uses_fused_adamw_and_trains_as_on_the_cpu(monkeypatch):
    built = []

    class Recorded(torch.optim.AdamW):
        def __init__(self, *args, **kwargs):
            built.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", Recorded)
    config = TrainConfig(**{**CONFIG.__dict__, "precision": "fp32"})
    on_gpu = fit(*regression(), config, "cuda", progress=False)
    on_cpu = fit(*regression(), config, "cpu", progress=False)
    assert [b["fused"] for b in built] == [True, False]
    torch.testing.assert_close(weights(on_gpu.model), weights(on_cpu.model), rtol=1e-4, atol=1e-5)


def test_bf16_autocast_is_the_cuda_default_and_fp32_can_be_forced():
    for precision, dtype in (("auto", torch.bfloat16), ("bf16", torch.bfloat16), ("fp32", torch.float32)):
        seen = []
        state = fit(*regression(seen), TrainConfig(**{**CONFIG.__dict__, "precision": precision}), "cuda", progress=False)
        assert {s[0] for s in seen} == {dtype} and {s[1] for s in seen} == {"cuda"}
        assert all(p.dtype == torch.float32 and p.is_cuda for p in state.model.parameters())  # the weights stay fp32
        assert state.history[-1][1] < state.history[0][1]


def test_batches_are_built_in_a_thread_and_pinned_on_cuda(monkeypatch):
    pinned = []
    pin = torch.Tensor.pin_memory
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t, *a, **k: pinned.append(t.shape) or pin(t, *a, **k))
    seen = []
    prefetched = fit(*regression(seen), CONFIG, "cuda", progress=False)
    assert all(thread != "MainThread" for *_, thread in seen) and len(pinned) >= 2 * CONFIG.steps  # x and y each step
    plain = fit(*regression(), TrainConfig(**{**CONFIG.__dict__, "prefetch": False}), "cuda", progress=False)
    torch.testing.assert_close(weights(prefetched.model), weights(plain.model))  # the same batches, the same steps


def test_a_dataset_that_fits_moves_to_the_gpu_and_yields_the_same_batches(monkeypatch):
    moved = []
    to = ArrayData.to
    monkeypatch.setattr(ArrayData, "to", lambda self, device: moved.append(torch.device(device).type) or to(self, device))
    train_recipe("ae-mnist", steps=2, out=None, device="cuda", progress=False, evaluate=False)
    assert moved == ["cuda"]
    data = load_dataset("mnist-5k", "test")
    on_cpu = image_batches(data, 64)(3, torch.Generator().manual_seed(1))
    on_gpu = image_batches(data.to("cuda"), 64)(3, torch.Generator().manual_seed(1))
    assert on_gpu["x"].is_cuda and torch.equal(on_gpu["x"].cpu(), on_cpu["x"]) and torch.equal(on_gpu["y"].cpu(), on_cpu["y"])


def test_compile_trains_a_diffusion_pipeline_on_cuda_as_eager_mode_does():
    losses = {}
    for compiled in (False, True):
        result = train_recipe("ddpm-mnist", steps=4, out=None, device="cuda", progress=False, evaluate=False,
                              compile=compiled)
        losses[compiled] = result.record["history"][-1][1]  # the mean loss of the 4 steps, in bf16 autocast
        images = result.model.sample(4, torch.Generator(CUDA).manual_seed(0), labels=torch.arange(4), steps=2)
        assert images.shape == (4, 1, 28, 28) and images.is_cuda and torch.isfinite(images).all()
    assert losses[True] == pytest.approx(losses[False], rel=0.05)


def test_the_bench_measures_peak_memory_and_the_share_of_the_bf16_peak_on_cuda():
    config = PipelineConfig(denoiser={"cls": "UNet", "config": {"width": 8, "channel_mults": (1, 2),
                                                               "attention_levels": (1,), "num_classes": 10, "patch": 2}},
                            shape=(1, 8, 8))
    pipeline = DiffusionPipeline(config)
    job = Job("tiny", pipeline, diffusion_loss, pipeline_sample, pipeline.net, config.shape)
    row = measure(lambda: job, BenchSettings(device="cuda", batch_size=4, iters=2, sample_n=2, sample_steps=2,
                                             sample_iters=1, fresh_process=False))
    assert row["peak_MB"] > 0 and row["train_img_s"] > 0 and row["sample_img_s"] > 0 and "bf16_peak_tflop_s" in row
    if row["bf16_peak_tflop_s"] is not None:  # a GPU in measure.BF16_PEAK_TFLOPS
        assert 0 < row["train_share_of_bf16_peak"] < 1
