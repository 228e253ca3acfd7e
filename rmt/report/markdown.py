"""The report as Markdown with PNGs beside it, and as a Hugging Face model-card block."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rmt.report.flags import Flag, counts
from rmt.report.html import COLUMNS, PHASE_COLORS, format_value

__all__ = ["render_markdown", "render_model_card"]

#: Flagged layers drawn as PNGs in a Markdown report (the page stays quick to write).
MAX_FIGURES = 24


def _fmt(value: Any) -> str:
    """:func:`rmt.report.html.format_value`, with the table separator escaped."""
    return format_value(value).replace("|", "\\|")


def _table(df: pd.DataFrame, columns: list[str]) -> list[str]:
    shown = [c for c in columns if c in df.columns and df[c].notna().any()]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]) for c in shown) + " |")
    return lines


def _panel_png(panel: dict[str, Any], title: str, path: Path) -> None:
    """The two figures of one layer from its panel data (rmt.panels.panel_data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    esd = panel.get("esd") or {}
    edges = np.asarray([e for e in esd.get("edges", []) if e is not None], dtype=float)
    density = np.asarray([0.0 if d is None else d for d in esd.get("density", [])], dtype=float)
    if edges.size == density.size + 1 and density.size:
        axes[0].stairs(density, edges, fill=True, color="0.75", label="ESD")
    if esd.get("mp_x"):
        axes[0].plot(esd["mp_x"], esd["mp_y"], color="C0", lw=2,
                     label=f"MP σ²={esd['sigma2']:.3g}")
        if esd.get("spikes"):
            axes[0].vlines(esd["spikes"], 0, 0.08 * (density.max() if density.size else 1),
                           color="C3", label=f"{esd['n_spikes']} spike(s)")
    axes[0].set_xlabel("log10 λ" if esd.get("log10") else "λ")
    axes[0].legend(fontsize=8)
    tail = panel.get("tail")
    if tail:
        axes[1].step(tail["x"], tail["ccdf"], where="post", color="0.3", label="data")
        if tail.get("fit_x"):
            axes[1].plot(tail["fit_x"], tail["fit_y"], color="C3", lw=2,
                         label=f"α={tail['alpha']:.3g}")
        axes[1].set_xscale("log")
        axes[1].set_yscale("log")
        axes[1].legend(fontsize=8)
    elif panel.get("profile"):
        axes[1].loglog(panel["profile"]["rank"], panel["profile"]["lambda"], ".", ms=2)
    axes[0].set_title(title[:90], fontsize=9)
    axes[1].set_title(panel.get("phase", ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def render_markdown(df: pd.DataFrame, *, kind: str, title: str, subtitle: str,
                    info: dict[str, Any], found: list[Flag], panels: dict[str, Any],
                    out: Path, table: pd.DataFrame | None = None) -> str:
    """Markdown text; the model summary and the flagged layers' figures as PNGs in
    ``<out stem>_files/`` (at most :data:`MAX_FIGURES` layer figures).

    Parameters
    ----------
    df, kind, title, subtitle, info, found, panels, table
        As for :func:`rmt.report.html.render_html`.
    out : pathlib.Path
        Where the Markdown file goes (the PNGs go beside it).

    Returns
    -------
    str
    """
    files = out.parent / f"{out.stem}_files"
    files.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", subtitle, "", "## Summary", ""]
    lines += [f"- rows: {info.get('n_layers', len(df))}, failed: {info.get('n_failed', 0)}"]
    if info.get("alpha") is not None and np.isfinite(info["alpha"]):
        lines.append(f"- mean α: {info['alpha']:.3g}; weighted by parameters: "
                     f"{info.get('weighted', {}).get('alpha', float('nan')):.3g}")
    phases = ", ".join(f"{p} {n}" for p, n in info.get("phases", {}).items())
    lines += [f"- phases: {phases}", ""]
    if kind == "model" and "alpha" in df:
        from rmt.plot import plot_model

        try:
            plot_model(df, path=files / "summary.png")
            lines += [f"![model summary]({files.name}/summary.png)", ""]
        except (ValueError, KeyError):
            pass  # nothing to draw (no successful layer)
    lines += [f"## Flagged layers ({len(found)})", ""]
    drawn = 0
    for f in found:
        key = f"layer-{f.index}"
        lines.append(f"- **{_fmt(f.name)}**: {f.text}")
        if key in panels and drawn < MAX_FIGURES and f.kind != "failed":
            name = f"{key}.png"
            _panel_png(json.loads(panels[key]), f.name, files / name)
            lines.append(f"  ![{key}]({files.name}/{name})")
            drawn += 1
    if not found:
        lines.append("No layer is flagged.")
    lines += ["", "## Layers", ""]
    lines += _table(table if table is not None else df, COLUMNS[kind])
    lines += ["", "Phase colours in the HTML report: " + ", ".join(
        f"{p} {c}" for p, c in PHASE_COLORS.items()), ""]
    return "\n".join(lines)


def render_model_card(df: pd.DataFrame, *, title: str, info: dict[str, Any],
                      found: list[Flag], version: str) -> str:
    """A block for a Hugging Face model card: YAML front matter with the metrics, then a
    short Markdown section.

    Parameters
    ----------
    df : pandas.DataFrame
        The analysis table.
    title : str
        The model's label.
    info : dict
        :func:`rmt.summary` of ``df``.
    found : list of Flag
        Flagged rows.
    version : str
        rmt's version.

    Returns
    -------
    str
    """
    def number(value: Any) -> Any:
        return None if value is None or not np.isfinite(value) else round(float(value), 4)

    metrics = {"layers": int(info.get("n_layers", len(df))),
               "failed": int(info.get("n_failed", 0)),
               "alpha_mean": number(info.get("alpha")),
               "alpha_weighted": number(info.get("weighted", {}).get("alpha")),
               "stable_rank_mean": number(info.get("stable_rank")),
               "phases": info.get("phases", {}), "flagged": counts(found)}
    front = ["---", "tags:", "- rmt", "- weight-spectra", "rmt:",
             f"  version: {json.dumps(version)}"]
    for key, value in metrics.items():
        front.append(f"  {key}: {json.dumps(value)}")  # JSON is valid YAML flow syntax
    front.append("---")
    lines = [*front, "", f"## Weight spectra ({title})", "",
             f"Empirical spectral densities of every weight matrix, analysed with rmt "
             f"{version}.", "",
             "| metric | value |", "|---|---|"]
    for key in ("layers", "failed", "alpha_mean", "alpha_weighted", "stable_rank_mean"):
        lines.append(f"| {key} | {_fmt(metrics[key])} |")
    lines.append(f"| phases | {', '.join(f'{p} {n}' for p, n in metrics['phases'].items())} |")
    if found:
        lines += ["", "Flagged layers:", ""]
        lines += [f"- `{f.name}`: {f.text}" for f in found[:10]]
        if len(found) > 10:
            lines.append(f"- … and {len(found) - 10} more")
    return "\n".join(lines) + "\n"
