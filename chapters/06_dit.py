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
# # Chapter 6 — The Diffusion Transformer: the U-Net gives way to a transformer
#
# Chapter 4 ran diffusion in the latent space of a VAE with a U-Net as the denoiser; Chapter 5 turned an image into a
# sequence of patch tokens that a plain transformer reads. The Diffusion Transformer (DiT, Peebles & Xie 2023) puts
# the two together: keep the VAE, keep DDPM, and swap the U-Net for a Vision Transformer that works on the latent's
# patches. In one line, **DiT = VAE encoder + ViT + DDPM + VAE decoder**. The reason to make the swap is not that a
# transformer denoises better at a given size (on our digits it does not), but that its quality keeps improving
# as it is made bigger, in a predictable way, the property that made language models grow. Sora is a DiT.
#
# **You will learn**
# 1. what changes when a ViT becomes a denoiser: a timestep and a label to read, and an image to give back;
# 2. adaLN-Zero, the way DiT feeds in the condition, and why a freshly built block is exactly the identity (checked);
# 3. how adaLN-Zero compares with the other ways of conditioning a transformer (in-context tokens,
#    cross-attention, plain adaLN), on short measured runs;
# 4. a scaling study you can rerun: three model sizes × two patch sizes, quality against GFLOPs, as DiT's Figure 2;
# 5. DiT against the U-Nets of Chapters 3 and 4: parameters, compute, training speed, sample quality;
# 6. what a small DiT should predict: the noise $\epsilon$ (DDPM), $v$, or the straight-path velocity of rectified
#    flow, the objective SD3, Open-Sora 1.2 and Movie Gen moved to; derived in a few lines, trained on the same DiT,
#    and measured against DDIM at every number of sampling steps.
#
# Every model here was trained by the package's own recipes and ships in `assets/checkpoints/` with a record of the
# command, time and scores; section 10 retrains them. Two findings first, since they shape the chapter. DiT's own
# recipe (noise prediction, its initialisation) did **not** learn digits in a CPU budget of minutes: an earlier
# version of this chapter shipped a DiT whose samples were patchworks of 4 × 4 blocks, 11 % read as the digit asked
# for. Two changes fixed it, each measured here: the conditioning vector starts at unit scale (section 2), and the
# network predicts $v$ or a flow velocity instead of the noise (section 6). The shipped `dit-mnist` works on 28 × 28
# pixels cut into 4 × 4 patches, where the patch size is free to vary for the scaling study; the latent version,
# DiT proper, is the recipe `dit-mnist-latent`.

# %%
import time

import torch
from IPython.display import Image, display
from matplotlib.figure import Figure

import minilineage
from minilineage.bench import count_flops
from minilineage.checkpoint import load_model
from minilineage.checks import claim
from minilineage.data import load_dataset
from minilineage.diffusion import DiffusionPipeline, PipelineConfig
from minilineage.diffusion.flow import flow_timesteps, flow_xt
from minilineage.exercises import exercise, show_solution  # noqa: F401  (show_solution: section 11)
from minilineage.layers import patchify
from minilineage.models.dit import DIT_SIZES, DiT, DiTBlock, DiTConfig, modulate
from minilineage.models.dit_variants import AdaLNDiT
from minilineage.recipes import get_recipe
from minilineage.recipes.dit import CONDITIONING, OBJECTIVES, SCALING_PATCHES, SCALING_SIZES, study_records
from minilineage.widgets import figure_png, grid, png_bytes, token_player, train_with_plot

FAST = minilineage.chapter_setup()  # MINILINEAGE_FAST=1 (CI) keeps training and timing cells short
RETRAIN_STUDIES = False  # True: retrain the 13 short study runs of sections 3, 5 and 6 here (about 35 CPU-minutes)
torch.set_grad_enabled(False)
dit = load_model("dit-mnist", expect=DiffusionPipeline)  # DiT-XS/4 on pixels, v objective
x_test = load_dataset("mnist-5k", "test").float_images()  # (500, 1, 28, 28) in [-1, 1]
print(dit.net.config)

# %% [markdown]
# ## 1. From U-Net to transformer
#
# The U-Net of Chapters 3 and 4 is built for images: convolutions see a small neighbourhood, and down- and
# up-sampling give it several resolutions. A ViT knows nothing of images: it reads $N$ tokens, and every token can
# look at every other from the first layer on. Three changes turn Chapter 5's ViT classifier into a denoiser
# $\epsilon_\theta(z_t, t, y)$:
#
# 1. **Input**: the noisy image $x_t$ cut into $p \times p$ patches, as in Chapter 5. In DiT proper $x_t$ is a VAE
#    latent (Chapter 4's is 4 × 7 × 7: with $p = 1$, 49 tokens of 4 numbers); our `dit-mnist` cuts 28 × 28 pixels into
#    $p = 4$ patches, also 49 tokens, of 16 numbers each. Fixed 2-D sin-cos positions are added.
# 2. **Condition**: the timestep $t$ and the class $y$ are embedded and summed into one vector $c$ per image, and $c$
#    steers every block (section 2).
# 3. **Output**: no class token and no pooling. A final layer maps every token back to $p \cdot p \cdot C$ numbers,
#    and un-patchifying gives $\hat\epsilon$ with the shape of $z_t$.
#
# Training and sampling do not change: the same `DiffusionPipeline`, the forward process of Ho et al. 2020 (on
# $z_0 = \text{encode}(x)$ when there is a VAE), DDIM (Song et al. 2021, Eq. 12) and classifier-free guidance (Ho &
# Salimans 2022, Eq. 6). Only the network inside is new, and one choice that Chapter 3 could leave at its default:
# what the network is asked to predict (section 6).

# %%
x0 = x_test[:8]  # (8, 1, 28, 28): what this DiT denoises (a latent DiT would take dit.encode(x) instead)
tokens, grid_hw = patchify(x0, dit.net.config.patch)  # (8, 49, 16) on a (7, 7) grid
t = torch.full((8,), 500)
eps_hat = dit.net(x0, t, y=torch.arange(8))  # (8, 1, 28, 28): tokens in, a noise estimate of the input's shape out
print(f"image {tuple(x0.shape[1:])} -> {tokens.shape[1]} tokens of {tokens.shape[2]} numbers on a {grid_hw} grid"
      f" -> eps_hat {tuple(eps_hat.shape[1:])}")


# %%
def gflops(net, shape, **cond) -> float:
    """GFLOPs of one forward pass of a denoiser on one input of `shape` (counted by torch's FLOP counter)."""
    return count_flops(lambda: net(torch.zeros(1, *shape), torch.tensor([500]), **cond)) / 1e9


unets = {name: load_model(name, expect=DiffusionPipeline) for name in ("ddpm-mnist", "ldm-mnist")}
denoisers = {
    "ddpm-mnist: U-Net on 28x28 pixels": (unets["ddpm-mnist"].net, (1, 28, 28), {"y": torch.tensor([3])}),
    "ldm-mnist: U-Net on 4x7x7 latents (text)": (unets["ldm-mnist"].net, (4, 7, 7),
                                                 unets["ldm-mnist"].conditioning(1, prompt="a handwritten three")),
    "dit-mnist: DiT-XS/4 on 28x28 pixels": (dit.net, (1, 28, 28), {"y": torch.tensor([3])}),
}
cost = {}
for name, (net, shape, cond) in denoisers.items():
    cost[name] = {"parameters": sum(p.numel() for p in net.parameters()), "gflops": gflops(net, shape, **cond)}
    print(f"{name:42s} {cost[name]['parameters'] / 1e6:5.2f} M parameters  {cost[name]['gflops']:.4f} GFLOPs per forward")

# %% [markdown]
# The DiT has fewer parameters than either U-Net, but each weight is applied at all 49 tokens, so its FLOPs per
# call land between the latent U-Net's and the pixel U-Net's. Section 6 compares what each buys.
#
# ## 2. adaLN-Zero: how the condition gets in
#
# Chapter 3's U-Net added the time embedding to its feature maps; Chapter 4's read text through cross-attention.
# DiT's choice (Peebles & Xie 2023, Sec. 3.2 and Fig. 3) is *adaptive layer norm*: the LayerNorms in each block lose
# their own learnt scale and shift, and get them from the condition instead. One linear layer per block reads
# $c = \text{emb}(t) + \text{emb}(y)$ and gives six vectors of width $D$:
#
# $$(\beta_1, \gamma_1, \alpha_1, \beta_2, \gamma_2, \alpha_2) = W\,\text{SiLU}(c) + b,$$
# $$x \leftarrow x + \alpha_1 \odot \text{Attn}\big(\text{LN}(x)\,(1 + \gamma_1) + \beta_1\big), \qquad
#   x \leftarrow x + \alpha_2 \odot \text{MLP}\big(\text{LN}(x)\,(1 + \gamma_2) + \beta_2\big).$$
#
# $\beta$ shifts, $\gamma$ scales ("FiLM", Perez et al. 2018), and $\alpha$ *gates* each residual branch. The "Zero":
# $W$ and $b$ start at zero, so every gate starts at $\alpha = 0$ and every branch is closed, and the final layer (an
# adaLN + linear map back to patches) starts at zero too. A new DiT is therefore a stack of identity maps that predicts
# $\hat\epsilon = 0$ whatever it is given, and training opens each branch only as far as it helps. Goyal et al. (2017)
# did the same for ResNets by zeroing the last batch-norm scale of each block, and Peebles & Xie found it
# clearly better than opening the branches from the start.
#
# `DiT.initialize_weights` gathers all of this in one commented function. The checks below build a new DiT:

# %%
torch.manual_seed(0)
x, c = torch.randn(4, 49, 64), torch.randn(4, 1, 64)  # tokens (B, N, D) and a condition vector per image (B, 1, D)
fresh_dit = DiT(DiTConfig(in_channels=1, patch=4, **DIT_SIZES["XS"], num_classes=10))
fresh_out = fresh_dit(torch.randn(4, 1, 28, 28), torch.tensor([10, 200, 500, 999]), y=torch.tensor([0, 3, 7, 10]))
fresh_adaln = AdaLNDiT(fresh_dit.config)  # the same modulation, zero-initialised too, but without the gates
# NBVAL_CHECK_OUTPUT
claim("every block of a freshly built DiT returns its input exactly (bit for bit)",
      all(torch.equal(block(x, c), x) for block in fresh_dit.blocks))
claim("a freshly built DiT predicts exactly zero noise for any input, time and label", torch.equal(fresh_out, torch.zeros_like(fresh_out)))
claim("a fresh adaLN block without gates already changes its input (it starts as a plain ViT block)",
      not torch.allclose(fresh_adaln.blocks[0](x, c), x, atol=1e-2))

# %% [markdown]
# Rebuilt by hand, a block is four lines. A `DiTBlock` built on its own keeps PyTorch's default random
# initialisation (the zeros are `DiT.initialize_weights`' job), so its gates are open and every term counts;
# the check compares with the package's `DiTBlock.forward`:

# %%
open_block = DiTBlock(64, heads=4)
shift1, scale1, gate1, shift2, scale2, gate2 = open_block.adaLN_modulation(c).chunk(6, dim=-1)  # (B, 1, D) each
by_hand = x + gate1 * open_block.attn(open_block.norm1(x) * (1 + scale1) + shift1)  # (B, N, D)
by_hand = by_hand + gate2 * open_block.mlp(modulate(open_block.norm2(by_hand), shift2, scale2))  # (B, N, D)
# NBVAL_CHECK_OUTPUT
claim("the four lines by hand equal DiTBlock.forward (to 1e-5)", torch.allclose(by_hand, open_block(x, c), atol=1e-5))

# %% [markdown]
# Zero gates say nothing about how large $c$ itself should start. DiT draws the label table and the time MLP's
# weights at standard deviation 0.02, a choice made at width 1152, where $c$ still starts near 0.2 per channel. At our
# width of 64 the same numbers give a $c$ more than ten times smaller (below), and the gradient that reaches the label through
# the zeroed modulation layers is smaller still. Trained for minutes with that initialisation, an earlier `dit-mnist`
# ended with a label table that had barely moved (standard deviation 0.02 → 0.05, against 1.5 for the time embedding):
# swapping every label for a wrong one changed its loss by less than 1 %, and its samples ignored the label.
# `DiT.initialize_weights` therefore starts $c$ at unit scale (PyTorch's default for the time MLP, $\mathcal N(0, 1)$
# for the label table), which keeps every property checked above. The two initialisations, on a fresh DiT-XS:

# %%
def condition_scale(net: DiT) -> float:
    """Standard deviation of c = emb(t) + emb(y) over ten (t, y) pairs of a network."""
    return net.condition(torch.arange(0, 1000, 100), torch.arange(10), (7, 7)).std().item()


dit_style = DiT(fresh_dit.config)
torch.nn.init.normal_(dit_style.label_embed.weight, std=0.02)  # DiT's initialisation, for comparison
for layer in (dit_style.time_embed.mlp[0], dit_style.time_embed.mlp[2]):
    torch.nn.init.normal_(layer.weight, std=0.02)
scales = {"DiT's std 0.02": condition_scale(dit_style), "ours (unit scale)": condition_scale(fresh_dit)}
print(", ".join(f"{name}: std of c = {value:.3f}" for name, value in scales.items()))

# %%
# NBVAL_CHECK_OUTPUT
claim("at width 64, DiT's initialisation starts c over 10x smaller than ours",
      scales["ours (unit scale)"] > 10 * scales["DiT's std 0.02"])

# %% [markdown]
# What did training do with the gates? Below, the mean $|\alpha|$ of each block of the trained `dit-mnist`, at a
# nearly clean step ($t = 50$) and a nearly pure-noise one ($t = 950$), averaged over the ten labels. The condition
# sets how much each branch contributes: the same weights behave as a different network at each noise level.

# %%
labels10 = torch.arange(10)
gates = {}
for t_value in (50, 950):
    cond = dit.net.condition(torch.full((10,), t_value), labels10, grid_hw)  # (10, 1, D)
    rows = []
    for block in dit.net.blocks:
        _, _, gate_attn, _, _, gate_mlp = block.adaLN_modulation(cond).chunk(6, dim=-1)  # (10, 1, D) each
        rows.append((gate_attn.abs().mean().item(), gate_mlp.abs().mean().item()))
    gates[t_value] = rows
print("block   mean |gate| attention   (t=50, t=950)   mean |gate| MLP   (t=50, t=950)")
for i, (early, late) in enumerate(zip(gates[50], gates[950], strict=True)):
    print(f"  {i}              {early[0]:.3f}, {late[0]:.3f}                     {early[1]:.3f}, {late[1]:.3f}")

# %% [markdown]
# ## 3. Four ways to condition a transformer, compared
#
# Peebles & Xie compared four designs (their Fig. 3 and 5), each in `minilineage.models.dit_variants`:
#
# | variant | how $t$ and $y$ get in | class |
# | --- | --- | --- |
# | in-context | two extra tokens in the sequence, read by plain ViT blocks, dropped at the end | `InContextDiT` |
# | cross-attention | two tokens the image tokens attend to after self-attention (as Chapter 4 read text) | `CrossAttentionDiT` |
# | adaLN | shift and scale of every LayerNorm from $c$, no gates | `AdaLNDiT` |
# | adaLN-Zero | the same, plus zero-initialised gates | `DiT` |
#
# Everything else is shared: patches, positions, embeddings, width 64, 4 blocks, 7 × 7 patches on pixels (16 tokens,
# so each run is short), 1,000 steps of batch 64 with rectified flow (the objective that learns fastest here, section
# 6), and the same score: 250 samples with 10 Euler steps, FID-LeNet and the
# share LeNet reads as the digit asked for. These are short runs, so they show which design *learns faster*, as DiT's
# Figure 5 does, not where each ends up. The results were made with `minilineage train dit-cond-VARIANT` (each
# record holds its exact command line); only the records ship, as `assets/checkpoints/dit-cond-*.json`, not the
# weights. `RETRAIN_STUDIES = True` at the top trains the four again here.

# %%
cond_runs = study_records([f"dit-cond-{v}" for v in CONDITIONING], retrain=RETRAIN_STUDIES)
print(f"{'variant':12s} {'class':18s} {'params':>8s} {'GFLOPs':>8s} {'FID-LeNet':>10s} {'accuracy':>9s} {'train s':>8s}")
cond_scores = {}
for variant, cls in CONDITIONING.items():
    record = cond_runs[f"dit-cond-{variant}"]
    net = get_recipe(f"dit-cond-{variant}").build().net
    cond_scores[variant] = record["metrics"]
    print(f"{variant:12s} {cls:18s} {record['parameters']:8d} {gflops(net, (1, 28, 28), y=torch.tensor([3])):8.4f} "
          f"{record['metrics']['fid_lenet']:10.1f} {record['metrics']['accuracy']:9.3f} {record['wall_time_s']:8.0f}")
print("command:", cond_runs["dit-cond-adaln-zero"]["command"], "(and the same for each variant)")

# %%
fid = {variant: scores["fid_lenet"] for variant, scores in cond_scores.items()}
# NBVAL_CHECK_OUTPUT
claim("adaLN-Zero has the lowest FID-LeNet of the four after the same 1,000 steps", min(fid, key=fid.get) == "adaln-zero")
claim("the zero-initialised gates help: adaLN-Zero beats plain adaLN", fid["adaln-zero"] < fid["adaln"])
claim("in-context conditioning (two extra tokens) learns slowest of the four", max(fid, key=fid.get) == "incontext")

# %% [markdown]
# adaLN-Zero comes first, as in DiT's Fig. 5, and in-context tokens last; plain adaLN and cross-attention land close
# together between them (DiT had cross-attention behind both adaLN variants; at 1,000 short steps and one seed, a
# difference this small is within what another seed could change). After so few steps every model still draws rough
# shapes, and the best reads the asked-for digit only about a fifth of the time; these runs show which design
# *learns faster*, not where each ends. The gate matters even this early: the only difference between the
# adaLN-Zero and adaLN rows is the zero-initialised $\alpha$, and the model that starts as the identity is ahead. As
# for cost: the modulation layers give the adaLN variants the most parameters, but they run once per image, not once
# per token, so they add almost no FLOPs; cross-attention adds a second attention to every block, and in-context
# conditioning makes the sequence two tokens longer.
#
# ## 4. Samples, and the reverse process as tokens
#
# The shipped `dit-mnist` ($v$-prediction, 16,000 steps of batch 64, about 11 minutes on two CPU cores; its record
# gives the time and scores), two samples of every digit with 25 DDIM steps and its guidance scale, 1.5. They are
# digits, and the asked-for ones; look closely and you still see the price of 4 × 4 patches: rough strokes, and
# edges that do not always meet at a patch boundary (section 8 compares them with the U-Net's).
#
# Guidance 1.5 rather than the 2 of the U-Nets and of this chapter's short studies is itself a measured choice: the
# better trained a model, the less guidance it wants. After 8,000 steps this DiT scored best at 2 (FID-LeNet 86, at
# 1.5 92); after 16,000 steps at 1.4–1.5 (58–60, and 92 at 2), with 500 samples and 50 steps each.

# %%
generator = torch.Generator().manual_seed(0)
samples = dit.sample(20, generator, labels=torch.arange(20) % 10, steps=25)  # (20, 1, 28, 28)
display(Image(png_bytes(grid(samples, nrow=10), scale=2)))
record = study_records(["dit-mnist"])["dit-mnist"]
metrics = record["metrics"]
print(f"record: {record['command']} | {record['step']} steps, {record['wall_time_s']:.0f} s on {record['device']} | "
      f"FID-LeNet {metrics['fid_lenet']} (real digits at the same n: {metrics['real_floor']}), "
      f"accuracy {metrics['accuracy']} ({metrics['samples']} samples, {metrics['steps']} steps)")

# %% [markdown]
# A DiT never sees an image, only its grid of 49 tokens. The player runs one reverse process and shows, at each
# step, the noisy input $x_t$ as tokens and the model's current guess of the clean image $\hat x_0$, cut along the same
# token boundaries. Early on every token holds a blur of "some digit"; the grid then sharpens token by token. (For a
# latent DiT the player draws each latent position as a 2 × 2 square of its four channels, and decodes the guess.)
# The frames are computed once, so the player also works in the exported page without a kernel.

# %%
token_player(dit, labels=(0, 3, 7), steps=10 if FAST else 25)

# %% [markdown]
# ## 5. A scaling study you can rerun
#
# DiT's central result (their Figure 2 and Sec. 5) is that sample quality follows compute: make the model wider and
# deeper, or cut the image into smaller patches (more tokens, same parameters), and FID improves with the GFLOPs of a
# forward pass, whichever of the two supplies them. Here is the same experiment at a size a CPU can run: three sizes
# (XXS: width 32, 2 blocks; XS: 64, 4; S: 96, 6) × two patch sizes on 28 × 28 pixels (7 × 7 patches give 16 tokens,
# 4 × 4 give 49), all six trained the same way: 1,000 steps of batch 64 with rectified flow, scored on 250 samples
# with 10 Euler steps. The
# results come from `minilineage train dit-scale-SIZEPATCH` (for example `dit-scale-XS4`; the records, shipped as
# `assets/checkpoints/dit-scale-*.json`, hold each exact command); `RETRAIN_STUDIES = True` reruns the six here.

# %%
scale_names = [f"dit-scale-{size}{p}" for size in SCALING_SIZES for p in SCALING_PATCHES]
scale_runs = study_records(scale_names, retrain=RETRAIN_STUDIES)
points = []
for size in SCALING_SIZES:
    for p in SCALING_PATCHES:
        record = scale_runs[f"dit-scale-{size}{p}"]
        net = get_recipe(f"dit-scale-{size}{p}").build().net
        points.append({"model": f"DiT-{size}/{p}", "size": size, "patch": p, "gflops": gflops(net, (1, 28, 28), y=torch.tensor([3])),
                       "fid": record["metrics"]["fid_lenet"], "accuracy": record["metrics"]["accuracy"],
                       "params": record["parameters"], "seconds": record["wall_time_s"]})
print(f"{'model':10s} {'params':>8s} {'GFLOPs':>8s} {'FID-LeNet':>10s} {'accuracy':>9s} {'train s':>8s}")
for q in points:
    print(f"{q['model']:10s} {q['params']:8d} {q['gflops']:8.4f} {q['fid']:10.1f} {q['accuracy']:9.3f} {q['seconds']:8.0f}")
print("command:", scale_runs["dit-scale-XS4"]["command"], "(and the same for each model)")

# %%
figure = Figure(figsize=(6.5, 3.6), dpi=100, layout="constrained")
ax = figure.add_subplot()
for p, marker in zip(SCALING_PATCHES, ("o", "s"), strict=True):
    mine = [q for q in points if q["patch"] == p]
    ax.plot([q["gflops"] for q in mine], [q["fid"] for q in mine], marker=marker, lw=1.5, ms=8, label=f"patch {p}")
    for q in mine:
        ax.annotate(q["size"], (q["gflops"], q["fid"]), textcoords="offset points", xytext=(6, 4), fontsize=10)
ax.set_xscale("log"), ax.set_yscale("log")
ax.set_xlabel("GFLOPs per forward pass (log)", fontsize=12), ax.set_ylabel("FID-LeNet (log; lower is better)", fontsize=12)
ax.legend(fontsize=11)
display(Image(figure_png(figure)))

# %%
by_gflops = sorted(points, key=lambda q: q["gflops"])
# NBVAL_CHECK_OUTPUT
claim("the study has 6 measured points (3 sizes x 2 patch sizes)", len(points) == 6)
claim("every step up in GFLOPs lowers FID-LeNet, across all six models",
      all(a["fid"] > b["fid"] for a, b in zip(by_gflops[:-1], by_gflops[1:], strict=True)))
claim("the most compute, DiT-S/4, also reads the asked-for digit most often",
      max(points, key=lambda q: q["accuracy"])["model"] == by_gflops[-1]["model"] == "DiT-S/4")

# %% [markdown]
# The trend is DiT's, point for point: more GFLOPs per forward pass, lower FID, and it hardly matters whether the
# GFLOPs come from a bigger model or from smaller patches. DiT-XS/4 and DiT-S/7 spend almost the same compute in
# different ways (49 narrow tokens against 16 wide ones) and land close together, and the same parameters cut into
# smaller patches always win (every size is better at patch 4 than at patch 7). These are short runs, one seed
# each, and no point is yet near real digits (66 at this n); DiT's Figure 2 compares models after 400,000 steps.
# What the study does show, on a CPU in about ten minutes, is the property that made DiT worth building: quality
# follows compute smoothly, so a bigger budget buys a predictable improvement. `RETRAIN_STUDIES = True` and a larger
# `steps` in the recipes let you test how far the line continues.

# %% [markdown]
# ## 6. What should a DiT predict? The noise, $v$, or a velocity
#
# Chapter 3's network predicted the noise, and the sampler turned that into a guess of the clean image,
#
# $$\hat x_0 = \frac{x_t - \sqrt{1 - \bar\alpha_t}\,\hat\epsilon}{\sqrt{\bar\alpha_t}}
#   \quad\Longrightarrow\quad \hat x_0 - x_0 = -\sqrt{\frac{1 - \bar\alpha_t}{\bar\alpha_t}}\,(\hat\epsilon - \epsilon)
#   = -\frac{\hat\epsilon - \epsilon}{\sqrt{\text{SNR}(t)}} .$$
#
# At high noise the factor $1/\sqrt{\text{SNR}}$ is large (computed below), so an $\epsilon$-model must reproduce
# $x_t$ almost exactly there, only to subtract it again, and what is left, the digit, is a small difference of two
# large numbers. That is also where the label matters most: at $t = 900$ only the label says which digit to draw.
# The U-Net copes, because its convolutions pass every pixel through and its output convolution sees neighbours. A
# small DiT rebuilds each 4 × 4 patch of $\hat\epsilon$ from one token that a LayerNorm has just rescaled, and its
# errors come out patch by patch: amplified, they became the patchwork samples of the chapter's first version.
#
# Two other targets avoid the division. **$v$-prediction** (Salimans & Ho 2022) asks for
# $v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1 - \bar\alpha_t}\,x_0$, which is $\epsilon$ at low noise and $-x_0$ at high
# noise, and gives $\hat x_0 = \sqrt{\bar\alpha_t}\,x_t - \sqrt{1 - \bar\alpha_t}\,\hat v$ with no division (the forward
# process and DDIM stay as they are; Chapter 3 met it too). **Rectified flow** changes the path itself (its velocity is
# also written $v$ in the papers: the same letter, another quantity):
#
# DDPM's forward process $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1 - \bar\alpha_t}\,\epsilon$ moves along a curve
# (with the cosine schedule, nearly a quarter circle from $x_0$ to $\epsilon$), and a sampler that follows a curve
# needs many small steps. Rectified flow (Liu et al. 2023; flow matching, Lipman et al. 2023) takes the straight line
# instead, with $t \in [0, 1]$:
#
# $$x_t = (1 - t)\,x_0 + t\,\epsilon, \qquad \frac{dx_t}{dt} = \epsilon - x_0 =: v .$$
#
# A network $v_\theta(x_t, t)$ is trained to predict that velocity, $\mathcal{L} = \mathbb{E}_{t, x_0, \epsilon}
# \lVert (\epsilon - x_0) - v_\theta(x_t, t) \rVert^2$ (Liu et al. 2023, Eq. 1). Many lines pass through one $x_t$, so
# the best it can do is their average, $v^*(x, t) = \mathbb{E}[\epsilon - x_0 \mid x_t = x]$. Sampling integrates
# $dx/dt = v_\theta$ backwards from $x_1 \sim \mathcal{N}(0, I)$ to $t = 0$ with Euler steps,
# $x_{t - \Delta} = x_t - \Delta\, v_\theta(x_t, t)$. Where the lines through $x_t$ agree, the path is straight and an
# Euler step is exact however long it is: that is the promise of fewer sampling steps. SD3 (Esser et al. 2024, Eq. 19)
# also draws $t$ from a logit-normal, $t = \text{sigmoid}(n)$, $n \sim \mathcal{N}(0, 1)$, which spends the training on
# the middle of the path where the velocity is hardest to guess.
#
# In the package the objective is a loss and a sampler (`minilineage.diffusion.flow`), chosen by
# `PipelineConfig.objective = "flow"`; the network is the same DiT, which reads $1000\,t$ as its timestep.
# `dit-mnist-flow` is `dit-mnist` with that one change. A check of the path and its target on real digits:

# %%
flow = load_model("dit-mnist-flow", expect=DiffusionPipeline)
eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
t_mid = torch.full((8,), 0.3)
xt = flow_xt(x0, t_mid, eps)  # (8, 1, 28, 28)
dt = 1e-3
finite_difference = (flow_xt(x0, t_mid + dt, eps) - xt) / dt  # dx_t / dt, measured
# NBVAL_CHECK_OUTPUT
claim("x_t is x0 at t = 0 and eps at t = 1", torch.equal(flow_xt(x0, torch.zeros(8), eps), x0)
      and torch.equal(flow_xt(x0, torch.ones(8), eps), eps))
claim("the path's velocity is eps - x0 at every t (finite difference, to 1e-2)",
      torch.allclose(finite_difference, eps - x0, atol=1e-2))

# %%
snr = dit.sched.alpha_bar / (1 - dit.sched.alpha_bar)  # (T,) of the cosine schedule
print("error of x0_hat per unit error of eps_hat, 1/sqrt(SNR):",
      ", ".join(f"t = {t}: {snr[t].rsqrt().item():.2f}" for t in (100, 500, 800, 900, 990)))

# %% [markdown]
# The objective study: `dit-mnist`'s network and data, for 2,000 steps (an eighth of `dit-mnist`'s) at guidance 2, three
# times, changing only what the DiT predicts; each scored on 250 samples with 10 sampling steps (DDIM for
# $\epsilon$ and $v$, Euler for flow). The records (`minilineage train dit-obj-eps`, ...) ship as
# `assets/checkpoints/dit-obj-*.json`; `RETRAIN_STUDIES = True` reruns them.

# %%
obj_runs = study_records([f"dit-obj-{o}" for o in OBJECTIVES], retrain=RETRAIN_STUDIES)
obj_scores = {o: obj_runs[f"dit-obj-{o}"]["metrics"] for o in OBJECTIVES}
print(f"{'objective':10s} {'FID-LeNet':>10s} {'accuracy':>9s} {'train s':>8s}   (real digits at this n: "
      f"{obj_scores['v']['real_floor']})")
for o, m in obj_scores.items():
    print(f"{o:10s} {m['fid_lenet']:10.1f} {m['accuracy']:9.3f} {obj_runs[f'dit-obj-{o}']['wall_time_s']:8.0f}")
print("command:", obj_runs["dit-obj-eps"]["command"], "(and the same for v and flow)")

# %%
# NBVAL_CHECK_OUTPUT
claim("predicting v or the flow velocity, the DiT reaches less than half the FID-LeNet of predicting eps",
      max(obj_scores["v"]["fid_lenet"], obj_scores["flow"]["fid_lenet"]) < 0.5 * obj_scores["eps"]["fid_lenet"])
claim("and reads the asked-for digit at least 20 points more often",
      min(obj_scores["v"]["accuracy"], obj_scores["flow"]["accuracy"]) > obj_scores["eps"]["accuracy"] + 0.2)

# %% [markdown]
# Same network, same data, same steps: predicting the noise, the DiT is still drawing patchwork (FID-LeNet above
# 1,500, about one digit in six read as asked); predicting $v$ or the flow velocity, it draws digits that LeNet reads
# as asked four times in five, with FID-LeNet less than half. The U-Net of Chapter 3 learnt with $\epsilon$ because
# its convolutions give it the identity map it needs at high noise almost for free; the DiT does not have one, and
# the objective that never asks for it wins. Flow edges out $v$ here, after an eighth of `dit-mnist`'s steps (569 against 675), but the
# two are close, and the shipped models keep both: `dit-mnist` predicts $v$ (a DDPM model: its samplers, DDIM and
# guidance are Chapter 3's), `dit-mnist-flow` is the same network trained with rectified flow (section 7).

# %% [markdown]
# ## 7. Rectified flow: straight paths and fewer steps
#
# How straight are the learnt paths? For 16 samples, the length of the straight chord from start to end divided by
# the length of the path the sampler walked (1 = a straight line), for DDIM on the $v$-DiT and Euler on the
# flow DiT, 10 steps each:

# %%
def straightness(model, steps: int) -> float:
    """Chord / path length of the sampler's trajectory, averaged over 16 samples."""
    _, frames = model.sample(16, torch.Generator().manual_seed(2), labels=torch.arange(16) % 10, steps=steps,
                             trajectory=True)
    path = torch.stack([f["xt"] for f in frames] + [frames[-1]["x0_hat"]])  # (steps + 1, 16, 1, 28, 28)
    walked = (path[1:] - path[:-1]).flatten(2).norm(dim=2).sum(0)  # (16,)
    chord = (path[-1] - path[0]).flatten(1).norm(dim=1)  # (16,)
    return (chord / walked).mean().item()


straight = {"v-DiT, DDIM": straightness(dit, 10), "flow-DiT, Euler": straightness(flow, 10)}
print(", ".join(f"{name}: {value:.3f}" for name, value in straight.items()))
print("flow times of 10 Euler steps:", [round(float(s), 2) for s in flow_timesteps(10)])

# %%
# NBVAL_CHECK_OUTPUT
claim("the flow sampler's paths are nearly straight (chord / path > 0.95); DDIM's bend like the cosine schedule's "
      "quarter circle (within 0.05 of 2 sqrt(2) / pi = 0.90)",
      straight["flow-DiT, Euler"] > 0.95 and abs(straight["v-DiT, DDIM"] - 2 * 2**0.5 / torch.pi) < 0.05)

# %% [markdown]
# A chord-to-path ratio of 1 is a straight line. DDIM on the $v$-model walks about 0.90 of a straight path's
# efficiency, the quarter circle of the cosine schedule ($2\sqrt 2/\pi \approx 0.90$ when $x_0$ and $\epsilon$ are
# orthogonal and equally long); the flow model's paths are at about 0.98. They are not perfectly
# straight: the network learns the *average* velocity of all lines through a point, and averaging bends the paths
# (the "reflow" step of Liu et al. straightens them further by retraining on the model's own pairs).
#
# Quality against the number of sampling steps, from the two models' records: each recipe's evaluation samples 250
# digits from the same starting noise at 5, 10, 25 and 50 steps (DDIM for $v$, Euler for flow).
# Open-Sora 1.2 reports that rectified flow let it cut sampling from 100 steps to 30; here is what we measure:

# %%
sweeps = study_records(["dit-mnist", "dit-mnist-flow"])
steps_list = sorted(int(k) for k in sweeps["dit-mnist"]["metrics"]["by_steps"])
by_steps = {name: {k: sweeps[name]["metrics"]["by_steps"][str(k)] for k in steps_list} for name in sweeps}
print(f"{'steps':>5s} | {'v-DiT + DDIM: FID, accuracy':>30s} | {'flow-DiT + Euler: FID, accuracy':>32s}")
for k in steps_list:
    e, f = by_steps["dit-mnist"][k], by_steps["dit-mnist-flow"][k]
    print(f"{k:5d} | {e['fid_lenet']:18.1f}, {e['accuracy']:.3f} | {f['fid_lenet']:20.1f}, {f['accuracy']:.3f}")
figure = Figure(figsize=(6.5, 3.4), dpi=100, layout="constrained")
ax = figure.add_subplot()
for name, label in (("dit-mnist", "v-DiT + DDIM"), ("dit-mnist-flow", "flow-DiT + Euler")):
    ax.plot(steps_list, [by_steps[name][k]["fid_lenet"] for k in steps_list], marker="o", lw=2, label=label)
ax.set_xscale("log"), ax.set_xticks(steps_list, [str(k) for k in steps_list])
ax.set_xlabel("sampling steps", fontsize=12), ax.set_ylabel("FID-LeNet (250 samples)", fontsize=12)
ax.legend(fontsize=11)
display(Image(figure_png(figure)))

# %%
e, f = by_steps["dit-mnist"], by_steps["dit-mnist-flow"]
# NBVAL_CHECK_OUTPUT
claim("the flow-DiT with 10 Euler steps scores a lower FID-LeNet than the v-DiT with 25 DDIM steps",
      f[10]["fid_lenet"] < e[25]["fid_lenet"])
claim("from 5 to 50 steps the flow-DiT's FID-LeNet moves less than the v-DiT's",
      abs(f[5]["fid_lenet"] - f[50]["fid_lenet"]) < abs(e[5]["fid_lenet"] - e[50]["fid_lenet"]))
claim("with 50 steps both are within 1.2x of the real-data level at the same n (real digits against real digits)",
      max(f[50]["fid_lenet"], e[50]["fid_lenet"]) < 1.2 * e[50]["real_floor"])

# %% [markdown]
# Rectified flow does what it promises, even at this size. With 10 Euler steps the flow-DiT scores FID-LeNet 69,
# as the $v$-DiT does with 25 DDIM steps (70; a tie, well inside the spread of a 250-sample FID), and from 5 to 50
# steps it moves only from 73 to 66, where the $v$-DiT starts at 101 with 5 steps and needs 25 to come within 5 % of
# its 50-step score. Open-Sora 1.2 cut sampling from 100 steps to 30 with the same change; here 5 to 10 steps
# already give most of the quality. Both read the asked-for digit 98–99 % of the time, and with 50 steps both are
# within 2 % of the real-data level (66 at this n, where 250 real digits are a noisy reference). Two caveats: each row is one
# training run, and the two objectives also weight the noise levels differently during training (uniform $t$ for
# $v$, logit-normal for flow), so "flow" here means the whole SD3-style recipe, not only the straight path.
#
# Both samplers, 10 steps, the same starting noise (top: $v$-DiT with DDIM; bottom: flow-DiT with Euler):

# %%
rows = [model.sample(10, torch.Generator().manual_seed(3), labels=torch.arange(10), steps=10) for model in (dit, flow)]
display(Image(png_bytes(grid(torch.cat(rows), nrow=10), scale=2)))

# %% [markdown]
# ## 8. DiT against the U-Net
#
# The records of the shipped diffusion models put the two architectures side by side. Training compute is counted
# as three forward passes per training image (the backward pass costs about two), times batch size and steps:

# %%
records = study_records(["ddpm-mnist", "ldm-mnist", "dit-mnist", "dit-mnist-flow"])
rows = [*zip(cost, records.values()), ("dit-mnist-flow: the same DiT, rectified flow", records["dit-mnist-flow"])]
print(f"{'model':42s} {'train TFLOP':>11s} {'steps x batch':>14s} {'wall s':>7s} {'FID (real at same n)':>21s} {'accuracy':>9s}")
for name, record in rows:
    train, m = record["train_config"], record["metrics"]
    gflop = cost[name]["gflops"] if name in cost else cost["dit-mnist: DiT-XS/4 on 28x28 pixels"]["gflops"]
    tflop = 3 * gflop * train["steps"] * train["batch_size"] / 1e3
    print(f"{name:42s} {tflop:11.1f} {train['steps']:>6d} x {train['batch_size']:<5d} {record['wall_time_s']:7.0f} "
          f"{m['fid_lenet']:8.1f} ({m['real_floor']:5.1f}, n={m['n']:4d}) {m['accuracy']:9.3f}")

# %% [markdown]
# Read the table with care. The FIDs of `ddpm-mnist` come from 1,000 samples and those of the DiTs from 500, and
# FID-LeNet falls as n grows, so compare each with its own real-data level in brackets: the U-Net lands at 1.6× it,
# the two DiTs at 1.1–1.2×, and all three read the asked-for digit 99 % of the time. At equal n, on the very draws
# of the DiTs' evaluation (`minilineage sample ddpm-mnist --n 500 --labels 0-9 --steps 50 --seed 0`, then
# `minilineage eval`), the U-Net scores 61.8 at its guidance 2, against 59.8 and 55.7 for the DiTs at their 1.5: a
# tie, since 500 real digits alone vary by ±4. Guidance is part of that result. Given the DiTs' 1.5, the U-Net scores
# 43.2, so at equal guidance it still draws the more realistic digits. Nor is the comparison at matched compute: the
# DiTs had about half of the pixel U-Net's training FLOPs and finished in 11–12 minutes on a 2-core Xeon, against the
# U-Net's 12 on a slower, idle AMD machine (its record's 4,310 s come from one thread of a shared machine); the DiT's
# FLOPs are cheap on a CPU (big matrix products), the U-Net's convolutions less so, as the step timing below shows.
# The latent U-Net of Chapter 4 (34 TFLOP, half the DiTs') scores 118 at n = 1,000, worse than either DiT at
# n = 500, though it solves a harder task (text prompts) through a lossy autoencoder.
#
# What the transformer still lacks at this scale shows in the samples of section 4: speckle, and strokes that break
# at patch boundaries. Each 4 × 4 patch is predicted by its own row of the output layer, and nothing makes
# neighbouring patches agree until attention has learnt to; the U-Net's convolutions get that agreement for free.
# This is the flip side of DiT's result, not a contradiction of it: transformers win *at scale*, when compute rather
# than built-in assumptions limits quality. Peebles & Xie trained for 400,000 steps of batch 256; a CPU run of a few
# minutes is the regime where a convolutional prior is worth the most, and smaller patches (DiT's own lever,
# section 5) are the first thing to try with more compute. The obvious patch for the boundaries does not help at this
# budget: U-ViT's 3 × 3 convolution after the output layer (Bao et al. 2023), with or without a convolutional stem
# before the patches, scored FID-LeNet 116 and 88 after 8,000 steps against the plain DiT's 86 (the measurements are
# recorded in `minilineage/recipes/dit.py`). Twice the steps with less guidance is what took the DiT from 86 to 60.
#
# Training speed at matched size: `ddpm-mnist`'s U-Net and a DiT with about as many parameters (width 88, 4 blocks,
# patch 4), each timed on the same batch of 64 digits (the fastest of a few training steps; your machine's numbers
# will differ, and a busy machine makes both slower):

# %%
def train_step_seconds(denoiser: dict, repeat: int) -> tuple[int, float]:
    """Parameters and the fastest of `repeat` training steps (loss, backward, AdamW) at batch 64 on 28 x 28 digits."""
    torch.manual_seed(0)
    model = DiffusionPipeline(PipelineConfig(denoiser=denoiser, shape=(1, 28, 28)))
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    batch, g = {"x": x_test[:64], "y": torch.arange(64) % 10}, torch.Generator().manual_seed(0)
    times = []
    with torch.enable_grad():
        for _ in range(repeat + 1):  # the first step warms up
            started = time.perf_counter()
            model.loss(batch, g).backward()
            optimizer.step(), optimizer.zero_grad()
            times.append(time.perf_counter() - started)
    return sum(p.numel() for p in model.net.parameters()), min(times[1:])


repeat = 2 if FAST else 5
speed = {"U-Net (ddpm-mnist)": train_step_seconds(unets["ddpm-mnist"].config.denoiser, repeat),
         "DiT width 88, 4 blocks, patch 4": train_step_seconds({"cls": "DiT", "config": {
             "in_channels": 1, "patch": 4, "width": 88, "depth": 4, "heads": 4, "num_classes": 10}}, repeat)}
for name, (params, seconds) in speed.items():
    print(f"{name:32s} {params / 1e6:5.2f} M parameters  {seconds * 1e3:6.0f} ms per step of 64")

# %% [markdown]
# ## 9. Sampling from the command line
#
# The DiT checkpoints sample and evaluate exactly as Chapter 3's DDPM does, e.g.
#
# ```
# minilineage sample assets/checkpoints/dit-mnist.pt --n 1000 --labels 0-9 --steps 50 --out dit.npz
# minilineage sample assets/checkpoints/dit-mnist-flow.pt --n 1000 --labels 0-9 --steps 10 --out flow.npz
# minilineage eval dit.npz
# ```
#
# ## 10. Train it yourself
#
# `train_with_plot` runs the function behind `minilineage train dit-mnist`: 16,000 steps of batch 64 on the 4,500
# `mnist-5k` training digits, AdamW at $10^{-3}$ with warm-up, cosine decay and EMA weights. Fast mode runs 5 steps
# (to show the loop and time a step). The shipped run trained in 692 s (11.5 minutes) on both cores of a 2-core
# Intel Xeon with AVX-512, and its evaluation took about a minute more. CPUs differ more than you might think: the
# 2-core AMD EPYC (AVX2 only) that trained the earlier 8,000-step version needed 645–875 s for half the steps.

# %%
result = train_with_plot("dit-mnist", steps=5 if FAST else None, out=None, progress=not FAST, device="cpu",
                         evaluate=not FAST)
record = result.record
print(f"{record['step']} steps in {record['wall_time_s']} s ({record['wall_time_s'] / record['step']:.2f} s/step) on "
      f"{record['device']}")

# %% [markdown]
# The shipped checkpoints were made with `minilineage train dit-mnist --out assets/checkpoints` and
# `... dit-mnist-flow ...`, one after the other on that machine (their records hold the times). `--preset gpu`
# trains DiT-B/2 (width 128, 8 blocks, 196 tokens) on all 60,000 MNIST digits, and `minilineage train dit-cifar10 --preset gpu`
# a DiT with width 384 and 12 blocks on CIFAR-10 pixels in 2 × 2 patches (256 tokens).
#
# ## 11. Exercises
#
# Run an exercise's cell to check your answer; `show_solution("ch6.euler")` (with the exercise's name) prints the
# reference answer. Try first.
#
# **Exercise 1.** How many parameters does the adaLN-Zero modulation layer of one block have at width $D = 64$?

# %%
my_count = None  # a number
exercise("ch6.adaln_parameters", my_count)

# %% [markdown]
# **Exercise 2.** Write a DiT block's forward pass using a `DiTBlock`'s own modules (`adaLN_modulation`, `norm1`,
# `attn`, `norm2`, `mlp`): a function of `(block, x, c)` with x (B, N, D) and c (B, 1, D). The check opens the gates.

# %%
my_block_forward = None  # def my_block_forward(block, x, c): ...
exercise("ch6.adaln_zero_block", my_block_forward)

# %% [markdown]
# **Exercise 3.** For rectified flow, write a function of `(x0, eps, t)` (x0 and eps (B, C, H, W), t (B,)) that
# returns the training input $x_t$ and its target.

# %%
my_flow_pair = None  # def my_flow_pair(x0, eps, t): return xt, target
exercise("ch6.flow_pair", my_flow_pair)

# %% [markdown]
# **Exercise 4.** Write an Euler sampler: a function of `(v, x, steps)` that starts from `x` at $t = 1$ and takes
# `steps` equal steps down to $t = 0$ along the velocity `v(x, t)` (t a tensor of shape (B,)).

# %%
my_euler = None  # def my_euler(v, x, steps): ...
exercise("ch6.euler", my_euler)

# %% [markdown]
# **Exercise 5 (think).** In section 5, a smaller patch multiplies the tokens, and so the FLOPs, without adding a
# single parameter. Why would that help a denoiser more than a classifier? Look at what the final layer must produce
# from each token at patch 7 and at patch 4.
#
# ## What goes wrong, and what comes next
#
# - A DiT is a ViT that reads $t$ and $y$ through adaLN-Zero: a fresh network is a stack of identities that predicts
#   zero, and training opens each residual branch only as far as it helps. Sampling, guidance and the training loop
#   are unchanged from Chapters 3 and 4.
# - What the transformer gives up is the U-Net's built-in knowledge of images (local filters, several resolutions).
#   At our scale that costs twice. Predicting the noise, as DDPM does, asks a small DiT to rebuild $x_t$ almost exactly
#   at high noise, and it could not: predicting $v$ or a flow velocity fixed it (section 6). And even then its
#   4 × 4 patches leave speckled strokes that the U-Net's convolutions smooth away (section 8). DiT's own results are
#   at 100 to 1,000 times the compute, where the transformer's scaling wins.
# - Rectified flow changes only the loss and the sampler: a straight path and a velocity target, followed with Euler
#   steps. Section 7 measures what it buys in sampling steps.
# - Initialisations are tuned at the size a paper trains: DiT's std-0.02 condition made the label all but invisible
#   at width 64 (section 2). When a published recipe fails small, look for the numbers that were sized for big.
# - An image is one frame. A video is a stack of frames, and Sora's recipe is this chapter's DiT applied to
#   *spacetime* patches: cut a clip (B, F, C, H, W) into patches that span a few frames as well as a few pixels, add
#   3-D positions, and let attention run over space and time at once. `DiT.condition` already accepts one timestep
#   per frame (B, F), and its blocks take any number of tokens: Chapter 7 builds its video DiT on them, with a VAE
#   that compresses time as well as space.
