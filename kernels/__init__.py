"""Compute kernels of :mod:`rmt`, installed as ``rmt.kernels``.

``cpu`` (NumPy/SciPy BLAS + Numba) and ``gpu`` (CuPy) are twins: the same function
names and signatures, so callers pick a module and call it. Nothing here knows about
layers, files or phases. ``gpu`` imports CuPy lazily, inside its functions.
"""
