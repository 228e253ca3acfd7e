"""Explicit BLAS and Numba thread counts.

Oversubscription (BLAS threads x Numba threads x processes > cores) made eigensolves
ten times slower on a shared 2-core machine, so every compute entry point takes
``n_threads`` and pins both pools for its duration, restoring them afterwards
(the pynndescent etiquette).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

from threadpoolctl import ThreadpoolController


def default_threads() -> int:
    """Cores this process may use (``os.sched_getaffinity`` where available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS/Windows
        return max(1, os.cpu_count() or 1)


_pinned: int | None = None  # thread count set by the innermost active limit_threads


@functools.cache
def _controller() -> ThreadpoolController:
    # Scanning the loaded BLAS/OpenMP libraries costs ~0.3 ms; do it once, after NumPy's
    # and SciPy's BLAS are loaded, instead of on every call.
    import scipy.linalg  # noqa: F401 - loads SciPy's BLAS so the controller sees it

    return ThreadpoolController()


@contextlib.contextmanager
def limit_threads(n_threads: int | None) -> Iterator[int]:
    """Pin BLAS/OpenMP (threadpoolctl) and Numba to ``n_threads`` inside the block.

    Parameters
    ----------
    n_threads : int or None
        Threads for both pools; ``None`` means all cores this process may use.

    Yields
    ------
    int
        The thread count in force.
    """
    global _pinned
    n = default_threads() if n_threads is None else int(n_threads)
    if n < 1:
        raise ValueError(f"n_threads must be >= 1 or None, got {n_threads!r}")
    if _pinned == n:  # nested call with the same count (analyze -> esd -> fits): no-op
        yield n
        return
    import numba

    n_numba = min(n, numba.config.NUMBA_NUM_THREADS)
    previous, outer = numba.get_num_threads(), _pinned
    numba.set_num_threads(n_numba)
    _pinned = n
    try:
        with _controller().limit(limits=n):
            yield n
    finally:
        _pinned = outer
        numba.set_num_threads(previous)
