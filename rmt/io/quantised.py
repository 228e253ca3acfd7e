"""Dequantisation shared by the readers: ``(q - zero_point) * scale`` in float32.

Used for ONNX integer weights (``DequantizeLinear``, ``QLinear*``, ``*Integer`` ops) and
PyTorch quantised tensors (``torch.quantize_per_tensor``/``per_channel``); GGUF's block
formats are dequantised by the ``gguf`` package itself. Accumulation is float32: the
integers are exact in it (|q| < 2**24), and the result carries float32 rounding of
``scale``, a relative 6e-8, far below the quantisation step itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Constant:
    """A loader returning a fixed value (a per-tensor scale or zero point; picklable)."""

    value: float

    def __call__(self) -> np.ndarray:
        return np.asarray(self.value, dtype=np.float64)


@dataclass(frozen=True)
class Dequantised:
    """Loader of a quantised weight: ``(q - zero_point) * scale`` in float32 (picklable).

    ``q``, ``scale`` and ``zero_point`` are loaders (``scale``/``zero_point`` may be None:
    1 and 0). ``axis`` is the axis the scale runs along (None: one scale); ``block`` the
    block size of blocked quantisation (ONNX ``DequantizeLinear`` opset 21), else 0.
    """

    q: Callable[[], Any]
    scale: Callable[[], Any] | None
    zero_point: Callable[[], Any] | None
    axis: int | None
    block: int = 0

    def __call__(self) -> np.ndarray:
        q = np.asarray(self.q()).astype(np.float32)
        if self.zero_point is not None:
            q -= self._spread(np.asarray(self.zero_point()).astype(np.float32), q.shape)
        if self.scale is not None:
            q *= self._spread(np.asarray(self.scale()).astype(np.float32), q.shape)
        return q

    def _spread(self, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Broadcast a scale or zero point over the quantised tensor."""
        if values.size == 1 or self.axis is None:
            return values.reshape(())
        axis = self.axis % len(shape)
        if self.block:
            values = np.repeat(values, self.block, axis=axis)
            return values[tuple(slice(0, n) for n in shape)]
        view = [1] * len(shape)
        view[axis] = shape[axis]
        return values.reshape(view)
