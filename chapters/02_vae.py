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
# Chapter 1 ended with a diagnosis: the autoencoder's codes sit in a region of its code space that nobody
# told us about, so a code drawn from $\mathcal{N}(0, I)$ decodes to a smear. The variational autoencoder
# (VAE, Kingma & Welling 2014) makes two changes. The encoder no longer outputs *a point* but *a Gaussian
# cloud* $q_\phi(z \mid x)$, and a second loss term pulls every cloud towards one shared distribution, the
# prior $p(z) = \mathcal{N}(0, I)$. After training, sampling $z \sim \mathcal{N}(0, I)$ lands where the
# decoder has been trained, and it draws a digit.
#
# **You will learn**
# 1. the VAE's loss, the evidence lower bound (ELBO), *derived* step by step, each step checked numerically
#    on a 2-D VAE whose exact likelihood we can still compute;
# 2. the reparameterisation trick, and why gradients need it;
# 3. the decoder's variance $\sigma^2$: what "β = 1 is the true ELBO" assumes, and why β and $\sigma^2$ are one knob;
# 4. that VAE samples are plausible but blurry, measured, and where the blur really comes from;
# 5. how good prior samples are compared with Chapter 1's autoencoder at the same code size.

# %%
import math

import torch
import torch.nn.functional as F
from IPython.display import Image, display
from matplotlib.figure import Figure
from torch.distributions import Normal

import minilineage
from minilineage.bench import peak_memory, start_peak_memory
from minilineage.checkpoint import load_model
from minilineage.checks import claim
from minilineage.data import load_dataset
from minilineage.exercises import exercise, show_solution
from minilineage.metrics import feature_stats, frechet_distance, lenet_features, real_floor
from minilineage.models.autoencoder import (
    VAE,
    gaussian_log_likelihood,
    kl_to_standard_normal,
    negative_elbo,
    reconstruction_mse,
    reparameterize,
    vae_loss,
)
from minilineage.widgets import (
    beta_player,
    figure_png,
    grid,
    png_bytes,
    posterior_sampler,
    train_with_plot,
    traversal_player,
)

FAST = minilineage.chapter_setup()
torch.set_grad_enabled(False)
test, train = load_dataset("mnist-5k", "test"), load_dataset("mnist-5k", "train")
x_test, x_train = test.float_images(), train.float_images()  # (500, 1, 28, 28) and (4500, 1, 28, 28) in [-1, 1]
vae = load_model("vae-mnist", expect=VAE)  # 16-D code, beta = 1, decoder variance 1/2
print(vae.checkpoint_info["command"], "|", vae.checkpoint_info["metrics"])

# %% [markdown]
# ## 1. From a point to a distribution
#
# The encoder now outputs two vectors, a mean $\mu_\phi(x)$ and a log-variance $\log \sigma^2_\phi(x)$,
# which define $q_\phi(z \mid x) = \mathcal{N}(\mu, \operatorname{diag} \sigma^2)$. Training decodes a
# *random* code from that cloud, not its centre, so the decoder must cope with every code near $\mu$:
# neighbouring codes are forced to decode to similar images.

# %%
mu, logvar = vae.encode(x_test[:3])
print("mu     :", mu.shape, mu[0, :4].numpy().round(2))
print("sigma  :", (0.5 * logvar).exp()[0, :4].numpy().round(2))

# %% [markdown]
# ## 2. The loss, derived: the evidence lower bound
#
# **The model.** A VAE is a *generative model* with a hidden code: first draw $z \sim p(z) = \mathcal{N}(0, I)$,
# then draw the image from the decoder, $x \sim p_\theta(x \mid z) = \mathcal{N}\big(g_\theta(z), \sigma^2 I\big)$:
# the decoder network $g_\theta$ gives the mean, and $\sigma^2$ is a fixed variance per pixel. With
# $D = 784$ pixels,
#
# $$\log p_\theta(x \mid z) = -\frac{\lVert x - g_\theta(z) \rVert^2}{2\sigma^2} - \frac{D}{2}\log(2\pi\sigma^2).$$
#
# The course's VAEs use $\sigma^2 = \tfrac12$ (on the $[-1, 1]$ pixel scale) unless a recipe says otherwise:
# then the first term is the plain sum of squared errors. Section 5 asks whether ½ is a good value. The package's
# `gaussian_log_likelihood` is that formula; `torch.distributions` computes the same density independently:

# %%
vae2 = load_model("vae-mnist-z2")  # the same VAE with a 2-number code: small enough to integrate over z
x = x_test[:1]  # one test digit (a 0)
mu, logvar = vae2.encode(x)
x_hat = vae2.decode(mu)
ours = gaussian_log_likelihood(x, x_hat, var=0.5).item()
reference = Normal(x_hat, math.sqrt(0.5)).log_prob(x).sum().item()
print(f"log p(x | z = mu): ours {ours:.3f} nats, torch.distributions {reference:.3f} nats")

# %%
# NBVAL_CHECK_OUTPUT
claim("gaussian_log_likelihood equals torch.distributions' log-density within 0.01 nats", abs(ours - reference) < 0.01)

# %% [markdown]
# **Step 1: the likelihood of an image needs an integral.** Training should make the data likely:
# $p_\theta(x) = \int p_\theta(x \mid z)\, p(z)\, dz$. With a 16-number code the integral has no closed form and a
# grid over 16 dimensions is hopeless. With a **2-number code** we can still do it by brute force: decode a
# fine grid of codes and add up $p(x \mid z)\,p(z)\,\Delta z$. The same grid then gives the *true posterior*
# $p(z \mid x) = p(x \mid z)\,p(z) / p(x)$ (Bayes' rule), which we can compare with the encoder's guess $q(z \mid x)$.
# The grid is centred on the encoder's $\mu$ and spans ±8 of its $\sigma$ in each direction; the check below makes
# sure almost no posterior mass reaches the grid's edge (a second mode far away would escape that check, but this
# small decoder varies smoothly with $z$).

# %%
sigma_q = (0.5 * logvar).exp()  # (1, 2)
u = torch.linspace(-8, 8, 81)  # grid steps in units of sigma_q
z_grid = mu + sigma_q * torch.stack(torch.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)  # (6561, 2)
cell = (sigma_q * (u[1] - u[0])).prod()  # area of one grid cell
prior = Normal(0.0, 1.0)
log_joint = gaussian_log_likelihood(x.expand(len(z_grid), -1, -1, -1), vae2.decode(z_grid), 0.5) + prior.log_prob(z_grid).sum(1)
log_px = (torch.logsumexp(log_joint, 0) + cell.log()).item()  # log of sum p(x|z) p(z) dz
posterior = (log_joint - log_px).exp() * cell  # p(z | x) dz per grid cell, sums to 1
posterior_map = posterior.reshape(81, 81)  # rows: z_1, columns: z_2
mass_outside = (posterior_map.sum() - posterior_map[8:-8, 8:-8].sum()).item()  # mass beyond +-6.4 sigma_q
print(f"log p(x) = {log_px:.2f} nats (grid of {len(z_grid)} codes); posterior mass in the grid's outer band: {mass_outside:.1e}")

# %%
fig = Figure(figsize=(3.4, 3.2), dpi=90, layout="constrained")
ax = fig.add_subplot()
extent = [z_grid[:, 1].min().item(), z_grid[:, 1].max().item(), z_grid[:, 0].min().item(), z_grid[:, 0].max().item()]
ax.imshow(posterior_map.numpy(), origin="lower", extent=extent, aspect="auto", cmap="Greys")
q_density = Normal(mu, sigma_q).log_prob(z_grid).sum(1).exp().reshape(81, 81)
ax.contour(q_density.numpy(), levels=3, colors="tab:red", origin="lower", extent=extent, linewidths=1)
ax.set(xlabel="$z_2$", ylabel="$z_1$", title="true posterior p(z|x) (grey)\nand the encoder's q(z|x) (red)")
ax.title.set_fontsize(9)
display(Image(figure_png(fig)))

# %% [markdown]
# For this digit the encoder's cloud (red) sits beside the true posterior (grey) rather than on it: $q$ is only the
# encoder's fast guess, one network call per image. Step 5 measures how much that costs.
#
# **Step 2: an exact rewrite as an expectation under $q$.** Multiply and divide by $q(z \mid x)$ inside the integral:
#
# $$p_\theta(x) = \int q(z \mid x)\, \frac{p_\theta(x \mid z)\, p(z)}{q(z \mid x)}\, dz = \mathbb{E}_{z \sim q(z \mid x)}\big[w(z)\big],
# \qquad w(z) = \frac{p_\theta(x \mid z)\, p(z)}{q(z \mid x)} .$$
#
# Nothing is approximated yet: averaging $w$ over many draws from $q$ (importance sampling) must find the grid's
# $p(x)$ again.

# %%
K = 4096
z_q = reparameterize(mu.expand(K, -1), logvar.expand(K, -1), torch.Generator().manual_seed(0))  # (K, 2) draws from q
log_lik = gaussian_log_likelihood(x.expand(K, -1, -1, -1), vae2.decode(z_q), 0.5)  # (K,)
log_prior_minus_q = prior.log_prob(z_q).sum(1) - Normal(mu, sigma_q).log_prob(z_q).sum(1)  # (K,)
log_w = log_lik + log_prior_minus_q
log_px_sampled = (torch.logsumexp(log_w, 0) - math.log(K)).item()  # log of the mean of w
print(f"log p(x): grid {log_px:.2f} nats, importance sampling with {K} draws from q {log_px_sampled:.2f} nats")

# %%
# NBVAL_CHECK_OUTPUT
claim("the grid covers the posterior: under 0.1 % of its mass lies in the grid's outer band", mass_outside < 1e-3)
claim("importance sampling from q recovers the grid's log p(x) within 0.5 nats", abs(log_px_sampled - log_px) < 0.5)

# %% [markdown]
# **Step 3: Jensen's inequality gives a bound we can train.** $\log$ is concave, so the log of an average is at
# least the average of the logs: $\log \mathbb{E}_q[w] \ge \mathbb{E}_q[\log w]$. The right-hand side is the
# **evidence lower bound**,
#
# $$\text{ELBO}(x) = \mathbb{E}_{q(z \mid x)}\big[\log p_\theta(x \mid z) + \log p(z) - \log q(z \mid x)\big] \;\le\; \log p_\theta(x).$$
#
# Unlike $\log p(x)$ it needs no integral: one draw of $z$ per image gives an unbiased estimate, in any dimension.
#
# **Step 4: split it into the two terms of the loss.** Group $\log p(z) - \log q(z \mid x)$: its expectation is
# minus the KL divergence, which for two Gaussians has a closed form (section 3). So
#
# $$\text{ELBO}(x) = \underbrace{\mathbb{E}_{q}\big[\log p_\theta(x \mid z)\big]}_{\text{reconstruction}}
# \;-\; \underbrace{D_{\mathrm{KL}}\big(q(z \mid x)\,\Vert\, p(z)\big)}_{\text{stay close to the prior}} .$$

# %%
elbo = log_w.mean().item()
elbo_se = (log_w.std() / math.sqrt(K)).item()
split = (log_lik.mean() - kl_to_standard_normal(mu, logvar)).item()
split_se = (log_prior_minus_q.std() / math.sqrt(K)).item()  # the only Monte Carlo part that differs
print(f"ELBO = E_q[log w]: {elbo:.2f} ± {elbo_se:.2f} nats (log p(x) = {log_px:.2f})")
print(f"reconstruction - closed-form KL: {split:.2f} nats")

# %%
# NBVAL_CHECK_OUTPUT
claim("the ELBO lies below log p(x) (Jensen), by more than 4 standard errors", log_px - elbo > 4 * elbo_se)
claim("E_q[log w] equals reconstruction minus the closed-form KL within 4 standard errors",
      abs(elbo - split) < 4 * split_se)

# %% [markdown]
# **Step 5: what the gap is.** Write $\log p(x) = \mathbb{E}_q[\log p(x)]$ (it does not depend on $z$) and use Bayes'
# rule, $p(x) = p(x \mid z)\,p(z) / p(z \mid x)$, inside the expectation:
#
# $$\log p_\theta(x) = \mathbb{E}_q\Big[\log \frac{p_\theta(x \mid z)\, p(z)}{q(z \mid x)}\Big] + \mathbb{E}_q\Big[\log \frac{q(z \mid x)}{p_\theta(z \mid x)}\Big]
# = \text{ELBO}(x) + D_{\mathrm{KL}}\big(q(z \mid x)\,\Vert\,p_\theta(z \mid x)\big).$$
#
# The gap is exactly how far the encoder's Gaussian is from the true posterior. Maximising the ELBO over the encoder
# shrinks the gap; over the decoder it raises $\log p(x)$. On the grid we can compute that KL directly:

# %%
log_q_grid = Normal(mu, sigma_q).log_prob(z_grid).sum(1)
q_cell = log_q_grid.exp() * cell  # q's mass per grid cell
kl_to_posterior = (q_cell * (log_q_grid - (log_joint - log_px))).sum().item()
print(f"log p(x) - ELBO = {log_px - elbo:.2f} nats;  KL(q(z|x) || p(z|x)) on the grid = {kl_to_posterior:.2f} nats")

# %%
# NBVAL_CHECK_OUTPUT
claim("log p(x) - ELBO equals KL(q || true posterior) within 4 standard errors of the ELBO",
      abs((log_px - elbo) - kl_to_posterior) < 4 * elbo_se)

# %% [markdown]
# That is the whole derivation: an exact identity (step 2), one inequality (step 3), a regrouping (step 4), and the
# size of the slack (step 5). In 16 dimensions only the ELBO remains computable, and it is what we train.
#
# **From the ELBO to the course's loss.** `vae_loss` is the negative ELBO with one $z$ per image, written for training:
# the reconstruction term divided by $2\sigma^2$, plus β times the KL, and *without* the constant
# $\tfrac{D}{2}\log(2\pi\sigma^2)$, which has no gradient. At $\sigma^2 = \tfrac12$ that constant is
# $392 \log \pi \approx 448.7$ nats per image. Our own line against the package, on the 16-D VAE:

# %%
x = x_test[::8]  # 63 digits, every class
mu, logvar = vae.encode(x)
z = reparameterize(mu, logvar, torch.Generator().manual_seed(0))
ours = (((vae.decode(z) - x) ** 2).flatten(1).sum(1) / (2 * 0.5) + kl_to_standard_normal(mu, logvar)).mean()
package = vae_loss(vae, {"x": x}, torch.Generator().manual_seed(0))
constant = 784 / 2 * math.log(2 * math.pi * 0.5)
full = negative_elbo(vae, x, torch.Generator().manual_seed(0)).mean()
print(f"vae_loss = negative ELBO per image without its constant (D/2) log(2 pi sigma^2) = {constant:.1f} nats: {package:.2f}")
print(f"negative ELBO per image with the constant: {full:.2f} nats")

# %%
# NBVAL_CHECK_OUTPUT
claim("our line equals the package's vae_loss within 1e-5 (relative)", torch.allclose(ours, package, rtol=1e-5))
claim("adding (D/2) log(pi) to vae_loss gives the full negative ELBO within 1e-3 nats",
      abs(package.item() + constant - full.item()) < 1e-3)

# %% [markdown]
# ## 3. The KL term in closed form, checked by Monte Carlo
#
# For $q = \mathcal{N}(\mu, \sigma^2)$ and $p = \mathcal{N}(0, 1)$ in each of the $d$ dimensions,
#
# $$D_{\mathrm{KL}}(q \Vert p) = \tfrac12 \sum_{j=1}^{d} \big(\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2\big).$$
#
# A Monte Carlo estimate, $\mathbb{E}_{z \sim q}[\log q(z) - \log p(z)]$ averaged over many draws, must agree:

# %%
mu1, logvar1 = vae.encode(x_test[:1])
draws = reparameterize(mu1.expand(100_000, -1), logvar1.expand(100_000, -1), torch.Generator().manual_seed(0))
q, p = Normal(mu1, (0.5 * logvar1).exp()), Normal(0.0, 1.0)
per_draw = (q.log_prob(draws) - p.log_prob(draws)).sum(1)
monte_carlo, closed_form = per_draw.mean().item(), kl_to_standard_normal(mu1, logvar1).item()
standard_error = per_draw.std().item() / len(per_draw) ** 0.5
print(f"closed form {closed_form:.3f} nats, Monte Carlo {monte_carlo:.3f} ± {standard_error:.3f} nats")

# %%
# NBVAL_CHECK_OUTPUT
claim("the closed-form KL lies within 4 standard errors of the Monte Carlo estimate",
      abs(closed_form - monte_carlo) < 4 * standard_error)

# %% [markdown]
# ## 4. The reparameterisation trick
#
# Sampling $z \sim \mathcal{N}(\mu, \sigma^2)$ is not differentiable in $\mu$ and $\sigma$. Writing the same sample as
# $z = \mu + \sigma \odot \varepsilon$ with $\varepsilon \sim \mathcal{N}(0, I)$ moves the randomness into $\varepsilon$, an input
# that needs no gradient; $z$ is now a smooth function of $\mu$ and $\log\sigma^2$, with
# $\partial z / \partial \mu = 1$ and $\partial z / \partial \log\sigma^2 = \tfrac12 \sigma \varepsilon$, and backpropagation goes through.

# %%
with torch.enable_grad():
    mu_ = torch.tensor([[0.3, -1.0]], requires_grad=True)
    logvar_ = torch.tensor([[0.0, -2.0]], requires_grad=True)
    z_ = reparameterize(mu_, logvar_, torch.Generator().manual_seed(0))
    z_.sum().backward()
eps = torch.randn(1, 2, generator=torch.Generator().manual_seed(0))  # the draw reparameterize made
expected = 0.5 * (0.5 * logvar_).exp() * eps
print("dz/dmu =", mu_.grad.numpy(), "  dz/dlogvar =", logvar_.grad.numpy().round(4),
      "  sigma * eps / 2 =", expected.detach().numpy().round(4))

# %%
# NBVAL_CHECK_OUTPUT
claim("autograd's dz/dmu is 1 and dz/dlogvar equals sigma * eps / 2 within 1e-6",
      torch.equal(mu_.grad, torch.ones(1, 2)) and torch.allclose(logvar_.grad, expected, atol=1e-6))

# %% [markdown]
# Widget: for a few test digits, draw codes $z = \mu + T\,\sigma\,\varepsilon$ from the posterior and decode
# them. At temperature $T = 0$ you see the mean reconstruction; as $T$ grows the decodings vary, yet stay
# the same digit: that is the cloud the KL term shaped.

# %%
posterior_sampler(vae, x_test[::125], generator=torch.Generator().manual_seed(0))

# %% [markdown]
# ## 5. The decoder's variance: β and σ² are one knob
#
# Section 2 fixed $\sigma^2 = \tfrac12$. Is that what the data supports? For a trained decoder, the ELBO as a function
# of $\sigma^2$ is $-\tfrac{R}{2\sigma^2} - \tfrac{D}{2}\log(2\pi\sigma^2) - \mathrm{KL}$, with $R = \mathbb{E}\lVert x - g(z)\rVert^2$;
# setting its derivative to zero gives the best variance, the mean squared residual per pixel, $\sigma^2_\ast = R / D$.
# Measured on 1,500 training digits for the shipped VAE (which was trained with $\sigma^2 = \tfrac12$):

# %%
x_some = x_train[::3]  # 1,500 training digits, every class
mu, logvar = vae.encode(x_some)
x_hat = vae.decode(reparameterize(mu, logvar, torch.Generator().manual_seed(0)))  # one z ~ q(z | x) per digit
best_var = (x_hat - x_some).pow(2).mean().item()  # R / D, the maximum-likelihood sigma^2
kl = kl_to_standard_normal(mu, logvar)
at_half = (-gaussian_log_likelihood(x_some, x_hat, 0.5) + kl).mean().item()  # the negative ELBO, constant included
at_best = (-gaussian_log_likelihood(x_some, x_hat, best_var) + kl).mean().item()
print(f"mean squared residual per pixel: {best_var:.4f} (the sigma^2 the data supports); trained with 0.5")
print(f"negative ELBO of the same weights: {at_half:.1f} nats at sigma^2 = 0.5, {at_best:.1f} nats at sigma^2 = {best_var:.3f}")

# %%
# NBVAL_CHECK_OUTPUT
claim("the data supports a decoder variance at least 5x smaller than the 1/2 the loss assumes", best_var < 0.1)
claim("scoring the same weights with that variance lowers the negative ELBO by more than 300 nats per image",
      at_half - at_best > 300)

# %% [markdown]
# So the shipped VAE assumes each pixel is its decoder's output plus noise of standard deviation $\sqrt{1/2} \approx 0.71$,
# on a scale where black to white is 2. That is what the model *says* a digit looks like; everyone shows the decoder's
# mean instead (top row below), and the honest samples of $p(x \mid z)$ (middle row) are mostly static. With the variance the
# data supports (bottom row) the noise is a faint haze.

# %%
means = vae.sample(10, torch.Generator().manual_seed(0))
noise = torch.randn(means.shape, generator=torch.Generator().manual_seed(1))
rows = [means, (means + math.sqrt(0.5) * noise).clamp(-1, 1), (means + math.sqrt(best_var) * noise).clamp(-1, 1)]
display(Image(png_bytes(grid(torch.cat(rows), nrow=10), scale=2)))
print(f"rows: decoder mean g(z); g(z) + noise at sigma^2 = 0.5; g(z) + noise at sigma^2 = {best_var:.3f}")

# %% [markdown]
# **β and σ² are the same knob.** Multiply the loss by $2\sigma^2$:
#
# $$\frac{\lVert x - \hat x \rVert^2}{2\sigma^2} + \beta\,\mathrm{KL} \;=\; \frac{1}{2\sigma^2}\Big(\lVert x - \hat x\rVert^2 + 2\sigma^2\beta\,\mathrm{KL}\Big).$$
#
# A positive factor does not move the minimum, so only the product $2\sigma^2\beta$ matters. The β = 1 loss at $\sigma^2 = \tfrac12$
# is the true ELBO at $\sigma^2 = \tfrac12$ and, equally, a β-VAE with β = 10 at the variance the data supports (0.05). The
# shipped β = 0.2 and β = 5 VAEs are true ELBOs at $\sigma^2$ = 0.1 and 2.5. Checked on one batch, same weights, same $z$:

# %%
def loss_at(beta: float, var: float) -> float:
    """vae_loss of the shipped weights, scored as if trained with this beta and decoder variance."""
    model = VAE(VAE.Config(latent_dim=16, beta=beta, decoder_var=var))
    model.load_state_dict(vae.state_dict())
    return vae_loss(model.eval(), {"x": x_test[:64]}, torch.Generator().manual_seed(0)).item()


print(f"beta = 1 at sigma^2 = 0.05: {loss_at(1.0, 0.05):.2f}   10 x (beta = 0.1 at sigma^2 = 0.5): {10 * loss_at(0.1, 0.5):.2f}")

# %%
# NBVAL_CHECK_OUTPUT
claim("the loss at (beta 1, sigma^2 0.05) is 10x the loss at (beta 0.1, sigma^2 1/2), within 1e-5 (relative)",
      math.isclose(loss_at(1.0, 0.05), 10 * loss_at(0.1, 0.5), rel_tol=1e-5))

# %% [markdown]
# The recipe `vae-mnist-var0.05` trains the true ELBO at the variance the data supports: the same network, seed, data and
# steps as `vae-mnist`, with `decoder_var=0.05` (an effective β of 0.1 in the old units). What changes?

# %%
matched = load_model("vae-mnist-var0.05")
print(matched.checkpoint_info["command"], "|", matched.checkpoint_info["metrics"])
print(f"{'':28s} {'recon. MSE':>10} {'KL (nats)':>9} {'posterior sigma':>15} {'residual sigma^2':>16}")
knob = {}
for name, model in [("sigma^2 = 0.5 (vae-mnist)", vae), ("sigma^2 = 0.05 (var0.05)", matched)]:
    mu, logvar = model.encode(x_some)
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    knob[name] = (reconstruction_mse(model, x_test), kl_to_standard_normal(mu, logvar).mean().item(),
                  (0.5 * logvar).exp().mean().item(), (model.decode(z) - x_some).pow(2).mean().item())
    print(f"{name:28s} {knob[name][0]:10.4f} {knob[name][1]:9.1f} {knob[name][2]:15.3f} {knob[name][3]:16.4f}")

# %%
# NBVAL_CHECK_OUTPUT
(mse_half, kl_half, spread_half, _), (mse_matched, kl_matched, spread_matched, residual_matched) = knob.values()
claim("the matched VAE's codes carry more information (KL up by over 50 %) in tighter clouds (mean sigma under half)",
      kl_matched > 1.5 * kl_half and spread_matched < 0.5 * spread_half)
claim("its own residual variance is within a factor 2 of the 0.05 it assumes", 0.025 < residual_matched < 0.1)
claim("and its held-out reconstructions are no worse", mse_matched <= mse_half)

# %% [markdown]
# The tighter clouds say the decoder is now *told more* about each digit: about 49 nats per image instead of 27. The
# reconstruction error on the $[0, 1]$ scale barely moves (this small decoder is near its capacity), but the next two
# sections show what does: how sharp the images are, and how good the prior samples are. (The matched VAE's own residual
# variance, about 0.036, is a little below the 0.05 it assumed; a decoder that learns $\sigma^2$ along with its weights, a
# "calibrated decoder" in Rybkin et al. 2021, would settle there.)
#
# ## 6. Sampling from the prior — compared at the same code size
#
# Decode $z \sim \mathcal{N}(0, I)$ and judge with Chapter 1's independent classifier (how often does it read a sample
# confidently as *some* digit?) and with FID-LeNet, the Fréchet distance between the classifier's features of the samples
# and of the 500 real test digits (lower is better; Chapter 3 explains it). Every row decodes 2,000 codes from a generator
# seeded with 0, all with 16-number codes: Chapter 1's `ae-mnist-z16` twice (codes from $\mathcal{N}(0, I)$, and from a Gaussian
# with the mean and covariance of its training codes, fitted after training), the two VAEs from their prior, and the
# matched VAE once more from a Gaussian fitted to its (mean) codes.

# %%
classifier = load_model("lenet-mnist")
ae16 = load_model("ae-mnist-z16")
n = 2000


def decode_fitted(model, codes: torch.Tensor) -> torch.Tensor:
    """Decode n codes drawn from a Gaussian with the mean and covariance of `codes` (N, d), fitted after training."""
    L = torch.linalg.cholesky(torch.cov(codes.T))  # L L^T = the codes' covariance
    eps = torch.randn(n, codes.shape[1], generator=torch.Generator().manual_seed(0))
    return model.decode(codes.mean(0) + eps @ L.T).clamp(-1, 1)


samples = {
    "AE, z ~ N(0, I)": ae16.sample(n, torch.Generator().manual_seed(0)),
    "AE, z ~ Gaussian fitted to its codes": decode_fitted(ae16, ae16.encode(x_train)),
    "VAE sigma^2 = 0.5, z ~ N(0, I)": vae.sample(n, torch.Generator().manual_seed(0)),
    "VAE sigma^2 = 0.05, z ~ N(0, I)": matched.sample(n, torch.Generator().manual_seed(0)),
    "VAE sigma^2 = 0.05, z ~ fitted Gaussian": decode_fitted(matched, matched.encode(x_train)[0]),
}
reference = feature_stats(lenet_features(classifier, x_test))
floor = real_floor(classifier, n, reference)


def judge(images: torch.Tensor) -> tuple[float, float]:
    """(share the classifier reads with confidence > 0.9, FID-LeNet against the test digits), from one pass."""
    phi = lenet_features(classifier, images)  # (N, 64), the classifier's penultimate layer
    confident = (F.softmax(classifier.head(phi), 1).max(1).values > 0.9).float().mean().item()
    return confident, frechet_distance(*feature_stats(phi), *reference)


scores = {}
for name, images in samples.items():
    scores[name] = judge(images)
    confident = scores[name][0]
    print(f"{name:40s} confident {confident:.1%} ± {math.sqrt(confident * (1 - confident) / n):.1%}   FID-LeNet {scores[name][1]:7.1f}")
print(f"{n} real training digits: FID-LeNet {floor['real_floor']:.1f} ± {floor['real_floor_std']:.1f} (the real-data reference level at this N, mean ± std over 5 draws: not a floor)")

# %%
# NBVAL_CHECK_OUTPUT
(ae_conf, ae_fid), (fit_conf, fit_fid), (vae_conf, vae_fid), (matched_conf, matched_fid), (refit_conf, refit_fid) = scores.values()
claim("the VAE's prior samples beat the AE's N(0, I) decodings: confident share up by over 10 points, FID-LeNet under half",
      vae_conf > ae_conf + 0.10 and vae_fid < ae_fid / 2)
claim("a Gaussian fitted to the AE's codes after training comes within 5 points and 20 % FID of the VAE's prior samples",
      abs(fit_conf - vae_conf) < 0.05 and abs(fit_fid - vae_fid) < 0.2 * vae_fid)
claim("the sigma^2 = 0.05 VAE's prior samples are worse than the sigma^2 = 0.5 VAE's (higher FID-LeNet)", matched_fid > vae_fid)
claim("a Gaussian fitted to its codes more than halves its FID-LeNet, to below the sigma^2 = 0.5 VAE's prior samples",
      refit_fid < min(matched_fid / 2, vae_fid))
claim("every row stays over 5x the real-data level of FID-LeNet", min(ae_fid, fit_fid, vae_fid, matched_fid, refit_fid) > 5 * floor["real_floor"])

# %%
display(Image(png_bytes(grid(torch.cat([images[:10] for images in samples.values()]), nrow=10), scale=2)))
print("rows:", " | ".join(samples))

# %% [markdown]
# Three lessons, each measured above:
#
# - **The VAE puts the codes where we sample.** From $\mathcal{N}(0, I)$ its samples are read confidently far more often
#   than the autoencoder's, with under half the FID.
# - **That is most of what it gains at this size.** A Gaussian fitted to the autoencoder's codes *after* training does
#   about as well (Ghosh et al. 2020 made the same observation: a deterministic autoencoder with a density fitted to its
#   codes after training samples as well as a VAE). The VAE's
#   advantages are that the sampling distribution is known before training, that the ELBO is a likelihood bound we can
#   compute and compare, and a decoder trained to be smooth around every code.
# - **The true ELBO with the right variance samples worse from the prior.** The matched VAE spends 49 nats per code; its
#   codes no longer fill $\mathcal{N}(0, I)$, and many prior draws land where no code lives. Its *decoder* is fine: drawn
#   from a Gaussian fitted to its codes, as we did for the AE, its samples are as good as any in the table.
#
# ## 7. Blurry, measured — and where the blur comes from
#
# Real MNIST pixels are almost all black or white; a blurry image has many grey ones, and weaker edges (a smaller mean
# gradient). The reconstructions are listed by the weight $2\sigma^2\beta$ of their model's KL term (section 5: 0.1 for the
# matched VAE, 1 for `vae-mnist`, 5 for `vae-mnist-beta5`):

# %%
from minilineage.metrics import sharpness  # (grey share of inked pixels, edge strength); see its docstring

beta5 = load_model("vae-mnist-beta5")
blur = {}
for name, images in [("real test digits", x_test),
                     ("reconstructions, weight 0.1", matched(x_test).clamp(-1, 1)),
                     ("reconstructions, weight 1", vae(x_test).clamp(-1, 1)),
                     ("reconstructions, weight 5", beta5(x_test).clamp(-1, 1)),
                     ("prior samples, sigma^2 = 0.5", samples["VAE sigma^2 = 0.5, z ~ N(0, I)"])]:
    blur[name] = sharpness(images)
    print(f"{name:32s} grey share of inked pixels {blur[name][0]:.3f}   edge strength {blur[name][1]:.4f}")

# %%
# NBVAL_CHECK_OUTPUT
grey = [g for g, _ in blur.values()]
edges = [e for _, e in blur.values()]
claim("grey share rises along: real < reconstructions at weight 0.1 < 1 < 5, and prior samples are greyer than real",
      grey[0] < grey[1] < grey[2] < grey[3] and grey[4] > grey[0])
claim("edge strength falls along the same reconstructions", edges[0] > edges[1] > edges[2] > edges[3])

# %% [markdown]
# **Where the blur comes from.** The decoder is trained with a Gaussian likelihood, i.e. a squared error. For any set of
# images that reach the same code, the one output that minimises the squared error is their **average**, and an average of
# differently placed strokes is grey. Which images reach "the same code" is decided by what the code does *not* say: the
# KL term charges for every nat of information about $x$ that $z$ carries, and the weight $2\sigma^2\beta$ sets the price.
# Raise it and the code says less, more digits share each code, and the decoder averages over more of them: the table above
# goes from 0.1 to 1 to 5 and the reconstructions get greyer each time.
#
# We can watch the averaging. For each test digit, take the $k$ training digits whose codes are nearest to its code, and
# average them. A decoder that averages should be closer to that neighbourhood average than the digit itself is:

# %%
def neighbourhood(model, k: int = 10) -> tuple[float, float]:
    """MSE of (reconstruction, mean of the k training digits with the nearest codes) and of (input digit, that mean)."""
    nearest = torch.cdist(model.encode(x_test)[0], model.encode(x_train)[0]).topk(k, largest=False).indices  # (500, k)
    average = x_train[nearest].mean(1)  # (500, 1, 28, 28)
    return F.mse_loss(model(x_test).clamp(-1, 1), average).item(), F.mse_loss(x_test, average).item()


averaging = {}
for name, model in [("weight 0.1", matched), ("weight 1", vae), ("weight 5", beta5)]:
    averaging[name] = neighbourhood(model)
    print(f"{name:10s} distance to the average of the 10 nearest-code training digits: reconstruction "
          f"{averaging[name][0]:.3f}, the input digit itself {averaging[name][1]:.3f}")

# %%
# NBVAL_CHECK_OUTPUT
claim("every VAE's reconstruction is nearer the neighbourhood average than the input digit is (by over 25 %)",
      all(recon < 0.75 * digit for recon, digit in averaging.values()))
claim("the larger the weight 2 sigma^2 beta, the nearer the reconstruction is to the average",
      [r for r, _ in averaging.values()] == sorted((r for r, _ in averaging.values()), reverse=True))

# %% [markdown]
# The popular explanation, which the article this course follows also gives, is that the VAE decodes "in one step" and one
# step cannot commit to a sharp answer. Take it as an intuition, not a cause. A GAN's generator (Goodfellow et al. 2014) is
# also one step and is sharp, because its loss is not a per-pixel likelihood: a discriminator rejects a grey average that no
# real digit looks like. And above, the *same* one-step decoder turned sharper or blurrier with $2\sigma^2\beta$ alone.
# Chapter 3's diffusion model keeps the squared error, and each of its denoising steps is an average too (its predicted
# $\hat x_0$ is blurry early on), but a step moves only a little towards that average and then adds fresh noise: the
# sample commits to one digit gradually, and the final steps only average over tiny details.
#
# ## 8. The β knob
#
# Weighting the KL term with β (Higgins et al. 2017) is the same move as changing $\sigma^2$. The course ships three VAEs
# that differ only in β (recipes `vae-mnist-beta0.2`, `vae-mnist`, `vae-mnist-beta5`), plus the matched-variance one; in the
# table each is listed by its effective weight $2\sigma^2\beta$ (the β at $\sigma^2 = \tfrac12$). Every row decodes 2,000
# prior codes from a generator seeded with 0; the rows of weight 0.1 and 1 reuse section 6's samples, so one model has one
# score everywhere in the chapter:

# %%
by_weight = {0.1: matched, 0.2: load_model("vae-mnist-beta0.2"), 1.0: vae, 5.0: beta5}
prior_samples = {0.1: samples["VAE sigma^2 = 0.05, z ~ N(0, I)"], 1.0: samples["VAE sigma^2 = 0.5, z ~ N(0, I)"]}
table = {}
print(f"{'2 sigma^2 beta':>14} | {'recon. MSE':>10} | {'KL (nats)':>9} | {'confident prior samples':>23} | {'FID-LeNet':>9}")
for weight, model in by_weight.items():
    mu, logvar = model.encode(x_test)
    images = prior_samples.get(weight)
    images = model.sample(n, torch.Generator().manual_seed(0)) if images is None else images
    confident, fid = judge(images)
    table[weight] = (reconstruction_mse(model, x_test), kl_to_standard_normal(mu, logvar).mean().item(), confident, fid)
    print(f"{weight:14.1f} | {table[weight][0]:10.4f} | {table[weight][1]:9.1f} | {confident:23.1%} | {table[weight][3]:9.1f}")

# %%
# NBVAL_CHECK_OUTPUT
mse, kl, confident, fid = zip(*table.values())
claim("a larger weight gives codes closer to the prior (smaller KL) at every step", list(kl) == sorted(kl, reverse=True))
claim("reconstructions are worst at the largest weight", mse[-1] == max(mse))
claim("prior samples are best (lowest FID-LeNet) in the middle, at weight 1", fid[2] == min(fid))

# %%
beta_player(by_weight, x_test[::100], generator=torch.Generator().manual_seed(0))

# %% [markdown]
# Small weight: the best reconstructions and a large KL (the clouds drift away from the prior), and the worst prior
# samples. Large weight: the codes hug the prior and reconstructions lose detail, and prior samples are blurry again.
# No setting gives sharp reconstructions *and* good prior samples, because one number sets both how much a code may say
# and how closely the codes must fill $\mathcal{N}(0, I)$. Latent diffusion (Chapter 4) breaks the tie: a tiny KL weight
# for sharp decoding, and a second generative model that learns where the codes actually are.
#
# ## 9. Walking the latent space
#
# A VAE with a 2-D code (`vae-mnist-z2`, the one of section 2) can be walked: change one coordinate at a time from −3 to 3
# and decode.

# %%
traversal_player(vae2, torch.zeros(1, 2), dims=(0, 1))

# %% [markdown]
# How much of the prior's square decodes to a readable digit? Decode a 25 × 25 grid over $[-3, 3]^2$ and let the classifier
# judge; for Chapter 1's 2-D autoencoder use the same grid in units of its own codes (their mean ± 3 standard deviations),
# which we could only choose *after* encoding the data:

# %%
u = torch.linspace(-3, 3, 25)
square = torch.stack(torch.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)  # (625, 2)
codes2 = vae2.encode(x_test)[0]
ae2 = load_model("ae-mnist")
ae_codes2 = ae2.encode(x_train)
readable = {}
for name, model, grid_codes in [("VAE, prior square", vae2, square),
                                ("AE, its codes' square", ae2, ae_codes2.mean(0) + ae_codes2.std(0) * square)]:
    readable[name] = (F.softmax(classifier(model.decode(grid_codes)), 1).max(1).values > 0.9).float().mean().item()
    print(f"{name:22s} share of the grid read confidently: {readable[name]:.0%}")
print(f"2-D VAE codes of the test digits: mean {codes2.mean(0).numpy().round(2)}, std {codes2.std(0).numpy().round(2)}; "
      f"2-D AE codes: mean {ae_codes2.mean(0).numpy().round(2)}, std {ae_codes2.std(0).numpy().round(2)}")

# %%
# NBVAL_CHECK_OUTPUT
claim("the VAE's codes are centred within 0.3 of the prior's mean, with a spread within a factor 2 of its std",
      codes2.mean(0).abs().max() < 0.3 and ((codes2.std(0) > 0.5) & (codes2.std(0) < 2)).all().item())
claim("at least 70 % of the VAE's prior square decodes to confidently read digits", readable["VAE, prior square"] > 0.7)
claim("the AE's square, found after training, does about as well (within 10 points)",
      abs(readable["VAE, prior square"] - readable["AE, its codes' square"]) < 0.1)

# %% [markdown]
# In two dimensions neither model leaves large holes; what differs is that the VAE's square was known before training (its
# codes are centred on 0 with a spread near 1, as the prior is), while the autoencoder's had to be measured afterwards.
# This is the same lesson as section 6, seen on a map.
#
# ## 10. Train it yourself
#
# `minilineage train vae-mnist` trains the shipped model (3,000 steps; its time is in the record printed at the top). The
# cell below runs 50 steps in fast mode and reports the peak memory the run added to this notebook's process. Measured in a
# fresh process, a training step of this VAE at batch 128 needs about 40 MB on a CPU on top of the roughly 670 MB that Python,
# PyTorch and the data take (`minilineage bench` measures it on your machine; no GPU figure was measured for this chapter).

# %%
baseline = start_peak_memory(torch.device("cpu"))
result = train_with_plot("vae-mnist", steps=50 if FAST else None, out=None, progress=not FAST)
extra = peak_memory(torch.device("cpu"), baseline)
memory = "not measurable here" if extra is None else f"{extra / 2**20:.0f} MB"
print(f"{result.record['step']} steps in {result.record['wall_time_s']} s -> {result.record['metrics']}; "
      f"peak memory added: {memory}")

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
# Run an exercise's cell to check your answer; `show_solution("ch2.kl_by_hand")` (with the exercise's name) prints
# the reference answer.
#
# **Exercise 1.** Compute by hand the KL divergence of $\mathcal{N}(1, 1)$ to $\mathcal{N}(0, 1)$ in one dimension.

# %%
answer = None  # a number
exercise("ch2.kl_by_hand", answer)

# %% [markdown]
# **Exercise 2.** Write the reparameterised sample yourself: a function of `mu`, `logvar` and `eps` (tensors of one
# shape) that returns $z$.

# %%
my_z = None  # def my_z(mu, logvar, eps): ...
exercise("ch2.reparameterise", my_z)

# %% [markdown]
# **Exercise 3.** Implement the closed-form KL divergence of $\mathcal{N}(\mu, \operatorname{diag}\sigma^2)$ to $\mathcal{N}(0, I)$:
# a function of `mu` and `logvar`, both (B, d), returning one value per item, (B,).

# %%
my_kl = None  # def my_kl(mu, logvar): ...
exercise("ch2.kl", my_kl)

# %% [markdown]
# **Exercise 4.** Implement the decoder's log-likelihood $\log \mathcal{N}(x;\, \hat x,\, \sigma^2 I)$ with its constant: a
# function of `x`, `x_hat` (both (B, C, H, W)) and the variance `var` (a number), returning (B,) values in nats.

# %%
my_log_likelihood = None  # def my_log_likelihood(x, x_hat, var): ...
exercise("ch2.log_likelihood", my_log_likelihood)

# %% [markdown]
# **Exercise 5.** Implement the one-sample negative ELBO per image, constant included: a function of a VAE `model`,
# images `x`, the noise `eps` (B, d) to reparameterise with, and the decoder variance `var`, returning (B,) values.
# The check compares it with the package on the 2-D VAE.

# %%
my_negative_elbo = None  # def my_negative_elbo(model, x, eps, var): ...
exercise("ch2.negative_elbo", my_negative_elbo)

# %% [markdown]
# **Exercise 6.** Section 5 derived the decoder variance that maximises the ELBO for fixed reconstructions. Write it as
# a function of `x` and `x_hat` (both (B, C, H, W)) returning one number. Then: the shipped β = 5 VAE was trained at
# $\sigma^2 = \tfrac12$. Which decoder variance makes its loss the true ELBO (β = 1)?

# %%
my_best_variance = None  # def my_best_variance(x, x_hat): ...
exercise("ch2.best_variance", my_best_variance)
variance_for_beta_5 = None  # a number
exercise("ch2.same_knob", variance_for_beta_5)

# %% [markdown]
# **Exercise 7.** Decode the prior's centre $z = 0$ with the 16-D VAE. Which digit does the classifier see?
# Why does the "average" code give this kind of image?

# %%
centre_digit = None  # a digit 0-9
exercise("ch2.centre_digit", centre_digit)

# %% [markdown]
# ## What goes wrong, and what comes next
#
# The VAE generates: prior samples are digits, and the ELBO is a bound on their likelihood that we can compute. But one
# Gaussian decoder trained with a squared error returns the average of everything its code leaves open, so the samples are
# blurry, and the single knob $2\sigma^2\beta$ trades sharp decoding against codes that fill the prior. Denoising diffusion
# (DDPM) keeps the squared error but uses it on hundreds of small denoising steps, each of which only has to average over a
# little uncertainty, with fresh noise in between: the sample is built up as a chain of small Gaussian moves rather than one
# big one. → Chapter 3.
