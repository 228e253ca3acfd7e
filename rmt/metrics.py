"""Per-layer metrics of an ESD (WeightWatcher's names, Martin & Mahoney's definitions).

All logarithms are base 10 except inside the entropy. Metrics are computed from the
eigenvalues as given, so λmax, the norms and their logs carry the ESD's
normalisation: with ``rmt.esd(W)`` (``normalize=True``) Σλ = ‖W‖_F²/N and
λmax = ‖W‖₂²/N; with ``normalize=False`` they are WeightWatcher's ‖W‖_F² and ‖W‖₂².
stable_rank, entropy and rank_loss do not depend on the normalisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import scipy.linalg

from rmt import config
from rmt._device import to_host
from rmt.spectra import Conv, _slices, weight_shape

__all__ = ["ESDMetrics", "esd_metrics", "numerical_zero_threshold", "svd_rank_loss"]

EPS64 = float(np.finfo(np.float64).eps)

@dataclass(frozen=True)
class ESDMetrics:
    """Scalar summaries of one layer's ESD.

    Attributes
    ----------
    n_evals : int
        Number of eigenvalues (M, or M·kh·kw for pooled conv slices); ``num_evals`` is
        the same under the table column's name.
    lambda_max : float
        Largest eigenvalue (units of the ESD's normalisation).
    stable_rank : float
        Σλ/λmax = ‖W‖_F²/‖W‖₂² (Martin & Mahoney Eq. 7); scale-free.
    log_norm : float
        log10 Σλ (log10 ‖W‖_F²/N with ``normalize=True``).
    log_spectral_norm : float
        log10 λmax.
    entropy : float
        Matrix entropy −Σ pᵢ ln pᵢ / ln R, pᵢ = λᵢ/Σλ, R = n_evals − rank_loss
        (Martin & Mahoney Eq. 6); in [0, 1], 1 for a flat spectrum.
    rank_loss : int
        Number of singular values ν ≤ νmax·max(N, M)·eps(float64) (NumPy's
        ``matrix_rank`` rule), summed over conv slices.
    rank_loss_method : {"svd", "gram"}
        ``"svd"``: counted on singular values of W; ``"gram"``: counted as eigenvalues
        ≤ M·eps·λmax (numerical zeros of the Gram matrix), an upper bound used when W
        was not given or is too large to decompose.
    """

    n_evals: int
    lambda_max: float
    stable_rank: float
    log_norm: float
    log_spectral_norm: float
    entropy: float
    rank_loss: int
    rank_loss_method: Literal["svd", "gram"]

    @property
    def num_evals(self) -> int:
        """``n_evals`` under the table column's name."""
        return self.n_evals

    def to_dict(self) -> dict[str, Any]:
        """The metrics as a plain dict, keyed by the table's column names.

        Returns
        -------
        dict
        """
        out = asdict(self)
        out["num_evals"] = out.pop("n_evals")
        return out


def numerical_zero_threshold(ev: np.ndarray, M: int) -> float:
    """Eigenvalues at or below ``M·eps(float64)·λmax`` are numerical zeros (docs/science.md §1).

    Parameters
    ----------
    ev : numpy.ndarray
        Eigenvalues.
    M : int
        Columns of each oriented matrix.

    Returns
    -------
    float
    """
    lam_max = float(np.max(ev)) if len(ev) else 0.0
    return M * EPS64 * max(lam_max, 0.0)


def svd_rank_loss(W: Any, conv: Conv = "slices") -> int:
    """Rank loss of W by singular values: #ν ≤ νmax·max(N, M)·eps(float64) per matrix.

    The epsilon is float64's whatever the storage dtype: with float16/bfloat16 weights
    max(N, M)·eps(storage) ≥ 1 for common sizes and every matrix would look
    rank-deficient (docs/science.md §1).

    Parameters
    ----------
    W : array_like
        Weight as accepted by :func:`rmt.esd`.
    conv : {"slices", "flatten"}
        Conv rule, as in :func:`rmt.esd`.

    Returns
    -------
    int
        Rank loss summed over the matrices W is read as.
    """
    W = to_host(W)
    shape = weight_shape(W.shape, conv)
    if W.ndim > 2:
        mats = W.reshape(W.shape[0], -1)[None] if conv == "flatten" else _slices(W, shape)
    else:
        mats = W[None]
    loss = 0
    for A in mats:
        s = scipy.linalg.svdvals(np.asarray(A, dtype=np.float64), check_finite=False)
        loss += int(np.count_nonzero(s <= s.max() * max(A.shape) * EPS64))
    return loss


def esd_metrics(
    ev: np.ndarray,
    *,
    W: Any = None,
    M: int | None = None,
    conv: Conv = "slices",
    svd_max_elements: int | None = None,
) -> ESDMetrics:
    """Per-layer metrics of an ESD.

    Parameters
    ----------
    ev : numpy.ndarray
        Eigenvalues (any order), e.g. from :func:`rmt.esd`.
    W : array_like, optional
        The weight the ESD came from. When given and the Gram eigenvalues show numerical
        zeros, the rank loss is confirmed on singular values of W (Gram eigenvalues
        below √eps·λmax carry no relative accuracy, so √λ would misjudge them).
    M : int, optional
        Columns of each oriented matrix, for the numerical-zero threshold; taken from W
        when given, else ``len(ev)``.
    conv : {"slices", "flatten"}
        Conv rule W was read with.
    svd_max_elements : int, optional
        Largest W (entries) on which the SVD confirmation runs; default
        :data:`rmt.config.SVD_MAX_ELEMENTS`.

    Returns
    -------
    ESDMetrics

    References
    ----------
    C. H. Martin and M. W. Mahoney, JMLR 22(165), 2021, Eqs. 5–7 (rank, entropy,
    stable rank).
    """
    ev = np.asarray(ev, dtype=np.float64)
    if ev.ndim != 1 or len(ev) == 0:
        raise ValueError(f"ev must be a non-empty 1-D array, got shape {ev.shape}")
    if W is not None:
        M = weight_shape(W.shape, conv).M
    M = len(ev) if M is None else int(M)
    lam = np.clip(ev, 0.0, None)
    lam_max = float(lam.max())
    total = float(lam.sum())
    rank_loss = int(np.count_nonzero(ev <= numerical_zero_threshold(ev, M)))
    method: Literal["svd", "gram"] = "gram"
    if svd_max_elements is None:
        svd_max_elements = config.SVD_MAX_ELEMENTS
    if W is not None and rank_loss > 0 and int(np.prod(W.shape)) <= svd_max_elements:
        rank_loss, method = svd_rank_loss(W, conv), "svd"
    with np.errstate(divide="ignore", invalid="ignore"):
        rank = len(ev) - rank_loss
        if total > 0 and rank > 1:
            p = lam[lam > 0] / total
            entropy = float(-np.sum(p * np.log(p)) / np.log(rank))
        else:
            entropy = float("nan") if total <= 0 else 0.0
        return ESDMetrics(
            n_evals=len(ev),
            lambda_max=lam_max,
            stable_rank=total / lam_max if lam_max > 0 else float("nan"),
            log_norm=float(np.log10(total)),
            log_spectral_norm=float(np.log10(lam_max)),
            entropy=entropy,
            rank_loss=rank_loss,
            rank_loss_method=method,
        )
