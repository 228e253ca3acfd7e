"""Fisher operators of torch models against exact references (issue 19).

The empirical Fisher against the per-example gradients from ``torch.func.vmap(grad)``;
the Monte-Carlo Fisher against the Gauss–Newton matrix, which is its expectation for
these likelihoods: the error must fall like 1/√M.
"""

import numpy as np
import pytest

from rmt.hessian import to_dense

torch = pytest.importorskip("torch", reason="the 'torch' extra is not installed")
from rmt.hessian.fisher import empirical_fisher_operator, fisher_operator  # noqa: E402
from rmt.hessian.torch import gauss_newton_operator  # noqa: E402


class _Tokens(torch.nn.Module):
    """A next-token model: ids (B, T) → logits (B, T, V)."""

    def __init__(self, vocab: int = 7, width: int = 3, classes: int = 5) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.head = torch.nn.Linear(width, classes)

    def forward(self, ids):
        return self.head(torch.tanh(self.embed(ids)))


def _flat_ce(out, y):  # logits (B, T, V) and labels (B, T), -100 = padding
    return torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def _problems():
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    x1, x2 = torch.randn(6, 3, generator=gen), torch.randn(3, 3, generator=gen)
    ids = torch.randint(0, 7, (4, 6), generator=gen)
    labels = torch.randint(0, 5, (4, 6), generator=gen)
    labels[0, 3:] = -100
    return {
        "categorical": (mlp, torch.nn.CrossEntropyLoss(),
                        [(x1, torch.randint(0, 2, (6,), generator=gen)),
                         (x2, torch.randint(0, 2, (3,), generator=gen))]),
        "gaussian": (mlp, lambda out, y: ((out - y) ** 2).sum(1).mean() / 2,
                     [(x1, torch.randn(6, 2, generator=gen)),
                      (x2, torch.randn(3, 2, generator=gen))]),
        "bernoulli": (mlp, torch.nn.functional.binary_cross_entropy_with_logits,
                      [(x1, (torch.rand(6, 2, generator=gen) > 0.5).double())]),
        "sequence": (_Tokens(), _flat_ce, [(ids, labels)]),
    }


@pytest.mark.parametrize("case", ["categorical", "gaussian", "bernoulli", "sequence"])
def test_monte_carlo_fisher_is_unbiased_for_the_gauss_newton_matrix(case):
    model, loss, batches = _problems()[case]
    G = to_dense(gauss_newton_operator(model, loss, batches))

    def error(samples):
        F = to_dense(fisher_operator(model, loss, batches, mc_samples=samples, rng=7))
        assert np.abs(F - F.T).max() < 1e-12 and np.linalg.eigvalsh(F).min() > -1e-12
        return np.linalg.norm(F - G) / np.linalg.norm(G)

    one, many = error(1), error(4000)
    # unbiased: √4000 ≈ 63 times smaller; a bias (a wrong scale, a missed term) stays put
    assert many < 0.03 and one / many > 15, (one, many)


def test_monte_carlo_fisher_is_one_fixed_matrix_per_seed():
    model, loss, batches = _problems()["categorical"]
    v = np.random.default_rng(0).standard_normal(sum(p.numel() for p in model.parameters()))
    op = fisher_operator(model, loss, batches, mc_samples=3, rng=11)
    again = fisher_operator(model, loss, batches, mc_samples=3, rng=11)
    other = fisher_operator(model, loss, batches, mc_samples=3, rng=12)
    np.testing.assert_array_equal(op.matvec(v), op.matvec(v))  # Lanczos needs one matrix
    np.testing.assert_array_equal(op.matvec(v), again.matvec(v))
    assert not np.allclose(op.matvec(v), other.matvec(v))
    with pytest.raises(ValueError, match="mc_samples"):
        fisher_operator(model, loss, batches, mc_samples=0)


@pytest.mark.parametrize("loss", [torch.nn.CrossEntropyLoss(label_smoothing=0.1),
                                  torch.nn.CrossEntropyLoss(
                                      weight=torch.tensor([1.0, 3.0], dtype=torch.float64))])
def test_monte_carlo_fisher_refuses_a_loss_that_is_no_likelihood(loss):
    model, _, batches = _problems()["categorical"]
    with pytest.raises(ValueError, match="not a constant multiple of the categorical"):
        fisher_operator(model, loss, batches)


@pytest.mark.parametrize("case", ["categorical", "sequence"])
def test_empirical_fisher_is_the_per_example_gradients_second_moment(case):
    from torch.func import functional_call, grad, vmap

    model, loss, batches = _problems()[case]
    params = {k: p.detach().double() for k, p in model.named_parameters()}

    def example_loss(p, x, y):  # ℓ_n: the batch mean's share of example n, times B
        return loss(functional_call(model, p, (x[None],)), y[None])

    rows, total = [], sum(len(y) for _, y in batches)
    for x, y in batches:
        x = x.double() if x.is_floating_point() else x
        g = vmap(grad(example_loss), in_dims=(None, 0, 0))(params, x, y)
        rows.append(torch.cat([g[k].reshape(len(y), -1) for k in params], 1))
    if case == "sequence":  # the mean is over the 21 kept tokens, not over the 4 sequences
        kept = (batches[0][1] != -100).sum(1)
        rows = [rows[0] * (kept[:, None] / kept.sum() * len(kept))]
    grads = torch.cat(rows).numpy()
    exact = grads.T @ grads / total
    EF = to_dense(empirical_fisher_operator(model, loss, batches))
    np.testing.assert_allclose(EF, exact, atol=1e-13 * max(1.0, np.abs(exact).max()))


def test_block_spectra_of_the_fisher_matrices_are_their_diagonal_blocks():
    from rmt.hessian import block_spectra

    model, loss, batches = _problems()["categorical"]  # blocks "0" (16 params) and "2" (10)
    full = {"empirical_fisher": to_dense(empirical_fisher_operator(model, loss, batches)),
            "fisher": to_dense(fisher_operator(model, loss, batches, mc_samples=2, rng=5))}
    for curvature, matrix in full.items():
        res = block_spectra(model, loss, batches, curvature=curvature, lanczos_degree=20,
                            n_probes=1, mc_samples=2, rng=5)
        for name, part in {"0": slice(0, 16), "2": slice(16, 26)}.items():
            exact = np.linalg.eigvalsh(matrix[part, part])
            row = res.table.set_index("block").loc[name]
            assert row.lambda_min > -1e-12  # both are PSD
            if curvature == "empirical_fisher":  # the same matrix: the same extremes
                assert row.lambda_max == pytest.approx(exact[-1], rel=1e-10)


@pytest.mark.parametrize("case", ["categorical", "gaussian", "bernoulli", "sequence"])
def test_exact_curvature_diagonals_are_the_operators_diagonals(case):
    from rmt.hessian.torch_diagonal import curvature_diagonal

    model, loss, batches = _problems()[case]
    operators = {"ggn": gauss_newton_operator(model, loss, batches),
                 "fisher": fisher_operator(model, loss, batches, mc_samples=3, rng=2),
                 "empirical_fisher": empirical_fisher_operator(model, loss, batches)}
    for curvature, op in operators.items():
        exact = np.diag(to_dense(op))
        got = curvature_diagonal(model, loss, batches, curvature=curvature, mc_samples=3, rng=2)
        np.testing.assert_allclose(got, exact, atol=1e-14 * max(1.0, np.abs(exact).max()))


def test_exact_curvature_diagonals_refuse_what_they_cannot_do_cheaply():
    from rmt.hessian.torch_diagonal import curvature_diagonal

    model, loss, batches = _problems()["sequence"]  # 6 positions × 5 classes per example
    with pytest.raises(ValueError, match="30 outputs, above max_outputs=16"):
        curvature_diagonal(model, loss, batches, max_outputs=16)
    norm = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4),
                               torch.nn.Linear(4, 2))
    x, y = torch.randn(6, 3), torch.randint(0, 2, (6,))
    with pytest.raises(ValueError, match="one example at a time"):
        curvature_diagonal(norm, torch.nn.functional.cross_entropy, [(x, y)], train=True)
