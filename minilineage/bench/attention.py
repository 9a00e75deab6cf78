"""What a transformer block's two halves cost as the sequence grows: self-attention against the MLP.

Per block of width D on N tokens (multiply-adds count 2 FLOPs):
  attention  Q, K, V and output projections 8 N D^2, plus Q K^T and the mix of V 4 N^2 D
  MLP        D -> 4D -> D, 16 N D^2
Attention overtakes the MLP where 8 N D^2 + 4 N^2 D = 16 N D^2, at N = 2 D; its quadratic term alone
overtakes all the linear layers (24 N D^2) at N = 6 D. `sublayer_costs` counts both halves with
torch's FLOP counter and times them, so chapter 5 can set the formula beside what a CPU does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from minilineage.bench.measure import count_flops
from minilineage.layers import MLP, SelfAttention


def attention_flops(n: int, d: int) -> int:
    """Self-attention's FLOPs on n tokens of width d: projections 8 n d^2, scores and mixing 4 n^2 d."""
    return 8 * n * d * d + 4 * n * n * d


def mlp_flops(n: int, d: int, ratio: int = 4) -> int:
    """The MLP's FLOPs on n tokens of width d: two linear layers, d -> ratio d -> d."""
    return 4 * ratio * n * d * d


def fastest_seconds(fn, repeat: int) -> float:
    """The fastest of `repeat` calls of fn (after one warm-up call): the least disturbed by other work."""
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


@torch.no_grad()
def sublayer_costs(width: int, tokens: Sequence[int], heads: int = 4, batch: int = 4, repeat: int = 3,
                   seed: int = 0) -> list[dict]:
    """For each sequence length N: FLOPs per sequence of self-attention and of the MLP (counted, and by the
    formulas above) and their measured milliseconds per sequence, on the current thread settings.

    Random tokens (batch, N, width) through fresh layers: the cost does not depend on the weights.
    """
    torch.manual_seed(seed)
    attention, mlp = SelfAttention(width, heads).eval(), MLP(width).eval()
    return [_costs(attention, mlp, torch.randn(batch, n, width), repeat) for n in tokens]


def _costs(attention: SelfAttention, mlp: MLP, x: torch.Tensor, repeat: int) -> dict:
    """One row of `sublayer_costs` for tokens x (B, N, D)."""
    (batch, n, width), one = x.shape, x[:1]
    return {"N": n, "attention_flops": count_flops(lambda: attention(one)), "mlp_flops": count_flops(lambda: mlp(one)),
            "attention_formula": attention_flops(n, width), "mlp_formula": mlp_flops(n, width),
            "attention_ms": fastest_seconds(lambda: attention(x), repeat) / batch * 1e3,
            "mlp_ms": fastest_seconds(lambda: mlp(x), repeat) / batch * 1e3}
