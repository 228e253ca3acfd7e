"""Storage dtypes of weights and how each is decoded to the accumulation dtype.

Supported storage: float64, float32, float16, bfloat16 and every 1-byte float of
``ml_dtypes`` (float8_e4m3fn, float8_e5m2, ..., float4/float6 stored one per byte).
Low-precision formats are decoded exactly through a lookup table indexed by the raw
bits (65 536 entries for 2-byte formats, 256 for 1-byte ones): every such value is
exactly representable in float32 and float64, so decoding adds no error.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import numpy as np

from rmt.errors import DTypeError

StorageKind = Literal["native", "table"]


def _is_ml_float(dtype: np.dtype) -> bool:
    if dtype.type.__module__.split(".")[0] != "ml_dtypes":
        return False
    import ml_dtypes

    try:
        ml_dtypes.finfo(dtype)
    except ValueError:
        return False
    return True


def storage_kind(dtype: Any, name: str | None = None) -> StorageKind:
    """Classify a weight dtype.

    Parameters
    ----------
    dtype : numpy dtype-like
        The storage dtype.
    name : str, optional
        Layer name, used in the error message.

    Returns
    -------
    {"native", "table"}
        ``"native"`` for float32/float64 (converted by NumPy casting), ``"table"`` for
        float16, bfloat16 and 1-byte floats (decoded from their bits by table lookup).

    Raises
    ------
    DTypeError
        For integer, boolean, complex, object or other non-float dtypes.
    """
    dt = np.dtype(dtype)
    if dt.kind == "f" and dt.itemsize in (4, 8):
        return "native"
    if (dt.kind == "f" and dt.itemsize == 2) or (_is_ml_float(dt) and dt.itemsize in (1, 2)):
        return "table"
    raise DTypeError(
        f"unsupported dtype {dt} (supported: float64, float32, float16, bfloat16 and the "
        "1-byte float8/float6/float4 types of ml_dtypes)",
        name,
    )


@functools.cache
def _table(dtype_str: str, itemsize: int, out: str) -> np.ndarray:
    dt = _dtype_from_str(dtype_str)
    bits = np.arange(1 << (8 * itemsize), dtype=np.uint16 if itemsize == 2 else np.uint8)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf bit patterns are kept as such
        table = bits.view(dt).astype(np.dtype(out))
    table.flags.writeable = False
    return table


def _dtype_from_str(dtype_str: str) -> np.dtype:
    try:
        return np.dtype(dtype_str)
    except TypeError:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, dtype_str))


def decode_table(dtype: Any, out_dtype: Any = np.float64) -> np.ndarray:
    """Read-only table mapping every bit pattern of a 1- or 2-byte float to ``out_dtype``."""
    dt = np.dtype(dtype)
    return _table(dt.name, dt.itemsize, np.dtype(out_dtype).name)


def bits_view(block: np.ndarray) -> np.ndarray:
    """View a 1- or 2-byte float array as unsigned integers of the same width (no copy)."""
    return block.view(np.uint16 if block.dtype.itemsize == 2 else np.uint8)


def accumulation_dtype(dtype: Any) -> np.dtype:
    """Validate the accumulation dtype (float64 or float32)."""
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"dtype must be float64 or float32 (the accumulation dtype), got {dt}")
    return dt
