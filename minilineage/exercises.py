"""Self-checks for the chapters' exercises: say whether an answer is right without giving it away."""

from __future__ import annotations

from collections.abc import Callable

import torch


def check(answer, is_right: Callable[[object], bool], hint: str) -> bool | None:
    """Print whether `answer` passes `is_right`; `None` means the exercise is not attempted yet."""
    if answer is None or answer is ...:
        print("Not attempted yet: replace the `None` above with your answer.")
        return None
    try:
        ok = bool(is_right(answer))
    except Exception as error:  # a wrong shape or type is a wrong answer, not a crash
        ok, hint = False, f"{hint} ({type(error).__name__}: {error})"
    print("Correct!" if ok else f"Not quite. Hint: {hint}")
    return ok


def close_to(expected, rtol: float = 1e-4, atol: float = 1e-6) -> Callable[[object], bool]:
    """A checker comparing numbers or tensors with a tolerance."""

    def is_right(answer) -> bool:
        a = torch.as_tensor(answer, dtype=torch.float64)
        e = torch.as_tensor(expected, dtype=torch.float64)
        return a.shape == e.shape and torch.allclose(a, e, rtol=rtol, atol=atol)

    return is_right
