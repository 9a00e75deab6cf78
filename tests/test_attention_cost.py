"""The attention-vs-MLP cost table of chapter 5: counted FLOPs against the formulas, and where the halves cross."""

from __future__ import annotations

from minilineage.bench.attention import attention_flops, mlp_flops, sublayer_costs


def test_the_flop_counter_agrees_with_the_formulas_and_attention_overtakes_the_mlp_at_2d_tokens():
    rows = sublayer_costs(16, [8, 32, 33], heads=2, batch=2, repeat=1)
    for row in rows:
        assert row["attention_flops"] == row["attention_formula"] and row["mlp_flops"] == row["mlp_formula"]
        assert row["attention_ms"] > 0 and row["mlp_ms"] > 0
    assert attention_flops(32, 16) == mlp_flops(32, 16) == 16 * 32 * 16 * 16  # N = 2D: 8 N D^2 + 4 N^2 D = 16 N D^2
    assert rows[0]["attention_flops"] < rows[0]["mlp_flops"] and rows[2]["attention_flops"] > rows[2]["mlp_flops"]
    assert attention_flops(100, 10) == 8 * 100 * 100 + 4 * 100 * 100 * 10  # by hand: 80,000 + 400,000
