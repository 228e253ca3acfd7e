"""The wheel installs kernels/ as rmt.kernels, and the console script runs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import rmt
from rmt.cli import main
from rmt.demo import DEMO_PHASES, demo_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    (path,) = out.glob("rmt-*.whl")
    return path


def test_wheel_maps_kernels_to_rmt_kernels(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("rmt/kernels/__init__.py", "rmt/kernels/cpu.py", "rmt/kernels/gpu.py",
                     "rmt/py.typed", "rmt/spectra.py"):
        assert expected in names
    assert not any(n.startswith("kernels/") for n in names), "kernels/ must not be top-level"
    for module in ROOT.joinpath("rmt").rglob("*.py"):  # every source module ships
        assert module.relative_to(ROOT).as_posix() in names, module


def test_wheel_imports_rmt_kernels(wheel, tmp_path):
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = ("import rmt, rmt.kernels.cpu, rmt.kernels.gpu, rmt.io; "
            "print(rmt.__file__); print(rmt.kernels.cpu.__file__); "
            "print(rmt.esd([[3.0, 0.0], [0.0, 4.0]], normalize=False, device='cpu').tolist())")
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path, env=env).stdout.split("\n")
    assert out[0].startswith(str(target)) and out[1].startswith(str(target / "rmt" / "kernels"))
    assert json.loads(out[2]) == [9.0, 16.0]


def test_demo_command_prints_a_row_per_layer(capsys):
    assert main(["demo", "--format", "csv", "--device", "cpu"]) == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out))
    weights = demo_model(0)
    assert list(df["name"]) == list(weights)
    for col in ("lambda_max", "stable_rank", "log_norm", "log_spectral_norm", "entropy",
                "rank_loss", "num_evals", "alpha", "xmin", "D", "num_pl_spikes", "sigma_mp",
                "num_spikes", "tw_z", "phase"):
        assert col in df.columns
    row = df.set_index("name")
    assert row.loc["proj.weight", "rank_loss"] == 64  # built with rank 64 of 128
    assert row.loc["conv.weight", "num_evals"] == 32 * 9
    assert (row.drop("proj.weight")["rank_loss"] == 0).all()
    assert row.loc["attn.q_proj.weight", "num_spikes"] == 4  # built with 4 strong spikes
    assert row.loc["embed.weight", "num_spikes"] == 0  # Gaussian: pure MP bulk
    np.testing.assert_allclose(row.loc["embed.weight", "sigma_mp"], 0.02, rtol=0.02)
    for name, phase in DEMO_PHASES.items():  # one layer built in each of the six phases
        if phase is not None:
            assert row.loc[name, "phase"] == phase, name
    assert set(DEMO_PHASES.values()) - {None} == set(rmt.synthetic.PHASES)
    emb = weights["embed.weight"].astype(np.float64)
    np.testing.assert_allclose(row.loc["embed.weight", "lambda_max"],
                               np.linalg.norm(emb, 2) ** 2 / 2000, rtol=1e-6)


def test_python_dash_m_rmt_runs():
    out = subprocess.run([sys.executable, "-m", "rmt", "demo", "--format", "json", "--raw"],
                         capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout)
    assert len(rows) == len(DEMO_PHASES) and rows[0]["name"] == "embed.weight"
