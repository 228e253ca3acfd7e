"""``rmt.analyze`` (defined here): a checkpoint in, one row per layer out (pandas DataFrame).

Streaming: tensors are visited one at a time, so the peak memory is one tensor plus its
Gram matrix. ``n_jobs > 1`` runs small layers side by side in threads of this process
(the kernels release the GIL) and big ones alone on every core; ``backend="processes"``
ships chunks of tasks to a spawned process pool instead, and ``executor=`` to any
``concurrent.futures.Executor`` (a Dask ``Client.get_executor()`` on a cluster).
A task carries what its worker needs to read its tensor directly (file, offset or zip
entry, dtype, shape), never the weights, and never a name to look up. Every finished
layer can be appended to a resume file (:mod:`rmt.resume`), so nothing computed is lost;
a rerun of the same checkpoint with the same options skips the layers already there.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import importlib
import multiprocessing
import os
import re
import time
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from rmt import config
from rmt._device import Device, resolve_device
from rmt._threads import (
    limit_this_thread,
    limit_threads,
    numba_threadsafe,
    threads_in_force,
)
from rmt.architecture import annotate
from rmt.columns import ANALYSES, OPTIONS, table_columns
from rmt.errors import AnalysisError
from rmt.heavytail import Candidates
from rmt.io import LazyTensor, open_checkpoint
from rmt.layers import (
    BUILT_IN,
    COLUMNS,
    ConvRule,
    OnError,
    Options,
    analyze_tensor,
    failed_row,
    select,
    with_warning,
)
from rmt.phases import PhaseThresholds, thresholds_from
from rmt.resume import ResumeLog, checkpoint_identity
from rmt.spectra import weight_shape

__all__ = ["COLUMNS", "analyze", "execute", "layer_options", "resume_options", "summary"]

SUMMARY_COLUMNS = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm",
                   "log_spectral_norm", "stable_rank", "mp_softrank")


Task = tuple[int, str, LazyTensor]
Backend = Literal["threads", "processes"]


def _threads_per_worker(n_jobs: int) -> int:
    """The caller's thread budget divided among ``n_jobs`` workers (at least one each)."""
    return max(1, threads_in_force() // n_jobs)


def _worker_init(n_threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(n_threads)
    import numba

    numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]


def _run_chunk(tasks: list[Task], opts: Options, work: Any = None
               ) -> list[tuple[int, str, list[dict[str, Any]]]]:
    """Run in a worker: read each tensor from its own loader, return its rows."""
    work = work or analyze_tensor
    for module in opts.analysis_modules:  # plug-in analyses register when imported
        importlib.import_module(module)
    with limit_threads(opts.n_threads):
        return [(i, name, work(i, name, payload, opts)) for i, name, payload in tasks]


def _frame(rows: Iterable[dict[str, Any]], enabled: Any = ()) -> pd.DataFrame:
    columns = table_columns(enabled)
    df = pd.DataFrame(list(rows))
    if df.empty:
        return pd.DataFrame(columns=columns)
    df = annotate(df)
    for col in columns:
        if col not in df.columns:
            df[col] = np.nan
    order = [c for c in columns if c in df.columns] + [c for c in df.columns if c not in COLUMNS]
    df = df[order].sort_values("layer_id", kind="stable").reset_index(drop=True)
    return df.fillna({"warning": ""}).infer_objects()


def _int_option(value: Any, name: str, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _choice(value: Any, name: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; "
                         f"got {value!r}")


def _worker_processes(executor: Any, n_jobs: int, backend: str) -> bool:
    """Whether tasks go to worker processes (an executor, or ``backend="processes"`` with
    ``n_jobs > 1``) rather than this process; ``backend`` is checked here."""
    _choice(backend, "backend", ("threads", "processes"))
    return executor is not None or (n_jobs > 1 and backend == "processes")


def _validate(layers: Any, min_evals: Any, max_evals: Any, n_jobs: Any, conv: Any,
              candidates: Any, n_threads: Any, on_error: Any, device: Any) -> None:
    """Check every option before the checkpoint is touched (``ValueError`` naming it)."""
    _int_option(min_evals, "min_evals", 0)
    _int_option(max_evals, "max_evals", 0, allow_none=True)
    _int_option(n_jobs, "n_jobs", 1)
    _int_option(n_threads, "n_threads", 1, allow_none=True)
    _choice(conv, "conv", ("slices", "flatten", "per-slice"))
    _choice(candidates, "candidates", ("powerlaw", "ww"))
    _choice(on_error, "on_error", ("record", "raise"))
    _choice(device, "device", ("auto", "cpu", "gpu"))
    if isinstance(layers, str):
        try:
            re.compile(layers)
        except re.error as err:
            raise ValueError(f"layers: {layers!r} is not a valid regular expression "
                             f"({err})") from None
    elif layers is not None and not isinstance(layers, Iterable):
        raise ValueError(f"layers must be None, a regex, or names/ids; got {layers!r}")


def _unique_names(listing: list[tuple[int, str, LazyTensor]]
                  ) -> tuple[list[str], dict[int, str]]:
    """Display names with duplicates disambiguated, and a warning per renamed entry.

    The same name in two files of a directory becomes ``file::name``; the same name twice
    in one file (nested dicts flattening alike) gets ``#2``, ``#3``, ...
    """
    counts = Counter(name for _, name, _ in listing)
    sources: dict[str, set[str]] = {}
    for _, name, tensor in listing:
        if counts[name] > 1:
            sources.setdefault(name, set()).add(tensor.source)
    names, notes = [], {}
    used: Counter[str] = Counter()
    for i, name, tensor in listing:
        if counts[name] == 1:
            names.append(name)
            continue
        shown = f"{Path(tensor.source).name}::{name}" if len(sources[name]) > 1 else name
        used[shown] += 1
        if used[shown] > 1:
            shown = f"{shown}#{used[shown]}"
        names.append(shown)
        notes[i] = (f"tensor name {name!r} occurs {counts[name]} times in the checkpoint "
                    f"(listed as {shown!r})")
    return names, notes


def layer_options(*, min_evals: int = 10, max_evals: int | None = None,
                  device: Device = "auto", normalize: bool = True, conv: ConvRule = "slices",
                  candidates: Candidates = "powerlaw", n_threads: int | None = None,
                  plot_dir: str | Path | None = None, on_error: OnError = "record",
                  thresholds: PhaseThresholds | None = None, randomize: bool = False,
                  tpl: bool = False, uncertainty: bool = False, vectors: bool = False,
                  inverse: bool = False, farms: bool = False, fingers: str | None = None,
                  enable: Iterable[str] = (), rng: int = 0, parallel: bool = False,
                  **fit_options: Any) -> Options:
    """The per-layer options of a run, every one checked (``ValueError`` naming it).

    Parameters
    ----------
    min_evals, max_evals, device, normalize, conv, candidates, n_threads, plot_dir
        As in :func:`analyze`.
    on_error, thresholds, randomize, tpl, uncertainty, vectors, inverse, farms, fingers
        As in :func:`analyze`.
    enable, rng, **fit_options
        As in :func:`analyze`.
    parallel : bool, default False
        Whether worker processes will run the layers (plug-ins must be importable).

    Returns
    -------
    rmt.layers.Options
    """
    _validate(None, min_evals, max_evals, 1, conv, candidates, n_threads, on_error, device)
    _int_option(rng, "rng", 0)
    switches = {"randomize": randomize, "tpl": tpl, "uncertainty": uncertainty,
                "vectors": vectors, "inverse": inverse, "farms": farms}
    for flag, value in switches.items():
        if not isinstance(value, bool | np.bool_):
            raise ValueError(f"{flag} must be True or False, got {value!r}")
    if fingers is not None:
        _choice(fingers, "fingers", ("dk", "clip_xmax"))
    switches["fingers"] = fingers is not None
    if isinstance(enable, str):
        enable = [enable]
    for name in enable:
        if name not in OPTIONS:
            raise ValueError(f"enable: no opt-in analysis {name!r} (known: "
                             f"{', '.join(OPTIONS)})")
        switches[name] = True
    return Options(normalize=normalize, conv="slices" if conv == "per-slice" else conv,
                   per_slice=conv == "per-slice", device=resolve_device(device),
                   min_evals=int(min_evals),
                   max_evals=None if max_evals is None else int(max_evals),
                   candidates=candidates, n_threads=n_threads,
                   thresholds=thresholds_from(thresholds, **fit_options),
                   plot_dir=None if plot_dir is None else str(plot_dir), on_error=on_error,
                   analysis_modules=_plugin_modules(parallel),
                   enabled=frozenset(name for name, on in switches.items() if on),
                   seed=int(rng), fingers=fingers or "dk")


def analyze(
    source: Any,
    *,
    layers: Any = None,
    min_evals: int = 10,
    max_evals: int | None = None,
    device: Device = "auto",
    n_jobs: int = 1,
    backend: Backend = "threads",
    executor: concurrent.futures.Executor | None = None,
    progress: bool | None = None,
    resume: str | Path | None = None,
    restart: bool = False,
    normalize: bool = True,
    conv: ConvRule = "slices",
    candidates: Candidates = "powerlaw",
    n_threads: int | None = None,
    plot_dir: str | Path | None = None,
    on_error: OnError = "record",
    thresholds: PhaseThresholds | None = None,
    randomize: bool = False,
    tpl: bool = False,
    uncertainty: bool = False,
    vectors: bool = False,
    inverse: bool = False,
    farms: bool = False,
    fingers: str | None = None,
    enable: Iterable[str] = (),
    rng: int = 0,
    heads: Any = None,
    base: Any = None,
    k: int = 10,
    epsilon: float = 0.5,
    **fit_options: Any,
) -> pd.DataFrame:
    """Analyse every 2-D weight and conv kernel of a checkpoint: one row per layer.

    Parameters
    ----------
    source : path, dict of arrays or torch.nn.Module
        Anything :func:`rmt.io.open_checkpoint` reads (safetensors, shards, torch zip,
        .npz, ...). 0-D and 1-D tensors (biases, norms) get no row.
    layers : None, str, or iterable of str/int
        Which tensors: a regex searched in each name, exact names, or layer ids. A
        selection that matches nothing gives an empty table and a warning.
    min_evals : int, default 10
        Layers with fewer eigenvalues are ``failed`` ("too few eigenvalues").
    max_evals : int, optional
        Layers with more eigenvalues are ``failed`` ("skipped"); default: none, every
        layer is analysed whatever its size.
    device : {"auto", "cpu", "gpu"}
        Where ESDs and fits run.
    n_jobs : int, default 1
        Layers analysed side by side (``backend``).
    backend : {"threads", "processes"}, default "threads"
        With ``n_jobs > 1``: ``"threads"`` runs layers in ``n_jobs`` threads of this
        process, each on its share of the thread budget, except layers big enough for
        BLAS threads to pay (a priori cost ≥ ``rmt.config.ALONE_SECONDS``), which run one
        at a time on the whole budget — so a big checkpoint still holds one tensor in
        memory at a time. Needs Numba's OpenMP or TBB threading layer (its workqueue
        layer is not thread-safe: layers then run one at a time, with a warning); the
        GPU runs one layer at a time. ``"processes"``: a spawned process pool; needs a
        file path source.
    executor : concurrent.futures.Executor, optional
        Run tasks on this executor instead (e.g. ``dask.distributed.Client(...)
        .get_executor()``); workers must see the checkpoint path.
    progress : bool, optional
        tqdm progress bar over layers (default: only when stderr is a terminal).
    resume : path, optional
        Resume file (:mod:`rmt.resume`): each finished layer is written to it as it
        completes (all rows of a layer at once, flushed to disk), and layers already in
        it are not recomputed. It records the checkpoint's identity and the options; a
        file from another checkpoint, other options or another rmt version raises
        :class:`rmt.resume.ResumeError` instead of mixing results. It is locked for the
        run.
    restart : bool, default False
        Discard a resume file that belongs to another run and start it anew.
    normalize : bool, default True
        Eigenvalues of X = WᵀW/N (False: WᵀW, WeightWatcher's units).
    conv : {"slices", "flatten", "per-slice"}
        Conv kernel rule: :func:`rmt.esd`'s pooled slices or flattened kernel, or one
        row per kh·kw slice (``name[i,j]``; WeightWatcher's ``pool=False``).
    candidates : {"powerlaw", "ww"}
        Power-law fit convention (``"ww"`` reproduces WeightWatcher's ``alpha``).
    n_threads : int, optional
        BLAS/Numba threads per layer. Default: the limits already in force
        (``OMP_NUM_THREADS``, threadpoolctl, ``numba.set_num_threads``), never more;
        with ``n_jobs`` workers, that budget divided among them (and a big layer of
        ``backend="threads"`` gets them all).
    plot_dir : path, optional
        Write one PNG per layer there (ESD + MP fit + spikes | tail + power law, phase in
        the title) and ``summary.png`` for the model (needs matplotlib, the ``plot`` extra).
    on_error : {"record", "raise"}, default "record"
        ``"record"``: a tensor that cannot be read or analysed (any exception) becomes a
        failed row naming the file, the tensor and the problem, and the run carries on.
        ``"raise"``: stop at the first such error (for debugging).
    thresholds : rmt.phases.PhaseThresholds, optional
        The phase classifier's thresholds (default :class:`~rmt.phases.PhaseThresholds`).
    randomize : bool, default False
        Also analyse each layer with its entries shuffled: the randomized ESD, correlation
        traps and distances (:mod:`rmt.randomized`; one more ESD per layer).
    tpl : bool, default False
        Also fit a truncated power law to each tail and name the tail's best distribution
        (:mod:`rmt.tails`: ``tpl_alpha``, ``tpl_lambda``, ``best_fit``).
    uncertainty : bool, default False
        Also give α error bars: a seeded bootstrap interval and the xmin-sensitivity band
        (:mod:`rmt.uncertainty`; 200 refits per layer).
    vectors : bool, default False
        Also compute every eigenvector's localisation (WeightWatcher's 12 ``vectors=True``
        columns: mean and variance over tail and bulk of the vector entropy, localisation
        and participation ratios) and where the largest spike lives (:mod:`rmt.vectors`;
        one eigendecomposition with vectors per layer).
    inverse : bool, default False
        Also fit a power law to the tail of the inverse ESD 1/λ (:mod:`rmt.inverse`:
        ``inv_alpha``, ... ; WeightWatcher's ``inverse=True``), numerical zeros left out.
    farms : bool, default False
        Also estimate α without aspect-ratio bias (:mod:`rmt.farms`, Hu et al. 2025): the
        pooled ESD of up to 100 evenly spaced 100 × 200 submatrices, one batched eigensolve
        per layer (``alpha_farms``, ``alpha_farms_ks``).
    fingers : {None, "dk", "clip_xmax"}, default None
        Test the top of each tail for outlier eigenvalues and fit the power law without
        them (:mod:`rmt.fingers`: ``num_fingers``, ``raw_alpha``, ``finger_p``; ``alpha``
        is then the fit without them). ``"dk"``: the Dragon-King significance test at 1%
        family-wise; ``"clip_xmax"``: WeightWatcher's ``fix_fingers="clip_xmax"`` rule.
    enable : iterable of str, optional
        Opt-in analyses to turn on by name, built-in (the switches above: ``"randomize"``,
        ...) or a plug-in's ``Analysis.option`` (:data:`rmt.columns.OPTIONS` lists them).
    rng : int, default 0
        Seed of every random draw (the shuffles); each layer's generator depends only on
        this seed and the layer's name, so results do not depend on scheduling.
    heads : None, True, int, (int, int), dict or rmt.heads.HeadSpec, optional
        Also analyse every attention head on its own (:mod:`rmt.heads`): each head's
        slice of the q, k, v and o projections (fused qkv too, GQA-aware) as a row
        ``name[h3]``, and each head's bilinear maps W_QK = W_Qᵀ W_K and W_OV = W_O W_V as
        rows of role ``qk`` and ``ov`` (their d nonzero eigenvalues from d × d problems).
        True reads the geometry from ``config.json`` beside the checkpoint; an int is the
        number of heads, a pair (query heads, key/value heads).
    base : path, dict of arrays or torch.nn.Module, optional
        The checkpoint ``source`` was fine-tuned from (for a LoRA adapter: the model it
        adapts). Each layer is then analysed as it is in ``source`` (an adapter's module:
        W + ΔW), in ``base``, and as the update ΔW, with the comparison columns:
        :func:`rmt.compare` (``base, source``), whose table this returns.
    k, epsilon
        With ``base``: top singular vectors compared and the intruder threshold
        (:func:`rmt.compare`).
    **fit_options
        Individual thresholds overriding ``thresholds`` (``fpr=0.05``, ...).

    Returns
    -------
    pandas.DataFrame
        One row per layer (stacked 3-D tensors: one per matrix); columns documented in
        :data:`rmt.COLUMNS`, sorted by ``layer_id``. Tensors whose names occur
        more than once are listed as ``file::name`` or ``name#k`` with a warning; a
        tensor with the same bytes as an earlier one (tied weights) is computed once and
        its row says so.

    Raises
    ------
    ValueError
        A bad option (named), before the checkpoint is opened.
    rmt.errors.CheckpointError
        The checkpoint file itself cannot be read (bad tensors are failed rows instead).
    rmt.resume.ResumeError
        The resume file belongs to another run, or is in use.
    rmt.errors.AnalysisError
        The run stopped part-way (disk full, a worker killed, ``on_error="raise"``); its
        ``table`` holds every finished row.
    """
    from rmt import __version__

    _validate(layers, min_evals, max_evals, n_jobs, conv, candidates, n_threads, on_error,
              device)
    parallel = _worker_processes(executor, n_jobs, backend)
    from rmt.heads import analyze_item, attention_tasks, head_spec

    spec = head_spec(heads, source)
    if base is not None and spec is not None:
        raise ValueError("heads= cannot be used with base= (compare reads whole matrices)")
    if base is not None:
        from rmt.comparison import compare

        if plot_dir is not None:
            raise ValueError("plot_dir cannot be used with base= (analyse either checkpoint "
                             "alone for its layer plots)")
        return compare(base, source, layers=layers, k=k, epsilon=epsilon, progress=progress,
                       n_jobs=n_jobs, backend=backend, executor=executor, resume=resume,
                       restart=restart,
                       min_evals=min_evals, max_evals=max_evals, device=device,
                       normalize=normalize, conv=conv, candidates=candidates,
                       n_threads=n_threads, on_error=on_error, thresholds=thresholds,
                       randomize=randomize, tpl=tpl, uncertainty=uncertainty,
                       vectors=vectors, inverse=inverse, farms=farms, fingers=fingers,
                       enable=enable, rng=rng, **fit_options)
    if parallel and not isinstance(source, str | os.PathLike):
        raise ValueError("worker processes need a checkpoint path (tasks carry file "
                         "offsets, never weights); backend='threads' reads any source")
    if n_threads is None and executor is None and n_jobs > 1:
        n_threads = _threads_per_worker(n_jobs)
    opts = layer_options(
        min_evals=min_evals, max_evals=max_evals, device=device, normalize=normalize,
        conv=conv, candidates=candidates, n_threads=n_threads, plot_dir=plot_dir,
        on_error=on_error, thresholds=thresholds, randomize=randomize, tpl=tpl,
        uncertainty=uncertainty, vectors=vectors, inverse=inverse, farms=farms,
        fingers=fingers, enable=enable, rng=rng, parallel=parallel, **fit_options)
    if plot_dir is not None:
        Path(plot_dir).mkdir(parents=True, exist_ok=True)

    listing = [(i, name, t) for i, (name, t) in enumerate(open_checkpoint(source))]
    names, notes = _unique_names(listing)
    chosen = select(names, layers)
    todo: list[Task] = [(i, shown, t) for (i, _, t), shown, keep
                        in zip(listing, names, chosen, strict=True) if analysed(t, keep)]
    if layers is not None and not any(chosen):
        warnings.warn(f"no layer matched layers={layers!r} ({len(listing)} tensors in the "
                      "checkpoint)", stacklevel=2)
    elif not todo:
        count = f"{len(listing)} tensor{'s' if len(listing) != 1 else ''}"
        warnings.warn(f"no weight tensors in {_label(source)} ({count} listed, none a matrix, "
                      "stack or conv kernel)", stacklevel=2)

    work = None
    if spec is not None:
        todo, work = attention_tasks(todo, spec), analyze_item
    log = None
    if resume is not None:
        options = resume_options(opts, conv, fit_options)
        if spec is not None:
            options["heads"] = spec.as_dict()
        log = ResumeLog(resume, checkpoint_identity(source, exclude=resume), options,
                        __version__, restart)
    rows = execute(todo, opts, log=log, executor=executor, n_jobs=n_jobs, n_threads=n_threads,
                   progress=progress, notes=notes, plot_dir=plot_dir, resume=resume,
                   work=work, backend=backend)
    df = _frame(rows, opts.enabled)
    if plot_dir is not None:
        from rmt.plot import plot_model

        plot_model(df, path=Path(plot_dir) / "summary.png")
    return df


def resume_options(opts: Options, conv: str, fit_options: dict[str, Any]) -> dict[str, Any]:
    """What a resume file records of a run's options (another value: another run).

    Parameters
    ----------
    opts : rmt.layers.Options
        The run's options.
    conv : str
        The conv rule as given (``"per-slice"`` included).
    fit_options : dict
        The threshold overrides given.

    Returns
    -------
    dict
    """
    options: dict[str, Any] = {"normalize": bool(opts.normalize), "conv": conv,
                               "candidates": opts.candidates, "min_evals": int(opts.min_evals),
                               "max_evals": opts.max_evals,
                               "phase_params": {k: float(v) for k, v in sorted(
                                   {**opts.thresholds.overrides(), **fit_options}.items())}}
    options["analyses"] = [name for name, a in ANALYSES.items() if a.enabled(opts)]
    options["seed"] = int(opts.seed)  # other analyses, other columns, other draws: another run
    if "fingers" in opts.enabled:
        options["fingers"] = opts.fingers
    return options


def execute(todo: list[tuple[int, str, Any]], opts: Options, *, log: Any = None,
            executor: concurrent.futures.Executor | None = None, n_jobs: int = 1,
            n_threads: int | None = None, progress: bool | None = None,
            notes: dict[int, str] | None = None, plot_dir: Any = None,
            resume: Any = None, work: Any = None, desc: str = "rmt.analyze",
            frame: Any = None, backend: str = "threads") -> list[dict[str, Any]]:
    """Run tasks serially or on workers; every finished task's rows to the resume log.

    Parameters
    ----------
    todo : list of (int, str, payload)
        (layer id, row name, what ``work`` reads: a LazyTensor for ``analyze``).
    opts : rmt.layers.Options
        The run's options.
    log : rmt.resume.ResumeLog or an object with its done, append and close, optional
        Rows already there are not recomputed; new ones are appended.
    executor, n_jobs, n_threads, progress, plot_dir, resume, backend
        As in :func:`analyze`.
    notes : dict, optional
        Layer id -> a warning added to its rows.
    work : callable, optional
        ``work(layer_id, name, payload, opts) -> rows`` (picklable for workers); default
        :func:`rmt.layers.analyze_tensor` (looked up when called, in each process).
    desc : str
        Progress-bar label.
    frame : callable, optional
        ``frame(rows, enabled) -> DataFrame`` for the partial table of an
        :class:`~rmt.errors.AnalysisError`; default ``analyze``'s.

    Returns
    -------
    list of dict
        The rows, in completion order.
    """
    from tqdm.auto import tqdm

    frame = frame or _frame
    notes = notes or {}
    parallel = _worker_processes(executor, n_jobs, backend)
    threads = not parallel and n_jobs > 1
    rows, pending, aliases = _plan(todo, log)

    results: dict[int, list[dict[str, Any]]] = {}
    bar = tqdm(total=len(pending) + len(aliases),
               disable=(not progress) if progress is not None else None,
               unit="layer", desc=desc)

    def collect(i: int, shown: str, new_rows: list[dict[str, Any]]) -> None:
        if i in notes:
            new_rows = [with_warning(r, notes[i]) for r in new_rows]
        results[i] = new_rows
        rows.extend(new_rows)
        unread = all(str(r.get("warning", "")).startswith("unreadable") for r in new_rows)
        if log is not None and not unread:  # reading may work next time: not recorded
            log.append(i, shown, new_rows)
        bar.update(1)

    try:
        with _figures(plot_dir):
            if parallel:
                _run_parallel(pending, opts, executor, n_jobs, n_threads, collect, work)
            elif threads:
                _run_threads(pending, opts, n_jobs, n_threads, collect, work)
            else:
                with limit_threads(n_threads):
                    for i, shown, payload in pending:
                        collect(i, shown, (work or analyze_tensor)(i, shown, payload, opts))
        for (i, shown, _), (j, first, _) in aliases:
            # the original's rows: computed in this run, or read from the resume file
            original = results.get(j) or (log.done.get((j, first), []) if log else [])
            copied = [_alias_row(r, i, shown, first) for r in original]
            collect(i, shown, copied or [failed_row(
                {"layer_id": i, "name": shown}, f"same data as {first!r}, which has no row")])
    except KeyboardInterrupt as err:
        err.table = frame(rows, opts.enabled)  # type: ignore[attr-defined]  # the CLI prints it
        raise
    except Exception as err:
        raise AnalysisError(f"analysis stopped after {len(results)} of {len(pending)} layers "
                            f"({type(err).__name__}: {err}); finished rows are in .table"
                            + (f" and in {resume}" if resume is not None else ""),
                            frame(rows, opts.enabled)) from err
    finally:
        bar.close()
        if log is not None:
            log.close()
    return rows


def _plan(todo: list[Task], log: Any
          ) -> tuple[list[dict[str, Any]], list[Task], list[tuple[Task, Task]]]:
    """Split the selected tasks: rows already in the resume file, tasks to run, and
    aliases (a tensor whose bytes an earlier task reads: tied weights) with their
    original."""
    rows: list[dict[str, Any]] = []
    first_of: dict[Any, Task] = {}
    aliases: list[tuple[Task, Task]] = []
    pending: list[Task] = []
    for task in todo:
        i, shown, tensor = task
        if log is not None and (i, shown) in log.done:
            rows.extend(log.done[(i, shown)])
            continue
        key = tensor.data_key
        if key is not None and key in first_of:
            aliases.append((task, first_of[key]))
            continue
        if key is not None:
            first_of[key] = task
        pending.append(task)
    return rows, pending, aliases


def _alias_row(row: dict[str, Any], i: int, shown: str, first: str) -> dict[str, Any]:
    suffix = row["name"][len(first):] if str(row.get("name", "")).startswith(first) else ""
    copied = {**row, "layer_id": i, "name": shown + suffix}
    return with_warning(copied, f"same data as {first!r} (tied weights): computed once")


def _chunks(tasks: list[Task], n_workers: int) -> list[list[Task]]:
    """Tasks grouped so that each chunk holds about an equal share of the bytes (at most
    :data:`config.CHUNK_TASKS` tasks): many tiny tensors travel together, a big one alone."""
    total = sum(t.nbytes for _, _, t in tasks) or 1
    target = total / max(1, 4 * n_workers)
    chunks: list[list[Task]] = [[]]
    size = 0
    for task in tasks:
        if chunks[-1] and (size >= target or len(chunks[-1]) >= config.CHUNK_TASKS):
            chunks.append([])
            size = 0
        chunks[-1].append(task)
        size += task[2].nbytes
    return [c for c in chunks if c]


def _warm_up() -> bool:
    """Run in a new worker: import the analysis and load its compiled kernels."""
    analyze_tensor(0, "warm-up", _WARM_UP, Options(min_evals=2))
    return True


_WARM_UP = LazyTensor("warm-up", (16, 8), np.dtype(np.float64), "<warm-up>",
                      lambda: np.random.default_rng(0).standard_normal((16, 8)))


def _run_parallel(pending: list[Task], opts: Options,
                  executor: concurrent.futures.Executor | None, n_jobs: int,
                  n_threads: int | None, collect: Any, work: Any = None) -> None:
    queue = collections.deque(_chunks(pending, n_jobs))
    own = executor is None
    if own:
        # A spawned worker needs seconds to import and load its kernels. This process
        # starts on the queue itself and creates the pool only when what is left would
        # take longer than that, then keeps working until the first worker is ready: a
        # parallel run costs no more than a serial one.
        _work_until_a_pool_pays(queue, opts, collect, n_jobs, work)
        if not queue:
            return
    # spawn, not fork: forking after Numba's OpenMP threads started aborts the child
    pool = executor or concurrent.futures.ProcessPoolExecutor(
        n_jobs, mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init, initargs=(n_threads or 1,))
    try:
        if own:
            warming = {pool.submit(_warm_up) for _ in range(n_jobs)}
            _work_while_starting(queue, warming, opts, collect, work)
            if not queue:
                return
        limit = max(2, config.IN_FLIGHT_PER_WORKER * n_jobs)
        running = {pool.submit(_run_chunk, queue.popleft(), opts, work)
                   for _ in range(min(limit, len(queue)))}
        while running:
            done, running = concurrent.futures.wait(
                running, return_when=concurrent.futures.FIRST_COMPLETED)
            # finished chunks first: a failed one (a killed worker) must not lose them
            for fut in sorted(done, key=lambda f: f.exception() is not None):
                for i, shown, new_rows in fut.result():
                    collect(i, shown, new_rows)
                if queue:
                    running.add(pool.submit(_run_chunk, queue.popleft(), opts, work))
    finally:
        if own and isinstance(pool, concurrent.futures.ProcessPoolExecutor):
            _stop(pool)


def _run_threads(pending: list[Task], opts: Options, n_jobs: int, n_threads: int | None,
                 collect: Any, work: Any = None) -> None:
    """Layers side by side in ``n_jobs`` threads of this process, each on ``n_threads``
    BLAS/Numba threads; a layer whose a-priori cost (:func:`_cost`) reaches
    ``config.ALONE_SECONDS`` first, alone, on all of them.

    The kernels release the GIL (Numba ``nogil``; ``syrk`` and ``syevd`` through
    :mod:`rmt.kernels._lapack`), so small layers — whose BLAS calls are too short for
    threads inside one call to pay — gain from running together; big ones gain as much
    from threads inside BLAS and keep the memory of one tensor at a time. BLAS's thread
    count is one setting for the whole process, so the two kinds never run at once. Rows
    reach ``collect`` in this thread, in completion order.
    """
    import numba

    work = work or analyze_tensor
    per = n_threads or _threads_per_worker(n_jobs)
    everything = per * n_jobs
    by_cost = sorted(((_cost(t[2]), k, t) for k, t in enumerate(pending)), reverse=True)
    big = [t for cost, _, t in by_cost if cost >= config.ALONE_SECONDS]
    small = [t for cost, _, t in by_cost if cost < config.ALONE_SECONDS]  # the longest first
    if small and (opts.device == "gpu" or not numba_threadsafe()):
        if opts.device != "gpu":
            warnings.warn(f"n_jobs={n_jobs}: Numba's {numba.threading_layer()!r} threading "
                          "layer is not thread-safe (install an OpenMP runtime or tbb, or "
                          "use backend='processes'): layers run one at a time", stacklevel=4)
        big, small = big + small, []
    alone = dataclasses.replace(opts, n_threads=everything)
    with limit_threads(everything):
        for i, shown, tensor in big:
            collect(i, shown, work(i, shown, tensor, alone))
    if not small:
        return

    def run(task: Task) -> tuple[int, str, list[dict[str, Any]]]:
        i, shown, tensor = task
        with limit_this_thread(per):  # Numba's and OpenMP's counts are per thread
            return i, shown, work(i, shown, tensor, opts)

    with limit_threads(per):
        pool = concurrent.futures.ThreadPoolExecutor(n_jobs, thread_name_prefix="rmt-layer")
        try:
            futures = [pool.submit(run, task) for task in small]
            for fut in concurrent.futures.as_completed(futures):
                collect(*fut.result())
        finally:
            # on an error or an interrupt, layers not started are dropped; running ones
            # finish in the background (a thread cannot be stopped)
            pool.shutdown(wait=False, cancel_futures=True)


def _plugin_modules(parallel: bool) -> tuple[str, ...]:
    """Modules of registered plug-in analyses, which worker processes must import."""
    modules = tuple(dict.fromkeys(a.module for name, a in ANALYSES.items()
                                  if name not in BUILT_IN))
    if parallel and "__main__" in modules:
        raise ValueError("a plug-in analysis registered in __main__ cannot run in worker "
                         "processes: register it in an importable module (or use "
                         "backend='threads')")
    return modules


def _figures(plot_dir: Any) -> Any:
    """Background drawing of layer figures when plots are asked for (rmt.plot)."""
    if plot_dir is None:
        return contextlib.nullcontext()
    from rmt.plot import BackgroundPlots

    return BackgroundPlots()


def _label(source: Any) -> str:
    return str(source) if isinstance(source, str | Path) else type(source).__name__


def analysed(tensor: LazyTensor, selected: bool = True) -> bool:
    """Whether a listed tensor gets a row: a selected weight (2-D or more, not a bias), a
    selected entry that could not even be listed, or a whole unreadable file."""
    return (selected and ((tensor.ndim >= 2 and _is_weight(tensor))
                          or (bool(tensor.error) and not tensor.ndim))) \
        or tensor.stands_for_file


def _is_weight(tensor: LazyTensor) -> bool:
    """Not known to be a bias or other non-matrix (see :class:`rmt.io.layout.Layout`)."""
    return tensor.layout is None or tensor.layout.is_weight


def _cost(tensor: LazyTensor) -> float:
    """A priori seconds for one tensor on one core: a fixed millisecond of fits plus the
    Gram matrix and eigensolve at ~50 GFLOP/s (a 4096×4096 layer: ~5.5 s)."""
    try:
        shape = weight_shape(tensor.shape)
    except (ValueError, TypeError, AttributeError):
        return 1e-3
    return 1e-3 + shape.n_slices * (shape.N * shape.M**2 + 4 * shape.M**3) / 5e10


def _work_until_a_pool_pays(queue: collections.deque, opts: Options, collect: Any,
                            n_jobs: int, work: Any = None) -> None:
    """Run tasks here while the rest would finish before a pool could start.

    The a-priori costs (:func:`_cost`) are rescaled by the time the tasks done here took,
    so the estimate of what is left follows this machine and its load.
    """
    costs = {id(t): _cost(t[2]) for chunk in queue for t in chunk}
    left = sum(costs.values())
    scale = 1.0
    start, spent = time.perf_counter(), 0.0
    opts = dataclasses.replace(opts, n_threads=None)  # no workers yet: the whole budget
    with limit_threads(None):
        while queue:
            elapsed = time.perf_counter() - start
            if spent > 0 and elapsed > 0.1:
                scale = elapsed / spent
            if left * scale * (1 - 1 / n_jobs) > config.POOL_STARTUP_SECONDS:
                return
            task = _next_task(queue)
            i, shown, tensor = task
            collect(i, shown, (work or analyze_tensor)(i, shown, tensor, opts))
            spent += costs[id(task)]
            left -= costs[id(task)]


def _next_task(queue: collections.deque) -> Task:
    """The first task of the first chunk; the rest of that chunk stays at the front."""
    chunk = queue.popleft()
    task = chunk.pop(0)
    if chunk:
        queue.appendleft(chunk)
    return task


def _stop(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Shut the pool down without waiting for workers still starting up.

    The workers are taken before ``shutdown``, which forgets them (``_processes = None``
    on Python < 3.14): terminated afterwards, none is left behind to block the
    interpreter's exit (it joins every pool's workers).
    """
    stop = getattr(pool, "terminate_workers", None)  # Python >= 3.14: shuts down too
    if stop is not None:
        stop()
        return
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=5)


def _work_while_starting(queue: collections.deque, warming: set, opts: Options,
                         collect: Any, work: Any = None) -> None:
    """Run queued tasks here, one at a time, until a worker is ready. A worker that failed
    to start raises here (BrokenProcessPool), as a task would."""
    with limit_threads(opts.n_threads):
        while queue and not any(f.done() for f in warming):
            i, shown, tensor = _next_task(queue)
            collect(i, shown, (work or analyze_tensor)(i, shown, tensor, opts))
    for fut in warming:
        if fut.done():
            fut.result()


def summary(df: pd.DataFrame, *, ww: bool = False) -> dict[str, Any]:
    """Model-level summary: means over layers of log_norm, alpha, alpha_weighted,
    log_alpha_norm, log_spectral_norm, stable_rank and mp_softrank.

    Parameters
    ----------
    df : pandas.DataFrame
        A table from :func:`analyze`.
    ww : bool, default False
        Reproduce WeightWatcher 0.7.7's ``get_summary`` exactly: the plain mean of each
        column over every row of ``df`` (pandas skips NaN; given WeightWatcher's own
        table, its α = −1 rows for failed fits count, as they do there), nothing else.

    Returns
    -------
    dict
        Default: the means over the successful rows (a failed or missing fit is left
        out, never counted as −1), ``weighted`` — the same means weighted by each row's
        parameter count N·M·num_slices —, ``n_layers``, ``n_failed`` and ``phases``
        (layers per phase). With ``ww=True``: the means only.
    """
    if ww:
        return {col: float(df[col].mean()) for col in SUMMARY_COLUMNS if col in df}
    ok = df[df["status"] == "success"] if "status" in df else df
    out: dict[str, Any] = {col: float(ok[col].astype(float).mean()) for col in SUMMARY_COLUMNS
                           if col in ok}
    if {"N", "M", "num_slices"} <= set(ok.columns):
        size = (ok["N"] * ok["M"] * ok["num_slices"]).astype(float)
        out["weighted"] = {col: _weighted_mean(ok[col].astype(float), size)
                           for col in SUMMARY_COLUMNS if col in ok}
    out["n_layers"] = len(df)
    out["n_failed"] = int((df.get("status") == "failed").sum()) if "status" in df else 0
    if "phase" in ok:
        out["phases"] = {k: int(v) for k, v in ok["phase"].value_counts().items()}
    return out


def _weighted_mean(values: pd.Series, weights: pd.Series) -> float:
    keep = np.isfinite(values) & np.isfinite(weights)
    total = float(weights[keep].sum())
    return float((values[keep] * weights[keep]).sum() / total) if total > 0 else float("nan")
