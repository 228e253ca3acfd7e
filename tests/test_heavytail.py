"""Power-law fits against the powerlaw package, a slow reference scan and WeightWatcher."""

from __future__ import annotations

import warnings

import numpy as np
import powerlaw
import pytest
import scipy.optimize

import rmt
from rmt import _alternatives, config
from rmt.errors import DataError
from rmt.kernels import cpu, gpu
from tests.reference import heavy_tailed_esd, powerlaw_scan, ww_scan


def _pareto(alpha, n, seed, xmin=1.0):
    return xmin * (1.0 + np.random.default_rng(seed).pareto(alpha - 1.0, size=n))


def _datasets():
    rng = np.random.default_rng(42)
    sets = {f"pareto{a}_n{n}": _pareto(a, n, int(10 * a) + n) for a in (1.3, 1.8, 2.5, 3.5, 5.0)
            for n in (300, 1000)}
    sets["lognormal"] = rng.lognormal(0.0, 1.0, 800)
    sets["exponential"] = rng.exponential(1.0, 800)
    sets["ties"] = np.round(rng.lognormal(0.0, 1.0, 800), 1)
    esd = heavy_tailed_esd(1000, 500, 1.5, seed=1)
    sets["esd"] = esd
    sets["esd_x1e-6"] = esd * 1e-6
    sets["esd_x1e6"] = esd * 1e6
    return sets


DATASETS = _datasets()


def _powerlaw_fit(x, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return powerlaw.Fit(x, verbose=False, **kw)


@pytest.mark.parametrize("name", list(DATASETS))
def test_same_answer_as_powerlaw_package(name):
    x = DATASETS[name]
    ref = _powerlaw_fit(x, parameter_ranges={"alpha": [1, None]})
    fit = rmt.fit_powerlaw(x, device="cpu")
    assert fit.xmin == ref.xmin
    np.testing.assert_allclose(fit.alpha, ref.alpha, rtol=1e-11)
    np.testing.assert_allclose(fit.D, ref.D, rtol=0, atol=1e-13)
    assert fit.n_tail == ref.n_tail
    np.testing.assert_allclose(fit.sigma, (ref.alpha - 1) / np.sqrt(ref.n_tail), rtol=1e-11)


@pytest.mark.parametrize("seed", range(12))
def test_same_answer_as_reference_scan(seed):
    rng = np.random.default_rng(seed)
    kind = seed % 3
    if kind == 0:
        x = heavy_tailed_esd(400 + 37 * seed, 200 + 11 * seed, 1.0 + 0.3 * seed, seed)
    elif kind == 1:
        x = np.round(_pareto(2.0 + 0.2 * seed, 2000, seed), 2)  # many ties
    else:
        x = np.concatenate([rng.random(300), _pareto(3.0, 700, seed)])  # body + tail
    (alpha, xmin, D, n_tail), _ = powerlaw_scan(x)
    fit = rmt.fit_powerlaw(x, device="cpu")
    assert fit.xmin == xmin and fit.n_tail == n_tail
    np.testing.assert_allclose(fit.alpha, alpha, rtol=1e-11)
    np.testing.assert_allclose(fit.D, D, rtol=0, atol=1e-13)


def test_capped_range_reproduces_powerlaw_default():
    x = _pareto(4.5, 1000, seed=3)
    ref = _powerlaw_fit(x)  # powerlaw's default alpha range [0, 3]
    fit = rmt.fit_powerlaw(x, alpha_range=(0, 3), device="cpu")
    assert fit.xmin == ref.xmin
    np.testing.assert_allclose([fit.alpha, fit.D], [ref.alpha, ref.D], rtol=1e-10)
    # the cap is why rmt lifts it (docs/science.md §4)
    assert fit.alpha <= 3 < rmt.fit_powerlaw(x).alpha


@pytest.mark.parametrize("seed", range(6))
def test_ww_candidates_reproduce_weightwatcher(seed):
    x = heavy_tailed_esd(600, 300, 1.2 + 0.4 * seed, seed)
    x = x[x > 1e-5]  # WeightWatcher's own filter before its fit
    alpha, xmin, D = ww_scan(x)
    fit = rmt.fit_powerlaw(x, candidates="ww", device="cpu")
    assert fit.xmin == xmin
    np.testing.assert_allclose([fit.alpha, fit.D], [alpha, D], rtol=1e-10)


def test_fixed_xmin_matches_powerlaw():
    x = DATASETS["esd"]
    xmin = float(np.quantile(x, 0.8)) * 1.0001  # not a data value
    ref = _powerlaw_fit(x, xmin=xmin, parameter_ranges={"alpha": [1, None]})
    fit = rmt.fit_powerlaw(x, xmin=xmin, device="cpu")
    np.testing.assert_allclose([fit.alpha, fit.D], [ref.power_law.alpha, ref.power_law.D],
                               rtol=1e-10)


def _scan_args(x, inv_norm=None, alpha=None):
    """ks_distances' arguments for powerlaw's candidate set of sorted ``x`` (α and the
    normaliser's inverse forced to ``alpha`` and ``inv_norm`` where given)."""
    x = np.sort(x)
    log_x = np.log(x)
    first = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
    cand = first[:-2]
    alphas = 1 + (x.size - cand) / np.array([np.sum(log_x[i:] - log_x[i]) for i in cand])
    inv = np.ones(cand.size) if inv_norm is None else np.full(cand.size, inv_norm)
    alphas = alphas if alpha is None else np.full(cand.size, alpha)
    return (log_x[first], first.astype(float), np.arange(cand.size), log_x[cand],
            cand.astype(float), (x.size - cand).astype(float), alphas, inv,
            np.ones(cand.size, bool))


def _every_point(log_pts, rank_pts, starts, log_xmins, rank0s, n_tails, alphas, inv_norms,
                 active):
    """D of every candidate from every point (numpy, no bounds): the scan's definition."""
    out = np.full(starts.size, np.inf)
    for c in np.flatnonzero(active):
        p = slice(starts[c], None)
        theo = -np.expm1((1 - alphas[c]) * (log_pts[p] - log_xmins[c])) * inv_norms[c]
        out[c] = np.max(np.abs(theo - (rank_pts[p] - rank0s[c]) / n_tails[c]))
    return out


# Pure power laws (every point in every tail, the minimum flat: the old scan's worst case),
# a lognormal, an ESD, ties, a normaliser != 1 (a tail cut by xmax), alpha < 1 (a fitted
# CDF that falls) and a uniform sample.
BRANCH_AND_BOUND_CASES = {
    "pareto1.5": (_pareto(1.5, 2000, 1),),
    "pareto3": (_pareto(3.0, 2000, 2),),
    "lognormal": (np.random.default_rng(3).lognormal(0, 1, 2000),),
    "esd": (heavy_tailed_esd(2000, 1000, 1.5, seed=9),),
    "ties": (np.round(_pareto(1.5, 2000, 4), 1),),
    "bounded": (_pareto(2.0, 1500, 5), 1.7),
    "alpha<1": (_pareto(2.0, 2000, 7), None, 0.6),
    "uniform": (np.random.default_rng(6).uniform(1, 2, 1500),),
}


@pytest.mark.parametrize("name", list(BRANCH_AND_BOUND_CASES))
def test_branch_and_bound_equals_every_point(name, monkeypatch):
    args = _scan_args(*BRANCH_AND_BOUND_CASES[name])
    reference = _every_point(*args)
    full = cpu.ks_distances(*args, prune=False)
    # every D exact (to numpy's expm1, which may differ from the kernel's by an ulp)
    np.testing.assert_allclose(full, reference, rtol=4e-16, atol=4e-16)
    monkeypatch.setattr(config, "KS_SERIAL_PAIRS", 0)  # the parallel strands, same answer
    np.testing.assert_array_equal(cpu.ks_distances(*args, prune=False), full)
    for leaf in (1, 5, 64):
        monkeypatch.setattr(config, "KS_LEAF_POINTS", leaf)
        np.testing.assert_array_equal(cpu.ks_distances(*args, prune=False), full)


@pytest.mark.parametrize("keep", [1.0, 1.1])
@pytest.mark.parametrize("name", ["pareto1.5", "lognormal", "esd", "ties"])
def test_pruning_is_exact_where_it_matters(name, keep):
    args = _scan_args(BRANCH_AND_BOUND_CASES[name][0])
    full = cpu.ks_distances(*args, prune=False)
    pruned = cpu.ks_distances(*args, prune=True, keep=keep)
    assert np.argmin(full) == np.argmin(pruned) and full.min() == pruned.min()
    exact = full <= keep * full.min()
    np.testing.assert_array_equal(pruned[exact], full[exact])
    assert np.all(pruned[~exact] > keep * full.min())  # abandoned: lower bounds above
    assert np.all(pruned <= full)
    assert np.mean(pruned < full) > 0.5  # and most candidates were abandoned early
    with pytest.raises(ValueError, match="keep"):
        cpu.ks_distances(*args, keep=0.5)


@pytest.mark.parametrize("name", ["pareto1.5", "alpha<1"])
def test_gpu_twin_logic_with_numpy_namespace(name, monkeypatch):
    monkeypatch.setattr(config, "GPU_KS_CHUNK_ELEMENTS", 5000)  # many chunks and slices
    args = list(_scan_args(*BRANCH_AND_BOUND_CASES[name]))
    args[-1] = np.random.default_rng(0).random(args[2].size) < 0.8  # some inactive
    active = args[-1]
    ref = cpu.ks_distances(*args, prune=False)
    twin = gpu._ks_distances(*args, np, prune=False)
    np.testing.assert_allclose(twin[active], ref[active], rtol=0, atol=1e-14)
    assert np.all(np.isinf(twin[~active]))
    for keep in (1.0, 1.1):  # pruned: exact within keep of the minimum, lower bounds above
        pruned = gpu._ks_distances(*args, np, prune=True, keep=keep)
        least = ref[active].min()
        exact = active & (ref <= keep * least)
        np.testing.assert_array_equal(pruned[exact], twin[exact])
        assert np.all(pruned[active & ~exact] > keep * least)
        assert np.all(pruned[active] <= twin[active])
        assert np.argmin(pruned) == np.argmin(ref)


@pytest.mark.gpu
def test_gpu_fit_matches_cpu():
    for name in ("esd", "pareto2.5_n1000", "ties"):
        a, b = (rmt.fit_powerlaw(DATASETS[name], device=d) for d in ("cpu", "gpu"))
        assert a.xmin == b.xmin
        np.testing.assert_allclose([a.alpha, a.D], [b.alpha, b.D], rtol=1e-12)


def test_bounded_fit_is_the_mle_of_the_bounded_likelihood():
    x = _pareto(2.2, 3000, seed=5)
    xmax = float(np.quantile(x, 0.97))
    fit = rmt.fit_powerlaw(x, xmax=xmax, device="cpu")
    tail = x[(x >= fit.xmin) & (x <= xmax)]
    nll = lambda a: -np.sum(_alternatives.powerlaw_loglikelihoods(tail, a, fit.xmin, xmax))  # noqa: E731
    best = scipy.optimize.minimize_scalar(nll, bounds=(0.2, 8.0), method="bounded",
                                          options={"xatol": 1e-12})
    np.testing.assert_allclose(fit.alpha, best.x, rtol=1e-8)
    assert fit.n_tail == int((x >= fit.xmin).sum())  # tail above xmax counts, as in powerlaw
    # far-away xmax → the unbounded closed form
    far = rmt.fit_powerlaw(x, xmax=x.max() * 1e12, xmin=fit.xmin, device="cpu")
    near = rmt.fit_powerlaw(x, xmin=fit.xmin, device="cpu")
    np.testing.assert_allclose(far.alpha, near.alpha, rtol=1e-6)


def test_bounded_alpha_below_one_is_found():
    # Uniform data on [1, 10] has a bounded-power-law MLE with α < 1 (density rising
    # toward xmax is impossible, flat is α = 0): the Newton solve must cross t = 0.
    x = np.random.default_rng(6).uniform(1.0, 10.0, 5000)
    fit = rmt.fit_powerlaw(x, xmin=1.0, xmax=10.0, alpha_range=(None, None), device="cpu")
    assert abs(fit.alpha) < 0.1


def test_scale_equivariance():
    x = DATASETS["esd"]
    a, b = rmt.fit_powerlaw(x), rmt.fit_powerlaw(x * 1234.5)
    np.testing.assert_allclose(a.alpha, b.alpha, rtol=1e-9)
    np.testing.assert_allclose(a.xmin * 1234.5, b.xmin, rtol=1e-12)


@pytest.mark.parametrize(
    ("x", "fragment"),
    [([], "no data"), ([-1.0, -2.0, 0.0], "positive"), ([1.0, np.nan, 2.0], "NaN"),
     ([3.0, 3.0, 3.0, -1.0], "2 distinct")],
)
def test_bad_data(x, fragment):
    with pytest.raises(DataError, match=fragment):
        rmt.fit_powerlaw(x)


def test_too_few_candidates_is_nan_with_warning():
    fit = rmt.fit_powerlaw([1.0, 2.0, 2.0, 3.0])
    assert np.isnan(fit.alpha) and "candidate" in fit.warning
    ref = _powerlaw_fit([1.0, 2.0, 2.0, 3.0], parameter_ranges={"alpha": [1, None]})
    assert np.isnan(ref.alpha)


def test_short_tail_warning_and_min_tail():
    x = np.r_[np.linspace(1, 2, 200), [50.0, 60.0, 80.0, 120.0, 300.0]]
    fit = rmt.fit_powerlaw(x)
    if fit.n_tail < 10:
        assert "only" in fit.warning
    forced = rmt.fit_powerlaw(x, min_tail=50)
    assert forced.n_tail >= 50


# --- alternatives ---------------------------------------------------------------------

COMPARE_CASES = [("lognormal", name) for name in _alternatives.NAMES] + [
    ("exponential", name) for name in _alternatives.NAMES] + [
    ("esd", "truncated_power_law"), ("esd", "exponential"), ("esd", "lognormal")]


@pytest.mark.parametrize(("data", "alt"), COMPARE_CASES)
def test_compare_agrees_with_powerlaw(data, alt):
    # Data sets whose alternative has an interior optimum that powerlaw's own optimiser
    # reaches; there (R, p) must agree to 1e-3.
    x = DATASETS[data]
    ref = _powerlaw_fit(x, parameter_ranges={"alpha": [1, None]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        R_ref, p_ref = ref.distribution_compare("power_law", alt)
    R, p = rmt.fit_powerlaw(x).compare(alt)
    np.testing.assert_allclose(R, R_ref, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(p, p_ref, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("alt", _alternatives.NAMES)
def test_alternative_likelihood_never_below_powerlaws(alt):
    # On a pure Pareto tail the alternatives degenerate (σ → ∞, β → 0); powerlaw's
    # Nelder–Mead stops early or mis-evaluates its normaliser. Ours must reach at least
    # the true likelihood of powerlaw's parameters.
    x = _pareto(2.5, 800, seed=0)
    ref = _powerlaw_fit(x, parameter_ranges={"alpha": [1, None]})
    fit = rmt.fit_powerlaw(x)
    dist = getattr(ref, alt)
    params = {k: float(v) for k, v in dist.parameters.items()}
    true_ll = np.sum(_alternatives.loglikelihoods(alt, fit.tail, params, fit.xmin, None))
    assert fit.fit_alternative(alt).loglikelihood >= true_ll - 1e-6


def test_likelihood_ratio_definitions():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=500), rng.normal(size=500) - 0.1
    R, p = _alternatives.loglikelihood_ratio(a, b, nested=False)
    d = a - b
    assert R == pytest.approx(d.sum())
    from scipy.special import erfc
    from scipy.stats import chi2
    assert p == pytest.approx(erfc(abs(d.sum()) / np.sqrt(2 * 500 * d.var())))
    _, p_nested = _alternatives.loglikelihood_ratio(a, b, nested=True)
    assert p_nested == pytest.approx(chi2.sf(2 * abs(d.sum()), 1))
    Rn, _ = _alternatives.loglikelihood_ratio(a, b, nested=False, normalized=True)
    assert Rn == pytest.approx(d.sum() / np.sqrt(500 * d.var()))


def test_best_fit():
    assert rmt.fit_powerlaw(_pareto(2.5, 3000, seed=8)).best_fit() == "power_law"
    expo = np.random.default_rng(8).exponential(1.0, 3000)
    assert rmt.fit_powerlaw(expo).best_fit() != "power_law"


# --- bootstrap and plot -----------------------------------------------------------------

def test_bootstrap_pvalue():
    # Under H0 the p-value is uniform: for an arbitrary seed P(p <= 0.05) = 5%; this seed
    # is fixed. Against exponential data of this size the test has power ~1.
    pl = rmt.fit_powerlaw(_pareto(2.5, 500, seed=11))
    res = pl.bootstrap_pvalue(n_boot=200, rng=0)
    assert res.pvalue > 0.05 and res.n_boot == 200 and res.D_boot.shape == (200,)
    assert res.mc_error == pytest.approx(np.sqrt(res.pvalue * (1 - res.pvalue) / 200))
    again = pl.bootstrap_pvalue(n_boot=200, rng=0)
    assert again.pvalue == res.pvalue  # seeded
    # An exponential sample of 5000 (tail of ~400 above the KS-optimal xmin) is rejected;
    # at 2000 points the chosen tail is too short for the test to tell (p ≈ 0.15).
    expo = rmt.fit_powerlaw(np.random.default_rng(12).exponential(1.0, 5000))
    assert expo.bootstrap_pvalue(n_boot=100, rng=1).pvalue < 0.05


def test_plot_draws_data_and_fit():
    import matplotlib

    matplotlib.use("Agg")
    ax = rmt.fit_powerlaw(DATASETS["esd"]).plot()
    assert len(ax.lines) >= 2 and ax.get_xscale() == "log"


@pytest.mark.parametrize("n", [3, 5, 8, 9, 13, 19, 20, 40])
def test_ww_small_n_rule_is_weightwatchers(n):
    # WeightWatcher 0.7.7 switches rules below 20 points (bias-corrected MLE, tails >= 8)
    from tests.reference import ww_fit

    rng = np.random.default_rng(n)
    for _ in range(5):
        x = np.sort(rng.pareto(1.5, n) + 1.0)
        fit = rmt.fit_powerlaw(x, candidates="ww")
        alpha, xmin, D = ww_fit(x)
        assert fit.alpha == pytest.approx(alpha, rel=1e-12) and fit.xmin == xmin
        assert fit.D == pytest.approx(D, rel=1e-12, abs=1e-15)
        assert ("small-n" in fit.warning) == (n < 20)
