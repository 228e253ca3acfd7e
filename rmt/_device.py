"""Compute-device resolution and the lazy, guarded CuPy import.

``import rmt`` never imports CuPy. Without a GPU, ``import cupy`` may succeed while
every allocation raises ``CUDARuntimeError`` and ``cupyx`` fails to import (the
wheel ships no CUDA libraries), so availability is decided by actually querying the
runtime, and any exception there means "no GPU".
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any, Literal

import numpy as np

from rmt.errors import DeviceError

Device = Literal["auto", "cpu", "gpu"]
_DEVICES = ("auto", "cpu", "gpu")


@functools.cache
def cupy_or_none() -> ModuleType | None:
    """Return the ``cupy`` module when it imports and a CUDA device answers, else ``None``."""
    try:
        import cupy

        if not cupy.cuda.is_available() or cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        cupy.zeros(1)  # allocation is the call that fails on a machine without a driver
    except Exception:  # ImportError, CUDARuntimeError, driver/library errors alike
        return None
    return cupy


def gpu_available() -> bool:
    """Whether a CUDA device is usable through CuPy.

    Returns
    -------
    bool
    """
    return cupy_or_none() is not None


def is_cupy_array(x: Any) -> bool:
    """Whether ``x`` is a CuPy array, without importing CuPy."""
    return type(x).__module__.split(".")[0] == "cupy"


def array_namespace(x: Any) -> ModuleType:
    """The array module of ``x``: ``cupy`` for a CuPy array, else ``numpy``.

    Parameters
    ----------
    x : array_like
        Any array; CuPy is imported only when ``x`` already is a CuPy array.

    Returns
    -------
    module
    """
    if is_cupy_array(x):
        import cupy

        return cupy
    return np


def to_host(x: Any) -> np.ndarray:
    """``x`` as a NumPy array (a device-to-host copy for a CuPy array)."""
    return x.get() if is_cupy_array(x) else np.asarray(x)


def resolve_device(device: Device | str, data: Any = None) -> Literal["cpu", "gpu"]:
    """Turn ``device="auto"|"cpu"|"gpu"`` into ``"cpu"`` or ``"gpu"``.

    Parameters
    ----------
    device : {"auto", "cpu", "gpu"}
        ``"auto"`` picks the GPU when ``data`` already lives there or when CuPy imports
        and a CUDA device is present, otherwise the CPU.
    data : array, optional
        The input; a CuPy array makes ``"auto"`` pick the GPU.

    Raises
    ------
    ValueError
        For an unknown device name.
    DeviceError
        For ``device="gpu"`` without a usable CUDA device.
    """
    if device not in _DEVICES:
        raise ValueError(f"device must be one of {_DEVICES}, got {device!r}")
    if device == "cpu":
        return "cpu"
    if device == "gpu":
        if not gpu_available():
            raise DeviceError(
                "device='gpu' was requested but no CUDA device is usable: install the "
                "'gpu' extra (cupy-cuda12x) on a machine with an NVIDIA GPU and driver, "
                "or use device='cpu'/'auto'"
            )
        return "gpu"
    if is_cupy_array(data) or gpu_available():
        return "gpu"
    return "cpu"


def kernels(device: Literal["cpu", "gpu"]) -> ModuleType:
    """The kernel module for a resolved device (``rmt.kernels.cpu`` or ``rmt.kernels.gpu``)."""
    try:
        if device == "gpu":
            from rmt.kernels import gpu

            return gpu
        from rmt.kernels import cpu

        return cpu
    except ModuleNotFoundError as err:
        if err.name not in ("rmt.kernels", "rmt.kernels.cpu", "rmt.kernels.gpu"):
            raise
        raise ImportError(
            "rmt.kernels is not importable: this rmt is a source checkout that is not "
            "installed (kernels/ becomes rmt.kernels by installing); run `pip install -e .` "
            "in the clone") from err
