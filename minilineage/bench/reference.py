"""The references: diffusers' UNet2DModel and DiTTransformer2DModel configured for our models' jobs.

`reference_unet(UNetConfig, size)` is the UNet2DModel that does the job of `UNet(config)`;
`reference_dit(DiTConfig, size)` the DiTTransformer2DModel that does the job of `DiT(config)`.
`reference_job(config)` trains either on eps with diffusers' scheduler (DDPMScheduler's add_noise,
as DDIMScheduler's) and samples with DDIMScheduler, through the same frozen autoencoder as ours for
a latent model. What is matched and what differs is said in full, per denoiser, in REFERENCE_NOTES
(the bench prints it; tests/test_bench.py checks parameters and FLOPs layer by layer).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from minilineage.bench.measure import Job
from minilineage.diffusion.pipeline import PipelineConfig
from minilineage.models.dit import DiTConfig
from minilineage.models.unet import UNetConfig

UNET_MATCHED = (  # ddpm-mnist against UNet2DModel
    "same job: (B, 1, 28, 28) images, t and labels in, eps_hat out; the 2x2 space-to-depth is done outside "
    "UNet2DModel (in/out channels 4, 14x14 maps)",
    "levels and widths (32, 64); one ResBlock per encoder level (layers_per_block=1); stride-2 conv downsampling",
    "ResBlocks: GN-SiLU-conv3x3 twice, embedding as scale and shift (resnet_time_scale_shift='scale_shift'), "
    "1x1-conv skip where widths change",
    "self-attention at 7x7 and in the middle (ResBlock-attention-ResBlock), 4 heads x 16, GroupNorm 8 groups "
    "everywhere, biased q/k/v/out projections",
    "time + class embedding (11 = 10 classes + null) of width 128; output GN-SiLU-conv3x3",
)
UNET_DIFFERS = (
    "decoder: UNet2DModel has layers_per_block + 1 = 2 ResBlocks (and attentions) per level, ours 1, and it also "
    "reads the skips taken after conv_in and after the downsample",
    "its upsampling conv keeps 64 channels at 14x14; ours outputs 32 there",
    "its time MLP reads 32 sinusoids (block_out_channels[0]), ours 128; initialisation differs (no effect on cost)",
)
DIT_MATCHED = (  # a class-conditional DiT recipe (dit-mnist) against DiTTransformer2DModel
    "same job: the recipe's images in (through the same frozen autoencoder, same code and scale, for a latent "
    "recipe), t and labels in, eps_hat out; sampling decodes with the same decoder",
    "patch size, width, depth, heads and MLP 4x as ours (the size line above); patch embedding (its Conv2d k=p s=p "
    "= our linear on p*p*C) plus fixed 2-D sin-cos positions",
    "blocks: adaLN-Zero (shift, scale, gate x 2 from one Linear(D, 6D) on SiLU(c)), LayerNorms without affine "
    "(eps 1e-6), biased q/k/v/out projections, Linear-GELU-Linear MLP",
    "final layer: adaLN (Linear(D, 2D)) + Linear(D, p*p*C); class table of 11 (10 + null); out channels = in "
    "(eps or v, no learnt sigma)",
)
DIT_DIFFERS = (
    "conditioning: every DiTTransformer2DModel block has its own timestep MLP (256 sinusoids -> D -> D) and label "
    "table (the final layer reuses block 0's); ours computes c = embed(t) + embed(y) once (D sinusoids -> D -> D)",
    "labels dropped at 0.1 inside diffusers' LabelEmbedding (global RNG) rather than at our p_uncond = 0.1 in the "
    "pipeline; GELU tanh approximation vs exact GELU; initialisation differs (no effect on cost)",
)
def size_line(config: PipelineConfig) -> str:
    """What both networks are, in numbers: the first "matched" line of a comparison."""
    d, shape = config.denoiser["config"], config.shape
    if config.denoiser["cls"] == "DiT":
        p = d.get("patch", 1)
        tokens = (shape[-2] // p) * (shape[-1] // p)
        return (f"size: {'x'.join(map(str, shape))} input, patch {p} ({tokens} tokens), width {d['width']}, "
                f"depth {d['depth']}, {d['heads']} heads x {d['width'] // d['heads']}")
    widths = [d["width"] * m for m in d["channel_mults"]]
    return f"size: {'x'.join(map(str, shape))} input, patch {d.get('patch', 1)}, widths {widths}"


REFERENCE_NOTES = {"UNet": {"reference": "UNet2DModel", "matched": UNET_MATCHED, "differs": UNET_DIFFERS},
                   "DiT": {"reference": "DiTTransformer2DModel", "matched": DIT_MATCHED, "differs": DIT_DIFFERS}}


class DiffusersUNet(nn.Module):
    """diffusers' UNet2DModel behind our interface: eps_hat = net(x, t, y), with our space-to-depth outside it."""

    def __init__(self, unet: nn.Module, patch: int):
        super().__init__()
        self.unet, self.patch = unet, patch

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        p = self.patch
        x = rearrange(x, "b c (h p1) (w p2) -> b (c p1 p2) h w", p1=p, p2=p)  # (B, C p p, H/p, W/p)
        out = self.unet(x, t, class_labels=y).sample  # (B, C p p, H/p, W/p)
        return rearrange(out, "b (c p1 p2) h w -> b c (h p1) (w p2)", p1=p, p2=p)  # (B, C, H, W)


def reference_unet(config: UNetConfig, size: int) -> DiffusersUNet:
    """The UNet2DModel that does the job of `UNet(config)` on size x size images (see UNET_MATCHED)."""
    from diffusers import UNet2DModel

    if config.context_dim is not None:
        raise ValueError("the reference has no text cross-attention (context_dim must be None)")
    widths = tuple(config.width * m for m in config.channel_mults)
    attention, p = set(config.attention_levels), config.patch
    groups = math.gcd(8, *widths)  # ours: gcd(8, channels) per layer; diffusers: one count for all
    unet = UNet2DModel(
        sample_size=size // p, in_channels=config.in_channels * p * p,
        out_channels=(config.out_channels or config.in_channels) * p * p,
        block_out_channels=widths, layers_per_block=config.blocks_per_level,
        down_block_types=tuple("AttnDownBlock2D" if i in attention else "DownBlock2D" for i in range(len(widths))),
        up_block_types=tuple("AttnUpBlock2D" if i in attention else "UpBlock2D" for i in reversed(range(len(widths)))),
        attention_head_dim=widths[-1] // config.heads,  # our heads at the deepest width (the middle's attention)
        norm_num_groups=groups, attn_norm_num_groups=groups, resnet_time_scale_shift="scale_shift",
        num_class_embeds=config.num_classes + 1 if config.num_classes else None, dropout=config.dropout)
    return DiffusersUNet(unet, p)


class DiffusersDiT(nn.Module):
    """diffusers' DiTTransformer2DModel behind our interface: eps_hat = net(x, t, y), y = None meaning the null label."""

    def __init__(self, dit: nn.Module, num_classes: int):
        super().__init__()
        self.dit, self.num_classes = dit, num_classes

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        y = torch.full((len(x),), self.num_classes, device=x.device) if y is None else y  # (B,)
        return self.dit(x, timestep=t, class_labels=y).sample  # (B, C, H, W)


def reference_dit(config: DiTConfig, size: int) -> DiffusersDiT:
    """The DiTTransformer2DModel that does the job of `DiT(config)` on size x size inputs (see DIT_MATCHED)."""
    from diffusers import DiTTransformer2DModel

    if config.context_dim is not None or not config.num_classes:
        raise ValueError("the reference is class-conditional only (context_dim None, num_classes set)")
    dit = DiTTransformer2DModel(
        num_attention_heads=config.heads, attention_head_dim=config.width // config.heads,
        in_channels=config.in_channels, out_channels=config.out_channels or config.in_channels,
        num_layers=config.depth, sample_size=size, patch_size=config.patch, num_embeds_ada_norm=config.num_classes,
        norm_eps=1e-6)  # ours: LayerNorm eps 1e-6 everywhere
    if int(config.mlp_ratio) != 4:
        raise ValueError("DiTTransformer2DModel's MLP is 4x wide; the reference needs mlp_ratio 4")
    return DiffusersDiT(dit, config.num_classes)


def reference_net(config: PipelineConfig) -> nn.Module:
    """The diffusers network for the pipeline's denoiser (UNet or DiT), sized for its diffusion shape."""
    cls, denoiser = config.denoiser["cls"], config.denoiser["config"]
    if cls == "UNet":
        return reference_unet(UNetConfig(**denoiser), config.shape[-1])
    if cls == "DiT":
        return reference_dit(DiTConfig(**denoiser), config.shape[-1])
    raise ValueError(f"no diffusers reference for denoiser {cls!r} (only UNet and DiT)")


class Reference(nn.Module):
    """A diffusers network as our jobs call it, net(x, t, y), with the frozen autoencoder of a latent pipeline.

    `codec` is our DiffusionPipeline whose `encode` and `decode` the reference shares (its own denoiser
    is not part of the reference's job: pass a pipeline whose `net` was dropped); None: pixels.
    """

    def __init__(self, net: nn.Module, codec: nn.Module | None = None):
        super().__init__()
        self.net, self.codec = net, codec

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(x, t, y)

    def encode(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return x if self.codec is None else self.codec.encode(x, generator)

    def decode(self, z0: Tensor) -> Tensor:
        return z0 if self.codec is None else self.codec.decode(z0)


@torch.no_grad()
def diffusers_sample(net: nn.Module, scheduler, labels: Tensor | None, shape: tuple[int, ...], generator: torch.Generator,
                     steps: int = 50, guidance: float = 1.0, null_label: int | None = None, n: int | None = None) -> Tensor:
    """The diffusers loop (set_timesteps, then one scheduler.step per network call) with `net(x, t, y)`; a
    DDPMScheduler is swapped for a DDIMScheduler of the same config. n images of `shape`, for labels (n,) or
    None (then n is needed). guidance != 1: classifier-free guidance as ours (`samplers.guided`:
    eps_u + guidance (eps_c - eps_u), one call on [cond; null]) with y = null_label for the null half."""
    from diffusers import DDIMScheduler

    if guidance != 1.0 and (labels is None or null_label is None):
        raise ValueError("guidance needs labels and the network's null label (null_label)")
    if not isinstance(scheduler, DDIMScheduler):
        scheduler = DDIMScheduler.from_config(scheduler.config)
    device = next(net.parameters()).device
    n = len(labels) if labels is not None else n
    scheduler.set_timesteps(steps)
    x = torch.randn((n, *shape), generator=generator, device=generator.device).to(device)  # (n, *shape)
    y = labels.to(device) if labels is not None else None
    for t in scheduler.timesteps:
        tt = t.to(device).expand(n)
        if guidance == 1.0:
            eps = net(x, tt, y)
        else:
            both = torch.cat([y, torch.full_like(y, null_label)])  # (2n,): [cond; null]
            eps_cond, eps_uncond = net(torch.cat([x, x]), torch.cat([tt, tt]), both).chunk(2)
            eps = eps_uncond + guidance * (eps_cond - eps_uncond)
        x = scheduler.step(eps, t, x).prev_sample
    return x


PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction"}  # our objective -> diffusers' prediction_type


def reference_job(config: PipelineConfig, name: str | None = None, codec: nn.Module | None = None,
                  shape: tuple[int, ...] | None = None) -> Job:
    """The diffusers network + DDIMScheduler doing what DiffusionPipeline(config) does: train on eps (or v, with
    diffusers' `prediction_type="v_prediction"` and `get_velocity`), sample with DDIM.

    For a latent pipeline, `codec` is ours without its denoiser (see `Reference`) and `shape` the pixel shape.
    """
    from diffusers import DDIMScheduler

    if config.objective not in PREDICTION_TYPES:
        raise ValueError(f"the reference trains on {' or '.join(PREDICTION_TYPES)}, not {config.objective!r}")
    model = Reference(reference_net(config), codec)
    scheduler = DDIMScheduler(num_train_timesteps=config.T, timestep_spacing="linspace",  # our DDIM timesteps
                              beta_schedule={"cosine": "squaredcos_cap_v2"}.get(config.schedule, "linear"),
                              clip_sample=config.clip_x0 is not None, clip_sample_range=config.clip_x0 or 1.0,
                              prediction_type=PREDICTION_TYPES[config.objective])
    classes = config.denoiser["config"].get("num_classes")
    drops_labels = isinstance(model.net, DiffusersUNet)  # DiTTransformer2DModel drops them itself (LabelEmbedding)

    def loss(model, batch, generator):  # Ho et al. 2020, Algorithm 1, with labels dropped at p_uncond as ours
        x0, y = model.encode(batch["x"], generator), batch["y"]
        t = torch.randint(0, config.T, (len(x0),), generator=generator, device=generator.device).to(x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device)
        drop = torch.rand(y.shape, generator=generator, device=generator.device).to(y.device) < config.p_uncond
        y = (torch.where(drop, classes, y) if drops_labels else y) if classes else None
        target = eps if config.objective == "eps" else scheduler.get_velocity(x0, eps, t)
        return F.mse_loss(model(scheduler.add_noise(x0, eps, t), t, y), target)

    def sample(model, n, steps, generator):
        y = torch.arange(n) % classes if classes else None
        return model.decode(diffusers_sample(model, scheduler, y, config.shape, generator, steps, n=n)).clamp(-1, 1)

    title = name or f"diffusers {REFERENCE_NOTES[config.denoiser['cls']]['reference']}"
    network = model.net.unet if isinstance(model.net, DiffusersUNet) else model.net.dit
    return Job(title, model, loss, sample, network, shape or config.shape)
