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
# # Chapter 7 — Video generation the Sora way: a VAE for time, spacetime patches, one model for every mode
#
# Chapter 6 ended with a DiT that draws a digit from its label. A video is a stack of such images, so the first idea
# is to draw each frame on its own. It fails, and seeing why leads step by step to the design OpenAI's Sora report
# describes ("Video generation models as world simulators", 2024) and that Open-Sora, CogVideoX and Movie Gen
# published in detail. In one line, **Sora = a VAE that compresses time as well as space + a DiT over spacetime
# patches**, trained on videos of their native size and length. The report also shows one model extending,
# interpolating and animating given frames without saying how it conditions on them; here that comes from Open-Sora's
# published answer, **frame masks**.
#
# **You will learn**
# 1. why frames drawn one at a time do not make a video, measured with the course's classifier;
# 2. a *causal* spatio-temporal VAE: 3-D convolutions padded only on the past, so that the first frame is encoded on
#    its own and an image is exactly a 1-frame video (checked), and what its extra compression costs;
# 3. spacetime patches and 3-D positions: how a clip of any size and length becomes one sequence of tokens;
# 4. training on size and length buckets without cropping, with images as 1-frame videos and random frame masks;
# 5. text-to-video, text-to-image, image-to-video, continuation, extension to several times the training length,
#    interpolation, merging and SDEdit editing, all from one checkpoint, by choosing which latent frames are given;
#    and a test of object permanence (two digits crossing) that this model fails, measured;
# 6. generation at sizes and lengths never seen in training;
# 7. how to find what holds a model back: a ladder of measurements from real clips to the model, and design changes
#    tried one at a time on its image rung and on its VAE rung; prompts that choose both the digit and its motion;
# 8. re-captioning: a small CoCa captioner that writes captions for clips that came with a poor one, and what training
#    on its captions buys over the poor ones, for the digit and for the motion (measured against the true captions).
#
# The data is `moving-mnist`: one or two `mnist-5k` digits bouncing in a 32 × 32 frame for 17 frames, generated on
# your machine from a seed, with a caption per clip. Every model ships in `assets/checkpoints/` with the record of
# the `minilineage train` command that made it; section 9 retrains them.

# %%
import torch
from IPython.display import Image, display

import minilineage
from minilineage.checkpoint import load_model
from minilineage.checks import claim
from minilineage.data import load_dataset
from minilineage.data.video import POOR_CAPTION, frame_masks
from minilineage.diffusion import DiffusionPipeline
from minilineage.exercises import exercise, show_solution  # noqa: F401  (show_solution: section 12)
from minilineage.layers import sincos_3d
from minilineage.models.vae3d import CausalConv3d, VAE3d
from minilineage.recipes import video_modes as modes
from minilineage.recipes.dit import study_records
from minilineage.recipes.recaption import caption_figures, recaption, study_clips
from minilineage.recipes.video import frame_consistency, image_vae_at, naive_clips, per_frame, reconstruction_figures
from minilineage.recipes.video_design import VAE_VARIANTS, VARIANTS, vae_rung
from minilineage.recipes.video_ladder import ladder_pairs, ladder_record, ladder_table, motion_figures, prompt
from minilineage.recipes.video_permanence import GIVEN, crossing_clips, permanence_record, permanence_table
from minilineage.widgets import grid, png_bytes, train_with_plot
from minilineage.widgets.video import denoising_player, sdedit_player, strip, strips, video_player

FAST = minilineage.chapter_setup()  # MINILINEAGE_FAST=1 (CI) keeps sampling and training cells short
N = 20 if FAST else 100  # clips per measurement; the figures in the text are for N = 100
torch.set_grad_enabled(False)
video = load_model("videodit-moving-mnist", expect=DiffusionPipeline)  # the video DiT, with its VAE and text encoder
vae3d = video.autoencoder  # the causal spatio-temporal VAE, `vae3d-moving-mnist`
print(video.net.config)

# %% [markdown]
# ## 1. The data: moving digits with captions
#
# `load_dataset("moving-mnist", split, frames=F, size=S, digits=...)` draws each clip from a seed: digits are
# `mnist-5k` images shrunk to half the frame, each moving in one of eight directions at one to two pixels a frame and
# bouncing off the walls. Train clips use the training digits and test clips the test digits. Every clip comes with
# a caption written from its own path, and the same clips can be had with one poor caption for all of them (the
# re-captioning experiment at the end starts from those). A batch of clips has the shape (B, F, C, H, W): `F` is the
# frame axis.

# %%
clips = load_dataset("moving-mnist", "test", n=200)  # 1 or 2 digits per clip
print("clips", tuple(clips.images.shape), clips.images.dtype, "| the poor caption:", repr(POOR_CAPTION))
for i in range(4):
    print(f"  clip {i}: {clips.texts[i]!r}")
video_player([clips.float_images()[:2]], ["two test clips"])

# %% [markdown]
# ## 2. The naive baseline: one image model, frame after frame
#
# The simplest video generator is the image generator of Chapter 6, run once per frame. We even hand it the motion:
# for each held-out one-digit clip, `dit-mnist` draws 17 images of the clip's digit, and each is shrunk and pasted
# where the real clip has its digit in that frame (`naive_clips`). So the baseline moves exactly right; what it lacks
# is any link between one frame and the next.
#
# To measure that, `frame_consistency` cuts every frame to its digit and reads it with the course's LeNet (trained on
# real digits only, never on anything generated):
#
# - **identity**: the share of frames whose class is the clip's most common class (1 for a digit that never changes);
# - **accuracy**: the share of frames read as the digit the clip should show;
# - **restyle**: $1 - \cos$ between LeNet's 64 features of consecutive frames: how much the handwriting changes from
#   frame to frame, even when the class does not;
# - **jump** and **jitter**: how far the digit's centre of ink moves per frame, and how much that move changes.

# %%
one = load_dataset("moving-mnist", "test", n=N, digits=1)  # held-out clips of one digit
digits = one.info["digits"][:, 0]  # (N,)
real = one.float_images()  # (N, 17, 1, 32, 32) in [-1, 1]
dit = load_model("dit-mnist", expect=DiffusionPipeline)  # Chapter 6's image DiT
frames = dit.sample(N * 17, torch.Generator().manual_seed(0), labels=digits.repeat_interleave(17),
                    steps=10 if FAST else 25)  # 17 images per clip
naive = naive_clips(frames.reshape(N, 17, 1, 28, 28), one.info["positions"][:, :, 0])  # (N, 17, 1, 32, 32)
scores = {"real clips": frame_consistency(real, digits), "naive: frames drawn one by one": frame_consistency(naive, digits)}


def show_scores(rows: dict) -> None:
    """One line of frame_consistency figures per row."""
    print(f"{'':36s} {'identity':>9s} {'accuracy':>9s} {'restyle':>8s} {'jump':>6s} {'jitter':>7s} {'motion':>7s}")
    for name, s in rows.items():
        motion = f"{s['motion']:7.2f}" if "motion" in s else f"{'-':>7s}"  # clips that move as asked (section 6)
        print(f"{name:36s} {s['identity']:9.3f} {s['accuracy']:9.3f} {s['restyle']:8.3f} {s['jump']:6.2f} {s['jitter']:7.2f} {motion}")


show_scores(scores)

# %%
real_s, naive_s = scores["real clips"], scores["naive: frames drawn one by one"]
# NBVAL_CHECK_OUTPUT
claim("the naive clips change their handwriting from frame to frame at least 5x as much as real clips",
      naive_s["restyle"] > 5 * real_s["restyle"])
claim("real clips keep their digit in at least 95 % of frames", real_s["identity"] >= 0.95)

# %%
video_player([real[:3], naive[:3]], ["real", "naive: one image model per frame"])

# %% [markdown]
# Every naive frame is a good digit, and most are the right one: `dit-mnist` reads its label well. But each frame is
# a *different* handwritten digit, so the clip flickers between writers; the restyle figure is many times the real
# clips', and where the model draws an ambiguous digit the class itself flips for a frame. Nothing can fix this frame
# by frame: a frame has to be generated knowing what the others look like. That means denoising all frames of a clip
# together, in one network, and the cheapest place to do it is a latent space that compresses time as well as space.
#
# ## 3. A causal spatio-temporal VAE
#
# Chapter 4's VAE turns a 28 × 28 digit into a 4 × 7 × 7 latent. Applied to each frame of a 17-frame clip, that gives
# 17 latent frames. But consecutive frames are nearly the same picture, so a video VAE also compresses along time:
# `VAE3d` folds every 4 frames into one latent frame and every 4 × 4 pixels into one latent position, so a clip
# (17, 1, 32, 32) becomes latents (5, 4, 8, 8).
#
# Why 5 and not 17 / 4? The VAE is **causal in time** (MAGVIT-v2, Yu et al. 2024; CogVideoX's and Open-Sora's VAEs):
# every 3-D convolution is padded only on the past side of the time axis, with copies of the first frame, so an
# output frame never reads a later input frame. Frame 0 is then encoded on its own into latent frame 0, and every
# later group of 4 frames into one more latent frame: $f = 1 + (F - 1)/4$. The payoff is that **an image is a
# 1-frame video**: its latent is exactly the first latent frame of any clip that starts with it, so one VAE, and one
# DiT after it, can learn from images and videos together (Sora generates images as well). The checks below run on
# the shipped VAE:

# %%
x = real[:4]  # (4, 17, 1, 32, 32)
mu = vae3d.encode(x)[0]  # (4, 5, 4, 8, 8): the mean of q(z | x)
changed = x.clone()
changed[:, 9:] = -changed[:, 9:]  # invert every frame from frame 9 on
mu_changed = vae3d.encode(changed)[0]
print(f"clip {tuple(x.shape[1:])} -> latents {tuple(mu.shape[1:])}: {x[0].numel()} numbers -> {mu[0].numel()}")
# NBVAL_CHECK_OUTPUT
claim("an image encoded alone gives exactly the first latent frame of its clip (to 1e-5)",
      torch.allclose(vae3d.encode(x[:, :1])[0][:, 0], mu[:, 0], atol=1e-5))
claim("changing frames 9-16 leaves latent frames 0-2 (frames 0-8) unchanged, and changes the rest",
      torch.allclose(mu_changed[:, :3], mu[:, :3], atol=1e-5) and not torch.allclose(mu_changed[:, 3:], mu[:, 3:], atol=1e-2))

# %% [markdown]
# The padding itself is one line (`CausalConv3d`): $k - 1$ copies of the first frame in front of the clip along
# time, none behind (exercise 3 asks you to write it). A convolution padded on both sides, as in an image VAE, would
# let frame 0's latent see frame 1, and an image would no longer be a clip of one frame.
#
# What does the extra compression cost? Held-out clips through the 3-D VAE and through Chapter 4's 2-D VAE applied
# frame by frame (the same weights work at 32 × 32), with PSNR, and *flicker*: the root-mean-square of how much the
# reconstruction's frame-to-frame change differs from the input's (0 when the error is the same in every frame, so
# nothing in the error moves). Then the question that matters for generation: does LeNet still read the right digit
# in the reconstructed frames?

# %%
vae2d = image_vae_at(32)
recon3d, recon2d = vae3d(real), per_frame(vae2d, real)  # (N, 17, 1, 32, 32) each
numbers = {"pixels": real[0].numel(), "3-D VAE latents": mu[0].numel(),
           "2-D VAE latents, per frame": 17 * vae2d.config.latent_channels * 8 * 8}
print(", ".join(f"{k}: {v}" for k, v in numbers.items()), "numbers per clip")
recon = {"3-D VAE (vae3d-moving-mnist)": reconstruction_figures(real, recon3d),
         "2-D VAE per frame (latent-vae-mnist)": reconstruction_figures(real, recon2d)}
for name, f in recon.items():
    print(f"{name:38s} PSNR {f['psnr']:5.1f} dB  flicker {f['flicker']:.3f}")
scores |= {"3-D VAE reconstructions": frame_consistency(recon3d, digits),
           "2-D VAE reconstructions": frame_consistency(recon2d, digits)}
show_scores(scores)

# %%
r3, r2 = recon["3-D VAE (vae3d-moving-mnist)"], recon["2-D VAE per frame (latent-vae-mnist)"]
# NBVAL_CHECK_OUTPUT
claim("the 3-D VAE keeps 3.4x fewer numbers per clip than the 2-D VAE per frame",
      numbers["2-D VAE latents, per frame"] == 3.4 * numbers["3-D VAE latents"])
claim("LeNet reads the right digit in at least 80 % of the 3-D VAE's reconstructed frames",
      scores["3-D VAE reconstructions"]["accuracy"] >= 0.8)
claim("the 2-D VAE, with 3.4x more numbers, reconstructs with higher PSNR and less flicker", r2["psnr"] > r3["psnr"]
      and r2["flicker"] < r3["flicker"])

# %%
video_player([real[:3], recon3d[:3], recon2d[:3]], ["real", "3-D VAE: 5x4x8x8 latents", "2-D VAE per frame: 17x4x8x8"])

# %% [markdown]
# There is no free lunch: with 3.4 times fewer numbers, the 3-D VAE blurs strokes a little more and its error moves
# more from frame to frame than the 2-D VAE's. What it buys is a latent video the DiT can afford: 5 latent frames
# instead of 17, so 80 tokens instead of 272 (next section), and attention cost falls with the square of that. The
# shipped VAE is a small one trained for minutes; how long it trains matters more than how wide its latent is. At
# 700 steps its reconstructions were read as the right digit in only two frames of three, and no generator on those
# latents could do better; at 4,500 steps (the recipe now), they are read right in the share printed above.
#
# ## 4. Spacetime patches and 3-D positions
#
# Chapter 5 cut an image into $p \times p$ patches; Sora cuts a latent video into *spacetime* patches. `VideoDiT` cuts
# each latent frame into 2 × 2 patches and keeps frames apart ($p_t = 1$, as CogVideoX does on latents already 4×
# compressed in time), so a clip of $F$ frames of $S \times S$ pixels becomes
#
# $$N = \underbrace{\left(1 + \tfrac{F - 1}{4}\right)}_{\text{latent frames}} \cdot \left(\tfrac{S}{4 \cdot 2}\right)^2
#   \text{ tokens}.$$
#
# Nothing in the transformer's blocks knows about time. Every token attends to every other, in its own frame and in
# the others, so all frames are denoised together, and that is what makes the clip coherent. Where a token sits is
# told only by its position embedding, a fixed sin-cos function of (frame, row, column): a quarter of the channels
# for the frame and three eighths for each of row and column (`sincos_3d`, CogVideoX's split). A grid of another size
# or length is just another sequence, with no learnt table to outgrow.
# Token counts of a few clip shapes:

# %%
for f_pixels, side in ((1, 32), (9, 32), (17, 24), (17, 32), (33, 32), (17, 48)):
    latent = modes.latent_shape(video, f_pixels, side)  # (f, c, h, w)
    tokens = latent[0] * (latent[2] // video.net.config.patch) * (latent[3] // video.net.config.patch)
    print(f"{f_pixels:3d} frames of {side} x {side} -> latents {latent} -> {tokens:4d} tokens")
width = video.net.config.width
# NBVAL_CHECK_OUTPUT
claim("an image's position embedding is exactly the first frame's of any longer clip",
      torch.equal(sincos_3d((1, 4, 4), width), sincos_3d((5, 4, 4), width)[:16]))
claim("every token of a 5 x 4 x 4 grid gets its own position", len(torch.unique(sincos_3d((5, 4, 4), width), dim=0)) == 80)

# %% [markdown]
# The same two properties as the VAE's: an image is the first frame of a video, for positions too, and a longer or
# larger clip only adds positions.
#
# ## 5. Training: native sizes, images as videos, frame masks
#
# The Sora report insists on training at each clip's native size and length, without cropping to one shape; it
# keeps the whole subject in frame and lets one model make clips of any shape. Batches of one shape are needed for a
# GPU, so training draws from **buckets**: each batch comes from one of four (`video_buckets`), 17-frame and 9-frame
# clips of 32 × 32, 17-frame clips of 24 × 24, and single 32 × 32 frames: images, trained as 1-frame videos. Before
# the buckets comes a stage of images alone, as Open-Sora 1.x and Movie Gen train: the first 3,000 steps see only
# single frames of one-digit clips, 64 to a batch (an image is 16 tokens, a clip 80). The cheap stage learns what the
# digits look like; the expensive one learns how they move. Clips of ten digit × direction pairs (`HELD_OUT_PAIRS`:
# a 0 moving right, a 1 moving up, ...) are left out of every stage, so that section 6 can ask for pairs the model
# has never seen.
#
# Then **frame masks** (Open-Sora 1.x): half of the clips are trained as plain generation; in the other half some
# latent frames are given *clean*, and the network sees them with timestep 0 and is asked only for the others
# (`masked_v_loss`). Which frames are given is drawn from the tasks of section 7: the first (image-to-video), the
# first $k$ or last $k$ (extension), the first and last (interpolation), both ends (merging) or a random set. Per-frame
# timesteps go in through Chapter 6's adaLN-Zero: each token's condition vector uses its own frame's $t$. One batch's
# masks (■ given, □ to generate):

# %%
masks = frame_masks(8, 5, torch.Generator().manual_seed(0))  # (8 clips, 5 latent frames)
for row in masks.tolist():
    print(" ".join("■" if given else "□" for given in row))
record = study_records(["videodit-moving-mnist"])["videodit-moving-mnist"]
train = record["train_config"]
print(f"record: {record['command']} | {train['steps']} steps x {train['batch_size']} clips, {record['wall_time_s']:.0f} s "
      f"on {record['device']} | {record['parameters'] / 1e6:.2f} M parameters | its evaluation: {record['metrics']}")

# %% [markdown]
# Prompts are read by the text encoder of `clip-moving-mnist`, frozen. It is Chapter 4's CLIP retrained on this
# chapter's own (clip, caption) pairs, with a video tower over the causal VAE's latents in place of the image tower.
# Its vocabulary holds every caption word: the digits, "moves", the directions, "bounces", "and". Chapter 4's
# `clip-mnist` learnt its words from captions such as "a handwritten seven", and reads every motion word as the
# unknown token. The DiT reads the prompt in two ways: cross-attention to every text token, and the mean text token
# added to the condition vector that adaLN-Zero reads (`pooled_context`, the pooled text vector of Imagen and Stable
# Diffusion 3). The CLIP's own record, judged by retrieval (for held-out clips, which of the 80 one-digit prompts
# is most similar?):

# %%
clip_record = study_records(["clip-moving-mnist"])["clip-moving-mnist"]
m = clip_record["metrics"]
print(f"record: {clip_record['command']} | {clip_record['wall_time_s']:.0f} s on {clip_record['device']} | "
      f"retrieval picks the right digit for {m['digit']:.1%} of 200 held-out clips, the right direction for "
      f"{m['direction']:.1%}, both for {m['both']:.1%} (chance: 10 %, 12.5 %, 1.25 %)")
#
# ## 6. Text-to-video
#
# One prompt per held-out clip of section 2 (100; 20 in fast mode), the digits in turn, each asking for a direction
# the model has seen that digit move in ("a 3 moves left"); 50 steps of DDIM (25 in fast mode) at the model's own
# guidance scale, 5; judged as the naive baseline was, plus the share of clips whose ink moves as asked (motion, see
# below). The video DiT denoises all 80 tokens of a clip at once:

# %%
steps = 25 if FAST else 50
pairs = ladder_pairs(N)  # (N, 2): digit i % 10, and a direction the model has seen it move in
prompt_digits, prompt_directions = pairs[:, 0], pairs[:, 1]
prompts = [prompt(d, k) for d, k in pairs.tolist()]  # "a 0 moves left", "a 1 moves right", ...
generated = modes.text_to_video(video, prompts, torch.Generator().manual_seed(0), steps=steps)  # (N, 17, 1, 32, 32)
scores["video DiT: text-to-video"] = {**frame_consistency(generated, prompt_digits),
                                     **motion_figures(generated, prompt_directions)}
show_scores(scores)

# %%
gen_s = scores["video DiT: text-to-video"]
# NBVAL_CHECK_OUTPUT
claim("the video DiT's clips change their handwriting less from frame to frame than the naive clips",
      gen_s["restyle"] < 0.9 * naive_s["restyle"])
claim("their motion is smoother than the naive clips' (lower jitter), whose centre of ink jumps with every new digit",
      gen_s["jitter"] < naive_s["jitter"])
claim("their ink moves the way the prompt says in at least half of the clips", gen_s["motion"] >= 0.5)

# %%
video_player([real[:3], naive[:3], generated[:3]], ["real", "naive", "video DiT"])

# %% [markdown]
# What needs the frames to be made together, the video DiT has: its strokes change far less from frame to frame than
# the naive clips' (restyle), and its centre of ink moves smoothly (jitter), where the naive clips' jumps about
# because every frame's new digit puts its ink somewhere else. It now also follows the prompt: in the printout, LeNet
# reads the asked-for digit in most frames, and most clips move the way the prompt says (motion: the share of clips
# whose ink moves within 60° of the asked direction over the first four frames). Its digits move at about half the
# real clips' speed (jump), and a clip sometimes changes digit on the way; the ladder below measures both on 100
# prompts.
#
# **How this design was found.** The first version of this model read its prompts with Chapter 4's `clip-mnist`,
# through cross-attention alone, and trained on the buckets from its first step. It made coherent clips of the wrong
# digit. A **ladder** says where a model fails: the same judge, rung by rung, from the real clips, through the VAE, to
# the model asked for a single frame and then for clips, and whether the ink moves the way the prompt says (the
# centre of ink's move over the first four frames within 60° of the prompt's direction, at least a pixel long),
# beside the same clips judged against a shuffled direction: what a model that ignores the motion words scores
# (`recipes.video_ladder`). The first design's ladder, recorded before it was replaced (100 clips or prompts per
# rung, 50 steps):

# %%
first = ladder_record("videodit-moving-mnist-first-design")
print(ladder_table(first))
ldm_metrics = study_records(["ldm-mnist"])["ldm-mnist"]["metrics"]
print(f"\nfor comparison, Chapter 4's ldm-mnist (clip-mnist's text encoder too, images): the asked-for digit in "
      f"{ldm_metrics['accuracy']:.0%} of {ldm_metrics['n']} samples (its recorded evaluation)")

# %%
was = first["rungs"]
# NBVAL_CHECK_OUTPUT
claim("the first design, asked for one frame, drew the asked-for digit no more often than in its clips (within 5 points)",
      was["t2i"]["accuracy"] <= was["t2v"]["accuracy"] + 0.05)
claim("its prompt did not steer the motion: clips moved as asked within 10 points of a shuffled direction's score",
      abs(was["t2v"]["motion"] - was["t2v"]["motion_shuffled"]) < 0.10)

# %% [markdown]
# Read it from the top. LeNet reads 96 % of the real clips' frames as their digit, and 89 % after the VAE: the
# ceiling for any model on these latents. Asked for one frame, an image with no time in it, the first design drew the
# asked-for digit in 29 %, no better than in its clips (31 %): it failed as an *image* model before time entered, so
# more frames, a longer run or a GPU were not the first fix. And its prompt did not steer the motion (27 % of clips
# moved as asked, 23 % against a shuffled direction), because `clip-mnist` reads every motion word as unknown.
#
# So the search moved to the image rung, where a try costs minutes: the same DiT trained on single one-digit frames
# alone (3,000 steps of 64), changing only what reads the prompt (`recipes.video_design`, one recipe per variant),
# each judged on 200 images at three guidance scales:

# %%
design = study_records([f"videodit-image-{name}" for name in VARIANTS])
print(f"{'the prompt read by':22s} {'guidance 3':>10s} {'guidance 5':>10s} {'guidance 8':>10s} {'train s':>8s}")
for name in VARIANTS:
    record = design[f"videodit-image-{name}"]
    print(f"{name:22s} " + " ".join(f"{record['metrics'][g]:10.1%}" for g in ("g3", "g5", "g8"))
          + f" {record['wall_time_s']:8.0f}")
print("command:", design["videodit-image-label"]["command"], "(and the same for each variant)")
best = {name: max(design[f"videodit-image-{name}"]["metrics"].values()) for name in VARIANTS}

# %%
# NBVAL_CHECK_OUTPUT
claim("a CLIP trained on this chapter's captions draws the asked-for digit more often than chapter 4's clip-mnist "
      "at every guidance scale", all(design["videodit-image-clip-moving-mnist"]["metrics"][g]
                                     > design["videodit-image-clip-mnist"]["metrics"][g] for g in ("g3", "g5", "g8")))
claim("a class label, which needs no reading, is the ceiling: no text encoder beats it by more than 2 points",
      all(best[name] <= best["label"] + 0.02 for name in VARIANTS))

# %% [markdown]
# A class label, which needs no reading, sets the ceiling: 86.5 % of images the asked-for digit at guidance 5, 88 %
# at 8. Chapter 4's `clip-mnist`, though it knows every digit word, stays well below it (71 % and 75 %): a frozen
# encoder trained to match whole images to whole captions hands the DiT tokens that tell the digits apart less
# plainly than a label. `clip-moving-mnist`, trained on this chapter's clips and captions, reaches 80 % and 84 %,
# most of the way to the label. A text encoder trained with the DiT from scratch (GLIDE's way, `train_text=True`)
# reaches only 70 % and 71 % in the same steps: learning the words from the denoising loss alone is slower than
# starting from a CLIP. And the image stage matters as much as the encoder: with `clip-mnist` at guidance 3, 3,000
# steps on one-digit frames draw the asked-for digit in 62.5 % of images, where the first design, with the same
# encoder but trained on clips from its first step, drew 29 %. The shipped recipe takes both changes. (Each row is one
# run judged on 200 images: a share near 80 % has a standard error of about 3 points, so closer rows are a tie.)
#
# The shipped model's ladder, made by `python -m minilineage.recipes.video_ladder videodit-moving-mnist` (100 clips or
# prompts per rung, 50 steps, its own guidance):

# %%
ladder = ladder_record("videodit-moving-mnist")
print(ladder_table(ladder))
rung = ladder["rungs"]

# %%
targets = {  # the chapter's targets (issue 25), each as (measured, target)
    "text-to-image: the asked-for digit": (rung["t2i"]["accuracy"], 0.90),
    "text-to-video: the asked-for digit": (rung["t2v"]["accuracy"], 0.80),
    "text-to-video: one digit per clip": (rung["t2v"]["one_digit"], 0.90),
    "motion, as a share of the real clips'": (rung["t2v"]["motion"] / rung["real"]["motion"], 0.85),
    "held-out pairs: the asked-for digit": (rung["held_out"]["accuracy"], 0.70),
    "held-out pairs: motion, share of real": (rung["held_out"]["motion"] / rung["real"]["motion"], 0.70),
    "extension: the clip's digit, new frames": (rung["extend"]["accuracy"], 0.70),
    "image-to-video: the given digit": (rung["i2v"]["accuracy"], 0.80),
}
for name, (measured, target) in targets.items():
    print(f"{name:42s} {measured:6.1%}  target {target:4.0%}  {'met' if measured >= target else 'not yet'}")

# %%
# NBVAL_CHECK_OUTPUT
claim("asked for one frame, the shipped model draws the asked-for digit at least twice as often as the first design",
      rung["t2i"]["accuracy"] >= 2 * was["t2i"]["accuracy"])
claim("its prompt steers the motion: clips move as asked at least 30 points above a shuffled direction's score, "
      "on seen and on held-out pairs", all(rung[r]["motion"] >= rung[r]["motion_shuffled"] + 0.30 for r in ("t2v", "held_out")))
claim("on digit x direction pairs it never saw, it draws the digit within 10 points of the seen pairs",
      rung["held_out"]["accuracy"] >= rung["t2v"]["accuracy"] - 0.10)
claim("one digit per clip is capped by the VAE: its reconstructions of real clips keep one reading in under 80 %",
      rung["vae"]["one_digit"] < 0.80)

# %% [markdown]
# Against the first design: asked for one frame, the model now draws the asked-for digit in 68 % of images (29 %
# before); in clips, 73 % of frames (31 %). The prompt steers the motion: 71 % of clips move as asked, against 28 %
# for a shuffled direction (chance), where the real clips score 84 %, so it follows the motion words 84.5 % as
# often as the judge can see motion at all (the target was 85 %). On the ten digit × direction pairs it never saw, it still draws the digit
# in 65 % of frames and moves it as asked in 59 %: it composes a digit and a direction that it learnt apart, the test
# Sync-DRAW and MAGE set up on captioned Moving MNIST (they showed samples; these are the first measured figures we
# know of). Image-to-video and extension, scored on the frames they generate, keep the clip's digit in 70 % and 67 %.
#
# Not every target is met (the printout lists them), and the ladder says where the rest is. One digit per clip is
# the furthest off: 37 % of clips are read as one class in 90 % of their frames. But the VAE rung keeps one reading
# in only 77 % of the *real* clips it reconstructs, so no model on these latents can reach 90 %; the same goes for
# 90 % of single images against the VAE's 89 %. The next step is the VAE, not more of this model; below, which change
# to the VAE. The recipe trains in 38 minutes on the 2 CPU cores (its record in section 5: 2,277 s), over the 30 it
# aims for.
#
# **The VAE rung, alone.** So the next change is measured on that rung first, without a video DiT on top. One change
# at a time to `vae3d-moving-mnist` (`recipes.video_design`), each trained as it was (4,500 steps of 16 windows of 9
# frames) and judged on the ladder's 100 real clips decoded from their mean latents (`video_design.vae_rung`):
# twice the width (`vae3d-moving-mnist-wide`: 32 channels at half resolution and 64 at quarter, four times the
# weights, the same 5 × 4 × 8 × 8 latents, so a DiT on them would cost the same) and half the compression in time
# (`vae3d-moving-mnist-t2`: 2 frames per latent frame, 9 × 4 × 8 × 8 latents, 144 tokens for the DiT instead of 80).
# Beside them chapter 4's 2-D VAE applied to every frame alone (4 × 8 × 8 per frame, no compression in time):

# %%
vae_study = study_records([f"vae3d-moving-mnist-{name}" for name in VAE_VARIANTS])
vae_rows = {"vae3d-moving-mnist (shipped)": (vae_rung(vae3d.eval()),
                                             study_records(["vae3d-moving-mnist"])["vae3d-moving-mnist"]["wall_time_s"]),
            **{name: (r["metrics"], r["wall_time_s"]) for name, r in vae_study.items()},
            "latent-vae-mnist, per frame (2-D)": (vae_rung(lambda x: per_frame(vae2d, x)), None)}
print(f"{'VAE':34s} {'PSNR dB':>8s} {'digit':>6s} {'one digit':>10s} {'identity':>9s} {'motion':>7s} {'train s':>8s}")
for name, (m, seconds) in vae_rows.items():
    print(f"{name:34s} {m['psnr']:8.1f} {m['accuracy']:6.1%} {m['one_digit']:10.0%} {m['identity']:9.1%} "
          f"{m['motion']:7.0%} {'-' if seconds is None else f'{seconds:.0f}':>8s}")

# %%
# NBVAL_CHECK_OUTPUT
m = {name: figures for name, (figures, _) in vae_rows.items()}
shipped_vae, wide_vae, t2_vae = m["vae3d-moving-mnist (shipped)"], m["vae3d-moving-mnist-wide"], m["vae3d-moving-mnist-t2"]
claim("four times the weights does not lift the rung: the wide VAE's clips read as their digit no more often",
      wide_vae["accuracy"] <= shipped_vae["accuracy"] + 0.02)
claim("half the compression in time does: at least 92 % of frames read as their digit, and at least 8 points more "
      "clips keep one digit", t2_vae["accuracy"] >= 0.92 and t2_vae["one_digit"] >= shipped_vae["one_digit"] + 0.08)

# %% [markdown]
# Width is not what the VAE lacks: with the same steps and learning rate, four times the weights reconstructs worse
# (25.2 dB against 27.6) and reads worse (83.5 % of frames as their digit, 69 % of clips keeping one, against 89.4 %
# and 77 %). Time is. With 2 frames per latent frame instead of 4, the same small network reaches 31.0 dB, 94.1 % of
# frames and 87 % of clips, as good as chapter 4's 2-D VAE on every frame alone (30.9 dB, 92.3 %, 89 %), in ten
# minutes of training. Does that lift the video rung? The re-captioning study's true-caption run of section 11
# (`videodit-captions-true`: this network, 2,000 steps of 32 clips, one bucket) once more on the t2 VAE's latents,
# 9 latent frames instead of 5, 144 tokens instead of 80 (`videodit-clips-t2`), judged the same way:

# %%
equal = study_records(["videodit-captions-true", "videodit-clips-t2"])
print(f"{'latents (same network, 2,000 steps)':40s} {'digit':>6s} {'one digit':>10s} {'identity':>9s} {'motion':>7s} {'train s':>8s}")
for name, what in (("videodit-captions-true", "vae3d-moving-mnist, 5 x 4 x 8 x 8"), ("videodit-clips-t2", "vae3d-moving-mnist-t2, 9 x 4 x 8 x 8")):
    m = equal[name]["metrics"]
    print(f"{what:40s} {m['accuracy']:6.1%} {m['one_digit']:10.0%} {m['identity']:9.1%} {m['motion']:7.0%} "
          f"{equal[name]['wall_time_s']:8.0f}")

# %%
# NBVAL_CHECK_OUTPUT
claim("at the same steps, the t2 latents draw the asked-for digit in at least 5 points more frames",
      equal["videodit-clips-t2"]["metrics"]["accuracy"] >= equal["videodit-captions-true"]["metrics"]["accuracy"] + 0.05)

# %% [markdown]
# Partly. At the same 2,000 steps the asked-for digit rises from 25.4 % to 33.6 % of frames and the motion from 75 %
# to 80 % of clips, but one digit per clip does not (19 % and 13 %: at this short training both are low, and 100
# prompts cannot tell them apart), and each step costs more (the DiT alone 1.9 times, docs/RESULTS.md; the whole
# run 1.4 times). So the next run for this chapter's model is the full recipe on the t2 latents, against the 30
# minutes it aims for; until then section 6's figures are those of the shipped VAE.
#
# **What guidance does to a video.** Classifier-free guidance (Chapter 4) pushes each denoising step away from the
# unconditional prediction. The same prompts at three guidance scales:

# %%
def at_guidance(w: float) -> dict:
    clips = modes.text_to_video(video, prompts, torch.Generator().manual_seed(0), steps=steps, guidance=w)
    return {**frame_consistency(clips, prompt_digits), **motion_figures(clips, prompt_directions)}


by_guidance = {w: gen_s if w == video.config.guidance else at_guidance(w) for w in (1.0, 3.0, 5.0, 8.0)}
show_scores({f"video DiT, guidance {w:g}": f for w, f in by_guidance.items()})

# %%
# NBVAL_CHECK_OUTPUT
claim("stronger guidance makes steadier clips: identity rises from guidance 1 to 3 to 5 to 8",
      by_guidance[1.0]["identity"] < by_guidance[3.0]["identity"] < by_guidance[5.0]["identity"] < by_guidance[8.0]["identity"])
claim("without guidance the prompt is followed far less: the asked-for digit in at least 20 points fewer frames than at 5",
      by_guidance[1.0]["accuracy"] <= by_guidance[5.0]["accuracy"] - 0.20)
claim("beyond 5 it buys no more accuracy (within 5 points) and no more clips that move as asked",
      by_guidance[8.0]["accuracy"] <= by_guidance[5.0]["accuracy"] + 0.05
      and by_guidance[8.0]["motion"] <= by_guidance[5.0]["motion"])

# %% [markdown]
# Without guidance (scale 1) the model follows its prompt in about a third of the frames and about half of the
# motions, and its clips change their strokes most (restyle): guidance is what holds them to the prompt and together.
# Up to 5 it raises everything; beyond, it keeps raising identity but buys no more right digits, fewer clips move as
# asked and the motion turns jerky (jitter rises): a strong push toward "what the prompt looks like" freezes whatever
# the model first drew. That is why the recipe samples at 5 (its image-rung study found the same optimum). With 20
# prompts in fast mode, a few points either way are noise.
#
# The reverse process, all frames at once. At each step the player shows, for two prompts, the noisy clips $x_t$ the
# sampler holds (top two rows, decoded: what the VAE makes of a noisy latent) and the DiT's current guess of the clean
# clips (bottom two rows, $\hat x_0$, decoded). The clip sharpens as a whole, not frame after frame.

# %%
denoising_player(video, ["a 3 moves right", "a 7 moves down"], steps=4 if FAST else 25, show=("xt", "x0_hat"))

# %% [markdown]
# ## 7. One model, every mode: which latent frames are given
#
# Because training masked random frames, the same checkpoint does every task Sora's report shows, by choosing which
# latent frames to give at sampling time (`recipes.video_modes`):
#
# | mode | given latent frames | |
# | --- | --- | --- |
# | text-to-video | none | section 6 |
# | text-to-image | none, one frame | `frames=1` |
# | image-to-video | frame 0 = the image's own latent | an image is a 1-frame video |
# | continuation | the first latent frames of a clip | video prediction: below, two digits crossing |
# | extension | the last 2 latent frames so far, again and again | any length |
# | interpolation | the first and the last | |
# | merging | the end of one clip, the start of another | |
# | editing (SDEdit) | none: the clip's latents noised part way, then denoised | Meng et al. 2021 |
#
# All of it happens in latent space; latents are decoded once, at the end. Each mode on the same held-out clips:

# %%
k = min(N, 10)
g = lambda: torch.Generator().manual_seed(1)  # noqa: E731  (every mode starts from the same noise)
texts = [f"a {d} moves" for d in digits[:k].tolist()]
results = {
    "text-to-image (F = 1)": modes.text_to_video(video, texts, g(), frames=1, steps=steps),
    "image-to-video: frame 0 given": modes.image_to_video(video, real[:k, 0], texts, g(), steps=steps),
    "extension x2 windows: 17 -> 41 frames": modes.extend(video, real[:k], texts, g(), windows=2, steps=steps),
    "interpolation: first and last given": modes.interpolate(video, real[:k], texts, g(), steps=steps),
    "merging: clip i, then clip i + 1": modes.merge(video, real[:k], real[1 : k + 1], [f"a {d} moves" for d in digits[1 : k + 1].tolist()],
                                                    g(), steps=steps),
}
for name, out in results.items():
    print(f"{name:40s} -> {tuple(out.shape[1:])}")

# %%
strips([real[:2], *[out[:2] for out in results.values()]], ["the input clips", *results],
       description="mode")

# %% [markdown]
# The chooser above steps through the modes (press play, or drag the slider). How well does each keep to what it was
# given? Each is scored on the frames it *generates* only, against the clip's digit (the given frames would flatter
# it): image-to-video on frames 1 to 16 (frame 0 is the given image); extension on the new frames 17 to 40, which
# the model must carry over from the two given latent frames across more than twice the training length;
# interpolation on frames 1 to 12 (its first latent frame is frame 0, its last frames 13 to 16):

# %%
generated_only = {"image-to-video: frames 1-16": results["image-to-video: frame 0 given"][:, 1:],
                  "extension: new frames 17-40": results["extension x2 windows: 17 -> 41 frames"][:, 17:],
                  "interpolation: frames 1-12": results["interpolation: first and last given"][:, 1:13]}
mode_scores = {name: frame_consistency(clips, digits[:k]) for name, clips in generated_only.items()}
show_scores(mode_scores)

# %%
# NBVAL_CHECK_OUTPUT
claim("every mode's generated frames show the given clip's digit more often than chance (10 %)",
      all(scores["accuracy"] > 0.1 for scores in mode_scores.values()))
claim("extension made clips of 41 frames, 2.4x the training length, in one latent video",
      results["extension x2 windows: 17 -> 41 frames"].shape[1] == 41)

# %% [markdown]
# With 10 clips the three rows differ by less than their noise, so this table cannot say that a mode given more
# keeps more; the ladder of section 6 scores image-to-video and extension the same way on 100 clips (70 % and 67 % of
# the generated frames read as the clip's digit, beside 73 % for text-to-video). Extension carries the digit across
# more than twice the training length and loses only a little of it: the long-duration drift the Sora report lists
# among its limits is measurable here, and small. Where a mode does lose the digit, it is the same failure as
# text-to-video's, a digit that turns into another one mid-clip; frame masks give the model the right *inputs* for
# every mode, and carrying a shape forward is what the model as a whole has to learn.
#
# **Object permanence.** The Sora report says its model often keeps a thing as itself when it is hidden for a while
# or leaves the frame. The small version: two digits that cross, one covering the other, and part again. Among
# two-digit test clips, 100 whose digits (two different classes) start apart, meet in the middle of the clip and part
# again (`recipes.video_permanence.crossing_clips`); the model is given their first 5 frames (two latent frames:
# which digits, where, moving how) and their captions, and continues them to 17 (`modes.continue_video`). A tracker
# that knows how digits move follows each digit: it predicts the next centre from the last one and the velocity
# (bouncing off the walls), corrects it to the centre of the nearest ink while the digits are apart, and coasts
# through the overlap, where ink cannot be told apart. After the digits part, LeNet reads each one: kept if it is
# read as itself in most of those frames, swapped if as the other digit. The same judge reads the real clips first
# (`python -m minilineage.recipes.video_permanence videodit-moving-mnist`, 100 clips, 50 steps):

# %%
permanence = permanence_record("videodit-moving-mnist")
print(permanence_table(permanence))
crossing = crossing_clips(1)
continued = modes.continue_video(video, crossing.clips[:, :GIVEN], crossing.captions, g(), steps=steps)
print(f"{crossing.captions[0]!r}: the test clip, then the model's continuation of its first {GIVEN} frames")
picture = grid(torch.cat([crossing.clips[0], continued[0]]), nrow=crossing.clips.shape[1])  # (1, H', W') uint8
picture = picture // 32 * 36  # 8 grey levels, enlarged by the browser: one small still picture
display(Image(png_bytes(picture, scale=1), width=2 * picture.shape[-1]))

# %%
# NBVAL_CHECK_OUTPUT
kept = permanence["rows"]
claim("the judge works: on real clips the tracker sees at least 80 % of the crossings through and LeNet reads at "
      "least 90 % of the digits as themselves after them", kept["real"]["crossed"] >= 0.8 and kept["real"]["kept"] >= 0.9)
claim("the model does not keep two digits through an overlap: under half of its continued clips part them again, "
      "and under half of those digits come out as themselves", kept["model"]["crossed"] < 0.5 and kept["model"]["kept"] < 0.5)

# %% [markdown]
# The judge is sound: on the real clips it follows 84 % of the crossings through and reads 96 % of the digits as
# themselves after them (1 % swapped); through the VAE, 80 % and 85 %. The model fails the test plainly. Once its two
# digits touch, it draws one blob where two were (the second row above, for one clip), and it rarely draws two digits
# again: the tracker finds them apart after the meeting in only 23 % of its clips, and of those digits 17 % come out as
# themselves and 22 % as the other one: as often swapped as kept. The report lists this among Sora's limits too
# (objects that merge, or appear out of nowhere); here it is measured. Why is not measured yet. Two candidates: two
# overlapping 16-pixel digits share the same few 2 × 2 tokens of the 8 × 8 latents, and a full crossing is rare in
# the training clips (this test searched 20,000 two-digit clips for its 100).
#
# **Editing.** SDEdit needs no masks at all: noise the clip's latents to a time $t = sT$ and denoise them with a new
# prompt. At strength $s = 0$ the clip comes back as the VAE reconstructs it; at $s = 1$ the input is forgotten.
# Between, the early steps of the reverse process decide *what* is drawn and the late ones only the details, so a
# middle strength keeps the motion and the placement and can change the digit. Below, the first held-out clips edited
# towards "a 5", at six strengths; every frame is noised to the same $t$ and denoised together, so the edit stays
# coherent in time.

# %%
edit = lambda c, p, s, gen: modes.edit(video, c, p, s, gen, steps=steps)  # noqa: E731
sdedit_player(edit, real[:2], ["a 5 moves", "a 5 moves"])

# %%
toward = torch.full((k,), 5)
edited = {s: frame_consistency(edit(real[:k], ["a 5 moves"] * k, s, g()), toward) for s in (0.0, 0.5, 1.0)}
for s, f in edited.items():
    print(f"strength {s:.1f}: frames read as a 5: {f['accuracy']:.2f}, identity {f['identity']:.2f}")

# %%
# NBVAL_CHECK_OUTPUT
claim("the share of frames read as the new digit grows with the strength",
      edited[0.0]["accuracy"] < edited[0.5]["accuracy"] < edited[1.0]["accuracy"])

# %% [markdown]
# The share grows with the strength (the printout; 10 clips, so a few frames either way are noise): at 0 the clips
# come back as they were (the few frames read as a 5 are clips that were 5s already, or read as one), half-way many
# have become a 5 while keeping their place and motion, and at 1 the input is forgotten and the clips are the
# prompt's. Identity dips in the middle, where some clips change digit during the clip. Drag the slider to see where
# it lets go of the input.
#
# ## 8. Sizes and lengths never seen in training
#
# Training saw 17- and 9-frame clips of 32 × 32, 17-frame clips of 24 × 24, and images. Because the VAE is
# convolutional and the positions are a function, the same checkpoint can be asked for other shapes directly,
# without extension. The picker steps through them:

# %%
shapes = [(17, (32, 32)), (9, (48, 48)), (17, (24, 48)), (17, (48, 24))]
picked = [modes.text_to_video(video, prompts[:k], torch.Generator().manual_seed(2), frames=f, size=s, steps=steps)
          for f, s in shapes]
shape_name = lambda f, s: f"{f} frames of {s[0]} x {s[1]}"  # noqa: E731  (height x width)
strips([out[:2] for out in picked], [shape_name(f, s) + (" (trained)" if (f, s) in ((17, (32, 32)), (17, (24, 24))) else " (never seen)")
                for f, s in shapes], description="shape")

# %%
shape_scores = {shape_name(f, s): {**frame_consistency(out, prompt_digits[:k]), **motion_figures(out, prompt_directions[:k])}
                for (f, s), out in zip(shapes, picked, strict=True)}
show_scores(shape_scores)

# %%
trained = shape_scores["17 frames of 32 x 32"]["identity"]
unseen = [shape_name(f, s) for f, s in shapes[1:]]
# NBVAL_CHECK_OUTPUT
claim("every shape never seen in training, wide and tall ones included, keeps its digit less steadily than the "
      "trained 32 x 32 clips (identity)", all(shape_scores[name]["identity"] < trained for name in unseen))
claim("yet each still draws the asked-for digit in over a third of its frames (chance: a tenth)",
      all(shape_scores[name]["accuracy"] > 1 / 3 for name in unseen))

# %% [markdown]
# At every shape it never trained on, the model keeps its digit less steadily than at the trained 32 × 32 (the
# table), but it still draws digits that move: 48 × 48, and the non-square frames the Sora
# report makes a point of (wide 24 × 48 and tall 48 × 24, its "native aspect ratios": `--size 24x48` on the command
# line). With 10 clips, differences of a few points are noise. What transfers is the *input*: nothing in the model
# is tied to one grid, so any size the patches divide and any length the VAE encodes is a valid sequence. Quality at
# a new shape does not come with it and must be measured shape by shape: Chapter 5's classifier, with the same
# absolute sin-cos positions, fell to 22.8 % at 44 × 44 where
# it scored 95 % at its trained 28 × 28, and only the stretched positions held. (Sizes must be divisible by 8 and lengths of the form $1 + 4k$: the VAE's two stride-2 stages and the DiT's
# 2 × 2 patches, and the VAE's time compression. `latent_shape` says which sizes fit when one does not.)
#
# ## 9. From the command line, and training it yourself
#
# Every mode is also a `minilineage sample` command; `.gif` and `.mp4` outputs are playable grids of the clips:
#
# ```
# minilineage sample videodit-moving-mnist --prompt "a 3 moves left" --n 8 --out v.npz   # or v.gif, v.mp4
# minilineage sample videodit-moving-mnist --prompt "a 3 moves right" --n 8 --frames 33 --size 40 --out long.npz
# minilineage sample videodit-moving-mnist --prompt "a 3 moves left" --frames 1 --out images.png       # text-to-image
# minilineage sample videodit-moving-mnist --mode extend --windows 2 --init-video v.npz --prompt "a 3 moves" --out v2.mp4
# minilineage sample videodit-moving-mnist --mode edit --strength 0.6 --init-video v.npz --prompt "a 5 moves" --out e.npz
# ```
#
# `--mode` also takes `i2v`, `interpolate` and `merge` (two `--init-video` files); `minilineage sample --help` lists
# them all. The three models were trained with `minilineage train vae3d-moving-mnist --out assets/checkpoints`,
# `minilineage train clip-moving-mnist --out assets/checkpoints` and then `minilineage train videodit-moving-mnist
# --out assets/checkpoints` (which loads the VAE and the CLIP's text encoder as frozen parts); their records give the
# times. `train_with_plot` runs the second here; fast mode runs 3 steps, to show the
# loop and time a step:

# %%
result = train_with_plot("videodit-moving-mnist", steps=3 if FAST else None, out=None, progress=not FAST, device="cpu",
                         evaluate=not FAST)
print(f"{result.record['step']} steps in {result.record['wall_time_s']} s on {result.record['device']}")

# %% [markdown]
# `--preset gpu` trains a wider video DiT (DiT-B: width 192, 8 blocks, 6.3 M parameters) for 40,000 steps of 128
# clips. The same code has recipes for real videos too: `vae3d-ucf101` and `videodit-ucf101` (GPU presets) train on
# 17 frames of 48 × 64 from the UCF-101 action videos (`load_dataset("ucf101")` reads a local copy, and says where to
# get one), conditioned on the 101 action classes (`minilineage sample runs/videodit-ucf101.pt --labels 0-9 --out
# actions.gif`: the first ten, as `classInd.txt` numbers them from 0). No GPU has been available to the course, so none of these runs has been made yet.
#
# ## 10. Re-captioning, first half: a captioner
#
# DALL·E 3 (Betker et al. 2023) found that a text-to-image model follows prompts far better when it trains on
# detailed, accurate captions, and got them by training a captioner and letting it rewrite the captions of the whole
# training set; the Sora report does the same for videos. Here the experiment fits in the small: moving-mnist clips can
# be had with their true captions or with one poor caption for all ("a video of digits"), so a captioner trained on
# captioned clips can write captions for poorly captioned ones, and we can check them.
#
# `captioner-moving-mnist` is CoCa (Yu et al. 2022) at small size, on the causal VAE's latents: a transformer over
# the latent video's 2 × 2 spacetime patches; a causal text decoder whose extra last token sums up the caption; and a
# second causal decoder that also attends to the video tokens and predicts the next word. It trains on CLIP's
# contrastive loss between the two summaries plus the next-word cross-entropy, and writes captions greedily, one word at
# a time (`models.captioner`). Held-out clips that carry only the poor caption, re-captioned:

# %%
captioner = load_model("captioner-moving-mnist")
poorly = load_dataset("moving-mnist", "test", n=N, captions="poor")  # the test clips, every caption "a video of digits"
truth = load_dataset("moving-mnist", "test", n=N).texts  # what they really show
written = recaption(captioner, poorly)
for i in range(4):
    print(f"had {poorly.texts[i]!r}\n  written {written[i]!r}\n  true    {truth[i]!r}")
written_s = caption_figures(written, truth)
single_s = caption_figures(recaption(captioner, one), one.texts)  # section 2's one-digit clips
for name, f in (("all clips (1 or 2 digits)", written_s), ("one-digit clips", single_s)):
    print(f"{name:26s} {f['exact']:4.0%} written word for word as the true caption, {f['digits']:4.0%} naming the right "
          f"digits, {f['motion']:4.0%} the right motions")

# %%
# NBVAL_CHECK_OUTPUT
claim("the written captions name the right digits in at least 35 % of all clips and 60 % of one-digit clips "
      "(the poor caption: in none)", written_s["digits"] >= 0.35 and single_s["digits"] >= 0.6)

# %% [markdown]
# On the 20 clips above (fast mode, as this notebook is saved) the captioner wrote 35 % of the captions word for word
# as the truth, named the right digits in 50 % and gave the right motions in 60 %; on one-digit clips, 65 %, 75 % and
# 80 %. With N = 100 (the record's evaluation is the same test): 32 %, 47 % and 53 %; on one-digit clips 63 %, 72 % and
# 84 %. A second digit is where it fails most, and on one digit it reads the motion ("moves down-right and bounces")
# better than the digit. Trained in 7 minutes on 2 CPU cores
# (`minilineage train captioner-moving-mnist`: 5,000 steps of 32 clips), it is a weak captioner, but a useful one:
# every caption it writes says more than "a video of digits".
#
# ## 11. Re-captioning, second half: what better captions buy
#
# Now the experiment DALL·E 3 ran, in the small. One set of training clips (a fresh draw, seed 7, that the captioner
# never saw: 4,500 clips of 17 frames of 32 × 32), three caption sets for it: the true motion captions; the poor
# caption, "a video of digits", for every clip; and the captions `captioner-moving-mnist` writes for the poorly
# captioned clips (`recipes.recaption.study_clips`). The same video DiT trains on each for the same 2,000 steps of
# 32 clips (`videodit-captions-true`, `-poor`, `-recaptioned`, one bucket): the shipped network of section 6, whose
# text encoder (`clip-moving-mnist`) reads every caption word, so the study measures what captions buy for the motion
# as well as for the digit. (It has no image stage: that stage's captions would be true ones for all three.) Each is
# judged as the ladder judges text-to-video: 100 one-digit prompts of seen digit × direction pairs, 50 steps at
# guidance 5, the share of frames LeNet reads as the asked-for digit, of clips that keep one digit, and of clips
# that move as asked beside the same clips scored against shuffled directions (`recaption.eval_caption_study`). The
# three runs take about an hour of CPU, so their records are read from `assets/checkpoints/`; `RETRAIN_STUDY = True`
# below trains them again here.
#
# First, how good are the captions the third model trains on?

# %%
RETRAIN_STUDY = False  # True: train the three study runs here, one after the other (about an hour of CPU)
study_n = 500 if FAST else None  # None: all 4,500 study clips (captioning them takes about 25 s)
rewritten = study_clips("recaptioned", n=study_n)
study_truth = study_clips("true", n=study_n)
study_captions = caption_figures(list(rewritten.texts), list(study_truth.texts))
for i in range(3):
    print(f"written {rewritten.texts[i]!r}\n  true  {study_truth.texts[i]!r}")
print(f"{len(rewritten)} study clips: {study_captions['exact']:.0%} written word for word as the truth, "
      f"{study_captions['digits']:.0%} naming the right digits, {study_captions['motion']:.0%} the right motions")

# %%
# NBVAL_CHECK_OUTPUT
claim("the re-captions name the right digits in at least 35 % of the study's clips", study_captions["digits"] >= 0.35)

# %% [markdown]
# On these 500 clips (fast mode) the captioner wrote 37 % of the captions word for word, named the right digits in 55 %
# and gave the right motions in 56 %; on all 4,500 clips, 35 %, 52 % and 56 %: as on the held-out clips of section 10,
# a weak captioner. Now the three video DiTs:

# %%
sources = ("poor", "recaptioned", "true")
study = study_records([f"videodit-captions-{source}" for source in sources], retrain=RETRAIN_STUDY)
scores = {source: study[f"videodit-captions-{source}"]["metrics"] for source in sources}
print(f"{'captions':12s} {'digit':>6s} {'one digit':>10s} {'identity':>9s} {'motion':>7s} {'shuffled':>9s} {'train s':>8s}")
for source in sources:
    m = scores[source]
    print(f"{source:12s} {m['accuracy']:6.1%} {m['one_digit']:10.0%} {m['identity']:9.1%} {m['motion']:7.0%} "
          f"{m['motion_shuffled']:9.0%} {study[f'videodit-captions-{source}']['wall_time_s']:8.0f}")
print("command:", study["videodit-captions-true"]["command"], "(and the same for -poor and -recaptioned)")

# %%
# NBVAL_CHECK_OUTPUT
claim("trained on poor captions, the model follows neither the digit (at most 13 % of frames; chance is 10 %) nor the "
      "motion (within 10 points of the shuffled control)",
      scores["poor"]["accuracy"] <= 0.13 and abs(scores["poor"]["motion"] - scores["poor"]["motion_shuffled"]) <= 0.10)
claim("re-captioned training follows the prompt: at least 10 points more frames of the asked-for digit and 30 points "
      "more clips moving as asked than poor captions", scores["recaptioned"]["accuracy"] >= scores["poor"]["accuracy"] + 0.10
      and scores["recaptioned"]["motion"] >= scores["poor"]["motion"] + 0.30)
claim("and comes within 5 points of true captions on both", all(abs(scores["recaptioned"][k] - scores["true"][k]) <= 0.05
                                                                for k in ("accuracy", "motion")))

# %% [markdown]
# What DALL·E 3 reports, at a size a laptop trains. With one caption for every clip the prompt carries nothing: the
# model draws the asked-for digit in 7.8 % of frames (chance is 10 %) and moves it as asked in 26 % of clips, where
# shuffled directions score 24 %. Trained on the captioner's captions, the same network draws the asked-for digit in
# 24.2 % of frames and moves it as asked in 79 % of clips; on the true captions, 25.4 % and 75 %. So re-captioning
# recovers nearly all that true captions give, from a captioner that names the right digits and motions in only about
# half of the clips (a wrong caption teaches little against the many right ones, we suppose; this study does not test
# that). The motion is where captions buy most: one bucket and 2,000 steps already move three clips in four as asked,
# while the digit stays far below section 6's shipped model (73 %), which had 4.5 times the steps, images first. Two
# honest caveats: 100 prompts and one seed per run, so the 1- and 4-point differences between true and re-captioned
# captions are within the noise (their order is not a finding); and few clips keep one digit here (19–20 %), as for
# section 6's first design, which had no image stage either.
#
# ## 12. Exercises
#
# Run an exercise's cell to check your answer; `show_solution("ch7.tokens")` (with the exercise's name) prints the
# reference answer. Try first.
#
# **Exercise 1.** How many latent frames does the causal VAE give a clip of 33 frames?

# %%
my_latent_frames = None  # a number
exercise("ch7.latent_frames", my_latent_frames)

# %% [markdown]
# **Exercise 2.** How many tokens does the video DiT read for a clip of 33 frames of 48 × 48 pixels?

# %%
my_tokens = None  # a number
exercise("ch7.tokens", my_tokens)

# %% [markdown]
# **Exercise 3.** Write the causal padding: a function of `(x, kernel)`, x a clip (B, C, F, H, W) as a 3-D convolution
# reads it, that returns it padded along time so that a convolution with `kernel` frames and no padding gives
# `CausalConv3d`'s output.

# %%
my_causal_pad = None  # def my_causal_pad(x, kernel): ...
exercise("ch7.causal_pad", my_causal_pad)

# %% [markdown]
# **Exercise 4.** Interpolation gives the first and the last latent frame. Write a function of `(n, f)` that returns
# the frame mask for n clips of f latent frames: a bool tensor (n, f), True where a frame is given.

# %%
my_interpolation_mask = None  # def my_interpolation_mask(n, f): ...
exercise("ch7.interpolation_mask", my_interpolation_mask)

# %% [markdown]
# **Exercise 5.** Write the flicker of section 3: a function of `(x, x_hat)`, clips (N, F, C, H, W), returning the
# root-mean-square of the difference between the frame-to-frame changes of `x_hat` and of `x`.

# %%
my_flicker = None  # def my_flicker(x, x_hat): ...
exercise("ch7.flicker", my_flicker)

# %% [markdown]
# **Exercise 6 (think).** The naive baseline was handed the true motion and still made worse videos. Which of the
# frame-consistency figures would a model that draws one fixed digit image and slides it along the path score
# perfectly, and which real property of a video would it still miss?
#
# ## What goes wrong, and what comes next
#
# - Frames drawn one at a time are good images and a bad video: the handwriting changes every frame (section 2).
#   Coherence needs the frames to be generated together.
# - A causal VAE compresses time as well as space, and makes an image exactly a 1-frame video. The price of its
#   extra compression is visible (blur, flicker); the gain is a sequence short enough for attention.
# - Spacetime patches with 3-D sin-cos positions make every clip shape a sequence of tokens for Chapter 6's DiT
#   blocks, unchanged. Frame masks and per-frame timesteps make one checkpoint serve every mode, and a function
#   for positions makes any size and length a valid input.
# - Generating the frames together buys coherence (smooth motion, steady strokes) but not, by itself, good digits.
#   The first design of this chapter's video DiT drew the asked-for digit in about a third of its frames, and asked
#   for a single frame it did no better: the ladder of section 6 put the failure in the image model, before time
#   enters, not in the length of the run or the lack of a GPU. Measured one change at a time on images, the fix was in
#   the design: a text encoder that knows the captions' words (a CLIP trained on them), its pooled token in the
#   condition vector, and an image stage before the clips. The same budget then draws the asked-for digit in 73 % of
#   frames and moves it as asked in 71 % of clips (real clips: 84 %), on digit × direction pairs it never saw too.
# - What is left is measured too: a clip that changes digit on the way (one digit per clip in 37 %), which the VAE
#   caps (77 % even for real clips). Measured on that rung, the cap is the VAE's compression in time, not its width:
#   2 frames per latent frame instead of 4 keep one digit in 87 % of real clips. A video DiT on those latents (nearly
#   twice the tokens) is the next run.
# - Sora's answer to prompts that the data's captions do not support, from DALL·E 3, is **re-captioning**: train a
#   captioner, write detailed captions for the training videos, and train on those. Sections 10 and 11 did it in the
#   small, on the shipped network: a captioner that names the right digits in about half the clips, and a video DiT
#   trained on its captions that follows the prompt's digit and motion about as well as one trained on the true
#   captions (24 % of frames and 79 % of clips, against 25 % and 75 %), where the poor caption gives chance (8 % and
#   26 %). Better captions, better prompt following, even from a weak captioner.
# - The Sora report names its own limits: it does not model the physics of many basic interactions (glass
#   shattering), an action does not always change an object's state (a bitten cookie without a bite mark), and long
#   samples drift into incoherence or grow objects out of nowhere. Two of these have measurable analogues here, in
#   section 6's ladder: long-duration drift is extension losing the digit over its new frames, objects out of nowhere
#   are clips whose frames LeNet does not read as one digit. The report also claims object permanence (a thing that
#   is covered comes back as itself); section 7 measured it with two digits crossing, and this model does not have
#   it: once its two digits touch it draws one blob, and only 17 % of the digits come out as themselves (real clips
#   96 %).
# - Everything here scales by its presets: the same code trains on GPUs with `--preset gpu`, and on UCF-101's real
#   videos.
