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
