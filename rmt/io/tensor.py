"""LazyTensor: one named tensor of a checkpoint, read only when asked."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np

from rmt.errors import CheckpointError
from rmt.io.layout import Layout

# No format stores tensors of more dimensions than this; a header claiming more is hostile.
MAX_NDIM = 64


@dataclass(frozen=True)
class LazyTensor:
    """A tensor in a checkpoint, described by its header and loaded on demand.

    Attributes
    ----------
    name : str
        Full name as stored in the checkpoint.
    shape : tuple of int
        Shape.
    dtype : numpy.dtype
        Storage dtype (``ml_dtypes`` types for bfloat16 and float8).
    source : str
        File it lives in.
    data_key : hashable, optional
        Identity of the bytes behind the tensor (file and byte range or storage view);
        two tensors with the same key are the same data (tied weights), read once.
    layout : Layout, optional
        How the stored array is read as matrices, when the format says (a Keras conv
        kernel is channels-last, an ONNX ``Conv`` input is a kernel, ...); None: decided
        from the name and shape by :func:`rmt.io.layout.infer_layout`.
    error : str, optional
        Set for an entry that could not be listed (an unreadable shard, a refused view):
        the reason, naming the file. ``load`` raises it as a ``CheckpointError``.
    low_rank : rmt.io.peft.LowRankUpdate, optional
        Set for a LoRA module's update: its factors, from which the spectrum is computed
        without forming the product (``load`` forms it).

    Notes
    -----
    File-backed loaders are small picklable objects (file, offset, dtype, shape), so a
    worker process reads its tensor directly from the task it is given, without walking
    the checkpoint again.
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    source: str
    _loader: Callable[[], Any] = field(repr=False, compare=False)
    data_key: Hashable | None = field(default=None, compare=False)
    error: str | None = field(default=None, compare=False)
    layout: Layout | None = field(default=None, compare=False)
    low_rank: Any = field(default=None, compare=False)

    @classmethod
    def broken(cls, name: str, source: str, problem: str, shape: tuple[int, ...] = (),
               dtype: Any = None) -> LazyTensor:
        """An entry standing for a tensor (or a whole file) that cannot be read: its
        declared shape and dtype where known, and the reason as ``error``."""
        return cls(name, tuple(shape), np.dtype(dtype if dtype is not None else np.uint8),
                   source, _Broken(source, problem), error=f"{source}: {problem}")

    @property
    def stands_for_file(self) -> bool:
        """A broken entry standing for a whole unreadable file (named after the file)."""
        return self.error is not None and self.name == PurePath(self.source).name

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements (a Python int: exact for any declared shape)."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes in storage."""
        return self.size * self.dtype.itemsize

    def load(self, dtype: Any = None) -> np.ndarray:
        """The tensor as an array in memory owned by this process.

        Parameters
        ----------
        dtype : numpy dtype, optional
            Convert to this dtype (a copy); default: the storage dtype.

        Raises
        ------
        rmt.errors.CheckpointError
            The bytes cannot be read (file changed or shrank, damaged container, ...).

        Returns
        -------
        numpy.ndarray
        """
        arr = self._loader()
        return arr if dtype is None else np.asarray(arr).astype(dtype)

    def row_blocks(self, rows: int) -> Iterator[np.ndarray]:
        """Consecutive blocks of ``rows`` rows (first axis) in the storage dtype.

        Parameters
        ----------
        rows : int
            Rows per block.

        Yields
        ------
        numpy.ndarray
            Views (or copies) of consecutive row ranges.
        """
        ranged = getattr(self._loader, "rows", None)
        if ranged is not None:  # a file-backed tensor: read each block on its own
            for start in range(0, self.shape[0] if self.shape else 0, rows):
                yield ranged(start, start + rows)
            return
        arr = self._loader()
        for start in range(0, self.shape[0] if self.shape else 0, rows):
            yield arr[start : start + rows]


@dataclass(frozen=True)
class _Broken:
    source: str
    problem: str

    def __call__(self) -> np.ndarray:
        raise CheckpointError(self.source, self.problem)


def checked_shape(values: Any, path: object, what: str) -> tuple[int, ...]:
    """A shape from a file header: a list of non-negative Python ints, else an error.

    Strings, floats and booleans are refused rather than coerced (``"22"`` is not
    ``[2, 2]``, ``2.5`` is not ``2``), and so are more than :data:`MAX_NDIM` axes.
    """
    if not isinstance(values, list | tuple) or len(values) > MAX_NDIM:
        raise CheckpointError(path, f"{what}: shape must be a list of at most {MAX_NDIM} "
                                    f"integers, got {_short(values)}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise CheckpointError(path, f"{what}: shape entries must be non-negative integers, "
                                    f"got {_short(values)}")
    return tuple(int(v) for v in values)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
