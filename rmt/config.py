"""Every engine constant of rmt in one place, each with the measurement that chose it.

These are tunables of *how* results are computed (block sizes, scheduling, numerical
zero tolerances), never of *what* is decided: the phase classifier's thresholds are
:class:`rmt.phases.PhaseThresholds`. Modules read the values here at call time, so a
change takes effect at once::

    import rmt.config
    rmt.config.GRAM_BLOCK_BYTES = 4 * 2**20   # larger decoded blocks for the CPU Gram
    rmt.config.reset()                        # back to the defaults

Results do not depend on any of them beyond float64 round-off (block sizes change the
order of summation only); the tests check that.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["DEFAULTS", "reset"]

DEFAULTS: dict[str, Any] = {
    # --- ESD (rmt.spectra, rmt.kernels) -------------------------------------------------
    # One decoded row block of the CPU Gram (bf16/fp16/fp8 decoded to the accumulation
    # dtype): ~1 MiB, so that it is still in cache when syrk reads it. MiniLM's float32
    # layers, 1 thread: 0.335 s with 1 MiB blocks against 0.369 s with 32 MiB.
    "GRAM_BLOCK_BYTES": 2**20,
    # ... but at least this many rows, so that each syrk call does enough work per pass
    # over the M x M result (256-row blocks were 8% slower at M = 4096). A 32000 x 4096
    # bf16 matrix thus costs its 4096^2 Gram plus one 16 MiB block.
    "GRAM_MIN_BLOCK_ROWS": 512,
    # Device (CuPy) Gram blocks: device memory is larger and each block is a kernel
    # launch, so blocks are bigger than on the host (not tuned further).
    "GPU_GRAM_BLOCK_BYTES": 256 * 2**20,
    # Same-shape matrices (conv slices, stacks, esd_batch) are decomposed in one batched
    # eigensolve while W and Gram together fit in this many bytes. Measured 2026-12-03 on
    # 2 cores: 256 matrices of 128 x 64 in 55.6 ms batched against 67.4 ms one by one; a
    # 64x64x3x3 kernel 1.58 ms against 1.85 ms. 512x512 slices (4 MiB each) are not
    # batched at any setting that matters (0.14 s either way).
    "ESD_BATCH_BYTES": 64 * 2**20,
    # Stacks of float64 matrices up to this wide get their eigenvalues from
    # rmt.kernels._small_eigvalsh instead of LAPACK one by one. One thread, Intel Xeon
    # (Emerald Rapids) 2026-12-08, LAPACK's time / ours: 64 matrices of n = 16 2.0x,
    # 64 2.3x, 100 2.1x, 200 1.8x; 8 of n = 256 1.7x, 384 1.5x, 512 1.35x; n = 3 1.0x
    # (such stacks take microseconds either way).
    "SMALL_EIGVALSH_MAX_N": 512,
    # Matrices with more entries are not SVD'd to confirm a rank loss: the SVD of a
    # 4096 x 2048 float64 matrix took 1.96 s against 0.57 s for its ESD (2026-12-03,
    # 2 cores); the Gram count (an upper bound) is reported then.
    "SVD_MAX_ELEMENTS": 2**23,
    # --- power-law scan (rmt.heavytail, rmt.kernels) -------------------------------------
    # Every KS_COARSE_STRIDE-th xmin candidate is evaluated first; the least of those D
    # bounds the minimum, and the second pass abandons any candidate once one point
    # exceeds the least D so far. Exact for any stride; the stride only moves work
    # between passes.
    "KS_COARSE_STRIDE": 64,
    # The KS branch and bound evaluates blocks of at most this many points one by one
    # instead of halving them further (exact for any value). Every D exact (prune=False),
    # pure power law, 1 thread, idle AMD EPYC 2026-12-07: n = 50000 0.58 s with 4 against
    # 0.70 s with 16 and 1.83 s with 64 (200000: 5.9 s, 7.1 s, 14.5 s); the pruned scan
    # takes 4-100 ms at any value.
    "KS_LEAF_POINTS": 4,
    # Below this many point x candidate pairs the scan runs on one thread: opening the
    # thread pool costs more than it saves.
    "KS_SERIAL_PAIRS": 2**18,
    # GPU scan tile: candidates x points per step (2**26 float64 = 512 MiB of scratch).
    "GPU_KS_CHUNK_ELEMENTS": 2**26,
    # A power-law tail shorter than this carries a warning: alpha's standard error
    # (alpha - 1)/sqrt(n_tail) is then above 30% of alpha - 1.
    "SHORT_TAIL": 10,
    # --- layouts (rmt.io.layout) --------------------------------------------------------
    # A 3-D tensor (out, in, k) with no other clue is a Conv1d kernel when k is at most
    # this and shorter than both other axes; otherwise a stack of matrices (E, rows, cols).
    # Conv1d kernels in the checkpoints we read have k <= 11 (large-k bases such as an STFT
    # have one input channel and are read by the one-channel rule instead).
    "CONV1D_MAX_K": 16,
    # --- scheduling (rmt.analyze) -------------------------------------------------------
    # Tasks per chunk sent to a worker at most, and chunks in flight per worker: enough to
    # keep each worker busy while its results travel back, few enough to balance.
    "CHUNK_TASKS": 64,
    "IN_FLIGHT_PER_WORKER": 2,
    # analyze(n_jobs=k) with threads: a layer whose a-priori one-core cost
    # (rmt.runner._cost) is at least this runs alone on every thread, the others side by
    # side. Two BLAS threads against one, whole analysis of one float32 layer, idle AMD
    # EPYC 2026-12-07: 384x384 (cost 0.007) 1.01x, 30522x384 (0.10) 1.33x, 4096x1024
    # (0.17) 1.38x, 2048x2048 (0.86) 1.66x, 4096x4096 (6.9) 1.61x: below ~0.5 a second
    # layer beside it gains more than a second thread inside it.
    "ALONE_SECONDS": 0.5,
    # Seconds a spawned worker takes to import rmt and load its compiled kernels
    # (measured 2-4 s on 2 cores): work that would finish sooner runs in this process.
    "POOL_STARTUP_SECONDS": 3.0,
    # --- Hessian index (rmt.hessian, rmt.energy) ----------------------------------------
    # Eigenvalues of an exact operator count as negative below -INDEX_EPS_FACTOR*n*eps*|A|:
    # the round-off of a dense eigvalsh around exact zeros (flat directions) stays inside.
    "INDEX_EPS_FACTOR": 1.0,
    # At a point found by an optimiser the Hessian carries the optimiser's residual
    # (|grad| ~ 1e-10): there an eigenvalue counts as negative below
    # -INDEX_REL_TOL*|lambda|max.
    "INDEX_REL_TOL": 1e-6,
    # Directions with |lambda| < FLAT_REL_TOL*|lambda|max are "flat" when the gradient's
    # share in them is reported (Frye et al.'s gradient-flat regions).
    "FLAT_REL_TOL": 1e-3,
}

GRAM_BLOCK_BYTES: int
GRAM_MIN_BLOCK_ROWS: int
GPU_GRAM_BLOCK_BYTES: int
ESD_BATCH_BYTES: int
SMALL_EIGVALSH_MAX_N: int
SVD_MAX_ELEMENTS: int
KS_COARSE_STRIDE: int
KS_SERIAL_PAIRS: int
KS_LEAF_POINTS: int
GPU_KS_CHUNK_ELEMENTS: int
SHORT_TAIL: int
CONV1D_MAX_K: int
CHUNK_TASKS: int
IN_FLIGHT_PER_WORKER: int
ALONE_SECONDS: float
POOL_STARTUP_SECONDS: float
INDEX_EPS_FACTOR: float
INDEX_REL_TOL: float
FLAT_REL_TOL: float


def reset() -> None:
    """Restore every constant to :data:`DEFAULTS` (for tests that change them)."""
    module = sys.modules[__name__]
    for key, value in DEFAULTS.items():
        setattr(module, key, value)


reset()
