"""The UCF-101 recipes end to end on a few tiny videos in the official layout: both trained for two steps
through `train_recipe`, as `minilineage train` runs them, then sampled by class from the command line."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
from tiny import write_layout

from minilineage import cli
from minilineage.recipes import RECIPES, train_recipe


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """vae3d-ucf101, then videodit-ucf101 on its latents, trained in one folder as the README's commands do."""
    root = tmp_path_factory.mktemp("ucf")
    patch = pytest.MonkeyPatch()
    patch.setenv("MINILINEAGE_DATA", str(root / "data"))  # the loader's default root is $MINILINEAGE_DATA/ucf101
    write_layout(root / "data" / "ucf101")
    out = root / "runs"
    vae = train_recipe("vae3d-ucf101", steps=2, out=out, device="cpu", progress=False)
    dit = train_recipe("videodit-ucf101", steps=2, out=out, device="cpu", progress=False, evaluate=False)
    yield vae, dit, out
    patch.undo()


def test_the_ucf_vae_takes_17_frames_of_48_by_64_and_reports_reconstruction(runs):
    vae, _, _ = runs
    assert vae.model.latent_shape == (5, 8, 12, 16)  # 17 = 1 + 4 * 4 frames -> 5; 48 x 64 -> 12 x 16
    assert set(vae.record["metrics"]) == {"mse", "psnr", "flicker"}


def test_the_ucf_video_dit_is_class_conditional_on_the_vaes_latents(runs):
    _, dit, out = runs
    pipe = dit.model
    assert pipe.config.shape == (5, 8, 12, 16) and pipe.net.config.num_classes == 101
    assert pipe.sample_options == ("labels", "guidance", "steps")
    assert (out / "videodit-ucf101.json").exists()


def test_sampling_by_class_in_every_mode_from_the_command_line(runs, capsys):
    _, _, out = runs
    ckpt, clips = str(out / "videodit-ucf101.pt"), str(out / "v.npz")
    base = ["sample", ckpt, "--steps", "2", "--device", "cpu"]
    cli.main([*base, "--labels", "1,2", "--n", "2", "--out", clips])
    saved = np.load(clips)
    assert saved["images"].shape == (2, 17, 3, 48, 64) and saved["labels"].tolist() == [1, 2]
    cli.main([*base, "--mode", "i2v", "--init-video", clips, "--labels", "0", "--out", str(out / "i2v.npz")])
    assert np.load(out / "i2v.npz")["images"].shape == (2, 17, 3, 48, 64)  # non-square frames, 3:4
    cli.main([*base, "--mode", "extend", "--init-video", clips, "--windows", "1", "--out", str(out / "long.npz")])
    assert np.load(out / "long.npz")["images"].shape == (2, 29, 3, 48, 64)  # + 3 latent frames = 12 frames
    with pytest.raises(SystemExit):
        cli.main([*base, "--labels", "101", "--n", "1", "--out", str(out / "bad.npz")])
    assert "classes 0..100" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([*base, "--prompt", "a video of yo yo", "--n", "1", "--out", str(out / "bad.npz")])
    assert "--labels" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["vae3d-ucf101", "videodit-ucf101"])
def test_the_gpu_presets_train_a_step_at_full_model_size(name, runs, monkeypatch, tmp_path):
    """The GPU presets' full-size networks on the same videos, one step at batch 2 (their batches take minutes here)."""
    _, _, out = runs
    recipe = RECIPES[name]
    monkeypatch.setattr(recipe, "evaluate", None)
    preset = recipe.presets["gpu"]
    monkeypatch.setitem(recipe.presets, "gpu", replace(preset, train=replace(preset.train, batch_size=2)))
    folder = tmp_path  # a test's own folder, deleted when it passes: these checkpoints are 0.65 GB
    if name.startswith("videodit"):
        shutil.copy(out / "vae3d-ucf101.pt", folder)  # its part: the smoke run's VAE will do
    result = train_recipe(name, preset="gpu", steps=1, out=folder, device="cpu", progress=False)
    assert result.record["step"] == 1 and result.record["dataset"] == "ucf101"
    width = result.model.net.config.width if name.startswith("videodit") else result.model.config.width
    assert width == (384 if name.startswith("videodit") else 64)  # the preset's model size reached the model
