"""A plug-in analysis for the tests: the gap between the two largest eigenvalues.

Importing this module registers it (as a user's own module would); tests unregister it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rmt.columns import Analysis, Column, LayerResult, attribute, register
from rmt.errors import DataError


@dataclass(frozen=True)
class TopGap:
    ratio: float


def top_gap(layer: LayerResult, W: Any) -> TopGap:
    if layer.nonzero.size < 2:
        raise DataError("fewer than two non-zero eigenvalues")
    return TopGap(float(layer.evals[-1] / layer.evals[-2]))


TOP_GAP = register(Analysis("top_gap", top_gap, (
    Column("top_gap", "lambda_max over the second-largest eigenvalue", "", "tests",
           attribute("ratio")),
), failure="no top gap"))


def expected(W: np.ndarray) -> float:
    """The same number by a dense float64 SVD (an independent reference)."""
    s = np.linalg.svd(np.asarray(W, dtype=np.float64), compute_uv=False)
    return float(s[0] ** 2 / s[1] ** 2)


@dataclass(frozen=True)
class Trace:
    total: float


#: An opt-in plug-in: off unless ``rmt.analyze(enable=["trace"])``.
TRACE = register(Analysis("trace", lambda layer, W: Trace(float(np.sum(layer.evals))), (
    Column("esd_sum", "sum of the eigenvalues", "eigenvalue", "tests", attribute("total")),
), option="trace"))
