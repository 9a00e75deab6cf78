"""The Diffusion Transformer (Peebles & Xie 2023): a ViT that denoises, conditioned through adaLN-Zero.

    x (B, C, H, W) -> p x p patches -> linear -> + fixed 2-D sin-cos positions -> N tokens (B, N, D)
    c = embed(t) + embed(y)        one conditioning vector per image (per frame, for videos)
    blocks: x + gate * Attn(modulate(LN(x), shift, scale)), then the same for the MLP
    final:  modulate(LN(x)) -> linear to p*p*C numbers per token -> unpatchify -> (B, C, H, W)

DiT is chapter 4's latent diffusion with the U-Net swapped for chapter 5's ViT: "VAE encoder + ViT +
DDPM + VAE decoder". Only two things change in the transformer block. The LayerNorms lose their own
scale and bias; instead one linear layer reads c and gives, per block, a shift and a scale for each
norm and a gate for each residual branch (adaptive LayerNorm, Perez et al. 2018). The gates start at
zero ("-Zero"), so a fresh block is exactly the identity and a fresh DiT predicts exactly 0: training
grows every branch from nothing, as with the U-Net's zero-initialised convs (Goyal et al. 2017).

Optional text conditioning reads a frozen text encoder's tokens through cross-attention placed
between self-attention and the MLP (PixArt-alpha, Chen et al. 2023), its output projection zeroed.

The image-specific steps are three methods, `patchify`, `position_embedding` and `unpatchify`: a
video DiT (chapter 7) overrides them with spacetime patches and 3-D positions, and `condition`
already turns per-frame timesteps (B, F) into one conditioning vector per token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from einops import repeat
from torch import nn

from minilineage.layers import (
    MLP,
    CrossAttention,
    SelfAttention,
    TimeEmbedding,
    patchify,
    sincos_2d,
    unpatchify,
)


@dataclass
class DiTConfig:
    in_channels: int = 4  # 4: chapter 4's latents; 1: MNIST pixels
    out_channels: int | None = None  # None: same as in_channels (eps has the shape of x)
    patch: int = 1  # p; a 4 x 7 x 7 latent divides only by 1 or 7, a 28 x 28 image by 2, 4, 7, 14
    width: int = 128  # D
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int | None = None  # class conditioning, plus one "null" class for guidance
    context_dim: int | None = None  # text-token width: adds cross-attention to every block
    pooled_context: bool = False  # also add the prompt's mean text token, through an MLP, to the condition c

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")
        if self.width % 4:
            raise ValueError(f"width {self.width} must be divisible by 4 (sin and cos for rows and columns)")
        if self.pooled_context and self.context_dim is None:
            raise ValueError("pooled_context needs text tokens to pool: set context_dim")


# Named sizes, as DiT's S / B / L / XL (widths 384 ... 1152, 12-28 blocks), scaled down to MNIST on a
# CPU; "DiT-S/2" is size S on 2 x 2 patches. DIT_PRESETS names each size with patch 1 (for 7 x 7
# latents), 2 and 4 (for 28 x 28 pixels); chapter 6's scaling study also uses patch 7. Parameters and
# GFLOPs per forward pass: chapter 6 (counted with `minilineage.bench.count_flops`).
DIT_SIZES: dict[str, dict] = {
    "XXS": {"width": 32, "depth": 2, "heads": 2},
    "XS": {"width": 64, "depth": 4, "heads": 4},
    "S": {"width": 96, "depth": 6, "heads": 4},
    "B": {"width": 128, "depth": 8, "heads": 4},
}
DIT_PRESETS: dict[str, DiTConfig] = {
    f"DiT-{size}/{p}": DiTConfig(patch=p, **dims) for size, dims in DIT_SIZES.items() for p in (1, 2, 4)
}


def masked_mean(context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The mean of the text tokens (B, N, D) that `mask` (B, N) keeps (all of them for mask=None): (B, D)."""
    if mask is None:
        return context.mean(dim=1)
    keep = mask.to(context.dtype)[..., None]  # (B, N, 1)
    return (context * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Adaptive LayerNorm's affine step: x * (1 + scale) + shift, shift and scale (B, 1 or N, D) from c.

    "1 +" makes a zero scale mean "no change", the natural start for a layer that begins at zero.
    """
    return x * (1 + scale) + shift


class DiTBlock(nn.Module):
    """A transformer block with adaLN-Zero conditioning. Peebles & Xie 2023, Sec. 3.2 and Fig. 3.

    shift, scale, gate for the attention and for the MLP: six (B, 1, D) chunks of one linear layer on
    SiLU(c). With the gates at zero the block returns x unchanged.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, context_dim: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)  # its scale and shift come from c
        self.attn = SelfAttention(dim, heads)  # F.scaled_dot_product_attention: no weights kept
        self.cross = None
        if context_dim is not None:
            self.norm_cross = nn.LayerNorm(dim)
            self.cross = CrossAttention(dim, context_dim, heads, head_dim=dim // heads)  # keeps weights for display
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(dim, mlp_ratio)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, context=None, context_mask=None) -> torch.Tensor:
        """x: (B, N, D) tokens, c: (B, 1, D) or per token (B, N, D) -> (B, N, D)."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))  # (B, N, D)
        if self.cross is not None and context is not None:
            x = x + self.cross(self.norm_cross(x), context, context_mask)  # (B, N, D)
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))  # (B, N, D)


class FinalLayer(nn.Module):
    """adaLN (shift and scale from c), then a linear map from D to the p*p*C numbers of a patch."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)  # (B, 1 or N, D) each
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, N, p*p*C_out)


class DiT(nn.Module):
    """Noise predictor eps_theta(x_t, t, y, context) with a transformer backbone. Peebles & Xie 2023.

    Same interface as the U-Net: x (B, C, H, W) with H and W divisible by the patch size, t (B,) or a
    scalar (the objective's time: a step index for DDPM, 1000 t for rectified flow), y (B,) labels
    with `null_label` = num_classes for "no class" (y=None: the null label for all), context
    (B, N_ctx, context_dim) text tokens with context_mask (B, N_ctx). Returns (B, C_out, H, W).
    """

    Config = DiTConfig
    Block = DiTBlock  # the conditioning variants of chapter 6 (`dit_variants`) swap this

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        D, p = config.width, config.patch
        self.embed = nn.Linear(p * p * config.in_channels, D)  # the patch embedding, E in ViT's Eq. (1)
        self.time_embed = self.make_time_embed()
        self.label_embed = nn.Embedding(config.num_classes + 1, D) if config.num_classes else None
        # The prompt as a whole, in c beside t (Imagen's pooled text embedding; SD3's pooled CLIP vector): every
        # block's adaLN then hears the prompt, where cross-attention lets each token look up what it needs.
        self.context_pool = (nn.Sequential(nn.Linear(config.context_dim, D), nn.SiLU(), nn.Linear(D, D))
                             if config.pooled_context else None)
        self.blocks = nn.ModuleList(self.make_block() for _ in range(config.depth))
        self.final = self.make_final(p * p * (config.out_channels or config.in_channels))
        self.initialize_weights()

    def make_time_embed(self) -> nn.Module:
        return TimeEmbedding(self.config.width)  # D sinusoids of t, then an MLP (DiT's has 256 sinusoids)

    def make_block(self) -> nn.Module:
        c = self.config
        return self.Block(c.width, c.heads, c.mlp_ratio, c.context_dim)

    def make_final(self, out_dim: int) -> nn.Module:
        return FinalLayer(self.config.width, out_dim)

    def initialize_weights(self):
        # 1. Every linear layer (patch embedding, attention, MLP, adaLN): Xavier-uniform weights, zero
        #    biases, as DiT and MAE do; a patch's embedding then has about the size of its position.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # 2. The condition c = embed(t) + embed(y) at unit scale: the time MLP keeps PyTorch's default
        #    initialisation and the label table N(0, 1). DiT draws both weights at std 0.02 with zero
        #    biases (`dit_variants.PaperInitDiT`): its c starts small at any width, std about 0.03 at our
        #    width 64 and 0.08 at DiT-XL's 1152 (it grows about as sqrt(width)), nearly 40x below ours. With the
        #    adaLN layers at zero, what the condition contributes grows as the product of their weights and
        #    c, so a small c is a slow start: in a 2,000-step run (dit-init-paper vs dit-init-ours, Ch. 6) the
        #    label table only grew from 0.02 to 0.08 and 20 % of samples showed the asked-for digit, against 79 %.
        for layer in (self.time_embed.mlp[0], self.time_embed.mlp[2]):
            layer.reset_parameters()
        if self.label_embed is not None:
            nn.init.normal_(self.label_embed.weight, std=1.0)
        for module in self.modules():
            # 3. adaLN-Zero: the layer that makes shift, scale and gate outputs zeros. Gate 0 silences
            #    the branch, so each block starts as the identity (scale 0 and shift 0 keep LN(x) as is).
            if hasattr(module, "adaLN_modulation"):
                nn.init.zeros_(module.adaLN_modulation[-1].weight)
                nn.init.zeros_(module.adaLN_modulation[-1].bias)
            # 4. Text cross-attention adds nothing until it has learnt to (PixArt-alpha zeroes it too).
            if isinstance(module, CrossAttention):
                nn.init.zeros_(module.to_out.weight)
                nn.init.zeros_(module.to_out.bias)
        # 5. The output layer at zero: eps_hat = 0, so the first loss is E||eps||^2 = 1, not a random blow-up.
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    @property
    def null_label(self) -> int:
        """The label index meaning "no class", used for the unconditional half of guidance."""
        if self.config.num_classes is None:
            raise ValueError("this DiT has no class conditioning (num_classes=None)")
        return self.config.num_classes

    # --- the image-specific steps: a video DiT overrides these three -----------------------------

    def patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Images (B, C, H, W) -> tokens (B, N, p*p*C) and their grid (h, w); ValueError on bad sizes."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected x of shape (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        return patchify(x, self.config.patch)

    def position_embedding(self, grid: Sequence[int]) -> torch.Tensor:
        """Fixed 2-D sin-cos positions for this grid, computed now: (N, D). Any size the patches divide works."""
        return sincos_2d(grid, self.config.width).to(self.embed.weight.device)

    def unpatchify(self, tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        return unpatchify(tokens, grid, self.config.patch)

    # ---------------------------------------------------------------------------------------------

    def condition(self, t: torch.Tensor, y: torch.Tensor | None, grid: Sequence[int], context=None,
                  context_mask=None) -> torch.Tensor:
        """c = embed(t) + embed(y) (+ MLP(mean text token) with pooled_context): (B, 1, D) for t (B,); (B, N, D)
        for per-frame t (B, F) on a grid (F, h, w)."""
        emb = self.time_embed(t.reshape(-1)).reshape(*t.shape, -1)  # (B, D) or (B, F, D)
        if self.context_pool is not None and context is not None:
            pooled = self.context_pool(masked_mean(context, context_mask))  # (B or 1, D)
            emb = emb + (pooled if t.ndim == 1 else pooled[:, None])
        if y is not None and self.label_embed is None:
            raise ValueError("got labels y but this DiT has num_classes=None")
        if self.label_embed is not None:
            y = torch.as_tensor(self.null_label if y is None else y, device=t.device).expand(t.shape[:1])  # (B,)
            label = self.label_embed(y)  # (B, D)
            emb = emb + (label if t.ndim == 1 else label[:, None])  # (B, D) or (B, F, D)
        if t.ndim == 1:
            return emb[:, None]  # (B, 1, D): one vector for every token
        if len(grid) != 3 or grid[0] != t.shape[1]:
            raise ValueError(f"per-frame timesteps {tuple(t.shape)} need a video grid of {t.shape[1]} frames, got grid {tuple(grid)}")
        return repeat(emb, "b f d -> b (f n) d", n=grid[1] * grid[2])  # (B, N, D): each token its frame's vector

    def forward(self, x, t, y=None, context=None, context_mask=None) -> torch.Tensor:
        """x: (B, C, H, W), t: (B,), y: (B,), context: (B, N_ctx, D_ctx), context_mask: (B, N_ctx) -> (B, C_out, H, W)."""
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t  # a scalar t applies to the whole batch
        if t.shape[0] != x.shape[0] or t.ndim > 2:
            raise ValueError(f"expected t of shape ({x.shape[0]},) or a scalar, got {tuple(t.shape)}")
        if context is not None and self.config.context_dim is None:
            raise ValueError("got a context but this DiT has context_dim=None")
        tokens, grid = self.patchify(x)  # (B, N, p*p*C), grid (h, w)
        h = self.embed(tokens) + self.position_embedding(grid)  # (B, N, D)
        c = self.condition(t, y, grid, context, context_mask)  # (B, 1, D)
        for block in self.blocks:
            h = block(h, c, context, context_mask)  # (B, N, D)
        out = self.final(h, c)  # (B, N, p*p*C_out)
        return self.unpatchify(out, grid)  # (B, C_out, H, W)
