"""A small MNIST classifier (LeNet) whose penultimate layer defines FID-LeNet.

FID (Heusel et al. 2017) measures a Fréchet distance between Gaussians fitted to the features of an
ImageNet Inception network. For 28x28 digits a digit classifier is the natural feature extractor,
so the course trains its own: a LeNet (LeCun et al. 1998) in the layout of Caffe's MNIST example,
with a narrower hidden layer. Distances in its features are called FID-LeNet, never FID: the numbers
are not comparable with published FIDs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LeNetConfig:
    channels: int = 1
    size: int = 28
    conv1: int = 20  # channels of the first 5x5 convolution
    conv2: int = 50  # channels of the second
    feature_dim: int = 64  # D, the width of the penultimate layer that FID-LeNet reads
    num_classes: int = 10


class LeNet(nn.Module):
    """conv5-pool-conv5-pool-fc-fc digit classifier. LeCun et al. 1998 (Caffe's MNIST layout)."""

    Config = LeNetConfig

    def __init__(self, config: LeNetConfig):
        super().__init__()
        side = ((config.size - 4) // 2 - 4) // 2  # two unpadded 5x5 convs, each followed by a 2x2 pool
        if side < 1:
            raise ValueError(f"image size {config.size} is too small for two 5x5 conv + 2x2 pool stages")
        self.config = config
        self.conv = nn.Sequential(
            nn.Conv2d(config.channels, config.conv1, 5), nn.ReLU(), nn.MaxPool2d(2),  # (B, 20, 12, 12)
            nn.Conv2d(config.conv1, config.conv2, 5), nn.ReLU(), nn.MaxPool2d(2),  # (B, 50, 4, 4)
        )
        self.fc = nn.Linear(config.conv2 * side * side, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations phi(x), (B, D): the space in which FID-LeNet is measured."""
        h = self.conv(x).flatten(1)  # (B, C, h, w) -> (B, C*h*w)
        return F.relu(self.fc(h))  # (B, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes) for images x in [-1, 1], (B, C, H, W)."""
        return self.head(self.features(x))


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by its own (dy, dx) in [-max_shift, max_shift], filling with background -1."""
    B, C, H, W = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s), value=-1.0)  # (B, C, H+2s, W+2s)
    dy, dx = torch.randint(0, 2 * s + 1, (2, B), generator=generator, device=x.device)
    rows = torch.arange(H, device=x.device) + dy[:, None]  # (B, H): which padded rows to keep
    cols = torch.arange(W, device=x.device) + dx[:, None]  # (B, W)
    x = padded.gather(2, rows[:, None, :, None].expand(B, C, H, W + 2 * s))  # (B, C, H, W+2s)
    return x.gather(3, cols[:, None, None, :].expand(B, C, H, W))  # (B, C, H, W)


def classifier_loss(model: LeNet, batch: dict, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Cross-entropy -log p(y | x) on digits shifted by up to max_shift pixels.

    The shifts are the classic MNIST augmentation: with only 4,500 training digits they are what
    lets the classifier generalise to the test split (and to slightly off-centre samples).
    """
    return F.cross_entropy(model(random_shift(batch["x"], max_shift, generator)), batch["y"])


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of images x (in [-1, 1]) whose most likely class is the label y."""
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    correct = sum((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum().item() for i in range(0, len(x), batch_size))
    return correct / len(x)
