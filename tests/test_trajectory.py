"""rmt.track on a real training run (digits, NumPy SGD, checkpoints every two epochs): the
long table is each checkpoint's analysis, the hidden layer's alpha falls as it trains,
resumed, parallel and Dask runs give the same table; track_summary's alarms and change
points on series with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import rmt
from rmt.trajectory import change_points, parse_step, track, track_summary
from tests.digits_training import init, train

COLS = ["checkpoint", "step", "layer_id", "name", "alpha", "phase", "stable_rank", "ERG_gap",
        "status"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(init(0), epochs=10, batch_size=8, lr=0.05, save_every=2, out_dir=out)
    return out


def test_steps_are_parsed_from_the_names():
    assert parse_step("runs/x/checkpoint-500/model.safetensors") == 500
    assert parse_step("ckpt/step_1000.safetensors") == 1000
    assert parse_step("lightning/epoch=3-step=120.ckpt") == 120
    assert parse_step("global_step42/weights.bin") == 42
    assert parse_step("model-7.pt") == 7
    with pytest.raises(ValueError, match="no training step"):
        parse_step("final.safetensors")


def test_the_long_table_is_each_checkpoints_analysis(run):
    df = track(str(run / "step-*.safetensors"), progress=False)
    files = sorted(run.glob("step-*.safetensors"), key=parse_step)
    assert list(df.columns[:2]) == ["checkpoint", "step"]
    assert sorted(df.step.unique()) == [parse_step(f) for f in files]
    assert len(df) == 3 * len(files)
    for f in files:
        mine = df[df.step == parse_step(f)].reset_index(drop=True)
        alone = rmt.analyze(f, progress=False)
        pd.testing.assert_frame_equal(mine[COLS[2:]], alone[COLS[2:]])
    # a real trend: the 512 x 256 hidden layer grows heavier tails as it learns
    summary = track_summary(df).set_index("name")
    hidden = summary.loc["net.2.weight"]
    assert hidden.alpha_slope < 0 and hidden.alpha_tau < -0.6 and hidden.alpha_trend_p < 0.05
    assert hidden.alpha_last < hidden.alpha_first
    assert summary.n_checkpoints.tolist() == [len(files)] * 3


def test_resumed_parallel_and_dask_runs_give_the_same_table(run, tmp_path):
    files = sorted(run.glob("step-*.safetensors"), key=parse_step)
    serial = track(files, progress=False)
    first = track(files[:3], resume=tmp_path / "logs", progress=False)
    resumed = track(files, resume=tmp_path / "logs", n_jobs=2, progress=False)
    assert len(list((tmp_path / "logs").glob("*.jsonl"))) == len(files)
    pd.testing.assert_frame_equal(resumed[COLS], serial[COLS])
    # the first three checkpoints' rows came from their resume files, seconds and all
    early = resumed[resumed.step.isin(first.step)].reset_index(drop=True)
    assert early.seconds.tolist() == first.seconds.tolist()
    distributed = pytest.importorskip("distributed", reason="the 'dask' extra is not installed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        on_dask = track(files, executor=client.get_executor(), progress=False)
        compared = rmt.compare(files[0], files[-1], executor=client.get_executor(),
                               progress=False)
    pd.testing.assert_frame_equal(on_dask[COLS], serial[COLS])
    local = rmt.compare(files[0], files[-1], progress=False)
    pd.testing.assert_frame_equal(compared[["name", "delta_alpha", "left_overlap"]],
                                  local[["name", "delta_alpha", "left_overlap"]])


def test_bad_checkpoints_and_steps(run, tmp_path):
    files = sorted(run.glob("step-*.safetensors"), key=parse_step)[:2]
    bad = tmp_path / "step-99999.safetensors"
    bad.write_bytes(b"\x00" * 64)
    df = track([*files, bad], progress=False)
    broken = df[df.step == 99999]
    assert len(broken) == 1 and "unreadable checkpoint" in broken.warning.iloc[0]
    assert (df[df.step != 99999].status == "success").all()
    with pytest.raises(ValueError, match="several checkpoints at step"):
        track(files, steps=[5, 5])
    with pytest.raises(ValueError, match="2 steps for 1"):
        track(files[:1], steps=[1, 2])
    with pytest.raises(ValueError, match="no checkpoint matches"):
        track(str(tmp_path / "nothing-*.safetensors"))
    weights = [{"w": np.random.default_rng(i).standard_normal((60, 30))} for i in range(3)]
    assert track(weights, progress=False).step.tolist() == [0, 1, 2]


def test_alarms_fire_at_the_first_step_they_hold():
    rows = []
    for step, (alpha, phase, traps, gap) in enumerate([
            (4.1, "heavy-tailed", 0, -2), (3.2, "heavy-tailed", 0, -1), (2.4, "heavy-tailed", 1, 0),
            (1.8, "rank-collapse", 2, 3), (1.7, "rank-collapse", 2, 4)]):
        rows.append({"step": 100 * step, "name": "a", "status": "success", "alpha": alpha,
                     "phase": phase, "num_traps": traps, "ERG_gap": gap})
        rows.append({"step": 100 * step, "name": "b", "status": "success", "alpha": 3.0,
                     "phase": "bulk+spikes", "num_traps": 0, "ERG_gap": -1})
    s = track_summary(pd.DataFrame(rows)).set_index("name")
    a, b = s.loc["a"], s.loc["b"]
    assert (a.alpha_below_2_step, a.phase_change_step, a.traps_step,
            a.erg_gap_sign_change_step) == (300, 300, 200, 300)
    assert a.alarms == "alpha<2, phase change, traps, ERG gap sign"
    assert a.alpha_slope < 0 and a.phase_first == "heavy-tailed" and a.phase_changes == 1
    assert b.alarms == "" and np.isnan(b.alpha_below_2_step) and b.alpha_slope == 0


@pytest.mark.parametrize("kind, expected", [("noise", 0), ("line", 0), ("jump", 1),
                                            ("kink", 1)])
def test_change_points_find_jumps_and_kinks_not_noise_or_trends(kind, expected):
    t = np.arange(30.0)
    hits = 0
    for seed in range(30):
        e = np.random.default_rng(seed).standard_normal(30)
        x = {"noise": 4 + 0.1 * e, "line": 5 - 0.05 * t + 0.02 * e,
             "jump": np.where(t < 15, 4.0, 3.0) + 0.05 * e,
             "kink": np.where(t < 15, 4.0, 4 - 0.1 * (t - 15)) + 0.02 * e}[kind]
        found = change_points(x, t * 100)
        hits += len(found) == expected and (expected == 0 or abs(found[0] - 15) <= 1)
    assert hits >= 26


def test_cli_track_with_figures_and_parquet(run, tmp_path, capsys):
    from rmt.cli import main

    pattern = str(run / "step-*.safetensors")
    assert main(["track", pattern, "--plot", str(tmp_path / "figs"), "--format", "parquet",
                 "--out", str(tmp_path / "t.parquet")]) == 0
    assert {p.name for p in (tmp_path / "figs").iterdir()} == {
        "alpha_heatmap.png", "alpha_lines.png", "phases.png"}
    back = pd.read_parquet(tmp_path / "t.parquet")
    assert len(back) == 15 and "checkpoints, 3 layers" in capsys.readouterr().err
    assert main(["track", pattern, "--summary", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("name,n_checkpoints")
    assert main(["compare", str(sorted(run.glob("*.safetensors"))[0]),
                 str(sorted(run.glob("*.safetensors"))[-1]), "--format", "parquet",
                 "--out", str(tmp_path / "c.parquet")]) == 0
    assert "intruder_index" in pd.read_parquet(tmp_path / "c.parquet").columns
