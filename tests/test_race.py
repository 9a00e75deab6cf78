"""The time-to-quality race (`minilineage bench --race`): the diffusers contestant is the size of ddpm-mnist
and trains with diffusers' recommended settings, guided sampling mixes as ours does, and a tiny race runs
both contestants end to end. No timing is asserted. Skips when diffusers (the `bench` extra) is absent."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from minilineage import bench, cli
from minilineage.bench import race
from minilineage.recipes import get_recipe

pytest.importorskip("diffusers", reason="the race's diffusers contestant needs the `bench` extra")


def test_the_diffusers_contestant_has_ddpm_mnists_parameter_count_within_two_percent():
    ours = get_recipe("ddpm-mnist").build().net
    theirs = race.reference_network()
    n_ours, n_theirs = (sum(p.numel() for p in m.parameters()) for m in (ours, theirs))
    assert abs(n_theirs / n_ours - 1) < 0.02
    assert theirs(torch.randn(2, 1, 28, 28), torch.tensor([1, 999]), torch.tensor([3, 10])).shape == (2, 1, 28, 28)


def test_the_diffusers_trainer_uses_the_recommended_optimizer_schedule_and_ema():
    r = race.DIFFUSERS_RECOMMENDED
    trainer = race.DiffusersTrainer(steps=2000)
    group = trainer.optimizer.param_groups[0]
    assert group["betas"] == (r["adam_beta1"], r["adam_beta2"]) and group["weight_decay"] == r["adam_weight_decay"]
    assert group["eps"] == r["adam_epsilon"]
    lrs = []
    for _ in range(2000):  # the schedule alone: warm-up to 1e-4 over 500 steps, then cosine to 0
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.optimizer.step(), trainer.lr.step()
    assert lrs[0] == 0 and lrs[250] == pytest.approx(0.5 * r["learning_rate"])
    assert lrs[500] == pytest.approx(r["learning_rate"]) and lrs[1250] == pytest.approx(0.5 * r["learning_rate"])
    assert lrs[-1] < 1e-9
    # EMA warm-up: decay 1 - (1 + k / inv_gamma)^-power, capped at 0.9999; EMAModel's k at update 1,000 is 999
    assert trainer.ema.get_decay(1000) == pytest.approx(1 - (1 + 999) ** -0.75)
    assert trainer.ema.get_decay(10**9) == pytest.approx(r["ema_max_decay"])
    assert trainer.scheduler.config.beta_schedule == "linear" and trainer.scheduler.config.num_train_timesteps == 1000


def test_a_training_step_drops_labels_to_the_null_row_at_p_uncond(monkeypatch):
    trainer = race.DiffusersTrainer(steps=10)
    seen = []
    forward = trainer.net.forward
    monkeypatch.setattr(trainer.net, "forward", lambda x, t, y: seen.append(y.clone()) or forward(x, t, y))
    losses = [trainer.step(p_uncond=0.5) for _ in range(20)]
    y = torch.cat(seen)
    assert trainer.classes == 10 and set(y.tolist()) <= set(range(11))
    assert 0.3 < (y == 10).float().mean() < 0.7  # 320 labels, about half dropped
    assert all(math.isfinite(v) for v in losses)


class LabelEcho(nn.Module):
    """eps = 0.01 * y everywhere: guided sampling must mix the conditional and null halves as ours does."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, y):
        return 0.01 * y.float().view(-1, 1, 1, 1).expand_as(x) + 0 * self.unused


class MixedEcho(LabelEcho):
    """What guidance 3 should make of LabelEcho with null label 10: eps_u + 3 (eps_c - eps_u)."""

    def forward(self, x, t, y):
        return 0.01 * (10 + 3 * (y.float() - 10)).view(-1, 1, 1, 1).expand_as(x)


def test_guided_diffusers_sampling_is_eps_uncond_plus_scale_times_the_difference():
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000)
    labels = torch.tensor([0, 4, 9])
    guided = bench.diffusers_sample(LabelEcho(), scheduler, labels, (1, 4, 4), torch.Generator().manual_seed(0),
                                    steps=5, guidance=3.0, null_label=10)
    expected = bench.diffusers_sample(MixedEcho(), scheduler, labels, (1, 4, 4), torch.Generator().manual_seed(0),
                                      steps=5, guidance=1.0)
    torch.testing.assert_close(guided, expected)
    with pytest.raises(ValueError, match="null_label"):
        bench.diffusers_sample(LabelEcho(), scheduler, labels, (1, 4, 4), torch.Generator(), steps=2, guidance=2.0)


def test_a_tiny_race_trains_samples_and_scores_both_contestants(monkeypatch, tmp_path):
    monkeypatch.setattr(race, "PROBE_STEPS", 2)
    monkeypatch.setattr(race, "steps_for", lambda budget, seconds_per_step: 10**6)  # a far too optimistic probe
    out = tmp_path / "race.json"
    result = race.run_race((0.02,), n=10, json_path=out, sampling={"steps": 3, "guidance": 2.0})
    assert json.loads(out.read_text()) == result
    ours, theirs = result["rows"]
    assert (ours["contestant"], theirs["contestant"]) == ("ddpm-mnist", "diffusers UNet2DModel")
    assert ours["batch_size"] == get_recipe("ddpm-mnist").presets["cpu"].train.batch_size
    assert theirs["batch_size"] == race.DIFFUSERS_RECOMMENDED["train_batch_size"]
    for row in (ours, theirs):
        assert row["budget_min"] == 0.02 and 1 <= row["steps"] < row["planned_steps"] == 10**6  # stopped at the budget
        assert row["n"] == 10
        assert 0 <= row["accuracy"] <= 1 and row["fid_lenet"] > 0 and row["real_floor"] > 0
    assert abs(theirs["parameters"] / ours["parameters"] - 1) < 0.02
    assert result["sampling"] == {"steps": 3, "guidance": 2.0, "sampler": "DDIM", "n": 10}


def test_cli_race_reaches_the_race_and_refuses_a_non_positive_budget(monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(bench, "run_race", lambda budgets, **kwargs: seen.update(budgets=budgets, **kwargs))
    cli.main(["bench", "--race", "2", "5", "10", "--race-samples", "500", "--json", "race.json"])
    assert seen == {"budgets": (2.0, 5.0, 10.0), "n": 500, "json_path": "race.json"}
    with pytest.raises(SystemExit):
        cli.main(["bench", "--race", "0"])
    assert "must be a positive number" in capsys.readouterr().err


def test_steps_for_a_budget_fill_it_and_are_at_least_one():
    assert race.steps_for(120, 0.4) == 300 and race.steps_for(1, 5.0) == 1
