"""How the torch operators read the caller's data (issue 19): held or streamed, in
microbatches, and refusing data that change between passes.

The reference is the exact Hessian of the mean loss over all examples at once
(``torch.autograd.functional.hessian`` of the concatenated data), which no batching
choice touches.
"""

import numpy as np
import pytest

from rmt.hessian import to_dense

torch = pytest.importorskip("torch", reason="the 'torch' extra is not installed")
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from rmt.hessian.batches import Batches  # noqa: E402
from rmt.hessian.fisher import empirical_fisher_operator, fisher_operator  # noqa: E402
from rmt.hessian.torch import gauss_newton_operator, hessian_operator  # noqa: E402
from rmt.hessian.torch_diagonal import curvature_diagonal  # noqa: E402

LOSS = torch.nn.CrossEntropyLoss()


def _model():
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def _data(n=37):
    gen = torch.Generator().manual_seed(5)
    return torch.randn(n, 4, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def _exact_hessian(model, x, y):
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().double().reshape(-1) for p in model.parameters()])

    def loss(theta):
        params, start = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            params[name] = theta[start:start + shape.numel()].reshape(shape)
            start += shape.numel()
        out = torch.func.functional_call(model, params, (x.double(),))
        return LOSS(out, y)

    return torch.autograd.functional.hessian(loss, flat).numpy()


def _loader(x, y, batch_size, shuffle):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(0))


def test_streamed_loader_held_list_and_microbatches_give_the_exact_hessian():
    model, (x, y) = _model(), _data()
    H = _exact_hessian(model, x, y)
    chunks = [(x[i:i + 10], y[i:i + 10]) for i in range(0, len(x), 10)]
    variants = {
        "held list": hessian_operator(model, LOSS, chunks),
        "streamed list": hessian_operator(model, LOSS, chunks, hold=False),
        "shuffling loader": hessian_operator(model, LOSS, _loader(x, y, 8, True)),
        "microbatches of 3": hessian_operator(model, LOSS, chunks, microbatch=3),
        "one batch in microbatches": hessian_operator(model, LOSS, [(x, y)], microbatch=4),
        "one-shot generator": hessian_operator(model, LOSS, iter(chunks)),
    }
    V = np.random.default_rng(0).standard_normal((H.shape[0], 3))
    scale = np.abs(H @ V).max()
    for name, op in variants.items():
        HV = op.matmat(V)
        assert np.abs(HV - H @ V).max() < 1e-12 * scale, name
        assert np.abs(op.matmat(V) - HV).max() < 1e-12 * scale, name  # repeatable


def test_gauss_newton_empirical_fisher_and_diagonal_do_not_depend_on_the_batching():
    model, (x, y) = _model(), _data()
    chunks = [(x[i:i + 10], y[i:i + 10]) for i in range(0, len(x), 10)]
    loader = _loader(x, y, 6, True)
    V = np.random.default_rng(1).standard_normal((43, 3))
    for make in (gauss_newton_operator, empirical_fisher_operator):
        reference = to_dense(make(model, LOSS, [(x, y)])) @ V
        for batches, kwargs in ((chunks, {"microbatch": 4}), (loader, {}),
                                (loader, {"microbatch": 5})):
            product = make(model, LOSS, batches, **kwargs).matmat(V)
            assert np.abs(product - reference).max() < 1e-12 * np.abs(reference).max()
    d = curvature_diagonal(model, LOSS, [(x, y)])
    np.testing.assert_allclose(curvature_diagonal(model, LOSS, loader, microbatch=4), d,
                               rtol=1e-12, atol=1e-15)


def test_monte_carlo_fisher_streams_only_data_that_repeat():
    model, (x, y) = _model(), _data()
    V = np.random.default_rng(2).standard_normal((43, 3))
    held = fisher_operator(model, LOSS, _loader(x, y, 8, False), mc_samples=2, rng=4,
                           hold=True).matmat(V)
    streamed = fisher_operator(model, LOSS, _loader(x, y, 8, False), mc_samples=2, rng=4,
                               hold=False).matmat(V)
    np.testing.assert_allclose(streamed, held, rtol=0, atol=1e-14)
    # the draws belong to their inputs: a reshuffled pass is caught, not averaged over
    with pytest.raises(ValueError, match="other inputs or targets"):
        fisher_operator(model, LOSS, _loader(x, y, 8, True), mc_samples=2, rng=4)
    with pytest.raises(ValueError, match="other inputs or targets"):
        curvature_diagonal(model, LOSS, _loader(x, y, 8, True), curvature="fisher")


class _Drifting:
    """An iterable whose batch sizes change each time it is read."""

    def __init__(self, x, y):
        self.x, self.y, self.reads = x, y, 0

    def __iter__(self):
        self.reads += 1
        step = 8 + self.reads
        return iter([(self.x[i:i + step], self.y[i:i + step])
                     for i in range(0, len(self.x), step)])


def test_data_that_change_between_passes_or_cannot_repeat_are_refused():
    model, (x, y) = _model(), _data()
    op = hessian_operator(model, LOSS, _Drifting(x, y))
    with pytest.raises(ValueError, match="changed between passes"):
        op.matvec(np.ones(op.shape[1]))
    with pytest.raises(ValueError, match="read only once"):
        hessian_operator(model, LOSS, iter([(x, y)]), hold=False)
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match="microbatch"):
            hessian_operator(model, LOSS, [(x, y)], microbatch=bad)
    with pytest.raises(ValueError, match="empty"):
        hessian_operator(model, LOSS, [])


def test_empty_batches_add_nothing():
    model, (x, y) = _model(), _data()
    with_empty = to_dense(gauss_newton_operator(model, LOSS, [(x[:0], y[:0]), (x, y)]))
    np.testing.assert_array_equal(with_empty, to_dense(gauss_newton_operator(model, LOSS,
                                                                             [(x, y)])))


def test_batches_hold_small_sequences_and_stream_loaders():
    x, y = _data()
    small = Batches([(x, y)], torch.float64, torch.device("cpu"))
    assert small.held is not None and small.sizes == [37] and small.total == 37.0
    loader = Batches(_loader(x, y, 10, False), torch.float64, torch.device("cpu"),
                     microbatch=4)
    assert loader.held is None and loader.sizes == [4, 4, 2] * 3 + [4, 3]
    first = [(i, xb.dtype, size) for i, xb, _, size in loader]
    assert first == [(i, torch.float64, s) for i, s in enumerate(loader.sizes)]


def test_a_reused_gradient_graph_gives_the_same_hessian():
    model, (x, y) = _model(), _data()
    H = _exact_hessian(model, x, y)
    V = np.random.default_rng(3).standard_normal((H.shape[0], 2))
    chunks = [(x[i:i + 10], y[i:i + 10]) for i in range(0, len(x), 10)]
    for batches, reuse in (([(x, y)], None), ([(x, y)], False), (chunks, True),
                           (chunks, None)):
        op = hessian_operator(model, LOSS, batches, reuse_graph=reuse)
        for _ in range(2):  # the second product is the one that reuses the graph
            np.testing.assert_allclose(op.matmat(V), H @ V, rtol=0,
                                       atol=1e-12 * np.abs(H @ V).max())
    with pytest.raises(ValueError, match="reuse_graph=True needs held data"):
        hessian_operator(model, LOSS, chunks, hold=False, reuse_graph=True)


def test_a_loss_linear_in_the_parameters_has_a_zero_hessian():
    torch.manual_seed(0)
    linear, x = torch.nn.Linear(3, 2), torch.randn(5, 3)
    for reuse in (True, False):
        op = hessian_operator(linear, lambda out, y: out.mean(), [(x, None)],
                              reuse_graph=reuse)
        np.testing.assert_array_equal(op.matvec(np.ones(8)), np.zeros(8))


def test_a_reused_graph_fixes_the_dropout_masks():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Dropout(0.5),
                                torch.nn.Linear(6, 3))
    x, y = _data()
    v = np.random.default_rng(0).standard_normal(sum(p.numel() for p in model.parameters()))
    fixed = hessian_operator(model, LOSS, [(x, y)], train=True)
    np.testing.assert_array_equal(fixed.matvec(v), fixed.matvec(v))
    redrawn = hessian_operator(model, LOSS, [(x, y)], train=True, reuse_graph=False)
    assert not np.allclose(redrawn.matvec(v), redrawn.matvec(v))
    assert model.training  # a new module's mode, untouched by either


def test_operators_state_their_precision():
    model, (x, y) = _model(), _data()
    assert hessian_operator(model, LOSS, [(x, y)]).precision == "float64"
    single = gauss_newton_operator(model, LOSS, [(x, y)], dtype=torch.float32)
    assert single.precision == "float32"
    exact = gauss_newton_operator(model, LOSS, [(x, y)])
    v = np.random.default_rng(0).standard_normal(single.shape[1])
    # float32 products: float32 rounding, not float64's, and not worse
    error = np.abs(single.matvec(v) - exact.matvec(v)).max() / np.abs(exact.matvec(v)).max()
    assert 1e-10 < error < 1e-5
    assert fisher_operator(model, LOSS, [(x, y)], dtype=torch.float32).precision == "float32"
