import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minilineage import checkpoint
from minilineage.train import EMA, TrainConfig, TrainingDiverged, fit, lr_lambda, pick_device


def tiny_task():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])

    def next_batch(step, generator):
        x = torch.randn(32, 4, generator=generator)
        return {"x": x, "y": x @ w}

    def loss_fn(m, batch, generator):
        noise = 0.01 * torch.randn(len(batch["x"]), generator=generator)
        return F.mse_loss(m(batch["x"]).squeeze(1), batch["y"] + noise)

    return model, loss_fn, next_batch


def config(**kw):
    return TrainConfig(**{"steps": 40, "lr": 1e-2, "warmup_steps": 5, "checkpoint_every": 10, "log_every": 5, "ema_decay": 0.9, **kw})


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values()])


def test_training_reduces_the_loss():
    model, loss_fn, next_batch = tiny_task()
    state = fit(model, loss_fn, next_batch, config(steps=150), "cpu", progress=False)
    assert state.history[-1][1] < 0.2 * state.history[0][1]


def test_same_seed_gives_identical_weights():
    runs = []
    for _ in range(2):
        model, loss_fn, next_batch = tiny_task()
        runs.append(weights(fit(model, loss_fn, next_batch, config(), "cpu", progress=False).final_model))
    assert torch.equal(runs[0], runs[1])


class Killed(Exception):
    pass


def kill_at(step_to_die):
    def callback(step, loss):
        if step == step_to_die:
            raise Killed

    return callback


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    model, loss_fn, next_batch = tiny_task()
    straight = fit(model, loss_fn, next_batch, config(), "cpu", progress=False)
    path = tmp_path / "run.resume.pt"
    model, loss_fn, next_batch = tiny_task()
    with pytest.raises(Killed):
        fit(model, loss_fn, next_batch, config(), "cpu", resume_path=path, progress=False, callbacks=(kill_at(25),))
    assert checkpoint.load(path)["step"] == 20  # the last periodic checkpoint before the kill
    model, loss_fn, next_batch = tiny_task()
    resumed = fit(model, loss_fn, next_batch, config(), "cpu", resume_path=path, resume=True, progress=False)
    assert resumed.step == 40
    assert torch.allclose(weights(resumed.model), weights(straight.model), atol=1e-6)
    assert torch.allclose(weights(resumed.final_model), weights(straight.final_model), atol=1e-6)
    assert [s for s, _ in resumed.history] == [s for s, _ in straight.history]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    model, loss_fn, next_batch = tiny_task()

    def exploding(m, batch, generator):
        loss = loss_fn(m, batch, generator)
        return loss * float("nan") if poisoned["on"] else loss

    poisoned = {"on": False}

    def poison_after(step, loss):
        poisoned["on"] = step >= 15

    path = tmp_path / "run.resume.pt"
    with pytest.raises(TrainingDiverged, match="between steps 15 and 20.*last good checkpoint .* \\(step 10\\)"):
        fit(model, exploding, next_batch, config(), "cpu", resume_path=path, progress=False, callbacks=(poison_after,))
    kept = checkpoint.load(path)
    assert kept["step"] == 10
    assert all(torch.isfinite(v).all() for v in kept["model"].values())


def poisoned_from(step_to_poison, loss_fn, grad_only=False):
    """`loss_fn` that turns the loss (or, with grad_only, only the gradient) into NaN from a given step on."""
    calls = {"n": 0}

    def poisoned(m, batch, generator):
        loss = loss_fn(m, batch, generator)
        calls["n"] += 1
        if calls["n"] <= step_to_poison:
            return loss
        if grad_only:  # the loss stays finite; from now on the gradient of the first weight does not
            if calls["n"] == step_to_poison + 1:
                m[0].weight.register_hook(lambda grad: torch.full_like(grad, float("nan")))
            return loss
        return loss * float("nan")

    return poisoned


# A NaN loss from step 13 on; or only a NaN gradient, at step 19, the last before the check: no loss
# computed after it could show it, so only the gradient norm's flag can.
@pytest.mark.parametrize("first_bad, grad_only", [(13, False), (19, True)])
def test_a_nan_between_log_steps_is_caught_at_the_next_one_and_never_checkpointed(tmp_path, first_bad, grad_only):
    model, loss_fn, next_batch = tiny_task()
    path = tmp_path / "run.resume.pt"
    with pytest.raises(TrainingDiverged, match="between steps 10 and 20:.*\\(step 10\\) is kept"):
        fit(model, poisoned_from(first_bad, loss_fn, grad_only), next_batch, config(log_every=10), "cpu",
            resume_path=path, progress=False, keep_every=20)
    assert checkpoint.load(path)["step"] == 10  # neither the resume file nor a snapshot of step 20 was written
    assert list(tmp_path.glob("run-step*.pt")) == []


def test_fit_under_torchrun_without_a_process_group_refuses_to_start(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; every process would train the whole batch alone
    with pytest.raises(RuntimeError, match="no process group is open"):
        fit(*tiny_task(), config(), "cpu", progress=False)


def test_atomic_save_leaves_the_old_file_when_a_write_dies(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    checkpoint.save_atomic({"format": checkpoint.FORMAT, "step": 1}, path)

    def dies(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_atomic({"format": checkpoint.FORMAT, "step": 2}, path)
    monkeypatch.undo()
    assert checkpoint.load(path)["step"] == 1
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_ema_follows_closely_early_and_slowly_later():
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.99)
    model.weight.data.fill_(1.0)
    ema.update(model, step=0)  # decay min(0.99, 1/10) = 0.1
    assert ema.model.weight.item() == pytest.approx(0.9)
    ema.update(model, step=10_000)  # decay 0.99
    assert ema.model.weight.item() == pytest.approx(0.9 + 0.1 * 0.01)


def test_ema_averages_the_trainable_weights_and_copies_the_rest():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
    model[0].requires_grad_(False)  # a frozen part, like the autoencoder of latent diffusion
    ema = EMA(model, decay=0.99)
    start = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(5.0)
    ema.update(model, step=0)  # decay 0.1
    for key in ("2.weight", "2.bias", "1.weight", "1.bias"):  # trainable: 0.1 ema + 0.9 live, by the same lerp
        assert torch.equal(ema.model.state_dict()[key], start[key].lerp(model.state_dict()[key], 0.9))
    for key in ("0.weight", "0.bias"):  # frozen: never averaged
        assert torch.equal(ema.model.state_dict()[key], start[key])
    assert torch.equal(ema.model[1].running_mean, torch.full((3,), 5.0))  # buffers copied, not averaged


def test_lr_warms_up_then_decays_to_a_tenth():
    f = lr_lambda(TrainConfig(steps=100, warmup_steps=10))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(100) == pytest.approx(0.1)
    assert f(55) == pytest.approx(0.55)


def test_unknown_device_lists_choices():
    with pytest.raises(ValueError, match="auto, cpu, cuda, mps"):
        pick_device("tpu")
    assert pick_device("cpu").type == "cpu"


def test_keep_every_keeps_the_shipped_weights_at_each_step(tmp_path):
    model, loss_fn, next_batch = tiny_task()
    path = tmp_path / "run.resume.pt"
    with pytest.raises(Killed):  # stop right after step 30 to compare the live EMA with the step-30 snapshot
        fit(model, loss_fn, next_batch, config(), "cpu", resume_path=path, progress=False, keep_every=15,
            callbacks=(kill_at(35),))
    assert sorted(p.name for p in tmp_path.glob("run-step*.pt")) == ["run-step15.pt", "run-step30.pt"]
    snapshot = checkpoint.load(tmp_path / "run-step30.pt")
    assert snapshot["step"] == 30 and snapshot["wall_time_s"] >= checkpoint.load(tmp_path / "run-step15.pt")["wall_time_s"]
    resumed = checkpoint.load(path)  # the periodic checkpoint at step 30 holds the same EMA weights
    assert resumed["step"] == 30
    for key, value in snapshot["model"].items():
        assert torch.equal(value, resumed["ema"][key])


def test_negative_keep_every_is_refused():
    model, loss_fn, next_batch = tiny_task()
    with pytest.raises(ValueError, match="0 \\(off\\) or a positive"):
        fit(model, loss_fn, next_batch, config(), "cpu", progress=False, keep_every=-5)


def test_atomic_save_writes_an_ordinary_readable_file(tmp_path):
    path = checkpoint.save_atomic({"format": checkpoint.FORMAT, "step": 1}, tmp_path / "c.pt")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_max_seconds_stops_a_run_at_its_budget_with_its_resume_state_written(tmp_path):
    model, loss_fn, next_batch = tiny_task()
    path = tmp_path / "run.resume.pt"
    state = fit(model, loss_fn, next_batch, config(max_seconds=1e-9), "cpu", resume_path=path, progress=False)
    assert state.step == 1  # any step takes longer than a nanosecond: the budget is spent after the first
    assert checkpoint.load(path)["step"] == 1
    model, loss_fn, next_batch = tiny_task()
    straight = fit(model, loss_fn, next_batch, config(steps=1), "cpu", progress=False)
    assert torch.equal(weights(state.model), weights(straight.model))  # the same first step (the schedule differs later)
    for bad in (0.0, -5.0):
        with pytest.raises(ValueError, match="max_seconds"):
            fit(model, loss_fn, next_batch, config(max_seconds=bad), "cpu", progress=False)


def test_max_cpu_seconds_stops_a_run_at_its_cpu_budget_and_a_resume_counts_on(tmp_path):
    model, loss_fn, next_batch = tiny_task()
    path = tmp_path / "run.resume.pt"
    state = fit(model, loss_fn, next_batch, config(max_cpu_seconds=1e-9), "cpu", resume_path=path, progress=False)
    assert state.step == 1 and state.cpu_time_s > 0  # any step takes more than a nanosecond of CPU time
    saved = checkpoint.load(path)
    assert saved["step"] == 1 and saved["cpu_time_s"] == state.cpu_time_s
    model, loss_fn, next_batch = tiny_task()  # resumed without the budget: it finishes, the CPU clock counting on
    resumed = fit(model, loss_fn, next_batch, config(), "cpu", resume_path=path, resume=True, progress=False)
    assert resumed.step == 40 and resumed.cpu_time_s > state.cpu_time_s
    model, loss_fn, next_batch = tiny_task()
    straight = fit(model, loss_fn, next_batch, config(steps=1), "cpu", progress=False)
    assert torch.equal(weights(state.model), weights(straight.model))  # the same first step (the schedule differs later)
    for bad in (0.0, -5.0):
        with pytest.raises(ValueError, match="max_cpu_seconds"):
            fit(model, loss_fn, next_batch, config(max_cpu_seconds=bad), "cpu", progress=False)
