"""Standard (Inception) FID through torchmetrics: the code path, with a stand-in feature network
(the Inception weights cannot be downloaded here), checked against the course's own Fréchet distance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("torchmetrics", reason="standard FID needs the `fid` extra (torchmetrics, torch-fidelity)")

from minilineage import cli  # noqa: E402
from minilineage.metrics import (  # noqa: E402
    INCEPTION_FILE,
    INCEPTION_URL,
    feature_stats,
    frechet_distance,
    inception_weights,
    standard_fid,
)


class StandIn(nn.Module):
    """uint8 RGB images -> 12 features (mean colour in a 2 x 2 grid): a cheap, fixed feature network."""

    num_features = 12

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(x.float() / 255, 2).flatten(1)  # (B, 3 * 2 * 2)


def images(n: int, seed: int, shift: int = 0, channels: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 200, (n, channels, 8, 8), generator=g) + shift).to(torch.uint8)


def test_standard_fid_equals_the_frechet_distance_of_the_features():
    a, b = images(300, 0), images(200, 1, shift=40)
    fid = standard_fid(a, b, feature=StandIn())
    features = [StandIn()(x).double() for x in (a, b)]
    expected = frechet_distance(*feature_stats(features[0]), *feature_stats(features[1]))
    assert fid == pytest.approx(expected, rel=1e-3)
    assert fid > 1e-3  # the shift is seen


def test_a_set_against_itself_scores_zero_and_grey_images_and_videos_are_read():
    a = images(100, 2)
    assert standard_fid(a, a, feature=StandIn()) == pytest.approx(0.0, abs=1e-4)
    grey = images(100, 3, channels=1)
    videos = grey.reshape(25, 4, 1, 8, 8)  # 25 clips of 4 frames: every frame scored as an image
    assert standard_fid(videos, grey, feature=StandIn()) == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(ValueError, match="uint8"):
        standard_fid(a.float(), a, feature=StandIn())


def test_missing_inception_weights_say_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILINEAGE_DATA", str(tmp_path))
    monkeypatch.delenv("MINILINEAGE_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match="download") as error:
        inception_weights()
    assert INCEPTION_URL in str(error.value) and str(tmp_path / INCEPTION_FILE) in str(error.value)
    weights = tmp_path / "elsewhere.pth"
    weights.write_bytes(b"x")
    monkeypatch.setenv("MINILINEAGE_INCEPTION_WEIGHTS", str(weights))
    assert inception_weights() == weights


def test_eval_metric_fid_without_weights_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINILINEAGE_DATA", str(tmp_path))
    monkeypatch.delenv("MINILINEAGE_INCEPTION_WEIGHTS", raising=False)
    samples = tmp_path / "s.npz"
    np.savez(samples, images=images(4, 0).numpy())
    with pytest.raises(SystemExit):
        cli.main(["eval", str(samples), "--metric", "fid", "--reference", "cifar10"])
    err = capsys.readouterr().err
    assert err.startswith("minilineage eval: error: standard FID needs the Inception-v3 weights") and INCEPTION_URL in err


def test_the_cifar10_evaluator_samples_and_says_how_to_get_fid_without_the_weights(tmp_path, monkeypatch):
    from minilineage.metrics import eval_cifar_samples
    from minilineage.recipes import RECIPES
    from minilineage.recipes.core import merge

    monkeypatch.setenv("MINILINEAGE_DATA", str(tmp_path))
    monkeypatch.delenv("MINILINEAGE_INCEPTION_WEIGHTS", raising=False)
    recipe = RECIPES["ddpm-cifar10"]
    config = recipe.model_cls.Config(**merge(recipe.model_config, {**recipe.presets["cpu"].model, "sample_steps": 2}))
    record = eval_cifar_samples(recipe.model_cls(config).eval(), torch.device("cpu"), n=20)
    assert record["samples"] == 20 and record["steps"] == 2 and record["fid"] is None
    assert INCEPTION_URL in record["fid_unavailable"]
