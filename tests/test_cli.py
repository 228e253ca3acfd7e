"""The rmt command line: outputs, files, exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from rmt import io as rio
from rmt.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("cli") / "m.safetensors"
    rio.write_safetensors(path, {"a.weight": rng.standard_normal((300, 100)).astype(np.float32),
                                 "b.weight": rng.standard_normal((50, 200)).astype(np.float32),
                                 "b.bias": np.zeros(50, np.float32)})
    return path


def test_analyze_csv_to_stdout(checkpoint, capsys):
    assert main(["analyze", str(checkpoint), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    df = pd.read_csv(io.StringIO(out))
    assert list(df["name"]) == ["a.weight", "b.weight"]
    assert (df["status"] == "success").all() and "2 layers (0 failed)" in err


def test_opt_in_analyses_from_the_command_line(checkpoint, capsys):
    assert main(["analyze", str(checkpoint), "--format", "csv", "--randomize", "--vectors",
                 "--inverse", "--farms", "--fingers", "clip_xmax", "--candidates", "ww",
                 "--enable", "tpl", "--rng", "3"]) == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out))
    for col in ("num_traps", "num_traps_ww", "tail_mean_loc_ratio", "inv_alpha",
                "alpha_farms", "num_fingers", "tpl_alpha"):
        assert col in df.columns, col
    assert (df["status"] == "success").all()
    with pytest.raises(SystemExit):
        main(["analyze", str(checkpoint), "--fingers", "maybe"])


def test_analyze_json_file_and_layer_filter(checkpoint, tmp_path, capsys):
    out = tmp_path / "t.json"
    assert main(["analyze", str(checkpoint), "--format", "json", "--out", str(out),
                 "--layers", "^b"]) == 0
    rows = json.loads(out.read_text())
    assert [r["name"] for r in rows] == ["b.weight"] and rows[0]["M"] == 50
    assert capsys.readouterr().out == ""


def test_analyze_table_plot_and_resume(checkpoint, tmp_path, capsys):
    plots, resume = tmp_path / "plots", tmp_path / "r.jsonl"
    assert main(["analyze", str(checkpoint), "--plot", str(plots), "--resume", str(resume),
                 "--candidates", "ww", "--raw"]) == 0
    assert "random-like" in capsys.readouterr().out
    assert (plots / "summary.png").is_file() and len(resume.read_text().splitlines()) == 3


def test_errors_print_one_line_and_exit_nonzero(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 3)
    for args, code in (([str(bad)], 1), ([str(tmp_path / "missing.pt")], 1),
                       (["--jobs", "x", str(bad)], 2)):
        proc = subprocess.run([sys.executable, "-m", "rmt", "analyze", *args],
                              capture_output=True, text=True)
        assert proc.returncode == code, proc.stderr
        if code == 1:
            assert proc.stderr.count("\n") == 1 and "error" in proc.stderr
            assert "Traceback" not in proc.stderr


def test_analyze_on_a_dask_scheduler(checkpoint, capsys):
    distributed = pytest.importorskip("distributed", reason="the 'dask' extra is not installed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        assert main(["analyze", str(checkpoint), "--format", "csv", "--scheduler",
                     cluster.scheduler_address]) == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(df["name"]) == ["a.weight", "b.weight"] and (df["status"] == "success").all()


def test_energy_command(tmp_path, capsys):
    png = tmp_path / "e.png"
    assert main(["energy", "--n", "5", "--seeds", "2", "--phis", "0.5", "--format", "csv",
                 "--plot", str(png)]) == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(df["phi"]) == [0.5] and df.loc[0, "runs"] == 2
    assert df.loc[0, "predicted"] == pytest.approx(0.125) and png.is_file()
