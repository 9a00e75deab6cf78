"""ddpm-mnist-fast and its speed study (chapter 3, section 14): each run changes what it says and nothing else."""

import math
from dataclasses import asdict

import pytest
import torch

from minilineage.recipes import get_recipe, speed, train_recipe
from minilineage.recipes.speed import GUIDANCE_FAST, SPEED_STUDY, eval_two_guidances

TODAY = get_recipe("ddpm-mnist")


def differences(name: str) -> tuple[dict, dict]:
    """What the run's CPU training and model config change against ddpm-mnist's."""
    recipe = get_recipe(name)
    ours, theirs = asdict(recipe.presets["cpu"].train), asdict(TODAY.presets["cpu"].train)
    train = {k: v for k, v in ours.items() if theirs[k] != v}
    ours_model, theirs_model = asdict(recipe.config()), asdict(TODAY.config())
    model = {k: v for k, v in ours_model.items() if theirs_model[k] != v}
    assert recipe.presets["cpu"].dataset == TODAY.presets["cpu"].dataset == "mnist-5k"
    return train, model


def test_each_study_run_adds_its_change_to_the_one_before():
    assert SPEED_STUDY == ("ddpm-speed-cut", "ddpm-speed-minsnr", "ddpm-mnist-fast")
    guided = {"guidance": GUIDANCE_FAST}
    assert differences("ddpm-speed-cut") == ({"steps": 2000}, guided)
    assert differences("ddpm-speed-minsnr") == ({"steps": 2000}, {**guided, "objective": "eps-min-snr"})
    assert differences("ddpm-mnist-fast") == (
        {"steps": 3600, "batch_size": 64, "warmup_steps": 100, "channels_last": True},
        {**guided, "objective": "eps-min-snr"})
    for name in SPEED_STUDY:  # the network, the noise schedule and the sampler are ddpm-mnist's
        ours, theirs = get_recipe(name).config(), TODAY.config()
        assert (ours.denoiser, ours.schedule, ours.T, ours.sample_steps) == (theirs.denoiser, theirs.schedule, theirs.T,
                                                                            theirs.sample_steps)


def test_the_fast_recipe_sees_at_most_40_percent_of_todays_images():
    fast, today = get_recipe("ddpm-mnist-fast").presets["cpu"].train, TODAY.presets["cpu"].train
    assert fast.steps * fast.batch_size <= 0.4 * today.steps * today.batch_size


def test_eval_two_guidances_scores_at_the_models_guidance_and_at_2(monkeypatch):
    calls = []

    def fake(model, device, n=1000, guidance=None):
        calls.append(guidance)
        return {"guidance": model.config.guidance if guidance is None else guidance, "n": n}

    monkeypatch.setattr(speed, "eval_digit_samples", fake)
    model = get_recipe("ddpm-mnist-fast").build()
    scores = eval_two_guidances(model, torch.device("cpu"), n=10)
    assert calls == [None, 2.0] and scores["guidance"] == GUIDANCE_FAST and scores["at_guidance_2"]["guidance"] == 2.0
    calls.clear()
    assert "at_guidance_2" not in eval_two_guidances(TODAY.build(), torch.device("cpu"), n=10) and calls == [None]


@pytest.mark.parametrize("name", SPEED_STUDY)
def test_the_study_runs_train_a_few_steps(name):
    record = train_recipe(name, steps=3, out=None, progress=False, evaluate=False).record
    assert record["step"] == 3 and math.isfinite(record["history"][-1][1])
    assert record["model_config"]["objective"] == get_recipe(name).model_config["objective"]
