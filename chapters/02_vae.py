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
# # Chapter 2 — The variational autoencoder: encode to a distribution
#
# Chapter 1 ended with a diagnosis: the autoencoder's codes sit in a small, oddly shaped region,
# so a random code decodes to a smear. The variational autoencoder (VAE, Kingma & Welling 2014)
# cures this with two changes. The encoder no longer outputs *a point* but *a Gaussian cloud*
# $q_\phi(z \mid x)$, and a second loss term pulls every cloud towards one shared distribution, the
# prior $p(z) = \mathcal{N}(0, I)$. After training, sampling $z \sim \mathcal{N}(0, I)$ lands where the
# decoder has been trained, and it draws a digit.
#
# **You will learn**
# 1. the VAE's loss (the evidence lower bound, ELBO) and where its two terms come from;
# 2. the reparameterisation trick, and why gradients need it;
# 3. the KL divergence to $\mathcal{N}(0, I)$ in closed form, checked against a Monte Carlo estimate;
# 4. that VAE samples are plausible but blurry, measured rather than asserted;
# 5. what the weight β on the KL term trades off.

# %%
import math

import torch
import torch.nn.functional as F
from IPython.display import Image, display
from torch.distributions import Normal

import minilineage
from minilineage.autoencoder import VAE, kl_to_standard_normal, reconstruction_mse, reparameterize, vae_loss
from minilineage.data import load_dataset
from minilineage.exercises import check, close_to
from minilineage.recipes import load_model, train_recipe
from minilineage.widgets import beta_player, png_bytes, posterior_sampler, traversal_player

FAST = minilineage.fast_mode()
torch.set_grad_enabled(False)
test = load_dataset("mnist-5k", "test")
x_test = test.float_images()  # (500, 1, 28, 28) in [-1, 1]
vae = load_model("vae-mnist", expect=VAE)  # 16-D code, beta = 1
print(vae.checkpoint_info["command"], "|", vae.checkpoint_info["metrics"])

# %% [markdown]
# ## 1. From a point to a distribution
#
# The encoder now outputs two vectors, a mean $\mu_\phi(x)$ and a log-variance $\log \sigma^2_\phi(x)$,
# which define $q_\phi(z \mid x) = \mathcal{N}(\mu, \operatorname{diag} \sigma^2)$. Training decodes a
# *random* code from that cloud, not its centre, so the decoder must cope with every code near $\mu$:
# neighbouring codes are forced to decode to similar images, and the holes of Chapter 1 fill in.

# %%
mu, logvar = vae.encode(x_test[:3])
print("mu     :", mu.shape, mu[0, :4].numpy().round(2))
print("sigma  :", (0.5 * logvar).exp()[0, :4].numpy().round(2))

# %% [markdown]
# ## 2. The loss: the evidence lower bound
#
# We want a decoder $p_\theta(x \mid z)$ that makes the data likely, $\log p_\theta(x) = \log \int p_\theta(x \mid z)\, p(z)\, dz$.
# The integral is intractable, but for any distribution $q(z \mid x)$ Jensen's inequality gives
#
# $$\log p_\theta(x) \;\ge\; \underbrace{\mathbb{E}_{q_\phi(z \mid x)}\big[\log p_\theta(x \mid z)\big]}_{\text{reconstruction}}
# \;-\; \underbrace{D_{\mathrm{KL}}\big(q_\phi(z \mid x)\,\Vert\, p(z)\big)}_{\text{stay close to the prior}} \;=\; \text{ELBO}.$$
#
# The gap is exactly $D_{\mathrm{KL}}(q_\phi(z \mid x) \Vert p_\theta(z \mid x))$, so maximising the ELBO both fits the data
# and makes $q$ a good approximation of the true posterior. With a Gaussian decoder of fixed variance,
# $\log p_\theta(x \mid z)$ is a squared error up to a constant; the course's `vae_loss` uses
# $\lVert x - \hat x \rVert^2 + \beta\, D_{\mathrm{KL}}$ per image (β = 1 is the true ELBO, up to the
# decoder's variance). Our own line against the package's:

# %%
x = x_test[::8]  # 63 digits, every class
g = torch.Generator().manual_seed(0)
mu, logvar = vae.encode(x)
z = reparameterize(mu, logvar, g)
ours = (((vae.decode(z) - x) ** 2).flatten(1).sum(1) + kl_to_standard_normal(mu, logvar)).mean()
assert torch.allclose(ours, vae_loss(vae, {"x": x}, torch.Generator().manual_seed(0)))
print(f"negative ELBO per image: {ours:.2f}")

# %% [markdown]
# ## 3. The KL term in closed form, checked by Monte Carlo
#
# For $q = \mathcal{N}(\mu, \sigma^2)$ and $p = \mathcal{N}(0, 1)$ in each of the $d$ dimensions,
#
# $$D_{\mathrm{KL}}(q \Vert p) = \tfrac12 \sum_{j=1}^{d} \big(\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2\big).$$
#
# A Monte Carlo estimate, $\mathbb{E}_{z \sim q}[\log q(z) - \log p(z)]$ averaged over many draws, must agree:

# %%
# NBVAL_CHECK_OUTPUT
mu1, logvar1 = vae.encode(x_test[:1])
draws = reparameterize(mu1.expand(100_000, -1), logvar1.expand(100_000, -1), torch.Generator().manual_seed(0))
q, p = Normal(mu1, (0.5 * logvar1).exp()), Normal(0.0, 1.0)
monte_carlo = (q.log_prob(draws) - p.log_prob(draws)).sum(1).mean()
print(f"closed form {kl_to_standard_normal(mu1, logvar1).item():.2f} nats, Monte Carlo {monte_carlo:.2f} nats")

# %% [markdown]
# ## 4. The reparameterisation trick
#
# Sampling $z \sim \mathcal{N}(\mu, \sigma^2)$ is not differentiable in $\mu$ and $\sigma$. Writing the same sample as
# $z = \mu + \sigma \odot \varepsilon$ with $\varepsilon \sim \mathcal{N}(0, I)$ moves the randomness into $\varepsilon$, an input
# that needs no gradient; $z$ is now a smooth function of $\mu$ and $\sigma$, and backpropagation goes through.

# %%
with torch.enable_grad():
    mu_ = torch.zeros(1, 2, requires_grad=True)
    logvar_ = torch.zeros(1, 2, requires_grad=True)
    z_ = reparameterize(mu_, logvar_, torch.Generator().manual_seed(0))
    z_.sum().backward()
print("dz/dmu =", mu_.grad.numpy(), "  dz/dlogvar =", logvar_.grad.numpy().round(3), "(= eps/2 * sigma)")

# %% [markdown]
# Widget: for a few test digits, draw codes $z = \mu + T\,\sigma\,\varepsilon$ from the posterior and decode
# them. At temperature $T = 0$ you see the mean reconstruction; as $T$ grows the decodings vary, yet stay
# the same digit: that is the cloud the KL term shaped.

# %%
posterior_sampler(vae, x_test[::125], generator=torch.Generator().manual_seed(0))

# %% [markdown]
# ## 5. Sampling from the prior works — and is blurry
#
# Decode $z \sim \mathcal{N}(0, I)$. Compare with Chapter 1's autoencoder, using the same independent
# classifier as a judge (how often does it read the sample confidently as *some* digit?):

# %%
# NBVAL_CHECK_OUTPUT
classifier = load_model("lenet-mnist")
ae32 = load_model("ae-mnist-z32")
g = torch.Generator().manual_seed(0)
samples = {"real test digits": x_test, "AE (32-D), z ~ N(0, I)": ae32.sample(500, generator=g),
           "VAE (16-D), z ~ N(0, I)": vae.sample(500, generator=g)}
for name, images in samples.items():
    confidence = F.softmax(classifier(images), 1).max(1).values
    print(f"{name:26s} confident (>0.9) digits: {(confidence > 0.9).float().mean():.0%}")

# %%
display(Image(png_bytes(samples["VAE (16-D), z ~ N(0, I)"][:32], scale=2)))

# %% [markdown]
# The VAE's prior samples are read as digits clearly more often than the autoencoder's random decodings,
# and most of them look like handwriting. But many are soft, and some fall between two digits: a small VAE
# trained for two minutes is far from the real digits (98 %). "Blurry" can be measured too. Real MNIST pixels
# are almost all black or white; a blurry image has many grey ones, and weaker edges (a smaller mean
# gradient):

# %%
# NBVAL_CHECK_OUTPUT
def sharpness(images: torch.Tensor) -> tuple[float, float]:
    """(share of grey pixels in (0.2, 0.8) among inked ones, mean edge strength) on the [0, 1] scale."""
    p = (images + 1) / 2
    inked = p > 0.2
    grey = ((p > 0.2) & (p < 0.8)).sum() / inked.sum()
    edges = (p[..., 1:, :] - p[..., :-1, :]).abs().mean() + (p[..., :, 1:] - p[..., :, :-1]).abs().mean()
    return grey.item(), edges.item()


for name, images in [("real test digits", x_test), ("VAE reconstructions", vae(x_test).clamp(-1, 1)),
                     ("VAE prior samples", samples["VAE (16-D), z ~ N(0, I)"])]:
    grey, edges = sharpness(images)
    print(f"{name:22s} grey share of inked pixels {grey:.2f}   edge strength {edges:.3f}")

# %% [markdown]
# Why? The decoder maps each code to *one* image in *one* step. When several digits are consistent with a
# code (a cloud overlaps its neighbours), the squared error is minimised by their **average**, and an average
# of differently placed strokes is grey. One step is not enough to commit to a single sharp answer; Chapter 3's
# diffusion model takes many small steps, each of which only has to be right on average. (Chapter 3 measures
# the difference with its FID-LeNet score.)
#
# ## 6. The β knob
#
# Weighting the KL term with β (Higgins et al. 2017) moves the balance. The course ships three VAEs that
# differ only in β (recipes `vae-mnist-beta0.2`, `vae-mnist`, `vae-mnist-beta5`):

# %%
# NBVAL_CHECK_OUTPUT
betas = {0.2: load_model("vae-mnist-beta0.2"), 1.0: vae, 5.0: load_model("vae-mnist-beta5")}
print(f"{'beta':>5} | {'recon. MSE':>10} | {'KL (nats)':>9} | {'confident prior samples':>23}")
for beta, model in betas.items():
    mu, logvar = model.encode(x_test)
    conf = F.softmax(classifier(model.sample(500, generator=torch.Generator().manual_seed(0))), 1).max(1).values
    print(f"{beta:5.1f} | {reconstruction_mse(model, x_test):10.4f} | {kl_to_standard_normal(mu, logvar).mean():9.1f} | "
          f"{(conf > 0.9).float().mean():23.0%}")

# %%
beta_player(betas, x_test[::100], generator=torch.Generator().manual_seed(0))

# %% [markdown]
# Small β: the best reconstructions and a large KL (the clouds drift away from the prior), and the fewest
# readable prior samples. Large β: the codes hug the prior (small KL) and reconstructions lose detail, while
# prior samples stop improving. No β gives both sharp reconstructions *and* sharp samples; that trade-off is
# built into a one-step decoder.
#
# ## 7. Walking the latent space
#
# A VAE with a 2-D code (`vae-mnist-z2`) can be walked: change one coordinate at a time from −3 to 3 and
# decode. Compare with the autoencoder of Chapter 1: no empty regions, every step is a digit.

# %%
vae2 = load_model("vae-mnist-z2")
traversal_player(vae2, torch.zeros(1, 2), dims=(0, 1))

# %%
# NBVAL_CHECK_OUTPUT
codes = vae2.encode(x_test)[0]
print(f"2-D VAE codes of the test digits: mean {codes.mean(0).numpy().round(2)}, std {codes.std(0).numpy().round(2)}"
      " (the prior is mean 0, std 1)")

# %% [markdown]
# ## 8. Train it yourself

# %%
result = train_recipe("vae-mnist", steps=50 if FAST else None, out=None, progress=not FAST)
print(f"{result.record['step']} steps in {result.record['wall_time_s']} s -> {result.record['metrics']}")

# %% [markdown]
# ## A pointer: discrete codes (VQ-VAE, VQ-GAN)
#
# Instead of a Gaussian cloud, a VQ-VAE (van den Oord et al. 2017) snaps each encoder output to the nearest
# vector of a learned codebook, so an image becomes a grid of integer tokens; a second model learns the
# distribution of those tokens. VQ-GAN (Esser et al. 2021) adds an adversarial loss for sharp decodings.
# Latent diffusion (Chapter 4) uses an autoencoder in the same spirit: compress once, model the compressed space.
#
# ## Exercises
#
# **Exercise 1.** Compute by hand the KL divergence of $\mathcal{N}(1, 1)$ to $\mathcal{N}(0, 1)$ in one dimension.

# %%
answer = None  # a number
check(answer, close_to(0.5), "put mu = 1, sigma^2 = 1 into 1/2 (mu^2 + sigma^2 - 1 - log sigma^2)")

# %% [markdown]
# **Exercise 2.** Write the reparameterised sample yourself: given `mu`, `logvar` and `eps`, return $z$.

# %%
mu_e, logvar_e, eps_e = torch.tensor([0.5, -1.0]), torch.tensor([0.0, math.log(4.0)]), torch.tensor([1.0, 1.0])
my_z = None  # mu_e + ... * eps_e
check(my_z, close_to(torch.tensor([1.5, 1.0])), "sigma = exp(logvar / 2)")

# %% [markdown]
# **Exercise 3.** Decode the prior's centre $z = 0$ with the 16-D VAE. Which digit does the classifier see?
# Why does the "average" code give this kind of image?

# %%
centre_digit = None  # classifier(vae.decode(torch.zeros(1, 16))).argmax().item()
check(centre_digit, lambda d: d == classifier(vae.decode(torch.zeros(1, 16))).argmax().item(), "decode and classify z = 0")

# %% [markdown]
# ## What goes wrong, and what comes next
#
# The VAE generates: prior samples are digits. But they are blurry, because one decoder step must turn a code
# into an image and averages what it cannot decide. Denoising diffusion (DDPM) keeps the idea of
# "noise → image" but splits it into hundreds of small steps, each a denoising problem that is easy to get right
# on average. → Chapter 3.
