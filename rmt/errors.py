"""Exceptions raised by :mod:`rmt`.

Every error about a bad weight is a :class:`ValueError` subclass, so callers that
already catch ``ValueError`` keep working, and its message names the layer (when
the caller gave one) and the problem.
"""

from __future__ import annotations

__all__ = [
    "AnalysisError",
    "CheckpointError",
    "DTypeError",
    "DataError",
    "DeviceError",
    "EmptyWeightError",
    "NonFiniteError",
    "ShapeError",
    "WeightError",
]


class WeightError(ValueError):
    """A weight tensor cannot be analysed.

    Parameters
    ----------
    problem : str
        What is wrong, as a sentence fragment ("contains 3 NaN entries").
    name : str, optional
        The layer or tensor name, prepended to the message when given.
    """

    def __init__(self, problem: str, name: str | None = None) -> None:
        self.problem = problem
        self.name = name
        prefix = f"layer {name!r}: " if name else ""
        super().__init__(prefix + problem)


class NonFiniteError(WeightError):
    """The weight holds NaN or Inf entries, or its squares overflow the accumulator."""


class ShapeError(WeightError):
    """The weight has fewer than two dimensions, or more than the supported four."""


class EmptyWeightError(WeightError):
    """The weight has a dimension of length zero."""


class DTypeError(WeightError):
    """The weight's dtype is not a supported floating-point storage type."""


class DeviceError(RuntimeError):
    """The requested compute device is not available (e.g. ``device="gpu"`` without CUDA)."""


class DataError(ValueError):
    """Data handed to a fit cannot be fitted (empty, NaN/Inf, no positive values, too few
    distinct values); the message says which."""


class CheckpointError(ValueError):
    """A checkpoint file cannot be read: truncated, bad header, offsets past the end,
    refused pickle content, unknown format. The message names the file and the problem.

    Parameters
    ----------
    path : path or str
        The file.
    problem : str
        What is wrong with it.
    """

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class AnalysisError(RuntimeError):
    """A run of :func:`rmt.analyze` stopped part-way (disk full, a worker process killed,
    an error with ``on_error="raise"``).

    Parameters
    ----------
    message : str
        What stopped the run.
    table : pandas.DataFrame
        The finished rows.

    Attributes
    ----------
    table : pandas.DataFrame
        The rows of every layer finished before the stop (also in the resume file, if
        one was given); the cause is the exception's ``__cause__``.
    """

    def __init__(self, message: str, table: object) -> None:
        super().__init__(message)
        self.table = table
