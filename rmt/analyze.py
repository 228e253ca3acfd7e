"""``rmt.analyze``: a checkpoint in, one row per layer out (pandas DataFrame).

Streaming: tensors are visited one at a time through memory maps and row blocks, so the
peak memory is one layer's Gram matrix plus one block. Parallel runs ship tasks of
``(path, tensor name, options)`` to any ``concurrent.futures.Executor`` — a process pool
for ``n_jobs > 1``, or a Dask ``Client.get_executor()`` on a cluster — never weights.
Every finished layer can be appended to a JSON-lines file (``resume=``) so that nothing
computed is lost; a rerun skips the layers already there.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import multiprocessing
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rmt._device import resolve_device
from rmt._threads import default_threads, limit_threads
from rmt.errors import CheckpointError
from rmt.io import get_tensor, open_checkpoint
from rmt.layers import COLUMNS, Options, analyze_tensor, phase_params, select

__all__ = ["COLUMNS", "analyze", "summary"]

SUMMARY_COLUMNS = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm",
                   "log_spectral_norm", "stable_rank", "mp_softrank")


def _worker_init(n_threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(n_threads)
    import numba

    numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))


def _task(path: str, layer_id: int, name: str, opts: Options) -> list[dict[str, Any]]:
    """Run in a worker: open the checkpoint itself, read one tensor, return its rows."""
    try:
        tensor = get_tensor(path, name)
    except (CheckpointError, KeyError, OSError) as err:
        return [{"layer_id": layer_id, "name": name, "alpha": np.nan, "status": "failed",
                 "warning": f"unreadable: {err}"}]
    with limit_threads(opts.n_threads):
        return analyze_tensor(layer_id, name, tensor, opts)


def _load_resume(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by an interrupted run: that layer is redone
    return rows


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out


def _frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    if df.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    order = [c for c in COLUMNS if c in df.columns] + [c for c in df.columns if c not in COLUMNS]
    df = df[order].sort_values(["layer_id", "name"], kind="stable").reset_index(drop=True)
    return df.fillna({"warning": ""}).infer_objects()


def analyze(
    source: Any,
    *,
    layers: Any = None,
    min_evals: int = 10,
    max_evals: int | None = None,
    device: str = "auto",
    n_jobs: int = 1,
    executor: concurrent.futures.Executor | None = None,
    progress: bool | None = None,
    resume: str | Path | None = None,
    normalize: bool = True,
    conv: str = "slices",
    candidates: str = "powerlaw",
    n_threads: int | None = None,
    plot_dir: str | Path | None = None,
    **fit_options: Any,
) -> pd.DataFrame:
    """Analyse every 2-D weight and conv kernel of a checkpoint: one row per layer.

    Parameters
    ----------
    source : path, dict of arrays or torch.nn.Module
        Anything :func:`rmt.io.open_checkpoint` reads (safetensors, shards, torch zip,
        .npz, ...). 0-D and 1-D tensors (biases, norms) get no row.
    layers : None, str, or iterable of str/int
        Which tensors: a regex searched in each name, exact names, or layer ids.
    min_evals : int, default 10
        Layers with fewer eigenvalues are ``failed`` ("too few eigenvalues").
    max_evals : int, optional
        Layers with more eigenvalues are ``failed`` ("skipped"); default: none, every
        layer is analysed whatever its size.
    device : {"auto", "cpu", "gpu"}
        Where ESDs and fits run.
    n_jobs : int, default 1
        Worker processes (a process pool; each worker gets cores/n_jobs BLAS and Numba
        threads). Needs a file path source.
    executor : concurrent.futures.Executor, optional
        Run tasks on this executor instead (e.g. ``dask.distributed.Client(...)
        .get_executor()``); workers must see the checkpoint path.
    progress : bool, optional
        tqdm progress bar over layers (default: only when stderr is a terminal).
    resume : path, optional
        JSON-lines file: each finished layer is appended as it completes, and layers
        already in it are not recomputed.
    normalize : bool, default True
        Eigenvalues of X = WᵀW/N (False: WᵀW, WeightWatcher's units).
    conv : {"slices", "flatten"}
        Conv kernel rule (see :func:`rmt.esd`).
    candidates : {"powerlaw", "ww"}
        Power-law fit convention (``"ww"`` reproduces WeightWatcher's ``alpha``).
    n_threads : int, optional
        BLAS/Numba threads per layer (default: all cores, or cores/n_jobs per worker).
    plot_dir : path, optional
        Write one PNG per layer there (ESD + MP fit + spikes | tail + power law, phase in
        the title) and ``summary.png`` for the model (needs matplotlib, the ``plot`` extra).
    **fit_options
        Classifier thresholds (``rmt.phases.DEFAULTS``: fpr, mp_tolerance, ...).

    Returns
    -------
    pandas.DataFrame
        One row per layer (stacked 3-D tensors: one per matrix); columns documented in
        :data:`rmt.analyze.COLUMNS`, sorted by ``layer_id``.
    """
    from tqdm.auto import tqdm

    params = phase_params(fit_options)
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    dev = resolve_device(device)
    if n_threads is None and (n_jobs > 1 or executor is not None):
        n_threads = max(1, default_threads() // n_jobs)
    opts = Options(normalize=normalize, conv=conv, device=dev, min_evals=min_evals,
                   max_evals=max_evals, candidates=candidates, n_threads=n_threads,
                   phase_params=params, plot_dir=None if plot_dir is None else str(plot_dir))
    if plot_dir is not None:
        Path(plot_dir).mkdir(parents=True, exist_ok=True)
    listing = [(i, name, t) for i, (name, t) in enumerate(open_checkpoint(source))]
    chosen = select([name for _, name, _ in listing], layers)
    todo = [(i, name, t) for (i, name, t), keep in zip(listing, chosen, strict=True)
            if keep and t.ndim >= 2]
    resume_path = Path(resume) if resume is not None else None
    done_rows = _load_resume(resume_path) if resume_path else []
    done = {row.get("layer_id") for row in done_rows}
    todo = [item for item in todo if item[0] not in done]
    rows = list(done_rows)
    sink = open(resume_path, "a") if resume_path else None  # closed in the finally below
    bar = tqdm(total=len(todo), disable=(not progress) if progress is not None else None,
               unit="layer", desc="rmt.analyze")

    def collect(new_rows: list[dict[str, Any]]) -> None:
        rows.extend(new_rows)
        if sink:
            for row in new_rows:
                sink.write(json.dumps(_jsonable(row)) + "\n")
            sink.flush()
        bar.update(1)

    try:
        parallel = executor is not None or n_jobs > 1
        path_source = isinstance(source, str | os.PathLike)
        if parallel and not path_source:
            raise ValueError("parallel runs need a checkpoint path (tasks carry paths, "
                             "never weights)")
        if not parallel:
            with limit_threads(n_threads):
                for i, name, tensor in todo:
                    collect(analyze_tensor(i, name, tensor, opts))
        else:
            own = executor is None
            # spawn, not fork: forking after Numba's OpenMP threads started aborts the child
            pool = executor or concurrent.futures.ProcessPoolExecutor(
                n_jobs, mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init, initargs=(n_threads,))
            try:
                futures = [pool.submit(_task, str(source), i, name, opts) for i, name, _ in todo]
                for fut in concurrent.futures.as_completed(futures):
                    collect(fut.result())
            finally:
                if own:
                    pool.shutdown()
    finally:
        bar.close()
        if sink:
            sink.close()
    df = _frame(rows)
    if plot_dir is not None:
        from rmt.plot import plot_model

        plot_model(df, path=Path(plot_dir) / "summary.png")
    return df


def summary(df: pd.DataFrame) -> dict[str, Any]:
    """Model-level summary, like WeightWatcher's ``get_summary``: unweighted means over the
    successful layers of log_norm, alpha, alpha_weighted, log_alpha_norm,
    log_spectral_norm, stable_rank and mp_softrank, plus the layer count per phase."""
    ok = df[df["status"] == "success"] if "status" in df else df
    out: dict[str, Any] = {col: float(ok[col].astype(float).mean()) for col in SUMMARY_COLUMNS
                           if col in ok}
    out["n_layers"] = len(df)
    out["n_failed"] = int((df.get("status") == "failed").sum()) if "status" in df else 0
    if "phase" in ok:
        out["phases"] = {k: int(v) for k, v in ok["phase"].value_counts().items()}
    return out
