"""Which layers a report flags, and why, in words."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Flag", "counts", "finite", "flags"]

#: α below this: heavier-tailed than a well-trained layer (Martin & Mahoney's lower end,
#: the over-training signal of Prakash & Martin 2025).
ALPHA_LOW = 2.0


@dataclass(frozen=True)
class Flag:
    """One flagged row.

    Attributes
    ----------
    index : int
        Its position in the table.
    name : str
        The row's name.
    kind : str
        ``alpha<2``, ``rank-collapse``, ``traps``, ``bleeding-out``, ``random-like``,
        ``intruders``, ``phase-change`` or ``failed``.
    text : str
        The reason in words.
    """

    index: int
    name: str
    kind: str
    text: str


def _num(row: pd.Series, key: str) -> float:
    value = row.get(key)
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def flags(df: pd.DataFrame) -> list[Flag]:
    """The rows a reader should look at first, each with the reason in words.

    Parameters
    ----------
    df : pandas.DataFrame
        A table of ``rmt.analyze`` or ``rmt.compare`` (its columns as named there).

    Returns
    -------
    list of Flag
        In table order; a row can have several.
    """
    out = []
    for index, (_, row) in enumerate(df.iterrows()):
        name = str(row.get("name") if isinstance(row.get("name"), str) else
                   row.get("base_name", ""))
        if row.get("status") == "failed":
            warning = str(row.get("warning", ""))
            if not warning.startswith("unsupported dtype"):  # integer buffers: not weights
                out.append(Flag(index, name, "failed", f"not analysed: {warning}"))
            continue
        alpha, phase = _num(row, "alpha"), row.get("phase")
        if alpha < ALPHA_LOW:
            out.append(Flag(index, name, "alpha<2", f"α = {alpha:.3g} < 2: a very heavy tail "
                            "(over-trained or memorising; Martin & Mahoney's lower end)"))
        if phase == "rank-collapse":
            out.append(Flag(index, name, "rank-collapse",
                            f"rank collapse: {int(_num(row, 'rank_loss'))} of "
                            f"{int(_num(row, 'num_evals'))} singular values are numerically "
                            "zero"))
        if phase == "bleeding-out":
            out.append(Flag(index, name, "bleeding-out", "bleeding-out: eigenvalues leave "
                            "the MP bulk without a power-law tail yet (early training)"))
        if phase == "random-like":
            out.append(Flag(index, name, "random-like", "random-like: the ESD is the MP law of "
                            "a random matrix (under-trained, or not trained at all)"))
        traps = _num(row, "num_traps")
        if traps > 0:
            out.append(Flag(index, name, "traps", f"{int(traps)} correlation trap(s): a few "
                            "entries far larger than the rest (rmt.traps maps them)"))
        intruders = _num(row, "num_intruders")
        if intruders > 0:
            out.append(Flag(index, name, "intruders", f"{int(intruders)} intruder "
                            "dimension(s): new singular directions the base never had"))
        change = row.get("phase_change")
        if isinstance(change, str) and change:
            out.append(Flag(index, name, "phase-change", f"phase changed: {change}"))
    return out


def counts(found: list[Flag]) -> dict[str, int]:
    """Flags per kind.

    Parameters
    ----------
    found : list of Flag

    Returns
    -------
    dict
    """
    kinds: dict[str, int] = {}
    for f in found:
        kinds[f.kind] = kinds.get(f.kind, 0) + 1
    return kinds


def finite(values: Any) -> np.ndarray:
    """The finite floats of a column.

    Parameters
    ----------
    values : array_like

    Returns
    -------
    numpy.ndarray
    """
    arr = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    return arr[np.isfinite(arr)]
