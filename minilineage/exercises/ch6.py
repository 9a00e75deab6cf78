"""Chapter 6 (DiT and rectified flow): exercises and their reference answers."""

from __future__ import annotations

import torch

from minilineage.diffusion.flow import flow_xt
from minilineage.exercises.core import close_to, register
from minilineage.models.dit import DiTBlock, modulate

# One block's adaLN-Zero layer maps c (D numbers) to 6 D numbers: a D x 6D weight and 6D biases.
register("ch6.adaln_parameters", close_to(64 * 6 * 64 + 6 * 64, rtol=0, atol=0.5),
         "one linear layer from D to six vectors of D (shift, scale, gate, twice): weights and biases",
         solution=24_960)


def _block_with_open_gates() -> DiTBlock:
    """A DiT block whose adaLN layer is no longer zero, so every term of the forward pass matters."""
    torch.manual_seed(6)
    block = DiTBlock(16, heads=2)
    torch.nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.2)
    return block.eval()


def _blocks(my_block_forward) -> bool:
    """The student's forward pass, using the block's own modules, equals DiTBlock.forward."""
    block = _block_with_open_gates()
    g = torch.Generator().manual_seed(7)
    x, c = torch.randn(3, 5, 16, generator=g), torch.randn(3, 1, 16, generator=g)
    with torch.no_grad():
        return close_to(block(x, c), atol=1e-5)(my_block_forward(block, x, c))


def adaln_zero_forward(block, x, c):
    shift1, scale1, gate1, shift2, scale2, gate2 = block.adaLN_modulation(c).chunk(6, dim=-1)  # (B, 1, D) each
    x = x + gate1 * block.attn(modulate(block.norm1(x), shift1, scale1))  # (B, N, D)
    return x + gate2 * block.mlp(modulate(block.norm2(x), shift2, scale2))  # (B, N, D)


register("ch6.adaln_zero_block", _blocks,
         "chunk the adaLN output into shift, scale, gate for attention then for the MLP; each branch reads "
         "norm(x) * (1 + scale) + shift and is added to x times its gate", solution=adaln_zero_forward,
         wrong=lambda block, x, c: x + block.attn(block.norm1(x)) + block.mlp(block.norm2(x)))


def _flow_pairs(my_flow_pair) -> bool:
    """The student's (x_t, target) for rectified flow, against `flow_xt` and eps - x0."""
    g = torch.Generator().manual_seed(8)
    x0, eps, t = torch.randn(4, 1, 3, 3, generator=g), torch.randn(4, 1, 3, 3, generator=g), torch.rand(4, generator=g)
    xt, v = my_flow_pair(x0, eps, t)
    return close_to(flow_xt(x0, t, eps))(xt) and close_to(eps - x0)(v)


def flow_pair(x0, eps, t):
    t = t.reshape(-1, 1, 1, 1)  # (B, 1, 1, 1): one time per image
    return (1 - t) * x0 + t * eps, eps - x0


register("ch6.flow_pair", _flow_pairs,
         "x_t lies on the straight line from x0 (t = 0) to eps (t = 1); the target is its velocity dx_t/dt",
         solution=flow_pair, wrong=lambda x0, eps, t: (flow_pair(x0, eps, t)[0], x0 - eps))


def _euler_steps(my_euler) -> bool:
    """The student's sampler on a field that changes with t, v(x, t) = 2 t a: the exact flow from x1 ends at
    x1 - a, and `steps` Euler steps from t = 1, each reading v where it starts, end at x1 - (1 + 1/steps) a
    (a Riemann sum of 2 t). Checked at 1, 3 and 10 steps, so an answer that ignores `steps` fails."""
    g = torch.Generator().manual_seed(9)
    a, x1 = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)
    v = lambda x, t: 2 * t[:, None] * a  # noqa: E731
    return all(close_to(x1 - (1 + 1 / steps) * a, atol=1e-5)(my_euler(v, x1.clone(), steps)) for steps in (1, 3, 10))


def euler_sampler(v, x, steps):
    times = torch.linspace(1, 0, steps + 1)  # t from 1 (noise) down to 0 (data)
    for t_now, t_next in zip(times[:-1], times[1:]):
        x = x + (t_next - t_now) * v(x, torch.full(x.shape[:1], float(t_now)))  # dt < 0
    return x


# The wrong answer the check must refuse: one step of length 1, whatever `steps` says. On a constant field it
# would be exact, which is why the check's field depends on t.
register("ch6.euler", _euler_steps,
         "walk t from 1 to 0 in `steps` equal steps; each step adds (t_next - t_now) times the velocity at t_now",
         solution=euler_sampler, wrong=lambda v, x, steps: x - v(x, torch.ones(x.shape[:1])))
