"""How a stored tensor is read as matrices: its :class:`Layout`.

Frameworks store the same layer differently. PyTorch (and ONNX) keep a conv kernel as
``(out, in, kh, kw)`` and a linear weight as ``(out, in)``; Keras keeps a Conv2D kernel
as ``(kh, kw, in, out)``, a Conv1D kernel as ``(k, in, out)`` and an attention
projection as ``(d_model, heads, head_dim)``. rmt's spectral code takes the PyTorch
order, so every reader that knows its framework attaches a layout saying how to turn
the stored array into that order; where nothing is known, :func:`infer_layout` decides
from the name and the shape (only 3-D tensors are ambiguous: a Conv1d kernel
``(out, in, k)`` or a stack of matrices ``(E, rows, cols)`` such as MoE experts).

The layout of every analysed tensor is shown in ``rmt.analyze``'s ``layout`` column,
with where it came from (the framework's layer type, the tensor's name, or the shape
rule), so a surprising reading is visible rather than silent.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from rmt import config

Kind = Literal["matrix", "conv", "stack", "vector"]

_CONV_NAME = re.compile(r"conv", re.IGNORECASE)
_STACK_NAME = re.compile(r"expert", re.IGNORECASE)


@dataclass(frozen=True)
class Layout:
    """How to read a stored tensor in rmt's order.

    Attributes
    ----------
    kind : {"matrix", "conv", "stack"}
        ``matrix``: one matrix; ``conv``: a kernel ``(out, in, *kernel)`` read as
        ``prod(kernel)`` slices of ``out x in`` (or flattened, see ``conv=``);
        ``stack``: ``(E, rows, cols)``, one matrix per leading index; ``vector``: not a
        weight matrix although it has 2 or more axes (a Keras attention bias
        ``(heads, head_dim)``, an ONNX LSTM bias), not analysed.
    perm : tuple of int, optional
        Axis order taking the stored array to that order (``np.transpose``).
    row_axes : int, optional
        For a ``matrix`` stored with more than 2 axes (Keras EinsumDense): the rows are
        the product of the first ``row_axes`` axes, the columns of the rest.
    origin : str
        Why this layout: the framework's layer type, ``"name"`` or ``"shape"``.
    """

    kind: Kind
    perm: tuple[int, ...] | None = None
    row_axes: int | None = None
    origin: str = ""

    @property
    def is_weight(self) -> bool:
        """Whether the tensor is analysed at all (everything but ``vector``)."""
        return self.kind != "vector"

    def shape(self, stored: tuple[int, ...]) -> tuple[int, ...]:
        """The shape in rmt's order."""
        shape = tuple(stored[i] for i in self.perm) if self.perm else tuple(stored)
        if self.row_axes is not None and len(shape) > 2:
            return (math.prod(shape[: self.row_axes]), math.prod(shape[self.row_axes:]))
        return shape

    def apply(self, array: Any) -> Any:
        """The stored array in rmt's order (a view where NumPy can, else a copy)."""
        target = self.shape(tuple(array.shape))
        if self.perm:
            array = array.transpose(self.perm)
        return array.reshape(target) if array.ndim != len(target) else array

    def describe(self, stored: tuple[int, ...]) -> str:
        """A short label for the table: what the tensor was read as, and why."""
        shape = self.shape(stored)
        if self.kind == "stack":
            what = f"stack of {shape[0]}"
        elif self.kind == "conv":
            what = f"conv{len(shape) - 2}d" if len(shape) > 2 else "matrix"
        else:
            what = "matrix"
        if self.row_axes is not None and len(stored) > 2:
            what += f" {shape[0]}x{shape[1]}"
        return f"{what} ({self.origin})" if self.origin else what


def infer_layout(name: str, shape: tuple[int, ...]) -> Layout:
    """The layout of a tensor in PyTorch order when its framework says nothing more.

    2-D: a matrix; 4-D: a conv kernel ``(out, in, kh, kw)``. 3-D, in this order: a name
    containing ``conv`` is a Conv1d kernel and one containing ``expert`` a stack;
    ``(out, 1, k)`` is a Conv1d kernel (a stack of one-row matrices has no spectrum);
    else the shape rule of :data:`rmt.config.CONV1D_MAX_K`.
    """
    if len(shape) != 3:
        return Layout("matrix" if len(shape) <= 2 else "conv")
    if _CONV_NAME.search(name):
        return Layout("conv", origin="name")
    if _STACK_NAME.search(name):
        return Layout("stack", origin="name")
    if shape[1] == 1:
        return Layout("conv", origin="shape")
    k = shape[2]
    if k <= config.CONV1D_MAX_K and k < min(shape[0], shape[1]):
        return Layout("conv", origin="shape")
    return Layout("stack", origin="shape")


def torch_module_layout(class_name: str, attribute: str, ndim: int) -> Layout | None:
    """The layout of parameter ``attribute`` of a PyTorch module of class ``class_name``
    (``Conv1d``, ``Linear``, ...); None when the class says nothing."""
    if attribute != "weight" or ndim < 2:
        return None
    if class_name.startswith(("Conv", "LazyConv")) and ndim >= 3:
        return Layout("conv", origin=f"torch {class_name}")
    if class_name in ("Linear", "Bilinear", "Embedding", "LazyLinear") and ndim == 2:
        return Layout("matrix", origin=f"torch {class_name}")
    return None


# Keras layer types whose kernels are channels-last convolutions, by snake_case class name
# (Keras 3 .weights.h5 paths) or CamelCase class (legacy .h5 model_config).
_KERAS_MHA_IN = {"query", "key", "value", "query_dense", "key_dense", "value_dense"}
_KERAS_MHA_OUT = {"attention_output", "output_dense"}


def keras_layout(parts: list[str], class_name: str | None, shape: tuple[int, ...]) -> Layout:
    """The layout of a Keras variable: its HDF5 path split on ``/``, the class of the
    layer holding it when known (from the model config), and its stored shape.

    Keras stores kernels channels-last: Conv2D ``(kh, kw, in, out)``, Conv2DTranspose
    ``(kh, kw, out, in)``, DepthwiseConv2D ``(kh, kw, in, multiplier)``, Conv1D
    ``(k, in, out)``, Dense ``(in, out)`` and MultiHeadAttention projections
    ``(d_model, heads, head_dim)`` (output: ``(heads, head_dim, d_model)``).
    """
    ndim = len(shape)
    where = f"keras {class_name}" if class_name else "keras"
    lowered = [p.lower() for p in parts]
    if _keras_bias(lowered):
        return Layout("vector", origin=where)
    if ndim == 4:
        if max(shape[:2]) > config.CONV1D_MAX_K and max(shape[2:]) <= config.CONV1D_MAX_K:
            # Keras 1 with Theano ordering stored (out, in, kh, kw): a (64, 3, 3, 3) kernel
            # read channels-last would be 64x3 "spatial" taps of 3x3 matrices
            return Layout("conv", origin=f"{where}, Theano order (out, in, kh, kw)")
        if _keras_depthwise(lowered, class_name):
            # (kh, kw, C, mult) -> (C, mult, kh, kw): like PyTorch's depthwise (C, 1, kh, kw)
            return Layout("conv", (2, 3, 0, 1), origin=where)
        return Layout("conv", (3, 2, 0, 1), origin=where)
    if ndim == 5:
        return Layout("conv", (4, 3, 0, 1, 2), origin=where)
    if ndim != 3:
        return Layout("matrix", origin=where)
    role = next((p for p in reversed(lowered) if p in _KERAS_MHA_IN | _KERAS_MHA_OUT), None)
    if role in _KERAS_MHA_OUT:
        return Layout("matrix", row_axes=2, origin=where)
    if role in _KERAS_MHA_IN:
        return Layout("matrix", row_axes=1, origin=where)
    conv = (class_name is not None and "conv" in class_name.lower()) or any(
        "conv" in p for p in lowered)
    if conv or (class_name is None and shape[0] <= config.CONV1D_MAX_K
                and shape[0] < min(shape[1], shape[2])):
        return Layout("conv", (2, 1, 0), origin=where)
    return Layout("matrix", row_axes=1, origin=where)


def _keras_depthwise(lowered: list[str], class_name: str | None) -> bool:
    """Whether a 4-D Keras variable is a depthwise kernel (kh, kw, C, multiplier)."""
    if "depthwise_kernel" in lowered[-1]:  # legacy .h5 names the variable
        return True
    if class_name is not None and class_name.startswith("DepthwiseConv"):
        return True
    if len(lowered) >= 3 and lowered[-2] == "vars":  # Keras 3: layers/<class>_k/vars/<i>
        layer = re.sub(r"_\d+$", "", lowered[-3])
        return layer == "depthwise_conv2d" or (layer == "separable_conv2d"
                                               and lowered[-1] == "0")
    return False


def _keras_bias(lowered: list[str]) -> bool:
    """Whether a Keras variable is a bias: named so (legacy ``.../bias:0``), or the
    second variable of a Dense/EinsumDense layer (Keras 3 ``..._dense/vars/1``)."""
    if lowered[-1].split(":")[0] == "bias":
        return True
    return (len(lowered) >= 3 and lowered[-2] == "vars" and lowered[-1] == "1"
            and re.sub(r"_\d+$", "", lowered[-3]).endswith("dense"))
