"""The Diffusion Transformer: adaLN-Zero starts as the identity, shapes at any grid, labels, text, bad sizes, learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from tiny import randomize_

from minilineage.diffusion import DiffusionPipeline, PipelineConfig
from minilineage.layers import sincos_2d
from minilineage.models import MODELS
from minilineage.models.dit import DIT_PRESETS, DiT, DiTBlock, DiTConfig, modulate
from minilineage.models.dit_variants import PaperInitDiT

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest




def tiny(**overrides) -> DiT:
    return DiT(DiTConfig(**{"in_channels": 1, "patch": 4, "width": 32, "depth": 2, "heads": 2, "num_classes": 10,
                            **overrides}))


def test_a_block_of_a_fresh_dit_is_exactly_the_identity():
    torch.manual_seed(0)
    block = tiny(context_dim=8).blocks[0]  # DiT.initialize_weights zeroes the adaLN layers
    x, c = torch.randn(3, 49, 32), torch.randn(3, 1, 32) * 5  # a large condition changes nothing either
    assert torch.equal(block(x, c), x)
    assert torch.equal(block(x, c, torch.randn(3, 5, 8), torch.ones(3, 5, dtype=torch.bool)), x)
    randomize_(block)
    assert not torch.allclose(block(x, c), x)  # the check can fail: a trained block is not the identity


@pytest.mark.parametrize("name", ["DiT-XS/1", "DiT-S/2", "DiT-B/4"])
def test_a_fresh_dit_predicts_exactly_zero(name):
    torch.manual_seed(0)
    config = DIT_PRESETS[name]
    model = DiT(DiTConfig(**{**config.__dict__, "in_channels": 1, "num_classes": 10}))
    size = 28 if config.patch > 1 else 7
    out = model(torch.randn(2, 1, size, size), torch.tensor([3, 900]), y=torch.tensor([1, 7]))
    assert out.shape == (2, 1, size, size) and torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("width", [32, 64, 128])
def test_a_fresh_condition_has_unit_scale_at_any_width_so_labels_reach_the_blocks(width):
    # DiT's std 0.02 tables give c ~ 0.01 per channel at these widths, and the labels then barely train (chapter 6)
    torch.manual_seed(0)
    model = tiny(width=width, heads=4)
    c = model.condition(torch.arange(0, 1000, 100), torch.arange(10), (7, 7))  # (10, 1, D)
    label_part = model.label_embed(torch.arange(10))  # (10, D)
    assert 0.5 < label_part.std().item() < 2.0
    assert 0.3 < c.std().item() < 3.0
    assert (c[1:] - c[:-1]).abs().mean() > 0.3  # neighbouring (t, y) pairs differ at unit scale, not by a nudge


def test_the_block_computes_adaln_zero_as_written_in_the_paper():
    """DiT's Eq.: x + g1 * Attn(LN(x)(1 + s1) + b1), then + g2 * MLP(LN(x)(1 + s2) + b2), attention by hand."""
    torch.manual_seed(0)
    block = randomize_(DiTBlock(16, 2))
    x, c = torch.randn(2, 9, 16), torch.randn(2, 1, 16)
    b1, s1, g1, b2, s2, g2 = block.adaLN_modulation(c).chunk(6, dim=-1)
    ln = lambda z: (z - z.mean(-1, keepdim=True)) / torch.sqrt(z.var(-1, unbiased=False, keepdim=True) + 1e-6)  # noqa: E731
    q, k, v = rearrange(block.attn.qkv(ln(x) * (1 + s1) + b1), "b n (three h d) -> three b h n d", three=3, h=2)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)  # (B, heads, N, N)
    x = x + g1 * block.attn.proj(rearrange(weights @ v, "b h n d -> b n (h d)"))
    mlp = block.mlp.fc2(F.gelu(block.mlp.fc1(ln(x) * (1 + s2) + b2)))
    expected = x + g2 * mlp
    x0 = x - g1 * block.attn.proj(rearrange(weights @ v, "b h n d -> b n (h d)"))
    torch.testing.assert_close(block(x0, c), expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(modulate(x0, b1, s1), x0 * (1 + s1) + b1)


CASES = {  # (config overrides, one input's shape)
    "latent 4x7x7, patch 1": ({"in_channels": 4, "patch": 1}, (4, 7, 7)),
    "pixels 28x28, patch 2": ({"patch": 2}, (1, 28, 28)),
    "pixels 28x28, patch 4": ({}, (1, 28, 28)),
    "rgb 32x32, patch 2": ({"in_channels": 3, "patch": 2}, (3, 32, 32)),
    "wide 16x24, patch 4": ({}, (1, 16, 24)),
    "out channels 2": ({"out_channels": 2}, (1, 28, 28)),
}


@pytest.mark.parametrize("name", CASES)
def test_output_has_the_shape_of_the_input_at_any_grid(name):
    torch.manual_seed(0)
    overrides, shape = CASES[name]
    model = randomize_(tiny(**overrides))
    out = model(torch.randn(2, *shape), torch.tensor([3.0, 512.5]), y=torch.tensor([1, 7]))
    assert out.shape == (2, overrides.get("out_channels", shape[0]), *shape[1:]) and torch.isfinite(out).all()


def test_positions_are_the_2d_sincos_of_the_input_grid():
    model = tiny()
    assert torch.equal(model.position_embedding((4, 6)), sincos_2d((4, 6), 32))
    torch.manual_seed(0)
    randomize_(model)
    x = torch.zeros(1, 1, 28, 28)  # a blank image: only the positions tell the tokens apart
    out = rearrange(model(x, torch.tensor([10])), "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=4, p2=4)
    assert not torch.allclose(out[0, 0], out[0, 24])


def test_labels_select_a_class_and_none_means_the_null_label():
    torch.manual_seed(0)
    model = randomize_(tiny())
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([5, 500])
    torch.testing.assert_close(model(x, t), model(x, t, y=torch.tensor([10, 10])))
    torch.testing.assert_close(model(x, t, y=3), model(x, t, y=torch.tensor([3, 3])))
    assert not torch.allclose(model(x, t, y=torch.tensor([3, 3])), model(x, t, y=torch.tensor([4, 4])))
    assert model.null_label == 10
    with pytest.raises(ValueError, match="num_classes=None"):
        tiny(num_classes=None)(x, t, y=torch.tensor([1, 2]))


def test_text_reaches_the_tokens_through_cross_attention_and_padding_is_ignored():
    torch.manual_seed(0)
    model = randomize_(tiny(context_dim=8)).eval()
    x, t, ctx = torch.randn(2, 1, 28, 28), torch.tensor([5, 500]), torch.randn(2, 4, 8)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    with_text = model(x, t, context=ctx, context_mask=mask)
    assert not torch.allclose(with_text, model(x, t))
    other_padding = ctx.clone()
    other_padding[~mask] = 9.0  # what sits in padded places cannot matter
    torch.testing.assert_close(model(x, t, context=other_padding, context_mask=mask), with_text)
    with pytest.raises(ValueError, match="context_dim=None"):
        tiny()(x, t, context=ctx)


def test_pooled_context_puts_the_mean_of_the_kept_text_tokens_into_the_condition():
    torch.manual_seed(0)
    model = randomize_(tiny(context_dim=8, pooled_context=True)).eval()
    t, ctx = torch.tensor([5, 500]), torch.randn(2, 4, 8)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    c = model.condition(t, None, (7, 7), ctx, mask)
    mean = torch.stack([ctx[0, :2].mean(0), ctx[1, :3].mean(0)])  # the kept tokens only
    expected = model.condition(t, None, (7, 7)) + model.context_pool(mean)[:, None]
    torch.testing.assert_close(c, expected)
    other_padding = ctx.clone()
    other_padding[~mask] = 9.0
    torch.testing.assert_close(model.condition(t, None, (7, 7), other_padding, mask), c)
    frames = model.condition(torch.tensor([[5, 0], [500, 7]]), None, (2, 7, 7), ctx, mask)  # per-frame t: per token
    assert frames.shape == (2, 2 * 49, 32) and not torch.allclose(frames, model.condition(torch.tensor([[5, 0], [500, 7]]), None, (2, 7, 7)))
    assert tiny(context_dim=8).context_pool is None  # off by default: old checkpoints load unchanged
    with pytest.raises(ValueError, match="pooled_context needs text tokens"):
        tiny(pooled_context=True)


def test_sizes_the_patches_do_not_divide_are_refused_with_the_sizes():
    model = tiny(in_channels=4, patch=4)
    with pytest.raises(ValueError, match="image height 7 is not divisible by patch size 4"):
        model(torch.randn(1, 4, 7, 7), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"expected x of shape \(B, 4, H, W\), got \(1, 1, 28, 28\)"):
        model(torch.randn(1, 1, 28, 28), torch.tensor([1]))
    with pytest.raises(ValueError, match="width 30 must be divisible by heads 4"):
        DiTConfig(width=30, heads=4)


def test_per_frame_timesteps_give_each_frame_its_own_condition():
    """Ready for video: t (B, F) on a grid (F, h, w) conditions each frame's tokens on that frame's t."""
    torch.manual_seed(0)
    model = randomize_(tiny())
    t, y = torch.tensor([[0.0, 300.0, 999.0]]), torch.tensor([4])
    c = model.condition(t, y, (3, 2, 5))  # (1, 30, D)
    assert c.shape == (1, 30, 32)
    for f in range(3):
        per_image = model.condition(t[:, f], y, (2, 5))  # (1, 1, D)
        torch.testing.assert_close(c[:, 10 * f : 10 * (f + 1)], per_image.expand(1, 10, 32))
    with pytest.raises(ValueError, match="per-frame timesteps"):
        model(torch.randn(1, 1, 28, 28), t)


def test_parameter_count_matches_the_architecture():
    """Counted by hand, layer by layer: the model has exactly the layers the docstring describes."""
    c = DIT_PRESETS["DiT-S/4"]
    model = DiT(DiTConfig(**{**c.__dict__, "in_channels": 1, "num_classes": 10}))
    D, P = c.width, c.patch**2
    linear = lambda i, o: i * o + o  # noqa: E731
    block = linear(D, 3 * D) + linear(D, D) + linear(D, 4 * D) + linear(4 * D, D) + linear(D, 6 * D)
    total = (linear(P, D) + 2 * linear(D, D) + 11 * D + c.depth * block + linear(D, 2 * D) + linear(D, P))
    assert sum(p.numel() for p in model.parameters()) == total


def test_one_batch_overfit_lowers_the_loss():
    torch.manual_seed(0)
    den = {"cls": "DiT", "config": {"in_channels": 1, "patch": 4, "width": 32, "depth": 2, "heads": 2, "num_classes": 10}}
    model = DiffusionPipeline(PipelineConfig(denoiser=den, T=100))
    batch = {"x": torch.rand(8, 1, 28, 28) * 2 - 1, "y": torch.arange(8)}
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = model.loss(batch, torch.Generator().manual_seed(0)).item()
    for _ in range(40):
        loss = model.loss(batch, torch.Generator().manual_seed(0))  # the same t and eps every step
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert first == pytest.approx(1.0, abs=0.05)  # eps_hat = 0 at the start: E||eps||^2
    assert loss.item() < 0.5 * first


def test_dit_is_a_registered_denoiser_that_samples_in_a_pipeline():
    assert MODELS["DiT"] is DiT
    torch.manual_seed(0)
    den = {"cls": "DiT", "config": {"in_channels": 1, "patch": 4, "width": 32, "depth": 1, "heads": 2, "num_classes": 10}}
    model = DiffusionPipeline(PipelineConfig(denoiser=den, T=50)).eval()
    randomize_(model.net)
    calls = []
    model.net.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    images = model.sample(3, torch.Generator().manual_seed(0), labels=torch.tensor([1, 2, 3]), steps=4, guidance=2.0)
    assert images.shape == (3, 1, 28, 28) and calls == [6, 6, 6, 6]  # guidance: one doubled batch per step


VARIANTS = ("DiT", "AdaLNDiT", "CrossAttentionDiT", "InContextDiT")


@pytest.mark.parametrize("name", VARIANTS)
def test_every_conditioning_variant_starts_at_zero_output_and_reads_its_labels(name):
    torch.manual_seed(0)
    config = DiTConfig(in_channels=1, patch=4, width=32, depth=2, heads=2, num_classes=10)
    model = MODELS[name](config)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([5, 500])
    assert torch.equal(model(x, t, y=torch.tensor([1, 2])), torch.zeros_like(x))  # every output layer starts at zero
    randomize_(model)
    out = model(x, t, y=torch.tensor([1, 2]))
    assert out.shape == x.shape and not torch.allclose(out, model(x, t, y=torch.tensor([3, 4])))
    if name != "DiT":  # text goes through DiT's cross-attention; the variants are about t and y only
        with pytest.raises(ValueError, match="read no text"):
            MODELS[name](DiTConfig(context_dim=8))


def test_only_adaln_zero_starts_every_block_as_the_identity():
    torch.manual_seed(0)
    config = DiTConfig(in_channels=1, patch=4, width=32, depth=1, heads=2, num_classes=10)
    x = torch.randn(2, 49, 32)
    c = torch.randn(2, 1, 32)
    assert torch.equal(MODELS["DiT"](config).blocks[0](x, c), x)
    assert not torch.allclose(MODELS["AdaLNDiT"](config).blocks[0](x, c), x)  # no gate: the branches add from step 0
    tokens = torch.randn(2, 2, 32)
    assert not torch.allclose(MODELS["CrossAttentionDiT"](config).blocks[0](x, tokens), x)


def test_paper_init_starts_the_condition_as_dit_does_small_and_zero_biased():
    torch.manual_seed(0)
    config = DiTConfig(in_channels=1, patch=4, width=64, depth=1, heads=4, num_classes=10)
    paper, ours = PaperInitDiT(config), DiT(config)
    first, second = paper.time_embed.mlp[0], paper.time_embed.mlp[2]
    assert first.in_features == 256 and torch.count_nonzero(first.bias) == torch.count_nonzero(second.bias) == 0
    assert abs(first.weight.std().item() - 0.02) < 0.002 and abs(paper.label_embed.weight.std().item() - 0.02) < 0.002
    c_paper = paper.condition(torch.arange(0, 1000, 100), torch.arange(10), (7, 7))  # (10, 1, 64)
    c_ours = ours.condition(torch.arange(0, 1000, 100), torch.arange(10), (7, 7))
    assert c_paper.std() < 0.05 < 0.9 < c_ours.std()  # 0.027 against 1.02
    out = paper(torch.randn(2, 1, 28, 28), torch.tensor([3, 900]), y=torch.tensor([1, 2]))
    assert torch.equal(out, torch.zeros_like(out))  # adaLN-Zero and the zeroed output are kept
