import subprocess
import sys

import numpy as np
import pytest
import torch

from minilineage import checkpoint, cli
from minilineage.checkpoint import load_model
from minilineage.recipes import RECIPES, train_recipe


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


def test_sample_rejects_options_the_model_does_not_take(tmp_path, capsys):
    train_recipe("ae-mnist", steps=1, out=tmp_path, progress=False)
    with pytest.raises(SystemExit) as stop:
        cli.main(["sample", str(tmp_path / "ae-mnist.pt"), "--n", "2", "--labels", "0-9", "--out", str(tmp_path / "x.npz")])
    assert stop.value.code == 2
    assert "Autoencoder (ae-mnist) does not take --labels" in capsys.readouterr().err


def test_missing_checkpoint_names_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match="shipped checkpoints"):
        load_model("no-such-model")


def test_wrong_model_class_is_named(tmp_path):
    train_recipe("ae-mnist", steps=1, out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="holds a Autoencoder.*not a VAE"):
        load_model(tmp_path / "ae-mnist.pt", expect="VAE")


def test_parse_labels():
    assert cli.parse_labels("0-9") == list(range(10))
    assert cli.parse_labels("1,7") == [1, 7]
    assert cli.parse_labels("3-4,8") == [3, 4, 8]


# ---- Bad input: one clear line naming what was wrong and what is valid ----------------------------


def error_of(capsys, *argv) -> str:
    """Run the CLI, expect exit code 2, return what it printed on stderr."""
    with pytest.raises(SystemExit) as stop:
        cli.main(list(argv))
    assert stop.value.code == 2
    return capsys.readouterr().err


def test_non_positive_counts_and_steps_are_refused_before_any_work(capsys, tmp_path):
    assert "--n: must be a positive whole number, got 0" in error_of(capsys, "sample", "ae-mnist", "--n", "0", "--out", "x.npz")
    assert "--steps: must be a positive whole number, got -5" in error_of(capsys, "train", "ae-mnist", "--steps", "-5",
                                                                          "--out", str(tmp_path))
    assert "--steps: must be a positive whole number, got 0" in error_of(capsys, "sample", "ddpm-mnist", "--steps", "0",
                                                                          "--out", "x.npz")
    assert "--batch-size: must be a positive" in error_of(capsys, "sample", "ae-mnist", "--batch-size", "0", "--out", "x.npz")
    assert "--keep-every: must be a whole number >= 0" in error_of(capsys, "train", "ae-mnist", "--keep-every", "-1")
    assert "--iters: must be a positive" in error_of(capsys, "bench", "--iters", "0")
    assert not list(tmp_path.iterdir())  # nothing was written


def test_labels_outside_the_model_classes_are_refused(capsys, tmp_path):
    err = error_of(capsys, "sample", "ddpm-mnist", "--labels", "0-12", "--n", "20", "--out", str(tmp_path / "x.npz"))
    assert "labels must be classes 0..9, got values 0..12" in err
    assert "labels must look like '0-9' or '1,3,5'" in error_of(capsys, "sample", "ddpm-mnist", "--labels", "9-3",
                                                                "--out", "x.npz")
    assert not (tmp_path / "x.npz").exists()


def test_wrong_output_extension_fails_before_loading_anything(capsys):
    assert "--out must end in .npz or .png, got 'x.jpg'" in error_of(capsys, "sample", "no-such-model", "--out", "x.jpg")


def test_a_truncated_checkpoint_is_named_as_corrupt(capsys, tmp_path):
    whole = (checkpoint.CHECKPOINT_DIR / "ae-mnist.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    err = error_of(capsys, "sample", str(tmp_path / "cut.pt"), "--out", str(tmp_path / "x.npz"))
    assert "is not a readable checkpoint (truncated or corrupt?" in err and "Traceback" not in err


def test_a_foreign_torch_file_is_named_as_not_ours(capsys, tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "state_dict.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    assert "is not a minilineage checkpoint" in error_of(capsys, "sample", str(tmp_path / "state_dict.pt"), "--out", "x.npz")
    assert "it holds a Tensor" in error_of(capsys, "sample", str(tmp_path / "tensor.pt"), "--out", "x.npz")


def test_resuming_from_another_recipes_resume_file_names_both(capsys, tmp_path):
    cli.main(["train", "ae-mnist", "--steps", "1", "--out", str(tmp_path), "--device", "cpu"])
    (tmp_path / "ae-mnist.resume.pt").rename(tmp_path / "vae-mnist.resume.pt")
    err = error_of(capsys, "train", "vae-mnist", "--steps", "2", "--out", str(tmp_path), "--resume", "--device", "cpu")
    assert "the resume file holds recipe 'ae-mnist', but this run trains 'vae-mnist'" in err
    assert not (tmp_path / "vae-mnist.pt").exists()


def test_unknown_preset_and_device_list_the_choices(capsys):
    assert "invalid choice: 'tpu' (choose from" in error_of(capsys, "train", "ae-mnist", "--preset", "tpu")
    assert "unknown device 'tpu'; choose one of: auto, cpu, cuda, mps" in error_of(
        capsys, "sample", "ae-mnist", "--device", "tpu", "--out", "x.npz")


def test_sampling_a_model_that_generates_nothing_says_so(capsys, tmp_path):
    for name, cls in (("clip-mnist", "MiniCLIP"), ("lenet-mnist", "LeNet"), ("captioner-moving-mnist", "VideoCaptioner")):
        err = error_of(capsys, "sample", name, "--n", "2", "--out", str(tmp_path / "x.png"))
        assert f"{cls} ({name}) does not generate anything to sample" in err and "Traceback" not in err
