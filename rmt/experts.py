"""Mixture-of-experts layers as populations (``rmt.expert_summary``).

The experts of one block and role (the 8 ``w1`` of Mixtral's layer 9, the 60
``gate_proj`` of a Qwen-MoE block) are trained by the same loss on different tokens, so
their spectra are a sample: this module summarises each such population from a table of
:func:`rmt.analyze` (whose rows already have ``block``, ``role`` and ``expert``).

Per (block, role): the number of experts analysed, the median α and its spread (the
interquartile range and the median absolute deviation), the **outlier experts** — those
whose α lies more than ``z`` robust standard deviations from the median, the robust
standard deviation being 1.4826·MAD (the MAD scaled to estimate σ for normal data; with
``z = 3`` a normal population flags 0.27% of its members) — the population's majority
phase and the **experts in another phase**, the shared expert's α when there is one, and
the block's router row (its stable rank and largest eigenvalue: a router whose ESD has
collapsed sends most tokens to few experts).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from rmt.architecture import annotate

__all__ = ["MAD_TO_SIGMA", "expert_summary"]

#: 1/Φ⁻¹(3/4): the MAD times this estimates σ for normally distributed data.
MAD_TO_SIGMA = 1.4826


def _ids(values: pd.Series) -> list[Any]:
    return [int(v) if isinstance(v, int | np.integer) else v for v in values]


def expert_summary(df: pd.DataFrame, *, metric: str = "alpha", z: float = 3.0
                   ) -> pd.DataFrame:
    """One row per (block, role) of routed experts: the population's spread and outliers.

    Parameters
    ----------
    df : pandas.DataFrame
        A table of :func:`rmt.analyze` (or any table with ``name``, ``status``, the metric
        and ``phase``; ``block``, ``role`` and ``expert`` are added from the names when
        missing).
    metric : str, default "alpha"
        The column summarised.
    z : float, default 3.0
        Outlier rule: |metric − median| > z · 1.4826 · MAD. With MAD = 0 (all equal but a
        few) any value off the median is an outlier.

    Returns
    -------
    pandas.DataFrame
        Columns ``block``, ``role``, ``n_experts`` (successful rows), ``<metric>_median``,
        ``<metric>_iqr``, ``<metric>_mad``, ``outlier_experts`` (tuple of expert ids),
        ``outlier_values``, ``majority_phase``, ``other_phase_experts`` (tuple),
        ``shared_<metric>`` (the shared expert's, NaN without one), ``router_stable_rank``
        and ``router_lambda_max`` (the block's router row, NaN without one). Empty (with
        these columns) for a model without experts.

    Raises
    ------
    ValueError
        ``metric`` is not a column, or z is not positive.
    """
    if metric not in df.columns:
        raise ValueError(f"expert_summary: no column {metric!r} in the table")
    if not z > 0:
        raise ValueError(f"expert_summary: z must be > 0, got {z!r}")
    if not {"block", "role", "expert"} <= set(df.columns):
        df = annotate(df)
    ok = df[df["status"] == "success"] if "status" in df else df
    columns = ["block", "role", "n_experts", f"{metric}_median", f"{metric}_iqr",
               f"{metric}_mad", "outlier_experts", "outlier_values", "majority_phase",
               "other_phase_experts", f"shared_{metric}", "router_stable_rank",
               "router_lambda_max"]
    experts = list(ok["expert"].astype(object))
    routed = ok[np.array([isinstance(e, int | np.integer) for e in experts], dtype=bool)]
    shared = ok[np.array([isinstance(e, str) and e == "shared" for e in experts], dtype=bool)]
    routers = ok[ok["role"] == "router"]
    rows = []
    for (block, role), group in routed.groupby(["block", "role"], sort=True, dropna=False):
        values = group[metric].astype(float)
        finite = values[np.isfinite(values)]
        median = float(finite.median()) if len(finite) else float("nan")
        mad = float((finite - median).abs().median()) if len(finite) else float("nan")
        iqr = float(finite.quantile(0.75) - finite.quantile(0.25)) if len(finite) else \
            float("nan")
        spread = MAD_TO_SIGMA * mad
        far = (finite - median).abs() > (z * spread if spread > 0 else 0.0)
        out = group.loc[far[far].index]
        phases = group["phase"] if "phase" in group else pd.Series(dtype=object)
        majority = phases.mode().iloc[0] if len(phases.dropna()) else None
        other = group[phases != majority] if majority is not None else group.iloc[:0]
        same_shared = shared[(shared["block"] == block) & (shared["role"] == role)]
        router = routers[routers["block"] == block]
        rows.append({
            "block": block, "role": role, "n_experts": len(group),
            f"{metric}_median": median, f"{metric}_iqr": iqr, f"{metric}_mad": mad,
            "outlier_experts": tuple(_ids(out["expert"])),
            "outlier_values": tuple(float(v) for v in out[metric]),
            "majority_phase": majority,
            "other_phase_experts": tuple(_ids(other["expert"])),
            f"shared_{metric}": float(same_shared[metric].iloc[0]) if len(same_shared)
            else float("nan"),
            "router_stable_rank": float(router["stable_rank"].iloc[0])
            if len(router) and "stable_rank" in router else float("nan"),
            "router_lambda_max": float(router["lambda_max"].iloc[0])
            if len(router) and "lambda_max" in router else float("nan"),
        })
    out_df = pd.DataFrame(rows, columns=columns)
    out_df["block"] = out_df["block"].astype("Int64")
    return out_df
