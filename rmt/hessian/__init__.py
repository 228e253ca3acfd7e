"""Hessian spectra from Hessian-vector products: Lanczos, SLQ, extreme eigenvalues, index.

Operators are ``scipy.sparse.linalg.LinearOperator`` (or anything with ``shape`` and
``matvec``); the Hessian is never formed. ``rmt.hessian.mlp`` gives exact HVPs of a small
NumPy network and ``rmt.hessian.torch`` of any PyTorch model (needs the ``torch`` extra),
whole or one block of parameters at a time (``rmt.hessian.blocks``).
"""

from rmt.hessian.blocks import BlockSpectra, block_spectra, default_groups, js_distances
from rmt.hessian.diagonal import diagonal
from rmt.hessian.extreme import extreme_eigs, index, negative_fraction
from rmt.hessian.lanczos import LanczosResult, lanczos
from rmt.hessian.mlp import MLP, TanhMLP
from rmt.hessian.operators import CountingOperator, as_operator, dense_operator, shifted, to_dense
from rmt.hessian.slq import SpectralDensity, slq, wasserstein
from rmt.hessian.top_powerlaw import TopPowerLaw, top_powerlaw
from rmt.hessian.trace import trace

__all__ = ["MLP", "BlockSpectra", "CountingOperator", "LanczosResult", "SpectralDensity",
           "TanhMLP", "TopPowerLaw", "as_operator", "block_spectra", "default_groups",
           "dense_operator", "diagonal", "extreme_eigs", "index", "js_distances", "lanczos",
           "negative_fraction", "shifted", "slq", "to_dense", "top_powerlaw", "trace",
           "wasserstein"]
