"""Small helpers every network here shares: GroupNorm sized for narrow layers, zero-initialised outputs,
and the way to the model inside a training wrapper.

Every residual branch in the course (ResBlock, self- and cross-attention, adaLN gates) ends in a
layer whose weights start at zero, so a freshly built block is exactly its skip path and a deep
stack of them starts as the identity; training then grows each branch from nothing.
"""

from __future__ import annotations

import math

from torch import nn


def norm(ch: int) -> nn.GroupNorm:
    """GroupNorm with at most 8 groups, always a divisor of `ch`. Wu & He 2018.

    Batch statistics are noisy at the small batches of a laptop; GroupNorm normalises each image
    on its own. gcd(8, ch) keeps narrow layers valid: 4 channels -> 4 groups, 12 -> 4, 3 -> 1.
    """
    return nn.GroupNorm(math.gcd(8, ch), ch)


def zero_init(module: nn.Module) -> nn.Module:
    """Set a layer's weights and bias to zero, so the residual branch it ends starts silent."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel or torch.compile wrapper (for its attributes)."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model
