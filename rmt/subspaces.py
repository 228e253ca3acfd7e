"""Singular subspaces of two matrices of the same shape: overlaps, intruder dimensions, CKA.

A weight W (out × in, as rmt reads it) has left singular vectors in its output space and
right ones in its input space. Both come from the Gram eigendecomposition on the small
side (:func:`rmt.vectors.decompose`, float64 accumulation, LAPACK ``syevd``): the
eigenvectors are the singular vectors of that side, and the other side's are
``A v / σ`` for the top ones only (one pass over the stored matrix per k vectors). Their
error is LAPACK's: eigenvectors of the Gram are accurate to ~ M·eps·λmax / gap, so a
singular vector whose σ² is separated from its neighbours by a relative gap g is good to
about M·eps/g (cosines to ~1e-13 for g > 1e-3 in float64).

* **Principal angles** between the top-k singular subspaces of the two matrices, left and
  right (Björck & Golub 1973, ``scipy.linalg.subspace_angles``); ``overlap`` is the mean
  cos² of the angles, ‖U₁ᵀU₂‖²_F / k: 1 for the same subspace, about k/dim for random ones.
* **Intruder dimensions** (Shuttleworth, Andreas, Torralba & Sharma, "LoRA vs Full
  Fine-tuning: An Illusion of Equivalence", NeurIPS 2025): a left singular vector among the
  top k of the fine-tuned matrix whose largest |cosine| with every left singular vector of
  the base matrix is below ε. As the authors' code does, the base's vectors are all of its
  thin SVD's (those with σ above the numerical-zero threshold when the output side is the
  long one, where the others are not determined).
* **WeightWatcher's CKA** (``WeightWatcher.distances(method="cka")``, 0.7.7):
  ‖W₁ᵀW₂‖_F / √(‖W₁ᵀW₁‖_F ‖W₂W₂ᵀ‖_F), uncentred; kept for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg

from rmt._device import to_host
from rmt.metrics import numerical_zero_threshold
from rmt.vectors import Eigendecomposition, _float64, _times, decompose

__all__ = ["SingularVectors", "SubspaceComparison", "compare_subspaces", "intruder_dimensions",
           "singular_vectors", "t_times_blocks", "ww_cka"]

#: Rows decoded per block in the products with a stored matrix (float64 blocks of
#: 4096 × M: 12.6 MB at M = 384, 134 MB at M = 4096).
BLOCK_ROWS = 4096


def t_times_blocks(A: Any, blocks: Any) -> np.ndarray:
    """Aᵀ B in float64, B given as its consecutive row blocks (arrays, or a file read again
    block by block: ``LazyTensor.row_blocks``), A (n × p) in any storage dtype.

    Parameters
    ----------
    A : array
        n × p.
    blocks : iterable of arrays
        B's rows in order, n in all.

    Returns
    -------
    numpy.ndarray
        p × q, float64.
    """
    A = to_host(A)
    out: np.ndarray | None = None
    start = 0
    a_buf = b_buf = None  # float64 copies of the blocks, reused (no fresh pages per block)
    for block in blocks:
        b, b_buf = _float64(to_host(block), b_buf)
        a, a_buf = _float64(A[start:start + len(b)], a_buf)
        if out is None:
            out = a.T @ b
        else:
            out += a.T @ b
        start += len(b)
    return out if out is not None else np.zeros((A.shape[1], 0))


def _t_times(A: Any, B: Any) -> np.ndarray:
    """Aᵀ B in float64, A (n × p) and B (n × q) in any storage dtype, by row blocks."""
    return t_times_blocks(A, (B[s:s + BLOCK_ROWS] for s in range(0, B.shape[0], BLOCK_ROWS)))


@dataclass(frozen=True)
class SingularVectors:
    """The singular values and vectors of one matrix, from its Gram eigendecomposition.

    Attributes
    ----------
    sv : numpy.ndarray
        Singular values, descending (stored units, not /√N).
    eigen_side : {"left", "right"}
        Which side's vectors the eigendecomposition holds in full.
    full : numpy.ndarray
        That side's vectors as columns, in the order of ``sv`` (dim × M, float64; the top
        ones only when the decomposition was partial).
    A : array
        The matrix oriented so that ``A.shape == (N, M)`` with the Gram ``AᵀA``; the other
        side's vector j is ``A @ full[:, j] / sv[j]``.
    tops : dict, optional
        Precomputed top vectors per side (:meth:`reduced`).
    gram : numpy.ndarray, optional
        The Gram matrix AᵀA, when the decomposition kept it.
    """

    sv: np.ndarray = field(repr=False)
    eigen_side: str
    full: np.ndarray = field(repr=False)
    A: Any = field(repr=False)
    tops: dict[str, np.ndarray] | None = field(default=None, repr=False)
    gram: np.ndarray | None = field(default=None, repr=False)

    def reduced(self, k: int, *, keep_full: bool = False, keep_matrix: bool = False
                ) -> SingularVectors:
        """The same with only what a comparison with top-k vectors needs (less memory).

        Parameters
        ----------
        k : int
            Top vectors kept, both sides.
        keep_full : bool, default False
            Keep the eigen side's full set (``ww_cka`` needs it when that side is left).
        keep_matrix : bool, default False
            Keep the matrix ``A`` (``ww_cka`` needs it when the eigen side is right).

        Returns
        -------
        SingularVectors
        """
        kk = min(int(k), self.nonzero())
        # copies, so that the full decomposition (and the matrix) can be freed
        tops = {side: np.array(self.top(side, kk)) for side in ("left", "right")}
        full = self.full if keep_full and self.gram is None else np.array(self.full[:, :kk])
        return SingularVectors(self.sv.copy(), self.eigen_side, full,
                               self.A if keep_matrix else None, tops,
                               self.gram if keep_full else None)

    @classmethod
    def from_eigen(cls, eigen: Eigendecomposition) -> SingularVectors:
        """From a 2-D matrix's :func:`rmt.vectors.decompose`.

        Parameters
        ----------
        eigen : rmt.vectors.Eigendecomposition
            Of one matrix (not a conv kernel or stack).

        Returns
        -------
        SingularVectors

        Raises
        ------
        ValueError
            The decomposition pools several slices.
        """
        if len(eigen.vectors) != 1:
            raise ValueError("singular vectors of one matrix: this decomposition pools "
                             f"{len(eigen.vectors)} slices")
        lam = np.clip(eigen.evals[::-1] * eigen.unit, 0, None)  # eigenvalues of AᵀA
        V = eigen.vectors[0][:, ::-1]
        return cls(np.sqrt(lam), "left" if eigen.transpose else "right", V, eigen.mats[0],
                   gram=eigen.gram)

    def nonzero(self) -> int:
        """How many singular values are above the numerical-zero threshold.

        Returns
        -------
        int
        """
        lam = self.sv[::-1] ** 2
        return int(np.count_nonzero(lam > numerical_zero_threshold(lam, len(lam))))

    def top(self, side: str, k: int) -> np.ndarray:
        """The top-k unit singular vectors of one side, as columns.

        Parameters
        ----------
        side : {"left", "right"}
            Output (left) or input (right) space of W as read (out × in).
        k : int
            How many (at most the number of nonzero singular values).

        Returns
        -------
        numpy.ndarray
            dim × k, float64.
        """
        if self.tops is not None and self.tops[side].shape[1] >= k:
            return self.tops[side][:, :k]
        if side == self.eigen_side:
            return self.full[:, :k]
        return _times(self.A, self.full[:, :k], BLOCK_ROWS) / self.sv[:k]


def singular_vectors(W: Any, *, device: Any = "auto", n_threads: int | None = None
                     ) -> SingularVectors:
    """Singular values and vectors of a 2-D matrix from its Gram eigendecomposition.

    Parameters
    ----------
    W : array_like
        out × in matrix in any storage dtype rmt reads (bf16, fp8, ...).
    device : {"auto", "cpu", "gpu"}
        Where the Gram matrix and eigendecomposition run.
    n_threads : int, optional
        BLAS/Numba threads (never above the limits in force).

    Returns
    -------
    SingularVectors
    """
    if np.ndim(W) != 2:
        raise ValueError(f"singular_vectors needs a 2-D matrix, got shape {np.shape(W)}")
    return SingularVectors.from_eigen(decompose(W, normalize=False, device=device,
                                                n_threads=n_threads))


@dataclass(frozen=True)
class SubspaceComparison:
    """How the top singular subspaces of a matrix moved from ``base`` to ``other``.

    Attributes
    ----------
    k : int
        Vectors compared per side (the requested k, capped by either matrix's rank).
    left_overlap, right_overlap : float
        Mean cos² of the principal angles between the top-k subspaces.
    left_angle_max, right_angle_max : float
        The largest principal angle, degrees.
    intruder_index : tuple of int
        Positions (0 = largest σ) of ``other``'s intruder dimensions among its top k.
    intruder_sv : tuple of float
        Their singular values (stored units).
    intruder_max_cos : tuple of float
        Their largest |cosine| with any left singular vector of ``base`` (each < ε).
    epsilon : float
        The threshold used.
    """

    k: int
    left_overlap: float
    right_overlap: float
    left_angle_max: float
    right_angle_max: float
    intruder_index: tuple[int, ...]
    intruder_sv: tuple[float, ...]
    intruder_max_cos: tuple[float, ...]
    epsilon: float

    @property
    def n_intruders(self) -> int:
        """Number of intruder dimensions."""
        return len(self.intruder_index)

    def to_dict(self) -> dict[str, Any]:
        """The fields and ``n_intruders`` as a plain dict.

        Returns
        -------
        dict
        """
        return {"k": self.k, "left_overlap": self.left_overlap,
                "right_overlap": self.right_overlap, "left_angle_max": self.left_angle_max,
                "right_angle_max": self.right_angle_max, "n_intruders": self.n_intruders,
                "intruder_index": self.intruder_index, "intruder_sv": self.intruder_sv,
                "intruder_max_cos": self.intruder_max_cos, "epsilon": self.epsilon}


def _max_cos_with_left(base: SingularVectors, Y: np.ndarray) -> np.ndarray:
    """For each column y of Y (output space), max_j |y · u_j| over base's left vectors."""
    if base.eigen_side == "left":  # the complete set is the eigenvectors themselves
        C = Y.T @ base.full
    else:  # u_j = A v_j / σ_j for the nonzero σ_j only: Yᵀ A V / σ, one pass over A
        r = base.nonzero()
        C = (_t_times(base.A, Y).T @ base.full[:, :r]) / base.sv[:r]
    return np.abs(C).max(axis=1) if C.size else np.zeros(Y.shape[1])


def _angles(X: np.ndarray, Y: np.ndarray) -> tuple[float, float]:
    theta = scipy.linalg.subspace_angles(X, Y)
    return float(np.mean(np.cos(theta) ** 2)), float(np.degrees(theta.max()))


def compare_subspaces(base: SingularVectors, other: SingularVectors, *, k: int = 10,
                      epsilon: float = 0.5) -> SubspaceComparison:
    """Principal angles between the top-k singular subspaces and other's intruder dimensions.

    Parameters
    ----------
    base, other : SingularVectors
        Of two matrices of the same shape (base: before fine-tuning).
    k : int, default 10
        Top singular vectors compared (Shuttleworth et al. use 10).
    epsilon : float, default 0.5
        Intruder threshold on the largest |cosine| with base's left singular vectors
        (the paper sweeps it; 0.5 is its middle value).

    Returns
    -------
    SubspaceComparison
    """
    if not 0 < epsilon <= 1:
        raise ValueError(f"epsilon must be in (0, 1], got {epsilon!r}")
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k!r}")
    kk = min(int(k), base.nonzero(), other.nonzero())
    if kk == 0:
        nan = float("nan")
        return SubspaceComparison(0, nan, nan, nan, nan, (), (), (), float(epsilon))
    left_o, right_o = other.top("left", kk), other.top("right", kk)
    left_overlap, left_angle = _angles(base.top("left", kk), left_o)
    right_overlap, right_angle = _angles(base.top("right", kk), right_o)
    best = _max_cos_with_left(base, left_o)
    idx = np.flatnonzero(best < epsilon)
    return SubspaceComparison(kk, left_overlap, right_overlap, left_angle, right_angle,
                              tuple(int(i) for i in idx),
                              tuple(float(other.sv[i]) for i in idx),
                              tuple(float(best[i]) for i in idx), float(epsilon))


def intruder_dimensions(W_base: Any, W_other: Any, *, k: int = 10, epsilon: float = 0.5,
                        device: Any = "auto") -> SubspaceComparison:
    """Compare the singular subspaces of two matrices (see :func:`compare_subspaces`).

    Parameters
    ----------
    W_base, W_other : array_like
        out × in matrices of the same shape, any storage dtype rmt reads.
    k : int, default 10
        Top singular vectors compared.
    epsilon : float, default 0.5
        Intruder threshold.
    device : {"auto", "cpu", "gpu"}
        Where the decompositions run.

    Returns
    -------
    SubspaceComparison
    """
    if np.shape(W_base) != np.shape(W_other):
        raise ValueError(f"shapes differ: {np.shape(W_base)} vs {np.shape(W_other)}")
    return compare_subspaces(singular_vectors(W_base, device=device),
                             singular_vectors(W_other, device=device), k=k, epsilon=epsilon)


def ww_cka(base: SingularVectors, other: SingularVectors, *,
           cross_norm: float | None = None) -> float:
    """WeightWatcher's uncentred CKA ‖W₁ᵀW₂‖_F / √(‖W₁ᵀW₁‖_F ‖W₂W₂ᵀ‖_F).

    W is the matrix as read (out × in). The Gram norms come from the singular values;
    ‖W₁ᵀW₂‖_F, when the Gram is W Wᵀ, is √tr(G₁G₂): ⟨G₁, G₂⟩ when both Gram matrices
    were kept, else from the eigenvectors; otherwise one blocked float64 pass forms the
    in × in product.

    Parameters
    ----------
    base, other : SingularVectors
        Of two matrices of the same shape.
    cross_norm : float, optional
        ‖W₁ᵀW₂‖_F when the caller has it (``rmt.compare`` streams it from the files).

    Returns
    -------
    float
        As WeightWatcher 0.7.7 computes it (including its +1e-6 on a norm below 1e-6).
    """
    if cross_norm is not None:
        cross = float(cross_norm)
    elif base.eigen_side == "left" and other.eigen_side == "left":
        # W = Aᵀ: ‖W₁ᵀW₂‖² = ‖A₁A₂ᵀ‖² = tr(G₁G₂), G = V diag(σ²) Vᵀ
        if other.gram is not None and base.gram is not None:
            cross = float(np.sqrt(max(float(np.vdot(base.gram, other.gram)), 0.0)))
        elif other.gram is not None and base.full.shape[1] == base.sv.size:
            # tr(G₁G₂) = Σ_i σ²₁ᵢ v₁ᵢᵀ G₂ v₁ᵢ (the other's Gram, the base's vectors)
            quad = np.einsum("ij,ij->j", base.full, other.gram @ base.full)
            cross = float(np.sqrt(max(float(np.dot(base.sv ** 2, quad)), 0.0)))
        else:
            X = base.full.T @ other.full
            cross = float(np.sqrt(np.einsum("i,ij,j->", base.sv ** 2, X ** 2,
                                            other.sv ** 2)))
    else:
        cross = float(np.linalg.norm(_t_times(base.A, other.A)))
    norm = float(np.sqrt(np.sqrt(np.sum(base.sv ** 4)) * np.sqrt(np.sum(other.sv ** 4))))
    if norm < 1e-6:
        norm += 1e-6
    return cross / norm
