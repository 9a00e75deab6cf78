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
# # Chapter 4 — Latent diffusion, a CLIP text encoder, and cross-attention
#
# Chapter 3 left two problems. Every sampling step runs a full U-Net on a full-size image, so the
# cost grows with steps × pixels; and the model listens to a class label, not to words. Latent diffusion
# (Rombach et al. 2022, the model behind Stable Diffusion) answers both:
#
# * **Compress first, diffuse later.** An autoencoder, trained once, maps each image to a small latent map
#   that keeps what the image looks like and drops what the eye barely notices. Diffusion, which is run
#   over and over, works only on that map. Stable Diffusion turns a 512×512×3 image into a 64×64×4 latent;
#   ours turns a 28×28 digit into a 7×7×4 latent.
# * **Condition on text through cross-attention.** A text encoder turns the prompt into a sequence of token
#   vectors; every position of the U-Net's feature map *queries* those tokens and pulls in what it needs.
#   Stable Diffusion borrows the text encoder of CLIP (Radford et al. 2021); we train a small CLIP ourselves.
#
# **You will learn**
# 1. why diffusion in latent space is cheaper, measured per training step and per sample;
# 2. the latent autoencoder and the scale factor that gives its latents unit variance;
# 3. how CLIP learns a shared text–image space from an $N \times N$ similarity matrix, and zero-shot classification;
# 4. cross-attention, derived and checked against a naive loop;
# 5. a text-conditioned latent U-Net, classifier-free guidance with the empty prompt, and where each word acts.

# %%
import math
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from IPython.display import Image, display
from torch.utils.flop_counter import FlopCounterMode

import minilineage
from minilineage.checkpoint import load_model
from minilineage.checks import claim
from minilineage.exercises import exercise, show_solution
from minilineage.data import caption_batches, digit_prompts, load_dataset, to_uint8
from minilineage.diffusion import DiffusionPipeline, ddim_sample, diffusion_loss
from minilineage.layers import CrossAttention
from minilineage.metrics import evaluate_samples
from minilineage.models import UNet
from minilineage.models.clip import MiniCLIP, clip_loss, zero_shot_accuracy
from minilineage.models.latent import LatentVAE, encode_latents, latent_scale_factor
from minilineage.models.unet import UNetConfig
from minilineage.recipes import RECIPES
from minilineage.train import fit
from minilineage.widgets import (
    attention_figure,
    figure_png,
    grid,
    latent_strip,
    png_bytes,
    similarity_explorer,
    text_to_image,
    train_with_plot,
)

FAST = minilineage.chapter_setup()
torch.set_grad_enabled(False)
train, test = load_dataset("mnist-5k", "train"), load_dataset("mnist-5k", "test")
x_test = test.float_images()  # (500, 1, 28, 28) in [-1, 1]
ldm = load_model("ldm-mnist", expect=DiffusionPipeline)  # holds its own frozen VAE and text encoder
vae = load_model("latent-vae-mnist", expect=LatentVAE)
clip = load_model("clip-mnist", expect=MiniCLIP)


# %% [markdown]
# ## 1. Why diffusion in latent space
#
# Most of the bits of an image describe details we hardly see: the exact grey level of each edge pixel, faint
# noise. Rombach et al. call removing them *perceptual compression*, and learning what the image shows
# *semantic compression*. A pixel-space diffusion model spends its compute on both, at every one of its many
# steps. Latent diffusion hands the perceptual part to an autoencoder, trained once, and runs diffusion on
# the small latent it produces:
#
# $$x \in \mathbb{R}^{1 \times 28 \times 28} \;\xrightarrow{\ \mathcal{E}\ }\; z \in \mathbb{R}^{4 \times 7 \times 7}
# \;\xrightarrow{\text{diffusion on } z}\; \hat z \;\xrightarrow{\ \mathcal{D}\ }\; \hat x .$$
#
# A convolution's cost grows with the number of positions it slides over, and self-attention's with its square.
# The latent has 49 positions where the image has 784. Count the floating-point operations of one training
# step (forward and backward, batch 128) for two U-Nets **of equal width** (64 channels everywhere,
# self- and cross-attention at 7×7): the one our latent model uses, and the pixel-space U-Net that needs two extra
# levels (28×28 and 14×14) to reach the same 7×7 bottleneck. A third row shows Chapter 3's DDPM, made cheaper
# by working on 2×2 pixel blocks.

# %%
# NBVAL_CHECK_OUTPUT
text = ldm.conditioning(128, prompt=digit_prompts(128))  # (128, 16, 64) text tokens, shared by every U-Net below
context, mask = text["context"], text["context_mask"]
latent_unet = ldm.net.config
nets = {
    "latent U-Net, 7x7x4 latents": (UNet(latent_unet), (4, 7, 7)),
    "pixel U-Net, 28x28 pixels": (UNet(replace(latent_unet, in_channels=1, channel_mults=(1, 1, 1),
                                               attention_levels=(2,))), (1, 28, 28)),
    "Chapter 3 U-Net, 2x2 blocks": (UNet(UNetConfig(**{**RECIPES["ddpm-mnist"].model_config["denoiser"]["config"],
                                                       "num_classes": None, "context_dim": 64})), (1, 28, 28)),
}


def training_step(net: UNet, shape: tuple[int, ...]) -> torch.Tensor:
    """Forward + backward of the diffusion loss on a batch of 128 (the optimizer update is negligible)."""
    with torch.enable_grad():
        x = torch.randn(128, *shape)
        loss = F.mse_loss(net(x, torch.randint(0, 1000, (128,)), context=context, context_mask=mask), x)
        loss.backward()
    return loss


flops = {}
for name, (net, shape) in nets.items():
    with FlopCounterMode(display=False) as counter:
        training_step(net, shape)
    flops[name] = counter.get_total_flops()
    params = sum(p.numel() for p in net.parameters()) / 1e6
    print(f"{name:30s} {params:4.2f} M parameters, {flops[name] / 1e9:6.1f} GFLOP per training step")
latent = flops["latent U-Net, 7x7x4 latents"]
print(f"latent is {flops['pixel U-Net, 28x28 pixels'] / latent:.1f}x cheaper than the equal-width pixel U-Net, "
      f"{flops['Chapter 3 U-Net, 2x2 blocks'] / latent:.1f}x cheaper than Chapter 3's")

# %% [markdown]
# Operation counts are exact; seconds depend on your machine. Measured here, one CPU thread: a training step
# (forward, backward and AdamW), and what 100 samples cost with 50 DDIM steps and guidance (each step one
# network call on a doubled batch of 200; the latent model also decodes once at the end). The latent model's
# training step also runs its two frozen encoders, the VAE on the images and the text encoder on the captions;
# their cost is on the last line.

# %%
def seconds(fn, repeat: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def costs(net: UNet, shape: tuple[int, ...], repeat: int) -> tuple[float, float]:
    """Seconds per training step, and per 100 samples: 50 guided steps on a batch of 200, plus decoding latents."""
    optimizer = torch.optim.AdamW(net.parameters())
    step = seconds(lambda: (training_step(net, shape), optimizer.step(), optimizer.zero_grad()), repeat)
    x, t = torch.randn(200, *shape), torch.full((200,), 500)
    one_call = seconds(lambda: net(x, t, context=context[:1].expand(200, -1, -1), context_mask=mask[:1].expand(200, -1)), repeat)
    decode = seconds(lambda: ldm.decode(torch.randn(100, *shape)), repeat) if shape[0] == 4 else 0.0
    return step, 50 * one_call + decode


threads = torch.get_num_threads()
torch.set_num_threads(1)
repeat = 1 if FAST else 3
print(f"{'':30s} {'train step':>11s} {'100 samples':>12s}")
for name, (net, shape) in nets.items():
    step, hundred = costs(net, shape, repeat)
    print(f"{name:30s} {step:9.3f} s {hundred:10.2f} s")
encoders = seconds(lambda: (ldm.encode(x_test[:128], None), ldm.conditioning(128, prompt=digit_prompts(128))), repeat)
print(f"{'frozen VAE + text encoders':30s} {encoders:9.3f} s   (per training step of the latent model)")
torch.set_num_threads(threads)

# %% [markdown]
# At equal width the latent U-Net needs about 12× fewer operations than the pixel U-Net, because every one of its
# layers sees 49 positions; on the 2-core machine this course was built on that came to about 7–8× less time per
# training step and per sample (small layers use a CPU less efficiently than big ones, so seconds shrink less than
# operations). The frozen encoders add about a hundredth of a second per step. Chapter 3's U-Net is only a little
# more expensive than the latent one: its 2×2 blocks were already a first step in the same direction, a fixed,
# unlearned compression. The latent model's price is paid once: the autoencoder is trained first, and its
# reconstructions bound the quality of every sample.
#
# ## 2. The latent autoencoder
#
# `latent-vae-mnist` is the VAE of Chapter 2 with two changes. Its code keeps a spatial layout, a 7×7 map with
# 4 channels, so a U-Net can still work on it. And the weight β on the KL term is tiny (0.01), as in Rombach et
# al.'s "KL-reg." autoencoders: the KL only keeps the latents from drifting to huge values and makes the decoder
# tolerate small errors; it does not try to make $\mathcal{N}(0, I)$ a good generator. Diffusion will generate.

# %%
# NBVAL_CHECK_OUTPUT
mu, logvar = vae.encode(x_test[:4])
print("image", tuple(x_test[:4].shape), "-> latent mean", tuple(mu.shape), "and log-variance", tuple(logvar.shape))
print(f"784 pixels -> {mu[0].numel()} latent numbers; the U-Net sees {mu.shape[-1] * mu.shape[-2]} positions, not 784")
print("recorded when it was trained:", vae.checkpoint_info["metrics"])

# %% [markdown]
# Top: test digits; middle: decoded from their latent means; bottom: decoded from random $\mathcal{N}(0, I)$ latents,
# which is what Chapter 2's VAE would do to generate. With so little KL pressure the latents of real digits occupy
# only a small part of that Gaussian, and random draws decode to stroke soup.

# %%
originals = x_test[::50][:10]
random_latents = torch.randn(10, 4, 7, 7, generator=torch.Generator().manual_seed(0))
rows = torch.cat([originals, vae(originals), vae.decode(random_latents)]).clamp(-1, 1)  # (30, 1, 28, 28)
display(Image(png_bytes(grid(rows, nrow=10), scale=2)))

# %% [markdown]
# Here is what a latent looks like: each digit's 4 channels side by side (grey is 0, ±3 is black or white). The
# strokes are still visible, at quarter resolution: the code keeps the layout of the image.

# %%
display(Image(png_bytes(latent_strip(ldm.encode(originals[:4], None)), scale=2)))

# %% [markdown]
# **The scale factor.** The forward process $z_t = \sqrt{\bar\alpha_t}\, z_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$ assumes data of
# about unit variance, like $\varepsilon$. If the latents had standard deviation 5, noise would hide them much later than
# the schedule intends; at 0.2, much earlier. Rombach et al. measure the latents' standard deviation once on the
# training data and divide by it (Stable Diffusion's famous `0.18215`); the pipeline stores that factor in its
# config (`latent_scale`) and multiplies every latent by it.

# %%
x_train = train.float_images()
scale = latent_scale_factor(vae, x_train)
z0 = scale * encode_latents(vae, x_train, torch.Generator().manual_seed(0))
print(f"scale factor = 1 / std = {scale:.4f} (stored in ldm-mnist: {ldm.config.latent_scale:.4f})")
print(f"scaled training latents: mean {z0.mean():+.3f}, std {z0.std():.3f}, largest |z0| {z0.abs().max():.2f}")

# %%
# NBVAL_CHECK_OUTPUT
claim("the scale factor measured here is the one ldm-mnist stored (within 1e-4)", abs(scale - ldm.config.latent_scale) < 1e-4)
claim("scaled latents have unit standard deviation (within 1e-3)", abs(z0.std().item() - 1) < 1e-3)

# %% [markdown]
# ## 3. CLIP: one space for text and images
#
# To condition on text, the U-Net needs text turned into vectors that *mean* something about images. CLIP
# (Radford et al. 2021) learns them from pairs. A text encoder maps a caption to a vector $T_j$, an image encoder
# maps an image to $I_i$, both are normalised to unit length, and for a batch of $N$ pairs we form the
# $N \times N$ matrix of scaled cosine similarities
#
# $$\ell_{ij} = s \cdot \frac{I_i \cdot T_j}{\lVert I_i \rVert \lVert T_j \rVert}, \qquad s = e^{\tau} \text{ learned}.$$
#
# Row $i$ is an $N$-way classification, "which of these captions describes image $i$?", whose answer is $i$; column $j$
# asks "which image does caption $j$ describe?". The loss is the mean of both cross-entropies:
#
# $$\mathcal{L} = \tfrac12 \Big( \tfrac1N \textstyle\sum_i -\log \operatorname{softmax}_j(\ell_{ij})_{j=i}
# + \tfrac1N \sum_j -\log \operatorname{softmax}_i(\ell_{ij})_{i=j} \Big).$$
#
# Our text encoder is a 2-layer transformer over 16 word tokens (`<bos> words <eos> <pad>...`), the image encoder
# three convolutions; `clip-mnist` trains them on `mnist-5k` with five caption templates per digit ("a handwritten
# seven", "the digit 7", "a drawing of a seven", ...). The loss, written out, against the package's `clip_loss`:

# %%
idx = torch.arange(0, 500, 63)  # 8 test digits
captions = test.captions(idx, torch.Generator().manual_seed(0))  # one random template each
I_emb, T_emb = clip.encode_image(x_test[idx]), clip.encode_text(captions)  # (8, 32) each
logits = clip.logit_scale * F.normalize(I_emb, dim=1) @ F.normalize(T_emb, dim=1).T  # (8, 8)
targets = torch.arange(8)
ours = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
package = clip_loss(I_emb, T_emb, clip.logit_scale)
print(f"loss by hand {ours:.4f}, package {package:.4f}; log N = {math.log(8):.4f} is chance")
print("captions:", captions)

# %%
# NBVAL_CHECK_OUTPUT
claim("the loss written out equals the package's clip_loss", torch.allclose(ours, package))
claim("and is far below chance (log 8)", ours.item() < 0.5 * math.log(8))

# %% [markdown]
# Pick a batch with the slider: the matrix shows each row's softmax, the box marks the caption each image picks
# (green if it names the right digit). Two images of the same digit in one batch make the "right" answer
# ambiguous: either "seven" caption fits both sevens, so a row may pick its neighbour's caption and still be right
# about the digit. This is why CLIP's loss on MNIST never reaches zero.

# %%
similarity_explorer(clip, test, batch_size=8, n_batches=3, generator=torch.Generator().manual_seed(1))

# %% [markdown]
# **Zero-shot classification.** The trained encoders classify digits they have never seen without any classifier
# head: embed the ten prompts "a handwritten zero", ..., "a handwritten nine" and give each held-out test image the
# prompt it is most similar to. The same works with each of the five templates:

# %%
zero_shot = [zero_shot_accuracy(clip, test, k) for k in range(len(test.templates))]
for k, accuracy in enumerate(zero_shot):
    print(f"{test.caption(7, k)!r:40s} template: {accuracy:.1%} of 500 held-out digits")

# %%
# NBVAL_CHECK_OUTPUT
claim("zero-shot accuracy is above 95 % with every one of the five templates", min(zero_shot) > 0.95)

# %% [markdown]
# ## 4. Cross-attention, derived and checked
#
# How does the U-Net read the text? Flatten its $h \times w$ feature map into $hw$ *image tokens* $x_i \in \mathbb{R}^{C}$;
# the text encoder gives $M$ *text tokens* $c_j \in \mathbb{R}^{D}$ (its per-token outputs, not the pooled vector). Then
# (Rombach et al. 2022, Eq. 3)
#
# $$Q = x W_Q, \quad K = c W_K, \quad V = c W_V, \qquad
# \operatorname{CrossAttn}(x, c) = \operatorname{softmax}\!\Big(\frac{Q K^\top}{\sqrt d}\Big) V .$$
#
# Row $i$ of the softmax is a probability distribution over the $M$ text tokens: image position $i$ takes a weighted
# average of the tokens' values, weighted by how well its query matches each key. Queries come from the image, keys
# and values from the text, so the output has one vector per *image* position, and it is added back to the feature
# map (a residual). Padding tokens get a score of $-\infty$ and hence weight 0, so prompt length does not matter.
# With several heads, the channels split into groups that attend independently.
#
# Below, the formula as plain Python loops, one score at a time, against the package's `CrossAttention` (einsum and
# softmax), on the trained model's first cross-attention layer, 49 image tokens and a real prompt.

# %%
# NBVAL_CHECK_OUTPUT
def naive_cross_attention(layer: CrossAttention, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x: (N_q, C) image tokens, c: (M, D) text tokens, mask: (M,) -> (N_q, C), one score at a time."""
    d = layer.head_dim
    heads = []
    for h in range(layer.heads):
        rows = slice(h * d, (h + 1) * d)  # this head's slice of the projections
        W_q, W_k, W_v = layer.to_q.weight[rows], layer.to_k.weight[rows], layer.to_v.weight[rows]
        out = torch.zeros(len(x), d)
        for i in range(len(x)):
            q = W_q @ x[i]  # (d,)
            scores = torch.tensor([(q @ (W_k @ c[j])) / math.sqrt(d) if mask[j] else -math.inf for j in range(len(c))])
            weights = scores.softmax(dim=0)  # (M,), sums to 1
            out[i] = sum(weights[j] * (W_v @ c[j]) for j in range(len(c)))
        heads.append(out)
    return layer.to_out(torch.cat(heads, dim=1))  # concatenate the heads, project back to C


layer = next(m for m in ldm.net.modules() if isinstance(m, CrossAttention))
seven = ldm.conditioning(1, prompt="a handwritten seven")
tokens, token_mask = seven["context"], seven["context_mask"]  # (1, 16, 64), (1, 16)
x_img = torch.randn(1, 49, layer.to_q.in_features, generator=torch.Generator().manual_seed(0))  # 7x7 image tokens
package = layer(x_img, tokens, token_mask)  # (1, 49, C)
naive = naive_cross_attention(layer, x_img[0], tokens[0], token_mask[0])
print("output shape:", tuple(package.shape), "- one vector per image position")
claim("naive loops == package CrossAttention (within 1e-5)", torch.allclose(naive, package[0], atol=1e-5))
print("real tokens:", int(token_mask.sum()), "of", token_mask.shape[1], "- the rest is padding, weight exactly 0")

# %% [markdown]
# ## 5. A text-conditioned latent U-Net, and guidance with the empty prompt
#
# The denoiser $\varepsilon_\theta(z_t, t, c)$ is Chapter 3's U-Net with three changes: it reads 4-channel 7×7 latents;
# it has a single resolution level (7×7 is already small), where every block is a ResBlock, then self-attention
# over the 49 positions, then **cross-attention to the 16 text tokens**; and the class embedding is gone. The VAE
# and the text encoder are frozen inside the model, so one checkpoint holds all three.
#
# Training is Algorithm 1 of Chapter 3 on latents (Rombach et al. 2022, Eq. 2):
#
# $$\mathcal{L}_{LDM} = \mathbb{E}_{x,\, c,\, \varepsilon,\, t}\, \big\lVert \varepsilon - \varepsilon_\theta(z_t, t, \tau(c)) \big\rVert^2,
# \qquad z_0 = s \cdot \mathcal{E}(x),$$
#
# with a random caption template per image and step, and **caption dropout**: 10% of the captions are replaced by the
# empty prompt `""`. The same network then also predicts the noise *without* a prompt, and classifier-free guidance
# (Chapter 3) mixes the two, with the encoding of `""` as the "no condition":
#
# $$\tilde\varepsilon = \varepsilon_\theta(z_t, t, \tau(\texttt{""})) + w\,\big(\varepsilon_\theta(z_t, t, \tau(c)) - \varepsilon_\theta(z_t, t, \tau(\texttt{""}))\big).$$

# %%
# NBVAL_CHECK_OUTPUT
print(ldm.net.config)
print(f"trainable U-Net {sum(p.numel() for p in ldm.net.parameters()) / 1e6:.2f} M parameters; frozen: "
      f"VAE {sum(p.numel() for p in ldm.autoencoder.parameters()) / 1e6:.2f} M, "
      f"text encoder {sum(p.numel() for p in ldm.condition.parameters()) / 1e6:.2f} M")
z = torch.randn(2, 4, 7, 7, generator=torch.Generator().manual_seed(0))
t = torch.tensor([700, 100])
cond = ldm.conditioning(2, prompt=["a handwritten two", "the digit 5"])  # {"context": ..., "context_mask": ...}
null = ldm.null_condition()  # the empty prompt: <bos> <eos>
eps_c = ldm(z, t, **cond)
eps_u = ldm(z, t, context=null["context"].expand(2, -1, -1), context_mask=null["context_mask"].expand(2, -1))
guided = ldm.denoiser(3.0)(z, t, **cond)  # one batched call on [cond; null]
claim("guided == eps_u + 3 (eps_c - eps_u) (within 1e-5)", torch.allclose(guided, eps_u + 3.0 * (eps_c - eps_u), atol=1e-5))

# %% [markdown]
# ## 6. Text to image
#
# Sampling is DDIM on latents, then one decoder call. One detail differs from pixel space. DDIM first predicts
# $\hat z_0 = (z_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)/\sqrt{\bar\alpha_t}$; at the first step of the cosine schedule
# $\bar\alpha_t = 2 \cdot 10^{-9}$, so an error of 0.05 in $\hat\varepsilon$ becomes an error of about 1,000 in $\hat z_0$. Pixel
# samplers clip $\hat x_0$ to the data's range $[-1, 1]$. Latents have no fixed range, but we can measure it: the largest
# $|z_0|$ of the training latents (printed above) is stored in the model as `clip_x0`. Without it:

# %%
prompts = digit_prompts(100)
text100 = ldm.conditioning(100, prompt=prompts)
clipping = {}
for bound in (None, ldm.config.clip_x0):
    z_hat, frames = ddim_sample(ldm.denoiser(3.0), ldm.sched, (100, 4, 7, 7), 25, torch.Generator().manual_seed(0),
                                trajectory=True, clip_x0=bound, **text100)
    images = ldm.decode(z_hat).clamp(-1, 1)
    clipping[bound] = (frames[0]["x0_hat"].abs().max().item(),
                       evaluate_samples(to_uint8(images), torch.arange(100) % 10)["accuracy"])
    print(f"clip_x0 = {bound if bound is None else round(bound, 2)}: largest |z0_hat| at the first step "
          f"{clipping[bound][0]:7.1f}; {clipping[bound][1]:.0%} of samples read as the prompted digit")

# %%
# NBVAL_CHECK_OUTPUT
(unclipped_size, unclipped_acc), (clipped_size, clipped_acc) = clipping.values()
claim("unclipped, the first prediction |z0_hat| exceeds 100 (the data never exceeds 6)", unclipped_size > 100)
claim("clipped sampling reads as the prompted digit at least 90 % of the time, unclipped under 60 %",
      clipped_acc >= 0.9 and unclipped_acc < 0.6)

# %% [markdown]
# Five of each prompt, "a handwritten zero" ... "a handwritten nine" from left to right, guidance 3, 50 DDIM steps:

# %%
samples = ldm.sample(50, torch.Generator().manual_seed(0))  # prompt=None: the ten digit prompts in turn
display(Image(png_bytes(grid(samples, nrow=10), scale=2)))

# %% [markdown]
# **The widget.** Type a prompt (any words: unknown ones become `<unk>`, long prompts are cut to 16 tokens) and press
# Enter. For each guidance value it runs the same starting noise; the step slider shows the latent $z_t$ being denoised
# next to the decoding of the current prediction $\mathcal{D}(\hat z_0 / s)$. Below, each token's cross-attention map,
# averaged over steps, heads and layers. The precomputed prompt plays without a kernel.

# %%
text_to_image(ldm, "a handwritten seven", guidances=(1.0, 2.0, 3.0, 5.0), n=4, steps=20, every=4)

# %% [markdown]
# **Prompt adherence against guidance**, measured with the course's LeNet classifier (the same judge as Chapter 3):
# 100 samples per row (ten per digit), 25 DDIM steps. $w = 0$ ignores the prompt (unconditional), $w = 1$ is the plain conditional
# model, larger $w$ trades variety (FID) for adherence.

# %%
adherence = {}
for w in (0.0, 1.0, 2.0, 3.0, 5.0):
    images = ldm.sample(100, torch.Generator().manual_seed(0), prompt=digit_prompts(100), steps=25, guidance=w)
    scores = evaluate_samples(to_uint8(images), torch.arange(100) % 10)
    adherence[w] = scores["accuracy"]
    print(f"guidance {w}: {scores['accuracy']:.0%} read as the prompted digit, FID-LeNet {scores['fid_lenet']:.0f} "
          f"(real digits: {scores['real_floor']:.0f})")

# %%
# NBVAL_CHECK_OUTPUT
claim("without guidance (w = 0) the prompt is followed no better than chance (under 25 %)", adherence[0.0] < 0.25)
claim("adherence rises from w = 0 to 1 to 2", adherence[0.0] < adherence[1.0] < adherence[2.0])
claim("and is at least 90 % for every w >= 2", min(adherence[2.0], adherence[3.0], adherence[5.0]) >= 0.9)

# %% [markdown]
# The other caption templates work too, and so do prompts the model never saw in training, as long as their words
# are in the vocabulary; "a purple seven" becomes `<bos> a <unk> seven <eos>`:

# %%
for prompt in ("the digit 4", "a drawing of a two", "the number 9 written by hand", "a purple seven"):
    tokenizer = ldm.condition.tokenizer
    print(f"{prompt!r:35s} -> {tokenizer.decode(tokenizer.encode(prompt)[0][0])!r}")
    display(Image(png_bytes(ldm.sample(8, torch.Generator().manual_seed(1), prompt=prompt, steps=25), scale=2)))

# %% [markdown]
# ## 7. Where each word acts
#
# Cross-attention weights say, for every latent position, how it splits its attention over the tokens. Read one
# token's column and you get a map. For digits the maps are coarse (7×7) and much of the attention goes to `<bos>`
# and `<eos>`, which the text encoder uses to summarise the whole prompt (as in Stable Diffusion, where `<eos>` and
# padding collect a large share). The digit word tends to light up the stroke region. Here at one mid-way step:

# %%
digits = x_test[[35, 85, 385]]  # a zero, a one and a seven from the test split
t = torch.tensor(400)
eps = torch.randn(3, 4, 7, 7, generator=torch.Generator().manual_seed(0))
z_t = ldm.sched.sqrt_alpha_bar[t] * ldm.encode(digits, None) + ldm.sched.sqrt_one_minus_alpha_bar[t] * eps  # Eq. (4)
maps = ldm.cross_attention_maps(z_t, t, ["a handwritten zero", "a handwritten one", "a handwritten seven"])  # (3, 16, 7, 7)
display(Image(figure_png(attention_figure(digits, maps[:, :5], ["<bos>", "a", "handwritten", "<digit>", "<eos>"]))))
print("share of attention per token, averaged over the 49 positions:")
for b, word in enumerate(("zero", "one", "seven")):
    print(f"  {word:6s}", "  ".join(f"{maps[b, j].mean():.2f}" for j in range(5)))

# %% [markdown]
# ## 8. Train it yourself
#
# Three recipes, in order (the third loads the first two from `assets/checkpoints/`):
#
# | recipe | what | steps | time on this machine |
# | --- | --- | --- | --- |
# | `minilineage train clip-mnist` | text + image encoders, contrastive loss | 1,000 | about 1 min |
# | `minilineage train latent-vae-mnist` | 28×28 ↔ 7×7×4 autoencoder | 1,500 | about 2 min |
# | `minilineage train ldm-mnist` | the latent U-Net with cross-attention | 2,000 | about 8 min |
#
# The records of the shipped checkpoints (command, steps, wall time, device, evaluation), and Chapter 3's pixel-space
# DDPM for comparison. Both diffusion models were scored the same way: 1,000 samples at their default steps and
# guidance, FID-LeNet against the same real-data floor.

# %%
for model in (clip, vae, ldm, load_model("ddpm-mnist")):
    info = model.checkpoint_info
    print(f"{info['recipe']:17s} {info['step']:5d} steps, {info['wall_time_s']:6.1f} s on {info['device']}: {info['metrics']}")

# %% [markdown]
# Fast mode runs 20 steps of each (`--preset gpu` on the command line trains wider models on the full MNIST). The
# first two go through `train_recipe`, which also evaluates them. For the third we call the pieces the recipe is made
# of, since its evaluation alone (1,000 samples) takes a minute: `build` loads the two frozen parts and measures the
# scale factor on the training data; `fit` is the course's one training loop.

# %%
for name in ("clip-mnist", "latent-vae-mnist"):
    result = train_with_plot(name, steps=20 if FAST else None, out=None, progress=not FAST)
    print(f"{name}: {result.record['step']} steps in {result.record['wall_time_s']} s, metrics {result.record['metrics']}")
recipe = RECIPES["ldm-mnist"]
config = recipe.presets["cpu"].train
state = fit(recipe.build("cpu"), diffusion_loss, caption_batches(train, config.batch_size),
            replace(config, steps=20) if FAST else config, progress=not FAST)
print(f"ldm-mnist: {state.step} steps in {state.wall_time_s:.1f} s, final loss {state.history[-1][1]:.3f}")

# %% [markdown]
# ## Exercises
#
# Run an exercise's cell to check your answer; `show_solution("ch4.positions")` (with the exercise's name) prints the
# reference answer.
#
# **Exercise 1.** A convolution's cost grows with the number of positions. How many times fewer positions does the first
# layer of the latent U-Net process than the first layer of a pixel U-Net at full resolution, for MNIST?

# %%
position_ratio = None  # a number
exercise("ch4.positions", position_ratio)

# %% [markdown]
# **Exercise 2.** Stable Diffusion's scale factor 0.18215 is 1 / std of its latents. Compute ours from the *mean* latents of
# the test split (`encode_latents(vae, x_test, None)` gives them), to within 5%.

# %%
my_scale = None  # a number
exercise("ch4.scale_factor", my_scale)

# %% [markdown]
# **Exercise 3.** Write classifier-free guidance: a function of the conditional and unconditional noise predictions
# and a scale `w` that returns the guided prediction.

# %%
my_guided = None  # def my_guided(eps_cond, eps_uncond, w): ...
exercise("ch4.guidance", my_guided)

# %% [markdown]
# **Exercise 4.** One image position has query $q = (1, 0)$; three text tokens have keys $k_1 = (2, 0)$, $k_2 = (0, 2)$,
# $k_3 = (4, 0)$, and token 3 is padding. With $d = 2$, what are the attention weights over the three tokens?

# %%
my_weights = None  # a tensor of 3 weights
exercise("ch4.attention_weights", my_weights)

# %% [markdown]
# ## What goes wrong, and what comes next
#
# Latent diffusion made each step cheap and let words steer the image. Its samples are not yet as good as
# Chapter 3's: compare the FID-LeNet of the two records above. The autoencoder is not to blame (measured while
# building the course: its reconstructions of 1,000 training digits score 43.5 where the digits themselves score
# 42.5); the latent denoiser is, after 8 minutes of training. Cheaper steps buy more of them, and a bigger denoiser.
# Which raises the question of the denoiser itself: a U-Net whose designer decided where to downsample, where
# attention goes and how wide each level is, a convolutional network with attention bolted on at one resolution. Transformers scale more predictably: more layers, more width, more
# data, better results. Chapter 5 shows how an image becomes a sequence of patch tokens (ViT), and Chapter 6 replaces
# the U-Net of latent diffusion with a transformer on latent patches: the Diffusion Transformer (DiT), the backbone
# of Sora.
