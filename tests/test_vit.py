"""The ViT classifier and its transformer parts: shapes at any resolution, position handling, exact identities."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from minilineage.checkpoint import load_model
from minilineage.layers import SelfAttention, patchify, resample_positions, unpatchify
from minilineage.metrics import eval_vit
from minilineage.models import MODELS
from minilineage.models.vit import ViT, ViTConfig


def tiny(pos_embed: str = "sincos", **overrides) -> ViT:
    config = ViTConfig(**{"width": 16, "depth": 2, "heads": 2, "pos_embed": pos_embed, **overrides})
    model = ViT(config).eval()
    torch.nn.init.normal_(model.head.weight, std=0.5)  # the head starts at zero: give the outputs something to show
    return model


def test_vit_reads_any_resolution_divisible_by_the_patch():
    model = tiny()
    for size in (20, 28, 44):
        assert model(torch.zeros(3, 1, size, size)).shape == (3, 10)
    with pytest.raises(ValueError, match="image height 30 is not divisible by patch size 4"):
        model(torch.zeros(1, 1, 30, 28))


def test_learned_positions_exist_only_for_the_training_grid():
    model = tiny("learned")
    x = torch.randn(2, 1, 36, 36)
    with pytest.raises(ValueError, match=r"learned position embeddings for a 7 x 7 grid, not 9 x 9"):
        model(x)
    pos = resample_positions(model.pos.table, (7, 7), (9, 9))
    assert model(x, pos=pos).shape == (2, 10)
    with pytest.raises(ValueError, match=r"pos must be \(N, D\) = \(81, 16\)"):
        model(x, pos=model.pos.table)


def test_without_positions_the_vit_ignores_the_order_of_patches():
    x = torch.randn(4, 1, 28, 28)
    tokens, grid = patchify(x, 4)
    shuffled = unpatchify(tokens[:, torch.randperm(49)], grid, 4)
    bag = tiny("none")
    assert torch.allclose(bag(x), bag(shuffled), atol=1e-5)
    positioned = tiny("sincos")
    assert (positioned(x) - positioned(shuffled)).abs().max() > 1e-2


def test_linear_patch_embedding_is_a_strided_convolution():
    model = tiny()
    x = torch.randn(2, 1, 28, 28)
    weight = rearrange(model.embed.weight, "d (p1 p2 c) -> d c p1 p2", p1=4, p2=4)  # (D, C, p, p)
    conv = F.conv2d(x, weight, model.embed.bias, stride=4)  # (B, D, 7, 7)
    linear = model.embed(patchify(x, 4)[0])  # (B, 49, D)
    assert torch.allclose(rearrange(conv, "b d h w -> b (h w) d"), linear, atol=1e-6)


def test_self_attention_is_softmax_of_scaled_dot_products():
    attn = SelfAttention(8, heads=2)
    x = torch.randn(2, 5, 8)
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    heads = []
    for h in range(2):
        qh, kh, vh = (t[..., 4 * h : 4 * h + 4] for t in (q, k, v))
        weights = torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(4), dim=-1)  # (B, N, N)
        heads.append(weights @ vh)
    assert torch.allclose(attn(x), attn.proj(torch.cat(heads, dim=-1)), atol=1e-6)


def test_config_errors_name_the_choices():
    with pytest.raises(ValueError, match="choose one of: sincos, learned, none"):
        ViTConfig(pos_embed="rope")
    with pytest.raises(ValueError, match="image size 28 is not divisible by patch size 5"):
        ViTConfig(patch=5)


def test_a_fresh_vit_predicts_uniformly_and_overfits_one_batch():
    torch.manual_seed(0)
    model = ViT(ViTConfig(width=32, depth=1, heads=2))
    x, y = torch.randn(10, 1, 28, 28), torch.arange(10)
    assert torch.equal(model(x), torch.zeros(10, 10))  # zero head: p = 1/10 for every class
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_vit_is_a_registered_model():
    assert MODELS["ViT"] is ViT


@pytest.mark.parametrize("name", ["vit-mnist", "vit-mnist-learned", "vit-mnist-nopos"])
def test_shipped_vits_reproduce_their_recorded_accuracy(name):
    model = load_model(name, expect=ViT)
    assert eval_vit(model, torch.device("cpu")) == pytest.approx(model.checkpoint_info["metrics"], abs=0.0021)
