"""rmt.analyze (rmt/runner.py): rows against their functions, failures, resume, workers."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pandas as pd
import pytest

import rmt
from rmt import COLUMNS, analyze, summary
from rmt import io as rio
from rmt.metrics import numerical_zero_threshold


def _model(seed=0):
    rng = np.random.default_rng(seed)
    phase = rmt.synthetic.phase_matrix
    nan = rng.standard_normal((64, 32)).astype(np.float32)
    nan[3, 3] = np.nan
    return {
        "embed.weight": phase("random-like", 600, 200, sigma=0.02, rng=1).astype(np.float32),
        "attn.q.weight": phase("bulk+spikes", 400, 400, sigma=0.02, rng=2).astype(np.float32),
        "mlp.up.weight": phase("heavy-tailed", 800, 200, sigma=0.02, rng=3).astype(
            ml_dtypes.bfloat16),
        "mlp.up.bias": rng.standard_normal(800).astype(np.float32),
        "conv.weight": (0.1 * rng.standard_normal((32, 16, 3, 3))).astype(np.float32),
        "conv1d.weight": (0.1 * rng.standard_normal((48, 24, 5))).astype(np.float32),
        "experts.weight": (0.1 * rng.standard_normal((3, 64, 40))).astype(np.float16),
        "bad.nan": nan,
        "bad.zero": np.zeros((40, 20), np.float32),
        "bad.int": np.ones((40, 20), np.int64),
        "bad.small": rng.standard_normal((5, 300)).astype(np.float32),
        "norm.scale": np.ones(200, np.float32),
    }


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    rio.write_safetensors(path, _model())
    return path


@pytest.fixture(scope="module")
def table(checkpoint):
    return analyze(checkpoint, progress=False)


def test_rows_and_failures(table):
    names = list(table["name"])
    assert "mlp.up.bias" not in names and "norm.scale" not in names  # 1-D: not layers
    assert names.count("experts.weight[0]") == 1 and "experts.weight[2]" in names
    assert set(rmt.columns.table_columns()) <= set(table.columns)
    # what the default table leaves out is exactly the opt-in analyses' columns
    opt_in = {c.name for a in rmt.columns.ANALYSES.values() if a.option for c in a.columns}
    assert set(COLUMNS) - set(table.columns) == opt_in
    status = table.set_index("name")["status"]
    warning = table.set_index("name")["warning"]
    for bad, fragment in [("bad.nan", "NaN"), ("bad.zero", "zero"), ("bad.int", "int64"),
                          ("bad.small", "too few eigenvalues")]:
        assert status[bad] == "failed" and fragment in warning[bad], (bad, warning[bad])
        assert np.isnan(table.set_index("name").loc[bad, "alpha"])
    good = ["embed.weight", "attn.q.weight", "mlp.up.weight", "conv.weight", "conv1d.weight",
            "experts.weight[1]"]
    assert (status[good] == "success").all()
    assert list(table["layer_id"]) == sorted(table["layer_id"])


def test_values_match_the_functions_called_directly(table):
    weights = _model()
    row = table.set_index("name")
    for name in ("embed.weight", "attn.q.weight", "mlp.up.weight", "conv.weight"):
        W = weights[name]
        ev = rmt.esd(W)
        nz = ev[ev > numerical_zero_threshold(ev, rmt.weight_shape(W.shape).M)]
        pl = rmt.fit_powerlaw(nz)
        res = rmt.classify(W)
        r = row.loc[name]
        assert r["alpha"] == pytest.approx(pl.alpha, rel=1e-12)
        assert r["xmin"] == pytest.approx(pl.xmin, rel=1e-12)
        assert r["lambda_max"] == pytest.approx(ev.max(), rel=1e-12)
        assert r["num_evals"] == ev.size
        assert r["phase"] == str(res.phase)
        assert r["num_spikes"] == res.n_spikes
        assert r["alpha_weighted"] == pytest.approx(pl.alpha * np.log10(ev.max()), rel=1e-12)
    assert row.loc["embed.weight", "phase"] == "random-like"
    assert row.loc["attn.q.weight", "phase"] == "bulk+spikes"
    assert row.loc["mlp.up.weight", "phase"] == "heavy-tailed"
    experts = weights["experts.weight"]
    assert row.loc["experts.weight[1]", "lambda_max"] == pytest.approx(rmt.esd(experts[1]).max())
    conv1d = row.loc["conv1d.weight"]
    assert conv1d["num_slices"] == 5 and conv1d["num_evals"] == 5 * 24


def test_ww_units_and_candidates(checkpoint):
    raw = analyze(checkpoint, layers="embed", normalize=False, candidates="ww", progress=False)
    W = _model()["embed.weight"]
    assert raw.loc[0, "lambda_max"] == pytest.approx(np.linalg.norm(W.astype(float), 2) ** 2,
                                                     rel=1e-9)
    ev = rmt.esd(W, normalize=False)
    assert raw.loc[0, "alpha"] == pytest.approx(rmt.fit_powerlaw(ev, candidates="ww").alpha)
    assert raw.loc[0, "sigma_mp"] == pytest.approx(0.02, rel=0.03)  # entry std, any units


def test_layer_selection(checkpoint):
    assert list(analyze(checkpoint, layers=r"^attn", progress=False)["name"]) == ["attn.q.weight"]
    picked = analyze(checkpoint, layers=["embed.weight", "conv.weight"], progress=False)
    assert list(picked["name"]) == ["embed.weight", "conv.weight"]
    by_id = analyze(checkpoint, layers=[0], progress=False)
    assert len(by_id) == 1
    capped = analyze(checkpoint, layers="embed", max_evals=100, progress=False)
    assert capped.loc[0, "status"] == "failed" and "max_evals" in capped.loc[0, "warning"]


def test_resume_skips_finished_layers_and_survives_a_cut_line(checkpoint, tmp_path, monkeypatch):
    log = tmp_path / "done.jsonl"
    first = analyze(checkpoint, resume=log, progress=False)
    lines = log.read_text().splitlines()
    # a header line, then one line per layer holding all its rows (the stack: 3 rows)
    assert len(lines) == 1 + first["layer_id"].nunique()
    assert json.loads(lines[0])["rmt_resume"] == 1
    assert sum(len(json.loads(line)["rows"]) for line in lines[1:]) == len(first)
    module = rmt.runner

    def boom(*args, **kwargs):
        raise AssertionError("a finished layer was recomputed")

    monkeypatch.setattr(module, "analyze_tensor", boom)
    again = analyze(checkpoint, resume=log, progress=False)
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), first.drop(columns="seconds"),
                                  check_dtype=False)
    monkeypatch.undo()
    # an interrupted run leaves a half-written last line: that layer is redone
    log.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    redone = analyze(checkpoint, resume=log, progress=False)
    assert len(redone) == len(first)


def _comparable(df):
    return df.drop(columns=["seconds"]).reset_index(drop=True)


def test_process_pool_gives_the_serial_table(checkpoint, table):
    parallel = analyze(checkpoint, n_jobs=2, backend="processes", progress=False)
    pd.testing.assert_frame_equal(_comparable(parallel), _comparable(table), check_dtype=False,
                                  rtol=1e-9)
    # every task in a spawned worker (n_jobs lets this process work while workers start)
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(
            2, mp_context=multiprocessing.get_context("spawn")) as pool:
        remote = analyze(checkpoint, executor=pool, progress=False)
    pd.testing.assert_frame_equal(_comparable(remote), _comparable(table), check_dtype=False,
                                  rtol=1e-9)


def test_dask_local_cluster_gives_the_serial_table(checkpoint, table):
    distributed = pytest.importorskip("distributed", reason="the 'dask' extra is not installed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        df = analyze(checkpoint, executor=client.get_executor(), progress=False)
    pd.testing.assert_frame_equal(_comparable(df), _comparable(table), check_dtype=False,
                                  rtol=1e-9)


def test_parallel_needs_a_path():
    with pytest.raises(ValueError, match="path"):
        analyze(_model(), n_jobs=2, backend="processes")
    with pytest.raises(ValueError, match="backend"):
        analyze(_model(), n_jobs=2, backend="fork")


def test_threads_give_the_serial_table_from_any_source(checkpoint, table):
    threaded = analyze(checkpoint, n_jobs=2, progress=False)
    pd.testing.assert_frame_equal(_comparable(threaded), _comparable(table), check_dtype=False,
                                  rtol=1e-9)
    in_memory = _model()  # threads read what this process holds: no path needed
    pd.testing.assert_frame_equal(_comparable(analyze(in_memory, n_jobs=2, progress=False)),
                                  _comparable(analyze(in_memory, progress=False)),
                                  check_dtype=False, rtol=1e-9)


def test_threads_run_big_layers_alone_and_small_ones_side_by_side(checkpoint, monkeypatch):
    import threading

    import numba
    from threadpoolctl import threadpool_info

    from rmt import config
    from rmt import runner as runner_module

    real, seen = runner_module.analyze_tensor, []

    def spy(i, name, tensor, opts):
        blas = {lib["num_threads"] for lib in threadpool_info()}
        seen.append((name, threading.current_thread() is threading.main_thread(),
                     opts.n_threads, numba.get_num_threads(), blas))
        return real(i, name, tensor, opts)

    monkeypatch.setattr(runner_module, "analyze_tensor", spy)
    costs = {name: runner_module._cost(t) for name, t in rio.open_checkpoint(checkpoint)}
    biggest = max(costs, key=costs.get)
    monkeypatch.setattr(config, "ALONE_SECONDS", costs[biggest] * 0.999)
    with rmt._threads.limit_threads(2):  # a budget of 2 threads, whatever this host has
        df = analyze(checkpoint, n_jobs=2, progress=False)
    assert (df["name"] == biggest).any()
    by_name = {name: rest for name, *rest in seen}
    main, n_threads, n_numba, blas = by_name[biggest]
    assert main and n_threads == 2 and n_numba == 2 and blas == {2}  # alone, every thread
    for name, (main, n_threads, n_numba, blas) in by_name.items():
        if name != biggest:  # in a pool thread, each on its share of the budget
            assert not main and n_threads == 1 and n_numba == 1 and blas == {1}, name


def test_threads_fall_back_to_one_layer_at_a_time_without_a_threadsafe_numba(
        checkpoint, table, monkeypatch):
    from rmt import runner as runner_module

    monkeypatch.setattr(runner_module, "numba_threadsafe", lambda: False)
    with pytest.warns(UserWarning, match="not thread-safe"):
        df = analyze(checkpoint, n_jobs=2, progress=False)
    pd.testing.assert_frame_equal(_comparable(df), _comparable(table), check_dtype=False,
                                  rtol=1e-9)


def test_an_error_in_a_thread_stops_the_run_and_keeps_finished_rows(checkpoint, monkeypatch):
    from rmt import runner as runner_module

    real = runner_module.analyze_tensor

    def failing(i, name, tensor, opts):
        if name == "conv.weight":
            raise RuntimeError("disk gone")
        return real(i, name, tensor, opts)

    monkeypatch.setattr(runner_module, "analyze_tensor", failing)
    with pytest.raises(rmt.errors.AnalysisError, match="disk gone") as info:
        analyze(checkpoint, n_jobs=2, progress=False)
    assert "conv.weight" not in set(info.value.table["name"])


def test_sources_other_than_safetensors(tmp_path):
    weights = {k: v for k, v in _model().items() if v.dtype != ml_dtypes.bfloat16}
    np.savez(tmp_path / "w.npz", **weights)
    a = analyze(tmp_path / "w.npz", progress=False)
    b = analyze(weights, progress=False)
    pd.testing.assert_frame_equal(_comparable(a), _comparable(b), check_dtype=False)


def test_summary_and_plots(table, checkpoint, tmp_path):
    info = summary(table)
    ok = table[table["status"] == "success"]
    assert info["alpha"] == pytest.approx(ok["alpha"].mean())
    assert info["n_failed"] == int((table["status"] == "failed").sum())
    assert sum(info["phases"].values()) == len(ok)
    analyze(checkpoint, layers="embed|attn", plot_dir=tmp_path / "plots", progress=False)
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert "summary.png" in pngs and len(pngs) == 3


def test_unreadable_checkpoint_is_an_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(rmt.errors.CheckpointError, match="bad header"):
        analyze(bad)


def test_summary_weighted_by_parameters_and_weightwatchers_definition():
    rows = pd.DataFrame({
        "status": ["success", "success", "failed"], "N": [100, 400, 50], "M": [50, 100, 10],
        "num_slices": [1, 9, 1], "alpha": [2.0, 4.0, np.nan], "log_norm": [1.0, 3.0, np.nan],
        "phase": ["heavy-tailed", "bulk-decay", ""]})
    info = summary(rows)
    assert info["alpha"] == 3.0 and info["n_failed"] == 1  # the failed row is left out
    w = np.array([100 * 50, 400 * 100 * 9])
    assert info["weighted"]["alpha"] == pytest.approx((2 * w[0] + 4 * w[1]) / w.sum())
    # WeightWatcher's get_summary: the plain column mean over its table, whose failed fits
    # carry alpha = -1
    ww_table = rows.assign(alpha=[2.0, 4.0, -1.0])
    assert summary(ww_table, ww=True) == {"log_norm": 2.0, "alpha": pytest.approx(5 / 3)}


def test_per_slice_rows_are_each_slices_own_analysis():
    K = np.random.default_rng(61).standard_normal((64, 32, 3, 3)).astype(np.float32)
    df = analyze({"conv.weight": K}, conv="per-slice", progress=False)
    assert list(df["name"]) == [f"conv.weight[{i},{j}]" for i in range(3) for j in range(3)]
    for k, row in df.iterrows():
        i, j = divmod(k, 3)
        ev = rmt.esd(K[:, :, i, j])
        assert row["num_evals"] == 32 and row["num_slices"] == 1
        assert row["lambda_max"] == pytest.approx(ev[-1], rel=1e-12)
        assert row["alpha"] == pytest.approx(rmt.fit_powerlaw(ev).alpha, rel=1e-12)
    tiny = analyze({"conv.weight": K[:8, :6]}, conv="per-slice", progress=False)
    assert len(tiny) == 1 and "too few eigenvalues" in tiny.loc[0, "warning"]
