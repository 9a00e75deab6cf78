"""A diffusion model as one object: the U-Net eps_theta(x_t, t, y) plus its noise schedule.

The maths lives in `diffusion` (forward process, loss) and `samplers` (DDPM, DDIM, guidance);
this module only binds a network to a schedule so that a checkpoint can train and sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from minilineage.diffusion import NoiseSchedule, eps_loss
from minilineage.samplers import guided, sample_with_steps
from minilineage.train import unwrap
from minilineage.unet import UNet, UNetConfig


@dataclass
class DDPMConfig:
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(num_classes=10))
    image_size: int = 28
    schedule: str = "cosine"
    T: int = 1000
    p_uncond: float = 0.1  # label dropout: how often training sees the "null" label (for guidance)
    guidance: float = 2.0  # default guidance scale when sampling
    sample_steps: int = 50  # default number of DDIM steps when sampling

    def __post_init__(self):
        if isinstance(self.unet, dict):  # a config read back from a checkpoint
            self.unet = UNetConfig(**self.unet)


class DDPM(nn.Module):
    """A class-conditional denoising diffusion model. Ho et al. 2020; guidance: Ho & Salimans 2022."""

    Config = DDPMConfig
    sample_options = ("labels", "steps", "guidance")

    def __init__(self, config: DDPMConfig):
        super().__init__()
        self.config = config
        self.net = UNet(config.unet)
        self.sched = NoiseSchedule.named(config.schedule, config.T)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, t, y=y)  # eps_hat, (B, C, H, W)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.config.unet.in_channels, self.config.image_size, self.config.image_size)

    def denoiser(self, guidance: float) -> nn.Module:
        """The callable a sampler uses: plain eps_theta, or its guided mix when guidance != 1."""
        if self.config.unet.num_classes is None or guidance == 1.0:
            return self
        return guided(self, guidance, {"y": torch.tensor(self.net.null_label)})

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None,
               steps: int | None = None, guidance: float | None = None, trajectory: bool = False):
        """n images in [-1, 1]: DDIM with `steps` steps, or ancestral DDPM when steps >= T."""
        device = next(self.parameters()).device
        steps = steps or self.config.sample_steps
        guidance = self.config.guidance if guidance is None else guidance
        cond = {}
        if self.config.unet.num_classes is not None:
            labels = torch.arange(n) % self.config.unet.num_classes if labels is None else labels
            cond["y"] = labels.to(device)
        elif labels is not None:
            raise ValueError("this model is unconditional; it takes no labels")
        model, shape = self.denoiser(guidance), (n, *self.image_shape)
        return sample_with_steps(model, self.sched, shape, steps, generator, device, trajectory, **cond)


def ddpm_loss(model: nn.Module, batch: dict, generator: torch.Generator) -> torch.Tensor:
    """Algorithm 1 with label dropout: a fraction p_uncond of labels become the null label."""
    core = unwrap(model)
    x, y = batch["x"], batch.get("y")
    if core.config.unet.num_classes is not None:
        drop = torch.rand(y.shape, generator=generator, device=generator.device).to(y.device) < core.config.p_uncond
        y = torch.where(drop, torch.full_like(y, core.net.null_label), y)
        return eps_loss(model, core.sched.to(x.device), x, generator, y=y)
    return eps_loss(model, core.sched.to(x.device), x, generator)
