"""A chapter's claims, checked on every run.

`claim(statement, holds)` prints one line that is the same on every machine when the claim holds
(so a chapter can keep it as a checked output) and stops the notebook when it does not. The
measured numbers behind a claim are printed in a cell of their own, since they differ a little from
one CPU to the next. (Exercises and their checks live in `minilineage.exercises`.)
"""

from __future__ import annotations


class ClaimFailed(AssertionError):
    """A chapter's claim does not hold on this run."""


def claim(statement: str, holds: bool) -> None:
    """Print "✓ statement" if it holds; raise ClaimFailed otherwise (the notebook stops there)."""
    if not holds:
        raise ClaimFailed(f"✗ {statement}: does not hold on this run")
    print(f"✓ {statement}")
