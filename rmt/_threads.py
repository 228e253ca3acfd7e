"""BLAS and Numba thread counts: explicit when asked, never above the caller's.

Oversubscription (BLAS threads x Numba threads x processes > cores) made eigensolves
ten times slower on a shared 2-core machine. Every compute entry point takes
``n_threads``: an explicit count pins both pools for the call and restores them
afterwards (the pynndescent etiquette); ``None`` uses the limits already in force —
``OMP_NUM_THREADS``, an active ``threadpoolctl`` limit, ``numba.set_num_threads`` —
taking the smallest of them for both pools, so rmt never runs more threads than the
caller allowed.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

import numpy as np
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


def threads_in_force() -> int:
    """The thread budget the caller has set: the smallest of Numba's current count, every
    BLAS/OpenMP pool's current count (threadpoolctl) and ``OMP_NUM_THREADS`` if set."""
    import numba

    counts = [numba.get_num_threads(), default_threads()]
    counts += [int(lib["num_threads"]) for lib in _controller().info()
               if int(lib.get("num_threads") or 0) > 0]
    try:
        env = int(os.environ.get("OMP_NUM_THREADS", "") or 0)
    except ValueError:
        env = 0
    if env > 0:
        counts.append(env)
    return max(1, min(counts))


@contextlib.contextmanager
def limit_threads(n_threads: int | None) -> Iterator[int]:
    """Pin BLAS/OpenMP (threadpoolctl) and Numba to ``n_threads`` inside the block.

    Parameters
    ----------
    n_threads : int or None
        Threads for both pools; ``None`` means :func:`threads_in_force` — the caller's
        own limits, never more (inside an outer ``limit_threads``, its count).

    Yields
    ------
    int
        The thread count in force.
    """
    global _pinned
    if n_threads is not None and (not isinstance(n_threads, int | np.integer)
                                  or isinstance(n_threads, bool) or n_threads < 1):
        raise ValueError(f"n_threads must be an integer >= 1 or None, got {n_threads!r}")
    if n_threads is None and _pinned is not None:
        yield _pinned  # inside analyze -> esd -> fits: the outer count holds
        return
    n = threads_in_force() if n_threads is None else int(n_threads)
    if _pinned == n:  # nested call with the same count: no-op
        yield n
        return
    import numba

    n_numba = min(n, numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
    previous, outer = numba.get_num_threads(), _pinned
    numba.set_num_threads(n_numba)
    _pinned = n
    try:
        with _controller().limit(limits=n):
            yield n
    finally:
        _pinned = outer
        numba.set_num_threads(previous)


def numba_threadsafe() -> bool:
    """Whether Numba's threading layer may run parallel kernels from several threads at
    once (OpenMP and TBB may; the workqueue layer aborts the process).

    The layer is chosen when the first parallel kernel runs: a tiny one is run first if
    none has.
    """
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        import ml_dtypes

        from rmt.kernels import cpu

        cpu.decode(np.zeros((1, 1), dtype=ml_dtypes.bfloat16), np.empty((1, 1), np.float32))
        layer = numba.threading_layer()
    return layer in ("omp", "tbb")


@contextlib.contextmanager
def limit_this_thread(n_threads: int) -> Iterator[int]:
    """Numba's and OpenMP's thread counts for the calling thread only.

    Both are per-thread settings (a new thread starts with the process defaults, not the
    limits :func:`limit_threads` set in another): a worker thread sets its own. BLAS
    pools that are not OpenMP-based keep the one process-wide limit.
    """
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    try:
        with _controller().limit(limits=n_threads, user_api="openmp"):
            yield n_threads
    finally:
        numba.set_num_threads(previous)
