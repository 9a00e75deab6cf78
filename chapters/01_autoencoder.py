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
# 3. what decoding a *random* code gives, measured two ways, and why;
# 4. a first glimpse of *denoising*, the operation that diffusion models repeat a thousand times.
#
# Everything runs on a laptop CPU in seconds: the models were trained by the package's own
# `minilineage train` recipes and ship in `assets/checkpoints/`. A "train it yourself" cell near
# the end reproduces them.

# %%
import math

import torch
import torch.nn.functional as F
from IPython.display import Image, display

import minilineage
from minilineage.bench import peak_memory, start_peak_memory
from minilineage.checkpoint import load_model
from minilineage.checks import claim
from minilineage.data import load_dataset
from minilineage.exercises import exercise, show_solution
from minilineage.metrics import feature_stats, frechet_distance, lenet_features, real_floor
from minilineage.models.autoencoder import Autoencoder, ae_loss, reconstruction_mse
from minilineage.widgets import LatentExplorer, denoise_player, grid, png_bytes, train_with_plot

FAST = minilineage.chapter_setup()  # MINILINEAGE_FAST=1 (CI) keeps training cells short
torch.set_grad_enabled(False)
test = load_dataset("mnist-5k", "test")  # 500 real MNIST digits the models never trained on
x_test = test.float_images()  # (500, 1, 28, 28), pixels in [-1, 1], sorted by label
x_train = load_dataset("mnist-5k", "train").float_images()  # (4500, 1, 28, 28): what the models trained on
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
x = x_test[::8]  # 63 digits, every class
our_loss = ((x - ae.decode(ae.encode(x))) ** 2).mean()
package_loss = ae_loss(ae, {"x": x}, None)
print(f"reconstruction loss on {len(x)} test digits: ours {our_loss:.4f}, package {package_loss:.4f}")

# %%
# NBVAL_CHECK_OUTPUT
claim("our one-line loss equals the package's ae_loss within 1e-6 (relative)", torch.allclose(our_loss, package_loss, rtol=1e-6))

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
models = {2: ae} | {d: load_model(f"ae-mnist-z{d}") for d in (4, 8, 16, 32)}
errors = {d: reconstruction_mse(model, x_test) for d, model in models.items()}
print(f"{'code size':>9} | {'compression':>11} | {'test MSE':>8}")
for d, error in errors.items():
    print(f"{d:>9} | {784 / d:>10.0f}x | {error:8.4f}")

# %% [markdown]
# The last digits of these errors differ a little from one CPU to another. What the chapter claims
# from them does not, and is checked on every run (a claim that fails stops the notebook):

# %%
# NBVAL_CHECK_OUTPUT
sizes = list(errors)
claim("every doubling of the code lowers the test error",
      all(errors[a] > errors[b] for a, b in zip(sizes, sizes[1:])))
claim("32 numbers rebuild the held-out digits to a per-pixel MSE below 0.01", errors[32] < 0.01)
claim("2 numbers leave at least 5x the error of 32", errors[2] > 5 * errors[32])

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
# ## 4. Decoding random codes: how bad, and why
#
# If the decoder can turn *any* point into an image, can we generate new digits by picking random
# codes? The natural guess is $z \sim \mathcal{N}(0, I)$. Compare that guess with where the 32-number
# codes of the 4,500 training digits actually lie:

# %%
codes32 = models[32].encode(x_train)  # (4500, 32)
covariance = torch.cov(codes32.T)  # (32, 32)
variances = torch.linalg.eigvalsh(covariance)  # along the principal directions, ascending
effective_dims = (variances.sum() ** 2 / (variances**2).sum()).item()  # participation ratio
correlation = torch.corrcoef(codes32.T).abs()[~torch.eye(32, dtype=torch.bool)]  # the 992 off-diagonal |r|
print(f"mean per dimension in [{codes32.mean(0).min():.2f}, {codes32.mean(0).max():.2f}], "
      f"std per dimension in [{codes32.std(0).min():.2f}, {codes32.std(0).max():.2f}]")
print(f"variance along the widest direction / the narrowest: {variances[-1] / variances[0]:.0f}; "
      f"effective number of dimensions: {effective_dims:.1f} of 32")
print(f"correlation between two dimensions: mean |r| {correlation.mean():.2f}, largest {correlation.max():.2f}")

# %%
# NBVAL_CHECK_OUTPUT
claim("the codes are stretched: the widest direction has over 20x the variance of the narrowest",
      variances[-1] > 20 * variances[0])
claim("and the variance is spread over fewer than 24 effective dimensions of 32", effective_dims < 24)
claim("correlations between dimensions are modest: mean |r| under 0.25", correlation.mean() < 0.25)

# %% [markdown]
# Nothing in the training loss asked the codes to look like $\mathcal{N}(0, I)$: their centre and scale are whatever the
# optimiser happened to find. They are stretched (one direction has far more spread than another; the "effective number
# of dimensions" is the participation ratio $(\sum_i \lambda_i)^2 / \sum_i \lambda_i^2$ of the covariance's eigenvalues
# $\lambda_i$, 32 for a round cloud and 1 for a line) but not strongly correlated. So let us try three ways of drawing codes, from the naive to the best a single Gaussian can do:
# $\mathcal{N}(0, I)$; each dimension with the codes' own mean and standard deviation; and a Gaussian with the codes' mean
# and full covariance. Two judges score 2,000 decodings of each. The course's independent digit classifier (recipe
# `lenet-mnist`, 97.6 % accurate on the test digits) says how often it reads an image confidently as *some* digit, and
# FID-LeNet compares the whole set with the real test digits in the classifier's feature space (the Fréchet distance of
# two Gaussians fitted to the features; lower is better; Chapter 3 explains it). 2,000 real training digits give the
# level a perfect generator would reach. A third number says where the codes land: the median distance from a drawn code
# to the nearest training code, against the same distance for the codes of held-out test digits.

# %%
classifier = load_model("lenet-mnist")
n, gen = 2000, torch.Generator().manual_seed(0)
eps = torch.randn(n, 32, generator=gen)
drawn = {"z ~ N(0, I)": eps,
         "z with the codes' mean and std": codes32.mean(0) + codes32.std(0) * eps,
         "z with the codes' mean and covariance": codes32.mean(0) + eps @ torch.linalg.cholesky(covariance).T}
reference = feature_stats(lenet_features(classifier, x_test))  # the real test digits' feature mean and covariance
floor = real_floor(classifier, n, reference)
held_out = torch.cdist(models[32].encode(x_test), codes32).min(1).values.median().item()
print(f"real digits: {(F.softmax(classifier(x_test), 1).max(1).values > 0.9).float().mean():.1%} read confidently; "
      f"FID-LeNet of {n} real training digits {floor['real_floor']:.1f} ± {floor['real_floor_std']:.1f}; "
      f"held-out codes lie {held_out:.2f} from the nearest training code")
judged = {}
for name, z in drawn.items():
    phi = lenet_features(classifier, models[32].decode(z).clamp(-1, 1))  # (n, 64) features, read once for both judges
    confident = (F.softmax(classifier.head(phi), 1).max(1).values > 0.9).float().mean().item()
    fid = frechet_distance(*feature_stats(phi), *reference)
    judged[name] = (confident, fid, torch.cdist(z, codes32).min(1).values.median().item())
    print(f"{name:38s} confident {confident:.1%} ± {math.sqrt(confident * (1 - confident) / n):.1%}   "
          f"FID-LeNet {judged[name][1]:6.0f}   distance to the nearest training code {judged[name][2]:.2f}")

# %%
# NBVAL_CHECK_OUTPUT
(random_conf, random_fid, random_dist), (std_conf, std_fid, _), (cov_conf, cov_fid, cov_dist) = judged.values()
claim("decoded N(0, I) codes score over 20x the real-data FID-LeNet, though the classifier reads 35-65 % of them confidently",
      random_fid > 20 * floor["real_floor"] and 0.35 < random_conf < 0.65)
claim("matching the codes' mean and std, then their covariance, lowers FID-LeNet each time",
      random_fid > std_fid > cov_fid)
claim("even the full-covariance Gaussian stays over 10x the real-data level", cov_fid > 10 * floor["real_floor"])
claim("its codes land over 1.3x farther from the nearest training code than held-out digits' codes do (N(0, I): 1.8x)",
      cov_dist > 1.3 * held_out and random_dist > 1.8 * held_out)

# %%
display(Image(png_bytes(grid(torch.cat([models[32].decode(z[:10]).clamp(-1, 1) for z in drawn.values()]), nrow=10), scale=2)))
print("rows:", " | ".join(drawn))

# %% [markdown]
# What the numbers say:
#
# - **Decoded random codes are mostly not digits.** The classifier reads about half of them confidently (a classifier must
#   answer *something*, and a few strokes can be enough for it), but as a set they are nothing like real digits: FID-LeNet
#   about 40 times the real-data level. The pictures agree: strokes that belong to no digit.
# - **Matching the statistics helps, and is not enough.** Each dimension's mean and spread cut FID-LeNet by about 40 %,
#   the full covariance by a further quarter. The best single Gaussian still sits far from real digits: the training codes
#   are not one Gaussian cloud but a clumpy shape (the ten digits and their styles) with gaps, and a Gaussian puts most of
#   its draws in the gaps: its codes land 1.6 times as far from any training code as the codes of unseen real digits do.
#
# The decoder was trained only on the codes of training digits; between and around them it was never asked for
# anything, and what it returns there is arbitrary. Chapter 2's variational autoencoder attacks this from the other side:
# instead of finding out afterwards where the codes are, it makes each image encode to a whole *region* of codes and pulls
# all those regions onto $\mathcal{N}(0, I)$, a distribution we know before training.
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
gen = torch.Generator().manual_seed(1)
denoised = {}
for sigma in (0.25, 0.5, 1.0):
    noisy = x_test + sigma * torch.randn(x_test.shape, generator=gen)
    denoised[sigma] = (F.mse_loss(noisy, x_test).item(), F.mse_loss(dae(noisy), x_test).item())
    print(f"sigma = {sigma:4.2f}: error of the noisy input {denoised[sigma][0]:.3f} "
          f"-> after the denoising AE {denoised[sigma][1]:.3f}")

# %%
# NBVAL_CHECK_OUTPUT
claim("at every noise level the denoising AE's output is closer to the clean digit than its input",
      all(after < before for before, after in denoised.values()))

# %% [markdown]
# Denoising one big step at a time is hard at high noise levels: the network has to guess a whole digit
# at once. Chapter 3's diffusion model takes the same idea and splits it into hundreds of small,
# easy denoising steps, and that is what finally makes it a generator.
#
# ## 6. Train it yourself
#
# `train_with_plot` runs `minilineage.recipes.train_recipe`, the same function the command
# `minilineage train ae-mnist` calls, with a live loss plot. The full recipe
# (2,000 steps) takes about a minute on a laptop CPU; in fast mode we run 50 steps to show the loop
# working. A live loss plot appears while it trains, and the cell reports the peak memory the run added to this
# notebook's process.

# %%
baseline = start_peak_memory(torch.device("cpu"))
result = train_with_plot("ae-mnist", steps=50 if FAST else None, out=None, progress=not FAST)
extra = peak_memory(torch.device("cpu"), baseline)
memory = "not measurable here" if extra is None else f"{extra / 2**20:.0f} MB"
print(f"{result.record['step']} steps in {result.record['wall_time_s']} s -> {result.record['metrics']}; "
      f"peak memory added to this process: {memory}")

# %% [markdown]
# The record of the shipped checkpoint (printed in section 1) has the full run's wall time; the 2,000-step run took
# about 1.5 minutes on one CPU thread. Memory is small: measured in a fresh process (`minilineage bench`), a training step
# at batch 128 needs about 40 MB on top of the roughly 670 MB that Python, PyTorch and the data take. No GPU figure was
# measured for this chapter.
#
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
# Each exercise checks your answer when you run its cell, without giving the answer away. Stuck?
# `show_solution("ch1.compression")` (with the exercise's name) prints the reference answer.
#
# **Exercise 1.** A 28×28 image compressed to a 16-number code: by what factor is it compressed?

# %%
answer = None  # your number here
exercise("ch1.compression", answer)

# %% [markdown]
# **Exercise 2.** Write the reconstruction error on the $[0,1]$ pixel scale yourself: a function of a model and
# images $x$ in $[-1, 1]$ that reconstructs them (clamp the reconstruction to $[-1, 1]$), maps both to $[0, 1]$ and
# returns the mean squared difference. The check compares it with `reconstruction_mse` on the 8-number
# autoencoder and 100 test digits.

# %%
my_mse = None  # def my_mse(model, x): ...
exercise("ch1.mse", my_mse)

# %% [markdown]
# **Exercise 3.** Use the explorer (or `ae.decode`) to find a 2-number code that decodes to a digit the
# classifier reads as a **1** with confidence above 0.9.

# %%
my_code = None  # a (1, 2) tensor
exercise("ch1.find_a_one", my_code)

# %% [markdown]
# **Exercise 4.** How many parameters does the `Autoencoder` have? Write a function of `width` and `latent_dim` that
# returns the count (the architecture is printed in section 1: there `width` is 16 and `latent_dim` 2). Which layers grow
# with the code size, and by how much per extra code number?

# %%
my_count = None  # def my_count(width, latent_dim): ...
exercise("ch1.parameters", my_count)

# %% [markdown]
# **Exercise 5.** Write the denoising autoencoder's loss for one fixed noise level: a function of a model, clean images
# `x`, a noise level `sigma` (a number) and standard Gaussian noise `eps` shaped like `x`, returning the mean squared
# error of the model's output against the clean images. (The package's `denoising_ae_loss` also draws `sigma` and `eps`
# itself.)

# %%
my_dae_loss = None  # def my_dae_loss(model, x, sigma, eps): ...
exercise("ch1.dae_loss", my_dae_loss)

# %% [markdown]
# **Exercise 6 (think).** The denoising AE was trained with $\sigma \le 1$. Look at the player at
# $\sigma = 1.5$ and $2$: what does it do with noise stronger than anything it saw? What would you change
# so that one network handles every noise level? (Chapter 3's answer: tell the network the noise level.)
#
# ## What goes wrong, and what comes next
#
# - The autoencoder compresses well: 32 numbers rebuild a digit almost perfectly.
# - It does not generate: its codes form a clumpy shape nobody chose, and codes drawn from $\mathcal{N}(0, I)$ decode to
#   images about 40 times the real-data level of FID-LeNet; even the best-fitting Gaussian only gets to about 18 times.
# - The fix is to *shape* the code space on purpose. The **variational autoencoder** encodes each
#   image to a small Gaussian cloud of codes and adds a loss term that pulls every cloud towards
#   $\mathcal{N}(0, I)$. Then sampling $z \sim \mathcal{N}(0, I)$ lands where the decoder was trained. → Chapter 2.
