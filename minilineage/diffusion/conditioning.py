"""What a diffusion model is conditioned on: class labels or a text prompt, and their "no condition".

Each conditioner turns what a user asks for into the keywords the denoiser takes
(`y=` labels, or `context=` / `context_mask=` text tokens), knows the null value that
classifier-free guidance contrasts with, and drops the condition at random during training so
that one network learns both (Ho & Salimans 2022, Algorithm 1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from minilineage.data.captions import digit_prompts
from minilineage.models.clip import MiniCLIPConfig
from minilineage.models.text import TextEncoder, Tokenizer

NULL_PROMPT = ""  # the "no condition" of text guidance: the encoding of the empty prompt


class LabelCondition(nn.Module):
    """Class labels y (B,) in 0 .. num_classes - 1; the extra label num_classes means "no class".

    The label embedding itself lives in the denoiser; this only checks, defaults and drops labels.
    """

    option = "labels"  # the keyword of `DiffusionPipeline.sample` (and `minilineage sample --labels`)

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def encode(self, labels: Tensor | None, n: int, device: torch.device) -> dict[str, Tensor]:
        """{"y": labels}, checked to lie in 0 .. num_classes - 1; None cycles through the classes."""
        labels = torch.arange(n) % self.num_classes if labels is None else torch.as_tensor(labels)
        if labels.shape != (n,) or labels.is_floating_point():
            raise ValueError(f"labels must be {n} integers, got {labels.dtype} {tuple(labels.shape)}")
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must be classes 0..{self.num_classes - 1}, got values "
                             f"{labels.min().item()}..{labels.max().item()}")
        return {"y": labels.to(device)}

    def null(self, device: torch.device) -> dict[str, Tensor]:
        return {"y": torch.tensor(self.num_classes, device=device)}

    def from_batch(self, batch: dict, p_uncond: float, generator: torch.Generator) -> dict[str, Tensor]:
        """The batch's labels, each replaced by the null label with probability p_uncond."""
        y = batch["y"]
        drop = torch.rand(y.shape, generator=generator, device=generator.device).to(y.device) < p_uncond
        return {"y": torch.where(drop, torch.full_like(y, self.num_classes), y)}


def drop_captions(captions: list[str], p: float, generator: torch.Generator) -> list[str]:
    """Replace each caption by the empty prompt with probability p. Ho & Salimans 2022, Algorithm 1."""
    drop = torch.rand(len(captions), generator=generator, device=generator.device).tolist()
    return [NULL_PROMPT if u < p else caption for u, caption in zip(drop, captions, strict=True)]


class TextCondition(nn.Module):
    """A text encoder and its tokenizer: prompts -> per-token features.

    `config` gives the encoder's sizes and vocabulary (a `MiniCLIPConfig`). Frozen (the default), its
    weights are loaded from a CLIP and never trained here (Stable Diffusion's way). `trainable=True`
    makes it part of the diffusion model, trained from scratch by the denoising loss alone, as GLIDE's
    text transformer was (Nichol et al. 2022): it then learns exactly the words the denoiser needs.
    """

    option = "prompt"

    def __init__(self, config: MiniCLIPConfig, trainable: bool = False):
        super().__init__()
        self.trainable = trainable
        self.tokenizer = Tokenizer(config.vocab, config.context_length)
        self.encoder = TextEncoder(len(config.vocab), config.context_length, config.text_width,
                                   config.text_layers, config.text_heads, config.embed_dim).requires_grad_(trainable)

    @property
    def width(self) -> int:
        return self.encoder.token_embedding.embedding_dim

    def tokens(self, prompts: list[str]) -> dict[str, Tensor]:
        """{"context": per-token features (B, N, D), "context_mask": (B, N)}, what cross-attention reads."""
        device = self.encoder.token_embedding.weight.device
        tokens, mask = self.tokenizer.encode(prompts)
        tokens, mask = tokens.to(device), mask.to(device)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            return {"context": self.encoder(tokens, mask)[0], "context_mask": mask}

    def encode(self, prompt: str | list[str] | None, n: int, device: torch.device) -> dict[str, Tensor]:
        """One prompt for all n samples, or one per sample; None: "a handwritten zero" ... "nine" in turn."""
        prompts = digit_prompts(n) if prompt is None else [prompt] * n if isinstance(prompt, str) else list(prompt)
        if len(prompts) != n:
            raise ValueError(f"{n} samples but {len(prompts)} prompts")
        return self.tokens(prompts)

    def null(self, device: torch.device) -> dict[str, Tensor]:
        return self.tokens([NULL_PROMPT])  # (1, N, D), (1, N): broadcast over the batch by `guided`

    def from_batch(self, batch: dict, p_uncond: float, generator: torch.Generator) -> dict[str, Tensor]:
        """The batch's captions, each replaced by the empty prompt with probability p_uncond."""
        return self.tokens(drop_captions(batch["captions"], p_uncond, generator))
