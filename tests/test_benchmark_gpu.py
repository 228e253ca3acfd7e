"""The GPU benchmark script (benchmarks/gpu.py), checked where it can be without a GPU.

Its generator is written against an array namespace, so the bf16 rounding and the
checkpoint it writes are checked with NumPy against ml_dtypes and closed-form RMT, and the
whole pipeline runs with ``--device cpu`` at toy sizes. The timings themselves need a GPU.
"""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

import rmt
from benchmarks import gpu as bench
from rmt._device import gpu_available
from rmt.io import open_checkpoint


def test_bf16_rounding_matches_ml_dtypes_including_ties():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(100_000) * 10.0 ** rng.uniform(-6, 6, 100_000)).astype(np.float32)
    # exact ties between two bf16 values: lower 16 bits 0x8000, both parities of bit 16
    ties = (rng.integers(0x3000, 0x4F00, 1000, dtype=np.uint32) << 16 | 0x8000).view(np.float32)
    for values in (x, ties, -ties, np.array([0.0, -0.0, 1.0, 3.0e38], np.float32)):
        expected = values.astype(ml_dtypes.bfloat16).view(np.uint16)
        np.testing.assert_array_equal(bench.bf16_bits(values, np), expected)


def test_written_checkpoint_reads_back_bit_exact(tmp_path):
    model = bench.ModelShape(layers=1, hidden=48, intermediate=80, vocab=100)
    path = tmp_path / "m.safetensors"
    bench.write_checkpoint(path, model, np, seed=3)
    tensors = dict(open_checkpoint(path))
    assert {n: t.shape for n, t in tensors.items()} == model.tensors()
    assert model.n_params == sum(int(np.prod(t.shape)) for t in tensors.values())
    for index, (name, shape) in enumerate(model.tensors().items()):
        got = tensors[name].load()
        assert got.dtype == ml_dtypes.bfloat16
        if len(shape) == 1:
            np.testing.assert_array_equal(got.astype(np.float32), 1.0)
            continue
        # the reference: the same draws, rounded by ml_dtypes instead of bit arithmetic
        rng = np.random.default_rng(3 + index)
        V = rng.standard_normal((4, shape[1]), dtype=np.float32)
        V /= np.sqrt((V * V).sum(axis=1, keepdims=True))
        scale = np.float32([s * bench.SIGMA * np.sqrt(max(shape) / shape[0])
                            for s in bench.SPIKES])
        W = rng.standard_normal(shape, dtype=np.float32) * np.float32(bench.SIGMA)
        W += (rng.standard_normal((shape[0], 4), dtype=np.float32) * scale) @ V
        np.testing.assert_array_equal(got.view(np.uint16),
                                      W.astype(ml_dtypes.bfloat16).view(np.uint16))


@pytest.mark.parametrize("shape", [(2400, 1200), (1200, 2400)])
def test_generated_spikes_sit_where_bbp_puts_them(shape):
    """Information-plus-noise outliers: λ = σ²(1 + θ)(θ + γ)/θ for θ = s², γ = M/N."""
    W = np.concatenate(list(bench.matrix_chunks(shape, 0, np, chunk_rows=500)))
    ev = rmt.esd(W.view(ml_dtypes.bfloat16))
    gamma = min(shape) / max(shape)
    theta = np.array(bench.SPIKES) ** 2
    predicted = bench.SIGMA**2 * (1 + theta) * (theta + gamma) / theta
    # Outliers fluctuate by O(1/√M) (and the spike directions are only nearly orthogonal):
    # over 4 seeds and 3 sizes the largest relative deviation measured was 2.1/√M.
    np.testing.assert_allclose(ev[::-1][:4], predicted, rtol=3 / np.sqrt(min(shape)))
    edge = bench.SIGMA**2 * (1 + np.sqrt(gamma)) ** 2
    assert ev[-5] < edge * 1.02 < predicted.min()


def test_blocks_group_by_transformer_block():
    names = ["model.embed_tokens.weight", "model.layers.0.a", "model.layers.0.b",
             "model.layers.1.a", "lm_head.weight"]
    assert bench._blocks(names) == [["model.embed_tokens.weight"],
                                    ["model.layers.0.a", "model.layers.0.b"],
                                    ["model.layers.1.a"], ["lm_head.weight"]]


def test_dry_run_on_the_cpu_end_to_end(tmp_path):
    args = ["--device", "cpu", "--layers", "2", "--hidden", "96", "--intermediate", "256",
            "--vocab", "600", "--results", str(tmp_path), "--powerlaw-sizes", "800,2000",
            "--powerlaw-max-n", "800", "--workdir", str(tmp_path)]
    assert bench.main(args) == 0
    ckpt = json.loads((tmp_path / "gpu-checkpoint.json").read_text())
    assert ckpt["analyze"]["layers"] == 7 * 2 + 2 and ckpt["analyze"]["failed"] == 0
    assert ckpt["analyze"]["median_num_spikes"] == len(bench.SPIKES)
    assert ckpt["esd"]["matrices"] == ckpt["floor"]["matrices"] == 16
    assert ckpt["esd"]["eigenvalues"] == 2 * 96 + 2 * 7 * 96
    assert ckpt["block0"]["cpu"]["layers"] == 7
    assert not list(tmp_path.glob("tmp*/*.safetensors"))  # the checkpoint is removed
    rows = json.loads((tmp_path / "gpu-powerlaw.json").read_text())["results"]
    assert [r["n"] for r in rows] == [800, 2000]
    assert all(r["same_xmin_as_cpu"] for r in rows) and rows[0]["same_xmin_as_powerlaw"]
    assert rows[0]["abs_dalpha_powerlaw"] < 1e-10
    assert "| 800 |" in (tmp_path / "gpu-powerlaw.md").read_text()


@pytest.mark.skipif(gpu_available(), reason="checks the no-GPU behaviour")
def test_without_a_gpu_it_says_so_and_writes_nothing(tmp_path, capsys):
    assert bench.main(["--results", str(tmp_path)]) == 0
    assert "no usable CUDA device" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


def test_bf16_checkpoint_through_the_gpu_twin_equals_the_cpu_path(tmp_path, numpy_as_cupy):
    """The benchmark's workload — memory-mapped bf16 tensors, wide and tall — on the
    device='gpu' route (NumPy standing in for CuPy) gives the CPU path's table."""
    path = tmp_path / "m.safetensors"
    bench.write_checkpoint(path, bench.ModelShape(layers=1, hidden=64, intermediate=160,
                                                  vocab=300), np)
    on_gpu = rmt.analyze(path, device="gpu", progress=False)
    on_cpu = rmt.analyze(path, device="cpu", progress=False)
    assert len(on_gpu) == 9 and list(on_gpu.phase) == list(on_cpu.phase)
    for column in ("lambda_max", "stable_rank", "alpha", "num_spikes"):
        np.testing.assert_allclose(on_gpu[column], on_cpu[column], rtol=1e-9)
    assert numpy_as_cupy["gram"] >= 3  # the wide down_proj and tall matrices went one by one


def test_every_published_table_has_its_place_in_the_docs():
    # benchmarks regenerate docs/benchmarks.md (and formats.md), never the README body
    from benchmarks._common import BENCHMARKS_DOC, DOCS

    text = BENCHMARKS_DOC.read_text()
    for name in ("summary", "esd", "powerlaw_fit", "analyze_llm", "etiquette", "plots",
                 "weightwatcher", "hessian", "gpu-checkpoint", "gpu-powerlaw", "opt_in"):
        assert f"<!-- {name}-table -->" in text and f"<!-- /{name}-table -->" in text, name
    assert "<!-- formats-table -->" in (DOCS / "formats.md").read_text()
    readme = (DOCS.parent / "README.md").read_text()
    assert "-table -->" not in readme
