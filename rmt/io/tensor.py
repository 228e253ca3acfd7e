"""LazyTensor: one named tensor of a checkpoint, read only when asked."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    source: str
    _loader: Callable[[], Any] = field(repr=False, compare=False)

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes in storage."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def load(self, dtype: Any = None) -> np.ndarray:
        """The tensor as an array: a read-only memory map of the file where possible.

        Parameters
        ----------
        dtype : numpy dtype, optional
            Convert to this dtype (a copy); default: the storage dtype, no copy.
        """
        arr = self._loader()
        return arr if dtype is None else np.asarray(arr).astype(dtype)

    def row_blocks(self, rows: int) -> Iterator[np.ndarray]:
        """Consecutive blocks of ``rows`` rows (first axis) in the storage dtype."""
        arr = self._loader()
        for start in range(0, self.shape[0] if self.shape else 0, rows):
            yield arr[start : start + rows]
