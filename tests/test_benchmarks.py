"""The benchmark summary reads every published result file (benchmarks/results/)."""

from __future__ import annotations

from benchmarks.__main__ import summary_table


def test_the_summary_table_reads_the_published_results():
    table = summary_table()
    lines = table.splitlines()
    assert lines[:2] == ["| benchmark | result |", "|---|---|"]
    # the committed results give these rows; a result format the summary cannot read fails
    for row in ("ESD vs WeightWatcher's SVD", "power-law fit vs powerlaw",
                "opt-in analyses' cost (minilm", "LLM-shaped bf16 checkpoint"):
        assert any(line.startswith(f"| {row}") for line in lines), row
    opt_in = next(line for line in lines if line.startswith("| opt-in"))
    assert "randomize:" in opt_in and "farms:" in opt_in and "floors" not in opt_in
