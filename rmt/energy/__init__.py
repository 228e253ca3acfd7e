"""The energy check: Pennington & Bahri's theory and the memorisation experiment.

:mod:`rmt.energy.theory` holds the closed forms (spectral density of H = H0 + H1, the
critical energy, the index law, the predicted minimiser energy ½(1 − ϕ)²);
:mod:`rmt.energy.experiment` trains the memorisation task and compares. The experiment
imports the theory, never the reverse.
"""

from rmt.energy.experiment import (
    freeness_diagnostic,
    index_vs_energy,
    levenberg_marquardt,
    memorization_experiment,
    newton_polish,
)
from rmt.energy.theory import (
    critical_energy,
    density,
    edges,
    index,
    index_prefactor,
    predicted_minimizer_energy,
    stieltjes,
)

__all__ = ["critical_energy", "density", "edges", "freeness_diagnostic", "index",
           "index_prefactor", "index_vs_energy", "levenberg_marquardt",
           "memorization_experiment", "newton_polish", "predicted_minimizer_energy",
           "stieltjes"]
