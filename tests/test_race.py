"""The time-to-quality race (`minilineage bench --race`): the diffusers contestants are the size of ddpm-mnist,
one trains with diffusers' recommended settings and one with ddpm-mnist's own (optimiser, learning-rate
schedule, EMA, noise schedule, batch, p_uncond), guided sampling mixes as ours does, and a tiny race runs
all four contestants end to end on one thread, each stopped at the same CPU-time budget. No timing is
asserted. Skips when diffusers (the `bench` extra) is absent."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
from torch import nn

from minilineage import bench, cli
from minilineage.bench import race
from minilineage.recipes import get_recipe
from minilineage.train import EMA

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


def test_the_contestant_with_our_settings_trains_with_ddpm_mnists_optimizer_batch_and_lr_schedule():
    train = get_recipe("ddpm-mnist").presets["cpu"].train
    settings = race.ddpm_mnist_settings()
    assert (settings["train_batch_size"], settings["learning_rate"], settings["lr_warmup_steps"]) == (128, 2e-3, 200)
    assert (train.batch_size, train.lr, train.warmup_steps, train.grad_clip) == (128, 2e-3, 200, settings["max_grad_norm"])
    trainer = race.DiffusersTrainer(steps=5000, settings=settings)
    fit_optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=train.lr, weight_decay=train.weight_decay)
    ours, theirs = fit_optimizer.param_groups[0], trainer.optimizer.param_groups[0]
    assert theirs["initial_lr"] == ours["lr"]  # (its "lr" is already the first step's, of the warm-up)
    for key in ("betas", "eps", "weight_decay", "amsgrad"):  # AdamW as `fit` builds it for the recipe
        assert theirs[key] == ours[key], key
    lrs = []
    for _ in range(5000):  # linear warm-up over 200 steps, then cosine from 2e-3 down to 10 % of it
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.optimizer.step(), trainer.lr.step()
    assert lrs[0] == pytest.approx(2e-3 / 200) and lrs[199] == pytest.approx(2e-3) == lrs[200]
    assert lrs[2600] == pytest.approx(2e-3 * (0.1 + 0.9 * 0.5)) and lrs[-1] == pytest.approx(2e-4, rel=1e-5)


def test_the_contestant_with_our_settings_averages_weights_as_our_ema_does():
    trainer = race.DiffusersTrainer(steps=10, settings=race.ddpm_mnist_settings())
    decay = get_recipe("ddpm-mnist").presets["cpu"].train.ema_decay
    assert decay == 0.999
    # EMAModel's update number k + 1 uses what our EMA uses at step k, min(decay, (1 + k) / (10 + k)), except
    # at k = 0, where it copies the weights (0) and ours keeps a tenth of the initial ones (0.1)
    assert [trainer.ema.get_decay(k + 1) for k in (0, 1, 100, 10**6)] == [0.0, 2 / 11, 101 / 110, 0.999]
    ema = EMA(nn.Linear(1, 1), decay)
    ours = []
    for k in (1, 100, 10**6):  # read back the factor our EMA applied: ema <- d ema + (1 - d) p, from 0 towards 1
        with torch.no_grad():
            ema.model.weight.fill_(0.0)
        model = nn.Linear(1, 1)
        with torch.no_grad():
            model.weight.fill_(1.0)
        ema.update(model, k)
        ours.append(1 - ema.model.weight.item())
    assert ours == pytest.approx([trainer.ema.get_decay(k + 1) for k in (1, 100, 10**6)], rel=1e-6)


def test_the_contestant_with_our_settings_noises_and_samples_on_ddpm_mnists_schedule():
    from diffusers import DDIMScheduler

    from minilineage.diffusion.samplers import ddim_timesteps

    ours = get_recipe("ddpm-mnist").build().sched.alpha_bar.double()
    theirs = race.DiffusersTrainer(steps=10, settings=race.ddpm_mnist_settings()).scheduler
    torch.testing.assert_close(theirs.alphas_cumprod.double(), ours, atol=1e-6, rtol=0)  # the cosine schedule
    recommended = race.DiffusersTrainer(steps=10).scheduler
    assert (recommended.alphas_cumprod.double() - ours).abs().max() > 0.1  # its linear betas are another schedule
    ddim = DDIMScheduler.from_config(theirs.config)  # what `diffusers_sample` steps with
    ddim.set_timesteps(50)
    assert torch.equal(ddim.timesteps, ddim_timesteps(1000, 50)) and ddim.config.clip_sample


def test_a_tiny_race_trains_samples_and_scores_all_four_contestants(monkeypatch, tmp_path, one_thread):
    torch.set_num_threads(2)  # the race sets one thread itself (one_thread restores the test session's afterwards)
    probed, scored = [], []
    monkeypatch.setattr(race, "probe_recipe", lambda name: probed.append(name) or 1.0)
    monkeypatch.setattr(race, "probe_diffusers", lambda settings, p: probed.append(settings["train_batch_size"]) or 1.0)
    monkeypatch.setattr(race, "steps_for", lambda budget, seconds_per_step: 10**6)  # a far too optimistic probe
    real = race.evaluate_samples

    def evaluate(images, labels):  # the real scores once (their keys), then cheap stand-ins that tell the calls apart
        assert images.dtype == torch.uint8 and images.shape == (10, 1, 28, 28) and torch.equal(labels, torch.arange(10))
        scored.append(real(images, labels) if not scored else {**scored[0], "fid_lenet": 100.0 + len(scored)})
        return scored[-1]

    monkeypatch.setattr(race, "evaluate_samples", evaluate)
    out = tmp_path / "race.json"
    result = race.run_race((0.02,), n=10, json_path=out, sampling={"steps": 3, "guidance": 2.0})
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert probed == ["ddpm-mnist", 128, 16, "ddpm-mnist-fast"]
    assert [r["contestant"] for r in result["rows"]] == [
        "ddpm-mnist", "diffusers-ddpm-mnist-settings", "diffusers-recommended", "ddpm-mnist-fast"]
    ours, with_ours, recommended, fast = result["rows"]
    assert [r["batch_size"] for r in result["rows"]] == [128, 128, 16, 64]  # the recipes' and diffusers' example's
    assert with_ours["parameters"] == recommended["parameters"] == result["reference_parameters"]
    assert abs(with_ours["parameters"] / ours["parameters"] - 1) < 0.02 and fast["parameters"] == ours["parameters"]
    for row in result["rows"]:
        assert row["budget_min"] == 0.02 and 1 <= row["steps"] < row["planned_steps"] == 10**6  # stopped at the budget
        assert row["cpu_time_s"] >= 0.02 * 60 and row["wall_time_s"] > 0 and row["probe_cpu_s_per_step"] == 1.0
        assert row["train_img_per_cpu_s"] == round(row["steps"] * row["batch_size"] / row["cpu_time_s"], 1)
        assert row["n"] == 10 and row["guidance"] == 2.0 and len(row["load_average_start"]) == len(row["load_average_end"]) == 3
        assert 0 <= row["accuracy"] <= 1 and row["real_floor"] > 0
    assert len(scored) == 5 and [r["fid_lenet"] for r in result["rows"][1:]] == [101.0, 102.0, 103.0]
    assert fast["at_own_guidance"]["guidance"] == 1.75 and fast["at_own_guidance"]["fid_lenet"] == 104.0
    assert "at_own_guidance" not in ours
    assert result["sampling"] == {"steps": 3, "guidance": 2.0, "sampler": "DDIM", "n": 10}
    assert {"cpu", "threads", "torch", "diffusers", "load_average_start", "load_average_end"} <= set(result)
    assert result["threads"] == torch.get_num_threads() == 1 and "process_time" in result["budget_clock"]
    assert result["settings"]["ddpm-mnist's"]["learning_rate"] == 2e-3


def test_every_contestant_stops_at_its_cpu_time_budget_not_the_wall_clocks(monkeypatch):
    readings = []  # a CPU clock that gains 20 s a reading, whatever the wall clock does
    monkeypatch.setattr(time, "process_time", lambda: readings.append(0) or 20.0 * len(readings))
    monkeypatch.setattr(race, "probe_recipe", lambda name: 0.01)
    monkeypatch.setattr(race, "probe_diffusers", lambda settings, p_uncond: 0.01)
    monkeypatch.setattr(race, "score", lambda sample, n: {})
    ours = race.race_recipe("ddpm-mnist", 30.0, 10, race.SAMPLING)  # fit reads the clock at its start and after each step
    theirs = race.race_diffusers(race.DIFFUSERS_RECOMMENDED, 30.0, 10, race.SAMPLING)  # the loop: before each step
    assert (ours["planned_steps"], ours["steps"], ours["cpu_time_s"]) == (3000, 2, 40.0)
    assert (theirs["planned_steps"], theirs["steps"], theirs["cpu_time_s"]) == (3000, 1, 60.0)


def test_the_probes_time_real_training_steps(monkeypatch):
    monkeypatch.setattr(race, "PROBE_STEPS", 1)
    assert 0 < race.probe_diffusers(race.DIFFUSERS_RECOMMENDED, 0.1) < 60
    assert 0 < race.probe_recipe("ddpm-mnist-fast") < 60


def test_the_race_tables_list_every_row_and_split_each_gap():
    def row(name, fid, accuracy, img_s):
        return {"budget_min": 5.0, "contestant": name, "network": "n", "settings": "s", "steps": 100, "planned_steps": 100,
                "batch_size": 128, "cpu_time_s": 300.2, "wall_time_s": 451.0, "train_img_per_cpu_s": img_s,
                "load_average_start": (2.5, 3.0, 3.1), "load_average_end": (3.25, 3.0, 3.0), "fid_lenet": fid,
                "real_floor": 37.7, "accuracy": accuracy}
    rows = [row("ddpm-mnist", 100.0, 0.6, 300.0), row("diffusers-ddpm-mnist-settings", 400.0, 0.2, 120.0),
            row("diffusers-recommended", 3000.0, 0.1, 130.0),
            {**row("ddpm-mnist-fast", 80.0, 0.7, 330.0), "at_own_guidance": {"guidance": 1.75, "fid_lenet": 60.0, "accuracy": 0.65}}]
    result = {"cpu": "a CPU", "threads": 2, "torch": "2", "diffusers": "0", "rows": rows,
              "sampling": {"steps": 50, "guidance": 2.0, "n": 1000}}
    text = race.race_tables(result)
    assert ("| 5 min | ddpm-mnist-fast | n | s | 100 × 128 | 300 | 451 | 2.5–3.2 | 330 | 80.0 (at 1.75: 60.0) "
            "| 70% (at 1.75: 65%) |") in text
    assert "| network and code (same recipe) | 100.0 vs 400.0 (4.00x) | 60% vs 20% | 2.50x |" in text
    assert "| recipe (same network and code) | 400.0 vs 3,000.0 (7.50x) | 20% vs 10% | 0.92x |" in text
    assert text.count("| 5 min |") == 7 and "real digits: 37.7" in text and "budget: CPU time" in text


def test_cli_race_reaches_the_race_and_refuses_a_non_positive_budget(monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(bench, "run_race", lambda budgets, **kwargs: seen.update(budgets=budgets, **kwargs))
    cli.main(["bench", "--race", "2", "5", "10", "20", "--race-samples", "500", "--json", "race.json"])
    assert seen == {"budgets": (2.0, 5.0, 10.0, 20.0), "n": 500, "json_path": "race.json"}
    with pytest.raises(SystemExit):
        cli.main(["bench", "--race", "0"])
    assert "must be a positive number" in capsys.readouterr().err


def test_steps_for_a_budget_fill_it_and_are_at_least_one():
    assert race.steps_for(120, 0.4) == 300 and race.steps_for(1, 5.0) == 1


def test_a_stopped_race_resumes_from_its_record_and_runs_only_the_missing_rows(tmp_path, one_thread):
    ran = []

    def stand_in(name):  # records which rows ran instead of training
        return lambda budget_s, n, sampling: ran.append((budget_s / 60, name)) or {
            "steps": 1, "planned_steps": 1, "batch_size": 2, "cpu_time_s": 1.0, "wall_time_s": 1.0,
            "fid_lenet": 1.0, "real_floor": 1.0, "accuracy": 0.5}

    contestants = tuple(race.Contestant(c.name, c.network, c.settings, stand_in(c.name)) for c in race.CONTESTANTS[:2])
    out = tmp_path / "race.json"
    sampling = {"steps": 3, "guidance": 2.0}
    first = race.run_race((1.0,), n=10, json_path=out, sampling=sampling, contestants=contestants[:1])
    assert ran == [(1.0, "ddpm-mnist")] and len(first["rows"]) == 1
    with pytest.raises(ValueError, match="sampled or contested differently"):  # another race's record is not mixed in
        race.run_race((1.0,), n=10, json_path=out, sampling=sampling, contestants=contestants)
    ran.clear()
    again = race.run_race((1.0, 2.0), n=10, json_path=out, sampling=sampling, contestants=contestants[:1])
    assert ran == [(2.0, "ddpm-mnist")]  # the 1-minute row was kept, not rerun
    assert [r["budget_min"] for r in again["rows"]] == [1.0, 2.0] and again["started"] == first["started"]
    assert len(again["resumed"]) == 1 and json.loads(out.read_text())["rows"] == json.loads(json.dumps(again["rows"]))
    with pytest.raises(ValueError, match="sampled or contested differently"):
        race.run_race((1.0,), n=20, json_path=out, sampling=sampling, contestants=contestants[:1])
