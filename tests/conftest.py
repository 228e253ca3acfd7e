"""Shared pytest configuration: hypothesis profile, warm Numba kernels, GPU marker."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import settings

# Numba compiles on first call, which would trip hypothesis's 200 ms deadline.
settings.register_profile("ci", deadline=None, max_examples=40, derandomize=True)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def _warm_kernels() -> None:
    """Compile the Numba kernels once per session, outside any timed or hypothesis test."""
    import ml_dtypes

    import rmt

    warm = np.ones((4, 3), dtype=ml_dtypes.bfloat16)
    rmt.esd(warm, device="cpu", block_rows=2)
    warm.flags.writeable = False  # read-only arrays (memmaps) compile separately
    rmt.esd(warm, device="cpu", block_rows=2)


def _gpu_reason() -> str | None:
    from rmt._device import gpu_available

    if gpu_available():
        return None
    try:
        import cupy  # noqa: F401
    except Exception as err:
        return f"CuPy is not importable ({type(err).__name__}); GPU twin untested here"
    return "CuPy imports but no CUDA device is usable; GPU twin untested here"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = None
    for item in items:
        if "gpu" in item.keywords:
            reason = reason or _gpu_reason()
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def numpy_as_cupy(monkeypatch):
    """Route ``device="gpu"`` through the GPU twin with NumPy standing in for CuPy.

    Checks the orchestration — dispatch, signatures, host/device hand-offs — of every
    public function that takes ``device``; only CuPy's own kernels are left untested.
    """
    import types

    from rmt import _device
    from rmt.kernels import gpu

    fake = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("_")})
    fake.asnumpy = np.asarray
    monkeypatch.setattr(_device, "cupy_or_none", lambda: fake)
    monkeypatch.setattr(gpu, "cupy_or_none", lambda: fake)
    assert _device.gpu_available()
    calls: dict[str, int] = {}
    for name in gpu.__all__:
        kernel = getattr(gpu, name)

        def counted(*args, _kernel=kernel, _name=name, **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
            return _kernel(*args, **kwargs)

        monkeypatch.setattr(gpu, name, counted)
    return calls
