"""rmt's Hessian spectra side by side with the real packages, on the same torch models.

PyHessian 0.1, hessian-eigenthings 1.0.0a5 and curvlinops 3.0.1 (with BackPACK 1.7.1 and
curvlinops' light dependencies) are installed with ``--no-deps`` into the benchmark's
own directory, ``benchmarks/.hessian-env`` (next to the pinned torch 2.13.0 of the main
environment), and each runs its own public API on the same float64 models and data:

- an MLP (64-40-40-10, tanh, P = 4650) and a CNN (P = 1898) trained on scikit-learn's
  digits (Adam, 400 full-batch steps), the MLP's Hessian on all 1797 examples and the
  CNN's on the first 256 (one batch each), whose exact Hessians (P products through
  rmt's operator, checked symmetric) and eigendecompositions are the ground truth;
- a wider MLP (64-512-512-10, P = 301,066, 1024 examples) and a small transformer, for
  seconds per Hessian-vector product and the peak memory of an SLQ run.

Measured: top-5 eigenvalues (each tool's eigen-solver at its defaults: PyHessian's power
iteration, hessian-eigenthings' Lanczos, SciPy's ``eigsh`` on curvlinops' operator as
its documentation does, rmt's ``extreme_eigs``), the largest relative error and the
products spent; trace at equal budgets (rms relative error over 20 seeds, 10 on the
CNN); the density's W1/width and index error at 100 (100 × 1), 320 (80 × 4) and 1000
(100 × 10) products, mean ± standard error over 10 seeds, from each tool's nodes where
it returns them and from its smoothed density on a grid where it returns one; seconds
per product (interleaved rounds, median) and each product's distance to central finite
differences of the gradient; the resident memory an SLQ run adds (fresh
process per tool, ``VmHWM`` after ``clear_refs``).
The two accuracy models run in two processes side by side (one thread each; their
numbers do not depend on the clock), then the timings alone.
Run: ``python -m benchmarks.hessian_incumbents`` (~45 minutes on 2 cores; ``--timings``
reruns only the timings and memory, keeping the last run's accuracy).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ENV = HERE / ".hessian-env"
PACKAGES = ["PyHessian==0.1", "hessian-eigenthings==1.0.0a5",
            "curvlinops-for-pytorch==3.0.1", "backpack-for-pytorch==1.7.1", "einops==0.8.2",
            "einconv==0.1.0", "unfoldNd==0.2.3", "opt-einsum==3.4.0", "linear_operator==0.6.1"]
BUDGETS = {100: (100, 1), 320: (80, 4), 1000: (100, 10)}
DENSITY_SEEDS = {100: 10, 320: 10, 1000: 10}
TRACE_BUDGETS = (100, 300)
TOOLS = ("PyHessian", "hessian-eigenthings", "curvlinops", "rmt")


def install() -> None:
    """The incumbents into ``ENV`` (pure-Python wheels, ``--no-deps``; torch is the main
    environment's pinned 2.13.0)."""
    marker = ENV / "installed.json"
    if marker.exists() and json.loads(marker.read_text()) == PACKAGES:
        return
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--upgrade", "--target", str(ENV), *PACKAGES], check=True)
    marker.write_text(json.dumps(PACKAGES))


# --- models and data ---------------------------------------------------------------------

def digits() -> tuple[Any, Any]:
    import torch
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X - X.mean(0)) / (X.std(0) + 1e-8)
    return torch.tensor(X, dtype=torch.float64), torch.tensor(y)


def mlp(widths: tuple[int, ...]) -> Any:
    import torch

    layers: list[Any] = []
    for a, b in itertools.pairwise(widths):
        layers += [torch.nn.Linear(a, b), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers[:-1]).double()


def cnn() -> Any:
    import torch

    nn = torch.nn
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10)).double()


class Transformer:
    """A two-layer pre-norm transformer classifier over token ids (built lazily)."""

    @staticmethod
    def make(vocab: int = 100, width: int = 64, seq: int = 32) -> Any:
        import torch

        class Model(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embed = torch.nn.Embedding(vocab, width)
                self.pos = torch.nn.Parameter(torch.randn(seq, width) * 0.02)
                layer = torch.nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0,
                                                         batch_first=True, norm_first=True)
                self.encoder = torch.nn.TransformerEncoder(layer, 2,
                                                           enable_nested_tensor=False)
                self.head = torch.nn.Linear(width, 10)

            def forward(self, ids: Any) -> Any:
                return self.head(self.encoder(self.embed(ids) + self.pos).mean(1))

        return Model().double()


def train(model: Any, X: Any, y: Any, steps: int = 400) -> Any:
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(X), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model


# --- the four tools behind one interface -------------------------------------------------

class Counter:
    def __init__(self) -> None:
        self.n = 0


def _shim_torch_eig() -> None:
    """PyHessian 0.1's ``density`` calls ``torch.eig``, removed in torch 1.9: give it the
    old interface (eigenvalues as (n, 2) real/imaginary columns, eigenvectors) through
    ``torch.linalg.eigh`` of its symmetric tridiagonal T, so its algorithm can run."""
    import torch

    def eig(A: Any, eigenvectors: bool = False) -> Any:
        w, V = torch.linalg.eigh(A)
        return torch.stack([w, torch.zeros_like(w)], 1), (V if eigenvectors else None)

    torch.eig = eig


def make_tool(name: str, model: Any, X: Any, y: Any) -> dict[str, Any]:
    """Each tool's operator and methods on (model, X, y), with a product counter."""
    import torch

    loss_fn = torch.nn.CrossEntropyLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    count = Counter()
    if name == "PyHessian":
        import importlib

        ph = importlib.import_module("pyhessian.hessian")  # the package exports the class
        _shim_torch_eig()

        original = getattr(ph, "_uncounted_hvp", ph.hessian_vector_product)
        ph._uncounted_hvp = original  # one counter per tool, not one wrapper per model

        def counted(gradsH: Any, ps: Any, v: Any) -> Any:
            count.n += 1
            return original(gradsH, ps, v)

        ph.hessian_vector_product = counted
        h = ph.hessian(model, loss_fn, data=(X, y), cuda=False)

        def hvp(v: Any) -> Any:
            parts = [t.view_as(p) for t, p in zip(torch.split(v, [p.numel() for p in params]),
                                                  params, strict=True)]
            return torch.cat([t.reshape(-1) for t in counted(h.gradsH, h.params, parts)])
        return {"count": count, "hvp": hvp, "obj": h}
    if name == "hessian-eigenthings":
        import hessian_eigenthings as he

        op = he.HessianOperator(model, [(X, y)], he.supervised_loss(loss_fn))
        inner = op.matvec

        def matvec(v: Any) -> Any:
            count.n += 1
            return inner(v)

        op.matvec = matvec
        return {"count": count, "hvp": matvec, "obj": op}
    if name == "curvlinops":
        import curvlinops

        H = curvlinops.HessianLinearOperator(model, loss_fn, params, [(X, y)],
                                             check_deterministic=False)
        inner_mm = H._matmat

        def matmat(M: Any) -> Any:
            count.n += int(M[0].shape[-1])
            return inner_mm(M)

        H._matmat = matmat
        return {"count": count, "hvp": lambda v: H @ v, "obj": H}
    from rmt.hessian import CountingOperator
    from rmt.hessian.torch import hessian_operator

    op = CountingOperator(hessian_operator(model, loss_fn, [(X, y)]))

    class RmtCount(Counter):
        @property
        def n(self) -> int:  # type: ignore[override]
            return op.n_matvecs

        @n.setter
        def n(self, value: int) -> None:
            op.n_matvecs = value

    return {"count": RmtCount(), "hvp": lambda v: op.matvec(v.numpy()), "obj": op}


def top_k(name: str, tool: dict[str, Any], k: int, seed: int) -> np.ndarray:
    import torch

    torch.manual_seed(seed)
    if name == "PyHessian":
        values, _ = tool["obj"].eigenvalues(maxIter=100, tol=1e-3, top_n=k)
        return np.sort(np.asarray(values, dtype=float))[::-1]
    if name == "hessian-eigenthings":
        import hessian_eigenthings as he

        res = he.lanczos(tool["obj"], k=k, which="LA", seed=seed)
        return np.sort(res.eigenvalues.numpy())[::-1]
    if name == "curvlinops":
        from scipy.sparse.linalg import eigsh

        return np.sort(eigsh(tool["obj"].to_scipy(), k=k, which="LA",
                             return_eigenvectors=False))[::-1]
    from rmt.hessian import extreme_eigs

    return extreme_eigs(tool["obj"], k=k, which="LA", rng=seed)[::-1]


def trace_estimate(name: str, tool: dict[str, Any], budget: int, seed: int) -> float:
    import torch

    torch.manual_seed(seed)
    if name == "PyHessian":
        return float(np.mean(tool["obj"].trace(maxIter=budget, tol=0.0)))
    if name == "hessian-eigenthings":
        import hessian_eigenthings as he

        return float(he.trace(tool["obj"], num_matvecs=budget, method="hutch++",
                              seed=seed).estimate)
    if name == "curvlinops":
        import curvlinops

        return float(curvlinops.xtrace(tool["obj"], budget))
    from rmt.hessian import trace

    return float(trace(tool["obj"], budget, rng=seed))


def density(name: str, tool: dict[str, Any], steps: int, probes: int, seed: int
            ) -> dict[str, Any]:
    """Nodes/weights where the tool returns them, a grid density where it returns one."""
    import torch

    torch.manual_seed(seed)
    out: dict[str, Any] = {}
    if name == "PyHessian":
        nodes, weights = tool["obj"].density(iter=steps, n_v=probes)
        out["nodes"] = np.concatenate([np.asarray(n) for n in nodes])
        out["weights"] = np.concatenate([np.asarray(w) for w in weights]) / probes
    elif name == "hessian-eigenthings":
        import hessian_eigenthings as he

        res = he.spectral_density(tool["obj"], num_runs=probes, lanczos_steps=steps, seed=seed)
        out["nodes"] = res.raw_eigenvalues.numpy().ravel()
        out["weights"] = res.raw_weights.numpy().ravel() / probes
        out["grid"], out["density"] = res.grid.numpy(), res.density.numpy()
    elif name == "curvlinops":
        import curvlinops

        grid, dens = curvlinops.lanczos_approximate_spectrum(tool["obj"], steps,
                                                             num_repeats=probes)
        out["grid"], out["density"] = grid.numpy(), dens.numpy()
    else:
        from rmt.hessian import slq

        sd = slq(tool["obj"], lanczos_degree=steps, n_probes=probes, rng=seed)
        out["nodes"], out["weights"] = sd.nodes, sd.weights
        out["index"], out["interval"] = sd.negative_fraction(), sd.index_bounds()
        lo, hi = sd.nodes[0], sd.nodes[-1]
        pad = 0.05 * (hi - lo)
        out["grid"] = np.union1d(np.linspace(lo - pad, hi + pad, 20000), sd.nodes)
        out["density"] = sd.pdf(out["grid"])
        out["smoothed_cdf"] = sd.smoothed_cdf
    return out


def grid_w1(grid: np.ndarray, dens: np.ndarray, exact: np.ndarray) -> tuple[float, float]:
    """W1 of a density on a grid (its trapezoid CDF, normalised) to exact eigenvalues, and
    its mass below 0."""
    from scipy.integrate import cumulative_trapezoid

    F = cumulative_trapezoid(np.maximum(dens, 0), grid, initial=0.0)
    F /= F[-1]
    x = np.union1d(grid, exact)
    Fx = np.interp(x, grid, F, left=0.0, right=1.0)
    G = np.searchsorted(exact, x, side="right") / exact.size
    return float(np.trapezoid(np.abs(Fx - G), x)), float(np.interp(0.0, grid, F))


# --- the worker ----------------------------------------------------------------------------

def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error (0 for a single value)."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else 0.0


def rms_se(errors: list[float]) -> tuple[float, float]:
    """Root mean square and its standard error (delta method on the mean square)."""
    sq = np.square(np.asarray(errors, dtype=float))
    rms = float(np.sqrt(sq.mean()))
    se = float(sq.std(ddof=1) / np.sqrt(sq.size)) / (2 * rms) if sq.size > 1 and rms else 0.0
    return rms, se


def accuracy(label: str, model: Any, X: Any, y: Any, trace_seeds: int = 20
             ) -> list[dict[str, Any]]:
    import torch

    from rmt.hessian import to_dense, wasserstein
    from rmt.hessian.extreme import negative_fraction
    from rmt.hessian.torch import hessian_operator

    H = to_dense(hessian_operator(model, torch.nn.CrossEntropyLoss(), [(X, y)]))
    assert np.abs(H - H.T).max() <= 1e-10 * np.abs(H).max()
    exact = np.linalg.eigvalsh(H)
    width, index = exact[-1] - exact[0], negative_fraction(exact)
    top5 = exact[::-1][:5]
    rows = []
    for name in TOOLS:
        tool = make_tool(name, model, X, y)
        row: dict[str, Any] = {"model": label, "P": int(exact.size), "tool": name,
                               "exact_index": index}
        tool["count"].n = 0
        values = top_k(name, tool, 5, seed=0)
        row["top5_rel_err"] = float(np.max(np.abs(values - top5) / np.abs(top5)))
        row["top5_hvps"] = int(tool["count"].n)
        for b in TRACE_BUDGETS:
            errs = [(trace_estimate(name, tool, b, seed) - exact.sum()) / abs(exact.sum())
                    for seed in range(trace_seeds)]
            row[f"trace_rms_{b}"], row[f"trace_rms_{b}_se"] = rms_se(errs)
            row[f"trace_errors_{b}"] = [float(e) for e in errs]
        for budget, (steps, probes) in BUDGETS.items():
            w_nodes, w_grid, idx, held, hvps = [], [], [], [], []
            for seed in range(DENSITY_SEEDS[budget]):
                tool["count"].n = 0
                d = density(name, tool, steps, probes, seed)
                hvps.append(tool["count"].n)
                if "nodes" in d:
                    w_nodes.append(wasserstein(d["nodes"], d["weights"], exact,
                                               np.full(exact.size, 1 / exact.size)) / width)
                if "grid" in d:
                    w, below = grid_w1(d["grid"], d["density"], exact)
                    w_grid.append(w / width)
                if "index" in d:
                    idx.append(abs(d["index"] - index))
                    noise = 4 * np.sqrt(2 * index / (exact.size * probes))
                    held.append(d["interval"][0] - noise <= index <= d["interval"][1] + noise)
                elif "nodes" in d:
                    idx.append(abs(float(d["weights"][d["nodes"] < 0].sum()) - index))
                else:
                    idx.append(abs(below - index))
            for key, values in ((f"w1_nodes_{budget}", w_nodes),
                                (f"w1_smoothed_{budget}", w_grid),
                                (f"index_err_{budget}", idx)):
                row[key], row[f"{key}_se"] = mean_se(values) if values else (None, None)
                row[f"{key}_all"] = [float(v) for v in values]
            row[f"index_held_{budget}"] = f"{sum(held)}/{len(held)}" if held else None
            row[f"hvps_{budget}"] = float(np.mean(hvps))
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    return rows


def speed(label: str, model: Any, X: Any, y: Any, rounds: int = 5) -> list[dict[str, Any]]:
    """Seconds per product, interleaved. A tool whose product fails on the model as
    given (a transformer's fused attention has no double backward) is noted and timed
    again with attention on PyTorch's math kernel, as rmt's operators run it."""
    import contextlib

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    P = sum(p.numel() for p in model.parameters())
    v = torch.as_tensor(np.random.default_rng(0).standard_normal(P))
    v /= v.norm()  # unit: the finite difference below stays on one side of ReLU's kinks
    tools, failures, contexts = {}, {}, {}
    for name in TOOLS:
        for context in (contextlib.nullcontext, lambda: sdpa_kernel([SDPBackend.MATH])):
            try:
                with context():
                    tool = make_tool(name, model, X, y)
                    tool["hvp"](v)
                tools[name], contexts[name] = tool, context
                break
            except RuntimeError as error:
                failures[name] = str(error).splitlines()[0][:120]
    reference = torch.as_tensor(np.asarray(tools["rmt"]["hvp"](v)))
    fd = finite_difference_hvp(model, X, y, v)
    differences, to_fd = {}, {}
    for name, tool in tools.items():  # the same product (the difference is reported), warm
        with contexts[name]():
            got = torch.as_tensor(np.asarray(tool["hvp"](v), dtype=np.float64)).reshape(-1)
        differences[name] = float((got - reference).norm() / reference.norm())
        to_fd[name] = float((got - fd).norm() / fd.norm())
    times: dict[str, list[float]] = {name: [] for name in tools}
    reps = max(3, int(0.5 / max(time_one(tools["rmt"]["hvp"], v), 1e-4)))
    names = list(tools)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            with contexts[name]():
                start = time.perf_counter()
                for _ in range(reps):
                    tools[name]["hvp"](v)
                times[name].append((time.perf_counter() - start) / reps)
    fastest = min(float(np.median(t)) for n, t in times.items() if n != "rmt")
    return [{"model": label, "P": int(P), "tool": name, "seconds_per_hvp": float(np.median(t)),
             "ratio_to_fastest_incumbent": float(np.median(t)) / fastest,
             "failed_as_given": failures.get(name),
             "rel_diff_to_rmt_product": differences[name],
             "rel_diff_to_finite_difference": to_fd[name]}
            for name, t in times.items()]


def finite_difference_hvp(model: Any, X: Any, y: Any, v: Any, eps: float = 1e-6) -> Any:
    """(∇L(θ + εv) − ∇L(θ − εv)) / 2ε in float64, on the math attention kernel: an
    independent check of every tool's product (truncation ~ε²·|∇³L|, rounding ~eps/ε)."""
    import torch
    from torch.func import functional_call
    from torch.nn.attention import SDPBackend, sdpa_kernel

    names = [n for n, _ in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    shapes = [p.shape for p in model.parameters()]

    def grad_at(point: Any) -> Any:
        leaves = [t.view(s).requires_grad_() for t, s in zip(
            torch.split(point.clone(), [s.numel() for s in shapes]), shapes, strict=True)]
        with sdpa_kernel([SDPBackend.MATH]):
            loss = torch.nn.CrossEntropyLoss()(
                functional_call(model, dict(zip(names, leaves, strict=True)), (X,)), y)
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, leaves)])

    return (grad_at(theta + eps * v) - grad_at(theta - eps * v)) / (2 * eps)


def time_one(fn: Any, v: Any) -> float:
    start = time.perf_counter()
    fn(v)
    return time.perf_counter() - start


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def memory_child(name: str, label: str) -> dict[str, Any]:
    """One tool's SLQ (100 steps, one probe) on a model, in this fresh process."""
    model, X, y = speed_models()[label]
    tool = make_tool(name, model, X, y)
    P = sum(p.numel() for p in model.parameters())
    tool["hvp"](__import__("torch").ones(P, dtype=__import__("torch").float64))
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
    base = _rss_kib("VmRSS")
    density(name, tool, 100, 1, seed=0)
    return {"model": label, "tool": name, "slq_added_MiB": (_rss_kib("VmHWM") - base) / 1024}


def speed_models() -> dict[str, tuple[Any, Any, Any]]:
    import torch

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    wide = mlp((64, 512, 512, 10))
    Xw, yw = torch.randn(1024, 64, generator=gen, dtype=torch.float64), torch.randint(
        0, 10, (1024,), generator=gen)
    tr = Transformer.make()
    ids, yt = torch.randint(0, 100, (32, 32), generator=gen), torch.randint(0, 10, (32,),
                                                                           generator=gen)
    return {"MLP 64-512-512-10": (wide, Xw, yw), "transformer 2×64": (tr, ids, yt)}


def worker(part: str) -> dict[str, Any]:
    """One part of the run: ``mlp`` or ``cnn`` (accuracy against the exact Hessian) or
    ``speed`` (seconds per product)."""
    import torch

    torch.set_default_dtype(torch.float64)  # the incumbents draw vectors in the default
    torch.set_num_threads(1)
    if part == "speed":
        speeds = []
        for label, (model, Xs, ys) in speed_models().items():
            speeds += speed(label, model, Xs, ys)
        return {"speed": speeds}
    X, y = digits()
    torch.manual_seed(0)  # the MLP's initial weights, then the CNN's, from one stream
    if part == "mlp":
        return {"accuracy": accuracy("MLP 64-40-40-10 (digits)",
                                     train(mlp((64, 40, 40, 10)), X, y), X, y)}
    mlp((64, 40, 40, 10))
    # the CNN's double backward is ~7× dearer per example: its Hessian on 256 of them
    return {"accuracy": accuracy("CNN (digits, 256 examples)", train(cnn(), X, y),
                                 X[:256], y[:256], trace_seeds=10)}


def run_child(args: list[str]) -> dict[str, Any]:
    from benchmarks._common import run_json

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ENV), str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    return run_json([sys.executable, "-m", "benchmarks.hessian_incumbents", *args],
                    cwd=HERE.parent, env=env)


def table(result: dict[str, Any]) -> str:
    lines = ["| model | tool | top-5 max rel. err (HVPs) | trace rms err @100 / @300 | "
             "W1/width nodes @100 / 320 / 1000 | W1/width smoothed @100 / 320 / 1000 | "
             "index err @100 / 320 / 1000 |", "|" + "---|" * 7]

    def f(value: Any, fmt: str = ".1e") -> str:
        return "—" if value is None else format(value, fmt)

    def pm(r: dict[str, Any], key: str, fixed: bool = False) -> str:
        """``mean±se`` in one exponent (``8.7±0.5e-4``), or fixed point."""
        mean, se = r[key], r.get(f"{key}_se")
        if mean is None:
            return "—"
        if fixed:
            return f"{mean:.3f}±{se:.3f}"
        exp = int(np.floor(np.log10(abs(mean)))) if mean else 0
        return f"{mean / 10**exp:.1f}±{se / 10**exp:.1f}e{exp}"

    for r in result["accuracy"]:
        lines.append(
            f"| {r['model']}, P={r['P']} | {r['tool']} | {f(r['top5_rel_err'])} "
            f"({r['top5_hvps']}) | {pm(r, 'trace_rms_100')} / {pm(r, 'trace_rms_300')} | "
            + " / ".join(pm(r, f"w1_nodes_{b}") for b in BUDGETS) + " | "
            + " / ".join(pm(r, f"w1_smoothed_{b}") for b in BUDGETS) + " | "
            + " / ".join(pm(r, f"index_err_{b}", fixed=True) for b in BUDGETS) + " |")
    held = [f"{r['model']} " + " / ".join(str(r[f"index_held_{b}"]) for b in BUDGETS)
            for r in result["accuracy"] if r.get("index_held_100")]
    lines += ["", "Mean ± standard error over the seeds (traces: rms ± its standard error). "
              "rmt's index interval held @100 / 320 / 1000: " + "; ".join(held) + "."]
    lines += ["", "| model | tool | s per HVP | × fastest incumbent | SLQ 100×1 adds (MiB) | "
              "product's rel. diff. to rmt's | to central finite differences |",
              "|---|---|---|---|---|---|---|"]
    memory = {(m["model"], m["tool"]): m["slq_added_MiB"] for m in result.get("memory", [])}
    for r in result["speed"]:
        mem = memory.get((r["model"], r["tool"]))
        note = (f" (fails as given: {r['failed_as_given']}; timed on the math attention "
                f"kernel)" if r.get("failed_as_given") else "")
        lines.append(f"| {r['model']}, P={r['P']} | {r['tool']}{note} | "
                     f"{r['seconds_per_hvp']:.2e} | {r['ratio_to_fastest_incumbent']:.2f} | "
                     f"{f(mem, '.0f')} | {r['rel_diff_to_rmt_product']:.1e} | "
                     f"{f(r.get('rel_diff_to_finite_difference'))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Install the incumbents, run the comparison, write
    ``benchmarks/results/hessian_incumbents.{json,md}``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        print(json.dumps(worker(argv[1])))
        return 0
    if argv[:1] == ["--memory"]:
        import torch

        torch.set_default_dtype(torch.float64)
        torch.set_num_threads(1)
        print(json.dumps(memory_child(argv[1], argv[2])))
        return 0
    from benchmarks._common import machine, publish

    install()
    from concurrent.futures import ThreadPoolExecutor

    if argv[:1] == ["--timings"]:  # the accuracy of the last run, the clock measured again
        from benchmarks._common import RESULTS

        result = {"accuracy": json.loads((RESULTS / "hessian_incumbents.json").read_text()
                                         )["accuracy"]}
    else:
        with ThreadPoolExecutor(2) as pool:  # accuracy only: the clock is timed alone below
            parts = list(pool.map(lambda part: run_child(["--worker", part]), ["mlp", "cnn"]))
        result = {"accuracy": parts[0]["accuracy"] + parts[1]["accuracy"]}
    result.update(run_child(["--worker", "speed"]))
    result["memory"] = [run_child(["--memory", name, "MLP 64-512-512-10"]) for name in TOOLS]
    result["machine"] = machine(1)
    result["packages"] = PACKAGES
    md = (f"Hessian spectra against the installed incumbents — {result['machine']['date']}, "
          f"1 thread, float64\n\n" + table(result))
    publish("hessian_incumbents", result, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
