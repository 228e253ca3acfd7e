"""The report as one self-contained HTML page.

Everything is inline: the stylesheet, the script (``static/report.js``: sortable tables,
the layer map's colouring, each layer's figures drawn as SVG when its panel is opened)
and the data (one JSON block). A Content-Security-Policy forbids every request but
inline code and ``data:`` images, so the page works offline and cannot reach the network
even if a layer name held markup (every text is escaped anyway).
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from rmt.architecture import ROLES
from rmt.report.flags import Flag, finite

__all__ = ["PHASE_COLORS", "format_value", "render_html"]

#: Fill colour of each phase (cells, chips); failed rows are grey.
PHASE_COLORS = {"random-like": "#c9cdd3", "bleeding-out": "#9cc9ee", "bulk+spikes": "#8fd3c7",
                "bulk-decay": "#ffd08a", "heavy-tailed": "#f3a09b", "rank-collapse": "#c9a3e0",
                "failed": "#eeeeee"}

_CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "img-src data:")

#: Table columns per kind of report (those present are shown).
COLUMNS = {
    "model": ["layer_id", "name", "block", "role", "head", "expert", "shape", "alpha", "phase",
              "stable_rank", "num_spikes", "lambda_max", "num_traps", "status", "warning"],
    "compare": ["layer_id", "name", "block", "role", "shape", "base_alpha", "alpha",
                "alpha_change", "base_phase", "phase", "num_intruders", "relative_change",
                "left_overlap", "status", "warning"],
    "track": ["name", "block", "role", "alpha_first", "alpha_last", "alpha_min",
              "alpha_slope", "alpha_trend_p", "phase_first", "phase_last", "alarms"],
}

#: Numbers shown in each layer's panel (those present).
PANEL_NUMBERS = ["phase", "sublabel", "alpha", "xmin", "D_pl", "n_tail", "sigma_mp",
                 "lambda_plus", "num_spikes", "stable_rank", "lambda_max", "log_norm",
                 "rank_loss", "num_evals", "N", "M", "base_alpha", "alpha_change",
                 "phase_change", "num_intruders", "relative_change", "num_traps"]


def _static(name: str) -> str:
    return resources.files("rmt.report").joinpath("static", name).read_text(encoding="utf-8")


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def format_value(value: Any) -> str:
    """Format a table value as shown in the report.

    Parameters
    ----------
    value : Any
        One cell of the layer table.

    Returns
    -------
    str
        Floats to 4 significant digits; missing and non-finite values (None, NaN of
        any float type, pandas' NA) as an empty string; anything else by ``str``.
    """
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}" if np.isfinite(value) else ""
    return str(value)


def _cell(col: str, value: Any, key: str) -> str:
    text = format_value(value)
    if col == "name":
        return f'<td><a href="#{key}" data-target="{key}">{_e(text)}</a></td>'
    if col == "phase" and text:
        color = PHASE_COLORS.get(text, "#eee")
        return (f'<td data-v="{_e(text)}"><span class="phase-chip" style="background:{color}">'
                f'{_e(text)}</span></td>')
    numeric = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool)
    css = ' class="num"' if numeric else (' class="failed"' if text == "failed" else "")
    return f"<td{css}>{_e(text)}</td>"


def _table(df: pd.DataFrame, keys: list[str], columns: list[str]) -> str:
    shown = [c for c in columns if c in df.columns and df[c].notna().any()]
    head = "".join(f"<th>{_e(c)}</th>" for c in shown)
    rows = []
    for key, (_, row) in zip(keys, df.iterrows(), strict=True):
        rows.append("<tr>" + "".join(_cell(c, row[c], key) for c in shown) + "</tr>")
    return (f'<div class="table-wrap"><table class="layers sortable" id="layer-table">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def _median(values: Any) -> float:
    v = finite(values)
    return float(np.median(v)) if v.size else float("nan")


def _layer_map(df: pd.DataFrame, keys: list[str], delta: bool) -> str:
    """Blocks × roles; a cell holding several rows (heads, experts) shows their median α."""
    wanted = ["name", "block", "role", "head", "status", "phase", "alpha", "alpha_change"]
    records = df.reindex(columns=wanted).to_dict("records")
    groups: dict[tuple[float, str], list[tuple[str, dict[str, Any]]]] = {}
    for key, row in zip(keys, records, strict=True):
        if not isinstance(row["role"], str):
            continue
        block = -1.0 if pd.isna(row["block"]) else float(row["block"])
        groups.setdefault((block, row["role"]), []).append((key, row))
    roles = [r for r in ROLES if any(role == r for _, role in groups)]
    blocks = sorted({b for b, _ in groups})
    lines = ["<tr><th>block</th>" + "".join(f"<th>{_e(r)}</th>" for r in roles) + "</tr>"]
    for block in blocks:  # -1: outside the repeated units, first
        cells = []
        for role in roles:
            members = groups.get((block, role))
            if members is None:
                cells.append('<td class="empty"></td>')
                continue
            whole = [m for m in members if pd.isna(m[1]["head"])]
            key, first = (whole or members)[0]
            ok = [row for _, row in members if row["status"] == "success"]
            phases = [row["phase"] for row in ok if isinstance(row["phase"], str)]
            phase = max(sorted(set(phases)), key=phases.count) if phases else "failed"
            alpha = _median([row["alpha"] for row in ok])
            change = _median([row["alpha_change"] for row in ok])
            label = "" if not np.isfinite(alpha) else f"{alpha:.2g}"
            if len(members) > 1:
                label += f" ×{len(members)}"
            tip = f"{first['name']}: {phase}, α {label}"
            cells.append(
                f'<td data-target="{key}" data-phase-color="'
                f'{PHASE_COLORS.get(phase, "#eee")}" data-alpha="{alpha}" '
                f'data-delta="{change}" title="{_e(tip)}">{_e(label)}</td>')
        label = "—" if block < 0 else str(int(block))
        lines.append(f"<tr><th>{label}</th>{''.join(cells)}</tr>")
    legend = "".join(f'<span><i style="background:{c}"></i>{_e(p)}</span>'
                     for p, c in PHASE_COLORS.items())
    choices = ['<label><input type="radio" name="map-colour" value="phase" checked> phase'
               '</label>', '<label><input type="radio" name="map-colour" value="alpha"> α'
               '</label>']
    if delta:
        choices.append('<label><input type="radio" name="map-colour" value="delta"> Δα'
                       '</label>')
    return (f'<div class="controls">colour by {"".join(choices)}</div>'
            f'<div class="map-wrap"><table class="map" id="layer-map">{"".join(lines)}'
            f'</table></div><p class="legend">{legend} <span id="map-legend-number"></span>'
            "</p>")


def _histogram_svg(values: np.ndarray, label: str) -> str:
    """A small server-side histogram (the summary's α distribution)."""
    if values.size == 0:
        return ""
    counts, edges = np.histogram(values, bins=min(24, max(4, values.size // 3)))
    W, H, L, B = 380, 130, 30, 24
    span = (edges[-1] - edges[0]) or 1.0

    def x_of(v: float) -> float:
        return L + (v - edges[0]) / span * (W - L - 24)  # room for the last tick label

    top = max(int(counts.max()), 1)
    bars = []
    for c, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
        h = c / top * (H - B - 10)
        bars.append(f'<rect x="{x_of(a):.1f}" y="{H - B - h:.1f}" '
                    f'width="{max(x_of(b) - x_of(a) - 1, 1):.1f}" height="{h:.1f}" '
                    'fill="#8fb3dc"/>')
    ticks = "".join(f'<text x="{x_of(t):.1f}" y="{H - 8}" font-size="10" '
                    f'text-anchor="middle">{t:.3g}</text>'
                    for t in np.linspace(edges[0], edges[-1], 5))
    return (f'<svg width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
            f'aria-label="{_e(label)}"><text x="{L}" y="11" font-size="11">{_e(label)} '
            f"(max {top} per bin)</text>{''.join(bars)}{ticks}</svg>")


def _summary(df: pd.DataFrame, info: dict[str, Any], found: list[Flag], keys: list[str],
             kind: str) -> str:
    cards = [("rows", info.get("n_layers", len(df))), ("failed", info.get("n_failed", 0))]
    alpha = info.get("alpha")
    if alpha is not None and np.isfinite(alpha):
        cards.append(("mean α", f"{alpha:.3g}"))
    weighted = info.get("weighted", {}).get("alpha")
    if weighted is not None and np.isfinite(weighted):
        cards.append(("α weighted by parameters", f"{weighted:.3g}"))
    if kind == "compare":
        change = _median(df.get("relative_change", pd.Series(dtype=float)))
        cards.append(("median relative change", f"{change:.3g}"))
        cards.append(("intruder dimensions",
                      int(finite(df.get("num_intruders", pd.Series(dtype=float))).sum())))
    html_cards = "".join(f'<div class="card"><div class="value">{_e(v)}</div>'
                         f'<div class="label">{_e(k)}</div></div>' for k, v in cards)
    chips = " ".join(f'<span class="phase-chip" style="background:{PHASE_COLORS.get(p, "#eee")}"'
                     f">{_e(p)} {n}</span>" for p, n in info.get("phases", {}).items())
    hist = _histogram_svg(finite(df.get("alpha", pd.Series(dtype=float))), "α over layers")
    items = "".join(f'<li><a href="#{keys[f.index]}" data-target="{keys[f.index]}">'
                    f"{_e(f.name)}</a>: {_e(f.text)}</li>" for f in found[:200])
    more = f"<li>… and {len(found) - 200} more</li>" if len(found) > 200 else ""
    flagged = (f'<ul class="flags" id="flags">{items}{more}</ul>' if found
               else '<p id="flags">No layer is flagged.</p>')
    return (f'<div class="cards">{html_cards}</div>'
            f'<div class="cards"><div class="card wide"><div class="label">phases</div>'
            f'{chips}<div>{hist}</div></div>'
            f'<div class="card wide"><div class="label">flagged layers ({len(found)})</div>'
            f"{flagged}</div></div>")


def _panels(df: pd.DataFrame, keys: list[str]) -> str:
    shown = [c for c in PANEL_NUMBERS if c in df.columns]
    out = []
    for key, row in zip(keys, df.to_dict("records"), strict=True):
        numbers = "".join(f"<tr><td>{_e(c)}</td><td>{_e(text)}</td></tr>"
                          for c in shown if (text := format_value(row[c])) != "")
        phase = format_value(row.get("phase")) or "failed"
        alpha = format_value(row.get("alpha"))
        reason = row.get("reason") if isinstance(row.get("reason"), str) else row.get(
            "warning", "")
        title = f"{row.get('name')} — {phase}" + (f", α {alpha}" if alpha else "")
        out.append(f'<details class="panel" id="{key}" data-key="{key}"><summary>{_e(title)}'
                   f'</summary><div class="panel-body"><div class="figures"></div>'
                   f'<div><table class="numbers">{numbers}</table>'
                   f'<p class="reason">{_e(("Phase: " + reason) if reason else "")}</p>'
                   "</div></div></details>")
    return "".join(out)


def _experts(df: pd.DataFrame) -> str:
    """The experts of each block and role as a population (rmt.expert_summary)."""
    from rmt.experts import expert_summary

    if "expert" not in df or not df["expert"].notna().any() or "alpha" not in df:
        return ""
    summary = expert_summary(df)
    if summary.empty:
        return ""
    head = "".join(f"<th>{_e(c)}</th>" for c in summary.columns)
    rows = "".join("<tr>" + "".join(
        f"<td>{_e(', '.join(map(format_value, v)) if isinstance(v, tuple) else format_value(v))}"
        "</td>"
        for v in row) + "</tr>" for row in summary.itertuples(index=False))
    return (f'<section id="experts"><h2>Experts</h2><p class="controls">Each block and role '
            "of routed experts as a population: median and spread of α, the experts more "
            "than 3 robust standard deviations (1.4826·MAD) from the median, those in "
            "another phase than the majority, the shared expert and the router.</p>"
            f'<div class="table-wrap"><table class="layers sortable"><thead><tr>{head}</tr>'
            f"</thead><tbody>{rows}</tbody></table></div></section>")


def render_html(df: pd.DataFrame, *, kind: str, title: str, subtitle: str,
                info: dict[str, Any], found: list[Flag], panels: dict[str, Any],
                trajectories: dict[str, Any] | None = None,
                table: pd.DataFrame | None = None) -> str:
    """The page.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per layer panel (a model's table, a comparison's, a run's last step).
    kind : {"model", "compare", "track"}
        What the report is of.
    title, subtitle : str
        Header lines.
    info : dict
        :func:`rmt.summary` of ``df``.
    found : list of Flag
        Flagged rows of ``df``.
    panels : dict
        Row key (``layer-<i>``) -> figure data as JSON text (:func:`rmt.panels.panel_data`,
        the ``panel`` column).
    trajectories : dict, optional
        Row key -> {"step": [...], "alpha": [...]} (a run's α over training).
    table : pandas.DataFrame, optional
        The sortable table, when it is not ``df`` (a run's per-layer summary, rows in
        the order of ``df``).

    Returns
    -------
    str
    """
    keys = [f"layer-{i}" for i in range(len(df))]
    shown = table if table is not None else df
    # the panels are JSON texts already (the analysis wrote them): joined, not re-encoded
    joined = ",".join(f"{json.dumps(key)}:{text}" for key, text in panels.items())
    payload = ('{"panels":{' + joined + '},"trajectories":'
               + json.dumps(trajectories or {}, separators=(",", ":"), allow_nan=False)
               + "}").replace("</", "<\\/")
    sections = [
        f'<section id="summary"><h2>Summary</h2>{_summary(df, info, found, keys, kind)}'
        "</section>",
        f'<section id="map"><h2>Layer map</h2>{_layer_map(df, keys, kind == "compare")}'
        "</section>",
        _experts(df),
        f'<section id="layers"><h2>Layers</h2>{_table(shown, keys, COLUMNS[kind])}</section>',
        f'<section id="panels"><h2>Layer by layer</h2><p class="controls">Open a layer for '
        f"its ESD with the Marchenko–Pastur fit and its tail with the power-law fit"
        f"{' and α over training' if kind == 'track' else ''}.</p>{_panels(df, keys)}"
        "</section>",
    ]
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_static('report.css')}</style></head><body>"
            f"<header><h1>{_e(title)}</h1><p>{_e(subtitle)}</p></header><main>"
            f"{''.join(sections)}</main><footer>Made by rmt; every number in this page is "
            "in the table it came from (CSV/Parquet: rmt analyze --out).</footer>"
            f'<script type="application/json" id="rmt-data">{payload}</script>'
            f"<script>{_static('report.js')}</script></body></html>\n")
