"""The GPU presets, exercised on a CPU: each trains a step on the full-dataset path they name."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from minilineage.checkpoint import load_model
from minilineage.data import load_dataset
from minilineage.recipes import RECIPES, train_recipe

GPU_RECIPES = sorted(name for name, r in RECIPES.items() if "gpu" in r.presets)
# Chapter 7's recipes train on generated moving-mnist clips in both presets (tests/test_video_figures.py checks them).
VIDEO_RECIPES = {name for name, r in RECIPES.items() if r.presets["cpu"].dataset == "moving-mnist"}
# The CIFAR-10 recipes are GPU recipes; their CPU preset is a smoke run on the same (downloaded) dataset.
CIFAR_RECIPES = sorted(name for name, r in RECIPES.items() if r.presets["cpu"].dataset == "cifar10")
# So are the UCF-101 ones (tests/test_video_ucf.py trains both presets on a few videos the test writes).
UCF_RECIPES = {name for name, r in RECIPES.items() if r.presets["cpu"].dataset == "ucf101"}


def test_every_recipe_has_a_cpu_and_a_gpu_preset():
    assert GPU_RECIPES == sorted(RECIPES)
    assert UCF_RECIPES == {"vae3d-ucf101", "videodit-ucf101"}
    assert all(r.presets["cpu"].dataset == "mnist-5k" for name, r in RECIPES.items()
               if name not in VIDEO_RECIPES | set(CIFAR_RECIPES) | UCF_RECIPES)


def assert_contains(config: dict, overrides: dict) -> None:
    """Every (nested) key of `overrides` has its value in `config` (tuples may come back as lists)."""
    for key, value in overrides.items():
        if isinstance(value, dict):
            assert_contains(config[key], value)
        else:
            assert list(config[key]) == list(value) if isinstance(value, tuple) else config[key] == value, key


@pytest.fixture
def mnist_on_disk(tmp_path, monkeypatch, write_mnist_files):
    """The full-MNIST files the GPU presets read, holding 64 real digits, in MNIST's own format."""
    digits = load_dataset("mnist-5k", "train")
    write_mnist_files(tmp_path, "MNIST", digits.images[:64, 0].numpy(), digits.labels[:64].numpy())
    monkeypatch.setenv("MINILINEAGE_DATA", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("name", [n for n in GPU_RECIPES
                                  if not n.startswith(("ae-mnist-z", "vae-mnist-")) and n not in VIDEO_RECIPES | set(CIFAR_RECIPES) | UCF_RECIPES])
def test_gpu_preset_trains_a_step_on_full_mnist_files(name, mnist_on_disk, monkeypatch):
    recipe = RECIPES[name]
    monkeypatch.setattr(recipe, "evaluate", None)  # its sampling-based figures are for real runs, not one step
    preset = recipe.presets["gpu"]
    result = train_recipe(name, preset="gpu", steps=1, out=mnist_on_disk / "runs", device="cpu",
                          progress=False)
    record = result.record
    assert record["preset"] == "gpu" and record["dataset"] == preset.dataset == "mnist"
    assert record["step"] == 1 and record["train_config"]["batch_size"] == preset.train.batch_size
    assert math.isfinite(record["history"][-1][1])
    assert_contains(record["model_config"], preset.model)  # the preset's model overrides reached the model
    reloaded = load_model(str(result.path))
    assert sum(p.numel() for p in reloaded.parameters()) == record["parameters"]


@pytest.mark.parametrize("name", CIFAR_RECIPES)
def test_cifar10_gpu_preset_trains_a_step_on_cifar10_files(name, tmp_path, monkeypatch, write_cifar_files):
    """The full-size network and the CIFAR-10 path of the GPU preset, at batch 4 (a step at 256 takes minutes on a CPU)."""
    pixels = np.random.default_rng(0).integers(0, 256, (8, 3 * 32 * 32)).astype(np.uint8)
    write_cifar_files(tmp_path, pixels, [0, 1, 2, 3, 4, 5, 6, 7])
    monkeypatch.setenv("MINILINEAGE_DATA", str(tmp_path))
    recipe = RECIPES[name]
    monkeypatch.setattr(recipe, "evaluate", None)
    preset = recipe.presets["gpu"]
    monkeypatch.setitem(recipe.presets, "gpu", replace(preset, train=replace(preset.train, batch_size=4)))
    result = train_recipe(name, preset="gpu", steps=1, out=tmp_path / "runs", device="cpu", progress=False)
    record = result.record
    assert record["dataset"] == "cifar10" and record["step"] == 1 and math.isfinite(record["history"][-1][1])
    assert_contains(record["model_config"], preset.model)
    assert record["parameters"] == sum(q.numel() for q in recipe.build("gpu").parameters())


def test_ldm_starts_from_the_latent_vae_trained_in_its_own_run_folder(tmp_path):
    own = train_recipe("latent-vae-mnist", steps=1, out=tmp_path, device="cpu", progress=False).model
    shipped = load_model("latent-vae-mnist")
    ldm = RECIPES["ldm-mnist"]
    for model, expected in ((ldm.build("cpu", tmp_path), own), (ldm.build("cpu"), shipped)):
        weights = model.autoencoder.state_dict()
        assert all(torch.equal(weights[k], v) for k, v in expected.state_dict().items())
