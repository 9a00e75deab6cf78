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
# cost grows with the number of steps, and faster than the number of pixels (self-attention compares every position
# with every other); and the model listens to a class label, not to words. Latent diffusion
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
# 2. the latent autoencoder: what it loses, how strong its KL really is, and what its scale factor does to the
#    signal-to-noise ratio of every diffusion step;
# 3. how CLIP learns a shared text–image space from an $N \times N$ similarity matrix, and zero-shot classification;
# 4. cross-attention, derived and checked against a naive loop;
# 5. a text-conditioned latent U-Net and classifier-free guidance with the empty prompt, and how to read
#    FID-LeNet with 100 samples;
# 6. what cross-attention maps show about where the prompt is read, and what they do not show.

# %%
import ctypes
import gc
import math
import time
from dataclasses import replace
from functools import partial

import torch
import torch.nn.functional as F
from IPython.display import Image, display
from matplotlib.figure import Figure
from torch.utils.flop_counter import FlopCounterMode

import minilineage
from minilineage.bench import peak_memory, start_peak_memory
from minilineage.checkpoint import load_model
from minilineage.checks import claim
from minilineage.data import caption_batches, digit_prompts, load_dataset
from minilineage.diffusion import DiffusionPipeline, ddim_sample, diffusion_loss, guided
from minilineage.exercises import exercise, show_solution  # noqa: F401  (show_solution: see Exercises)
from minilineage.layers import CrossAttention
from minilineage.metrics import (
    feature_stats,
    frechet_distance,
    lenet_features,
    load_classifier,
    real_floor,
)
from minilineage.models import UNet
from minilineage.models.autoencoder import kl_to_standard_normal
from minilineage.models.clip import MiniCLIP, clip_loss, zero_shot_accuracy
from minilineage.models.latent import LatentVAE, encode_latents, latent_scale_factor
from minilineage.models.unet import UNetConfig
from minilineage.recipes import RECIPES
from minilineage.train import fit, pick_device
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
from minilineage.widgets.ldm import stroke_lift

FAST = minilineage.chapter_setup()
torch.set_grad_enabled(False)
train, test = load_dataset("mnist-5k", "train"), load_dataset("mnist-5k", "test")
x_train, x_test = train.float_images(), test.float_images()  # (4500, 1, 28, 28) and (500, 1, 28, 28) in [-1, 1]
ldm = load_model("ldm-mnist", expect=DiffusionPipeline)  # holds its own frozen VAE and text encoder
vae = load_model("latent-vae-mnist", expect=LatentVAE)
clip = load_model("clip-mnist", expect=MiniCLIP)
classifier = load_classifier()  # the course's LeNet, the judge of every sample (Chapter 3)
reference = feature_stats(lenet_features(classifier, x_test))  # FID-LeNet's reference: the 500 held-out digits
train_features = lenet_features(classifier, x_train)  # (4500, 64): real digits, for the real-data level


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
# by working on 2×2 pixel blocks. Every operation's count is proportional to the batch, so we count 16 images and
# multiply by 8.

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


def training_step(net: UNet, shape: tuple[int, ...], batch: int = 128) -> torch.Tensor:
    """Forward + backward of the diffusion loss on one batch (the optimizer update is negligible)."""
    with torch.enable_grad():
        x = torch.randn(batch, *shape)
        t = torch.randint(0, 1000, (batch,))
        loss = F.mse_loss(net(x, t, context=context[:batch], context_mask=mask[:batch]), x)
        loss.backward()
    return loss


flops = {}
for name, (net, shape) in nets.items():
    with FlopCounterMode(display=False) as counter:
        training_step(net, shape, batch=16)
    flops[name] = 8 * counter.get_total_flops()  # 16 images counted, 128 in a training step
    params = sum(p.numel() for p in net.parameters()) / 1e6
    print(f"{name:30s} {params:4.2f} M parameters, {flops[name] / 1e9:6.1f} GFLOP per training step")
latent, pixel, ddpm = flops.values()
print(f"latent is {pixel / latent:.1f}x cheaper than the equal-width pixel U-Net, {ddpm / latent:.1f}x cheaper than Chapter 3's")
claim("at equal width the latent U-Net needs over 10x fewer operations per training step than the pixel U-Net",
      pixel > 10 * latent)
claim("and fewer than Chapter 3's U-Net on 2x2 pixel blocks", ddpm > latent)

# %% [markdown]
# Operation counts are exact; seconds depend on your machine. Measured here, one CPU thread: a training step
# (forward, backward and AdamW), and two real sampling runs of each model with guidance, DDIM with few and with more
# steps (each step one network call on a doubled batch, the prompts and the empty prompt; the latent model also encodes
# the prompts first and decodes once at the end). Nothing is extrapolated from a single call: the difference between
# the two runs is what the extra steps cost, and the rest is what any run costs. The latent model's training step also
# runs its two frozen encoders, the VAE on the images and the text encoder on the captions; their cost is on the last
# line. The full run times a training batch of 128 and 100 samples at 10 and 50 steps; fast mode a smaller job, a batch
# of 32 and 10 samples at 5 and 10 steps, each timed once.

# %%
def seconds(fn, repeat: int) -> float:
    """Mean wall time of `repeat` calls of fn, after one warm-up call when repeat > 1."""
    if repeat > 1:
        fn()  # warm-up: the first call also sets up kernels and memory
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def sampling_run(name: str, net: UNet, shape: tuple[int, ...], n: int, steps: int) -> None:
    """One guided DDIM run of n samples: the trained latent pipeline itself, or an equal-cost run of a pixel U-Net."""
    g = torch.Generator().manual_seed(0)
    if shape[0] == 4:  # ldm.net has the latent U-Net's configuration: the same cost, and a real text-to-image run
        ldm.sample(n, g, prompt=digit_prompts(n), steps=steps, guidance=3.0)
        return
    text_n = ldm.conditioning(n, prompt=digit_prompts(n))  # the pixel U-Nets read the same text tokens
    ddim_sample(guided(net, 3.0, ldm.null_condition()), ldm.sched, (n, *shape), steps, g, **text_n)


threads = torch.get_num_threads()
torch.set_num_threads(1)
repeat, batch, n_samples, run_steps = (1, 32, 10, (5, 10)) if FAST else (3, 128, 100, (10, 50))


def costs(name: str, net: UNet, shape: tuple[int, ...]) -> tuple[float, ...]:
    """Seconds per training step, then per sampling run at each of `run_steps`."""
    optimizer = torch.optim.AdamW(net.parameters())
    step = seconds(lambda: (training_step(net, shape, batch), optimizer.step(), optimizer.zero_grad()), repeat)
    return step, *(seconds(partial(sampling_run, name, net, shape, n_samples, s), repeat) for s in run_steps)


timed = {}
print(f"{'':30s} {'train step':>11s}" + "".join(f"{f'{n_samples} samples, {s} steps':>24s}" for s in run_steps))
for name, (net, shape) in nets.items():
    timed[name] = costs(name, net, shape)
    print(f"{name:30s} {timed[name][0]:9.3f} s" + "".join(f"{r:22.2f} s" for r in timed[name][1:]))
encoders = seconds(lambda: (ldm.encode(x_test[:batch], None), ldm.conditioning(batch, prompt=digit_prompts(batch))), repeat)
print(f"{'frozen VAE + text encoders':30s} {encoders:9.3f} s   (per training step of the latent model)")
(few, more), (latent_t, pixel_t) = run_steps, list(timed.values())[:2]
per_step = {name: (t[2] - t[1]) / (more - few) for name, t in timed.items()}  # seconds per extra step
print("each extra sampling step: " + ", ".join(f"{name.split(',')[0]} {s:.3f} s" for name, s in per_step.items()))
print(f"time, pixel / latent U-Net: {pixel_t[0] / latent_t[0]:.1f}x per training step, {pixel_t[2] / latent_t[2]:.1f}x "
      f"per {more}-step run (operations per training step: {pixel / latent:.1f}x)")
torch.set_num_threads(threads)

# %% [markdown]
# At equal width the latent U-Net needs 12× fewer operations than the pixel U-Net, because every one of its layers
# sees 49 positions where the pixel U-Net's first layers see 784 and 196. Positions do not buy cost linearly: a
# convolution costs the same per position, but self-attention at a level with $P$ positions compares $P^2$ pairs, which
# is why the pixel U-Net keeps its attention at 7×7 (Chapter 3's U-Net also attends at 7×7, after its 2×2 blocks). The
# sampling runs grow with the number of steps, each step one more network call, on top of a fixed cost. The time ratios
# printed above are measurements, not claims: they move with the machine and its load, and small layers use a CPU less
# efficiently than big ones, so seconds need not shrink as much as operations. The frozen encoders cost a small
# fraction of a step. Chapter 3's U-Net is only a little more expensive than the latent one: its 2×2 blocks were
# already a first step in the same direction, a fixed, unlearned compression. The latent model's price is paid once:
# the autoencoder is trained first, and its reconstructions bound the quality of every sample.
#
# ## 2. The latent autoencoder
#
# `latent-vae-mnist` is the VAE of Chapter 2 with two changes. Its code keeps a spatial layout, a 7×7 map with
# 4 channels, so a U-Net can still work on it. And it is judged by its reconstructions, not by its prior samples:
# diffusion will generate, the autoencoder only has to compress. Its loss is a sum of squared errors plus
# β = 0.01 times the KL, and below we measure how strong that KL really is.

# %%
# NBVAL_CHECK_OUTPUT
mu, logvar = vae.encode(x_test[:4])
print("image", tuple(x_test[:4].shape), "-> latent mean", tuple(mu.shape), "and log-variance", tuple(logvar.shape))
print(f"784 pixels -> {mu[0].numel()} latent numbers; the U-Net sees {mu.shape[-1] * mu.shape[-2]} positions, not 784")
print("recorded when it was trained:", vae.checkpoint_info["metrics"])

# %% [markdown]
# Top: test digits; middle: decoded from their latent means; bottom: decoded from random $\mathcal{N}(0, I)$ latents,
# which is what Chapter 2's VAE would do to generate. The latents of real digits occupy only a small part of that
# Gaussian, and random draws decode to stroke soup.

# %%
originals = x_test[::50][:10]
random_latents = torch.randn(10, 4, 7, 7, generator=torch.Generator().manual_seed(0))
rows = torch.cat([originals, vae(originals), vae.decode(random_latents)]).clamp(-1, 1)  # (30, 1, 28, 28)
display(Image(png_bytes(grid(rows, nrow=10), scale=2)))

# %% [markdown]
# **What the autoencoder loses.** Every sample of latent diffusion passes through the decoder, so the reconstructions
# bound the quality of everything that follows. Measure it with the judge of every sample in this course, FID-LeNet
# (Chapter 3): the Fréchet distance between the LeNet features of a set of digits and those of the 500 held-out test
# digits. Score 1,000 training digits, then their reconstructions: the difference is what the autoencoder costs.
# Next to them, the real-data reference level at the same N (1,000 random training digits, mean ± std over 20 draws),
# and decoded $\mathcal{N}(0, I)$ latents for contrast.

# %%
pick = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))[:1000]  # 1,000 training digits


def fid_lenet(images: torch.Tensor) -> float:
    """FID-LeNet of images in [-1, 1] against the 500 held-out test digits."""
    return frechet_distance(*feature_stats(lenet_features(classifier, images)), *reference)


autoencoder_fid = {
    "the digits themselves": fid_lenet(x_train[pick]),
    "their reconstructions": fid_lenet(vae(x_train[pick]).clamp(-1, 1)),
    "decoded N(0, I) latents": fid_lenet(vae.decode(torch.randn(1000, 4, 7, 7, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)),
}
level_1000 = real_floor(classifier, 1000, reference, draws=20, features=train_features)
for name, value in autoencoder_fid.items():
    print(f"{name:25s} FID-LeNet {value:7.1f}")
print(f"{'real-data level, N = 1000':25s} FID-LeNet {level_1000['real_floor']:7.1f} ± {level_1000['real_floor_std']:.1f}")

# %%
# NBVAL_CHECK_OUTPUT
digits_fid, recon_fid, prior_fid = autoencoder_fid.values()
claim("the reconstructions score within 10 % of the digits they reconstruct: the autoencoder loses little",
      abs(recon_fid - digits_fid) < 0.1 * digits_fid)
claim("and both lie within 3 std of the real-data level at the same N", max(digits_fid, recon_fid)
      < level_1000["real_floor"] + 3 * level_1000["real_floor_std"])
claim("decoded N(0, I) latents score over 10x worse: the autoencoder alone is no generator", prior_fid > 10 * recon_fid)

# %% [markdown]
# **How strong is the KL?** Rombach et al. weight the KL of their "KL-reg." autoencoders by about $10^{-6}$ (their
# Appendix G), next to an L1 + perceptual + adversarial reconstruction loss, so their encoder is almost free to place its
# latents anywhere (their released configurations say `kl_weight: 0.000001`). Is our β = 0.01 "tiny" in the same sense? Chapter 2 showed that a sum of squared errors is a
# Gaussian log-likelihood in disguise: with a decoder variance $\sigma^2$, the negative ELBO is
#
# $$\frac{1}{2\sigma^2}\sum_i (\hat x_i - x_i)^2 + \mathrm{KL}\big(q(z \mid x)\,\Vert\,\mathcal{N}(0, I)\big) + \text{const},$$
#
# and multiplying by $2\sigma^2$ (which does not move the minimum) gives $\sum_i (\hat x_i - x_i)^2 + 2\sigma^2\,\mathrm{KL}$.
# So our loss *is* the β = 1 ELBO for a decoder variance $\sigma^2 = \beta / 2 = 0.005$. The variance that fits the
# data is the mean squared residual of the reconstructions (from a sampled $z$, as in training). If the two are
# close, our KL carries about the weight the true ELBO gives it: a real VAE, a million times stronger than Rombach's.

# %%
mu, logvar = vae.encode(x_train[pick])  # the same 1,000 training digits
z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=torch.Generator().manual_seed(0))  # z ~ q(z | x)
decoded = vae.decode(z)
residual = (decoded - x_train[pick]).pow(2).mean().item()  # the decoder variance the data supports, [-1, 1] scale
beta = vae.config.beta
kl_per_number = kl_to_standard_normal(mu.flatten(1), logvar.flatten(1)).mean().item() / mu[0].numel()
sigma_q = (0.5 * logvar).exp().mean().item()
wobble = (decoded - vae.decode(mu)).pow(2).mean().item()
print(f"beta = {beta}: the ELBO of a decoder with variance beta / 2 = {beta / 2:.4f}; "
      f"the reconstructions' residual variance is {residual:.4f}")
print(f"so the KL is weighted {beta / (2 * residual):.2f} x what the ELBO with a matched decoder variance asks")
print(f"posterior: mean sigma of q(z|x) {sigma_q:.2f}, KL {kl_per_number:.2f} nats per latent number")
print(f"decoding a sampled z instead of its mean moves the pixels by {wobble:.4f} (mean square), "
      f"{wobble / residual:.0%} of the reconstruction error")

# %%
# NBVAL_CHECK_OUTPUT
claim("beta / 2 is between half and all of the reconstructions' residual variance: our KL is weighted like a true ELBO's",
      0.5 < beta / (2 * residual) < 1.0)
claim("the encoder is not deterministic: q(z|x) has a mean sigma above 0.1", sigma_q > 0.1)
claim("yet the decoder barely notices: a sampled z moves the pixels by under a third of the reconstruction error",
      wobble < residual / 3)

# %% [markdown]
# Our autoencoder is therefore a proper VAE whose decoder variance matches its data, not the almost unregularised
# autoencoder of Rombach et al.; we chose that because it costs little here (the reconstructions above score like the
# digits themselves) and it buys two things. The decoder tolerates small errors in $z$, which a sampler's final
# $\hat z_0$ always has. And the latents come out at about unit scale on their own, as the next cell shows. With
# a KL weight of $10^{-6}$ the encoder shrinks $\sigma$ towards 0 and lets the means spread: Stable Diffusion's latents
# have a standard deviation of about 5.5, hence its famous scale factor $0.18215 = 1 / 5.49$.
#
# Here is what a latent looks like: each digit's 4 channels side by side (grey is 0, ±3 is black or white). The
# strokes are still visible, at quarter resolution: the code keeps the layout of the image.

# %%
display(Image(png_bytes(latent_strip(ldm.encode(originals[:4], None)), scale=2)))

# %% [markdown]
# **The scale factor.** The forward process $z_t = \sqrt{\bar\alpha_t}\, z_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$ assumes data of
# about unit variance, like $\varepsilon$. Rombach et al. measure the latents' standard deviation once on the training data
# and divide by it (their Sec. 4.3.2 and Appendix D.1); the pipeline stores that factor in its config (`latent_scale`) and multiplies
# every latent by it.

# %%
scale = latent_scale_factor(vae, x_train)
z0 = scale * encode_latents(vae, x_train, torch.Generator().manual_seed(0))  # (4500, 4, 7, 7), scaled
print(f"scale factor = 1 / std = {scale:.4f} (stored in ldm-mnist: {ldm.config.latent_scale:.4f})")
print(f"scaled training latents: mean {z0.mean():+.3f}, std {z0.std():.3f}, largest |z0| {z0.abs().max():.2f}")

# %%
# NBVAL_CHECK_OUTPUT
claim("the scale factor measured here is the one ldm-mnist stored (within 1e-4)", abs(scale - ldm.config.latent_scale) < 1e-4)
claim("scaled latents have unit standard deviation (within 1e-3)", abs(z0.std().item() - 1) < 1e-3)
claim("and the unscaled ones were within 5 % of it already: the KL did the scaling", abs(scale - 1) < 0.05)

# %% [markdown]
# **What a wrong scale does.** If $z_0$ has standard deviation $\sigma_z$, the signal-to-noise ratio of $z_t$ is
#
# $$\mathrm{SNR}(t) = \frac{\bar\alpha_t\, \sigma_z^2}{1 - \bar\alpha_t}, \qquad
# \log \mathrm{SNR}(t) = \log \frac{\bar\alpha_t}{1 - \bar\alpha_t} + 2 \ln \sigma_z ,$$
#
# so a scale error shifts log-SNR by $2 \ln \sigma_z$ at *every* step: the schedule slides sideways. Our latents needed a
# factor 1.03, a shift of 0.05: nothing, which is why scaling is a no-op here. Unscaled Stable Diffusion latents
# ($\sigma_z \approx 5.5$) would be shifted by +3.4: the noise would hide them only near the end of the schedule, and the
# model would have settled the image's layout in its first few steps. Rombach et al. show this in their Appendix D.1;
# latents with $\sigma_z = 0.2$ would be drowned early instead. Measured on our latents, multiplied by each $\sigma_z$:

# %%
sigmas = {"ours, scaled (1)": 1.0, "std 0.2": 0.2, "unscaled SD (1 / 0.18215)": 1 / 0.18215}
sched, steps_t = ldm.sched, torch.arange(10, 1000, 10)  # t = 10, 20, ..., 990
log_snr, crossing = {}, {}
for name, sigma in sigmas.items():
    log_snr[name] = sched.snr(steps_t).log() + 2 * math.log(sigma * z0.std().item())  # (99,)
    crossing[name] = steps_t[(log_snr[name] > 0).sum()].item()  # the first t where noise outweighs the signal
    print(f"{name:28s} log SNR shifted by {2 * math.log(sigma):+.2f}; noise overtakes the signal at t = {crossing[name]}")
t_mid = torch.tensor(500)  # check the formula against noised latents at one step
eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(1))
measured = {name: ((sched.sqrt_alpha_bar[t_mid] * sigma * z0).var() / (sched.sqrt_one_minus_alpha_bar[t_mid] * eps).var()).log().item()
            for name, sigma in sigmas.items()}
print("log SNR at t = 500, measured on noised latents:", ", ".join(f"{v:+.3f}" for v in measured.values()),
      "| formula:", ", ".join(f"{log_snr[name][steps_t == 500].item():+.3f}" for name in sigmas))
figure = Figure(figsize=(6.5, 3.4), dpi=100, layout="constrained")
ax = figure.add_subplot()
for name, values in log_snr.items():
    ax.plot(steps_t.numpy(), values.numpy(), label=name, lw=2)
ax.axhline(0, color="grey", lw=0.8)
ax.set_xlabel("step t (cosine schedule)", fontsize=12), ax.set_ylabel("log SNR(t)", fontsize=12)
ax.legend(fontsize=11)
display(Image(figure_png(figure)))

# %%
# NBVAL_CHECK_OUTPUT
claim("on noised latents, the measured log SNR at t = 500 matches the formula for every sigma (within 0.01)",
      all(abs(measured[name] - log_snr[name][steps_t == 500].item()) < 0.01 for name in sigmas))
claim("noise overtakes unit-variance latents near the middle (t = 450-550), std 0.2 ones before t = 200, "
      "unscaled SD-like ones only after t = 850", 450 <= crossing["ours, scaled (1)"] <= 550
      and crossing["std 0.2"] < 200 and crossing["unscaled SD (1 / 0.18215)"] > 850)

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
# asks "which image does caption $j$ describe?". The loss is the mean of both cross-entropies (Radford et al. 2021,
# Fig. 3):
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
# Pick a batch with the slider: the matrix shows each row's softmax (every cell holding at least 1 % of its row is
# printed), the box marks the caption each image picks (green if it names the right digit). Two images of the same
# digit in one batch make the "right" answer ambiguous: either "six" caption fits both sixes, so a row may split its
# probability between its own caption and its neighbour's and still be right about the digit. This is why CLIP's
# loss on MNIST never reaches zero (Exercise 4 fixes the targets).

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
# (Rombach et al. 2022, Sec. 3.3: the equation just before their Eq. 3, which they write with column vectors,
# $Q = W_Q\, \varphi(z_t)$; the attention itself is Eq. 1 of Vaswani et al. 2017)
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
layer.keep_weights = True  # keep the softmax weights of this call, to look at them
package = layer(x_img, tokens, token_mask)  # (1, 49, C)
weights = layer.last_weights  # (1, heads, 49, 16)
layer.keep_weights, layer.last_weights = False, None
naive = naive_cross_attention(layer, x_img[0], tokens[0], token_mask[0])
real = int(token_mask.sum())
print("output shape:", tuple(package.shape), "- one vector per image position")
print("real tokens:", real, "of", token_mask.shape[1], "- the rest is padding")
claim("naive loops == package CrossAttention (within 1e-5)", torch.allclose(naive, package[0], atol=1e-5))
claim("padding tokens get weight exactly 0, and each position's weights over the real tokens sum to 1 (within 1e-6)",
      bool((weights[..., real:] == 0).all()) and torch.allclose(weights[..., :real].sum(-1), torch.ones(1), atol=1e-6))

# %% [markdown]
# ## 5. A text-conditioned latent U-Net, and guidance with the empty prompt
#
# The denoiser $\varepsilon_\theta(z_t, t, c)$ is Chapter 3's U-Net with three changes: it reads 4-channel 7×7 latents;
# it has a single resolution level (7×7 is already small), where every block is a ResBlock, then self-attention
# over the 49 positions, then **cross-attention to the 16 text tokens**; and the class embedding is gone. The VAE
# and the text encoder are frozen inside the model, so one checkpoint holds all three.
#
# Training is Algorithm 1 of Chapter 3 on latents, with the prompt's tokens $\tau(c)$ as a third input (Rombach et al.
# 2022, Eq. 3; their Eq. 2 is the same loss without a condition):
#
# $$\mathcal{L}_{LDM} = \mathbb{E}_{x,\, c,\, \varepsilon,\, t}\, \big\lVert \varepsilon - \varepsilon_\theta(z_t, t, \tau(c)) \big\rVert^2,
# \qquad z_0 = s \cdot \mathcal{E}(x),$$
#
# with a random caption template per image and step, and **caption dropout**: 10% of the captions are replaced by the
# empty prompt `""`. The same network then also predicts the noise *without* a prompt, and classifier-free guidance
# (Chapter 3) mixes the two, with the encoding of `""` as the "no condition":
#
# $$\tilde\varepsilon = \varepsilon_\theta(z_t, t, \tau(\texttt{""})) + w\,\big(\varepsilon_\theta(z_t, t, \tau(c)) - \varepsilon_\theta(z_t, t, \tau(\texttt{""}))\big).$$
#
# $w = 0$ is the model with the empty prompt, $w = 1$ the plain conditional model, and $w > 1$ pushes past it.
#
# **Where the formula comes from.** Bayes' rule, $p(z_t \mid c) = p(c \mid z_t)\, p(z_t) / p(c)$, turns into a sum once
# we take the gradient of its logarithm with respect to $z_t$ (the score); $p(c)$ does not depend on $z_t$ and drops out:
#
# $$\nabla \log p(z_t \mid c) = \nabla \log p(z_t) + \nabla \log p(c \mid z_t).$$
#
# Guidance raises the classifier to a power $w$: sample from $p_w(z_t \mid c) \propto p(z_t)\, p(c \mid z_t)^w$, whose
# score is $\nabla \log p(z_t) + w\, \nabla \log p(c \mid z_t)$. Classifier guidance (Dhariwal & Nichol 2021) trains a
# separate classifier on noisy inputs for the second term. Ho & Salimans' observation is that the diffusion model already
# holds an *implicit* classifier: the same rule read backwards gives
# $\nabla \log p(c \mid z_t) = \nabla \log p(z_t \mid c) - \nabla \log p(z_t)$, so
#
# $$\nabla \log p_w(z_t \mid c) = \nabla \log p(z_t) + w\,\big(\nabla \log p(z_t \mid c) - \nabla \log p(z_t)\big).$$
#
# A noise predictor is a scaled score, $\varepsilon_\theta(z_t, t, c) \approx -\sqrt{1-\bar\alpha_t}\,\nabla \log p(z_t \mid c)$
# (the best prediction of $\varepsilon$ is $\mathbb{E}[\varepsilon \mid z_t]$, and Tweedie's formula ties it to the score),
# with the same factor for the conditional and the unconditional prediction; multiplying the line above by
# $-\sqrt{1-\bar\alpha_t}$ gives the guided $\tilde\varepsilon$. So $w$ is the exponent on the implicit classifier,
# and $w = 1$ leaves $p(z_t \mid c)$ itself.
#
# **A convention to watch.** Ho & Salimans (2022, Eq. 6) write $\tilde\varepsilon = (1 + w)\,\varepsilon_\theta(z_t, c) -
# w\,\varepsilon_\theta(z_t)$: they guide the *conditional* model, $p(z_t \mid c)\, p(c \mid z_t)^{w}$, so their $w$ is
# ours minus 1. Our $w = 3$ is their $w = 2$, and their "no guidance", $w = 0$, is our $w = 1$. The course uses the other
# common convention, the `guidance_scale` of Stable Diffusion's pipelines, where 1 means no guidance.

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
eps_guided = ldm.denoiser(3.0)(z, t, **cond)  # one batched call on [cond; null]
claim("guided == eps_u + 3 (eps_c - eps_u) (within 1e-5)", torch.allclose(eps_guided, eps_u + 3.0 * (eps_c - eps_u), atol=1e-5))

# %% [markdown]
# ## 6. Text to image
#
# Sampling is DDIM on latents, then one decoder call. One detail differs from pixel space. DDIM first predicts
# $\hat z_0 = (z_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)/\sqrt{\bar\alpha_t}$; at the first step of the cosine schedule
# $\bar\alpha_t = 2 \cdot 10^{-9}$, so an error of 0.05 in $\hat\varepsilon$ becomes an error of about 1,000 in $\hat z_0$. Pixel
# samplers clip $\hat x_0$ to the data's range $[-1, 1]$. Latents have no fixed range, but we can measure it: the largest
# $|z_0|$ of the training latents (printed above) is stored in the model as `clip_x0`. Without it, 100 samples
# (ten per digit), guidance 3, 25 DDIM steps, judged by the course's LeNet:

# %%
prompts, labels = digit_prompts(100), torch.arange(100) % 10  # "a handwritten zero", "... one", ... ten times
text100 = ldm.conditioning(100, prompt=prompts)
clipping = {}
for bound in (None, ldm.config.clip_x0):
    z_hat, frames = ddim_sample(ldm.denoiser(3.0), ldm.sched, (100, 4, 7, 7), 25, torch.Generator().manual_seed(0),
                                trajectory=True, clip_x0=bound, **text100)
    images = ldm.decode(z_hat).clamp(-1, 1)
    read = (classifier(images).argmax(dim=1) == labels).float().mean().item()
    clipping[bound] = (frames[0]["x0_hat"].abs().max().item(), read, images)
    print(f"clip_x0 = {bound if bound is None else round(bound, 2)}: largest |z0_hat| at the first step "
          f"{clipping[bound][0]:7.1f}; {read:.0%} of samples read as the prompted digit")

# %%
# NBVAL_CHECK_OUTPUT
(unclipped_size, unclipped_acc, _), (clipped_size, clipped_acc, clipped) = clipping.values()
claim("unclipped, the first prediction |z0_hat| exceeds 100 (the data never exceeds 6)", unclipped_size > 100)
claim("clipped sampling reads as the prompted digit at least 90 % of the time, unclipped under 60 %",
      clipped_acc >= 0.9 and unclipped_acc < 0.6)

# %% [markdown]
# The first 50 clipped samples: five of each prompt, "a handwritten zero" ... "a handwritten nine" from left to right:

# %%
display(Image(png_bytes(grid(clipped[:50], nrow=10), scale=2)))

# %% [markdown]
# **The widget.** Type a prompt (any words: unknown ones become `<unk>`, long prompts are cut to 16 tokens) and press
# Enter. For each guidance value it runs the same starting noise; the step slider shows the latent $z_t$ being denoised
# next to the decoding of the current prediction $\mathcal{D}(\hat z_0 / s)$. Below, each token's cross-attention map,
# averaged over steps, heads and layers (section 7 says how to read them). The precomputed prompt plays without a kernel.

# %%
text_to_image(ldm, "a handwritten seven", guidances=(1.0, 2.0, 3.0, 5.0), n=4, steps=10 if FAST else 20, every=2 if FAST else 4)

# %% [markdown]
# **Prompt adherence against guidance.** The same 100 prompts and starting noise for every $w$, 25 DDIM steps, judged by
# LeNet: the share read as the prompted digit, and FID-LeNet against the held-out digits. $w = 3$ is the clipped run
# above; $w = 0$ is the model with the empty prompt, so we sample it that way (one network call per step, not two).
# Below the table, the real-data reference level at the same N: 100 real training digits against the same held-out
# digits, mean ± std over 20 draws, once drawn at random (what `minilineage eval` reports) and once drawn ten of each
# digit, as the prompts ask.

# %%
runs = {3.0: clipped}
adherence, fids = {}, {}
for w in (0.0, 1.0, 2.0, 3.0, 5.0):
    if w not in runs:
        runs[w] = ldm.sample(100, torch.Generator().manual_seed(0), prompt=prompts if w else [""] * 100, steps=25,
                             guidance=w if w else 1.0)
    phi = lenet_features(classifier, runs[w])  # (100, 64): both judges read these features
    adherence[w] = (classifier.head(phi).argmax(dim=1) == labels).float().mean().item()
    fids[w] = frechet_distance(*feature_stats(phi), *reference)
    print(f"guidance {w}: {adherence[w]:.0%} read as the prompted digit, FID-LeNet {fids[w]:.0f}")
level_100 = real_floor(classifier, 100, reference, draws=20, features=train_features)
matched_100 = real_floor(classifier, 100, reference, draws=20, features=train_features, labels=labels)
print(f"100 real training digits, drawn at random:    FID-LeNet {level_100['real_floor']:.0f} ± {level_100['real_floor_std']:.0f}")
print(f"100 real training digits, ten of each digit: FID-LeNet {matched_100['real_floor']:.0f} ± {matched_100['real_floor_std']:.0f}")

# %%
# NBVAL_CHECK_OUTPUT
claim("without guidance (w = 0) the prompt is followed no better than chance (under 25 %)", adherence[0.0] < 0.25)
claim("adherence rises from w = 0 to 1 to 2", adherence[0.0] < adherence[1.0] < adherence[2.0])
claim("and is at least 90 % for every w >= 2", min(adherence[2.0], adherence[3.0], adherence[5.0]) >= 0.9)
claim("FID-LeNet falls from w = 0 to w = 2, then rises again by w = 5: variety traded for adherence",
      fids[0.0] > fids[1.0] > fids[2.0] < fids[5.0])
claim("at N = 100, guidance 2 scores within 2 std of randomly drawn real digits: that comparison cannot tell them apart",
      abs(fids[2.0] - level_100["real_floor"]) < 2 * level_100["real_floor_std"])
claim("real digits drawn ten of each digit score over 20 % lower, with under half the spread",
      matched_100["real_floor"] < 0.8 * level_100["real_floor"] and matched_100["real_floor_std"] < 0.5 * level_100["real_floor_std"])
claim("and against them guidance 2 is over one std worse", fids[2.0] > matched_100["real_floor"] + matched_100["real_floor_std"])

# %% [markdown]
# **Reading FID-LeNet at N = 100.** Guidance 2 may land *below* the level of randomly drawn real digits. It is not better
# than real data. FID-LeNet fits a Gaussian to N feature vectors and measures its distance to the reference's, and the fit is noisy:
# the estimate is biased upwards and spread out, the more so the smaller N. The mean term alone shows the bias: the
# mean $\hat\mu_N$ of N samples misses the true mean $\mu_s$ by a random vector whose squared length averages
# $\operatorname{Tr}\Sigma_s / N$, so
#
# $$\mathbb{E}\,\lVert \hat\mu_N - \mu_r \rVert^2 = \lVert \mu_s - \mu_r \rVert^2 + \operatorname{Tr}\Sigma_s / N ,$$
#
# and the covariance term adds more. Both extra terms depend on the scored set's own covariance $\Sigma_s$, so two sets
# carry different amounts of bias at the same N. One difference matters most here. A random draw of 100 real digits holds
# a random number of each digit, so the mean also wanders with the class counts, and LeNet's features differ most
# *between* classes: the between-class part of $\Sigma_s$ enters the bias. Our samples were asked for ten of each digit,
# like the reference, which holds exactly 50 of each; for them that part drops out. Drawn ten of each digit too, real
# digits score far lower, and guidance 2 is plainly worse than they are. The level of randomly drawn real digits against
# N shows how much of the number is bias:

# %%
levels = {n: real_floor(classifier, n, reference, draws=20, features=train_features) for n in (50, 100, 200, 500, 1000, 4500)}
for n, level in levels.items():
    print(f"N = {n:4d} real training digits: FID-LeNet {level['real_floor']:6.1f} ± {level['real_floor_std']:4.1f}")
recorded = ldm.checkpoint_info["metrics"]
print(f"recorded evaluation of ldm-mnist: {recorded['n']} samples at guidance {recorded['guidance']}: FID-LeNet "
      f"{recorded['fid_lenet']:.1f}; real digits at that N {recorded['real_floor']:.1f} ± {recorded['real_floor_std']:.1f}")

# %%
# NBVAL_CHECK_OUTPUT
claim("the real-data level falls over 3x from N = 100 to N = 4,500: at N = 100 most of FID-LeNet is estimation bias",
      levels[100]["real_floor"] > 3 * levels[4500]["real_floor"])
claim("its spread at N = 100 is over 3x its spread at N = 1,000", levels[100]["real_floor_std"] > 3 * levels[1000]["real_floor_std"])
claim("with 1,000 samples the recorded guidance-3 evaluation lies over 10 std above real digits",
      recorded["fid_lenet"] > recorded["real_floor"] + 10 * recorded["real_floor_std"])

# %% [markdown]
# So at N = 100 the bias is most of the number, and the spread of the randomly drawn level is larger than the gap we
# want to see. With 1,000 samples the same model is plainly worse than real data, as the recorded evaluation shows.
# Four rules follow, and `minilineage eval` prints them next to its numbers: compare models only at equal N, and large
# N; read a gap within about two standard deviations of the real-data level as chance; compare like with like (samples
# asked for in equal numbers per class against real digits drawn the same way: `real_floor(..., labels=)`); and call
# that level a *reference*, not a floor: at small N a model can score below it without being closer to the data.
#
# The other caption templates work too, and so do prompts the model never saw in training, as long as their words
# are in the vocabulary; "a purple seven" becomes `<bos> a <unk> seven <eos>`:

# %%
for prompt in ("the digit 4", "a drawing of a two", "the number 9 written by hand", "a purple seven"):
    tokenizer = ldm.condition.tokenizer
    print(f"{prompt!r:35s} -> {tokenizer.decode(tokenizer.encode(prompt)[0][0])!r}")
    display(Image(png_bytes(ldm.sample(8, torch.Generator().manual_seed(1), prompt=prompt, steps=25), scale=2)))

# %% [markdown]
# ## 7. Where the prompt is read
#
# Cross-attention weights say, for every latent position, how it splits its attention over the tokens. Read one
# token's column and you get a map. It is tempting to read such maps as "where each word acts". Measure before
# believing it: 100 held-out digits, ten of each, noised to a mid-way step ($t = 400$) and denoised once with their own
# prompt, "a handwritten zero" ... "a handwritten nine". For each of the five real tokens: its **share** of all the
# attention, and its **stroke lift**, the share of its weight that lands on stroke cells of the 7×7 grid divided by the
# share of cells that are stroke (about a quarter): 1 means no preference, 2 twice as much on the strokes, 0.5 half.

# %%
per_digit = torch.cat([torch.nonzero(test.labels == d)[:10, 0] for d in range(10)])  # 10 held-out digits of each class
digits = x_test[per_digit]  # (100, 1, 28, 28)
own_prompts = [test.caption(int(d)) for d in test.labels[per_digit]]  # "a handwritten seven" for a seven
t = torch.tensor(400)
eps = torch.randn(100, 4, 7, 7, generator=torch.Generator().manual_seed(0))
z_t = ldm.sched.sqrt_alpha_bar[t] * ldm.encode(digits, None) + ldm.sched.sqrt_one_minus_alpha_bar[t] * eps  # Eq. (4) of Ho et al.
maps = ldm.cross_attention_maps(z_t, t, own_prompts)[:, :5]  # (100, 5, 7, 7): <bos> a handwritten <digit> <eos>
names = ["<bos>", "a", "handwritten", "<digit>", "<eos>"]
share = maps.mean(dim=(2, 3)).mean(dim=0)  # (5,) each token's share of all the attention
lift = stroke_lift(maps, digits)  # (100, 5)
print(f"{'token':12s} {'share':>6s} {'stroke lift':>12s} {'on strokes in':>14s}")
for j, name in enumerate(names):
    print(f"{name:12s} {share[j]:6.0%} {lift[:, j].mean():12.2f} {(lift[:, j] > 1).float().mean():11.0%} of images")

# %% [markdown]
# "a" and `<eos>` sit clearly on the strokes, "handwritten" leans the same way, `<bos>` takes the largest share and sits on
# the background, and the digit word, the one token that differs between the prompts, is read slightly *less* on the
# strokes than anywhere else. Why?
# Our text encoder is a transformer without a causal mask, so every output vector has seen the whole prompt: the vector
# at position "a" is not the word "a". Two more measurements say which vectors carry the digit: how alike each
# position's vector is across the ten prompts (cosine similarity, averaged over the 45 pairs of different digits), and
# what happens to the U-Net's noise prediction when one position's vector is swapped for the same position of another
# digit's prompt: the fraction of the full change from prompt A's prediction to prompt B's that the swap achieves.

# %%
ten = ldm.conditioning(10, prompt=digit_prompts(10))["context"][:, :5]  # (10, 5, 64): the ten prompts' token vectors
cosine = torch.einsum("a j d, b j d -> j a b", F.normalize(ten, dim=-1), F.normalize(ten, dim=-1))  # (5, 10, 10)
alike = (cosine.sum(dim=(1, 2)) - 10) / 90  # (5,) mean over the 90 ordered pairs of different digits
other = (test.labels[per_digit] + 1 + torch.randint(0, 9, (100,), generator=torch.Generator().manual_seed(2))) % 10
A, B = ldm.conditioning(100, prompt=own_prompts), ldm.conditioning(100, prompt=[test.caption(int(d)) for d in other])
eps_A, eps_B = ldm(z_t, t, **A), ldm(z_t, t, **B)
change = (eps_B - eps_A).flatten(1)  # (100, 196): from prompt A's prediction to prompt B's
carried = []
for j in range(5):
    swapped = A["context"].clone()
    swapped[:, j] = B["context"][:, j]  # only position j comes from the other digit's prompt
    moved = (ldm(z_t, t, context=swapped, context_mask=A["context_mask"]) - eps_A).flatten(1)
    carried.append(((moved * change).sum(1) / change.square().sum(1)).mean().item())  # projection onto A -> B
print(f"{'token':12s} {'alike across digits':>20s} {'swap carries':>13s}")
for j, name in enumerate(names):
    print(f"{name:12s} {alike[j]:20.2f} {carried[j]:12.0%}")

# %%
# NBVAL_CHECK_OUTPUT
claim("each position's attention over the five real tokens sums to 1 (within 1e-5)",
      torch.allclose(maps.sum(dim=1), torch.ones(100, 7, 7), atol=1e-5))
claim("<bos> takes the largest share, over 30 %, and its vector is nearly the same for every digit (cosine over 0.9)",
      share.argmax().item() == 0 and share[0] > 0.3 and alike[0] > 0.9)
claim("'a' and <eos> sit on the strokes (mean lift over 1.2), the digit word does not (under 1.1)",
      min(lift[:, 1].mean(), lift[:, 4].mean()) > 1.2 and lift[:, 3].mean() < 1.1)
claim("the vectors at 'a' and <eos> differ most between digits (cosine under 0.3), more than the digit word's own",
      max(alike[1], alike[4]) < 0.3 < alike[3])
claim("swapping the vector at 'a' or <eos> carries over twice as much of the change to another digit as swapping "
      "the digit word's", min(carried[1], carried[4]) > 2 * carried[3])

# %% [markdown]
# Three digits, each token's map on one shared colour scale (a square-root scale, so faint maps stay visible), the cyan line
# the digit's strokes; above each map its share and its stroke lift:

# %%
picked = [0, 10, 70]  # the first zero, one and seven of the 100
display(Image(figure_png(attention_figure(digits[picked], maps[picked], names))))

# %% [markdown]
# **What the maps show, and what they do not.** They show where, in the latent, each position of the text encoder's
# output is *read*: here the strokes read mostly the vectors at "a" and `<eos>`, and the background reads `<bos>`, a nearly
# constant vector, a place to put attention when there is nothing to fetch (language models have such "attention sinks"
# too). They do not show where a *word* acts: a bidirectional encoder spreads the digit across every position, and the
# digit word's own vector carries much less of it than the vectors at "a" and `<eos>`. They do not show influence: a weight says how much of a value
# vector is mixed in, not how much that value changes the output (the swap test measures that, and `<bos>`'s large
# share carries almost nothing). And they are one step, one noise draw, averaged over heads and layers, at 7×7. In
# Stable Diffusion, whose CLIP text encoder is causal, a word's vector has seen only the words before it, so the maps
# of nouns there are more local; its `<bos>` and padding also collect a large share.
#
# ## 8. Train it yourself
#
# Three recipes, in order (the third loads the first two from `assets/checkpoints/`):
#
# | recipe | what | steps |
# | --- | --- | --- |
# | `minilineage train clip-mnist` | text + image encoders, contrastive loss | 1,000 |
# | `minilineage train latent-vae-mnist` | 28×28 ↔ 7×7×4 autoencoder | 1,500 |
# | `minilineage train ldm-mnist` | the latent U-Net with cross-attention | 2,000 |
#
# The records of the shipped checkpoints (command, steps, wall time, device, evaluation), and Chapter 3's pixel-space
# DDPM for comparison. Both diffusion models were scored the same way: 1,000 samples at their default steps and
# guidance, FID-LeNet next to the real-data level at the same N.

# %%
for model in (clip, vae, ldm, load_model("ddpm-mnist")):
    info = model.checkpoint_info
    print(f"{info['recipe']:17s} {info['step']:5d} steps, {info['wall_time_s'] / 60:5.1f} min on {info['device']}: {info['metrics']}")

# %% [markdown]
# Fast mode runs 5 steps of each (`--preset gpu` on the command line trains wider models on the full MNIST). The
# first two go through `train_recipe`, which also evaluates them. For the third we call the pieces the recipe is made
# of, since its evaluation alone (1,000 samples) takes a minute: `build` loads the two frozen parts and measures the
# scale factor on the training data; `fit` is the course's one training loop.
#
# **Memory.** Each run also reports the peak memory it added (on a GPU: the peak allocated by PyTorch; on a CPU: the
# peak resident memory, Linux only). A long-lived notebook keeps memory it has freed, and a run that reuses it shows up
# as almost nothing, so on a CPU we first hand the freed memory back to the system (glibc's `malloc_trim`). A step's
# memory does not depend on how many steps run, so fast mode measures it too; it includes building the model (for
# `ldm-mnist`, encoding the training set once to measure the scale factor).

# %%
device = pick_device("auto")


def memory_baseline() -> int | None:
    """`start_peak_memory`, after returning freed heap to the OS so that reusing it counts (glibc only)."""
    gc.collect()
    if device.type == "cpu":
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: the figure may under-count
            pass
    return start_peak_memory(device)


def peak_megabytes(baseline: int | None) -> float | None:
    """Peak memory since `memory_baseline` returned `baseline`, in MB (None where it cannot be measured)."""
    peak = peak_memory(device, baseline)
    return None if peak is None else peak / 2**20


memory = {}
for name in ("clip-mnist", "latent-vae-mnist"):
    baseline = memory_baseline()
    result = train_with_plot(name, steps=5 if FAST else None, out=None, progress=not FAST)
    memory[name] = peak_megabytes(baseline)
    print(f"{name}: {result.record['step']} steps in {result.record['wall_time_s']} s, metrics {result.record['metrics']}")
recipe = RECIPES["ldm-mnist"]
config = recipe.presets["cpu"].train
baseline = memory_baseline()
state = fit(recipe.build("cpu"), diffusion_loss, caption_batches(train, config.batch_size),
            replace(config, steps=5) if FAST else config, progress=not FAST)
memory["ldm-mnist"] = peak_megabytes(baseline)
print(f"ldm-mnist: {state.step} steps in {state.wall_time_s:.1f} s, final loss {state.history[-1][1]:.3f}")
for name, megabytes in memory.items():
    print(f"{name:17s} peak memory added by training (batch {RECIPES[name].presets['cpu'].train.batch_size}) on {device.type}: "
          + ("not measurable here" if megabytes is None else f"{megabytes:.0f} MB"))

# %% [markdown]
# Measured in a fresh process instead (the same recipes, 20 steps, batch 128, one CPU thread, after a one-step warm-up and
# `malloc_trim`), the three runs added about 95 MB (`clip-mnist`), 60 MB (`latent-vae-mnist`) and 215 MB (`ldm-mnist`)
# to the roughly 710 MB that Python, PyTorch and the data take. No GPU figure was measured for this chapter.
#
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
# **Exercise 3.** Suppose you trained on Stable Diffusion's latents and forgot its scale factor 0.18215, so the latents
# entered the forward process with standard deviation 1 / 0.18215. By how much (in nats) would log SNR(t) be shifted,
# at every t?

# %%
my_shift = None  # a number
exercise("ch4.log_snr_shift", my_shift)

# %% [markdown]
# **Exercise 4.** Implement the CLIP loss, with the fix for MNIST's ambiguity: when two items of a batch show the same digit,
# the target of a row is spread evenly over every item with that row's label (soft targets), instead of sitting on the
# diagonal alone. With all labels different it is the loss of section 3. Write
# `my_clip_loss(image_emb, text_emb, logit_scale, labels)` for embeddings (N, E), not yet normalised, a scale $s$ and labels
# (N,). (`F.cross_entropy` takes a matrix of target probabilities as well as class indices.)

# %%
my_clip_loss = None  # def my_clip_loss(image_emb, text_emb, logit_scale, labels): ...
exercise("ch4.clip_loss", my_clip_loss)

# %% [markdown]
# **Exercise 5.** Write cross-attention for one head in matrix form (no loops): `my_cross_attention(x, c, mask, W_q, W_k, W_v)`
# with image tokens x (N_q, C), text tokens c (M, D), a bool mask (M,) that is False on padding, and projections W_q (C, d),
# W_k (D, d), W_v (D, d); return softmax(Q Kᵀ / √d) V, (N_q, d), with padding given no weight. The check compares it with
# the package's `CrossAttention`.

# %%
my_cross_attention = None  # def my_cross_attention(x, c, mask, W_q, W_k, W_v): ...
exercise("ch4.cross_attention", my_cross_attention)

# %% [markdown]
# **Exercise 6.** One image position has query $q = (1, 0)$; three text tokens have keys $k_1 = (2, 0)$, $k_2 = (0, 2)$,
# $k_3 = (4, 0)$, and token 3 is padding. With $d = 2$, what are the attention weights over the three tokens?

# %%
my_weights = None  # a tensor of 3 weights
exercise("ch4.attention_weights", my_weights)

# %% [markdown]
# **Exercise 7.** Write classifier-free guidance: a function of the conditional and unconditional noise predictions
# and a scale `w` that returns the guided prediction.

# %%
my_guided = None  # def my_guided(eps_cond, eps_uncond, w): ...
exercise("ch4.guidance", my_guided)

# %% [markdown]
# ## What goes wrong, and what comes next
#
# Latent diffusion made each step cheap and let words steer the image. Its samples are not yet as good as Chapter 3's:
# compare the FID-LeNet of the two records in section 8, both from 1,000 samples. The autoencoder is not to blame: in
# section 2 its reconstructions scored like the digits themselves. The latent denoiser is, after its short training.
# Cheaper steps buy more of them, and a bigger denoiser.

# %%
# NBVAL_CHECK_OUTPUT
ddpm_record = load_model("ddpm-mnist").checkpoint_info["metrics"]
claim("at 1,000 samples, latent diffusion scores worse than Chapter 3's pixel DDPM", recorded["fid_lenet"] > ddpm_record["fid_lenet"])
claim("and over twice what its own autoencoder's reconstructions score at the same N", recorded["fid_lenet"] > 2 * recon_fid)

# %% [markdown]
# Which raises the question of the denoiser itself: a U-Net whose designer decided where to downsample, where
# attention goes and how wide each level is, a convolutional network with attention bolted on at one resolution.
# Transformers scale more predictably: more layers, more width, more data, better results. Chapter 5 shows how an
# image becomes a sequence of patch tokens (ViT), and Chapter 6 replaces the U-Net of latent diffusion with a
# transformer on latent patches: the Diffusion Transformer (DiT), the backbone of Sora.
