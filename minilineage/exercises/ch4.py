"""Chapter 4 (latent diffusion + CLIP): exercises and their reference answers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minilineage.checkpoint import load_model
from minilineage.data import load_dataset
from minilineage.exercises.core import close_to, register
from minilineage.layers import CrossAttention
from minilineage.models.clip import clip_loss
from minilineage.models.latent import encode_latents

register("ch4.positions", close_to(16.0), "count the positions of a 28x28 image and of a 7x7 latent",
         solution=28 * 28 / (7 * 7))


def _scale(my_scale) -> bool:
    latents = encode_latents(load_model("latent-vae-mnist"), load_dataset("mnist-5k", "test").float_images(), None)
    return close_to(1 / latents.std().item(), rtol=0.05)(my_scale)


register("ch4.scale_factor", _scale, "one over the standard deviation of all the numbers of the mean latents",
         solution=1.1)


def _guides(my_guided) -> bool:
    g = torch.Generator().manual_seed(4)
    eps_cond, eps_uncond = torch.randn(2, 3, 4, generator=g).unbind(0)
    return all(close_to(eps_uncond + w * (eps_cond - eps_uncond))(my_guided(eps_cond, eps_uncond, w))
               for w in (0.0, 1.0, 3.0))


def guided_eps(eps_cond, eps_uncond, w):
    return eps_uncond + w * (eps_cond - eps_uncond)


register("ch4.guidance", _guides, "start from the unconditional prediction and move w times the difference",
         solution=guided_eps)

_E = math.exp(2 / math.sqrt(2))
register("ch4.attention_weights", close_to(torch.tensor([_E, 1.0, 0.0]) / (_E + 1.0)),
         "scores q.k / sqrt(d); the padding token gets -inf; then softmax", solution=[0.80443, 0.19557, 0.0])


def _clip_losses(my_clip_loss) -> bool:
    g = torch.Generator().manual_seed(5)
    image_emb, text_emb = torch.randn(2, 8, 6, generator=g).unbind(0)  # (8, 6) each
    image_emb = image_emb * (0.5 + 3 * torch.rand(8, 1, generator=g))  # unequal lengths: cosines need normalising
    cases = [(torch.tensor([7, 2, 7, 0, 2, 7, 5, 1]), 10.0),  # repeated digits: soft targets matter
             (torch.arange(8), 3.0)]  # all different: the standard diagonal targets
    return all(close_to(clip_loss(image_emb, text_emb, scale, labels))(my_clip_loss(image_emb, text_emb, scale, labels))
               for labels, scale in cases)


def soft_clip_loss(image_emb, text_emb, logit_scale, labels):
    logits = logit_scale * F.normalize(image_emb, dim=1) @ F.normalize(text_emb, dim=1).T  # (N, N)
    same = (labels[:, None] == labels[None, :]).float()  # (N, N): 1 where the digits match
    targets = same / same.sum(dim=1, keepdim=True)  # each row spreads its target over its digit's items
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def _diagonal_only(image_emb, text_emb, logit_scale, labels):  # the standard loss, ignoring the labels
    logits = logit_scale * F.normalize(image_emb, dim=1) @ F.normalize(text_emb, dim=1).T
    targets = torch.arange(len(logits))
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


register("ch4.clip_loss", _clip_losses, "normalise both embeddings, logits = scale * cosines (N x N); the target "
         "of row i is spread evenly over the items with image i's label; average the row and column cross-entropies",
         solution=soft_clip_loss, wrong=_diagonal_only)


def _cross_attends(my_cross_attention) -> bool:
    g = torch.Generator().manual_seed(6)
    layer = CrossAttention(query_dim=8, context_dim=5, heads=1, head_dim=8)
    with torch.no_grad():  # seeded projections; an identity output, so the layer returns softmax(Q K^T / sqrt(d)) V itself
        for linear in (layer.to_q, layer.to_k, layer.to_v):
            linear.weight.copy_(torch.randn(linear.weight.shape, generator=g) / linear.in_features**0.5)
        layer.to_out.weight.copy_(torch.eye(8)), layer.to_out.bias.zero_()
    x, c = torch.randn(10, 8, generator=g), torch.randn(6, 5, generator=g)  # 10 image tokens, 6 text tokens
    mask = torch.tensor([True, True, True, True, False, False])  # the last two are padding
    expected = layer(x[None], c[None], mask[None])[0]  # (10, 8)
    weights = (layer.to_q.weight.T, layer.to_k.weight.T, layer.to_v.weight.T)  # W_q (8, 8), W_k (5, 8), W_v (5, 8)
    return close_to(expected, rtol=1e-4, atol=1e-5)(my_cross_attention(x, c, mask, *weights))


def cross_attention(x, c, mask, W_q, W_k, W_v):
    Q, K, V = x @ W_q, c @ W_k, c @ W_v  # (N_q, d), (M, d), (M, d)
    scores = Q @ K.T / math.sqrt(Q.shape[1])  # (N_q, M)
    scores = scores.masked_fill(~mask, -math.inf)  # padding tokens: weight exactly 0
    return scores.softmax(dim=1) @ V  # (N_q, d): each image token averages the values


def _padding_read(x, c, mask, W_q, W_k, W_v):  # forgets the mask
    return ((x @ W_q) @ (c @ W_k).T / math.sqrt(W_q.shape[1])).softmax(dim=1) @ (c @ W_v)


register("ch4.cross_attention", _cross_attends, "Q from the image tokens, K and V from the text tokens; scores "
         "Q K^T / sqrt(d); padding gets -inf before the softmax over the text tokens; then weights @ V",
         solution=cross_attention, wrong=_padding_read)

register("ch4.log_snr_shift", close_to(2 * math.log(1 / 0.18215), rtol=1e-3),
         "SNR(t) = alpha_bar * Var(z0) / (1 - alpha_bar): multiplying z0 by s multiplies the SNR by s^2",
         solution=2 * math.log(1 / 0.18215))
