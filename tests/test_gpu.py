"""The CuPy twin: orchestration checked with NumPy here, the real kernels on a GPU.

``rmt.kernels.gpu`` writes its array logic against a namespace ``xp``; with
``xp=numpy`` the same code runs on any machine and must agree with the CPU kernels.
Tests marked ``gpu`` run CPU and GPU twins on the same input and are skipped, saying
why, without a CUDA device.
"""

from __future__ import annotations

import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

import rmt
from rmt._device import gpu_available, resolve_device
from rmt.errors import DeviceError
from rmt.kernels import cpu, gpu
from tests.reference import eig_tolerance, esd_svd

STORAGE = [np.float64, np.float32, np.float16, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn]


@pytest.mark.parametrize("dtype", STORAGE, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(700, 120), (120, 700)])
@pytest.mark.parametrize("block_rows", [None, 64])
def test_gpu_gram_logic_with_numpy_namespace(dtype, shape, block_rows):
    W = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    transpose = shape[0] < shape[1]
    G_twin = gpu._gram(W, transpose, np.dtype(np.float64), block_rows, np)
    G_cpu = cpu.gram(W, transpose=transpose)
    lower = np.tril_indices(min(shape))
    np.testing.assert_allclose(G_twin[lower], G_cpu[lower], rtol=0,
                               atol=1e-13 * np.abs(G_cpu[lower]).max())
    np.testing.assert_allclose(G_twin, G_twin.T)  # the GPU twin returns the full matrix


@pytest.mark.parametrize("dtype", STORAGE, ids=lambda d: np.dtype(d).name)
def test_gpu_decode_logic_with_numpy_namespace(dtype):
    block = np.random.default_rng(1).standard_normal((33, 17)).astype(dtype)
    out = np.empty((33, 17))
    twin = gpu._decode(block, np.dtype(np.float64), np)
    np.testing.assert_array_equal(twin, cpu.decode(block, out))


@pytest.mark.parametrize("m", [8, 32, 33, 96])
def test_gpu_eigvalsh_logic_picks_a_solver_per_size(m):
    """Stacks of large matrices are solved one by one (syevd), small ones batched (syevj);
    both must equal LAPACK on every matrix of the stack."""
    A = np.random.default_rng(m).standard_normal((3, 2 * m, m))
    G = A.transpose(0, 2, 1) @ A
    G_lower_only = np.tril(G)  # the solvers must read the lower triangle alone
    got = gpu._eigvalsh(G_lower_only, np)
    assert got.shape == (3, m)
    for k in range(3):
        np.testing.assert_allclose(got[k], np.linalg.eigvalsh(G[k]), rtol=0,
                                   atol=1e-12 * np.abs(G[k]).max())
    np.testing.assert_allclose(gpu._eigvalsh(G_lower_only[0], np), np.linalg.eigvalsh(G[0]),
                               rtol=0, atol=1e-12 * np.abs(G[0]).max())


def test_twins_export_the_same_functions():
    assert cpu.__all__ == gpu.__all__
    for fn in cpu.__all__:
        assert callable(getattr(gpu, fn))


def test_import_rmt_does_not_import_cupy():
    code = ("import sys, rmt; rmt.esd([[1.0, 2.0], [3.0, 4.0]], device='cpu'); "
            "print('cupy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(gpu_available(), reason="checks the no-GPU behaviour")
def test_gpu_request_without_device_is_a_clear_error():
    assert resolve_device("auto") == "cpu"
    with pytest.raises(DeviceError, match="no CUDA device"):
        rmt.esd(np.ones((4, 3)), device="gpu")
    with pytest.raises(DeviceError):
        gpu.gram(np.ones((4, 3)))


# --- on a CUDA device -----------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", STORAGE, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(2000, 300), (300, 2000), (64, 64)])
def test_gpu_esd_matches_cpu(dtype, shape):
    W = np.random.default_rng(2).standard_normal(shape).astype(dtype)
    ev_cpu = rmt.esd(W, device="cpu")
    ev_gpu = rmt.esd(W, device="gpu")
    np.testing.assert_allclose(ev_gpu, ev_cpu, rtol=0,
                               atol=eig_tolerance(max(shape), min(shape), ev_cpu.max()))


@pytest.mark.gpu
def test_gpu_cupy_input_conv_float32_and_batch():
    import cupy

    rng = np.random.default_rng(3)
    W = rng.standard_normal((1000, 200))
    ev = rmt.esd(cupy.asarray(W))  # auto picks the GPU for device arrays
    np.testing.assert_allclose(ev, esd_svd(W), rtol=0, atol=eig_tolerance(1000, 200, ev.max()))
    C = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(rmt.esd(C, device="gpu"), rmt.esd(C, device="cpu"),
                               rtol=0, atol=1e-12)
    ev32 = rmt.esd(W, device="gpu", dtype=np.float32)
    assert np.abs(ev32 - ev).max() <= eig_tolerance(1000, 200, ev.max(), np.finfo(np.float32).eps)
    batch = [rng.standard_normal((128, 64)) for _ in range(6)]
    for got, Wi in zip(rmt.esd_batch(batch, device="gpu"), batch, strict=True):
        np.testing.assert_allclose(got, rmt.esd(Wi, device="cpu"), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, ml_dtypes.bfloat16],
                         ids=lambda d: np.dtype(d).name)
def test_device_gpu_paths_agree_with_cpu_through_the_twin(numpy_as_cupy, dtype):
    rng = np.random.default_rng(5)
    wide = rng.standard_normal((150, 400)).astype(dtype)
    conv = rng.standard_normal((40, 24, 3, 3)).astype(dtype)
    for W in (wide, wide.T, conv):
        np.testing.assert_allclose(rmt.esd(W, device="gpu"), rmt.esd(W, device="cpu"),
                                   rtol=0, atol=1e-12 * rmt.esd(W, device="cpu")[-1])
    batch = [rng.standard_normal((90, 60)).astype(dtype) for _ in range(3)] + [wide]
    for got, W in zip(rmt.esd_batch(batch, device="gpu"), batch, strict=True):
        np.testing.assert_allclose(got, rmt.esd(W, device="cpu"), rtol=0,
                                   atol=1e-12 * got[-1])
    ev = rmt.esd(rng.standard_normal((2000, 800)) * np.sqrt(1 + rng.pareto(2.0, 800)))
    fit_gpu, fit_cpu = rmt.fit_powerlaw(ev, device="gpu"), rmt.fit_powerlaw(ev, device="cpu")
    assert fit_gpu.xmin == fit_cpu.xmin and fit_gpu.alpha == pytest.approx(fit_cpu.alpha,
                                                                             abs=1e-12)
    layers = {"wide": wide, "conv": conv}
    on_gpu = rmt.analyze(layers, device="gpu", progress=False)
    on_cpu = rmt.analyze(layers, device="cpu", progress=False)
    assert list(on_gpu.phase) == list(on_cpu.phase)
    np.testing.assert_allclose(on_gpu.alpha, on_cpu.alpha, rtol=1e-9)
    np.testing.assert_allclose(on_gpu.lambda_max, on_cpu.lambda_max, rtol=1e-12)
    # every result above came through the GPU twin's kernels
    assert {"gram", "gram_stack", "eigvalsh", "ks_distances"} <= set(numpy_as_cupy)
