"""rmt.columns: the column schema and plug-in analyses (register, run, resume, workers)."""

from __future__ import annotations

import concurrent.futures
import importlib
import multiprocessing

import numpy as np
import pytest

import rmt
from rmt import columns
from rmt import io as rio
from rmt.columns import Analysis, Column
from rmt.resume import ResumeError


def test_every_column_is_documented_with_unit_and_source():
    assert list(rmt.COLUMNS)[:2] == ["layer_id", "name"]
    assert list(rmt.COLUMNS)[-3:] == ["status", "warning", "seconds"]
    for name, col in rmt.COLUMNS.items():
        assert col.name == name and col.description and col.source, name
        assert str(col) == col.description
    assert rmt.COLUMNS["lambda_max"].unit == "eigenvalue"
    assert rmt.COLUMNS["log_norm"].unit == "log10"


def test_table_columns_are_the_schema():
    rng = np.random.default_rng(0)
    df = rmt.analyze({"w": rng.standard_normal((200, 100))}, progress=False)
    assert list(df.columns) == columns.table_columns()
    on = rmt.analyze({"w": rng.standard_normal((200, 100))}, randomize=True, tpl=True,
                     uncertainty=True, vectors=True, inverse=True, farms=True, fingers="dk",
                     enable=["panel"], progress=False)
    assert list(on.columns) == columns.table_columns(columns.OPTIONS) == list(rmt.COLUMNS)
    assert columns.OPTIONS == ["farms", "fingers", "inverse", "panel", "randomize", "tpl",
                               "uncertainty", "vectors"]


@pytest.fixture
def plugin():
    import tests.plugin_analysis as module

    module = importlib.reload(module)  # registers (again) after an earlier unregister
    yield module
    columns.unregister("top_gap")
    columns.unregister("trace")


def test_plugin_adds_its_column_computed_once(plugin):
    rng = np.random.default_rng(1)
    weights = {"a": rng.standard_normal((300, 120)), "b": rng.standard_normal((80, 80)),
               "tiny": np.outer(rng.standard_normal(40), rng.standard_normal(20))}
    df = rmt.analyze(weights, progress=False, min_evals=2)
    assert list(df.columns)[-4:] == ["top_gap", "status", "warning", "seconds"]
    for name in ("a", "b"):
        row = df[df["name"] == name].iloc[0]
        assert row["top_gap"] == pytest.approx(plugin.expected(weights[name]), rel=1e-9)
    tiny = df[df["name"] == "tiny"].iloc[0]  # rank one: the plug-in has no result
    assert np.isnan(tiny["top_gap"]) and "no top gap: fewer than two" in tiny["warning"]
    assert tiny["status"] == "success"  # an optional analysis never fails the row


def test_opt_in_plugins_are_turned_on_by_name(plugin):
    W = np.random.default_rng(3).standard_normal((200, 100))
    assert "esd_sum" not in rmt.analyze({"w": W}, progress=False).columns
    df = rmt.analyze({"w": W}, enable=["trace"], progress=False)
    assert df["esd_sum"].iloc[0] == pytest.approx(np.sum(W * W) / 200, rel=1e-12)
    both = rmt.analyze({"w": W}, enable=["trace", "inverse"], progress=False)
    assert {"esd_sum", "inv_alpha"} <= set(both.columns)
    with pytest.raises(ValueError, match="no opt-in analysis 'nope'"):
        rmt.analyze({"w": W}, enable=["nope"])


def test_plugin_column_names_cannot_clash():
    with pytest.raises(ValueError, match="already defined by powerlaw"):
        columns.register(Analysis("mine", lambda layer, W: 1.0,
                                  (Column("alpha", "x", "", "me", lambda r, layer: r),)))
    with pytest.raises(ValueError, match="already defined by the reader"):
        columns.register(Analysis("mine", lambda layer, W: 1.0,
                                  (Column("name", "x", "", "me", lambda r, layer: r),)))
    assert "mine" not in columns.ANALYSES


def test_plugin_runs_in_spawned_workers_and_is_part_of_the_resume_identity(plugin, tmp_path):
    rng = np.random.default_rng(2)
    weights = {f"l{i}": rng.standard_normal((120, 60)).astype(np.float32) for i in range(3)}
    path = tmp_path / "m.safetensors"
    rio.write_safetensors(path, weights)
    serial = rmt.analyze(path, progress=False)
    with concurrent.futures.ProcessPoolExecutor(
            2, mp_context=multiprocessing.get_context("spawn")) as pool:
        remote = rmt.analyze(path, executor=pool, progress=False)
    np.testing.assert_allclose(remote["top_gap"], serial["top_gap"], rtol=1e-12)
    log = tmp_path / "run.jsonl"
    rmt.analyze(path, resume=log, progress=False)
    columns.unregister("top_gap")
    with pytest.raises(ResumeError, match="belongs to another run"):
        rmt.analyze(path, resume=log, progress=False)
    importlib.reload(plugin)


def test_plugin_registered_in_main_is_refused_for_parallel_runs(tmp_path):
    def local(layer, W):
        return 1.0

    local.__module__ = "__main__"
    columns.register(Analysis("local", local, (Column("local", "x", "", "me",
                                                      lambda r, layer: r),)))
    try:
        path = tmp_path / "m.safetensors"
        rio.write_safetensors(path, {"w": np.ones((20, 10), np.float32)})
        with pytest.raises(ValueError, match="registered in __main__"):
            rmt.analyze(path, n_jobs=2, backend="processes", progress=False)
    finally:
        columns.unregister("local")
