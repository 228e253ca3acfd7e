"""rmt: random-matrix-theory spectra of neural-network weights and Hessians.

Public API (docs/design.md has the module map)::

    import rmt
    ev = rmt.esd(W)                 # eigenvalues of X = WᵀW/N, float64, ascending
    m = rmt.esd_metrics(ev, W=W)    # lambda_max, stable_rank, log_norm, entropy, rank_loss, ...
    pl = rmt.fit_powerlaw(ev)       # alpha, xmin, D (same as powerlaw with alpha uncapped)
    mpf = rmt.fit_mp(ev, N=N)       # sigma2, lambda_plus, spikes by Tracy-Widom
    res = rmt.classify(W)           # one of the 5+1 phases, with the numbers that decided it
"""

from rmt import architecture, errors, heavytail, io, mp, plot, pretrained, synthetic, tracywidom
from rmt._device import gpu_available
from rmt.assign import assign
from rmt.columns import COLUMNS
from rmt.comparison import COMPARISON_COLUMNS, compare
from rmt.experts import expert_summary
from rmt.heavytail import PowerLawFit, fit_powerlaw
from rmt.hill import HillFit, alpha_hill
from rmt.metrics import ESDMetrics, esd_metrics
from rmt.mp import MPFit, fit_mp
from rmt.phases import Phase, PhaseResult, PhaseThresholds, classify, classify_esd
from rmt.randomized import TrapResult, traps
from rmt.runner import analyze, summary
from rmt.spectra import WeightShape, esd, esd_batch, weight_shape
from rmt.trajectory import track, track_summary

__version__ = "0.1.0"

__all__ = [
                 "COLUMNS",
                 "COMPARISON_COLUMNS",
                 "ESDMetrics",
                 "HillFit",
                 "MPFit",
                 "Phase",
                 "PhaseResult",
                 "PhaseThresholds",
                 "PowerLawFit",
                 "TrapResult",
                 "WeightShape",
                 "__version__",
                 "alpha_hill",
                 "analyze",
                 "architecture",
                 "assign",
                 "classify",
                 "classify_esd",
                 "compare",
                 "errors",
                 "esd",
                 "esd_batch",
                 "esd_metrics",
                 "expert_summary",
                 "fit_mp",
                 "fit_powerlaw",
                 "gpu_available",
                 "heavytail",
                 "io",
                 "mp",
                 "plot",
                 "pretrained",
                 "summary",
                 "synthetic",
                 "track",
                 "track_summary",
                 "tracywidom",
                 "traps",
                 "weight_shape",
]
