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
# 5. DiT against the U-Nets of Chapters 3 and 4: parameters, compute, training speed, sample quality, and how
#    much guidance each wants (measured from 1 to 3);
# 6. what a small DiT should predict: the noise $\epsilon$ (DDPM), $v$, or the straight-path velocity of rectified
#    flow, the objective SD3, Open-Sora 1.2 and Movie Gen moved to; why DDIM and the flow's Euler sampler are one
#    sampler, and what really buys rectified flow its fewer steps (measured by swapping the noise levels they visit);
# 7. DiT proper, "VAE encoder + ViT + DDPM + VAE decoder": the same DiT trained on Chapter 4's latents, against the
#    pixel DiT on cost and quality.
#
# Every model here was trained by the package's own recipes and ships in `assets/checkpoints/` with a record of the
# command, time and scores; section 11 retrains them. Two findings first, since they shape the chapter. DiT's own
# recipe (noise prediction, its initialisation) learns digits slowly in a CPU budget of minutes: an earlier
# version of this chapter shipped a DiT whose samples were patchworks of 4 × 4 blocks, and the short studies below
# reproduce it (after 2,000 steps, 16 % of the noise-predicting DiT's samples and 20 % of the DiT-initialised one's
# read as the digit asked for). Two changes, each measured here, make the difference: the network predicts $v$ or a flow velocity instead of
# the noise (section 6), and the conditioning vector starts at unit scale rather than DiT's small one (section 2).
# The shipped `dit-mnist` works on 28 × 28 pixels cut into 4 × 4 patches, where the patch size is free to vary for the
# scaling study; `dit-mnist-latent` is the same DiT on Chapter 4's latents, DiT proper (section 9).

# %%
import math
import time

import torch
from IPython.display import Image, display
from matplotlib.figure import Figure

import minilineage
from minilineage.bench import count_flops
from minilineage.checkpoint import load_model
from minilineage.checks import claim
from minilineage.data import load_dataset
from minilineage.diffusion import DiffusionPipeline, PipelineConfig, ddim_step, eps_from_v, q_sample, v_target
from minilineage.diffusion.flow import (
    ddim_levels,
    euler_levels,
    flow_point,
    flow_time,
    flow_xt,
    logit_normal_t,
)
from minilineage.exercises import exercise, show_solution  # noqa: F401  (show_solution: section 12)
from minilineage.layers import patchify
from minilineage.models.dit import DIT_SIZES, DiT, DiTBlock, DiTConfig, modulate
from minilineage.models.dit_variants import AdaLNDiT, PaperInitDiT
from minilineage.recipes import get_recipe
from minilineage.recipes.dit import (
    CONDITIONING,
    INITS,
    OBJECTIVES,
    SCALING_PATCHES,
    SCALING_SIZES,
    study_records,
)
from minilineage.recipes.dit_studies import GUIDANCE_SCALES, sampling_study
from minilineage.widgets import figure_png, grid, png_bytes, token_player, train_with_plot

FAST = minilineage.chapter_setup()  # MINILINEAGE_FAST=1 (CI) keeps training and timing cells short
RETRAIN_STUDIES = False  # True: retrain the 15 short study runs of sections 2, 3, 5 and 6 here (about 45 CPU-minutes)
RECOMPUTE_SAMPLING = False  # True: redo the sampling studies of sections 4 and 7 (guidance, noise levels; about 25 CPU-minutes)
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
latent_dit = load_model("dit-mnist-latent", expect=DiffusionPipeline)  # DiT-XS/1 on 4 x 7 x 7 latents, v objective
denoisers = {
    "ddpm-mnist: U-Net on 28x28 pixels": (unets["ddpm-mnist"].net, (1, 28, 28), {"y": torch.tensor([3])}),
    "ldm-mnist: U-Net on 4x7x7 latents (text)": (unets["ldm-mnist"].net, (4, 7, 7),
                                                 unets["ldm-mnist"].conditioning(1, prompt="a handwritten three")),
    "dit-mnist: DiT-XS/4 on 28x28 pixels": (dit.net, (1, 28, 28), {"y": torch.tensor([3])}),
    "dit-mnist-latent: DiT-XS/1 on 4x7x7 latents": (latent_dit.net, (4, 7, 7), {"y": torch.tensor([3])}),
}
cost = {}
for name, (net, shape, cond) in denoisers.items():
    cost[name] = {"parameters": sum(p.numel() for p in net.parameters()), "gflops": gflops(net, shape, **cond)}
    print(f"{name:44s} {cost[name]['parameters'] / 1e6:5.2f} M parameters  {cost[name]['gflops']:.4f} GFLOPs per forward")
decoder_gflops = count_flops(lambda: latent_dit.decode(torch.zeros(1, 4, 7, 7))) / 1e9
print(f"{'the latent models: VAE decoder, once per sample':44s} {'':18s}{decoder_gflops:.4f} GFLOPs per sample")
gf = {name.split(":")[0]: c["gflops"] for name, c in cost.items()}

# %%
# NBVAL_CHECK_OUTPUT
claim("dit-mnist needs the fewest FLOPs per call of the pixel U-Net, the latent U-Net and itself: under half of either U-Net's",
      gf["dit-mnist"] < 0.5 * gf["ddpm-mnist"] and gf["dit-mnist"] <= 0.5 * gf["ldm-mnist"])
claim("the DiT on 49 latent tokens costs within 5 % of the DiT on 49 pixel patches: the blocks see the same sequence",
      abs(gf["dit-mnist-latent"] / gf["dit-mnist"] - 1) < 0.05)

# %% [markdown]
# The DiT has fewer parameters than either U-Net, and each weight is applied at only 49 tokens: it is the cheapest of
# the three per call, a third of the pixel U-Net's FLOPs and half the latent U-Net's. On latents it costs the same
# again, since its blocks see the same 49 tokens; only the patch embedding and the output layer shrink (4 numbers a
# token instead of 16), and the decoder runs once per sample, not once per step. Section 8 compares what each buys.
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
# Zero gates say nothing about how large $c$ itself should start. DiT's code (`initialize_weights`) embeds $t$ with 256
# sinusoids and an MLP whose weights are drawn at standard deviation 0.02 with zero biases, and draws the label
# table at 0.02 too. `PaperInitDiT` (in `minilineage.models.dit_variants`) is our DiT initialised exactly that way;
# `DiT.initialize_weights` instead starts $c$ at unit scale (PyTorch's default for the time MLP, $\mathcal N(0, 1)$
# for the label table), which keeps every property checked above. The size of $c$ each gives, on fresh networks at
# our width and at DiT-XL's:

# %%
def condition_scale(net: DiT) -> float:
    """Standard deviation of c = emb(t) + emb(y) over ten (t, y) pairs of a network."""
    return net.condition(torch.arange(0, 1000, 100), torch.arange(10), (7, 7)).std().item()


scales = {}
for width, heads in ((64, 4), (1152, 16)):  # ours; DiT-XL/2's width (one block is enough: c comes before the blocks)
    config = DiTConfig(in_channels=1, patch=4, width=width, depth=1, heads=heads, num_classes=10)
    torch.manual_seed(0)
    scales[width] = {"DiT's (0.02, zero biases)": condition_scale(PaperInitDiT(config)),
                     "ours (unit scale)": condition_scale(DiT(config))}
    print(f"width {width:4d}: std of c " + ", ".join(f"{name} {value:.3f}" for name, value in scales[width].items()))

# %%
# NBVAL_CHECK_OUTPUT
paper = {width: scale["DiT's (0.02, zero biases)"] for width, scale in scales.items()}
claim("DiT's initialisation starts c small at both widths: std under 0.05 at width 64, under 0.15 at 1152",
      paper[64] < 0.05 and paper[1152] < 0.15)
claim("it grows about as sqrt(width): 1152 / 64 = 18x the width gives 2.5x to 6x the std (sqrt 18 = 4.2)",
      2.5 < paper[1152] / paper[64] < 6)
claim("ours starts c at unit scale at both widths (std within 0.1 of 1)", all(abs(s["ours (unit scale)"] - 1) < 0.1
                                                                            for s in scales.values()))

# %% [markdown]
# So DiT's $c$ is small at any width, about 0.08 per channel even at its own 1152 and 0.03 at our 64: the 0.02 is
# not a number sized for big models that fails at small ones, it is a small start everywhere, made about three times
# smaller again at our width. Does a small start matter? With the adaLN layers at zero, the gradient that reaches
# $c$ is zero at the first step, and the gradient that opens those layers is proportional to $\text{SiLU}(c)$; what
# the condition contributes grows as a product of the two, from a start nearly 40 times smaller with DiT's numbers. The
# init study measures what it costs: `dit-obj-v`'s run (2,000 steps, the same network, data and seed) once with each
# initialisation, scored as the other short studies are (250 samples, 10 steps, guidance 2), together with how large
# the label table and the time embedding ended up (`minilineage train dit-init-ours`, `dit-init-paper`; the records
# ship as `assets/checkpoints/dit-init-*.json`). `PaperInitDiT` also has 12,288 more parameters: its time MLP reads
# 256 sinusoids, not 64.

# %%
init_runs = study_records([f"dit-init-{init}" for init in INITS], retrain=RETRAIN_STUDIES)
print(f"{'initialisation':16s} {'FID-LeNet':>10s} {'accuracy':>9s} {'label table std':>16s} {'embed(t) std':>13s} {'train s':>8s}")
init_scores = {init: init_runs[f"dit-init-{init}"]["metrics"] for init in INITS}
for init, m in init_scores.items():
    print(f"{init + ' (' + INITS[init] + ')':16s} {m['fid_lenet']:10.1f} {m['accuracy']:9.3f} {m['label_table_std']:16.3f} "
          f"{m['time_embedding_std']:13.3f} {init_runs[f'dit-init-{init}']['wall_time_s']:8.0f}")
print("command:", init_runs["dit-init-paper"]["command"], "(and dit-init-ours); dit-obj-v, the same run as dit-init-ours:",
      f"FID-LeNet {study_records(['dit-obj-v'])['dit-obj-v']['metrics']['fid_lenet']:.1f}")

# %%
ours, theirs = init_scores["ours"], init_scores["paper"]
# NBVAL_CHECK_OUTPUT
claim("with DiT's initialisation the same run reads the asked-for digit under 30 % of the time, with ours over 70 %",
      theirs["accuracy"] < 0.3 and ours["accuracy"] > 0.7)
claim("and its FID-LeNet is over 1.5x ours", theirs["fid_lenet"] > 1.5 * ours["fid_lenet"])
claim("after 2,000 steps DiT's label table has grown from std 0.02 to under 0.1, while its time embedding is above 1",
      theirs["label_table_std"] < 0.1 and theirs["time_embedding_std"] > 1)

# %% [markdown]
# The short run bears it out. Started from DiT's small condition, the network learnt the timestep (its time
# embedding ends with a std near 2) but barely the label: the label table grew from 0.02 to under 0.1, and the samples
# read as the digit asked for about one time in five, against four in five from the unit-scale start, with FID-LeNet
# twice as high. The time embedding escapes the slow start because the loss depends on $t$ strongly from the first
# step; the label matters only once the network can draw digits at all. So the lesson is not that 0.02 was "sized
# for width 1152" (it starts $c$ small there too), but that a small start costs *training time*, and a budget of
# minutes has little of it. DiT trains 400,000 steps; our 16,000 cannot wait for the label to wake up. When a
# published recipe fails on a small budget, look for what it can afford to learn slowly.
#
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
# Guidance 1.5 rather than the 2 of the U-Nets and of this chapter's short studies is a measured choice; the sweep at
# the end of this section shows what each scale gives.

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
# **How much guidance?** Classifier-free guidance (Chapter 4) mixes the conditional and unconditional predictions,
# $\hat\epsilon = \hat\epsilon_\varnothing + w\,(\hat\epsilon_y - \hat\epsilon_\varnothing)$: $w = 1$ is the plain
# conditional model, larger $w$ pushes every sample towards what is typical of its class. The DiT paper's headline
# FID (2.27) is at $w = 1.5$; FID rewards samples as varied as the real data, and too much guidance trades that variety
# for typical digits. The sweep: every shipped class-conditional diffusion model at five scales, 500 samples each with
# its own 50 steps, drawn and scored as the DiTs' evaluation draws them (`python -m minilineage.recipes.dit_studies
# guidance` wrote the record, `assets/studies/guidance.json`; `RECOMPUTE_SAMPLING = True` redoes it here). FID-LeNet
# on the left (the gray band: 500 real digits against the test digits, mean ± one std over five draws), the share
# LeNet reads as the digit asked for on the right:

# %%
guidance_record = sampling_study("guidance", recompute=RECOMPUTE_SAMPLING)
sweep = guidance_record["results"]
models_swept = list(sweep)
print(f"{'guidance':>8s} | " + " | ".join(f"{name:>17s}" for name in models_swept))
for w in map(str, GUIDANCE_SCALES):
    print(f"{w:>8s} | " + " | ".join(f"{sweep[name][w]['fid_lenet']:8.1f}, {sweep[name][w]['accuracy']:6.1%}"
                                     for name in models_swept))
level = sweep["dit-mnist"]["1.5"]
print(f"FID-LeNet, accuracy; n = {level['n']}; real digits at this n: {level['real_floor']} ± {level['real_floor_std']}; "
      f"{guidance_record['command']}: {guidance_record['wall_time_s']:.0f} s on {guidance_record['device']}")
figure = Figure(figsize=(9, 3.4), dpi=80, layout="constrained")
by_fid, by_accuracy = figure.subplots(1, 2)
by_fid.axhspan(level["real_floor"] - level["real_floor_std"], level["real_floor"] + level["real_floor_std"], color="0.85")
for name in models_swept:
    by_fid.plot(GUIDANCE_SCALES, [sweep[name][str(w)]["fid_lenet"] for w in GUIDANCE_SCALES], "o-", lw=2, label=name)
    by_accuracy.plot(GUIDANCE_SCALES, [sweep[name][str(w)]["accuracy"] for w in GUIDANCE_SCALES], "o-", lw=2, label=name)
by_fid.set(xlabel="guidance scale w", ylabel="FID-LeNet (500 samples)", yscale="log")
by_accuracy.set(xlabel="guidance scale w", ylabel="read as the digit asked for")
by_accuracy.legend(fontsize=9)
display(Image(figure_png(figure)))

# %%
best = {name: min(GUIDANCE_SCALES, key=lambda w, name=name: sweep[name][str(w)]["fid_lenet"]) for name in models_swept}
print("lowest FID-LeNet at guidance:", ", ".join(f"{name} {w}" for name, w in best.items()))
# NBVAL_CHECK_OUTPUT
claim("every model's FID-LeNet is lowest at 1.25 or 1.5, and over 1.4x that at 3",
      all(best[name] in (1.25, 1.5) and sweep[name]["3.0"]["fid_lenet"] > 1.4 * sweep[name][str(best[name])]["fid_lenet"]
          for name in models_swept))
claim("accuracy rises with guidance for every model: from under 95 % at 1 to 100 % at 3",
      all(sweep[name]["1.0"]["accuracy"] < 0.95 and sweep[name]["3.0"]["accuracy"] == 1.0 for name in models_swept))
claim("ddpm-mnist reaches 99 % only from guidance 2 on (97.2 % at 1.5), where its FID-LeNet is 1.4x its best",
      sweep["ddpm-mnist"]["1.5"]["accuracy"] < 0.99 <= sweep["ddpm-mnist"]["2.0"]["accuracy"]
      and sweep["ddpm-mnist"]["2.0"]["fid_lenet"] > 1.4 * sweep["ddpm-mnist"]["1.5"]["fid_lenet"])

# %% [markdown]
# Guidance trades two things, and the sweep shows both. Accuracy climbs with the scale for every model, to 100 % at
# 3; FID-LeNet falls from 1 to a minimum at 1.25–1.5 and then climbs steeply, because strong guidance draws every
# digit the same typical way and FID counts the lost variety. (At the minimum some FIDs sit *below* the real-data
# band: 500 samples asked for in equal numbers per class match the balanced test set better than 500 random real
# digits do; see `minilineage.metrics`.) Note where real digits stand: LeNet reads 97.6 % of the test digits as
# labelled, so a model at 99 % or more draws digits more legible than real ones.
#
# The defaults follow from this, and the two kinds of model are chosen by different rules on purpose:
# - **The DiTs sample at 1.5**, the scale with the lowest FID-LeNet for `dit-mnist` and `dit-mnist-flow`, where they
#   still read as asked 98.6–98.8 % of the time. `dit-mnist-latent` keeps the pixel DiT's 1.5 so that section 9
#   compares the two at equal guidance; its own minimum is at 1.25.
# - **`ddpm-mnist` keeps 2.** Its lowest FID-LeNet is at 1.5 (43.2 against 61.8 at 2), but there it reads as asked
#   97.2 % of the time, and this model carries the course's accuracy target, 99 % of digits read as asked, which it
#   meets from 2 on. At 2 it pays for the target with variety, by the FID above. A student who wants the most
#   realistic digits from it should sample at 1.5 (`--guidance 1.5`); chapter 3's figures are at 2.

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
# process and DDIM stay as they are; Chapter 3 met it too). **Rectified flow** writes the noisy image another way
# (its velocity is also written $v$ in the papers: the same letter, another quantity). Rectified flow (Liu et al. 2023;
# flow matching, Lipman et al. 2023) puts $x_t$ on the straight line from the data to the noise, with $t \in [0, 1]$:
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
# It is tempting to read the promise as a contrast with DDPM, whose $x_t = \sqrt{\bar\alpha_t}\,x_0 +
# \sqrt{1 - \bar\alpha_t}\,\epsilon$ traces a curve (with the cosine schedule, nearly a quarter circle from $x_0$ to
# $\epsilon$), as if DDIM needed many small steps to follow it. That reading is wrong. The two paths hold the same
# noisy images up to a scale: divide DDPM's $x_t$ by $\sqrt{\bar\alpha_t} + \sqrt{1 - \bar\alpha_t}$ and it is the
# flow point $(1 - s)\,x_0 + s\,\epsilon$ at $s = \sqrt{1 - \bar\alpha_t} / (\sqrt{\bar\alpha_t} + \sqrt{1 - \bar\alpha_t})$,
# the flow time with the same signal-to-noise ratio (`flow.flow_point`, `flow.flow_time`). In those coordinates a DDIM
# step ($\eta = 0$) lands exactly where an Euler step of the velocity $\hat\epsilon - \hat x_0$ lands: DDIM *is* Euler's
# method on the probability-flow ODE, in $\sigma = \sqrt{(1 - \bar\alpha)/\bar\alpha}$ coordinates (Karras et al. 2022,
# Sec. 3) or in flow time, and like the flow's Euler step it is exact whenever $\hat x_0$ stays fixed along the step.
# What does differ between diffusion and flow matching is the schedule (which noise levels the sampler visits) and the
# weighting (how training spreads its effort over the noise levels, through the $t$ it draws and the target it asks
# for); Gao et al. 2024 ("Diffusion meets flow matching") work this out. Section 7 checks the equivalence on the
# shipped model and measures which of the two buys the steps.
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
# ## 7. Rectified flow: what buys the fewer steps
#
# **One sampler.** One DDIM step of the shipped $v$-DiT, from $t = 700$ to $t = 400$ (without clipping $\hat x_0$), set
# against one Euler step of the velocity $\hat\epsilon - \hat x_0$ taken in flow coordinates between the two flow times:

# %%
sched = dit.sched
t_from, t_to = torch.full((8,), 700), torch.full((8,), 400)
x_from = q_sample(sched, x0, t_from, eps)  # (8, 1, 28, 28): real digits noised to t = 700
eps_hat = dit.predict_eps(x_from, t_from, y=torch.arange(8))
x_ddim, x0_hat, _ = ddim_step(sched, x_from, t_from, t_to, eps_hat, clip_x0=None)  # Song et al. 2021, Eq. (12)
s_from, s_to = flow_time(sched.alpha_bar[700]), flow_time(sched.alpha_bar[400])
x_euler = flow_point(sched, x_from, t_from) + float(s_to - s_from) * (eps_hat - x0_hat)  # x_s = x_t + (s - t) v
gap = (flow_point(sched, x_ddim, t_to) - x_euler).abs().max().item()
print(f"flow times {float(s_from):.3f} -> {float(s_to):.3f}; largest difference between the DDIM step and the Euler step: "
      f"{gap:.1e} (the steps themselves move by {(x_euler - flow_point(sched, x_from, t_from)).abs().max():.2f})")

# %%
# NBVAL_CHECK_OUTPUT
claim("a DDIM step is an Euler step of eps_hat - x0_hat in flow coordinates (to 1e-4)", gap < 1e-4)

# %% [markdown]
# **Straight or curved is a matter of coordinates.** For 16 samples of 10 steps, the length of the straight chord from
# start to end divided by the length of the path the sampler walked (1 = a straight line): DDIM on the $v$-DiT seen in
# DDPM's coordinates, the same DDIM path seen in flow coordinates, and Euler on the flow DiT:

# %%
def straightness(model, steps: int, flow_coordinates: bool = False) -> float:
    """Chord / path length of the sampler's trajectory, averaged over 16 samples (DDPM paths rescaled if asked)."""
    _, frames = model.sample(16, torch.Generator().manual_seed(2), labels=torch.arange(16) % 10, steps=steps,
                             trajectory=True)
    points = [flow_point(model.sched, f["xt"], torch.tensor(f["t"])) if flow_coordinates else f["xt"] for f in frames]
    path = torch.stack(points + [frames[-1]["x0_hat"]])  # (steps + 1, 16, 1, 28, 28)
    walked = (path[1:] - path[:-1]).flatten(2).norm(dim=2).sum(0)  # (16,)
    chord = (path[-1] - path[0]).flatten(1).norm(dim=1)  # (16,)
    return (chord / walked).mean().item()


straight = {"v-DiT, DDIM, DDPM coordinates": straightness(dit, 10),
            "v-DiT, DDIM, flow coordinates": straightness(dit, 10, flow_coordinates=True),
            "flow-DiT, Euler": straightness(flow, 10)}
print(", ".join(f"{name}: {value:.3f}" for name, value in straight.items()))

# %%
# NBVAL_CHECK_OUTPUT
claim("in DDPM's coordinates DDIM's path bends like the cosine schedule's quarter circle (within 0.05 of "
      "2 sqrt(2) / pi = 0.90)", abs(straight["v-DiT, DDIM, DDPM coordinates"] - 2 * 2**0.5 / torch.pi) < 0.05)
claim("the same path in flow coordinates is as straight as the flow DiT's (both above 0.95, within 0.02)",
      min(straight["v-DiT, DDIM, flow coordinates"], straight["flow-DiT, Euler"]) > 0.95
      and abs(straight["v-DiT, DDIM, flow coordinates"] - straight["flow-DiT, Euler"]) < 0.02)

# %% [markdown]
# The quarter circle was the coordinate system, not the model: rescaled, DDIM's path on the $v$-DiT is as straight
# as the flow DiT's. Neither is perfectly straight: a network learns the *average* velocity of all lines through a
# point, and averaging bends the paths (the "reflow" step of Liu et al. straightens them further by retraining on the
# model's own pairs).
#
# **Where the steps go.** What the samplers do differently is *where* they evaluate the network. DDIM spaces its
# steps evenly in the cosine schedule's index, the flow sampler evenly in flow time. The noise levels each visits
# with 5 steps, all written as flow times (1 = pure noise), and the signal-to-noise ratio at each:

# %%
for name, levels in (("DDIM", ddim_levels(sched, 5)), ("Euler", euler_levels(5))):
    snrs = ((1 - levels) / levels) ** 2
    print(f"{name:5s} visits t = " + ", ".join(f"{float(t):.3f}" for t in levels) + "   SNR = "
          + ", ".join(f"{float(v):.2g}" for v in snrs))

# %% [markdown]
# With 5 steps DDIM spends its last network call at $t = 0.006$, on an image that is already all but clean, and its
# first step jumps from pure noise straight to $t = 0.71$; the flow sampler's five calls sit evenly from 1 to 0.2.
# `flow.sample_at_levels` runs either model on either list of levels (DDIM on a DDPM model, Euler on a flow model: the
# same sampler, as checked above). Each model on its own levels and on the other's, 250 samples each at 5, 10, 25 and
# 50 steps, drawn from the same starting noise and scored as the recipes' evaluation does (`python -m
# minilineage.recipes.dit_studies levels` wrote `assets/studies/levels.json`):

# %%
levels_record = sampling_study("levels", recompute=RECOMPUTE_SAMPLING)
swap = levels_record["results"]
steps_list = [int(k) for k in swap["dit-mnist"]["ddim"]]
columns = [("dit-mnist", "ddim", "v-DiT, DDIM levels"), ("dit-mnist", "euler", "v-DiT, Euler levels"),
           ("dit-mnist-flow", "ddim", "flow-DiT, DDIM levels"), ("dit-mnist-flow", "euler", "flow-DiT, Euler levels")]
print(f"{'steps':>5s} | " + " | ".join(f"{label:>22s}" for *_, label in columns) + "   (FID-LeNet, accuracy)")
for k in steps_list:
    print(f"{k:5d} | " + " | ".join(f"{swap[m][g][str(k)]['fid_lenet']:13.1f}, {swap[m][g][str(k)]['accuracy']:6.1%}"
                                    for m, g, _ in columns))
print(f"real digits at n = 250: {swap['dit-mnist']['ddim']['50']['real_floor']} ± {swap['dit-mnist']['ddim']['50']['real_floor_std']}; "
      f"{levels_record['command']}: {levels_record['wall_time_s']:.0f} s on {levels_record['device']}")
figure = Figure(figsize=(6.5, 3.4), dpi=80, layout="constrained")
ax = figure.add_subplot()
for (m, g, label), style in zip(columns, ("o-", "o--", "s--", "s-")):
    ax.plot(steps_list, [swap[m][g][str(k)]["fid_lenet"] for k in steps_list], style, lw=2, label=label)
ax.set_xscale("log"), ax.set_xticks(steps_list, [str(k) for k in steps_list])
ax.set_xlabel("sampling steps", fontsize=12), ax.set_ylabel("FID-LeNet (250 samples)", fontsize=12)
ax.legend(fontsize=10)
display(Image(figure_png(figure)))

# %%
v_own, v_swapped = swap["dit-mnist"]["ddim"], swap["dit-mnist"]["euler"]
f_own, f_swapped = swap["dit-mnist-flow"]["euler"], swap["dit-mnist-flow"]["ddim"]
records = study_records(["dit-mnist", "dit-mnist-flow"])
# NBVAL_CHECK_OUTPUT
claim("each model on its own levels is the recipe's own evaluation: the records' FIDs at 5, 10, 25 and 50 steps, to 0.5",
      all(abs(own[str(k)]["fid_lenet"] - records[name]["metrics"]["by_steps"][str(k)]["fid_lenet"]) < 0.5
          for name, own in (("dit-mnist", v_own), ("dit-mnist-flow", f_own)) for k in steps_list))
gain = {k: {"levels, v-DiT": v_own[str(k)]["fid_lenet"] - v_swapped[str(k)]["fid_lenet"],
            "levels, flow-DiT": f_swapped[str(k)]["fid_lenet"] - f_own[str(k)]["fid_lenet"],
            "network, DDIM levels": v_own[str(k)]["fid_lenet"] - f_swapped[str(k)]["fid_lenet"],
            "network, Euler levels": v_swapped[str(k)]["fid_lenet"] - f_own[str(k)]["fid_lenet"]} for k in steps_list}
print("FID-LeNet bought by the Euler levels (same network) and by the flow network (same levels):")
for k, row in gain.items():
    print(f"{k:3d} steps: " + ", ".join(f"{name} {value:+.1f}" for name, value in row.items()))
claim("at 5 steps the flow sampler's levels take over 10 points off the v-DiT's FID-LeNet",
      gain[5]["levels, v-DiT"] > 10)
claim("at 5 steps the flow network beats the v network by over 10 points on either list of levels",
      min(gain[5]["network, DDIM levels"], gain[5]["network, Euler levels"]) > 10)
claim("the flow DiT moves less than 5 points when given DDIM's levels, at every number of steps",
      all(abs(row["levels, flow-DiT"]) < 5 for row in gain.values()))
claim("from 25 steps on, all four lie within 5 points of each other, inside the real digits' level + 1 std",
      all(max(sw[str(k)]["fid_lenet"] for sw in (v_own, v_swapped, f_own, f_swapped))
          - min(sw[str(k)]["fid_lenet"] for sw in (v_own, v_swapped, f_own, f_swapped)) < 5
          and max(sw[str(k)]["fid_lenet"] for sw in (v_own, v_swapped, f_own, f_swapped))
          < v_own[str(k)]["real_floor"] + v_own[str(k)]["real_floor_std"] for k in (25, 50)))

# %% [markdown]
# Read the table from the top. With 5 steps the $v$-DiT on DDIM's levels is far behind (FID-LeNet 101 against the flow
# DiT's 73). Give the $v$-DiT the flow sampler's levels and it gains 14 points, half the gap: DDIM's even spacing in the
# cosine index wastes its last call on a nearly clean image and takes its first step too far. The other half stays
# with the network: on the *same* levels, either list, the flow DiT is 15 to 25 points better, and it hardly cares
# which levels it gets (3 points). With 10 steps the same holds on a smaller scale (3 points from the levels, about 5
# from the network), and from 25 steps on all four are within a few points, inside the noise of a 250-sample FID.
# All four read the asked-for digit 98–99 % of the time throughout. So the fewer steps are bought twice: by a better
# choice of levels, which any DDPM model can use (it is a sampler setting, not an objective), and by a network that
# predicts well enough at few, far-apart levels, which is what training taught it. Open-Sora 1.2 reports cutting
# sampling from 100 steps to 30 with rectified flow; at this size 10 to 25 already give most of the quality.
#
# **Where training puts its effort.** What made the two networks differ is the training weighting. Write both losses in one currency, the squared error of the noise estimate $\hat\epsilon$
# at log-SNR $\lambda = \log(\bar\alpha / (1 - \bar\alpha))$ (Kingma & Gao 2023; Gao et al. 2024). The $v$ loss is
# $\lVert \hat v - v \rVert^2 = (1 + e^{-\lambda})\,\lVert \hat\epsilon - \epsilon \rVert^2$; the flow loss is
# $\lVert \hat u - u \rVert^2 = \lVert \hat\epsilon - \epsilon \rVert^2 / (1 - s)^2 = (1 + e^{-\lambda/2})^2\,\lVert \hat\epsilon -
# \epsilon \rVert^2$ at flow time $s$. Both identities, checked on a random error at $t = 700$:

# %%
t_check = torch.full((8,), 700)
snr_700 = sched.snr(t_check[:1]).item()
xt_check = q_sample(sched, x0, t_check, eps)
v_true = v_target(sched, x0, t_check, eps)
v_off = v_true + 0.1 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))  # a wrong v
v_ratio = (v_off - v_true).square().sum() / (eps_from_v(sched, xt_check, t_check, v_off) - eps).square().sum()
s_700 = float(flow_time(sched.alpha_bar[700]))
u_off = (eps - x0) + 0.1 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(6))  # a wrong flow velocity
eps_from_u = flow_point(sched, xt_check, t_check) + (1 - s_700) * u_off  # eps = x_s + (1 - s) u
u_ratio = (u_off - (eps - x0)).square().sum() / (eps_from_u - eps).square().sum()
print(f"lambda = {math.log(snr_700):.2f}: v loss / eps error = {v_ratio:.4f} (1 + e^-lambda = {1 + 1 / snr_700:.4f}); "
      f"flow loss / eps error = {u_ratio:.4f} ((1 + e^-lambda/2)^2 = {(1 + snr_700 ** -0.5) ** 2:.4f})")

# %%
# NBVAL_CHECK_OUTPUT
claim("the v loss is the eps error times 1 + e^-lambda, the flow loss times (1 + e^-lambda/2)^2 (to 1e-3)",
      abs(v_ratio / (1 + 1 / snr_700) - 1) < 1e-3 and abs(u_ratio / (1 + snr_700 ** -0.5) ** 2 - 1) < 1e-3)

# %% [markdown]
# Divide the two and the flow loss is the $v$ loss times $r(\lambda) = (1 + e^{-\lambda/2})^2 / (1 + e^{-\lambda})$, a
# weight between 1 (at both ends) and 2 (at $\lambda = 0$). In the $v$ loss's own currency, where the target has about
# unit size at every level, the flow loss leans a little towards the middle levels. How often each level is drawn is
# the larger half: the $v$-DiT draws its step index uniformly from the cosine schedule's 1,000, the flow DiT draws a
# logit-normal $s$, so $\lambda = -2\,\text{logit}(s) \sim \mathcal N(0, 2^2)$. Left, how often each objective trains at
# each $\lambda$; right (log scale), that density times the weight $r$ (1 for $v$), normalised: the share of the
# training loss at each noise level, for a $v$ estimate equally wrong at every level.

# %%
lam_v = sched.snr(torch.arange(sched.T)).log()  # (1000,): one draw per step index, all equally likely
s_drawn = logit_normal_t(100_000, torch.Generator().manual_seed(0), "cpu")
lam_flow = 2 * torch.log((1 - s_drawn) / s_drawn)  # (100000,)
r = lambda lam: (1 + torch.exp(-lam / 2)) ** 2 / (1 + torch.exp(-lam))  # noqa: E731  flow loss / v loss
print(f"r at lambda = -1.37 (t = 700): {float(r(torch.tensor(math.log(snr_700)))):.4f} = {u_ratio / v_ratio:.4f}, the two ratios above")
bins = torch.linspace(-21, 13, 69)
training = {}
for name, lam, weight in (("v (cosine, uniform t)", lam_v, torch.ones_like), ("flow (logit-normal t)", lam_flow, r)):
    share = weight(lam) / weight(lam).sum()  # (draws,): each draw's share of the loss
    training[name] = {"density": torch.histogram(lam, bins).hist / len(lam),
                      "effort": torch.histogram(lam, bins, weight=share).hist, "std": lam.std().item(),
                      "middle": share[lam.abs() <= 2].sum().item(), "far": share[lam.abs() > 6].sum().item()}
centres = (bins[1:] + bins[:-1]) / 2
figure = Figure(figsize=(9, 3.2), dpi=80, layout="constrained")
by_density, by_effort = figure.subplots(1, 2)
for name, curves in training.items():
    by_density.plot(centres, curves["density"], lw=2, label=name)
    by_effort.plot(centres, curves["effort"], lw=2, label=name)
by_density.set(xlabel="log-SNR λ (noisier to the left)", ylabel="share of training draws")
by_effort.set(xlabel="log-SNR λ (noisier to the left)", ylabel="share of the loss (equal v error)", yscale="log",
              ylim=(1e-5, 0.3))
by_density.legend(fontsize=9)
display(Image(figure_png(figure)))
for name, curves in training.items():
    print(f"{name:22s} std of the trained λ {curves['std']:.1f}; share of the loss at |λ| <= 2: {curves['middle']:.1%}, "
          f"at |λ| > 6: {curves['far']:.2%}")

# %%
effort = {name.split()[0]: curves for name, curves in training.items()}
# NBVAL_CHECK_OUTPUT
claim("the flow objective spends over 70 % of its loss at |λ| <= 2, the v objective under 60 %",
      effort["flow"]["middle"] > 0.7 and effort["v"]["middle"] < 0.6)
claim("the v objective spends over 10x the flow objective's share at the extremes |λ| > 6 (over 5 % against under 0.5 %)",
      effort["v"]["far"] > 0.05 > 0.005 > effort["flow"]["far"])

# %% [markdown]
# The $v$ loss on the cosine schedule spreads its effort wide, from $\lambda \approx -20$ (the schedule's last step,
# nearly pure noise) to $+10$ (nearly clean), with one draw in 18 beyond $|\lambda| = 6$, where there is little to learn
# (the image is almost all noise or almost all known). The logit-normal flow loss spends about three quarters of its
# effort in the middle, $|\lambda| \le 2$, where the image is half formed and a large step has the most to get right.
#
# The objective is the only training difference between the two shipped runs (same network, data, steps and seed):
# this weighting, and what the network outputs ($v$ or the flow velocity). So the objective is what the swap above
# could not remove, and the natural reading is that the flow DiT learnt the middle levels better, so its few large
# steps land better. The straight path itself bought nothing that the sampler could not get from DDIM. Gao et al.
# 2024 argue the same in general: flow matching and diffusion are one family of models, and the weighting and the
# sampling levels are to be chosen on their merits. Whether the density of levels, the per-level weight or the output
# did more here would take more training runs the size of `dit-mnist`'s to say (for example $v$ trained on
# logit-normal levels, an objective the package does not offer yet).
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
compared = ("ddpm-mnist", "ldm-mnist", "dit-mnist", "dit-mnist-flow", "dit-mnist-latent")
records = study_records(list(compared))
gf["dit-mnist-flow"] = gf["dit-mnist"]  # the same network
train_tflop = {name: 3 * gf[name] * records[name]["train_config"]["steps"] * records[name]["train_config"]["batch_size"] / 1e3
               for name in compared}
print(f"{'model':17s} {'train TFLOP':>11s} {'steps x batch':>14s} {'wall s':>7s} {'threads':>8s} "
      f"{'FID (real at same n)':>21s} {'accuracy':>9s} {'guidance':>8s}")
for name in compared:
    record, train = records[name], records[name]["train_config"]
    m = record["metrics"]
    print(f"{name:17s} {train_tflop[name]:11.1f} {train['steps']:>6d} x {train['batch_size']:<5d} {record['wall_time_s']:7.0f} "
          f"{record['device'].split('(')[1].split()[0]:>8s} {m['fid_lenet']:8.1f} ({m['real_floor']:5.1f}, n={m['n']:4d}) "
          f"{m['accuracy']:9.3f} {m['guidance']:8.2f}")
at_best = {name: sweep[name][str(best[name])]["fid_lenet"] for name in models_swept}
# NBVAL_CHECK_OUTPUT
claim("at equal guidance 1.5, and at each model's own best guidance, the U-Net has the lowest FID-LeNet of the four "
      "(n = 500, the same draws)", min(models_swept, key=lambda name: sweep[name]["1.5"]["fid_lenet"]) == "ddpm-mnist"
      and min(at_best, key=at_best.get) == "ddpm-mnist")
claim("the pixel DiTs had about half of the pixel U-Net's training FLOPs (0.4x to 0.6x)",
      0.4 < train_tflop["dit-mnist"] / train_tflop["ddpm-mnist"] < 0.6)

# %% [markdown]
# Read the table with care. The FIDs of `ddpm-mnist` and `ldm-mnist` come from 1,000 samples and those of the DiTs
# from 500, and FID-LeNet falls as n grows, so compare each with its own real-data level in brackets; and each model
# samples at its own default guidance. The guidance sweep of section 4 puts them on equal terms, 500 samples from the
# same draws at every scale: at the DiTs' 1.5 the U-Net scores the lowest FID-LeNet of all four (43.2, read as asked
# 97.2 %), against 59.8, 55.7 and 59.4 for the $v$-, flow and latent DiTs (98.8, 98.6 and 99.8 %), and at each model's
# best scale too (the latent DiT's 49.5 at 1.25 comes closest). At this scale the U-Net draws the more realistic
# digits, at the guidance where all of them are at their best. Nor is the comparison at matched compute: the pixel
# DiTs had about half of the pixel U-Net's training FLOPs (the table). The wall times in the records do not compare:
# they come from different machines and thread counts (the U-Net's from one thread of a shared machine, the pixel DiTs'
# from two threads, the latent DiT's from one thread of a machine busy with other work); the step timing below, run
# here, does. The latent U-Net of Chapter 4 (the fewest training FLOPs) scores the highest FID-LeNet of the table at
# its guidance 3, though it solves a harder task (text prompts) through a lossy autoencoder.
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
def train_step_seconds(denoiser: dict, repeat: int, x: torch.Tensor | None = None) -> tuple[int, float]:
    """Parameters and the fastest of `repeat` training steps (loss, backward, AdamW) at batch 64, on 28 x 28 digits
    or on the given batch x (64, C, H, W), e.g. pre-encoded latents."""
    x = x_test[:64] if x is None else x
    torch.manual_seed(0)
    model = DiffusionPipeline(PipelineConfig(denoiser=denoiser, shape=tuple(x.shape[1:])))
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    batch, g = {"x": x, "y": torch.arange(64) % 10}, torch.Generator().manual_seed(0)
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
# ## 9. DiT proper: the same DiT on latents
#
# The headline of this chapter, **DiT = VAE encoder + ViT + DDPM + VAE decoder**, has one more piece than the pixel DiT
# above. `dit-mnist-latent` is that model: Chapter 4's frozen `latent-vae-mnist` encodes each digit to a 4 × 7 × 7
# latent (scaled to unit variance), the same DiT-XS reads it in $p = 1$ patches, 49 tokens of 4 numbers, trains with
# $v$-prediction for the same 16,000 steps of batch 64 at the same guidance 1.5, and the decoder turns its samples
# back into digits. Only where diffusion runs differs. (The recipe encodes the training digits once, `pre_encode`,
# instead of at every step: the same draws of $z \sim q(z \mid x)$ in less time.)

# %%
latent_record = records["dit-mnist-latent"]
lm, pm = latent_record["metrics"], records["dit-mnist"]["metrics"]
print(f"record: {latent_record['command']} | {latent_record['step']} steps, {latent_record['wall_time_s']:.0f} s on "
      f"{latent_record['device']}")
samples_latent = latent_dit.sample(20, torch.Generator().manual_seed(0), labels=torch.arange(20) % 10, steps=25)
samples_pixel = dit.sample(20, torch.Generator().manual_seed(0), labels=torch.arange(20) % 10, steps=25)
display(Image(png_bytes(grid(torch.cat([samples_pixel, samples_latent]), nrow=10), scale=2)))
per_sample = {name: 2 * 50 * gf[name] + (decoder_gflops if name == "dit-mnist-latent" else 0)
              for name in ("dit-mnist", "dit-mnist-latent")}  # 50 guided steps (two calls each), then the decoder
print(f"{'':28s} {'pixel DiT (dit-mnist)':>22s} {'latent DiT (dit-mnist-latent)':>30s}")
for label, pixel, latent in (
        ("GFLOPs per sample (50 steps)", f"{per_sample['dit-mnist']:.2f}", f"{per_sample['dit-mnist-latent']:.2f}"),
        ("training TFLOP", f"{train_tflop['dit-mnist']:.1f}", f"{train_tflop['dit-mnist-latent']:.1f}"),
        ("training time", f"{records['dit-mnist']['wall_time_s']:.0f} s, {records['dit-mnist']['device']}",
         f"{latent_record['wall_time_s']:.0f} s, {latent_record['device']}"),
        ("FID-LeNet, n = 500, w = 1.5", f"{pm['fid_lenet']:.1f}", f"{lm['fid_lenet']:.1f}"),
        ("read as asked, w = 1.5", f"{pm['accuracy']:.1%}", f"{lm['accuracy']:.1%}")):
    print(f"{label:28s} {pixel:>22s} {latent:>30s}")
print(f"real digits at n = 500: {pm['real_floor']} ± {pm['real_floor_std']}")

# %% [markdown]
# The two records were made on different days, machines and thread counts, so their times do not compare. Here,
# on this machine, one after the other: a training step of each (batch 64; the latent model on pre-encoded latents,
# as its recipe trains), and sampling 50 digits with 10 guided steps (the latent model decodes them at the end):

# %%
def sample_seconds(model, repeat: int) -> float:
    """The fastest of `repeat` draws of 50 digits with 10 steps at the model's guidance."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        model.sample(50, torch.Generator().manual_seed(0), labels=torch.arange(50) % 10, steps=10)
        times.append(time.perf_counter() - started)
    return min(times)


latents64 = latent_dit.encode(x_test[:64])  # (64, 4, 7, 7): the mean latents, scaled as in training
tries = 1 if FAST else 3
here = {"pixel DiT": (train_step_seconds(dit.config.denoiser, tries)[1], sample_seconds(dit, tries)),
        "latent DiT": (train_step_seconds(latent_dit.config.denoiser, tries, x=latents64)[1], sample_seconds(latent_dit, tries))}
for name, (step, draw) in here.items():
    print(f"{name:10s} {step * 1e3:6.0f} ms per training step of 64   {draw:5.2f} s for 50 digits with 10 steps")
latent_best = sweep["dit-mnist-latent"][str(best["dit-mnist-latent"])]
print(f"latent DiT at its best guidance {best['dit-mnist-latent']}: FID-LeNet {latent_best['fid_lenet']:.1f}, "
      f"{latent_best['accuracy']:.1%} read as asked (section 4)")
sd_tokens = {"pixels": (256 // 2) ** 2, "SD latents": (256 // 8 // 2) ** 2}  # a 256 x 256 image in 2 x 2 patches
print(f"DiT-XL/2 at 256 x 256: {sd_tokens['SD latents']} tokens on the VAE's 32 x 32 latents, {sd_tokens['pixels']:,} on "
      f"pixels: {sd_tokens['pixels'] // sd_tokens['SD latents']}x the tokens, "
      f"{(sd_tokens['pixels'] // sd_tokens['SD latents']) ** 2:,}x the attention scores")

# %%
# NBVAL_CHECK_OUTPUT
claim("at equal guidance the two DiTs' FID-LeNet differ by less than one std of real digits at n = 500",
      abs(lm["fid_lenet"] - pm["fid_lenet"]) < pm["real_floor_std"])
claim("the latent DiT reads as asked at least as often (over 99 %)", lm["accuracy"] >= pm["accuracy"] and lm["accuracy"] > 0.99)
claim("per sample, the latent DiT costs within 10 % of the pixel DiT's FLOPs, its decoder included",
      abs(per_sample["dit-mnist-latent"] / per_sample["dit-mnist"] - 1) < 0.1)

# %% [markdown]
# On digits, where diffusion runs changes little, on either count. The two cost the same FLOPs per sample, since the
# blocks see 49 tokens either way, and their measured times here are of the same order (the latent model also runs
# its decoder; on a busy machine rerun the cell before reading more into them). Their quality at equal guidance is a
# tie within the noise of 500 samples, the latent model's digits a little more legible;
# at its own best guidance the latent DiT has the lowest FID-LeNet of the three DiTs. The pixel DiT gives nothing away
# because it already compresses: 4 × 4 patches make 49 tokens, as many as the latent makes at $p = 1$. What the VAE
# buys DiT proper, and Sora, is the freedom to use small patches on a large image: DiT-XL/2 reads a 256 × 256 image
# as 256 tokens of Stable Diffusion's 32 × 32 latents, where 2 × 2 pixel patches would make 64 times the tokens and
# 4,096 times the attention scores. On 28 × 28 digits that factor is only the patch size, and the latent model pays
# for its decoder with the autoencoder's own errors instead.

# %% [markdown]
# The reverse process of the latent DiT, token by token: each latent position is drawn as a 2 × 2 square of its four
# channels, and the prediction of the clean latent is decoded at every step.

# %%
token_player(latent_dit, labels=(0, 3, 7), steps=10 if FAST else 25)

# %% [markdown]
# ## 10. Sampling from the command line
#
# The DiT checkpoints sample and evaluate exactly as Chapter 3's DDPM does, e.g.
#
# ```
# minilineage sample assets/checkpoints/dit-mnist.pt --n 1000 --labels 0-9 --steps 50 --out dit.npz
# minilineage sample assets/checkpoints/dit-mnist-flow.pt --n 1000 --labels 0-9 --steps 10 --out flow.npz
# minilineage sample assets/checkpoints/dit-mnist-latent.pt --n 1000 --labels 0-9 --steps 50 --out latent.npz
# minilineage eval dit.npz
# ```
#
# ## 11. Train it yourself
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
# `... dit-mnist-flow ...`, one after the other on that machine (their records hold the times). `dit-mnist-latent`
# (section 9) was trained the same way on one thread of a machine shared with two other trainings; its record's
# 5,186 s say more about that machine than about the model (section 9 times both models side by side). `--preset gpu`
# trains DiT-B/2 (width 128, 8 blocks, 196 tokens) on all 60,000 MNIST digits, and `minilineage train dit-cifar10 --preset gpu`
# a DiT with width 384 and 12 blocks on CIFAR-10 pixels in 2 × 2 patches (256 tokens).
#
# ## 12. Exercises
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
# - Rectified flow changes the loss, not the sampler: its Euler step is DDIM's step in other coordinates, and the
#   straight path is DDPM's curve rescaled. What bought its fewer steps here was a better spread of sampling levels
#   (half of the gap at 5 steps, and any DDPM model can use it) and a training weighting that spends its effort on the
#   middle noise levels (section 7).
# - A small start costs training time: DiT's std-0.02 condition made the label all but invisible after a short run
#   at width 64, and it starts small at DiT's own width too (section 2). DiT can afford the wait; a CPU budget cannot.
# - DiT proper works on a VAE's latents; on 28 × 28 digits that changed neither the cost nor the quality much, because
#   4 × 4 pixel patches already make as few tokens as the latent (section 9). The latent space pays off where images
#   are large and patches small.
# - Guidance is a trade: legibility rises with it, variety falls; each model's default is chosen from a sweep, and
#   the U-Net's default serves an accuracy target rather than the best FID (section 4).
# - An image is one frame. A video is a stack of frames, and Sora's recipe is this chapter's DiT applied to
#   *spacetime* patches: cut a clip (B, F, C, H, W) into patches that span a few frames as well as a few pixels, add
#   3-D positions, and let attention run over space and time at once. `DiT.condition` already accepts one timestep
#   per frame (B, F), and its blocks take any number of tokens: Chapter 7 builds its video DiT on them, with a VAE
#   that compresses time as well as space.
