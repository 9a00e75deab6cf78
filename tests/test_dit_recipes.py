"""Chapter 6's recipes: every DiT recipe builds, the studies differ only where they should, their records are read
back or refused by name, and the step sweep scores the same starting noise at every number of steps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import minilineage.recipes.dit as dit_recipes
from minilineage.diffusion import DiffusionPipeline, PipelineConfig
from minilineage.models import MODELS
from minilineage.recipes import RECIPES, get_recipe
from minilineage.recipes.dit import (
    CONDITIONING,
    SCALING_PATCHES,
    SCALING_SIZES,
    eval_quick,
    eval_with_steps,
    study_records,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest


def denoiser(name: str) -> dict:
    return RECIPES[name].model_config["denoiser"]


def test_every_dit_recipe_has_a_cpu_and_a_gpu_preset_and_a_known_denoiser():
    names = [n for n in RECIPES if n.startswith("dit-")]
    assert {"dit-mnist", "dit-mnist-flow", "dit-mnist-latent", "dit-cifar10"} <= set(names)
    for name in names:
        assert set(RECIPES[name].presets) == {"cpu", "gpu"}, name
        assert denoiser(name)["cls"] in MODELS, name


def test_the_flow_recipe_is_the_v_recipe_with_only_the_objective_changed():
    v, flow = RECIPES["dit-mnist"], RECIPES["dit-mnist-flow"]
    assert v.model_config["objective"] == "v" and flow.model_config["objective"] == "flow"
    assert {**flow.model_config, "objective": "v"} == v.model_config
    assert flow.presets == v.presets and flow.parts == v.parts == {}  # pixels, no autoencoder
    assert RECIPES["dit-mnist-latent"].parts == {"autoencoder": "latent-vae-mnist"}


def test_the_objective_study_is_dit_mnist_with_only_the_objective_steps_and_guidance_changed():
    configs = {o: RECIPES[f"dit-obj-{o}"].model_config for o in dit_recipes.OBJECTIVES}
    assert [c["objective"] for c in configs.values()] == ["eps", "v", "flow"]
    main = RECIPES["dit-mnist"].model_config
    assert main["guidance"] == dit_recipes.MAIN_GUIDANCE and all(c["guidance"] == 2.0 for c in configs.values())
    assert all({**c, "objective": "v", "guidance": main["guidance"]} == main for c in configs.values())
    trains = [RECIPES[f"dit-obj-{o}"].presets["cpu"].train for o in dit_recipes.OBJECTIVES]
    assert all(train == trains[0] for train in trains) and trains[0].batch_size == RECIPES["dit-mnist"].presets["cpu"].train.batch_size


def test_the_scaling_study_varies_only_size_and_patch():
    configs = {(s, p): denoiser(f"dit-scale-{s}{p}")["config"] for s in SCALING_SIZES for p in SCALING_PATCHES}
    assert len(configs) == 6
    trains = [RECIPES[f"dit-scale-{s}{p}"].presets["cpu"].train for s, p in configs]
    assert all(train == trains[0] for train in trains)  # one training setting for all six
    for (size, p), config in configs.items():
        assert (config["width"], config["depth"], config["patch"]) == (dit_recipes.DIT_SIZES[size]["width"],
                                                                        dit_recipes.DIT_SIZES[size]["depth"], p)


def test_the_conditioning_study_varies_only_the_denoiser_class():
    configs = [denoiser(f"dit-cond-{v}") for v in CONDITIONING]
    assert [c["cls"] for c in configs] == ["InContextDiT", "CrossAttentionDiT", "AdaLNDiT", "DiT"]
    assert all(c["config"] == configs[0]["config"] for c in configs)


def test_a_cifar10_dit_takes_32x32_colour_images_in_256_tokens():
    model = DiffusionPipeline(get_recipe("dit-cifar10").config("gpu"))
    assert model.config.shape == (3, 32, 32) and model.net.config.width == 384
    out = model.net(torch.zeros(1, 3, 32, 32), torch.tensor([5]), y=torch.tensor([2]))
    assert out.shape == (1, 3, 32, 32) and (32 // model.net.config.patch) ** 2 == 256


def test_study_records_reads_the_stored_sidecars_and_names_the_missing_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(dit_recipes, "CHECKPOINT_DIR", tmp_path)
    (tmp_path / "dit-scale-XS4.json").write_text(json.dumps({"command": "minilineage train dit-scale-XS4", "step": 3}))
    assert study_records(["dit-scale-XS4"]) == {"dit-scale-XS4": {"command": "minilineage train dit-scale-XS4", "step": 3}}
    with pytest.raises(FileNotFoundError, match="dit-scale-S7, dit-cond-cross.*retrain=True"):
        study_records(["dit-scale-XS4", "dit-scale-S7", "dit-cond-cross"])


def tiny_pipeline(objective: str) -> DiffusionPipeline:
    torch.manual_seed(0)
    config = PipelineConfig(denoiser={"cls": "DiT", "config": {"in_channels": 1, "patch": 7, "width": 16, "depth": 1,
                                                               "heads": 2, "num_classes": 10}},
                            shape=(1, 28, 28), objective=objective, sample_steps=2)
    model = DiffusionPipeline(config)
    with torch.no_grad():
        model.net.final.linear.weight.normal_(0, 0.5)  # a model that is not zero, so its samples differ by steps
    return model


@pytest.mark.parametrize("objective", ["eps", "v", "flow"])
def test_the_step_sweep_scores_the_same_starting_noise_at_every_number_of_steps(monkeypatch, objective):
    monkeypatch.setattr(dit_recipes, "SWEEP_STEPS", (1,))
    # FID-LeNet takes seconds per call; a fingerprint of the images is enough to tell which images were scored
    monkeypatch.setattr(dit_recipes, "evaluate_samples",
                        lambda images, labels: {"n": len(images), "fid_lenet": images.double().mul(torch.arange(
                            images[0].numel(), dtype=torch.double).reshape(images.shape[1:])).sum().item()})
    model, cpu = tiny_pipeline(objective), torch.device("cpu")
    scores = eval_with_steps(model, cpu, n=80, n_sweep=40)
    assert scores["n"] == 80 and set(scores["by_steps"]) == {"1", "2"} and scores["by_steps"]["1"]["n"] == 40
    # the "2" entry scores the first half of the 80 samples: the same 40 that eval_quick draws at 2 steps
    assert scores["by_steps"]["2"]["fid_lenet"] == eval_quick(model, cpu, n=40, steps=2)["fid_lenet"]
    assert scores["by_steps"]["1"]["fid_lenet"] != scores["by_steps"]["2"]["fid_lenet"]


@pytest.mark.parametrize("name", ["dit-mnist", "dit-mnist-flow"])
def test_the_cli_samples_a_dit_checkpoint_as_uint8_digits_with_their_labels(tmp_path, name):
    from minilineage import cli
    from minilineage.recipes import train_recipe

    train_recipe(name, steps=1, out=tmp_path, device="cpu", progress=False, evaluate=False)
    cli.main(["sample", str(tmp_path / f"{name}.pt"), "--n", "12", "--labels", "0-9", "--steps", "2",
              "--out", str(tmp_path / "x.npz")])
    with np.load(tmp_path / "x.npz") as samples:
        assert samples["images"].shape == (12, 1, 28, 28) and samples["images"].dtype == np.uint8
        assert samples["labels"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
