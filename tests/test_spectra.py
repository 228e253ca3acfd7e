"""rmt.esd against float64 SVD (LAPACK), across shapes, dtypes, conv rules and paths."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rmt
from rmt import config
from rmt.errors import DTypeError, EmptyWeightError, NonFiniteError, ShapeError, WeightError
from rmt.kernels import cpu
from tests.reference import eig_tolerance, esd_svd

SHAPES = [(1, 1), (1, 7), (9, 1), (5, 5), (64, 64), (300, 40), (40, 300), (513, 257), (97, 1)]
STORAGE = [np.float64, np.float32, np.float16, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn,
           ml_dtypes.float8_e5m2]


def _weight(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(dtype)


EPS64 = float(np.finfo(np.float64).eps)


def _assert_close_esd(ev, ref, N, M, eps=EPS64):
    assert ev.dtype == np.float64
    assert ev.shape == ref.shape
    assert np.all(np.diff(ev) >= 0), "ESD must be ascending"
    np.testing.assert_allclose(ev, ref, rtol=0, atol=eig_tolerance(N, M, ref.max(), eps))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("normalize", [True, False])
def test_esd_matches_svd_float64(shape, normalize):
    W = _weight(shape, np.float64)
    N, M = max(shape), min(shape)
    _assert_close_esd(rmt.esd(W, normalize=normalize), esd_svd(W, normalize), N, M)


@pytest.mark.parametrize("dtype", STORAGE, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(300, 40), (40, 300), (128, 128)])
def test_every_storage_dtype_is_decoded_exactly(dtype, shape):
    # The reference is the SVD of the exactly upcast matrix, so the only error is the
    # float64 eigensolver's: low-precision decoding must add none.
    W = _weight(shape, dtype, seed=1)
    _assert_close_esd(rmt.esd(W), esd_svd(W), max(shape), min(shape))


def test_normalize_divides_by_N_after_orientation():
    W = _weight((40, 300), np.float64)
    np.testing.assert_allclose(rmt.esd(W, normalize=False) / 300, rmt.esd(W), rtol=1e-14)


@pytest.mark.parametrize("shape", [(3000, 500), (500, 3000)])
@pytest.mark.parametrize("block_rows", [1, 7, 256, 2999])
def test_blocked_gram_equals_direct_gram(shape, block_rows):
    W = _weight(shape, np.float64, seed=2)
    transpose = shape[0] < shape[1]
    direct = cpu.gram(W, transpose=transpose)
    blocked = cpu.gram(W, transpose=transpose, block_rows=block_rows)
    lower = np.tril_indices(min(shape))
    scale = np.abs(direct[lower]).max()
    np.testing.assert_allclose(blocked[lower], direct[lower], rtol=0,
                               atol=4 * np.sqrt(max(shape)) * np.finfo(float).eps * scale)


def test_blocked_bf16_path_equals_float64_path():
    Wb = _weight((2500, 300), ml_dtypes.bfloat16, seed=3)
    W64 = Wb.astype(np.float64)
    ev_b = rmt.esd(Wb, block_rows=128)
    ev_64 = rmt.esd(W64)
    np.testing.assert_allclose(ev_b, ev_64, rtol=0, atol=eig_tolerance(2500, 300, ev_64.max()))


def test_block_size_bounds_the_working_memory(monkeypatch):
    # A bf16 W never becomes a float64 copy: every decoded block is at most config.GRAM_BLOCK_BYTES
    # (or config.GRAM_MIN_BLOCK_ROWS rows).
    seen = []
    original = cpu.decode

    def spy(block, out):
        seen.append(out.nbytes)
        return original(block, out)

    monkeypatch.setattr(cpu, "decode", spy)
    monkeypatch.setattr(config, "GRAM_BLOCK_BYTES", 64 * 1024)
    monkeypatch.setattr(config, "GRAM_MIN_BLOCK_ROWS", 16)
    W = _weight((4000, 256), ml_dtypes.bfloat16, seed=4)
    rmt.esd(W)
    assert len(seen) > 1
    assert max(seen) <= 64 * 1024 < W.size * 8


def test_peak_memory_is_gram_plus_one_block(monkeypatch):
    # 20000×256 bf16: a float64 copy would be 39 MiB; the blocked path may only hold the
    # 256² Gram matrix, one decoded block and the eigensolver's O(M²) workspace.
    import tracemalloc

    monkeypatch.setattr(config, "GRAM_BLOCK_BYTES", 2**20)
    monkeypatch.setattr(config, "GRAM_MIN_BLOCK_ROWS", 16)
    W = _weight((20000, 256), ml_dtypes.bfloat16, seed=13)
    rmt.esd(W)  # warm caches (decode tables, BLAS)
    tracemalloc.start()
    rmt.esd(W)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    budget = config.GRAM_BLOCK_BYTES + 4 * 256 * 256 * 8 + 2**20
    assert peak <= budget < W.size * 8


def test_memmap_input(tmp_path):
    W = _weight((700, 90), ml_dtypes.bfloat16, seed=5)
    path = tmp_path / "w.bin"
    W.tofile(path)
    mm = np.memmap(path, dtype=ml_dtypes.bfloat16, mode="r", shape=W.shape)
    _assert_close_esd(rmt.esd(mm, block_rows=100), esd_svd(W), 700, 90)


@pytest.mark.parametrize("conv", ["slices", "flatten"])
@pytest.mark.parametrize("shape", [(64, 32, 3, 3), (16, 48, 5, 5), (8, 8, 1, 1), (32, 16, 3)])
@pytest.mark.parametrize("normalize", [True, False])
def test_conv_kernels(conv, shape, normalize):
    W = _weight(shape, np.float32, seed=6)
    ev = rmt.esd(W, conv=conv, normalize=normalize)
    ref = esd_svd(W, normalize, conv)
    info = rmt.weight_shape(shape, conv)
    assert len(ev) == info.num_evals
    _assert_close_esd(ev, ref, info.N, info.M)


def test_conv_slice_count_and_pooling():
    W = _weight((10, 4, 3, 2), np.float64, seed=7)
    info = rmt.weight_shape(W.shape)
    assert (info.N, info.M, info.num_slices, info.num_evals) == (10, 4, 6, 24)
    single = np.concatenate([rmt.esd(W[:, :, i, j]) for i in range(3) for j in range(2)])
    np.testing.assert_allclose(rmt.esd(W), np.sort(single), rtol=1e-13, atol=1e-15)


def test_float32_accumulation_error_is_as_documented():
    W = _weight((2000, 400), np.float32, seed=8)
    ref = esd_svd(W)
    ev = rmt.esd(W, dtype=np.float32)
    assert ev.dtype == np.float64
    err = np.abs(ev - ref).max()
    assert err <= eig_tolerance(2000, 400, ref.max(), np.finfo(np.float32).eps)
    assert err > eig_tolerance(2000, 400, ref.max())  # really float32, not float64


def test_thread_count_does_not_change_the_result():
    W = _weight((1500, 300), ml_dtypes.bfloat16, seed=9)
    ev1 = rmt.esd(W, n_threads=1, block_rows=200)
    ev2 = rmt.esd(W, n_threads=2, block_rows=200)
    np.testing.assert_allclose(ev1, ev2, rtol=0, atol=eig_tolerance(1500, 300, ev1.max()))


def test_trace_identity():
    W = _weight((333, 77), np.float64, seed=10)
    np.testing.assert_allclose(rmt.esd(W).sum(), np.sum(W**2) / 333, rtol=1e-12)


# --- properties -----------------------------------------------------------------------

dims = st.integers(min_value=1, max_value=48)


@given(n=dims, m=dims, seed=st.integers(0, 2**31 - 1),
       log_c=st.floats(min_value=-6, max_value=6))
def test_scale_property(n, m, seed, log_c):
    W = _weight((n, m), np.float64, seed)
    c = 10.0**log_c
    ev, ev_c = rmt.esd(W), rmt.esd(c * W)
    tol = eig_tolerance(max(n, m), min(n, m), ev.max())
    np.testing.assert_allclose(ev_c / c**2, ev, rtol=0, atol=tol)


@given(n=dims, m=dims, seed=st.integers(0, 2**31 - 1))
def test_orthogonal_invariance(n, m, seed):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n, m))
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    V, _ = np.linalg.qr(rng.standard_normal((m, m)))
    ev = rmt.esd(W)
    np.testing.assert_allclose(rmt.esd(U @ W @ V), ev, rtol=0,
                               atol=eig_tolerance(max(n, m), min(n, m), ev.max()))
    np.testing.assert_allclose(rmt.esd(W.T), ev, rtol=0,
                               atol=eig_tolerance(max(n, m), min(n, m), ev.max()))


@given(n=dims, m=dims, seed=st.integers(0, 2**31 - 1))
def test_eigenvalues_nonnegative_up_to_roundoff(n, m, seed):
    W = _weight((n, m), np.float32, seed)
    ev = rmt.esd(W)
    assert ev.min() >= -eig_tolerance(max(n, m), min(n, m), ev.max())


# --- errors ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("W", "error", "fragment"),
    [
        (np.ones(5), ShapeError, "1 dimension"),
        (np.float64(3.0), ShapeError, "0 dimension"),
        (np.ones((2, 2, 2, 2, 2)), ShapeError, "at most 4"),
        (np.ones((0, 5)), EmptyWeightError, "empty"),
        (np.ones((5, 3), dtype=np.int32), DTypeError, "int32"),
        (np.ones((5, 3), dtype=np.complex128), DTypeError, "complex128"),
        (np.ones((5, 3), dtype=bool), DTypeError, "bool"),
    ],
)
def test_bad_input_errors_name_layer_and_problem(W, error, fragment):
    with pytest.raises(error) as info:
        rmt.esd(W, name="encoder.layer.0.weight")
    assert isinstance(info.value, ValueError)
    assert "encoder.layer.0.weight" in str(info.value)
    assert fragment in str(info.value)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, ml_dtypes.bfloat16])
def test_nonfinite_entries_are_counted(dtype):
    W = np.ones((50, 20), dtype=np.float64)
    W[3, 4] = np.nan
    W[7, 1] = np.nan
    W[10, 10] = np.inf
    with pytest.raises(NonFiniteError, match=r"'fc': contains 2 NaN and 1 Inf entries"):
        rmt.esd(W.astype(dtype), name="fc")
    with pytest.raises(NonFiniteError, match="NaN"):
        rmt.esd(W.astype(dtype).T.copy(), name="fc", block_rows=3)


def test_nonfinite_in_conv_kernel():
    W = np.ones((8, 4, 3, 3))
    W[1, 2, 0, 1] = -np.inf
    with pytest.raises(NonFiniteError, match="1 Inf"):
        rmt.esd(W, name="conv1")


def test_overflowing_squares_are_reported():
    W = np.full((4, 3), 1e200)
    with pytest.raises(NonFiniteError, match="overflow"):
        rmt.esd(W, name="huge")


def test_bad_arguments():
    W = np.ones((4, 3))
    with pytest.raises(ValueError, match="conv"):
        rmt.esd(W, conv="pool")
    with pytest.raises(ValueError, match="dtype"):
        rmt.esd(W, dtype=np.float16)
    with pytest.raises(ValueError, match="device"):
        rmt.esd(W, device="tpu")
    with pytest.raises(ValueError, match="n_threads"):
        rmt.esd(W, n_threads=0)


# --- batching -------------------------------------------------------------------------

def test_esd_batch_matches_esd_and_keeps_order():
    rng = np.random.default_rng(11)
    weights = [rng.standard_normal((64, 32)) for _ in range(5)]
    weights += [rng.standard_normal((32, 64)).astype(np.float32) for _ in range(3)]
    weights += [rng.standard_normal((200, 50)), rng.standard_normal((16, 8, 3, 3))]
    weights.insert(4, rng.standard_normal((64, 32)).astype(ml_dtypes.bfloat16))
    out = rmt.esd_batch(weights)
    assert len(out) == len(weights)
    for W, ev in zip(weights, out, strict=True):
        ref = rmt.esd(W)
        np.testing.assert_allclose(ev, ref, rtol=0, atol=1e-13 * ref.max())


def test_esd_batch_isolates_bad_weights():
    rng = np.random.default_rng(12)
    good = [rng.standard_normal((30, 10)) for _ in range(4)]
    bad = good[1].copy()
    bad[0, 0] = np.nan
    weights = [good[0], bad, good[2], np.ones(3), good[3]]
    names = ["a", "b", "c", "d", "e"]
    out = rmt.esd_batch(weights, names=names, on_error="return")
    assert isinstance(out[1], NonFiniteError) and "'b'" in str(out[1])
    assert isinstance(out[3], ShapeError) and "'d'" in str(out[3])
    for i in (0, 2, 4):
        np.testing.assert_allclose(out[i], rmt.esd(weights[i]), rtol=1e-13)
    with pytest.raises(WeightError):
        rmt.esd_batch(weights, names=names)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 7, 100_003])
def test_sum_squares_equals_an_exactly_rounded_sum(dtype, n):
    x = np.random.default_rng(n).standard_normal(n).astype(dtype)
    exact = math.fsum(float(v) ** 2 for v in x.astype(np.float64))  # squares exact in float64
    got = cpu.sum_squares(x.reshape(-1, 1) if n else x)
    assert abs(got - exact) <= 1e-14 * max(exact, 1.0) * max(1.0, math.sqrt(n))
    with pytest.raises(ValueError, match="C-contiguous"):
        cpu.sum_squares(np.zeros((4, 4), dtype)[:, ::2])


@pytest.mark.parametrize("order", ["C", "F"])
def test_mirror_lower_copies_the_lower_triangle(order):
    G = np.array(np.random.default_rng(3).standard_normal((37, 37)), order=order)
    expected = np.tril(G) + np.tril(G, -1).T
    assert cpu.mirror_lower(G) is G
    np.testing.assert_array_equal(G, expected)


def test_add_ranges_sums_lower_triangles_in_order_and_leaves_the_upper():
    rng = np.random.default_rng(12)
    parts = rng.standard_normal((7, 9, 9))
    first, last = np.array([0, 2, 6, 3]), np.array([3, 7, 7, 4])
    out = np.full((4, 9, 9), 5.0)
    assert cpu.add_ranges(parts, first, last, out) is out
    lower = np.tril_indices(9)
    for k in range(4):
        expect = np.sum(parts[first[k]:last[k]], axis=0)
        np.testing.assert_array_equal(out[k][lower], expect[lower])  # numpy.sum's order
        np.testing.assert_array_equal(out[k][np.triu_indices(9, 1)], 5.0)
    with pytest.raises(ValueError, match="first < last"):
        cpu.add_ranges(parts, np.array([2]), np.array([2]), out[:1])
    with pytest.raises(ValueError, match="len"):
        cpu.add_ranges(parts, np.array([0]), np.array([8]), out[:1])


def test_esds_together_are_the_esds_one_by_one():
    from rmt.spectra import esds_together

    rng = np.random.default_rng(13)
    for shape in [(500, 300), (300, 500), (120, 80)]:  # LAPACK's and the stack solver's
        A = rng.standard_normal(shape).astype(np.float32)
        B = rng.standard_normal(shape) * 3.0
        for got, W in zip(esds_together([A, B]), (A, B), strict=True):
            ref = rmt.esd(W)
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13 * ref[-1])
    # conv kernels and shapes that differ go one by one, with the same answers
    K = rng.standard_normal((16, 8, 3, 3))
    got = esds_together([K, K[:, :, ::-1]], conv="flatten")
    np.testing.assert_allclose(got[0], rmt.esd(K, conv="flatten"), rtol=1e-12, atol=1e-14)
    mixed = esds_together([A, A[:100]])
    np.testing.assert_allclose(mixed[1], rmt.esd(A[:100]), rtol=1e-12)
    bad = B.copy()
    bad[3, 4] = np.nan
    with pytest.raises(NonFiniteError, match="layer0"):
        esds_together([B, bad], name="layer0")
