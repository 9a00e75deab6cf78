"""Tests for minilineage.unet: shapes, conditioning, initialisation, bad sizes, learning."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import randomize_

from minilineage.layers import CrossAttention
from minilineage.models.unet import UNET_PRESETS, UNet, UNetConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest




CASES = {
    "mnist-28": (UNetConfig(num_classes=10), (1, 28, 28)),
    "rgb-32": (UNetConfig(in_channels=3, num_classes=10), (3, 32, 32)),
    "latent-8-text": (UNetConfig(in_channels=4, channel_mults=(1, 2), attention_levels=(1,), context_dim=12), (4, 8, 8)),
    "latent-7-one-level": (UNetConfig(in_channels=4, width=16, channel_mults=(1,), attention_levels=(0,)), (4, 7, 7)),
    "two-blocks-out-channels": (UNetConfig(width=8, blocks_per_level=2, out_channels=2), (1, 28, 28)),
}


@pytest.mark.parametrize("name", CASES)
def test_output_has_the_shape_of_the_input(name):
    torch.manual_seed(0)
    config, (c, h, w) = CASES[name]
    model = randomize_(UNet(config))
    x, t = torch.randn(2, c, h, w), torch.tensor([3, 500])
    kwargs = {}
    if config.num_classes:
        kwargs["y"] = torch.tensor([1, 7])
    if config.context_dim:
        kwargs["context"] = torch.randn(2, 5, config.context_dim)
        kwargs["context_mask"] = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    eps_hat = model(x, t, **kwargs)
    assert eps_hat.shape == (2, config.out_channels or c, h, w)
    assert torch.isfinite(eps_hat).all()


@pytest.mark.parametrize("name", UNET_PRESETS)
def test_fresh_unet_predicts_exactly_zero(name):
    torch.manual_seed(0)
    model = UNet(UNET_PRESETS[name])
    eps_hat = model(torch.randn(2, 1, 28, 28), torch.tensor([0, 999]))
    assert torch.equal(eps_hat, torch.zeros(2, 1, 28, 28))


def test_small_preset_is_cpu_sized():
    n = sum(p.numel() for p in UNet(UNET_PRESETS["small"]).parameters())
    assert 0.5e6 <= n <= 2e6


def test_null_label_row_exists_and_is_the_default_label():
    torch.manual_seed(0)
    model = randomize_(UNet(UNetConfig(width=8, channel_mults=(1, 2), attention_levels=(), num_classes=10)))
    assert model.null_label == 10
    assert model.class_embed.weight.shape == (11, 32)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([10, 10])
    torch.testing.assert_close(model(x, t), model(x, t, y=torch.tensor([10, 10])))
    torch.testing.assert_close(model(x, t, y=torch.tensor(3)), model(x, t, y=torch.tensor([3, 3])))
    assert not torch.allclose(model(x, t, y=torch.tensor([3, 3])), model(x, t))


def test_scalar_t_applies_to_the_whole_batch():
    torch.manual_seed(0)
    model = randomize_(UNet(UNET_PRESETS["tiny"]))
    x = torch.randn(3, 1, 28, 28)
    expected = model(x, torch.full((3,), 42))
    torch.testing.assert_close(model(x, torch.tensor(42)), expected)
    torch.testing.assert_close(model(x, 42), expected)
    with pytest.raises(ValueError, match=r"t of shape \(3,\).*\(2,\)"):
        model(x, torch.tensor([1, 2]))


def test_padded_context_tokens_do_not_change_the_output():
    torch.manual_seed(0)
    model = randomize_(UNet(UNetConfig(width=8, channel_mults=(1, 2), attention_levels=(1,), context_dim=6)))
    x, t = torch.randn(1, 1, 28, 28), torch.tensor([100])
    context, mask = torch.randn(1, 4, 6), torch.tensor([[True, True, False, False]])
    changed = context.clone()
    changed[:, 2:] = torch.randn(1, 2, 6)
    torch.testing.assert_close(model(x, t, context=context, context_mask=mask),
                               model(x, t, context=changed, context_mask=mask))
    assert not torch.allclose(model(x, t, context=context), model(x, t, context=changed))


def test_cross_attention_maps_can_be_read_from_inside_the_unet():
    model = UNet(UNetConfig(channel_mults=(1, 2), attention_levels=(1,), context_dim=6))
    layers = [m for m in model.modules() if isinstance(m, CrossAttention)]
    assert len(layers) == 3  # down level 1, middle, up level 1
    for layer in layers:
        layer.keep_weights = True
    model(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]), context=torch.randn(2, 5, 6))
    assert layers[0].last_weights.shape == (2, 4, 14 * 14, 5)


@pytest.mark.parametrize("size, mults", [((30, 30), (1, 2, 2)), ((28, 26), (1, 2, 2)), ((7, 7), (1, 2))])
def test_sizes_not_divisible_by_the_levels_raise(size, mults):
    model = UNet(UNetConfig(width=8, channel_mults=mults, attention_levels=()))
    with pytest.raises(ValueError, match=f"{size[0]}x{size[1]}.*divisible by {2 ** (len(mults) - 1)}"):
        model(torch.randn(1, 1, *size), torch.tensor([0]))


def test_bad_inputs_raise_with_the_reason():
    model = UNet(UNetConfig(width=8, channel_mults=(1, 2), attention_levels=()))
    x, t = torch.randn(1, 1, 28, 28), torch.tensor([0])
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\).*\(1, 3, 28, 28\)"):
        model(torch.randn(1, 3, 28, 28), t)
    with pytest.raises(ValueError, match="num_classes=None"):
        model(x, t, y=torch.tensor([1]))
    with pytest.raises(ValueError, match="context_dim=None"):
        model(x, t, context=torch.randn(1, 2, 4))
    with pytest.raises(ValueError, match=r"attention_levels \[2\].*2 levels"):
        UNetConfig(channel_mults=(1, 2), attention_levels=(2,))


def test_config_from_a_checkpoint_dict_round_trips():
    config = UNetConfig(channel_mults=[1, 2], attention_levels=[1], num_classes=10)
    assert config.channel_mults == (1, 2) and config.attention_levels == (1,)


def test_overfits_one_batch_of_digits():
    """A tiny U-Net learns to predict the fixed noise of 8 fixed noisy digits."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x0 = torch.zeros(8, 1, 28, 28) - 1
    for i in range(8):  # MNIST-like strokes: a bright bar and a ring, placed differently per image
        x0[i, 0, 4 + i:20 + i, 6 + 2 * i:9 + 2 * i] = 1
        yy, xx = torch.meshgrid(torch.arange(28), torch.arange(28), indexing="ij")
        x0[i, 0][((yy - 14) ** 2 + (xx - 14) ** 2 - (4 + i) ** 2).abs() < 8] = 1
    eps = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (8,), generator=g)
    alpha_bar = torch.cos(t / 1000 * math.pi / 2).square()[:, None, None, None]  # any schedule will do
    xt = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
    y = torch.arange(8) % 10

    model = UNet(UNetConfig(width=8, channel_mults=(1, 2), attention_levels=(1,), num_classes=10))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(100):
        loss = (model(xt, t, y) - eps).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(eps.square().mean().item())  # zero-init: eps_hat = 0
    assert losses[-1] < losses[0] / 20  # about 170x in practice
