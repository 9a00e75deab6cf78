import subprocess
import sys

import numpy as np
import pytest
import torch

from minilineage import cli
from minilineage.recipes import RECIPES, load_model, train_recipe


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "minilineage.cli", *args], capture_output=True, text=True)


def test_every_command_has_help():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"train", "sample", "recipes", "eval", "bench"} <= set(commands)
    for name, sub in commands.items():
        text = sub.format_help()
        assert name in text and "usage" in text
        for action in sub._actions:
            assert action.help, f"`{name}` option {action.option_strings or action.dest} has no help"


def test_unknown_recipe_lists_the_recipes():
    result = run_cli("train", "nope")
    assert result.returncode == 2
    assert "unknown recipe 'nope'" in result.stderr
    assert all(name in result.stderr for name in RECIPES)


def test_train_writes_a_checkpoint_with_its_record_and_sample_reads_it(tmp_path, monkeypatch, capsys):
    cli.main(["train", "ae-mnist", "--steps", "3", "--out", str(tmp_path), "--device", "cpu"])
    ckpt = torch.load(tmp_path / "ae-mnist.pt", weights_only=False)
    for key in ("recipe", "model_config", "step", "seed", "wall_time_s", "device", "train_config", "metrics"):
        assert key in ckpt
    assert ckpt["step"] == 3 and ckpt["recipe"] == "ae-mnist" and "test_mse" in ckpt["metrics"]
    assert (tmp_path / "ae-mnist.json").exists()
    cli.main(["sample", str(tmp_path / "ae-mnist.pt"), "--n", "5", "--out", str(tmp_path / "s.npz")])
    images = np.load(tmp_path / "s.npz")["images"]
    assert images.shape == (5, 1, 28, 28) and images.dtype == np.uint8
    cli.main(["sample", str(tmp_path / "ae-mnist.pt"), "--n", "4", "--out", str(tmp_path / "s.png")])
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_train_keep_every_writes_loadable_snapshots(tmp_path):
    cli.main(["train", "ae-mnist", "--steps", "4", "--keep-every", "2", "--out", str(tmp_path), "--device", "cpu"])
    assert sorted(p.name for p in tmp_path.glob("ae-mnist-step*.pt")) == ["ae-mnist-step2.pt", "ae-mnist-step4.pt"]
    final = torch.load(tmp_path / "ae-mnist.pt", weights_only=False)["model"]
    last = torch.load(tmp_path / "ae-mnist-step4.pt", weights_only=False)["model"]
    assert all(torch.equal(final[k], last[k]) for k in final)
    cli.main(["sample", str(tmp_path / "ae-mnist-step2.pt"), "--n", "2", "--out", str(tmp_path / "s.npz")])
    assert np.load(tmp_path / "s.npz")["images"].shape == (2, 1, 28, 28)


def test_sample_rejects_options_the_model_does_not_take(tmp_path):
    train_recipe("ae-mnist", steps=1, out=tmp_path, progress=False, plot=False)
    with pytest.raises(SystemExit, match="--labels"):
        cli.main(["sample", str(tmp_path / "ae-mnist.pt"), "--n", "2", "--labels", "0-9", "--out", str(tmp_path / "x.npz")])


def test_missing_checkpoint_names_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match="shipped checkpoints"):
        load_model("no-such-model")


def test_wrong_model_class_is_named(tmp_path):
    train_recipe("ae-mnist", steps=1, out=tmp_path, progress=False, plot=False)
    with pytest.raises(ValueError, match="holds a Autoencoder.*not a VAE"):
        load_model(tmp_path / "ae-mnist.pt", expect="VAE")


def test_parse_labels():
    assert cli.parse_labels("0-9") == list(range(10))
    assert cli.parse_labels("1,7") == [1, 7]
    assert cli.parse_labels("3-4,8") == [3, 4, 8]
