"""Training under torchrun: two CPU processes (gloo) take the steps one process takes on the whole batch.

The tests start real processes with `python -m torch.distributed.run` (what `torchrun` runs) and
tests/ddp_worker.py, under a timeout that kills the whole process group, so a hang fails the test
instead of blocking the suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from ddp_worker import CONFIG, tiny_task

from minilineage import checkpoint, cli
from minilineage.recipes import train_recipe
from minilineage.train import fit

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).with_name("ddp_worker.py")


def torchrun(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `torchrun --standalone --nproc_per_node=2 ARGS` on this CPU; fail the test if it hangs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *map(str, args)]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers
        proc.communicate()
        pytest.fail(f"torchrun {' '.join(map(str, args))} did not finish in {timeout} s")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def ranks(out: Path) -> list[dict]:
    return [torch.load(out / f"rank{rank}.pt") for rank in (0, 1)]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The folder of an uninterrupted two-process run of the tiny task."""
    out = tmp_path_factory.mktemp("straight")
    result = torchrun(WORKER, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_two_processes_end_with_the_weights_of_one_process_on_the_same_global_batch(straight):
    rank0, rank1 = ranks(straight)
    single = fit(*tiny_task(), CONFIG, "cpu", progress=False)
    for key, value in single.model.state_dict().items():
        assert torch.equal(rank0["model"][key], rank1["model"][key])  # DDP keeps the ranks in lockstep
        # One process averages 32 per-item losses, two average 16 each and then their gradients: the
        # same sum added in another order, so equal up to float32 rounding (3e-8 here), well inside 1e-6.
        assert torch.allclose(rank0["model"][key], value, rtol=1e-5, atol=1e-6)
    for key, value in single.final_model.state_dict().items():
        assert torch.equal(rank0["final"][key], rank1["final"][key])
        assert torch.allclose(rank0["final"][key], value, rtol=1e-5, atol=1e-6)
    # The logged loss is the whole batch's (the mean of the two halves'), not rank 0's half.
    assert [s for s, _ in rank0["history"]] == [s for s, _ in single.history] == [4, 8, 12]
    assert torch.allclose(torch.tensor([v for _, v in rank0["history"]]), torch.tensor([v for _, v in single.history]),
                          rtol=1e-5)


def test_only_rank_0_writes_checkpoints_and_runs_callbacks(straight):
    rank0, rank1 = ranks(straight)
    assert rank0["world"] == rank1["world"] == 2
    assert rank0["writes"] == ["run.resume.pt"] * 3 and rank1["writes"] == []
    assert rank0["callbacks"] == [4, 8, 12] and rank1["callbacks"] == []
    assert checkpoint.load(straight / "run.resume.pt")["step"] == 12


def test_a_nan_on_one_rank_stops_both_at_the_next_log_step(tmp_path):
    result = torchrun(WORKER, tmp_path, "--nan-rank", 1, "--nan-step", 5)  # the loss of step 5 on rank 1 only
    assert result.returncode != 0 and "TrainingDiverged" in result.stderr
    message = (tmp_path / "diverged-rank0.txt").read_text()
    assert (tmp_path / "diverged-rank1.txt").read_text() == message  # both stopped, at the same check
    assert "between steps 4 and 8" in message and "on 1 of 2 processes" in message
    assert "last good checkpoint" in message and "(step 4)" in message
    assert checkpoint.load(tmp_path / "run.resume.pt")["step"] == 4  # the step-8 checkpoint was never written
    assert not (tmp_path / "rank0.pt").exists()


def test_a_stopped_two_process_run_resumes_to_the_same_weights(tmp_path, straight):
    result = torchrun(WORKER, tmp_path, "--restart-at", 10)  # both processes stop before step 10, then resume
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("resumed from step 8") == 1  # printed by rank 0 only
    after0, after1 = ranks(tmp_path)
    # Rank 0 wrote steps 4 and 8, then after resuming step 12; every process read step 8 back.
    assert after0["writes"] == ["run.resume.pt"] * 2 + ["stopped; resuming from step 8", "run.resume.pt"]
    assert after1["writes"] == ["stopped; resuming from step 8"]
    for before, after in zip(ranks(straight), (after0, after1)):
        for key, value in before["final"].items():
            assert torch.equal(after["final"][key], value)
        assert after["history"] == before["history"]


def test_the_train_command_under_torchrun_trains_the_preset_batch_and_writes_once(tmp_path):
    result = torchrun("-m", "minilineage.cli", "train", "ae-mnist", "--steps", 3, "--out", tmp_path, "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote ") == 1 and "x 2 processes" in result.stdout  # rank 0 reports
    two = checkpoint.load(tmp_path / "ae-mnist.pt")
    assert two["metrics"] and two["train_config"]["batch_size"] == 128  # evaluated; the batch is the global one
    one = train_recipe("ae-mnist", steps=3, out=None, device="cpu", progress=False)  # its loss has no randomness
    for key, value in one.model.state_dict().items():
        assert torch.allclose(two["model"][key], value, rtol=1e-5, atol=1e-6)


def test_losses_that_call_encode_and_decode_train_under_torchrun_too(tmp_path):
    """vae-mnist's loss calls model.encode and model.decode, not forward: DDP still averages its gradients."""
    result = torchrun("-m", "minilineage.cli", "train", "vae-mnist", "--steps", 2, "--out", tmp_path, "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote ") == 1 and checkpoint.load(tmp_path / "vae-mnist.pt")["step"] == 2


def test_compile_trains_a_few_steps_like_eager_mode(monkeypatch):
    monkeypatch.setattr("torch._inductor.config.compile_threads", 1)  # on 2 cores a pool of compilers costs more than it saves
    config = replace(CONFIG, steps=3, ema_decay=0.0)
    eager = fit(*tiny_task(), config, "cpu", progress=False)
    compiled = fit(*tiny_task(), replace(config, compile=True), "cpu", progress=False)
    assert compiled.step == 3
    for key, value in eager.model.state_dict().items():
        assert torch.allclose(compiled.model.state_dict()[key], value, rtol=1e-4, atol=1e-6)


def test_the_train_command_passes_compile_to_the_recipe(monkeypatch):
    seen = {}

    def fake_train_recipe(name, **options):
        seen.update(options)
        raise SystemExit(0)

    monkeypatch.setattr(cli, "train_recipe", fake_train_recipe)
    for argv, expected in ((["train", "ae-mnist", "--compile"], True), (["train", "ae-mnist"], None)):
        with pytest.raises(SystemExit):
            cli.main(argv)
        assert seen["compile"] is expected  # None: the preset decides
