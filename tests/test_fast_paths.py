"""The training loop's fast paths (issue: scale and speed) change speed, never what is computed:
bf16 autocast, channels-last, prefetching batches in a thread, pre-encoded latents."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minilineage import cli
from minilineage.data import (
    ArrayData,
    caption_batches,
    encoded_batches,
    image_batches,
    load_dataset,
    to_float,
)
from minilineage.recipes import train_recipe
from minilineage.train import TrainConfig, fit


def conv_task():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 1, 3, padding=1))
    seen = []

    def next_batch(step, generator):
        x = torch.randn(8, 1, 6, 6, generator=generator)
        return {"x": x, "y": x.roll(1, dims=-1)}

    def loss_fn(m, batch, generator):
        out = m(batch["x"])
        seen.append(out.dtype)
        return F.mse_loss(out.float(), batch["y"])

    return model, loss_fn, next_batch, seen


def config(**kw):
    return TrainConfig(**{"steps": 12, "lr": 1e-2, "warmup_steps": 2, "log_every": 4, **kw})


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values()])


@pytest.mark.parametrize(("precision", "dtype"), [("auto", torch.float32), ("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_precision_sets_what_the_forward_pass_runs_in(precision, dtype):
    model, loss_fn, next_batch, seen = conv_task()
    state = fit(model, loss_fn, next_batch, config(precision=precision), "cpu", progress=False)
    assert set(seen) == {dtype}  # auto is fp32 on the CPU (bf16 only on CUDA)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights themselves stay fp32
    assert state.history[-1][1] < state.history[0][1]


def test_an_unknown_precision_names_the_choices():
    with pytest.raises(ValueError, match="auto, bf16, fp32"):
        TrainConfig(precision="fp16")


def test_prefetching_in_a_thread_gives_the_same_weights():
    runs = []
    for prefetch in (False, True):
        model, loss_fn, next_batch, _ = conv_task()
        fit(model, loss_fn, next_batch, config(prefetch=prefetch), "cpu", progress=False)
        runs.append(weights(model))
    assert torch.equal(runs[0], runs[1])


def test_channels_last_changes_the_layout_not_the_result():
    runs = []
    for channels_last in (False, True):
        model, loss_fn, next_batch, _ = conv_task()
        fit(model, loss_fn, next_batch, config(channels_last=channels_last), "cpu", progress=False)
        runs.append(weights(model))
        assert model[2].weight.is_contiguous(memory_format=torch.channels_last) == channels_last  # (1, 8, 3, 3)
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-4, atol=1e-5)


def test_a_dataset_moved_with_to_yields_the_same_batches():
    data = load_dataset("mnist-5k", "test")
    moved = data.to("cpu")
    assert isinstance(moved, ArrayData) and len(moved) == len(data)
    a = image_batches(data, 16)(0, torch.Generator().manual_seed(3))
    b = image_batches(moved, 16)(0, torch.Generator().manual_seed(3))
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])


def test_encoded_batches_draw_the_same_items_and_captions():
    data = load_dataset("mnist-5k", "test")
    codes = torch.arange(len(data), dtype=torch.float32)[:, None] * 10  # code i names item i
    plain = caption_batches(data, 32)(5, torch.Generator().manual_seed(1))
    coded = encoded_batches(data, codes, 32, with_captions=True)(5, torch.Generator().manual_seed(1))
    assert "x" not in coded and coded["captions"] == plain["captions"] and torch.equal(coded["y"], plain["y"])
    items = (coded["moments"][:, 0] / 10).long()
    assert torch.equal(to_float(data.images[items]), plain["x"])
    with pytest.raises(ValueError, match="codes"):
        encoded_batches(data, codes[:10], 32)


def test_pre_encoded_latents_train_latent_diffusion_as_encoding_every_step_does():
    histories = []
    for pre_encode in (False, True):
        result = train_recipe("ldm-mnist", steps=2, out=None, device="cpu", progress=False, evaluate=False,
                              pre_encode=pre_encode)
        histories.append([loss for _, loss in result.record["history"]])
    assert histories[0] == pytest.approx(histories[1], rel=1e-4)


def test_pre_encode_on_a_model_without_an_autoencoder_is_refused(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "ae-mnist", "--steps", "1", "--pre-encode", "--out", "/nonexistent"])
    assert "pre_encode needs a latent diffusion recipe" in capsys.readouterr().err
