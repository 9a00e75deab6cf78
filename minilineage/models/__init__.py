"""The networks of the course, each a config dataclass plus an nn.Module built from it.

`MODELS` names every class a checkpoint or a diffusion pipeline may hold; `build(name, config)`
makes one from its recorded config (a dict, as checkpoints store it).
"""

from __future__ import annotations

from torch import nn

from minilineage.models.autoencoder import VAE, Autoencoder
from minilineage.models.captioner import VideoCaptioner
from minilineage.models.classifier import LeNet
from minilineage.models.clip import MiniCLIP
from minilineage.models.dit import DiT
from minilineage.models.dit_variants import AdaLNDiT, CrossAttentionDiT, InContextDiT, PaperInitDiT
from minilineage.models.latent import LatentVAE
from minilineage.models.text import TextEncoder, Tokenizer
from minilineage.models.unet import UNet
from minilineage.models.vae3d import VAE3d
from minilineage.models.video_clip import VideoCLIP
from minilineage.models.video_dit import VideoDiT
from minilineage.models.vit import ViT

MODELS: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in (Autoencoder, VAE, LeNet, MiniCLIP, LatentVAE, UNet, ViT, DiT,
                                                                         AdaLNDiT, CrossAttentionDiT, InContextDiT, PaperInitDiT)}
MODELS[VAE3d.__name__] = VAE3d  # chapter 7's spatio-temporal VAE
MODELS[VideoDiT.__name__] = VideoDiT  # chapter 7's video DiT
MODELS[VideoCaptioner.__name__] = VideoCaptioner  # chapter 7's captioner, for re-captioning
MODELS[VideoCLIP.__name__] = VideoCLIP  # chapter 7's text encoder for prompts that name the motion


def build(name: str, config: dict) -> nn.Module:
    """A fresh model of class `name` from its config dict (as a checkpoint records it)."""
    if name not in MODELS:
        raise ValueError(f"unknown model class {name!r}; known: {', '.join(MODELS)}")
    cls = MODELS[name]
    return cls(cls.Config(**config))


__all__ = ["MODELS", "VAE", "Autoencoder", "DiT", "LatentVAE", "LeNet", "MiniCLIP", "TextEncoder", "Tokenizer", "UNet", "ViT", "build"]
