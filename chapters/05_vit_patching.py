# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 5 — The Vision Transformer: an image is a sequence of patches
#
# Chapters 3 and 4 denoised with a U-Net, a network of convolutions built for images. Language models went
# another way: one architecture, the transformer, made larger and larger, and it kept getting better. The
# Diffusion Transformer of Chapter 6 (Peebles & Xie 2023) brings that architecture to diffusion by replacing the
# U-Net, and it can do so because of one earlier idea: the Vision Transformer (ViT, Dosovitskiy et al. 2021)
# showed how to turn an image into the kind of input a transformer reads, a sequence of tokens.
#
# **You will learn**
# 1. how an image becomes a sequence: cut it into $p \times p$ patches, flatten each, project it linearly;
# 2. how the patch size sets the sequence length, why attention's cost grows with its square, and at how many tokens
#    attention overtakes the MLP (counted, timed and plotted);
# 3. why a transformer needs position embeddings, measured: without them it cannot tell a digit from its shuffled patches;
# 4. 1-D and 2-D position embeddings, fixed and learned, and what each one knows about the grid;
# 5. what carries over to another resolution and what does not: the weights run on any number of tokens, but
#    accuracy holds only where the position embeddings stay inside the range they were trained on;
# 6. where this leads: a DiT is a VAE encoder, a ViT, DDPM and a VAE decoder, and what a patch-based denoiser
#    recovers from noisy tokens, with and without the label.
#
# The three ViTs used here were trained by the package's own recipes (`minilineage train vit-mnist`,
# `vit-mnist-learned`, `vit-mnist-nopos`) and ship in `assets/checkpoints/`; a "train it yourself" cell near the
# end reproduces them.

# %%
import time

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from IPython.display import Image, display
from matplotlib.figure import Figure
from torch import nn
from torchvision.transforms.v2 import functional as TF

import minilineage
from minilineage.bench import count_flops, peak_memory, start_peak_memory
from minilineage.bench.attention import sublayer_costs
from minilineage.checkpoint import load_model
from minilineage.checks import claim
from minilineage.data import load_dataset
from minilineage.diffusion import NoiseSchedule, q_sample
from minilineage.exercises import exercise, show_solution  # noqa: F401  (show_solution: section 9)
from minilineage.layers import (
    TransformerBlock,
    patchify,
    resample_positions,
    sincos_1d,
    sincos_2d,
    unpatchify,
)
from minilineage.metrics import load_classifier
from minilineage.models.classifier import accuracy
from minilineage.models.vit import ViT, ViTConfig
from minilineage.widgets import (
    cosine_similarities,
    denoised_tokens,
    figure_png,
    grid,
    noised_patches,
    patch_grid,
    png_bytes,
    position_similarity,
    train_with_plot,
    x0_prediction,
)

FAST = minilineage.chapter_setup()  # MINILINEAGE_FAST=1 (CI) keeps training and timing cells short
torch.set_grad_enabled(False)
test = load_dataset("mnist-5k", "test")
x_test, y_test = test.float_images(), test.labels  # (500, 1, 28, 28) in [-1, 1], labels (500,)

# %% [markdown]
# ## 1. An image as a sequence of tokens
#
# A transformer reads a sequence of $N$ vectors. ViT makes one from an image $x \in \mathbb{R}^{H \times W \times C}$ by
# cutting it into $N = HW/p^2$ square patches of $p \times p$ pixels, flattening each patch into a vector
# $x_p^n \in \mathbb{R}^{p^2 C}$, and mapping that vector to the model's width $D$ with one shared matrix
# $E \in \mathbb{R}^{p^2 C \times D}$ (ViT, Eq. 1):
#
# $$z_0 = [\,x_p^1 E;\ x_p^2 E;\ \dots;\ x_p^N E\,] + E_{\text{pos}}, \qquad E_{\text{pos}} \in \mathbb{R}^{N \times D}.$$
#
# `minilineage.layers.patchify` does the cutting with one einops pattern,
# `b c (h p1) (w p2) -> b (h w) (p1 p2 c)`: tokens come in reading order (row by row), and each token lists
# its patch's pixels row by row. It also returns the grid shape $(h, w)$, so `unpatchify` never has to guess it.

# %%
digit = x_test[30:31]  # (1, 1, 28, 28): one test digit
tokens, grid_hw = patchify(digit, 4)  # (1, 49, 16), grid (7, 7)
print(f"a {tuple(digit.shape[1:])} image -> {tokens.shape[1]} tokens of {tokens.shape[2]} numbers on a {grid_hw} grid")
row, col = divmod(17, grid_hw[1])
assert torch.equal(tokens[0, 17], digit[0, 0, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4].flatten())  # token 17: row 2, column 3
assert torch.equal(unpatchify(tokens, grid_hw, 4), digit)  # and back, exactly

# %% [markdown]
# Slide the patch size. Left, the digit cut into patches and numbered in reading order; right, the sequence the
# transformer is given, one row per token. Small patches make a long sequence of short tokens, large patches a
# short sequence of long ones: the product, $N \cdot p^2 C = HWC$, never changes. Many rows are all black:
# tokens of pure background, which the model must learn to ignore.

# %%
patch_grid(x_test[30], patch_sizes=(2, 4, 7, 14))

# %% [markdown]
# **The patch embedding.** The package's ViT applies $E$ as a linear layer on the patchified pixels. Many
# implementations (DiT, timm) use a convolution with kernel size and stride both equal to $p$ instead: every
# output position of such a convolution sees exactly one patch, through the same weights, so it computes the same
# thing. The linear form makes the point that a token is nothing but a flattened patch. Checked on the trained
# model:

# %%
vit = load_model("vit-mnist", expect=ViT)
weight = rearrange(vit.embed.weight, "d (p1 p2 c) -> d c p1 p2", p1=4, p2=4)  # (64, 1, 4, 4)
conv = rearrange(F.conv2d(digit, weight, vit.embed.bias, stride=4), "b d h w -> b (h w) d")  # (1, 49, 64)
print(f"linear on patches vs stride-4 convolution: largest difference {(vit.embed(tokens) - conv).abs().max():.1e}")
assert torch.allclose(vit.embed(tokens), conv, atol=1e-5)

# %% [markdown]
# ## 2. Patch size, sequence length and compute
#
# After the embedding, every block does the same two things to the $N \times D$ sequence. Self-attention
# projects each token to a query, key and value ($3 \cdot 2ND^2$ FLOPs), compares every query with every key
# ($2N^2D$), mixes the values with those weights ($2N^2D$) and projects back ($2ND^2$); the MLP widens each token to
# $4D$ and back ($16ND^2$). Per block:
#
# $$\text{FLOPs} = \underbrace{24\,N D^2}_{\text{per token: linear layers}} + \underbrace{4\,N^2 D}_{\text{between tokens: attention}} .$$
#
# The first term grows with the number of tokens, the second with its square: the quadratic term alone outweighs all
# the linear layers once $N > 6D$, and the attention sublayer as a whole (its projections $8ND^2$ plus $4N^2D$)
# outweighs the MLP ($16ND^2$) once $N > 2D$. Halving the patch size quadruples $N$. Below, the same ViT (width 64, 4 blocks) on a 28 × 28 image at five
# patch sizes: FLOPs counted by `torch.utils.flop_counter` (through `minilineage.bench.count_flops`), next to the
# formula, and the measured time of a forward pass.

# %%
def seconds(fn, repeat: int = 3) -> float:
    """The fastest of `repeat` runs: the least disturbed by whatever else the machine is doing."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


D, DEPTH = 64, 4
BATCH, REPEAT = (16, 3) if FAST else (64, 5)  # images per timed call, timed calls (the fastest counts)
threads = torch.get_num_threads()
torch.set_num_threads(1)  # time on one thread: the cost per image, without thread scheduling in the way
cost = {}
for p in (14, 7, 4, 2, 1):
    model = ViT(ViTConfig(patch=p, width=D, depth=DEPTH)).eval()  # untrained: the cost does not depend on the weights
    n = (28 // p) ** 2
    per_token = n * (2 * p * p * D + DEPTH * 24 * D * D) + 2 * D * 10  # embedding, blocks, head
    between_tokens = DEPTH * 4 * n * n * D
    counted = count_flops(lambda m=model: m(torch.zeros(1, 1, 28, 28)))
    x = torch.zeros(BATCH, 1, 28, 28)
    cost[p] = {"N": n, "counted": counted, "formula": per_token + between_tokens,
               "attention": between_tokens / counted, "ms": seconds(lambda m=model, x=x: m(x), REPEAT) / BATCH * 1e3}
torch.set_num_threads(threads)
print(f"{'patch':>5} {'N':>4} {'MFLOPs/image':>12} {'formula':>8} {'attention':>9} {'ms/image':>8}   growth from the row above")


def exponent(a: dict, b: dict, key: str) -> float:
    """k in cost ~ N^k between two rows: 1 is linear in the number of tokens, 2 quadratic."""
    return np.log(b[key] / a[key]) / np.log(b["N"] / a["N"])


rows = list(cost.values())
for i, (p, c) in enumerate(cost.items()):
    growth = f"FLOPs ~ N^{exponent(rows[i - 1], c, 'counted'):.2f}, time ~ N^{exponent(rows[i - 1], c, 'ms'):.2f}" if i else ""
    print(f"{p:>5} {c['N']:>4} {c['counted'] / 1e6:>12.2f} {c['formula'] / 1e6:>8.2f} {c['attention']:>9.1%} {c['ms']:>8.3f}   {growth}")

# %%
# NBVAL_CHECK_OUTPUT
claim("torch's FLOP counter agrees exactly with 24 N D^2 + 4 N^2 D per block (plus embedding and head) at every patch size",
      all(c["counted"] == c["formula"] for c in cost.values()))
claim("attention is under 2 % of the FLOPs at 4 tokens and over 60 % at 784", cost[14]["attention"] < 0.02 < 0.6 < cost[1]["attention"])
claim("16x the tokens (49 -> 784) costs over 40x the FLOPs: the quadratic term at work", cost[1]["counted"] > 40 * cost[4]["counted"])

# %% [markdown]
# Read the last column: with a handful of tokens the cost grows in proportion to $N$ (exponent about 1); from 196 to
# 784 tokens it grows as $N^{1.5}$, and it would approach $N^2$ as attention took over completely. The measured times
# follow the FLOPs, except at the shortest sequences, where the fixed cost of launching each operation dominates; the
# exact milliseconds depend on your CPU and on what else it is doing.
#
# **Where attention overtakes the MLP.** The two halves of one block, timed apart as the sequence grows
# (`minilineage.bench.attention.sublayer_costs`: width 64, 4 heads, random tokens; the FLOPs counted by torch's
# counter, the time the fastest of a few calls on one thread). The dotted lines mark the sequence lengths of the
# 28 × 28 digit at patch sizes 14, 7, 4, 2 and 1:

# %%
torch.set_num_threads(1)
halves = sublayer_costs(D, [4, 16, 49, 128, 196, 256, 784] + ([] if FAST else [1600, 3136]), repeat=REPEAT)
torch.set_num_threads(threads)
print(f"{'N':>5} {'attention MFLOPs':>16} {'MLP MFLOPs':>10} {'attention ms':>12} {'MLP ms':>7}   attention / MLP: FLOPs, time")
for r in halves:
    print(f"{r['N']:>5} {r['attention_flops'] / 1e6:>16.2f} {r['mlp_flops'] / 1e6:>10.2f} {r['attention_ms']:>12.3f} "
          f"{r['mlp_ms']:>7.3f}   {r['attention_flops'] / r['mlp_flops']:5.2f}, {r['attention_ms'] / r['mlp_ms']:5.2f}")
figure = Figure(figsize=(9, 3.4), dpi=80, layout="constrained")
by_flops, by_time = figure.subplots(1, 2)
n_axis = [r["N"] for r in halves]
for ax, key, unit in ((by_flops, "flops", "FLOPs per sequence"), (by_time, "ms", "ms per sequence (measured)")):
    for half, style in (("attention", "o-"), ("mlp", "s-")):
        ax.plot(n_axis, [r[f"{half}_{key}"] for r in halves], style, lw=2, label="self-attention" if half == "attention" else "MLP")
    for p, n in ((14, 4), (7, 16), (4, 49), (2, 196), (1, 784)):
        ax.axvline(n, color="gray", ls=":", lw=1)
        ax.annotate(f"p={p}", (n, 1), xycoords=("data", "axes fraction"), xytext=(2, -12), textcoords="offset points", fontsize=8)
    ax.set(xscale="log", yscale="log", xlabel="tokens N", ylabel=unit)
by_flops.axvline(2 * D, color="tab:red", lw=1.5, label="N = 2D: equal FLOPs")
by_flops.legend(fontsize=9), by_time.legend(fontsize=9)
display(Image(figure_png(figure)))

# %%
# NBVAL_CHECK_OUTPUT
at = {r["N"]: r for r in halves}
claim("the counted FLOPs of each half are exactly 8 N D^2 + 4 N^2 D and 16 N D^2",
      all(r["attention_flops"] == r["attention_formula"] and r["mlp_flops"] == r["mlp_formula"] for r in halves))
claim("attention costs fewer FLOPs than the MLP below N = 2D = 128 tokens, as many at 128, more above",
      at[49]["attention_flops"] < at[49]["mlp_flops"] and at[128]["attention_flops"] == at[128]["mlp_flops"]
      and at[196]["attention_flops"] > at[196]["mlp_flops"])
claim("at 784 tokens (patch 1) attention takes more measured time than the MLP, and over 3x its FLOPs",
      at[784]["attention_ms"] > at[784]["mlp_ms"] and at[784]["attention_flops"] > 3 * at[784]["mlp_flops"])

# %% [markdown]
# Two crossovers, then: in FLOPs, attention overtakes the MLP at exactly $N = 2D$ (128 tokens for $D = 64$, between
# patch 4 and patch 2 on a digit); its quadratic term alone overtakes all the linear layers at $N = 6D$ (exercise 3).
# In measured time, attention usually crosses earlier and pulls away faster than its FLOPs say: the MLP is two large
# matrix products, which a CPU runs near its peak, while attention adds a softmax over $N^2$ scores per head and
# small per-head products, which run further from it. (Where exactly the timed curves cross depends on the CPU, its
# load and torch's attention kernel, so only the robust end of it is checked above.) This is the cost that chapter 7
# meets head-on: a video multiplies the tokens by the number of frames, and full spacetime attention pays for every
# pair. The course's ViTs use $p = 4$: 49 tokens, a resolution fine enough for the strokes of a digit, at a cost where
# attention is still the smaller half. Chapter 6 meets the same trade-off in its scaling study, where the same DiT
# is cut into patches of 4 and of 7.
#
# ## 3. The ViT classifier
#
# The rest of the model is a standard transformer encoder. Each block is *pre-norm* (ViT, Eqs. 2–3):
# $z' = z + \mathrm{MSA}(\mathrm{LN}(z))$, then $z'' = z' + \mathrm{MLP}(\mathrm{LN}(z'))$, with attention through
# `torch.nn.functional.scaled_dot_product_attention`. At the end the $N$ output tokens are averaged and a
# linear layer reads the class, as in Beyer et al. 2022 ("Better plain ViT baselines"). ViT's original choice, an
# extra learned class token whose output is read, is the other common one; the average needs no special token and
# treats every sequence length alike.

# %%
models = {name: load_model(f"vit-mnist{suffix}", expect=ViT)
          for name, suffix in (("sincos", ""), ("learned", "-learned"), ("none", "-nopos"))}
print(vit.config)
print(f"{sum(q.numel() for q in vit.parameters()):,} parameters")
for name, model in models.items():
    info = model.checkpoint_info
    print(f"pos_embed={name:8s} {info['command']}: {info['step']} steps, {info['wall_time_s']} s on {info['device']}")

# %% [markdown]
# ## 4. Why position embeddings: attention reads a set
#
# Self-attention has no notion of order. Permute the input tokens and every query still meets the same keys and
# values, so the outputs come out permuted the same way; the MLP and LayerNorm act on each token alone, and the
# average at the end forgets the order altogether. A ViT *without* position embeddings therefore sees a bag of
# patches: shuffle a digit's patches and its prediction cannot change. Here is the test, on every test digit with its
# 49 patches put in one random order:

# %%
order = torch.randperm(49, generator=torch.Generator().manual_seed(0))
tokens_test, grid_hw = patchify(x_test, 4)  # (500, 49, 16)
shuffled = unpatchify(tokens_test[:, order], grid_hw, 4)  # (500, 1, 28, 28): the same patches, elsewhere
display(Image(png_bytes(grid(torch.cat([x_test[::50], shuffled[::50]]), nrow=10), scale=2)))
logits = {name: (model(x_test), model(shuffled)) for name, model in models.items()}  # 2 x (500, 10) per model
bag_difference = (logits["none"][0] - logits["none"][1]).abs().max().item()
results = {name: tuple((out.argmax(1) == y_test).float().mean().item() for out in pair) for name, pair in logits.items()}
print(f"no positions: largest change of any logit after shuffling = {bag_difference:.1e} (float rounding)")
for name, (plain, mixed) in results.items():
    print(f"pos_embed={name:8s} accuracy {plain:.1%} on the test digits, {mixed:.1%} with their patches shuffled")

# %%
# NBVAL_CHECK_OUTPUT
claim("without position embeddings, shuffling the patches changes no logit by more than 1e-4", bag_difference < 1e-4)
claim("with sin-cos or learned positions, shuffled digits fall below 40 % accuracy",
      max(results["sincos"][1], results["learned"][1]) < 0.4)
claim("a bag of patches still classifies over 65 % of the digits, but at least 15 points fewer than the sin-cos ViT",
      0.65 < results["none"][0] < results["sincos"][0] - 0.15)

# %% [markdown]
# What the bag of patches can do: recognise a digit from *which* 4 × 4 pieces of stroke it contains (curves,
# crossings, line ends, how much ink), and that already separates most digits. What it cannot do: tell apart two
# images made of the same pieces. The shuffled digits above are, to this model, exactly the real ones. Where it
# goes wrong, on all 500 test digits (rows: the true digit, columns: what the model says), and the pairs it mixes up
# most, counting both directions:

# %%
def confusion(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Counts (10, 10): row = true digit, column = predicted digit."""
    return torch.bincount(labels * 10 + logits.argmax(1), minlength=100).reshape(10, 10)


def most_confused(counts: torch.Tensor, k: int = 4) -> list[tuple[int, int, int]]:
    """The k pairs of digits (a, b) most often mistaken for each other, either way: (count, a, b)."""
    both = counts + counts.T
    return sorted(((both[a, b].item(), a, b) for a in range(10) for b in range(a + 1, 10)), reverse=True)[:k]


matrices = {name: confusion(logits[name][0], y_test) for name in ("none", "sincos")}
print("pos_embed=none: confusion matrix (rows: true digit, columns: predicted)")
print("      " + " ".join(f"{j:>3}" for j in range(10)))
for i, row in enumerate(matrices["none"]):
    print(f"  {i}:  " + " ".join(f"{c:>3}" for c in row.tolist()))
pairs_none = most_confused(matrices["none"])
print("most confused pairs without positions:", ", ".join(f"{a} and {b} ({c})" for c, a, b in pairs_none))
print("the same pairs with sin-cos positions: ",
      ", ".join(f"{a} and {b} ({matrices['sincos'][a, b] + matrices['sincos'][b, a]})" for _, a, b in pairs_none))

# %%
# NBVAL_CHECK_OUTPUT
claim("without positions, the four most confused pairs are 2-9, 2-5, and 0-6 and 6-8 (the last two tied)",
      [{a, b} for _, a, b in pairs_none[:2]] == [{2, 9}, {2, 5}] and {frozenset((a, b)) for _, a, b in pairs_none[2:]}
      == {frozenset((0, 6)), frozenset((6, 8))})
claim("with sin-cos positions, those four pairs are confused at most once each (500 digits)",
      all(matrices["sincos"][a, b] + matrices["sincos"][b, a] <= 1 for _, a, b in pairs_none))

# %% [markdown]
# The bag of patches mixes up the pairs built from similar pieces in different places: 2 and 9, 2 and 5 (a bar, a
# curve, a bar, in another order), 0 and 6, 6 and 8 (loops). With positions, each of those pairs is confused at most
# once in 500 digits, and the shuffled digits become as unreadable to the model as they are to us.
#
# ## 5. One and two dimensions, fixed and learned
#
# **Learned** (ViT's default): $E_{\text{pos}}$ is a parameter, one vector per position, trained with everything else.
# Nothing tells it that position 7 sits below position 0. **Fixed sine-cosine**, the transformer's original recipe
# (Vaswani et al. 2017), puts a position $n$ on sinusoids of geometrically spaced frequencies, the same function as
# Chapter 3's timestep embedding (`sincos_1d`): first all $D/2$ cosines, then all $D/2$ sines,
#
# $$E(n) = \big[\cos(n\,\omega_0), \dots, \cos(n\,\omega_{D/2-1}),\ \sin(n\,\omega_0), \dots, \sin(n\,\omega_{D/2-1})\big],
#   \qquad \omega_k = 10000^{-k/(D/2)} .$$
#
# Applied to the raster index $n = i\,w + j$ it is **1-D**: the patch at the end of a row and the one at the start of the
# next are neighbours. The **2-D** version of MAE and DiT (`sincos_2d`) gives the first $D/2$ channels to the row $i$ and
# the last $D/2$ to the column $j$, each a 1-D embedding of width $D/2$, so each axis has its own $D/4$ frequencies
# $\omega_k = 10000^{-k/(D/4)}$:
#
# $$E_{\text{pos}}(i, j) = \big[\,\cos(i\,\omega_k)_{k < D/4},\ \sin(i\,\omega_k)_{k < D/4}\ \big|\
#   \cos(j\,\omega_k)_{k < D/4},\ \sin(j\,\omega_k)_{k < D/4}\,\big].$$
#
# (MAE's and DiT's code put each axis's sines before its cosines; the order is a fixed permutation of channels, which
# changes nothing a model can learn, but a trained model must be given the order it was trained with.) The formula,
# written out, is the package's table exactly:

# %%
def sincos_2d_by_formula(h: int, w: int, dim: int) -> torch.Tensor:
    """E_pos(i, j) above, one token at a time, in token order: (h w, dim)."""
    omega = 10000 ** (-torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))  # (D/4,)
    rows = [torch.cat([torch.cos(i * omega), torch.sin(i * omega), torch.cos(j * omega), torch.sin(j * omega)])
            for i in range(h) for j in range(w)]
    return torch.stack(rows).float()  # (h w, D)


# NBVAL_CHECK_OUTPUT
claim("sincos_2d((7, 7), 64) is the formula above to 1e-5 (16 frequencies per axis, cosines before sines)",
      torch.allclose(sincos_2d((7, 7), 64), sincos_2d_by_formula(7, 7, 64), atol=1e-5))
claim("and sincos_1d(49, 64) is E(n) with its 32 frequencies",
      torch.allclose(sincos_1d(49, 64), torch.cat([torch.cos(torch.arange(49.0)[:, None] * 10000 ** (-torch.arange(32) / 32)),
                                                   torch.sin(torch.arange(49.0)[:, None] * 10000 ** (-torch.arange(32) / 32))], 1),
                     atol=1e-5))

# %% [markdown]
#
# Pick a patch with the slider. Each map shows, for one embedding, the cosine similarity of that patch's embedding to
# every other patch's (white = identical, black = the least similar pair in that table): left to right 2-D sin-cos,
# 1-D sin-cos over the raster index, and the table `vit-mnist-learned` learned.

# %%
embeddings = {"sin-cos 2-D": sincos_2d((7, 7), 64), "sin-cos 1-D (raster index)": sincos_1d(49, 64),
              "learned (trained)": models["learned"].pos.table}
position_similarity(embeddings, x_test[30], p=4)

# %% [markdown]
# The 2-D map is a blob around the chosen patch, with a cross along its row and column (they share half the
# channels). The 1-D map is a horizontal band that spills over the row ends. The learned table was given no hint of a
# grid, yet training found one. One number measures it: the similarity of a patch to the patch *below* it (7 steps
# away in reading order, next door in the image) against its similarity to the patch that follows it across a row end
# (1 step away in reading order, the far side of the image).

# %%
def neighbour_similarities(pos: torch.Tensor) -> tuple[float, float]:
    """Mean cosine similarity of vertical neighbours (i, j)-(i+1, j), and of row-end pairs (i, 6)-(i+1, 0)."""
    sims = cosine_similarities(pos)  # (49, 49)
    below = torch.stack([sims[n, n + 7] for n in range(42)]).mean().item()
    across_row_end = torch.stack([sims[7 * i + 6, 7 * i + 7] for i in range(6)]).mean().item()
    return below, across_row_end


structure = {name: neighbour_similarities(pos) for name, pos in embeddings.items()}
for name, (below, wrap) in structure.items():
    print(f"{name:28s} patch below: {below:+.3f}   next across the row end: {wrap:+.3f}")

# %%
# NBVAL_CHECK_OUTPUT
claim("2-D sin-cos: the patch below is more similar than the next one across a row end",
      structure["sin-cos 2-D"][0] > structure["sin-cos 2-D"][1])
claim("1-D sin-cos over the raster index: the other way round", structure["sin-cos 1-D (raster index)"][0] < structure["sin-cos 1-D (raster index)"][1])
claim("the learned table found the 2-D grid from the data alone", structure["learned (trained)"][0] > structure["learned (trained)"][1] + 0.1)

# %% [markdown]
# ## 6. Another resolution: the weights run, the positions decide
#
# Nothing in a transformer fixes the number of tokens: the same weights process 25 tokens or 121. A 20 × 20 image in
# 4 × 4 patches is a 5 × 5 grid, a 44 × 44 image an 11 × 11 grid. This is the point the article makes about Sora: a ViT
# (and so a DiT) can *run* at any resolution and any duration; NaViT (Dehghani et al. 2023) did not make that
# possible, it made it *efficient*, by packing sequences of different lengths into one training batch. Running is not
# reading, though, and the table below separates the two.
#
# The model runs at any size; the question is what its position embeddings say at the new one:
# - **sin-cos** is a function, evaluated for whatever grid arrives. Two readings: *absolute* positions $0, 1, 2, \dots$ (a
#   patch keeps the position it would have at the training size; new patches get new positions), or *stretched*
#   positions $i \cdot 7/g$ (the new $g \times g$ grid spans the trained 7 × 7 range).
# - **learned** has 49 vectors for a 7 × 7 grid. A 9 × 9 grid has 32 positions it never learned, and the first 25 vectors
#   are not a 5 × 5 grid. The package refuses rather than guess; the standard fix (ViT, Sec. 3.2) is to resize the table
#   like an image (`resample_positions`, bicubic), which amounts to stretching.

# %%
try:
    models["learned"](torch.zeros(1, 1, 36, 36))
except ValueError as error:
    print("ValueError:", error)

# %% [markdown]
# The protocol: the test digits (all 500; 250 in fast mode) made 20 × 20, 36 × 36 and 44 × 44 in two ways.
# *Resized*: the whole picture rescaled (bilinear with antialiasing), so the digit fills the frame as in training but
# each patch covers a different piece of it. *Padded / cropped*: the pixels kept as they are, on a larger canvas of
# background, or with the 4-pixel border removed (MNIST digits sit inside the central 20 × 20). No model saw anything
# but 28 × 28 in training. Each model is then run with the position embedding of each reading above.

# %%
x_eval, y_eval = (x_test[::2], y_test[::2]) if FAST else (x_test, y_test)  # fast mode: every other test digit


def resized(size: int) -> torch.Tensor:
    return TF.resize(x_eval, [size, size], antialias=True).clamp(-1, 1)  # (n, 1, size, size)


def padded(size: int) -> torch.Tensor:
    k = (size - 28) // 2
    return F.pad(x_eval, (k, k, k, k), value=-1.0) if k > 0 else TF.center_crop(x_eval, [size, size])


def readings(size: int) -> dict:
    """How each model is run at a g x g grid: (model, position embedding to use)."""
    g = size // 4
    return {"sin-cos, absolute": (models["sincos"], sincos_2d((g, g), 64)),
            "sin-cos, stretched": (models["sincos"], sincos_2d((g, g), 64, scale=7 / g)),
            "learned, interpolated": (models["learned"], resample_positions(models["learned"].pos.table, (7, 7), (g, g))),
            "none": (models["none"], None)}


table = {}
for protocol, make, sizes in (("resized", resized, (20, 28, 36, 44)), ("padded", padded, (20, 36, 44))):
    for size in sizes:  # 25, 49, 81, 121 tokens (padded 28 x 28 would be the originals again)
        x = make(size)
        table[protocol, size] = {name: accuracy(lambda v, m=model, pos=pos: m(v, pos=pos), x, y_eval)
                                 for name, (model, pos) in readings(size).items()}
names = list(readings(28))
print(f"{len(x_eval)} test digits at each size")
print(f"{'digits':>17} {'tokens':>6} " + " ".join(f"{name:>21}" for name in names))
for (protocol, size), row in table.items():
    print(f"{protocol:>8} {size} x {size} {(size // 4) ** 2:>6} " + " ".join(f"{row[name]:>21.1%}" for name in names))

# %%
# NBVAL_CHECK_OUTPUT
at28, resized_rows = table["resized", 28], [table["resized", size] for size in (20, 36, 44)]
table_at_28 = resample_positions(models["learned"].pos.table, (7, 7), (7, 7))
claim("at the training size, stretching and interpolating change nothing (same embeddings, same accuracy)",
      torch.equal(sincos_2d((7, 7), 64, scale=1.0), sincos_2d((7, 7), 64)) and at28["sin-cos, absolute"] == at28["sin-cos, stretched"]
      and torch.allclose(table_at_28, models["learned"].pos.table, atol=1e-5))
claim("stretched sin-cos reads the resized 20, 36 and 44 pixel digits (25 to 121 tokens) at over 88 %",
      min(row["sin-cos, stretched"] for row in resized_rows) > 0.88)
claim("the interpolated learned table reads them at over 85 %", min(row["learned, interpolated"] for row in resized_rows) > 0.85)
claim("absolute sin-cos positions fail where they go beyond the trained 0-6: under 50 % at 44 x 44 (positions 0-10)",
      table["resized", 44]["sin-cos, absolute"] < 0.5 and table["padded", 44]["sin-cos, absolute"] < 0.5)

# %% [markdown]
# Reading the table (the numbers are these checkpoints'; retrain and the decimals move, the pattern holds):
# - The model runs at every size: 25, 49, 81 or 121 tokens through the same weights. That much transfers for free.
# - **What does not transfer is a position outside the trained range.** With absolute sin-cos positions the 44 × 44
#   grid has rows and columns 7 to 10, which the model met nowhere in training, and accuracy collapses to the figure in
#   the table (under 50 %, checked above), although the function is defined there. Stretched over the trained range,
#   the same embedding function reads every size well: what transfers is a position *inside* the range it was trained
#   on, at a new spacing. The gaps between the stretched rows are mostly within the noise of a few hundred digits
#   (below).
# - The learned table, resized like an image, does almost as well as stretched sin-cos. Without that step it has no
#   answer at all for a larger grid.
# - Without positions, resizing changes what each patch contains, and the bag of patches, which has nothing else to go
#   on, suffers most.
# - On a larger *canvas* (padded) the digit covers less of the grid; stretched positions still cope best.
#
# A model *trained* on several sizes (NaViT; Sora's training at native sizes and durations) learns to use all of them;
# Chapter 7 trains that way with size buckets (`minilineage.data.bucket_batches`).
#
# **How much of a gap is noise?** An accuracy measured on $n$ digits has a binomial standard error
# $\sqrt{p(1-p)/n}$. The stretched sin-cos row at 36 × 36 against 28 × 28:

# %%
n_eval = len(y_eval)
acc28, acc36 = table["resized", 28]["sin-cos, stretched"], table["resized", 36]["sin-cos, stretched"]
standard_error = (acc28 * (1 - acc28) / n_eval) ** 0.5
print(f"28 x 28: {acc28:.1%}, 36 x 36: {acc36:.1%} of {n_eval} digits: a gap of {round((acc36 - acc28) * n_eval)} digits; "
      f"standard error of one accuracy {standard_error:.1%}")

# %%
# NBVAL_CHECK_OUTPUT
claim("the stretched 36 x 36 and 28 x 28 accuracies differ by less than two standard errors of one of them: noise, "
      "not a finding", abs(acc36 - acc28) < 2 * standard_error)

# %% [markdown]
# A gap of a few digits in a few hundred is what a second draw of digits could reverse; telling such sizes apart
# would take many more digits, or a paired test on the same digits (exercise 5). What the table does show beyond
# noise: absolute positions beyond the trained range fail, at 44 × 44 by tens of points.
#
# ## 7. Towards Chapter 6: DiT = VAE encoder + ViT + DDPM + VAE decoder
#
# A Diffusion Transformer replaces the U-Net of latent diffusion with a ViT that outputs a token per patch instead of
# a class. Every piece already exists in this course: Chapter 4's autoencoder maps a digit to a $4 \times 7 \times 7$
# latent, Chapter 3's forward process noises it, `patchify` makes tokens, transformer blocks process them, `unpatchify`
# and the decoder bring them back. The shapes along the way (the transformer here is untrained, only the plumbing is
# shown; Chapter 6 trains it and conditions every block on $t$ and the label with adaLN-Zero):

# %%
vae = load_model("latent-vae-mnist")
scale = vae.checkpoint_info["metrics"]["latent_scale"]
sched = NoiseSchedule.named("cosine", 1000)
z0 = vae.encode(x_test[:8])[0] * scale  # (8, 4, 7, 7): the mean latent, scaled to unit variance
t = torch.full((8,), 500)
zt = q_sample(sched, z0, t, torch.randn(z0.shape, generator=torch.Generator().manual_seed(0)))  # (8, 4, 7, 7)
tokens, grid_hw = patchify(zt, 1)  # (8, 49, 4): one token per latent position
width = 64
to_width, from_width = nn.Linear(4, width), nn.Linear(width, 4)
h = to_width(tokens) + sincos_2d(grid_hw, width)  # (8, 49, 64)
for block in [TransformerBlock(width, heads=4) for _ in range(2)]:
    h = block(h)  # (8, 49, 64)
eps_hat = unpatchify(from_width(h), grid_hw, 1)  # (8, 4, 7, 7): a predicted noise, once trained
x0_hat = vae.decode(z0 / scale)  # (8, 1, 28, 28): what the decoder turns a clean latent back into
for name, value in [("image x0", x_test[:8]), ("latent z0 = E(x0)", z0), ("noised z_t", zt), ("tokens", tokens),
                    ("transformer width", h), ("predicted eps", eps_hat), ("decoded D(z0)", x0_hat)]:
    print(f"{name:>18}: {tuple(value.shape)}")

# %% [markdown]
# In pixel space a DiT sees $x_t$ itself cut into patches. Slide $t$ and pick a patch size: the tokens a DiT
# receives are noisy patches, and at large $t$ each one is nearly pure noise. (The latent DiT's 49 tokens of 4 numbers
# each summarise a 4 × 4 pixel area, as the 49 tokens of $p = 4$ here do with 16 raw pixels.)

# %%
noised_patches(x_test[::100][:4], patch_sizes=(2, 4, 7), generator=torch.Generator().manual_seed(0))

# %% [markdown]
# **What a patch-based denoiser recovers.** Chapter 6's `dit-mnist` is exactly such a denoiser: a transformer of this
# chapter's size on $p = 4$ pixel patches, trained to undo $q(x_t \mid x_0)$. Given $x_t$'s 49 tokens, one call of it
# predicts the clean image $\hat x_0$, token by token. Slide $t$: left the noisy tokens, then $\hat x_0$ given the
# digit's true label, $\hat x_0$ given no label (the null class of classifier-free guidance), and the digit itself.
# The caption gives each prediction's squared error.

# %%
dit = load_model("dit-mnist")
denoised_tokens(dit, x_test[::100][:4], y_test[::100][:4], scale=2)

# %% [markdown]
# Where does $\hat x_0$ come from: the tokens or the label? Give the model a *wrong* label, the next digit up, and ask
# LeNet (Chapter 3's classifier of samples) what each $\hat x_0$ shows. At small $t$ the tokens still hold the digit;
# at large $t$ every token is almost pure noise ($\text{SNR} \ll 1$), and the answer has to come from somewhere else:

# %%
lenet = load_classifier()
print(f"LeNet reads {accuracy(lenet, x_test, y_test):.1%} of the 500 test digits themselves as labelled")
x_probe, y_probe = x_test[::2], y_test[::2]  # 250 test digits
wrong_label = (y_probe + 1) % 10
eps_probe = torch.randn(x_probe.shape, generator=torch.Generator().manual_seed(0))
who_decides = {}
for t_value in (100, 300, 500, 700, 800, 900, 950, 990):
    t_probe = torch.full((len(x_probe),), t_value)
    xt_probe = q_sample(dit.sched, x_probe, t_probe, eps_probe)  # (250, 1, 28, 28)
    read = {name: lenet(x0_prediction(dit, xt_probe, t_probe, y=label)).argmax(1)
            for name, label in (("true", y_probe), ("wrong", wrong_label), ("none", torch.full_like(y_probe, 10)))}
    who_decides[t_value] = {name: ((r == y_probe).float().mean().item(), (r == wrong_label).float().mean().item())
                            for name, r in read.items()}
print("share of x0_hat that LeNet reads as the true digit, given the true label / no label / the wrong label;"
      " last column: read as the wrong label")
print(f"{'t':>4} {'SNR(t)':>8} {'true label':>11} {'no label':>9} {'wrong label':>12}   {'as the wrong label':>18}")
for t_value, row in who_decides.items():
    print(f"{t_value:>4} {dit.sched.snr(torch.tensor(t_value)).item():8.4f} {row['true'][0]:>11.1%} {row['none'][0]:>9.1%} "
          f"{row['wrong'][0]:>12.1%}   {row['wrong'][1]:>18.1%}")

# %%
# NBVAL_CHECK_OUTPUT
claim("at t <= 300 the tokens decide: given the wrong label, over 90 % of the predictions still show the true digit",
      min(who_decides[t]["wrong"][0] for t in (100, 300)) > 0.9)
claim("at t >= 900 the label decides: given the wrong label, over 95 % show the wrong label, none the true digit",
      min(who_decides[t]["wrong"][1] for t in (900, 950, 990)) > 0.95
      and max(who_decides[t]["wrong"][0] for t in (900, 950, 990)) < 0.02)
claim("with no label at t = 990 the true digit comes out about as often as chance (under 20 %)", who_decides[990]["none"][0] < 0.2)

# %% [markdown]
# So at large $t$ the model does not recover the digit by attending to the other tokens: they are noise too. It draws
# the digit the *label* asks for, in the shape its training made typical (the prior), and without a label, whatever
# digit; the tokens only take over as the noise falls (around $t = 700$ here the two are at par). This is why the
# label, and classifier-free guidance on it, matter most in the first steps of sampling, and why a DiT must carry the
# condition into every block (Chapter 6's adaLN-Zero).

# %% [markdown]
# ## 8. Train it yourself
#
# `train_with_plot` runs the same function as `minilineage train vit-mnist`: 1,200 steps of batch 128 on the
# 4,500 `mnist-5k` training digits (each shifted by up to 2 pixels), AdamW with weight decay 0.05, warm-up and
# cosine decay. Fast mode runs 20 steps (far too few to learn much: it shows the loop and measures a step). Time and
# peak memory are measured here, on your machine:

# %%
cpu = torch.device("cpu")
baseline = start_peak_memory(cpu)
result = train_with_plot("vit-mnist", steps=20 if FAST else None, out=None, progress=not FAST, device="cpu")
peak = peak_memory(cpu, baseline)
record = result.record
print(f"{record['step']} steps in {record['wall_time_s']} s ({record['wall_time_s'] / record['step']:.2f} s/step) on "
      f"{record['device']}; peak memory {'n/a' if peak is None else f'{peak / 2**20:.0f} MB'} above the notebook's; "
      f"{record['metrics']}")

# %% [markdown]
# The shipped checkpoints were made with `OMP_NUM_THREADS=1 minilineage train vit-mnist --out assets/checkpoints`
# (and `vit-mnist-learned`, `vit-mnist-nopos`) on one thread of a busy 2-core machine; their records (section 3) give
# the time, 7 to 9 minutes each. `--preset gpu` trains a wider and deeper ViT (width 128, 6 blocks) on all 60,000
# MNIST digits.
#
# ## 9. Exercises
#
# Run an exercise's cell to check your answer; `show_solution("ch5.token_shape")` (with the exercise's name) prints
# the reference answer. Try first.
#
# **Exercise 1.** A 32 × 32 colour image (C = 3) cut into 4 × 4 patches: how many tokens, and how many numbers in each?

# %%
my_shape = None  # (number of tokens, numbers per token)
exercise("ch5.token_shape", my_shape)

# %% [markdown]
# **Exercise 2.** Write `patchify` for $p = 4$ with `reshape` and `permute` only (no einops): a function of a batch
# `x` (B, C, H, W) that returns its tokens (B, N, 16 C) in the package's token order. The check tries two channels.

# %%
my_patchify = None  # def my_patchify(x): ...
exercise("ch5.patchify", my_patchify)

# %% [markdown]
# **Exercise 3.** For width $D = 64$, at what sequence length $N$ do a block's attention FLOPs ($4N^2D$) equal its
# linear layers' ($24ND^2$)? Which patch size of section 2 comes closest?

# %%
my_crossover = None  # a number of tokens
exercise("ch5.attention_crossover", my_crossover)

# %% [markdown]
# **Exercise 4.** Build the 2-D sin-cos embedding from two 1-D ones (`sincos_1d`): a function of the grid height `h`,
# width `w` and width `dim` that returns the (h w, dim) table in token order, as `sincos_2d((h, w), dim)` does.

# %%
my_sincos_2d = None  # def my_sincos_2d(h, w, dim): ...
exercise("ch5.sincos_2d", my_sincos_2d)

# %% [markdown]
# **Exercise 5.** In section 6 the stretched sin-cos ViT scored a few digits better at 36 × 36 than at 28 × 28. What is
# the standard error of an accuracy of 95.2 % measured on 250 digits (a fraction, e.g. 0.02 for two points)? Then, to
# think about: both accuracies come from the *same* 250 digits, so most digits are right at both sizes; only the
# digits right at one size and wrong at the other carry information. How would you test the gap using only those
# (McNemar's test), and how many such digits would a real one-point gain need?

# %%
my_standard_error = None  # a fraction
exercise("ch5.standard_error", my_standard_error)

# %% [markdown]
#
# ## What goes wrong, and what comes next
#
# - A ViT turns an image into a sequence, and then everything that works for sequences works for images.
# - Its cost grows with the square of the sequence length: patch size is the knob that trades detail for compute.
# - Attention alone reads a set; position embeddings put the patches back on the grid. The weights run on any number
#   of tokens, but a model reads a new resolution only where its positions stay inside the trained range: stretched
#   sin-cos or an interpolated learned table read the resized 20 to 44 pixel digits at over 85 %, absolute sin-cos fell
#   below 50 % at 44 × 44. Reading any resolution well takes that, or training on many (NaViT, chapter 7's size buckets).
# - On 4,500 digits our ViT trails the course's small CNN (LeNet, 97.6 %): without convolutions' built-in locality it has
#   to learn from data what a CNN is given. Transformers pay that back at scale, which is why DiT chose them:
#   Chapter 6 replaces the U-Net with this architecture, conditions it on the timestep and label, and measures how its
#   samples improve with model size and patch size.
