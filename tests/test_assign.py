"""rmt.assign: each map against a transcription of the tool it comes from (TempBalance,
AlphaDecay, AlphaPruning), the budget met exactly under the cap, bad input refused."""

from __future__ import annotations

from operator import itemgetter

import numpy as np
import pandas as pd
import pytest

import rmt


def _table(n_blocks: int = 4, per_block: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    names = [f"model.layers.{b}.{k}.weight" for b in range(n_blocks)
             for k in ("q", "k", "mlp")[:per_block]]
    n = len(names)
    return pd.DataFrame({"name": names, "alpha": rng.uniform(2, 6, n), "status": "success",
                         "N": rng.choice([512, 1024], n), "M": 256, "num_slices": 1})


def test_tempbalance_maps():
    df = _table()
    s = df["alpha"].to_numpy()
    n = s.size
    # get_layer_temps of TempBalance (untuned_lr = 1, ratios 0.5 and 1.5)
    np.testing.assert_allclose(rmt.assign(df), np.interp(s, [s.min(), s.max()], [0.5, 1.5]))
    np.testing.assert_allclose(rmt.assign(df, method="sqrt"), np.sqrt(s) / np.sum(np.sqrt(s)) * n)
    np.testing.assert_allclose(rmt.assign(df, method="log2"), np.log2(s) / np.sum(np.log2(s)) * n)
    idxes = np.argsort(s)
    unsorted = [0.5 + (1.5 - 0.5) * i / n for i in range(n)]
    step = [v for _, v in sorted(zip(idxes, unsorted, strict=True), key=itemgetter(0))]
    np.testing.assert_allclose(rmt.assign(df, method="rank"), step)
    assert list(rmt.assign(df).index) == list(df["name"])


def test_alphadecay_sigmoid_within_blocks():
    df = _table()
    got = rmt.assign(df, method="sigmoid", groups="block").to_numpy()
    s = df["alpha"].to_numpy()
    blocks = [name.split(".")[2] for name in df["name"]]  # its layer_name = name.split('.')[2]
    for b in set(blocks):
        idx = [i for i, x in enumerate(blocks) if x == b]
        z = (s[idx] - s[idx].mean()) / (s[idx].std() + 1e-8)
        np.testing.assert_allclose(got[idx], 2 / (1 + np.exp(-4 * z)))


def test_alphapruning_block_wise_allocation_meets_the_budget():
    df = _table(n_blocks=6, per_block=3, seed=1)
    s1, s2, sparsity = 0.8, 1.2, 0.5
    # ww_sparsity(mapping_type="block_wise"): block means, linear map, scaled to the budget
    metrics = df["alpha"].to_numpy()
    k = 3
    block = [np.mean(metrics[i:i + k]) for i in range(0, metrics.size, k)]
    scores = np.repeat(block, k)
    prunables = (df["N"] * df["M"]).to_numpy(dtype=float)
    ratios = (scores - scores.min()) / (scores.max() - scores.min()) * (s2 - s1) + s1
    ratios *= prunables.sum() * sparsity / np.sum(prunables * ratios)
    got = rmt.assign(df, value_range=(s1, s2), budget=sparsity, groups="block")
    np.testing.assert_allclose(got, ratios, rtol=1e-12)
    assert np.sum(prunables * got) / prunables.sum() == pytest.approx(sparsity, rel=1e-12)


def test_budget_caps_at_one_and_still_meets_the_target():
    df = _table(seed=2)
    got = rmt.assign(df, value_range=(0.2, 3.0), budget=0.9).to_numpy()
    p = (df["N"] * df["M"]).to_numpy(dtype=float)
    assert got.max() <= 1.0 and np.isclose(got.max(), 1.0)
    assert np.sum(p * got) / p.sum() == pytest.approx(0.9, rel=1e-12)
    # the uncapped layers keep the linear map's proportions
    free = got < 1
    lin = rmt.assign(df, value_range=(0.2, 3.0)).to_numpy()
    ratio = got[free] / lin[free]
    np.testing.assert_allclose(ratio, ratio[0])


def test_failed_rows_are_left_out_and_bad_input_refused():
    df = _table()
    df.loc[1, "status"] = "failed"
    df.loc[4, "alpha"] = np.nan
    got = rmt.assign(df)
    assert got.isna().sum() == 2 and got.dropna().min() == 0.5 and got.dropna().max() == 1.5
    with pytest.raises(ValueError, match="not used"):
        rmt.assign(df, method="sqrt", value_range=(0, 1))
    with pytest.raises(ValueError, match="no column"):
        rmt.assign(df, metric="alpha_farms")
    with pytest.raises(ValueError, match="budget"):
        rmt.assign(df, budget=1.5)
    with pytest.raises(ValueError, match="method"):
        rmt.assign(df, method="cubic")  # type: ignore[arg-type]


def test_assign_on_a_real_model():
    df = rmt.analyze(rmt.pretrained.fetch("all-MiniLM-L6-v2"), progress=False)
    lr = rmt.assign(df, metric="alpha_hill", groups="block")
    ok = df["status"] == "success"
    assert lr[ok.to_numpy()].notna().all() and lr.min() == 0.5 and lr.max() == 1.5
    # the six encoder blocks each get one value; the embeddings are blocks of their own
    blocks = set(df["name"][ok].map(lambda n: n.split(".")[2] if ".layer." in n else n))
    assert lr[ok.to_numpy()].nunique() <= len(blocks) < ok.sum()
