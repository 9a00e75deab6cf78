"""The diffusion U-Net: predicts the noise eps in a noisy image x_t. Ronneberger et al. 2015; Ho et al. 2020.

The encoder halves the resolution level by level, the decoder doubles it back, and each
decoder level also sees the encoder's feature map of the same size (the skip connection), so
fine detail need not squeeze through the 7x7 bottleneck. Every block reads one embedding
vector of the timestep t (plus the class label y), and, when given, text tokens through
cross-attention. For MNIST with channel_mults=(1, 2, 2): 28x28 -> 14x14 -> 7x7 and back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minilineage.layers import (
    Downsample,
    ResBlock,
    SelfAttention2d,
    SpatialCrossAttention,
    TimeEmbedding,
    Upsample,
    norm,
)


@dataclass
class UNetConfig:
    in_channels: int = 1
    out_channels: int | None = None  # None: same as in_channels (eps has the shape of x)
    width: int = 32  # base channel count: level i has width * channel_mults[i]; embeddings 4 * width
    channel_mults: tuple[int, ...] = (1, 2, 2)  # one entry per resolution level
    blocks_per_level: int = 1
    attention_levels: tuple[int, ...] = (2,)  # levels (0 = full resolution) with self-attention
    heads: int = 4
    num_classes: int | None = None  # class conditioning, plus one "null" class for guidance
    context_dim: int | None = None  # text-token width; adds cross-attention where there is attention
    dropout: float = 0.0
    patch: int = 1  # space-to-depth: the U-Net works on (H/p, W/p) maps with C*p*p channels

    def __post_init__(self):
        # tuples may come back as lists from a checkpoint's config dict
        self.channel_mults, self.attention_levels = tuple(self.channel_mults), tuple(self.attention_levels)
        bad = [i for i in self.attention_levels if not 0 <= i < len(self.channel_mults)]
        if bad:
            raise ValueError(f"attention_levels {bad} out of range for {len(self.channel_mults)} levels {self.channel_mults}")


# Cost of one training step (forward + backward + AdamW) on a batch of 128 28x28 images, one CPU
# thread: tiny 0.14 M parameters, ~0.39 s; small 0.72 M, ~0.55 s; base 5.5 M, ~5.7 s.
# Convolution cost grows with channels^2 x pixels, so channels are cheapest where pixels are few.
# Presets are shared: derive from one with dataclasses.replace(UNET_PRESETS["small"], num_classes=10).
UNET_PRESETS: dict[str, UNetConfig] = {
    # seconds-long tests and fast-mode notebooks
    "tiny": UNetConfig(width=16, channel_mults=(1, 2), attention_levels=()),
    # the CPU workhorse: 16 channels at 28x28, 64 at 14x14 and 7x7, attention only at 7x7
    "small": UNetConfig(width=16, channel_mults=(1, 4, 4), attention_levels=(2,)),
    # a GPU-sized model for better samples
    "base": UNetConfig(width=64, channel_mults=(1, 2, 2), blocks_per_level=2, attention_levels=(1, 2)),
}


class UNetBlock(nn.Module):
    """One U-Net step: a ResBlock, then optionally self-attention and text cross-attention."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, config: UNetConfig, attention: bool):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_dim, config.dropout)
        self.attn = SelfAttention2d(out_ch, config.heads) if attention else None
        cross = attention and config.context_dim is not None
        self.cross = SpatialCrossAttention(out_ch, config.context_dim, config.heads) if cross else None

    def forward(self, h: torch.Tensor, emb: torch.Tensor, context=None, context_mask=None) -> torch.Tensor:
        h = self.res(h, emb)  # (B, C_out, H, W)
        if self.attn is not None:
            h = self.attn(h)  # (B, C_out, H, W)
        if self.cross is not None and context is not None:
            h = self.cross(h, context, context_mask)  # (B, C_out, H, W)
        return h


class UNet(nn.Module):
    """Noise predictor eps_theta(x_t, t, y, context) with the shape of x_t. Ho et al. 2020, Sec. 3.2.

    Conditioning: `y` (B,) class labels, where label `null_label` (= num_classes) means "no
    class" for classifier-free guidance (Ho & Salimans 2022); y=None uses it for the whole
    batch, and a scalar y (or t) applies to every image. The label is dropped to `null_label`
    in the training loss, never in the model.
    `context` (B, N_ctx, context_dim) text tokens with `context_mask` (B, N_ctx), True for real
    tokens; context=None skips the cross-attention layers, whose residuals then add nothing.
    Cross-attention maps: set `keep_weights = True` on the modules of type CrossAttention
    (`[m for m in unet.modules() if isinstance(m, CrossAttention)]`) and read `last_weights`.
    """

    Config = UNetConfig

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        widths = [config.width * m for m in config.channel_mults]
        emb_dim = 4 * config.width
        self.time_embed = TimeEmbedding(emb_dim)
        self.class_embed = nn.Embedding(config.num_classes + 1, emb_dim) if config.num_classes else None
        p2 = config.patch * config.patch
        self.in_conv = nn.Conv2d(config.in_channels * p2, config.width, 3, padding=1)

        self.down_blocks, self.downsamples = nn.ModuleList(), nn.ModuleList()
        ch = config.width
        for level, w in enumerate(widths):
            attention = level in config.attention_levels
            self.down_blocks.append(nn.ModuleList(
                [UNetBlock(ch if i == 0 else w, w, emb_dim, config, attention) for i in range(config.blocks_per_level)]
            ))
            last = level == len(widths) - 1
            self.downsamples.append(nn.Identity() if last else Downsample(w))
            ch = w

        # the bottleneck always attends: at the lowest resolution it is cheap and sees the whole image
        self.mid = nn.ModuleList([UNetBlock(ch, ch, emb_dim, config, attention=True),
                                  UNetBlock(ch, ch, emb_dim, config, attention=False)])

        self.up_blocks, self.upsamples = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(widths))):
            w, attention = widths[level], level in config.attention_levels
            deepest = level == len(widths) - 1
            # upsampling straight to this level's width keeps the costly full-resolution convs narrow
            self.upsamples.append(nn.Identity() if deepest else Upsample(ch, w))
            self.up_blocks.append(nn.ModuleList(  # the first block reads [upsampled h, skip]: 2w channels
                [UNetBlock(2 * w if i == 0 else w, w, emb_dim, config, attention) for i in range(config.blocks_per_level)]
            ))
            ch = w

        self.out_norm = norm(ch)
        self.out_conv = nn.Conv2d(ch, (config.out_channels or config.in_channels) * p2, 3, padding=1)
        self.initialize_weights()

    def initialize_weights(self):
        """Start as a model that predicts eps_hat = 0 and whose every block is its skip path.

        - ResBlock.conv2 and the attention output projections are zero-initialised in layers.py,
          so each residual branch starts silent and gradients flow straight down the skips.
        - The output conv is zeroed here: the first loss is E||eps||^2 = 1, not a random blow-up.
        - Class embeddings start small (std 0.02, as in DiT) so labels nudge, not swamp, the
          time embedding at first. Everything else keeps PyTorch's default (Kaiming-uniform).
        """
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)
        if self.class_embed is not None:
            nn.init.normal_(self.class_embed.weight, std=0.02)

    @property
    def null_label(self) -> int:
        """The label index meaning "no class", used for the unconditional half of guidance."""
        if self.config.num_classes is None:
            raise ValueError("this UNet has no class conditioning (num_classes=None)")
        return self.config.num_classes

    def embed(self, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Embedding every block reads: time embedding + class embedding. (B, 4 * width)"""
        emb = self.time_embed(t)  # (B, D)
        if y is not None and self.class_embed is None:
            raise ValueError("got labels y but this UNet has num_classes=None")
        if self.class_embed is not None:
            y = self.null_label if y is None else y
            y = torch.as_tensor(y, device=emb.device).expand(t.shape)  # a scalar label applies to the whole batch
            emb = emb + self.class_embed(y)  # (B, D)
        return emb

    def check_input(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None):
        """Raise ValueError, with the sizes, for inputs this U-Net cannot process."""
        c, (height, width) = self.config.in_channels, x.shape[-2:]
        factor = self.config.patch * 2 ** (len(self.config.channel_mults) - 1)
        if x.ndim != 4 or x.shape[1] != c:
            raise ValueError(f"expected x of shape (B, {c}, H, W), got {tuple(x.shape)}")
        if t.shape != x.shape[:1]:
            raise ValueError(f"expected t of shape ({x.shape[0]},) or a scalar, got {tuple(t.shape)}")
        if height % factor or width % factor:
            raise ValueError(
                f"image size {height}x{width} must be divisible by {factor} = patch {self.config.patch} x 2**(levels - 1) "
                f"for {len(self.config.channel_mults)} levels {self.config.channel_mults}")
        if context is not None and self.config.context_dim is None:
            raise ValueError("got a context but this UNet has context_dim=None")

    def forward(self, x, t, y=None, context=None, context_mask=None) -> torch.Tensor:
        """x: (B, C, H, W), t: (B,), y: (B,), context: (B, N_ctx, D_ctx), context_mask: (B, N_ctx) -> eps_hat (B, C, H, W)."""
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t  # a scalar t applies to the whole batch
        self.check_input(x, t, context)
        emb = self.embed(t, y)  # (B, D)
        p = self.config.patch
        # space-to-depth: each p x p pixel block becomes p*p channels, so every conv runs on 1/p^2 of the positions
        x = rearrange(x, "b c (h p1) (w p2) -> b (c p1 p2) h w", p1=p, p2=p)  # (B, C p p, H/p, W/p)
        h = self.in_conv(x)  # (B, width, H/p, W/p)
        skips = []
        for blocks, down in zip(self.down_blocks, self.downsamples, strict=True):
            for block in blocks:
                h = block(h, emb, context, context_mask)  # (B, C_level, H_level, W_level)
            skips.append(h)
            h = down(h)  # (B, C_level, H_level / 2, W_level / 2); unchanged at the deepest level
        for block in self.mid:
            h = block(h, emb, context, context_mask)  # (B, C_deep, H_deep, W_deep)
        for blocks, up in zip(self.up_blocks, self.upsamples, strict=True):
            h = up(h)  # (B, C_level, H_level, W_level); (B, C_deep, ...) at the deepest level
            h = torch.cat([h, skips.pop()], dim=1)  # (B, 2 * C_level, H_level, W_level)
            for block in blocks:
                h = block(h, emb, context, context_mask)  # (B, C_level, H_level, W_level)
        out = self.out_conv(F.silu(self.out_norm(h)))  # (B, C_out p p, H/p, W/p)
        return rearrange(out, "b (c p1 p2) h w -> b c (h p1) (w p2)", p1=p, p2=p)  # (B, C_out, H, W)
