"""Tests for minilineage.layers: embeddings, ResBlock, attention, resampling."""

from __future__ import annotations

import math

import pytest
import torch

from minilineage.layers import (
    CrossAttention,
    Downsample,
    ResBlock,
    SelfAttention2d,
    SpatialCrossAttention,
    TimeEmbedding,
    Upsample,
    norm,
    timestep_embedding,
)


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values, so zero-initialised branches take part."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


def test_timestep_embedding_pins_cosines_then_sines():
    emb = timestep_embedding(torch.tensor([0, 1, 10]), dim=6)
    assert emb.shape == (3, 6)
    # f_k = 10000^(-k/3): 1, 0.046416, 0.0021544
    assert emb[1].tolist() == pytest.approx([0.5403023, 0.9989230, 0.9999977, 0.8414710, 0.0463992, 0.0021544], abs=2e-6)
    assert emb[0].tolist() == pytest.approx([1, 1, 1, 0, 0, 0])
    for k in range(3):
        f = 10000 ** (-k / 3)
        assert emb[2, k].item() == pytest.approx(math.cos(10 * f), abs=1e-6)
        assert emb[2, 3 + k].item() == pytest.approx(math.sin(10 * f), abs=1e-6)


def test_timestep_embedding_odd_dim_pads_one_zero_and_accepts_fractional_t():
    emb = timestep_embedding(torch.tensor([0.5, 250.25]), dim=5)
    assert emb.shape == (2, 5)
    assert torch.all(emb[:, 4] == 0)
    assert emb[0, 0].item() == pytest.approx(math.cos(0.5))


def test_time_embedding_maps_steps_to_distinct_vectors():
    torch.manual_seed(0)
    emb = TimeEmbedding(32)(torch.tensor([0, 1, 999]))
    assert emb.shape == (3, 32)
    assert not torch.allclose(emb[0], emb[1])


@pytest.mark.parametrize("ch, groups", [(3, 1), (4, 4), (12, 4), (32, 8), (96, 8)])
def test_norm_groups_divide_channels(ch, groups):
    assert norm(ch).num_groups == groups


@pytest.mark.parametrize("in_ch, out_ch", [(8, 8), (8, 16)])
def test_resblock_starts_as_its_skip_path(in_ch, out_ch):
    torch.manual_seed(0)
    block = ResBlock(in_ch, out_ch, emb_dim=12)
    x, emb = torch.randn(2, in_ch, 6, 6), torch.randn(2, 12)
    assert torch.equal(block(x, emb), block.skip(x))
    if in_ch == out_ch:
        assert torch.equal(block(x, emb), x)


def test_resblock_embedding_scales_and_shifts_once_trained():
    torch.manual_seed(0)
    block = randomize_(ResBlock(8, 8, emb_dim=4))
    x = torch.randn(1, 8, 5, 5)
    out_a, out_b = block(x, torch.zeros(1, 4)), block(x, torch.ones(1, 4))
    assert out_a.shape == (1, 8, 5, 5)
    assert not torch.allclose(out_a, out_b)


def naive_attention(q, k, v, mask=None):
    """softmax(q.k / sqrt(d)) v, one (batch, head, query) at a time, in plain Python loops."""
    q, k, v = q.detach(), k.detach(), v.detach()
    B, H, Nq, d = q.shape
    out, weights = torch.zeros_like(q), torch.zeros(B, H, Nq, k.shape[2])
    for b in range(B):
        for h in range(H):
            for i in range(Nq):
                keys = [j for j in range(k.shape[2]) if mask is None or mask[b, j]]
                scores = [float(q[b, h, i] @ k[b, h, j]) / math.sqrt(d) for j in keys]
                top = max(scores)
                exps = [math.exp(s - top) for s in scores]
                for j, e in zip(keys, exps, strict=True):
                    weights[b, h, i, j] = e / sum(exps)
                    out[b, h, i] += weights[b, h, i, j] * v[b, h, j]
    return out, weights


@pytest.mark.parametrize("masked", [False, True])
def test_cross_attention_equals_naive_loop(masked):
    torch.manual_seed(0)
    attn = CrossAttention(query_dim=6, context_dim=5, heads=2, head_dim=3)
    attn.keep_weights = True
    x, context = torch.randn(2, 4, 6), torch.randn(2, 3, 5)
    mask = torch.tensor([[True, True, False], [True, False, False]]) if masked else None
    out = attn(x, context, mask)

    split = lambda t: t.reshape(2, -1, 2, 3).transpose(1, 2)  # (B, heads, N, d)
    q, k, v = split(attn.to_q(x)), split(attn.to_k(context)), split(attn.to_v(context))
    ref, ref_weights = naive_attention(q, k, v, mask)
    expected = attn.to_out(ref.transpose(1, 2).reshape(2, 4, 6))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn.last_weights, ref_weights, atol=1e-6, rtol=1e-5)
    if masked:
        assert torch.all(attn.last_weights[0, :, :, 2] == 0)
        assert torch.all(attn.last_weights[1, :, :, 1:] == 0)


def test_cross_attention_weights_are_distributions_over_keys():
    torch.manual_seed(0)
    attn = CrossAttention(query_dim=8, context_dim=4, heads=4, head_dim=2)
    assert attn(torch.randn(3, 5, 8), torch.randn(3, 7, 4)).shape == (3, 5, 8)
    assert attn.last_weights is None  # only kept when asked
    attn.keep_weights = True
    attn(torch.randn(3, 5, 8), torch.randn(3, 7, 4))
    assert attn.last_weights.shape == (3, 4, 5, 7)
    assert not attn.last_weights.requires_grad
    torch.testing.assert_close(attn.last_weights.sum(-1), torch.ones(3, 4, 5))


def test_cross_attention_mask_edge_cases():
    torch.manual_seed(0)
    attn = CrossAttention(query_dim=4, context_dim=4, heads=1, head_dim=4)
    x, context = torch.randn(1, 2, 4), torch.randn(1, 3, 4)
    assert torch.isfinite(attn(x, context, torch.zeros(1, 3, dtype=torch.bool))).all()  # all padding: no NaN
    int_mask = torch.tensor([[1, 1, 0]])  # a tokenizer's 0/1 attention mask works like a bool one
    torch.testing.assert_close(attn(x, context, int_mask), attn(x, context, int_mask.bool()))
    with pytest.raises(ValueError, match=r"\(1, 3\).*\(1, 2\)"):
        attn(x, context, torch.ones(1, 2, dtype=torch.bool))


def test_self_attention_matches_explicit_softmax_and_starts_as_identity():
    torch.manual_seed(0)
    attn = SelfAttention2d(ch=8, heads=2)
    x = torch.randn(2, 8, 3, 4)
    assert torch.equal(attn(x), x)
    randomize_(attn)
    tokens = attn.norm(x).flatten(2).transpose(1, 2)  # (B, 12, 8)
    q, k, v = (t.reshape(2, 12, 2, 4).transpose(1, 2) for t in attn.to_qkv(tokens).chunk(3, dim=-1))
    ref, _ = naive_attention(q, k, v)
    expected = x + attn.proj_out(ref.transpose(1, 2).reshape(2, 12, 8)).transpose(1, 2).reshape(2, 8, 3, 4)
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_spatial_cross_attention_is_residual_and_exposes_a_map_per_pixel():
    torch.manual_seed(0)
    layer = SpatialCrossAttention(ch=8, context_dim=6, heads=2)
    x, context = torch.randn(2, 8, 3, 3), torch.randn(2, 5, 6)
    assert torch.equal(layer(x, context), x)  # text changes nothing before training
    layer.attn.keep_weights = True
    randomize_(layer)
    out = layer(x, context, torch.ones(2, 5, dtype=torch.bool))
    assert out.shape == x.shape and not torch.allclose(out, x)
    assert layer.attn.last_weights.shape == (2, 2, 9, 5)


def test_heads_must_divide_channels():
    with pytest.raises(ValueError, match="12.*5"):
        SelfAttention2d(12, heads=5)
    with pytest.raises(ValueError, match="12.*5"):
        SpatialCrossAttention(12, context_dim=4, heads=5)


def test_down_and_upsample_halve_and_double():
    x = torch.randn(2, 4, 14, 14)
    assert Downsample(4)(x).shape == (2, 4, 7, 7)
    assert Upsample(4)(x).shape == (2, 4, 28, 28)
    assert Upsample(4, out_ch=2)(x).shape == (2, 2, 28, 28)
    assert Downsample(4)(torch.randn(1, 4, 7, 7)).shape == (1, 4, 4, 4)
