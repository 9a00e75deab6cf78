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
# # Chapter 3 — Denoising diffusion (DDPM), derived and checked
#
# The VAE makes an image from noise in one decoder step, and that one step blurs. A denoising
# diffusion probabilistic model (DDPM, Ho et al. 2020) makes it in a thousand small steps. Destroying an
# image is easy: add a little Gaussian noise, again and again, until nothing is left. Learning to undo
# *one small step* of that destruction is also easy, because one small step barely changes the image.
# Chain a thousand learned undo-steps and pure noise turns into a digit.
#
# This chapter derives every equation of DDPM and puts each one next to code that computes it and a
# numeric check that it holds.
#
# **You will learn**
# 1. the forward (noising) process and three noise schedules;
# 2. the closed form $q(x_t \mid x_0)$, derived and checked against step-by-step noising;
# 3. the posterior $q(x_{t-1} \mid x_t, x_0)$ and why predicting the noise $\varepsilon$ is all the network must do;
# 4. Algorithm 1 (training) and Algorithm 2 (sampling) as ten readable lines each;
# 5. the U-Net denoiser, what sampling costs, DDIM (fewer steps) and classifier-free guidance.
#
# Notation: $t$ runs over $0, \dots, T-1$ in code (index `t`), which is the paper's $1, \dots, T$; $\beta_t$ is
# the noise added at step $t$, $\alpha_t = 1 - \beta_t$, $\bar\alpha_t = \prod_{s \le t} \alpha_s$.

# %%
import time

import torch
import torch.nn.functional as F
from IPython.display import Image, display

import minilineage
from minilineage.checkpoint import load_model
from minilineage.checks import claim
from minilineage.exercises import exercise, show_solution
from minilineage.data import load_dataset, to_uint8
from minilineage.diffusion import (
    DiffusionPipeline,
    NoiseSchedule,
    ddim_sample,
    ddpm_sample,
    eps_loss,
    predict_x0,
    q_posterior,
    q_sample,
    q_step,
)
from minilineage.metrics import evaluate_samples
from minilineage.widgets import (
    grid,
    noising_explorer,
    png_bytes,
    reverse_player,
    schedule_figure,
    step_comparison,
    train_with_plot,
)

FAST = minilineage.chapter_setup()
torch.set_grad_enabled(False)
test = load_dataset("mnist-5k", "test")
x_test = test.float_images()  # (500, 1, 28, 28) in [-1, 1]


# %% [markdown]
# ## 1. The forward process: add a little noise, many times
#
# One forward step scales the image down a little and adds a little Gaussian noise (Ho et al. 2020, Eq. 2):
#
# $$q(x_t \mid x_{t-1}) = \mathcal{N}\big(x_t;\ \sqrt{1 - \beta_t}\, x_{t-1},\ \beta_t I\big), \qquad
# x_t = \sqrt{1-\beta_t}\, x_{t-1} + \sqrt{\beta_t}\, \varepsilon .$$
#
# Why the factor $\sqrt{1-\beta_t}$? If $x_{t-1}$ has unit variance, then $x_t$ has variance $(1-\beta_t) + \beta_t = 1$:
# the process keeps the scale fixed while it swaps signal for noise, so after enough steps $x_T \approx \mathcal{N}(0, I)$,
# whatever the image was. A quick check on unit-variance data:

# %%
sched = NoiseSchedule.named("linear", 1000)
x = torch.randn(200_000, generator=torch.Generator().manual_seed(0))  # unit variance "data"
variances = {}
for t in (0, 499, 999):
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(t + 1))  # independent of x
    variances[t] = q_step(sched, x, torch.tensor(t), eps).var().item()
    print(f"t = {t:3d}: beta_t = {sched.beta[t]:.5f}, var(x_t) = {variances[t]:.4f}")

# %%
# NBVAL_CHECK_OUTPUT
# the variance of a variance estimate from n = 200,000 unit-variance draws has std sqrt(2 / n) = 0.003
claim("one forward step keeps unit variance at t = 0, 499 and 999 (within 0.015 = 5 standard errors)",
      all(abs(v - 1) < 0.015 for v in variances.values()))

# %% [markdown]
# The sequence $\beta_1, \dots, \beta_T$ is the **noise schedule**. Ho et al. used a *linear* ramp from $10^{-4}$ to $0.02$;
# a *quadratic* ramp (linear in $\sqrt{\beta}$) lingers longer at low noise; Nichol & Dhariwal (2021) defined a *cosine*
# schedule through $\bar\alpha_t$ directly, because the linear one destroys small images too early (look at the
# log-SNR curves: the linear schedule spends its last few hundred steps on images that are already pure noise).

# %%
schedule_figure(1000)

# %% [markdown]
# ## 2. Jumping to any step: the closed form $q(x_t \mid x_0)$
#
# Two steps merge into one: $x_t = \sqrt{\alpha_t}\, x_{t-1} + \sqrt{1-\alpha_t}\, \varepsilon_t$ and
# $x_{t-1} = \sqrt{\alpha_{t-1}}\, x_{t-2} + \sqrt{1-\alpha_{t-1}}\, \varepsilon_{t-1}$ give
#
# $$x_t = \sqrt{\alpha_t \alpha_{t-1}}\, x_{t-2} + \underbrace{\sqrt{\alpha_t (1-\alpha_{t-1})}\, \varepsilon_{t-1} + \sqrt{1-\alpha_t}\, \varepsilon_t}_{\text{sum of two independent Gaussians}}.$$
#
# A sum of independent zero-mean Gaussians is Gaussian with the summed variance, $\alpha_t(1-\alpha_{t-1}) + 1 - \alpha_t = 1 - \alpha_t\alpha_{t-1}$.
# Repeating down to $x_0$ (induction) gives the property that makes DDPM trainable (Eq. 4):
#
# $$q(x_t \mid x_0) = \mathcal{N}\big(x_t;\ \sqrt{\bar\alpha_t}\, x_0,\ (1-\bar\alpha_t) I\big), \qquad
# x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1-\bar\alpha_t}\, \varepsilon .$$
#
# Check: noise one real digit $t$ times step by step, many times over, and compare the distribution of each
# pixel with the closed form's mean and standard deviation.

# %%
x0 = x_test[0].expand(4000, -1, -1, -1)  # 4000 copies of one digit
g = torch.Generator().manual_seed(0)
worst = {}
for t_final in (10, 100, 400):
    xt = x0
    for t in range(t_final):
        xt = q_step(sched, xt, torch.tensor(t), torch.randn(xt.shape, generator=g))
    ab = sched.alpha_bar[t_final - 1]
    mean_err = (xt.mean(0) - ab.sqrt() * x_test[0]).abs().max().item()
    std_err = (xt.std(0) - (1 - ab).sqrt()).abs().max().item()
    worst[t_final] = (mean_err / (1 - ab).sqrt().item(), std_err / (1 - ab).sqrt().item())  # in units of the noise std
    print(f"{t_final:3d} steps: alpha_bar = {ab:.4f}; largest pixel error in mean {mean_err:.3f}, in std {std_err:.3f}")

# %%
# NBVAL_CHECK_OUTPUT
# standard errors with 4000 draws: of a mean sigma / sqrt(4000) = 0.016 sigma, of a std 0.011 sigma;
# the worst of 784 pixels should stay within about 4.5 of them
claim("step-by-step noising matches the closed form's mean and std at 10, 100 and 400 steps",
      all(m < 4.5 * 0.0158 and s < 4.5 * 0.0112 for m, s in worst.values()))

# %% [markdown]
# The errors are Monte Carlo noise: with 4,000 draws the standard error of a mean is $\sigma/\sqrt{4000} \approx 0.016\,\sigma$, and
# the largest of 784 pixels stays within about four standard errors. A wrong coefficient (say $\bar\alpha_t$ instead of $\sqrt{\bar\alpha_t}$)
# would be off by 0.1 to 0.5. The widget below uses only the closed form: pick a schedule, slide $t$, and read off
# $\bar\alpha_t$ and the signal-to-noise ratio $\mathrm{SNR}(t) = \bar\alpha_t / (1 - \bar\alpha_t)$.
# Its frames are precomputed, so it also plays in an exported HTML page.

# %%
noising_explorer(x_test[::100], n_frames=20, generator=torch.Generator().manual_seed(0))

# %% [markdown]
# ## 3. Going back: the posterior $q(x_{t-1} \mid x_t, x_0)$
#
# To generate we must run the chain backwards, $p_\theta(x_{t-1} \mid x_t)$. The true reverse step $q(x_{t-1} \mid x_t)$
# needs the whole data distribution, but *given* $x_0$ it is a Gaussian we can write down. By Bayes,
# $q(x_{t-1} \mid x_t, x_0) \propto q(x_t \mid x_{t-1})\, q(x_{t-1} \mid x_0)$, a product of two Gaussians in $x_{t-1}$; collecting the
# squares gives (Eqs. 6–7)
#
# $$q(x_{t-1} \mid x_t, x_0) = \mathcal{N}\big(\tilde\mu_t, \tilde\beta_t I\big), \quad
# \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\, x_0 + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\, x_t, \quad
# \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\, \beta_t .$$
#
# Check it the way a statistician would: draw many pairs $(x_{t-1}, x_t)$ from the forward process for a fixed $x_0$, regress $x_{t-1}$
# on $x_t$, and compare slope, intercept and residual variance with the formula.

# %%
t = torch.tensor(300)
x0_pixel = torch.tensor(0.6)
g = torch.Generator().manual_seed(1)
x_prev = q_sample(sched, x0_pixel.expand(400_000), t - 1, torch.randn(400_000, generator=g))
x_t = q_step(sched, x_prev, t, torch.randn(400_000, generator=g))
slope = ((x_t - x_t.mean()) * (x_prev - x_prev.mean())).mean() / x_t.var()
intercept = x_prev.mean() - slope * x_t.mean()
residual = (x_prev - intercept - slope * x_t).var()
ab, ab_prev, beta = sched.alpha_bar[t], sched.alpha_bar_prev[t], sched.beta[t]
formula = {"slope": (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab), "intercept": ab_prev.sqrt() * beta / (1 - ab) * x0_pixel,
           "variance": (1 - ab_prev) / (1 - ab) * beta}
print(f"slope      regression {slope:.4f}   formula {formula['slope']:.4f}")
print(f"intercept  regression {intercept:.4f}   formula {formula['intercept']:.4f}")
print(f"variance   regression {residual:.6f} formula {formula['variance']:.6f}")
mean, var = q_posterior(sched, x0_pixel.view(1), x_t[:1], t.view(1))

# %%
# NBVAL_CHECK_OUTPUT
claim("regression slope and intercept match the formula within 0.002", abs(slope - formula["slope"]) < 0.002
      and abs(intercept - formula["intercept"]) < 0.002)
claim("the residual variance matches the posterior variance within 1 %", abs(residual / formula["variance"] - 1) < 0.01)
claim("the package's q_posterior computes the same mean and variance",
      torch.allclose(mean, formula["intercept"] + formula["slope"] * x_t[:1]) and torch.allclose(var, formula["variance"]))

# %% [markdown]
# ## 4. Why predicting the noise suffices, and the simple loss
#
# The reverse model is a Gaussian $p_\theta(x_{t-1} \mid x_t) = \mathcal{N}(\mu_\theta(x_t, t), \sigma_t^2 I)$ with a fixed variance. Training
# maximises a variational bound whose terms are KL divergences between two Gaussians with the same variance, so
# each is a squared distance between means: $\frac{1}{2\sigma_t^2} \lVert \tilde\mu_t(x_t, x_0) - \mu_\theta(x_t, t) \rVert^2$.
#
# Now use the closed form backwards: $x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\varepsilon) / \sqrt{\bar\alpha_t}$. Substituting into $\tilde\mu_t$:
#
# $$\tilde\mu_t = \frac{1}{\sqrt{\alpha_t}} \Big( x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\, \varepsilon \Big).$$
#
# At sampling time $x_t$ is known; the only unknown is the noise $\varepsilon$ that was mixed in. So let the network predict it,
# $\mu_\theta = \frac{1}{\sqrt{\alpha_t}}(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}} \varepsilon_\theta(x_t, t))$, and each KL term becomes a weighted noise-prediction
# error $\frac{\beta_t^2}{2\sigma_t^2 \alpha_t (1-\bar\alpha_t)} \lVert \varepsilon - \varepsilon_\theta \rVert^2$. Ho et al. found that dropping the weight trains better samples (Eq. 14):
#
# $$L_{\text{simple}} = \mathbb{E}_{t, x_0, \varepsilon} \big\lVert \varepsilon - \varepsilon_\theta(\sqrt{\bar\alpha_t} x_0 + \sqrt{1-\bar\alpha_t}\, \varepsilon,\ t) \big\rVert^2 .$$
#
# Numerically, the two forms of $\tilde\mu_t$ agree on any image and any noise:

# %%
t = torch.full((4,), 250)
eps = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
xt = q_sample(sched, x_test[:4], t, eps)
mean_from_x0, _ = q_posterior(sched, x_test[:4], xt, t)
a, ab, beta = sched.alpha[250], sched.alpha_bar[250], sched.beta[250]
mean_from_eps = (xt - beta / (1 - ab).sqrt() * eps) / a.sqrt()
print("max difference between the two forms:", f"{(mean_from_x0 - mean_from_eps).abs().max():.1e}")
assert torch.allclose(mean_from_x0, mean_from_eps, atol=1e-5)

# %% [markdown]
# ## 5. Algorithm 1 (training) and Algorithm 2 (sampling)
#
# Algorithm 1: pick an image, a random step and random noise; noise the image in one jump; regress the noise.
# Here it is written out, checked against the package's `eps_loss` on the shipped model.

# %%
model = load_model("ddpm-mnist", expect=DiffusionPipeline)
sched = model.sched  # the cosine schedule it was trained with
print(model.checkpoint_info["command"], "|", model.checkpoint_info["step"], "steps,",
      model.checkpoint_info["wall_time_s"], "s on", model.checkpoint_info["device"])


def algorithm_1_loss(eps_model, x0, y, generator):
    t = torch.randint(0, sched.T, (len(x0),), generator=generator)  # t ~ Uniform({1, ..., T})
    eps = torch.randn(x0.shape, generator=generator)  # eps ~ N(0, I)
    xt = sched.sqrt_alpha_bar[t].view(-1, 1, 1, 1) * x0 + sched.sqrt_one_minus_alpha_bar[t].view(-1, 1, 1, 1) * eps
    return ((eps - eps_model(xt, t, y=y)) ** 2).mean()  # gradient step on this


x0, y = x_test[:64], test.labels[:64]
ours = algorithm_1_loss(model, x0, y, torch.Generator().manual_seed(0))
g = torch.Generator().manual_seed(0)
t = torch.randint(0, sched.T, (64,), generator=g)
package = eps_loss(model, sched, x0, None, t=t, eps=torch.randn(x0.shape, generator=g), y=y)
print(f"Algorithm 1 loss, ours {ours:.4f}, package {package:.4f}")

# %% [markdown]
# Algorithm 2: start from pure noise and apply the learned reverse step $T$ times, adding fresh noise
# $\sigma_t z$ on every step but the last (here $\sigma_t^2 = \tilde\beta_t$). Our ten lines against the package's `ddpm_sample`
# (without the package's clipping of $\hat x_0$, Algorithm 2 has none):

# %%
def algorithm_2(eps_model, n, y, generator):
    x = torch.randn(n, 1, 28, 28, generator=generator)  # x_T ~ N(0, I)
    for i in reversed(range(sched.T)):
        t = torch.full((n,), i)
        z = torch.randn(x.shape, generator=generator) if i > 0 else torch.zeros_like(x)
        eps_hat = eps_model(x, t, y=y)
        mean = (x - sched.beta[i] / sched.sqrt_one_minus_alpha_bar[i] * eps_hat) / sched.alpha[i].sqrt()
        x = mean + sched.posterior_variance[i].sqrt() * z
    return x


y = torch.tensor([3, 7])
ours = algorithm_2(model, 2, y, torch.Generator().manual_seed(0))
package = ddpm_sample(model, sched, (2, 1, 28, 28), torch.Generator().manual_seed(0), clip_x0=None, y=y)
print("largest difference, ours vs package:", f"{(ours - package).abs().max():.1e}")
display(Image(png_bytes(torch.cat([ours, package]).clamp(-1, 1), scale=3)))

# %% [markdown]
# ## 6. The denoiser: a U-Net that knows the time
#
# $\varepsilon_\theta(x_t, t, y)$ must output an image-shaped tensor, so it is a U-Net (Ronneberger et al. 2015): convolutions
# that halve the resolution, a bottleneck with self-attention, and convolutions back up, with skip connections carrying
# detail across. The step $t$ enters as a sinusoidal embedding (as in transformers) turned into a scale and shift of every
# residual block's features; the class label $y$ adds a learned vector to that embedding.
#
# **Where the compute goes.** On a CPU nearly all the time is spent in the convolutions at full 28×28 resolution. The course's
# U-Net first folds every 2×2 pixel block into 4 channels (`patch=2`, the same idea as a ViT's patches in Chapter 5), so it
# works on 14×14 and 7×7 maps: a quarter of the positions at every level. Measured on this machine (one thread, batch 128,
# forward + backward): a 3-level U-Net at full resolution took about 0.5 s per step, the patched 2-level one about 0.25–0.3 s,
# with a similar parameter count. `minilineage bench` prints the throughput of every model on your machine, next to
# diffusers' `UNet2DModel` at a matched size.

# %%
print(model.net.config)
print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")

# %% [markdown]
# ## 7. Samples, and the reverse process step by step
#
# The shipped model (`minilineage train ddpm-mnist`: 5,000 steps on `mnist-5k`, EMA weights) samples ten of each digit with 50 DDIM
# steps and guidance 2:

# %%
g = torch.Generator().manual_seed(0)
labels = torch.arange(100) % 10
samples = model.sample(100, g, labels=labels)
by_digit = samples.view(10, 10, 1, 28, 28).transpose(0, 1).reshape(100, 1, 28, 28)  # row k: ten samples of digit k
display(Image(png_bytes(grid(by_digit, nrow=10), scale=2)))

# %% [markdown]
# The player shows what the network sees and says at each reverse step: $x_t$, its prediction of the clean image
# $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)/\sqrt{\bar\alpha_t}$, and the predicted noise $\hat\varepsilon$. Early on $\hat x_0$ is a blurry average
# (much like a VAE sample!); later steps commit to one sharp digit.

# %%
_, trajectory = model.sample(4, torch.Generator().manual_seed(1), labels=torch.tensor([2, 3, 5, 8]), steps=50, trajectory=True)
reverse_player(trajectory, every=5)

# %% [markdown]
# ## 8. What sampling costs
#
# Each step is one full network evaluation (two with guidance), on an image the size of the output. So the cost grows
# linearly with the number of steps, and with the number of pixels. Measured here, for a batch of 100 digits:

# %%
def seconds(fn, repeat=1):
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


x100, t100, y100 = torch.randn(100, 1, 28, 28), torch.full((100,), 500), torch.arange(100) % 10
one_eval = seconds(lambda: model(x100, t100, y=y100), repeat=3)
big = seconds(lambda: model(F.interpolate(x100, scale_factor=2), t100, y=y100), repeat=3)
print(f"one network evaluation, 100 images: 28x28 {one_eval * 1e3:.0f} ms, 56x56 {big * 1e3:.0f} ms ({big / one_eval:.1f}x)")
for steps in (10, 50, 1000):
    print(f"{steps:5d} steps x 2 evaluations (guidance) ~ {2 * steps * one_eval:6.1f} s per 100 samples")

# %% [markdown]
# Ancestral DDPM needs all 1,000 steps. That is the price of small steps, and the reason for the next two sections (and for
# Chapter 4, which shrinks the image the network works on).
#
# ## 9. DDIM: the same model, far fewer steps
#
# Song et al. (2021) noticed that the training loss only involves the marginals $q(x_t \mid x_0)$, so any reverse process with the
# same marginals fits the same trained network. Their deterministic choice ($\eta = 0$, Eq. 12) jumps between any two steps $t > s$:
#
# $$x_s = \sqrt{\bar\alpha_s}\, \hat x_0 + \sqrt{1 - \bar\alpha_s}\, \hat\varepsilon, \qquad \hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\, \hat\varepsilon}{\sqrt{\bar\alpha_t}} .$$
#
# Predict the clean image, then re-noise it to the *lower* noise level with the *same* noise. The widget starts every run from the
# same $x_T$:

# %%
step_comparison(model.denoiser(2.0), sched, (10, 1, 28, 28), steps_list=(2, 5, 10, 25, 50), nrow=10,
                generator=torch.Generator().manual_seed(0), y=torch.arange(10))

# %% [markdown]
# How good are the samples at each step count? The independent LeNet classifier (97.6 % accurate on real test digits) reads each
# sample; we count how often it sees the digit that was asked for. (Fast mode scores 100 samples; set `N_EVAL` higher for
# tighter numbers.)

# %%
N_EVAL = 100 if FAST else 1000


def score(n=N_EVAL, **options):
    labels = torch.arange(n) % 10
    images = model.sample(n, torch.Generator().manual_seed(0), labels=labels, **options)
    return evaluate_samples(to_uint8(images), labels)


by_steps = {steps: score(steps=steps)["accuracy"] for steps in (5, 10, 25, 50)}
for steps, acc in by_steps.items():
    print(f"DDIM {steps:2d} steps, guidance 2: {acc:.0%} of {N_EVAL} samples read as the requested digit")
# the chapter's claims, checked on every run (sampling chains are too long to compare digit by digit across CPUs)
assert by_steps[50] >= 0.9 and by_steps[10] >= 0.8

# %% [markdown]
# ## 10. Classifier-free guidance
#
# During training the label was replaced by a "null" label 10 % of the time, so the same network is both a conditional model
# $\varepsilon_\theta(x_t, t, y)$ and an unconditional one $\varepsilon_\theta(x_t, t, \varnothing)$. Guidance (Ho & Salimans 2022) extrapolates from the second towards
# the first:
#
# $$\tilde\varepsilon = \varepsilon_\theta(x_t, t, \varnothing) + w\,\big(\varepsilon_\theta(x_t, t, y) - \varepsilon_\theta(x_t, t, \varnothing)\big).$$
#
# $w = 1$ is the plain conditional model, $w > 1$ pushes samples towards what makes them look like class $y$, at the cost of
# variety. Both halves run in one batched forward pass.

# %%
by_guidance = {w: score(steps=25, guidance=w)["accuracy"] for w in (0.0, 1.0, 2.0, 4.0)}
for w, acc in by_guidance.items():
    print(f"guidance {w}: {acc:.0%} read as the requested digit")
assert by_guidance[0.0] < 0.3 < by_guidance[1.0] <= by_guidance[2.0]

# %% [markdown]
# ## 11. Sharper than the VAE — measured
#
# Chapter 2 claimed that diffusion samples are sharper than VAE samples. FID-LeNet measures it: the Fréchet distance between
# feature statistics of real and generated digits, in the feature space of the course's own LeNet classifier (not the Inception
# network of the standard FID, so the numbers are only comparable with each other). Lower is better; two halves of the real
# test set give the floor.

# %%
vae = load_model("vae-mnist")
n = 200 if FAST else 1000
labels = torch.arange(n) % 10
ddpm_scores = evaluate_samples(to_uint8(model.sample(n, torch.Generator().manual_seed(0), labels=labels)), labels)
vae_scores = evaluate_samples(to_uint8(vae.sample(n, torch.Generator().manual_seed(0))))
print(f"FID-LeNet, {n} samples: DDPM {ddpm_scores['fid_lenet']:.2f}   VAE {vae_scores['fid_lenet']:.2f}   "
      f"real-vs-real floor {ddpm_scores['real_floor']:.2f}")
assert ddpm_scores["fid_lenet"] < 2 * ddpm_scores["real_floor"] < vae_scores["fid_lenet"]

# %% [markdown]
# ## 12. Train it yourself
#
# `minilineage train ddpm-mnist` trains the shipped model: 5,000 steps in 12 minutes on 2 CPU cores. What made that fast enough, each
# measured while building the recipe: the 2×2 patching above (about 2× faster per step), EMA weights, a cosine schedule, a warm-up and
# cosine-decayed learning rate of 2e-3 with AdamW, and label dropout for guidance. Fast mode runs 30 steps.
#
# How quality grows with training time. `minilineage train ddpm-mnist --keep-every 500` keeps the EMA weights every 500 steps;
# each snapshot then drew 500 digits (`minilineage sample SNAPSHOT --n 500 --labels 0-9 --steps 50 --guidance 2`) scored by
# `minilineage eval` (2 CPU cores, nothing else running):
#
# | steps | training minutes | classified as asked | FID-LeNet (floor 50) |
# |---:|---:|---:|---:|
# | 500 | 1.1 | 21 % | 604 |
# | 1,000 | 2.3 | 47 % | 287 |
# | 1,500 | 3.6 | 75 % | 131 |
# | 2,000 | 4.8 | 89 % | 71 |
# | 2,500 | 5.9 | 96 % | 55 |
# | 3,000 | 7.1 | 98 % | 53 |
# | 4,000 | 9.4 | 99 % | 58 |
# | 5,000 | 12.0 | 99 % | 65 |
#
# Two things to notice. Recognisable, correctly-classed digits arrive after about five minutes. And FID-LeNet at guidance 2 is
# best around 3,000 steps and then creeps up while accuracy keeps rising. It is the guidance, not the model, getting worse: at
# guidance 1 the same snapshots improve from FID-LeNet 104 (79 % correct) at 3,000 steps to 68 (88 %) at 5,000. As the
# conditional model gets better it needs less pushing, and guidance 2 starts to trade the variety of real digits (which FID
# counts) for ever more typical ones. The best guidance scale falls as training goes on.

# %%
result = train_with_plot("ddpm-mnist", steps=30 if FAST else None, out=None, progress=not FAST, evaluate=not FAST)
print(f"{result.record['step']} steps in {result.record['wall_time_s']} s; final loss {result.record['history'][-1][1]:.3f}")

# %% [markdown]
# ## Exercises
#
# Run an exercise's cell to check your answer; `show_solution("ch3.alpha_bar_T")` (with the exercise's name) prints the
# reference answer.
#
# **Exercise 1.** With the linear schedule ($T = 1000$), what is $\bar\alpha_t$ at the last step, to 2 significant digits? How much of the
# original image's amplitude ($\sqrt{\bar\alpha_T}$) is left?

# %%
alpha_bar_T = None  # a number
exercise("ch3.alpha_bar_T", alpha_bar_T)

# %% [markdown]
# **Exercise 2.** Given $x_t$ and the true noise $\varepsilon$, recover $x_0$ without calling `predict_x0`: write a
# function of `(sched, xt, t, eps)` for images (B, C, H, W) and timesteps t (B,). The check tries it at several t.

# %%
my_x0 = None  # def my_x0(sched, xt, t, eps): ...
exercise("ch3.x0_from_noise", my_x0)

# %% [markdown]
# **Exercise 3.** The network's $\hat x_0$ estimates $\mathbb{E}[x_0 \mid x_t]$, the *average* of the clean images that could have
# produced $x_t$; that is why a single $\hat x_0$ at large $t$ is a blur. Averaging those estimates over many $x_t$ made
# from real threes should therefore give back the average three (the tower property:
# $\mathbb{E}_{x_t}\big[\mathbb{E}[x_0 \mid x_t]\big] = \mathbb{E}[x_0]$). Write a function of `(model, x0, t, y, generator)` that
# noises the batch `x0` to step `t` with `q_sample` (noise drawn with `generator`), predicts $\hat x_0$ with the
# model's $\hat\varepsilon$ for label `y`, and returns the mean of the predictions, shape (C, H, W). The check runs it
# on 400 training threes at $t = 800$ and compares with their mean image.
#
# Then call your function at $t = 999$. What happens, and why? ($\bar\alpha_{999} \approx 2 \cdot 10^{-9}$, so dividing by
# $\sqrt{\bar\alpha_t}$ multiplies any error in $\hat\varepsilon$ by about 20,000; the samplers clip $\hat x_0$ for this reason.)

# %%
my_mean_x0_hat = None  # def my_mean_x0_hat(model, x0, t, y, generator): ...
exercise("ch3.mean_x0_hat", my_mean_x0_hat)

# %% [markdown]
# ## What goes wrong, and what comes next
#
# DDPM samples are sharp, and guidance makes them follow the label. But every one of the (tens to thousands of) steps runs the
# full network on a full-size image: the cost is steps × pixels. For 28×28 digits that is fine; for 512×512 photos it is not.
# Latent diffusion (Chapter 4) runs the same process in the small latent space of an autoencoder, and replaces the label by
# text through cross-attention.
