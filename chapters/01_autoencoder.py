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
# # Chapter 1 — The autoencoder: compression is not generation
#
# Every model in this course, up to the video model at the end, is built around one idea that
# appears here first: squeeze an image into a small code, then rebuild the image from that code.
# The autoencoder does exactly that and nothing more. It is a superb compressor and a poor
# generator, and understanding *why* it fails at generating is the key that opens Chapter 2.
#
# **You will learn**
# 1. what an encoder, a code and a decoder are, in equations and in twenty lines of PyTorch;
# 2. how reconstruction error falls as the code grows (measured, not claimed);
# 3. why decoding a *random* code gives garbage, and how to see it;
# 4. a first glimpse of *denoising*, the operation that diffusion models repeat a thousand times.
#
# Everything runs on a laptop CPU in seconds: the models were trained by the package's own
# `minilineage train` recipes and ship in `assets/checkpoints/`. A "train it yourself" cell near
# the end reproduces them.

# %%
import torch
import torch.nn.functional as F
from IPython.display import Image, display

import minilineage
from minilineage.autoencoder import Autoencoder, reconstruction_mse
from minilineage.data import load_dataset
from minilineage.exercises import check, close_to
from minilineage.recipes import load_model, train_recipe
from minilineage.widgets import LatentExplorer, denoise_player, grid, png_bytes

FAST = minilineage.fast_mode()  # set by CI (MINILINEAGE_FAST=1): keeps training cells short
torch.set_grad_enabled(False)
test = load_dataset("mnist-5k", "test")  # 500 real MNIST digits the models never trained on
x_test = test.float_images()  # (500, 1, 28, 28), pixels in [-1, 1], sorted by label
show = x_test[::50]  # one of each digit, for pictures
print(f"{len(test)} test digits of shape {test.shape}")

# %% [markdown]
# ## 1. The idea in plain words and in equations
#
# An **encoder** $f_\phi$ maps an image $x \in \mathbb{R}^{784}$ (28×28 pixels) to a short code
# $z = f_\phi(x) \in \mathbb{R}^{d}$ with $d \ll 784$. A **decoder** $g_\theta$ maps the code back to an
# image $\hat x = g_\theta(z)$. Both are neural networks trained together to make $\hat x$ close to $x$:
#
# $$\mathcal{L}(\phi, \theta) = \mathbb{E}_{x \sim \text{data}} \, \lVert x - g_\theta(f_\phi(x)) \rVert^2 .$$
#
# Because the code is narrow, the networks cannot copy pixels through; they must find the few
# numbers that describe a digit (which digit, how slanted, how thick). That is compression.
#
# The package's `Autoencoder` is two stride-2 convolutions down to a 7×7 feature map, a linear layer
# to the code, and the mirror image back up. Here it is with a 2-number code:

# %%
ae = load_model("ae-mnist", expect=Autoencoder)
print(ae)
z = ae.encode(x_test[:4])
print("code shape:", tuple(z.shape), " reconstruction shape:", tuple(ae.decode(z).shape))

# %% [markdown]
# The loss is one line. The package's `ae_loss` is the same thing; let us check that our own
# line agrees with it on a batch:

# %%
from minilineage.autoencoder import ae_loss

x = x_test[::8]  # 63 digits, every class
our_loss = ((x - ae.decode(ae.encode(x))) ** 2).mean()
assert torch.allclose(our_loss, ae_loss(ae, {"x": x}, None))
print(f"reconstruction loss on {len(x)} test digits: {our_loss:.4f}")

# %% [markdown]
# How was this checkpoint made? Every checkpoint records its recipe, seed, steps, wall time and
# device (also in the `.json` file beside it):

# %%
info = ae.checkpoint_info
print(f"{info['command']}  |  {info['step']} steps, seed {info['seed']}, "
      f"{info['wall_time_s']} s on {info['device']}  |  {info['metrics']}")

# %% [markdown]
# ## 2. Reconstruction error versus code size
#
# With two numbers the reconstructions are recognisable but smudged. Give the code more room and
# they sharpen. The course ships one autoencoder per code size (recipes `ae-mnist`, `ae-mnist-z4` …
# `ae-mnist-z32`, identical except for `latent_dim`); here is their error on the 500 held-out digits,
# on the familiar $[0, 1]$ pixel scale:

# %%
# NBVAL_CHECK_OUTPUT
models = {2: ae} | {d: load_model(f"ae-mnist-z{d}") for d in (4, 8, 16, 32)}
print(f"{'code size':>9} | {'compression':>11} | {'test MSE':>8}")
for d, model in models.items():
    print(f"{d:>9} | {784 / d:>10.0f}x | {reconstruction_mse(model, x_test):8.4f}")

# %%
rows = [show] + [models[d](show).clamp(-1, 1) for d in models]
display(Image(png_bytes(grid(torch.cat(rows), nrow=10), scale=2)))
print("top row: originals; then code sizes", list(models))

# %% [markdown]
# Reading the table: every doubling of the code buys a smaller error, with diminishing returns.
# At 32 numbers (a 24× compression) the digits are nearly perfect. As a *compressor*, the
# autoencoder works.
#
# ## 3. The latent space, and the explorer
#
# With a 2-number code we can draw the whole code space. Each dot below is one test digit,
# placed at its code $z = f_\phi(x)$ and coloured by its label. Move the sliders to pick any point
# $z$ and watch the decoder's image $g_\theta(z)$ (this widget decodes live, so it needs a running kernel).

# %%
codes = ae.encode(x_test)
extent = float(codes.abs().max().ceil())
explorer = LatentExplorer(ae.decode, codes=codes, labels=test.labels, extent=extent)
explorer

# %% [markdown]
# Things to try: move between two clusters and watch one digit morph into another; then go to an
# empty region far from every dot.
#
# ## 4. Decoding random codes gives garbage — and why
#
# If the decoder can turn *any* point into an image, can we generate new digits by picking random
# codes? The natural guess is $z \sim \mathcal{N}(0, I)$. Compare that guess with where the
# codes of real digits actually lie:

# %%
# NBVAL_CHECK_OUTPUT
codes32 = models[32].encode(x_test)
print(f"32-D codes of real digits: mean per dim in [{codes32.mean(0).min():.2f}, {codes32.mean(0).max():.2f}], "
      f"std per dim in [{codes32.std(0).min():.2f}, {codes32.std(0).max():.2f}]")

# %% [markdown]
# Nothing in the training loss asked the codes to look like $\mathcal{N}(0, I)$: their centre and scale are
# whatever the optimiser happened to find (here each dimension is roughly of unit size, by luck of the
# initialisation). Matching each dimension is not enough, though: the real codes fill only a thin,
# irregular region of the 32-D space, with strong correlations between dimensions. A random code lands
# in the empty space around that region, where the decoder was never trained, and its answer there is
# arbitrary.
#
# We can measure "arbitrary" with the course's independent digit classifier (recipe `lenet-mnist`,
# 97.6 % accurate on the test digits): how often does it read an image confidently as *some* digit?

# %%
# NBVAL_CHECK_OUTPUT
classifier = load_model("lenet-mnist")
gen = torch.Generator().manual_seed(0)
random_images = models[32].sample(500, generator=gen)
matched = codes32.mean(0) + codes32.std(0) * torch.randn(500, 32, generator=gen)  # even with the right scale
for name, images in [("real test digits", x_test), ("decoded z ~ N(0, I)", random_images),
                     ("decoded z with the codes' mean/std", models[32].decode(matched).clamp(-1, 1))]:
    confidence = F.softmax(classifier(images), dim=1).max(dim=1).values
    print(f"{name:36s} classifier confidence {confidence.mean():.2f}, share above 0.9: {(confidence > 0.9).float().mean():.2f}")

# %%
display(Image(png_bytes(grid(torch.cat([random_images[:10], models[32].decode(matched[:10]).clamp(-1, 1)]), nrow=10), scale=2)))
print("top: decoded N(0, I) codes; bottom: decoded codes with the real codes' mean and spread")

# %% [markdown]
# Real digits are read confidently 98 % of the time; decoded random codes only about half the time, and
# the pictures show why: strokes that belong to no digit. Matching each dimension's mean and spread
# barely helps. The autoencoder *overfits its code space*: it learned a good code for each training
# digit and nothing in between. Chapter 2's variational autoencoder fixes exactly this, by making each image
# encode to a whole *region* of codes and pulling all those regions onto $\mathcal{N}(0, I)$.
#
# ## 5. A first glimpse of denoising
#
# Train the same network to rebuild the clean $x$ from a corrupted $x + \sigma \varepsilon$,
# $\varepsilon \sim \mathcal{N}(0, I)$, and you get a **denoising autoencoder** (recipe `dae-mnist`,
# noise levels $\sigma$ up to 1). Slide the noise level: left the noisy input, right the
# reconstruction. The player's frames are precomputed, so it also plays in an exported HTML page.

# %%
dae = load_model("dae-mnist")
player = denoise_player(show[:6], dae, levels=(0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0),
                        generator=torch.Generator().manual_seed(0))
player

# %%
# NBVAL_CHECK_OUTPUT
gen = torch.Generator().manual_seed(1)
for sigma in (0.25, 0.5, 1.0):
    noisy = x_test + sigma * torch.randn(x_test.shape, generator=gen)
    print(f"sigma = {sigma:4.2f}: error of the noisy input {F.mse_loss(noisy, x_test):.3f} "
          f"-> after the denoising AE {F.mse_loss(dae(noisy), x_test):.3f}")

# %% [markdown]
# Denoising one big step at a time is hard at high noise levels: the network has to guess a whole digit
# at once. Chapter 3's diffusion model takes the same idea and splits it into hundreds of small,
# easy denoising steps, and that is what finally makes it a generator.
#
# ## 6. Train it yourself
#
# `train_recipe` is the same function the command `minilineage train ae-mnist` calls. The full recipe
# (2,000 steps) takes about a minute on a laptop CPU; in fast mode we run 50 steps to show the loop
# working. A live loss plot appears while it trains.

# %%
result = train_recipe("ae-mnist", steps=50 if FAST else None, out=None, progress=not FAST)
print(f"{result.record['step']} steps in {result.record['wall_time_s']} s -> {result.record['metrics']}")

# %% [markdown]
# From the command line, the same run writes a checkpoint and its record:
#
# ```
# minilineage train ae-mnist --out runs/            # CPU preset: mnist-5k, about a minute
# minilineage train ae-mnist --preset gpu --out runs/  # full MNIST, needs the download
# minilineage sample runs/ae-mnist.pt --n 64 --out garbage.png
# ```
#
# ## 7. Exercises
#
# **Exercise 1.** A 28×28 image compressed to a 16-number code: by what factor is it compressed?

# %%
answer = None  # your number here
check(answer, close_to(49), "divide the number of pixels by the code size")

# %% [markdown]
# **Exercise 2.** Write the reconstruction error on the $[0,1]$ pixel scale yourself for the 8-number
# autoencoder on the first 100 test digits: map $x$ and $\hat x$ from $[-1, 1]$ to $[0,1]$, then take the mean
# squared difference. Compare with `reconstruction_mse`.

# %%
x100 = x_test[:100]
my_mse = None  # e.g. (( (models[8](x100).clamp(-1, 1) + 1) / 2 - ... ) ** 2).mean()
check(my_mse, close_to(reconstruction_mse(models[8], x100), rtol=1e-3), "(x + 1) / 2 maps [-1, 1] to [0, 1]")

# %% [markdown]
# **Exercise 3.** Use the explorer (or `ae.decode`) to find a 2-number code that decodes to a digit the
# classifier reads as a **1** with confidence above 0.9.

# %%
my_code = None  # e.g. torch.tensor([[0.5, -1.0]])
check(my_code, lambda z: F.softmax(classifier(ae.decode(torch.as_tensor(z, dtype=torch.float32).view(1, 2))), 1)[0, 1] > 0.9,
      "look where the dots coloured as label 1 sit in the scatter plot")

# %% [markdown]
# **Exercise 4 (think).** The denoising AE was trained with $\sigma \le 1$. Look at the player at
# $\sigma = 1.5$ and $2$: what does it do with noise stronger than anything it saw? What would you change
# so that one network handles every noise level? (Chapter 3's answer: tell the network the noise level.)
#
# ## What goes wrong, and what comes next
#
# - The autoencoder compresses well: 32 numbers rebuild a digit almost perfectly.
# - It does not generate: its codes occupy a small, oddly shaped region, and a random code decodes
#   to a smear the classifier cannot read.
# - The fix is to *shape* the code space on purpose. The **variational autoencoder** encodes each
#   image to a small Gaussian cloud of codes and adds a loss term that pulls every cloud towards
#   $\mathcal{N}(0, I)$. Then sampling $z \sim \mathcal{N}(0, I)$ lands where the decoder was trained. → Chapter 2.
