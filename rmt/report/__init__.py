"""Reports a person would rather look at than a CSV (``rmt.report``, ``rmt report``).

One self-contained HTML page (:mod:`rmt.report.html`: opens offline, no request leaves
it) for a model, a comparison with its base, or a training run: a summary with the
flagged layers in words (:mod:`rmt.report.flags`), a block × role layer map coloured by
phase, α or Δα, a sortable table, and every layer's figures drawn in the browser from the
numbers of :mod:`rmt.panels` when its panel is opened — so the page costs the analysis
plus a few kB per layer, however many layers. Markdown with PNGs beside it and a Hugging
Face model-card block are the other formats (:mod:`rmt.report.markdown`).
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

import pandas as pd

from rmt.report.flags import Flag, flags
from rmt.report.html import render_html
from rmt.report.markdown import render_markdown, render_model_card

__all__ = ["Flag", "flags", "report"]

FORMATS = ("html", "md", "model-card")


def _label(source: Any) -> str:
    if isinstance(source, str | Path):
        return str(source)
    if isinstance(source, list | tuple):
        return f"{len(source)} checkpoints"
    return type(source).__name__


def _panels(df: pd.DataFrame, column: str = "panel") -> dict[str, str]:
    """Row key -> the row's figure data, as the JSON text the analysis wrote."""
    out = {}
    if column in df:
        for i, text in enumerate(df[column]):
            if isinstance(text, str) and text:
                out[f"layer-{i}"] = text
    return out


def _drop_panels(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=[c for c in df.columns if c.endswith("panel")])


def report(source: Any, out: str | Path = "report.html", *, base: Any = None,
           track: bool = False, format: str = "html", steps: Any = None,
           **analyze_options: Any) -> Path:
    """Analyse and write a report.

    Parameters
    ----------
    source : path, dict of arrays, torch.nn.Module, glob or list
        What :func:`rmt.analyze` reads; with ``track=True`` what :func:`rmt.track` reads
        (a glob such as ``"run/checkpoint-*"`` or a list of checkpoints).
    out : path, default "report.html"
        The file written (``md``: its PNGs go to ``<stem>_files/`` beside it).
    base : optional
        The checkpoint ``source`` was fine-tuned from: a comparison report
        (:func:`rmt.compare`): Δα, phase changes, intruder dimensions.
    track : bool, default False
        ``source`` is a training run: α over training per layer, the map and figures of
        the last checkpoint, the per-layer trend (:func:`rmt.track_summary`).
    format : {"html", "md", "model-card"}, default "html"
        One HTML page; Markdown with PNGs; a Hugging Face model-card block (YAML front
        matter with the metrics, then a short table).
    steps : iterable of int, optional
        With ``track=True``: the checkpoints' steps (else parsed from their names).
    **analyze_options
        Passed to the analysis (``layers=``, ``n_jobs=``, ``randomize=True``,
        ``heads=True``, ...).

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    ValueError
        A bad format, or ``base`` with ``track``.
    """
    from rmt import __version__
    from rmt.runner import summary

    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if base is not None and track:
        raise ValueError("a report is of a model, a comparison (base=) or a run (track=True)")
    out = Path(out)
    enable = [*analyze_options.pop("enable", ()), "panel"]
    start = time.perf_counter()
    table = None
    trajectories = None
    if track:
        from rmt.trajectory import track as run_track
        from rmt.trajectory import track_summary

        long = run_track(source, steps=steps, enable=enable, **analyze_options)
        last = long["step"].max()
        df = long[long["step"] == last].reset_index(drop=True)
        per_layer = track_summary(_drop_panels(long))
        table = df[["name"]].merge(per_layer, on="name", how="left")
        for col in ("block", "role"):
            if col in df and col not in table:
                table[col] = df[col].to_numpy()
        ok = long[long["status"] == "success"].sort_values("step", kind="stable")
        by_name = {name: rows for name, rows in ok.groupby("name", sort=False)}
        empty = ok.iloc[:0]
        trajectories = {}
        for i, name in enumerate(df["name"]):
            rows = by_name.get(name, empty)
            trajectories[f"layer-{i}"] = {
                "step": [int(s) for s in rows["step"]],
                "alpha": [round(float(a), 5) if pd.notna(a) else None for a in rows["alpha"]]}
        kind, what = "track", f"training run: {_label(source)}, last step {last}"
    elif base is not None:
        from rmt.comparison import compare

        df = compare(base, source, enable=enable, **analyze_options)
        kind, what = "compare", f"{_label(source)} against its base {_label(base)}"
    else:
        from rmt.runner import analyze

        df = analyze(source, enable=enable, **analyze_options)
        kind, what = "model", _label(source)
    seconds = time.perf_counter() - start
    panels = _panels(df)
    df = _drop_panels(df)
    info = summary(df)
    found = flags(df)
    title = f"rmt report — {what}"
    subtitle = (f"{len(df)} rows · analysed in {seconds:.1f} s · rmt {__version__} · "
                f"{datetime.date.today().isoformat()}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if format == "html":
        text = render_html(df, kind=kind, title=title, subtitle=subtitle, info=info,
                           found=found, panels=panels, trajectories=trajectories, table=table)
    elif format == "md":
        text = render_markdown(df, kind=kind, title=title, subtitle=subtitle, info=info,
                               found=found, panels=panels, out=out, table=table)
    else:
        text = render_model_card(df, title=what, info=info, found=found, version=__version__)
    out.write_text(text, encoding="utf-8")
    return out
