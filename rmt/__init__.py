"""rmt: random-matrix-theory spectra of neural-network weights and Hessians.

Public API (DESIGN.md §3)::

    import rmt
    ev = rmt.esd(W)                 # eigenvalues of X = WᵀW/N, float64, ascending
    m = rmt.esd_metrics(ev, W=W)    # lambda_max, stable_rank, log_norm, entropy, rank_loss, ...
    pl = rmt.fit_powerlaw(ev)       # alpha, xmin, D (same as powerlaw with alpha uncapped)
    mpf = rmt.fit_mp(ev, N=N)       # sigma2, lambda_plus, spikes by Tracy-Widom
    res = rmt.classify(W)           # one of the 5+1 phases, with the numbers that decided it
"""

import importlib.util as _importlib_util
import sys as _sys
from pathlib import Path as _Path


def _map_source_kernels() -> None:
    # Installed (wheel or editable), kernels/ is importable as rmt.kernels (setup.cfg's
    # package_dir). Imported straight from a source checkout (tests run from the repo root,
    # a notebook next to it), rmt/ is on the path but kernels/ sits beside it: map it here.
    here = _Path(__file__).resolve().parent
    source = here.parent / "kernels"
    if "rmt.kernels" in _sys.modules or (here / "kernels").is_dir():
        return
    if not (source / "__init__.py").is_file() or _importlib_util.find_spec("rmt.kernels"):
        return
    spec = _importlib_util.spec_from_file_location(
        "rmt.kernels", source / "__init__.py", submodule_search_locations=[str(source)]
    )
    module = _importlib_util.module_from_spec(spec)
    _sys.modules["rmt.kernels"] = module
    spec.loader.exec_module(module)
    # as an import of the subpackage would, so that ``rmt.kernels`` resolves as an attribute
    _sys.modules[__name__].kernels = module


_map_source_kernels()

from rmt import errors, heavytail, io, mp, plot, pretrained, synthetic, tracywidom  # noqa: E402
from rmt._device import gpu_available  # noqa: E402
from rmt.columns import COLUMNS  # noqa: E402
from rmt.heavytail import PowerLawFit, fit_powerlaw  # noqa: E402
from rmt.metrics import ESDMetrics, esd_metrics  # noqa: E402
from rmt.mp import MPFit, fit_mp  # noqa: E402
from rmt.phases import Phase, PhaseResult, PhaseThresholds, classify, classify_esd  # noqa: E402
from rmt.runner import analyze, summary  # noqa: E402
from rmt.spectra import WeightShape, esd, esd_batch, weight_shape  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "COLUMNS",
    "ESDMetrics",
    "MPFit",
    "Phase",
    "PhaseResult",
    "PhaseThresholds",
    "PowerLawFit",
    "WeightShape",
    "__version__",
    "analyze",
    "classify",
    "classify_esd",
    "errors",
    "esd",
    "esd_batch",
    "esd_metrics",
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
    "tracywidom",
    "weight_shape",
]
