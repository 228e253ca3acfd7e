"""The column schema of ``rmt.analyze``'s table and the registry of per-layer analyses.

A layer is computed once into a :class:`LayerResult` (its ESD and one result object per
registered :class:`Analysis`), then presented as a row whose columns are the
:class:`Column` objects of :data:`COLUMNS`. Every column says what it is, its unit and
which function computes it, so this module is the one place where the table is
documented. ``docs/design.md`` shows how to add an analysis.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ANALYSES", "COLUMNS", "OPTIONS", "Analysis", "Column", "Companion", "LayerResult",
           "attribute", "entry_std", "layer_rng", "register", "table_columns", "unregister"]


@dataclass(frozen=True)
class Column:
    """One column of the table.

    Attributes
    ----------
    name : str
        Column name (WeightWatcher's where the concept is the same).
    description : str
        What the value is, in one line.
    unit : str
        Unit or scale (``"eigenvalue"``: the ESD's units, X = WᵀW/N unless
        ``normalize=False``; ``"log10"``; ``"count"``; ``"s"``; ``""`` for labels and
        scale-free numbers).
    source : str
        The public function that computes it.
    value : callable, optional
        ``value(result, layer)``: the entry, from the owning analysis' result object and
        the :class:`LayerResult`. None for the columns the reader fills in.
    """

    name: str
    description: str
    unit: str = ""
    source: str = ""
    value: Callable[[Any, LayerResult], Any] | None = field(default=None, repr=False,
                                                             compare=False)

    def __str__(self) -> str:
        return self.description


@dataclass
class LayerResult:
    """Everything computed for one matrix (or pooled conv kernel), before presentation.

    Attributes
    ----------
    name : str
        Row name.
    shape : rmt.spectra.WeightShape
        How the weight was read (N ≥ M, slices).
    evals : numpy.ndarray
        The ESD, ascending (float64).
    nonzero : numpy.ndarray
        The eigenvalues above the numerical-zero threshold M·eps·λmax.
    options : rmt.layers.Options
        The run's options (normalisation, conv rule, thresholds, device).
    results : dict
        Result object of each analysis that ran, by analysis name (``"metrics"``,
        ``"powerlaw"``, ``"mp"``, ``"phase"``, then plug-ins).
    failed : dict
        Why an optional analysis produced nothing, by analysis name.
    warnings : list of str
        Notes for the row's ``warning`` column.
    eigen : rmt.vectors.Eigendecomposition or None
        The full eigendecomposition the ESD came from, when an enabled analysis needs
        eigenvectors (``vectors=True``): one decomposition serves both.
    companions : dict
        By analysis name: ``(state, evals)``, the state of the :class:`Companion` an
        enabled analysis asked for and the ESD of its matrix (computed together with the
        layer's own; the matrix itself is not kept).
    """

    name: str
    shape: Any
    evals: np.ndarray
    nonzero: np.ndarray
    options: Any
    results: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    eigen: Any = None
    companions: dict[str, tuple[Any, np.ndarray]] = field(default_factory=dict)


@dataclass(frozen=True)
class Companion:
    """A matrix whose ESD an analysis needs, computed together with the layer's own.

    Eigenvalues of two same-size Gram matrices cost less solved together than one after
    the other (``rmt.spectra.esds_together``), so an analysis that needs a second ESD of
    a matrix derived from W (``randomize``: W shuffled) hands it to the pipeline first.

    Attributes
    ----------
    matrix : array
        Same shape as W.
    state : object
        Whatever the analysis needs later with it (the generator after the draw).
    """

    matrix: Any
    state: Any = None


@dataclass(frozen=True)
class Analysis:
    """A per-layer analysis: a function of the layer's ESD/weight and the columns it adds.

    Attributes
    ----------
    name : str
        Key of its result in :attr:`LayerResult.results`.
    compute : callable
        ``compute(layer, W) -> result`` (a dataclass, or None when it does not apply);
        it may read the results of analyses registered before it. A
        :class:`rmt.errors.DataError` means "no result for this layer".
    columns : tuple of Column
        Columns it adds, each with ``value(result, layer)``.
    failure : str
        Prefix of the row's warning when ``compute`` raises DataError
        (``"no power-law fit"``); empty: the error text alone.
    required : bool
        Whether a DataError fails the whole row (the phase needs ≥ 4 eigenvalues).
    warning : callable, optional
        ``warning(result) -> str``: a caution to add to the row's warning column.
    option : str
        The ``rmt.analyze`` keyword that turns it on (``"randomize"``); empty: always on.
        An analysis that is off neither runs nor adds columns to the table.
    companion : callable, optional
        ``companion(W, options, name) -> Companion | None``: a matrix whose ESD the
        pipeline computes together with the layer's, before any analysis runs; it
        arrives in ``layer.companions[name]``. Called only for 2-D weights on the host
        when the layer's ESD comes without eigenvectors; ``compute`` must work without it.
    """

    name: str
    compute: Callable[[LayerResult, Any], Any]
    columns: tuple[Column, ...]
    failure: str = ""
    required: bool = False
    warning: Callable[[Any], str] | None = None
    option: str = ""
    companion: Callable[[Any, Any, str], Companion | None] | None = None

    def enabled(self, options: Any) -> bool:
        """Whether it runs with these options.

        Parameters
        ----------
        options : rmt.layers.Options
            The run's options (``options.enabled`` lists the opt-in switches turned on).

        Returns
        -------
        bool
        """
        return not self.option or self.option in getattr(options, "enabled", ())

    @property
    def module(self) -> str:
        """Module that defines ``compute``: worker processes import it before running."""
        return getattr(self.compute, "__module__", "") or ""


def attribute(name: str) -> Callable[[Any, LayerResult], Any]:
    """The ``value`` function of a column that is one attribute of its analysis' result.

    Parameters
    ----------
    name : str
        Attribute of the result object.

    Returns
    -------
    callable
        ``value(result, layer) -> getattr(result, name)``.
    """
    return lambda result, layer: getattr(result, name)


def entry_std(fit: Any, layer: LayerResult) -> float:
    """The entry standard deviation of an MP fit's bulk, √σ², whatever the ESD's units.

    Parameters
    ----------
    fit : rmt.MPFit or None
        A fit of ``layer``'s (or its shuffled matrix's) ESD; σ² is in the ESD's units.
    layer : LayerResult
        Gives the normalisation and N.

    Returns
    -------
    float
        NaN without a fit.
    """
    if fit is None:
        return float("nan")
    unit = 1.0 if layer.options.normalize else float(layer.shape.N)
    return float(np.sqrt(fit.sigma2 / unit))


def layer_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of one layer: a function of the run's seed and the layer's name only.

    Every analysis that draws random numbers takes its generator from here (with its own
    suffix on the name, ``f"{name}#alpha"``), so results do not depend on scheduling.

    Parameters
    ----------
    seed : int
        The run's seed (``rmt.analyze(rng=...)``).
    name : str
        The row name.

    Returns
    -------
    numpy.random.Generator
    """
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def _reader_columns() -> dict[str, Column]:
    c = Column
    return {col.name: col for col in (
        c("layer_id", "position of the tensor in the checkpoint (0-based, counting every "
          "tensor)", "count", "rmt.io.open_checkpoint"),
        c("name", "tensor name as stored; stacked 3-D tensors get one row per matrix, "
          "name[e]", "", "rmt.io.open_checkpoint"),
        c("block", "index of the repeated unit the tensor is in (layers.17, h.3, "
          "encoder.layer.5; nested stages numbered in order); empty outside them", "count",
          "rmt.architecture.annotate"),
        c("role", "what the tensor does: q, k, v, o, qkv, gate, up, down, gate_up, fc_in, "
          "fc_out, embed, pos_embed, lm_head, router, conv, norm or other (from its name); "
          "qk and ov for one head's bilinear maps", "", "rmt.architecture.role_of"),
        c("expert", "routed expert index, 'shared' for a shared expert, empty outside "
          "experts", "", "rmt.architecture.annotate"),
        c("head", "attention head of a per-head row (heads=True: name[h3], a fused "
          "projection's sections name[q,h3], the bilinear maps qk[h3], ov[h3])", "count",
          "rmt.heads"),
        c("shape", "stored shape", "", "rmt.io.open_checkpoint"),
        c("dtype", "storage dtype", "", "rmt.io.open_checkpoint"),
        c("layout", "what the stored tensor was read as (matrix, convNd, stack of E) and "
          "why: the framework's layer type, the name, or the shape rule", "",
          "rmt.io.layout"),
        c("N", "rows of each matrix after orienting so that N >= M", "count",
          "rmt.weight_shape"),
        c("M", "columns of each matrix (N >= M)", "count", "rmt.weight_shape"),
        c("Q", "N/M", "", "rmt.weight_shape"),
        c("num_slices", "matrices pooled into the ESD (kh*kw for a Conv2d kernel, k for "
          "Conv1d)", "count", "rmt.weight_shape"),
        c("num_evals", "eigenvalues in the ESD (M*num_slices)", "count", "rmt.weight_shape"),
    )}


def _closing_columns() -> dict[str, Column]:
    return {col.name: col for col in (
        Column("status", "'success' or 'failed'", "", "rmt.analyze"),
        Column("warning", "why a layer failed, or what to be careful about (short tail, "
               "...)", "", "rmt.analyze"),
        Column("seconds", "wall time spent on the layer", "s", "rmt.analyze"),
    )}


#: Registered analyses, in the order they run (later ones may read earlier results).
ANALYSES: dict[str, Analysis] = {}

#: The opt-in switches of the registered analyses (``rmt.analyze`` keywords).
OPTIONS: list[str] = []

#: Every column of the table, in table order: reader columns, each analysis' columns,
#: then status, warning and seconds. ``str(COLUMNS[name])`` is the description.
COLUMNS: dict[str, Column] = {}


def _rebuild_columns() -> None:
    columns = _reader_columns()
    for analysis in ANALYSES.values():
        columns.update({col.name: col for col in analysis.columns})
    columns.update(_closing_columns())
    COLUMNS.clear()
    COLUMNS.update(columns)


def register(analysis: Analysis) -> Analysis:
    """Add an analysis (and its columns) to every later ``rmt.analyze`` run.

    Parameters
    ----------
    analysis : Analysis
        Its name must be new, or the name of the analysis it replaces (re-registering
        the same module reloads it); its column names must not clash with another's.

    Returns
    -------
    Analysis
        The argument, so that ``register`` can be used where the analysis is defined.

    Raises
    ------
    ValueError
        A column name already owned by another analysis or by the reader.
    """
    owners = {col: name for name, a in ANALYSES.items() if name != analysis.name
              for col in (c.name for c in a.columns)}
    reserved = set(_reader_columns()) | set(_closing_columns())
    for col in analysis.columns:
        if col.value is None:
            raise ValueError(f"column {col.name!r} of analysis {analysis.name!r} has no value "
                             "function")
        if col.name in reserved or col.name in owners:
            owner = owners.get(col.name, "the reader")
            raise ValueError(f"column {col.name!r} of analysis {analysis.name!r} is already "
                             f"defined by {owner}")
    ANALYSES[analysis.name] = analysis
    _rebuild_columns()
    OPTIONS[:] = _options()
    return analysis


def table_columns(enabled: Any = ()) -> list[str]:
    """The columns of a table made with these opt-in analyses turned on (in order).

    Parameters
    ----------
    enabled : iterable of str
        Options turned on (``{"randomize"}``).

    Returns
    -------
    list of str
    """
    on = set(enabled)
    off = {col.name for a in ANALYSES.values() if a.option and a.option not in on
           for col in a.columns}
    return [name for name in COLUMNS if name not in off]


def _options() -> list[str]:
    return sorted({a.option for a in ANALYSES.values() if a.option})


def unregister(name: str) -> None:
    """Remove a plug-in analysis and its columns (``KeyError`` if not registered).

    Parameters
    ----------
    name : str
        The analysis.
    """
    del ANALYSES[name]
    _rebuild_columns()
    OPTIONS[:] = _options()


_rebuild_columns()
