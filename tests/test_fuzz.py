"""A bounded minute of mutation fuzzing (tests/fuzz.py): no uncaught error, hang or blow-up."""

from __future__ import annotations

import os

import pytest

import rmt
from tests import fuzz

SECONDS = float(os.environ.get("RMT_FUZZ_SECONDS", "40"))


def test_mutated_checkpoints_never_escape_as_foreign_errors():
    result = fuzz.fuzz(SECONDS, seed=int(os.environ.get("RMT_FUZZ_SEED", "0")))
    assert result["failures"] == {}, result["failures"]
    assert result["cases"] >= 1000, f"only {result['cases']} cases ran in {SECONDS} s"


def test_the_judge_flags_what_it_should(tmp_path, monkeypatch):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"\x00" * 16)

    def foreign(*args, **kwargs):
        raise OverflowError("int too large")

    monkeypatch.setattr(rmt, "analyze", foreign)
    assert fuzz.run_one(path) == "uncaught OverflowError: int too large"

    def hidden(*args, **kwargs):
        import pandas as pd

        return pd.DataFrame({"status": ["failed"], "warning": ["MemoryError: 4 GiB"]})

    monkeypatch.setattr(rmt, "analyze", hidden)
    assert fuzz.run_one(path).startswith("row hides MemoryError")


@pytest.mark.parametrize("index", [0, 1, 2, 3, 1234])
def test_cases_are_deterministic(tmp_path, index):
    seeds = fuzz.seed_files(tmp_path)
    assert fuzz.case(seeds, 0, index) == fuzz.case(seeds, 0, index)
    assert fuzz.case(seeds, 0, index)[1] != fuzz.case(seeds, 1, index)[1]


def test_a_crashing_case_is_charged_and_the_run_goes_on():
    result = fuzz.fuzz(60, max_cases=40, workers=1, env={"RMT_FUZZ_CRASH_AT": "7"})
    assert result["failures"] == {7: "worker died (exit -6)"}
    assert result["cases"] == 40  # the worker was restarted after case 7 and finished
