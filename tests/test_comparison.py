"""rmt.compare on real fine-tunes (digits, NumPy SGD): each part of a row is the analysis it
claims to be, LoRA-style updates show their rank and intruder dimensions and full
fine-tuning does not, and bad pairs become rows that say what is wrong."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file

import rmt
from rmt.comparison import COMPARISON_COLUMNS, comparison_columns, delta_dtype
from tests.digits_training import accuracy, init, train
from tests.reference import ww_cka_distance

FIRST, SECOND = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)


def _same(got, want):
    if not pd.api.types.is_numeric_dtype(want):
        assert list(got) == list(want)
    else:
        np.testing.assert_allclose(got.astype(float), want.astype(float), rtol=1e-9)


@pytest.fixture(scope="module")
def fine_tunes():
    """A network trained on digits 0-4, then fine-tuned on 5-9: fully, and by a rank-4
    update of every weight (LoRA's parameterisation)."""
    base = train(init(0), classes=FIRST, epochs=20)
    full = train(base, classes=SECOND, epochs=10, seed=1)
    lora = train(base, classes=SECOND, epochs=10, seed=1, lora_rank=4)
    assert accuracy(base, SECOND) < 0.05 < 0.95 < accuracy(full, SECOND)
    assert accuracy(lora, SECOND) > 0.9
    return base, full, lora


def test_each_part_of_a_row_is_the_analysis_it_names(fine_tunes, tmp_path):
    base, full, _ = fine_tunes
    # base stored float32, the fine-tune bf16: both files, read through memory maps
    save_file({k: v.astype(np.float32) for k, v in base.items()}, str(tmp_path / "base.st"))
    other = {f"module.{k}": v.astype(ml_dtypes.bfloat16) for k, v in full.items()}
    save_file(other, str(tmp_path / "ft.st"))
    df = rmt.compare(tmp_path / "base.st", tmp_path / "ft.st", progress=False)
    assert list(df.columns[:len(comparison_columns())]) == comparison_columns()
    assert (df.status == "success").all() and (df.matched_by == "name").all()
    a_base = rmt.analyze(tmp_path / "base.st", progress=False)
    a_other = rmt.analyze(tmp_path / "ft.st", progress=False)
    # the difference is formed in float64 (one side is stored in float32)
    deltas = {f"module.{k}": other[f"module.{k}"].astype(np.float64)
              - base[k].astype(np.float32).astype(np.float64) for k in base}
    a_delta = rmt.analyze(deltas, progress=False)
    for col in ("alpha", "lambda_max", "stable_rank", "num_spikes", "phase", "log_norm"):
        for prefix, ref in (("base_", a_base), ("", a_other), ("delta_", a_delta)):
            _same(df[f"{prefix}{col}"], ref[col])
    for i, k in enumerate(sorted(base)):
        d = other[f"module.{k}"].astype(np.float64) - base[k].astype(np.float32)
        assert df.delta_norm[i] == pytest.approx(np.linalg.norm(d), rel=1e-12)
        assert df.relative_change[i] == pytest.approx(
            np.linalg.norm(d) / np.linalg.norm(base[k].astype(np.float32)), rel=1e-6)
        assert df.ww_delta_W[i] == df.delta_norm[i]
        want = ww_cka_distance(base[k].astype(np.float32).astype(np.float64),
                               other[f"module.{k}"].astype(np.float64))
        assert df.ww_cka[i] == pytest.approx(want, rel=1e-9)
    assert np.allclose(df.alpha_change, df.alpha - df.base_alpha)


def test_low_rank_fine_tunes_have_intruders_and_full_fine_tunes_do_not(fine_tunes):
    base, full, lora = fine_tunes
    f = rmt.compare(base, full, epsilon=0.3, progress=False)
    low = rmt.compare(base, lora, epsilon=0.3, progress=False)
    # the rank-4 update is seen as one: its ESD has 4 nonzero eigenvalues per layer
    assert list(low.delta_matrix_rank) == [4, 4, 4]
    # the last layer's full update has rank 9: softmax gradients' rows sum to zero
    assert f.delta_matrix_rank.iloc[-1] == 9
    # Shuttleworth et al.'s finding on a real run: new top directions under LoRA only
    assert f.num_intruders.sum() == 0 and low.num_intruders.sum() >= 2
    intruded = low[low.num_intruders > 0].iloc[0]
    assert max(intruded.intruder_max_cos) < 0.3
    assert all(0 <= j < 10 for j in intruded.intruder_index)


def test_unmatched_mismatched_and_stacked_tensors():
    rng = np.random.default_rng(0)
    base = {"model.a.weight": rng.standard_normal((40, 30)),
            "model.b.weight": rng.standard_normal((40, 30)),
            "model.experts.weight": rng.standard_normal((3, 50, 20)),
            "model.gone.weight": rng.standard_normal((20, 20))}
    other = {"a.weight": base["model.a.weight"] + 0.1,
             "b.weight": rng.standard_normal((30, 40)),
             "experts.weight": base["model.experts.weight"] * 1.01,
             "new.weight": rng.standard_normal((20, 20))}
    df = rmt.compare(base, other, progress=False)
    by = dict(zip(df.name.fillna(df.base_name), df.warning, strict=True))
    assert by["b.weight"] == "shape differs: base 40x30, other 30x40"
    assert "only in the other checkpoint" in by["new.weight"]
    assert "only in the base checkpoint" in by["model.gone.weight"]
    experts = df[df.name.fillna("").str.startswith("experts.weight[")]
    assert list(experts.name) == [f"experts.weight[{e}]" for e in range(3)]
    # a uniform 1% scaling: relative change 0.01, same singular vectors, same alpha
    assert np.allclose(experts.relative_change, 0.01)
    assert np.allclose(experts.left_overlap, 1) and (experts.num_intruders == 0).all()
    assert np.allclose(experts.alpha_change, 0, atol=1e-9)
    only_a = rmt.compare(base, other, layers="^a", progress=False)
    assert list(only_a.name) == ["a.weight"]


def test_delta_dtype_and_exactness_of_the_bf16_difference():
    assert delta_dtype(ml_dtypes.bfloat16, np.float16) == np.float32
    assert delta_dtype(ml_dtypes.bfloat16, np.float32) == np.float64
    rng = np.random.default_rng(1)
    a = rng.standard_normal((64, 48)).astype(ml_dtypes.bfloat16)
    b = (a.astype(np.float32) + 1e-2 * rng.standard_normal((64, 48))).astype(ml_dtypes.bfloat16)
    df = rmt.compare({"w": a}, {"w": b}, progress=False)
    exact = b.astype(np.float64) - a.astype(np.float64)
    assert df.delta_norm.iloc[0] == pytest.approx(np.linalg.norm(exact), rel=1e-15)


def test_options_are_checked():
    with pytest.raises(ValueError, match="k must be"):
        rmt.compare({}, {}, k=0)
    with pytest.raises(ValueError, match="epsilon"):
        rmt.compare({}, {}, epsilon=1.5)
    with pytest.raises(ValueError, match="plot_dir"):
        rmt.compare({}, {}, plot_dir="x")
    with pytest.raises(ValueError, match="conv"):
        rmt.compare({}, {}, conv="nope")
    assert set(COMPARISON_COLUMNS) <= set(comparison_columns())


def test_parallel_and_resumed_comparisons_give_the_same_rows(fine_tunes, tmp_path):
    base, full, _ = fine_tunes
    save_file({k: v.astype(np.float32) for k, v in base.items()}, str(tmp_path / "b.st"))
    save_file({k: v.astype(np.float32) for k, v in full.items()}, str(tmp_path / "f.st"))
    serial = rmt.compare(tmp_path / "b.st", tmp_path / "f.st", progress=False)
    log = tmp_path / "run.jsonl"
    first = rmt.compare(tmp_path / "b.st", tmp_path / "f.st", resume=log, n_jobs=2,
                        progress=False)
    again = rmt.compare(tmp_path / "b.st", tmp_path / "f.st", resume=log, progress=False)
    cols = ["name", "alpha", "base_alpha", "delta_alpha", "relative_change", "left_overlap",
            "num_intruders", "status"]
    for df in (first, again):
        pd.testing.assert_frame_equal(df[cols], serial[cols])
    with pytest.raises(rmt.resume.ResumeError):
        rmt.compare(tmp_path / "b.st", tmp_path / "f.st", resume=log, k=5, progress=False)


@pytest.mark.parametrize("kind", ["float32", "float64", "bfloat16", "transposed", "conv"])
def test_frobenius_norm_of_any_storage_is_exact_to_float64_rounding(kind):
    from rmt.comparison import _fro

    rng = np.random.default_rng(4)
    W = rng.standard_normal((3000, 70)).astype(np.float32)
    W = {"float32": W, "float64": W.astype(np.float64), "bfloat16": W.astype(ml_dtypes.bfloat16),
         "transposed": W.T, "conv": W.reshape(30, 100, 7, 10)}[kind]
    exact = math.sqrt(math.fsum(float(v) ** 2 for v in np.asarray(W, np.float64).ravel()))
    assert abs(_fro(W) - exact) <= 1e-13 * exact
