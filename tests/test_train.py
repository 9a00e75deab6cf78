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
    with pytest.raises(TrainingDiverged, match="step 15.*last good checkpoint"):
        fit(model, exploding, next_batch, config(), "cpu", resume_path=path, progress=False, callbacks=(poison_after,))
    kept = checkpoint.load(path)
    assert kept["step"] == 10
    assert all(torch.isfinite(v).all() for v in kept["model"].values())


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
