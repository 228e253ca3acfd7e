"""rmt.randomized: shuffled ESDs and correlation traps — planted traps found and localised,
pure noise at the stated false-positive rate, seeding, WeightWatcher's definitions."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

import rmt
from rmt import io as rio
from rmt.columns import layer_rng
from rmt.randomized import jensen_shannon_ww, randomized_esd, shuffled, traps

PLANTED = [(17, 33, 60.0), (250, 7, -55.0), (399, 199, 50.0)]


def _planted(seed: int) -> np.ndarray:
    W = np.random.default_rng(seed).standard_normal((400, 200))
    for r, c, v in PLANTED:
        W[r, c] = v
    return W


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_traps_are_found_and_localised(seed):
    W = _planted(seed)
    res = traps(W, rng=seed + 10)
    # one trap per planted weight, unless the shuffle puts two in one row or column, where
    # they make a single rank-one trap together
    assert 1 <= res.n_traps <= len(PLANTED)
    # the traps' largest entries, in the ORIGINAL coordinates, are the planted weights
    found = {e for t in res.traps for e in t.entries if abs(e[2]) > 10}
    assert found == set(PLANTED) and all(t.entries[0] in PLANTED for t in res.traps)
    for t in (t for t in res.traps if abs(t.entries[1][2]) < 10):  # one planted weight
        assert t.strength > 1 and t.tw_z > 10
        assert t.ipr_left > 0.5 and t.ipr_right > 0.5          # concentrated vectors
        a = t.entries[0][2]
        # a single entry a in N x M unit noise makes a singular value with
        # s² = (a² + N)(a² + M)/a² (Benaych-Georges & Nadakuditi 2012)
        expected = (a * a + 400) * (a * a + 200) / (a * a)
        assert t.energy_fraction == pytest.approx(expected / np.sum(W * W), rel=0.05)
    assert [t.eigenvalue for t in res.traps] == sorted((t.eigenvalue for t in res.traps),
                                                       reverse=True)


def test_pure_noise_has_traps_at_the_false_positive_rate():
    # 300 Gaussian matrices: the TW spike test at fpr = 0.01 flags about 1% of them
    # (P(more than 10 of 300) < 1e-3 for a 1% rate)
    flagged = sum(traps(np.random.default_rng(s).standard_normal((200, 100)), rng=s,
                        fpr=0.01).n_traps > 0 for s in range(300))
    assert flagged <= 10


def test_shuffle_keeps_each_slices_entries_and_is_seeded():
    K = np.random.default_rng(3).standard_normal((8, 6, 3, 3)).astype(np.float32)
    S, perms = shuffled(K, np.random.default_rng(4), permutations=True)
    assert S.dtype == K.dtype and S.shape == K.shape and len(perms) == 9
    for i in range(3):
        for j in range(3):
            a, b = K[:, :, i, j], S[:, :, i, j]
            assert np.array_equal(np.sort(a.ravel()), np.sort(b.ravel()))  # own entries only
            assert np.array_equal(b.ravel(), a.ravel()[perms[3 * i + j]])
    again, none = shuffled(K, np.random.default_rng(4))  # in place, no index array
    assert np.array_equal(S, again) and none == []
    assert layer_rng(0, "a").random() == layer_rng(0, "a").random() != layer_rng(0, "b").random()


def test_randomized_esd_and_weightwatchers_distance():
    W = rmt.synthetic.phase_matrix("heavy-tailed", 600, 300, rng=5)
    ev = rmt.esd(W)
    r = randomized_esd(W, ev, rng=np.random.default_rng(6))
    S, _ = shuffled(W, np.random.default_rng(6))
    np.testing.assert_allclose(r.evals, rmt.esd(S), rtol=1e-12, atol=1e-14)
    assert r.lambda_max < ev[-1]  # shuffling destroys the correlated heavy tail's top
    # rand_distance_ww is WeightWatcher's formula: JS divergence via scipy's entropy
    m = (ev + r.evals) / 2
    js = np.sqrt((scipy.stats.entropy(ev, m) + scipy.stats.entropy(r.evals, m)) / 2)
    assert r.distance_ww == pytest.approx(js, rel=1e-12)
    assert jensen_shannon_ww(ev, ev) == 0
    assert r.distance == pytest.approx(scipy.stats.wasserstein_distance(
        np.log10(ev), np.log10(r.evals)), rel=1e-12)


def test_analyze_randomize_columns_seeded_and_opt_in(tmp_path):
    weights = {"trap": _planted(7).astype(np.float32),
               "noise": np.random.default_rng(8).standard_normal((300, 150)).astype(np.float32)}
    path = tmp_path / "m.safetensors"
    rio.write_safetensors(path, weights)
    plain = rmt.analyze(path, progress=False)
    assert "num_traps" not in plain.columns and "rand_lambda_max" not in plain.columns
    df = rmt.analyze(path, randomize=True, rng=3, progress=False).set_index("name")
    assert df.loc["trap", "num_traps"] == 3 and df.loc["noise", "num_traps"] == 0
    assert df.loc["trap", "ww_softrank"] == pytest.approx(
        df.loc["trap", "rand_lambda_max"] / df.loc["trap", "lambda_max"])
    assert df.loc["trap", "ww_maxdist"] == pytest.approx(
        df.loc["trap", "lambda_max"] - df.loc["trap", "rand_lambda_max"])
    # the same seed gives the same shuffles, serially or in parallel workers (equal to
    # rounding: BLAS syrk's sums split differently on 2 threads than on 1, a few ulps)
    again = rmt.analyze(path, randomize=True, rng=3, n_jobs=2, progress=False).set_index("name")
    np.testing.assert_allclose(again["rand_lambda_max"], df["rand_lambda_max"], rtol=1e-13)
    np.testing.assert_array_equal(again["num_traps"], df["num_traps"])
    other = rmt.analyze(path, randomize=True, rng=4, progress=False).set_index("name")
    assert abs(other.loc["noise", "rand_lambda_max"] / df.loc["noise", "rand_lambda_max"]
               - 1) > 1e-6
    with pytest.raises(ValueError, match="rng"):
        rmt.analyze(path, randomize=True, rng=-1)


def test_randomize_through_the_gpu_twin(numpy_as_cupy):
    W = _planted(9)
    ev = rmt.esd(W, device="cpu")
    cpu = randomized_esd(W, ev, rng=np.random.default_rng(1), device="cpu")
    gpu = randomized_esd(W, ev, rng=np.random.default_rng(1), device="gpu")
    np.testing.assert_allclose(gpu.evals, cpu.evals, rtol=1e-12, atol=1e-12)
    assert gpu.n_traps == cpu.n_traps == 3 and numpy_as_cupy
    from rmt.kernels import gpu as twin  # the device shuffle, NumPy standing in for CuPy

    a = twin.permuted(np.arange(100), 3)
    assert sorted(a.tolist()) == list(range(100)) and not np.array_equal(a, np.arange(100))


def test_the_shuffle_kernel_is_uniform():
    from rmt.kernels import cpu

    # all 120 orders of 5 entries, 60000 seeded shuffles: chi-square against uniform
    counts: dict[tuple, int] = {}
    for seed in range(60000):
        key = tuple(cpu.permuted(np.arange(5, dtype=np.int64), seed))
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 120
    assert scipy.stats.chisquare(list(counts.values())).pvalue > 1e-4  # false failure 1e-4
    # with several buckets (n = 2**17: 4 of them), where entries 0 and n-1 land is uniform
    # and independent: 2000 shuffles, their positions in 8 x 8 cells
    n, cells = 2**17, np.zeros((8, 8))
    for seed in range(2000):
        p = cpu.permuted(np.arange(n, dtype=np.int32), seed)
        first, last = np.flatnonzero(p == 0)[0], np.flatnonzero(p == n - 1)[0]
        cells[first * 8 // n, last * 8 // n] += 1
    assert scipy.stats.chisquare(cells.ravel()).pvalue > 1e-4
    b = cpu.permuted(np.arange(10.0).astype(np.float16), 1)  # any width, moved as raw bits
    assert b.dtype == np.float16 and sorted(b.tolist()) == list(range(10))
    with pytest.raises(ValueError, match="1-D"):
        cpu.permuted(np.zeros((3, 3)), 0)


@pytest.mark.parametrize("shape, planted", [((300, 100), 30.0), ((200, 200), 25.0),
                                            ((500, 60), 0.0), ((120, 40), 15.0)])
def test_weightwatchers_mp_fit_is_reproduced(shape, planted):
    from sklearn.neighbors import KernelDensity

    from rmt.mp_ww import fit_mp_ww, linear_kde
    from tests.reference import ww_mp_fit

    rng = np.random.default_rng(int(sum(shape)))
    W = rng.standard_normal(shape)
    W[0, 0] = planted
    ev = np.linalg.eigvalsh(W.T @ W)
    fit = fit_mp_ww(ev, *shape)
    sigma, n_spikes = ww_mp_fit(ev, *shape)  # its code, scikit-learn's KDE, scipy's brute
    assert fit.sigma == pytest.approx(sigma, rel=1e-9) and fit.n_spikes == n_spikes
    assert fit_mp_ww(ev / shape[0], *shape).sigma == pytest.approx(fit.sigma, rel=1e-9)
    x = np.linspace(0, 5, 777)
    ref = np.exp(KernelDensity(kernel="linear", bandwidth=0.1)
                 .fit(ev[:, None] / ev.mean()).score_samples(x[:, None]))
    np.testing.assert_allclose(linear_kde(ev / ev.mean(), x, 0.1), ref, atol=1e-10)


def test_the_compiled_nelder_mead_is_scipys_fmin_bit_for_bit():
    # WeightWatcher's polish: scipy.optimize.fmin from the grid's best σ; ours runs the same
    # iteration compiled. Starts near and far from the optimum, call limits from 2 to 25.
    import scipy.optimize

    from rmt import mp_ww
    from rmt.kernels import cpu

    rng = np.random.default_rng(31)
    for trial in range(12):
        N = int(rng.integers(60, 900))
        M = N if trial % 4 == 0 else int(rng.integers(20, N))
        X = rng.standard_normal((N, M)) * (rng.pareto(2.0, (N, 1)) if trial % 3 else 1.0)
        ev = np.linalg.eigvalsh(X.T @ X / N)
        Q = N / M
        scaled = ev * ev.size / ev.sum()
        to_fit = np.sqrt(scaled) if Q == 1 else scaled
        x = np.linspace(0, to_fit.max() + 0.5, mp_ww.GRID_POINTS)
        y = mp_ww.linear_kde(to_fit, x, mp_ww.BANDWIDTH)
        x, y = x[y > mp_ww.DENSITY_FLOOR], y[y > mp_ww.DENSITY_FLOOR]
        sigma0 = np.sqrt(scaled.max()) / (1 + 1 / np.sqrt(Q))

        def objective(s, x=x, y=y, Q=Q):
            return float(cpu.mp_ww_residuals(s, x, y, Q, mp_ww.PENALTY)[0])

        for start in (sigma0, 0.3 * sigma0, 1.9 * sigma0, 0.05 * sigma0):
            expect = scipy.optimize.fmin(objective, start, disp=False)[0]
            assert cpu.mp_ww_fmin(start, x, y, Q, mp_ww.PENALTY) == expect
        for calls in range(2, 26, 3):
            expect = scipy.optimize.fmin(objective, sigma0, maxfun=calls, maxiter=calls,
                                         disp=False)[0]
            assert cpu._mp_ww_fmin(sigma0, x, y, Q, mp_ww.PENALTY, 1e-4, 1e-4, calls) == expect


def test_num_traps_ww_counts_with_weightwatchers_cut():
    from tests.reference import ww_mp_fit

    W = _planted(11)
    ev = rmt.esd(W, normalize=False)
    r = randomized_esd(W, ev, rng=np.random.default_rng(2), normalize=False)
    assert r.n_traps_ww == ww_mp_fit(r.evals, 400, 200)[1] >= 1
    df = rmt.analyze({"w": W}, randomize=True, rng=2, progress=False)
    assert df["num_traps_ww"].iloc[0] >= 1 and "num_traps_ww" in rmt.COLUMNS


def test_num_traps_ww_pools_five_shuffles_of_a_small_layer():
    """WeightWatcher fits five pooled shuffles below 100 eigenvalues; num_traps_ww too."""
    from rmt.randomized import WW_REPLICAS, shuffled
    from tests.reference import ww_mp_fit

    W = np.random.default_rng(5).standard_normal((12, 32))
    W[3, 7] = 40.0  # a trap in every shuffle
    ev = rmt.esd(W)
    r = randomized_esd(W, ev, rng=np.random.default_rng(8))
    rng = np.random.default_rng(8)
    pooled = np.sort(np.concatenate([rmt.esd(shuffled(W, rng)[0])
                                     for _ in range(WW_REPLICAS)]))
    np.testing.assert_array_equal(r.evals, rmt.esd(shuffled(W, np.random.default_rng(8))[0]))
    assert r.n_traps_ww == ww_mp_fit(pooled, 32, 12)[1] >= WW_REPLICAS


@pytest.mark.parametrize("cols", [150, 260])  # the stack solver's side of 200, and LAPACK's
def test_the_pipelines_joint_eigensolve_gives_randomized_esds_answer(cols, monkeypatch):
    # analyze() draws the shuffle first and solves both ESDs together
    # (rmt.spectra.esds_together); the columns are randomized_esd's on the same shuffle
    from rmt.kernels import cpu

    joint = []
    real = cpu.eigvalsh_together
    monkeypatch.setattr(cpu, "eigvalsh_together", lambda Gs: joint.append(len(Gs)) or real(Gs))
    rng = np.random.default_rng(cols)
    W = rng.standard_normal((400, cols)).astype(np.float32)
    W[:3, :3] += 40.0  # a trap
    df = rmt.analyze({"w": W}, randomize=True, rng=5, progress=False).iloc[0]
    assert joint == [2]
    plain = rmt.analyze({"w": W}, progress=False).iloc[0]
    alone = randomized_esd(W, rmt.esd(W), rng=layer_rng(5, "w"))
    assert df["rand_lambda_max"] == pytest.approx(alone.lambda_max, rel=1e-12)
    assert df["rand_distance"] == pytest.approx(alone.distance, rel=1e-9, abs=1e-12)
    assert df["num_traps"] == alone.n_traps >= 1
    assert df["num_traps_ww"] == alone.n_traps_ww
    for column in ("lambda_max", "alpha", "stable_rank"):
        assert df[column] == pytest.approx(plain[column], rel=1e-12)
