"""``rmt.track``: many checkpoints of one training run, one long table; ``track_summary``:
per layer the trends, alarms and change points over training.

``track`` analyses every checkpoint as ``rmt.analyze`` does, in one schedule over all
(checkpoint, tensor) pairs, so workers stay busy across checkpoint boundaries; each row
gets the checkpoint's path and training step. With ``resume=DIR`` every checkpoint has its
own resume file in DIR (named after the checkpoint), so an interrupted survey restarts
where it stopped and a checkpoint added later is analysed alone.

Steps come from the names (:func:`parse_step`) or are given. ``track_summary`` reads the
long table layer by layer, ordered by step:

* trends: the Theil–Sen slope of α against the step (``scipy.stats.theilslopes``) with
  Kendall's τ test (``scipy.stats.kendalltau``), robust to a few bad fits;
* alarms, each with the first step at which it fires: α below 2 (over-training / the
  "anti-grokking" signal of Prakash & Martin 2025, where layers keep fitting and α drops
  below the heavy-tailed range), a change of phase, correlation traps appearing (needs
  ``randomize=True``), and the ERG gap changing sign (SETOL's ideal-learning condition
  ERG_gap = 0 crossed);
* change points of α(step), where its level or its trend changes
  (:func:`change_points`: PELT on a piecewise-linear model, Bonferroni-type penalty).
"""

from __future__ import annotations

import concurrent.futures
import glob
import hashlib
import inspect
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

from rmt.errors import CheckpointError
from rmt.io import LazyTensor, open_checkpoint
from rmt.layers import Options, analyze_tensor, failed_row, select

__all__ = ["STEP_PATTERN", "TRACK_COLUMNS", "change_points", "parse_step", "track",
           "track_summary"]

#: A training step in a checkpoint's path: the last ``step``, ``global_step``,
#: ``checkpoint``, ``ckpt``, ``iter``/``iteration`` or ``epoch`` followed by digits (``-``,
#: ``_``, ``=`` or nothing between), in any component of the path.
STEP_PATTERN = re.compile(r"(?i)(?:global_step|step|checkpoint|ckpt|iteration|iter|epoch)"
                          r"[-_=]?(\d+)")

#: Columns ``track`` adds in front of ``rmt.analyze``'s.
TRACK_COLUMNS = {"checkpoint": "the checkpoint's path (or its position, for in-memory ones)",
                 "step": "its training step (parsed from the path, or given)"}

# global task id = checkpoint index * _SPAN + layer id (layer ids are positions in a file)
_SPAN = 1 << 32


def parse_step(path: str | os.PathLike) -> int:
    """The training step in a checkpoint's path (see :data:`STEP_PATTERN`).

    Parameters
    ----------
    path : path
        ``runs/a/checkpoint-500``, ``ckpt/step_1000.safetensors``, ``epoch=3.ckpt``, ...

    Returns
    -------
    int

    Raises
    ------
    ValueError
        No step in the path (pass ``steps=`` to :func:`track`).
    """
    found = STEP_PATTERN.findall(str(path))
    if found:
        return int(found[-1])
    digits = re.findall(r"\d+", Path(path).stem)
    if digits:
        return int(digits[-1])
    raise ValueError(f"no training step in {str(path)!r} (names like step-1000, "
                     "checkpoint-500, epoch=3; or pass steps=)")


def _sources(sources: Any) -> list[Any]:
    if isinstance(sources, str | os.PathLike):
        text = str(sources)
        if any(ch in text for ch in "*?["):
            found = sorted(glob.glob(text))
            if not found:
                raise ValueError(f"no checkpoint matches {text!r}")
            return found
        return [text]
    out = list(sources)
    if not out:
        raise ValueError("no checkpoints given")
    return out


@dataclass(frozen=True)
class _Tagged:
    """One task of ``track``: a tensor, its own layer id, and where it comes from."""

    tensor: LazyTensor
    layer_id: int
    checkpoint: str
    step: int

    @property
    def nbytes(self) -> int:
        return self.tensor.nbytes

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    @property
    def data_key(self) -> Any:
        return self.tensor.data_key

    @property
    def ndim(self) -> int:
        return self.tensor.ndim


def _track_tensor(task_id: int, name: str, tagged: _Tagged, opts: Options
                  ) -> list[dict[str, Any]]:
    rows = analyze_tensor(tagged.layer_id, name, tagged.tensor, opts)
    return [{"checkpoint": tagged.checkpoint, "step": tagged.step, **row} for row in rows]


class _Logs:
    """One resume file per checkpoint behind the single log ``execute`` writes to."""

    def __init__(self, logs: dict[int, Any]) -> None:
        self.logs = logs
        self.done = {(k * _SPAN + i, shown): rows for k, log in logs.items()
                     for (i, shown), rows in log.done.items()}

    def append(self, task_id: int, shown: str, rows: list[dict[str, Any]]) -> None:
        self.logs[task_id // _SPAN].append(task_id % _SPAN, shown, rows)

    def close(self) -> None:
        for log in self.logs.values():
            log.close()


def _resume_file(directory: Path, source: str) -> Path:
    digest = hashlib.sha256(str(Path(source).resolve()).encode()).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9._=-]+", "_", Path(source).name)[:80] or "checkpoint"
    return directory / f"{stem}-{digest}.jsonl"


def track(sources: Any, *, steps: Iterable[int] | None = None, layers: Any = None,
          progress: bool | None = None, n_jobs: int = 1, backend: str = "threads",
          executor: concurrent.futures.Executor | None = None, resume: Any = None,
          restart: bool = False, **analyze_options: Any) -> pd.DataFrame:
    """Analyse every checkpoint of a training run: one row per checkpoint × layer.

    Parameters
    ----------
    sources : glob string, path, or list of paths / dicts of arrays
        The checkpoints (a glob is expanded and sorted).
    steps : iterable of int, optional
        Their training steps, in the order of ``sources``; default: parsed from the paths
        (:func:`parse_step`).
    layers : None, str, or iterable of str/int
        Which tensors, as in :func:`rmt.analyze`.
    progress : bool, optional
        tqdm progress bar over all (checkpoint, layer) tasks.
    n_jobs : int, default 1
        Tasks run side by side (``backend``).
    backend : {"threads", "processes"}, default "threads"
        As in :func:`rmt.analyze`; worker processes need path sources.
    executor : concurrent.futures.Executor, optional
        Run the tasks there (a Dask ``Client.get_executor()``).
    resume : path of a directory, optional
        One resume file per checkpoint in this directory (created if needed): finished
        layers are not recomputed, whatever the order of ``sources``.
    restart : bool, default False
        Start a resume file that belongs to another run anew.
    **analyze_options
        As in :func:`rmt.analyze` (``randomize=True`` gives the traps alarms).

    Returns
    -------
    pandas.DataFrame
        ``checkpoint``, ``step``, then ``rmt.analyze``'s columns; sorted by step and
        layer. A checkpoint that cannot be opened gets one failed row saying why.

    Raises
    ------
    ValueError
        A bad option, no checkpoints, a step that cannot be parsed, or duplicate steps.
    rmt.errors.AnalysisError
        The run stopped part-way; its ``table`` holds every finished row.
    """
    from rmt import __version__
    from rmt.resume import ResumeLog, checkpoint_identity
    from rmt.runner import (
        _threads_per_worker,
        _unique_names,
        _worker_processes,
        analysed,
        execute,
        layer_options,
        resume_options,
    )

    if "plot_dir" in analyze_options:
        raise ValueError("track draws its own figures (rmt.plot.plot_trajectory); per-layer "
                         "plots: rmt.analyze(checkpoint, plot_dir=...)")
    items = _sources(sources)
    if steps is None:
        step_of = [parse_step(s) if isinstance(s, str | os.PathLike) else i
                   for i, s in enumerate(items)]
    else:
        step_of = [int(s) for s in steps]
        if len(step_of) != len(items):
            raise ValueError(f"{len(step_of)} steps for {len(items)} checkpoints")
    if len(set(step_of)) != len(step_of):
        dup = sorted({s for s in step_of if step_of.count(s) > 1})
        raise ValueError(f"several checkpoints at step(s) {dup[:5]}: give steps= or one "
                         "checkpoint per step")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise ValueError(f"n_jobs must be an integer >= 1, got {n_jobs!r}")
    parallel = _worker_processes(executor, n_jobs, backend)
    if parallel and not all(isinstance(s, str | os.PathLike) for s in items):
        raise ValueError("worker processes need checkpoint paths (tasks carry file "
                         "offsets, never weights); backend='threads' reads any source")
    if executor is None and n_jobs > 1 and analyze_options.get("n_threads") is None:
        analyze_options = {**analyze_options, "n_threads": _threads_per_worker(n_jobs)}
    opts = layer_options(parallel=parallel, **analyze_options)
    conv = analyze_options.get("conv", "slices")
    fit_options = {key: value for key, value in analyze_options.items()
                   if key not in inspect.signature(layer_options).parameters}
    labels = [str(s) if isinstance(s, str | os.PathLike) else f"<checkpoint {i}>"
              for i, s in enumerate(items)]

    todo: list[tuple[int, str, Any]] = []
    notes: dict[int, str] = {}
    broken: list[dict[str, Any]] = []
    logs: dict[int, Any] = {}
    if resume is not None:
        Path(resume).mkdir(parents=True, exist_ok=True)
    for k, (source, label, step) in enumerate(zip(items, labels, step_of, strict=True)):
        try:
            listing = [(i, name, t) for i, (name, t) in enumerate(open_checkpoint(source))]
        except (CheckpointError, OSError) as err:
            broken.append(failed_row({"checkpoint": label, "step": step, "layer_id": -1,
                                      "name": ""}, f"unreadable checkpoint: {err}"))
            continue
        names, file_notes = _unique_names(listing)
        chosen = select(names, layers)
        for (i, _, t), shown, keep in zip(listing, names, chosen, strict=True):
            if analysed(t, keep):
                todo.append((k * _SPAN + i, shown, _Tagged(t, i, label, step)))
        notes.update({k * _SPAN + i: note for i, note in file_notes.items()})
        if resume is not None:
            logs[k] = ResumeLog(_resume_file(Path(resume), label),
                                checkpoint_identity(source),
                                resume_options(opts, conv, fit_options), __version__,
                                restart)
    log = _Logs(logs) if logs else None
    rows = execute(todo, opts, log=log, executor=executor, n_jobs=n_jobs, backend=backend,
                   n_threads=opts.n_threads, progress=progress, notes=notes, resume=resume,
                   work=_track_tensor, desc="rmt.track", frame=_track_frame)
    return _track_frame(rows + broken, opts.enabled)


def _track_frame_order(df: pd.DataFrame) -> pd.DataFrame:
    lead = [c for c in TRACK_COLUMNS if c in df.columns]
    df = df[lead + [c for c in df.columns if c not in lead]]
    if df.empty:
        return df
    return df.sort_values(["step", "layer_id"], kind="stable").reset_index(drop=True)


def _track_frame(rows: list[dict[str, Any]], enabled: Any) -> pd.DataFrame:
    from rmt.runner import _frame

    # an alias row (tied weights) carries the global task id; -1 marks an unreadable file
    fixed = [{**r, "layer_id": int(r.get("layer_id", 0)) % _SPAN
              if int(r.get("layer_id", 0)) >= 0 else -1} for r in rows]
    return _track_frame_order(_frame(fixed, enabled))


def change_points(values: Any, steps: Any = None, *, alpha: float = 0.01,
                  min_size: int = 3) -> list[int]:
    """Where a series changes its level or its trend: PELT on a piecewise-linear model.

    PELT (Killick, Fearnhead & Eckley 2012, ``ruptures``) with the least-squares cost of a
    line per segment (``ruptures`` model ``"linear"`` on [1, step]), so a steady drift is
    one segment and a jump or a kink starts a new one. The penalty of one more segment is
    σ̂²·χ²₃(1 − alpha/n): three more parameters (level, slope, position), Bonferroni over
    the n positions, σ̂ the noise level from second differences (MAD/0.6745/√6, blind to
    a linear trend). On white noise, straight lines, one jump and one kink (n = 30, tests)
    it finds 0, 0, 1 and 1 change points in at least 26 of 30 seeds each.

    Parameters
    ----------
    values : array_like
        The series (entries that are not finite are dropped with their steps).
    steps : array_like, optional
        Where each value was taken (default 0, 1, 2, ...).
    alpha : float, default 0.01
        False-alarm level per series, in the Bonferroni sense.
    min_size : int, default 3
        Shortest segment (a line needs more than two points to be tested).

    Returns
    -------
    list of int
        Indices into the finite values where a new segment starts.
    """
    import ruptures

    x = np.asarray(values, dtype=float)
    t = np.arange(len(x), dtype=float) if steps is None else np.asarray(steps, dtype=float)
    keep = np.isfinite(x) & np.isfinite(t)
    x, t = x[keep], t[keep]
    n = len(x)
    if n < 2 * min_size:
        return []
    d = np.diff(x, 2)
    sigma = float(np.median(np.abs(d - np.median(d))) / 0.6745 / math.sqrt(6))
    scale = float(np.ptp(t)) or 1.0
    penalty = max(sigma ** 2 * float(scipy.stats.chi2.ppf(1 - alpha / n, 3)),
                  1e-12 * (1 + float(np.var(x))))
    signal = np.column_stack([x, np.ones(n), (t - t[0]) / scale])
    bkps = ruptures.Pelt(model="linear", min_size=min_size, jump=1).fit(signal).predict(
        pen=penalty)
    return [int(b) for b in bkps[:-1]]


def _first(steps: np.ndarray, fired: np.ndarray) -> float:
    idx = np.flatnonzero(fired)
    return float(steps[idx[0]]) if idx.size else float("nan")


def _sign_flips(x: np.ndarray) -> np.ndarray:
    """Where x takes the opposite sign of its last nonzero value (zeros pass through)."""
    flips = np.zeros(len(x), bool)
    last = 0.0
    for i, v in enumerate(np.sign(x)):
        if v != 0 and np.isfinite(v):
            flips[i] = last != 0 and v != last
            last = v
    return flips


def _layer_summary(g: pd.DataFrame) -> dict[str, Any]:
    g = g.sort_values("step")
    ok = g[g["status"] == "success"]
    steps = ok["step"].to_numpy(dtype=float)
    alpha = ok["alpha"].to_numpy(dtype=float)
    out: dict[str, Any] = {"n_checkpoints": len(g), "n_failed": int(len(g) - len(ok)),
                           "first_step": float(g["step"].min()),
                           "last_step": float(g["step"].max())}
    fin = np.isfinite(alpha)
    a, s = alpha[fin], steps[fin]
    out.update(alpha_first=float(a[0]) if a.size else float("nan"),
               alpha_last=float(a[-1]) if a.size else float("nan"),
               alpha_min=float(a.min()) if a.size else float("nan"))
    if a.size >= 3 and np.ptp(s) > 0:
        out["alpha_slope"] = float(scipy.stats.theilslopes(a, s)[0])
        tau = scipy.stats.kendalltau(s, a)
        out["alpha_tau"] = float(tau.statistic)
        out["alpha_trend_p"] = float(tau.pvalue)
    else:
        out.update(alpha_slope=float("nan"), alpha_tau=float("nan"),
                   alpha_trend_p=float("nan"))
    out["alpha_below_2_step"] = _first(s, a < 2)
    phases = ok["phase"].astype(str).to_numpy() if "phase" in ok else np.array([])
    out["phase_first"] = phases[0] if phases.size else ""
    out["phase_last"] = phases[-1] if phases.size else ""
    changed = np.r_[False, phases[1:] != phases[:-1]] if phases.size else np.array([], bool)
    out["phase_changes"] = int(changed.sum())
    out["phase_change_step"] = _first(steps, changed)
    if "num_traps" in ok and ok["num_traps"].notna().any():
        traps = ok["num_traps"].to_numpy(dtype=float)
        appear = np.r_[traps[:1] > 0, (traps[1:] > 0) & (traps[:-1] == 0)]
        out["traps_step"] = _first(steps, appear & np.isfinite(traps))
        out["traps_last"] = float(traps[-1])
    else:
        out["traps_step"] = out["traps_last"] = float("nan")
    gap = ok["ERG_gap"].to_numpy(dtype=float) if "ERG_gap" in ok else np.full(len(ok), np.nan)
    flips = _sign_flips(gap)
    out.update(erg_gap_first=float(gap[0]) if gap.size else float("nan"),
               erg_gap_last=float(gap[-1]) if gap.size else float("nan"),
               erg_gap_sign_change_step=_first(steps, flips))
    out["alpha_change_points"] = tuple(float(s[i]) for i in change_points(a, s))
    alarms = [label for label, key in (("alpha<2", "alpha_below_2_step"),
                                       ("phase change", "phase_change_step"),
                                       ("traps", "traps_step"),
                                       ("ERG gap sign", "erg_gap_sign_change_step"))
              if np.isfinite(out[key])]
    out["alarms"] = ", ".join(alarms)
    return out


def track_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per layer of a :func:`track` table: trends, alarms (with their first step) and
    change points of α over training.

    Parameters
    ----------
    df : pandas.DataFrame
        From :func:`track` (``step``, ``name``, ``status``, ``alpha``, ``phase``,
        ``ERG_gap``; ``num_traps`` with ``randomize=True``).

    Returns
    -------
    pandas.DataFrame
        One row per layer name, in the order the layers first appear: ``n_checkpoints``,
        ``alpha_first``/``_last``/``_min``, ``alpha_slope`` (Theil–Sen, per step),
        ``alpha_tau`` and ``alpha_trend_p`` (Kendall), ``alpha_below_2_step``,
        ``phase_first``/``_last``/``_changes``/``_change_step``, ``traps_step``,
        ``erg_gap_first``/``_last``/``_sign_change_step``, ``alpha_change_points`` (the
        steps where a new segment of α starts) and ``alarms`` (those that fired).
        Alarm steps are NaN where the alarm never fires.
    """
    if df.empty:
        return pd.DataFrame(columns=["name"])
    named = df[df["name"].astype(str) != ""]
    order = list(dict.fromkeys(named["name"]))
    rows = [{"name": name, **_layer_summary(named[named["name"] == name])} for name in order]
    return pd.DataFrame(rows)
