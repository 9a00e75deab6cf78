import pytest

from minilineage.checks import ClaimFailed, claim


def test_a_claim_that_holds_prints_one_stable_line(capsys):
    claim("two is more than one", 2 > 1)
    assert capsys.readouterr().out == "✓ two is more than one\n"


def test_a_claim_that_fails_stops_the_notebook():
    with pytest.raises(ClaimFailed, match="✗ one is more than two: does not hold on this run"):
        claim("one is more than two", 1 > 2)
