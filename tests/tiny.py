"""Helpers shared by the model tests (imported as `from tiny import ...`; pytest puts tests/ on the path)."""

from __future__ import annotations

import torch


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give the zero-initialised layers random weights, as if trained a little."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if torch.all(p == 0):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


VIDEO_VOCAB = ["<pad>", "<bos>", "<eos>", "<unk>", "a", "an", *"0123456789", "moves", "left", "right"]


def video_pipeline(sample_steps: int = 4):
    """A tiny text-to-video pipeline (causal VAE3d on 9 x 16 x 16 clips, VideoDiT on 3 x 2 x 4 x 4 latents), random
    where DiT starts at zero so that its output depends on its input."""
    from minilineage.diffusion import DiffusionPipeline, PipelineConfig

    torch.manual_seed(0)
    config = PipelineConfig(
        denoiser={"cls": "VideoDiT", "config": {"in_channels": 2, "patch": 2, "width": 32, "depth": 1, "heads": 2,
                                                "context_dim": 16}},
        autoencoder={"cls": "VAE3d", "config": {"width": 4, "latent_channels": 2, "frames": 9, "size": 16}},
        text={"vocab": VIDEO_VOCAB, "context_length": 8, "text_width": 16, "text_layers": 1, "text_heads": 2},
        shape=(3, 2, 4, 4), T=50, sample_steps=sample_steps, guidance=2.0)
    return randomize_(DiffusionPipeline(config).eval())
