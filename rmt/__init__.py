"""rmt: random-matrix-theory spectra of neural-network weights and Hessians.

Public API (DESIGN.md §3)::

    import rmt
    ev = rmt.esd(W)                 # eigenvalues of X = WᵀW/N, float64, ascending
    m = rmt.esd_metrics(ev, W=W)    # lambda_max, stable_rank, log_norm, entropy, rank_loss, ...
"""

from rmt import errors
from rmt._device import gpu_available
from rmt.metrics import ESDMetrics, esd_metrics
from rmt.spectra import WeightShape, esd, esd_batch, weight_shape

__version__ = "0.1.0"

__all__ = [
    "ESDMetrics",
    "WeightShape",
    "__version__",
    "errors",
    "esd",
    "esd_batch",
    "esd_metrics",
    "gpu_available",
    "weight_shape",
]
