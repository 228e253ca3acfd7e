"""ONNX models (``onnx``): initializers, ``Constant`` nodes and subgraphs, dequantised.

Weights live in three places of an ONNX model, and all are read:

- the initializers of the main graph and of every subgraph (the branches of ``If``,
  the bodies of ``Loop`` and ``Scan``, at any depth);
- ``Constant`` nodes holding a tensor of 2 or more dimensions (exporters that fold
  parameters into the graph, such as Silero VAD's, keep every weight there);
- quantised tensors: an integer tensor that feeds ``DequantizeLinear`` (per tensor,
  per axis or blocked), ``QLinearConv``, ``QLinearMatMul``, ``ConvInteger`` or
  ``MatMulInteger`` is dequantised to float32 as ``(q - zero_point) * scale`` with the
  scale and zero point the graph gives it (the integer ops without a scale input:
  ``q - zero_point``).

A weight is named by the tensor name the exporter gave it when that name means
something (``encoder.0.conv.weight``); bare ids (``onnx::Conv_245``, ``123``,
``Constant_0_output``) are replaced by the consuming node and the input's role in its
operator schema (``/encoder/0/conv/Conv.W``). Its layout comes from the operator that
consumes it, through ``Transpose``/``Identity``/``Cast`` chains: a ``Conv`` input is a
kernel ``(out, in, *k)``, a ``MatMul``/``Gemm`` input a matrix, an ``LSTM``/``GRU``/``RNN``
weight a stack of one matrix per direction.

External data must be a regular file inside the model's directory, its range inside
that file and of exactly the tensor's size; a mis-sized tensor is a broken entry.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rmt.errors import CheckpointError
from rmt.io.extras import need
from rmt.io.files import FileIdentity, contained, read_bytes
from rmt.io.layout import Layout
from rmt.io.quantised import Dequantised
from rmt.io.tensor import LazyTensor, checked_shape

MAX_GRAPH_DEPTH = 32

# Where to find a tensor proto in the model: the subgraph path (node, attribute, graph
# index per level), then ("init", i) or ("const", node, attribute).
Locator = tuple[tuple[Any, ...], ...]

# Operators whose weight input is a kernel, a matrix, or a per-direction stack.
_CONV_OPS = {"Conv", "ConvTranspose", "QLinearConv", "ConvInteger", "DeformConv"}
_MATRIX_OPS = {"MatMul", "Gemm", "QLinearMatMul", "MatMulInteger", "Gather", "FusedMatMul",
               "Einsum"}
_RNN_OPS = {"LSTM", "GRU", "RNN"}
_PASS_THROUGH = {"Identity", "Cast", "CastLike", "DequantizeLinear"}
# Integer-weight operators: (weight input, scale input or None, zero-point input, axis).
_QUANTISED_INPUTS = {"QLinearConv": (3, 4, 5, 0), "QLinearMatMul": (3, 4, 5, -1),
                     "ConvInteger": (1, None, 3, 0), "MatMulInteger": (1, None, 3, -1)}
_BARE_ID = re.compile(r"\d+|onnx::.*|.*Constant(_\d+)?_output(_\d+)?|_?v_\d+")


@functools.lru_cache(maxsize=2)
def _onnx_model(identity: FileIdentity) -> Any:
    import onnx

    identity.check()
    return onnx.load(identity.path, load_external_data=False)


def _proto(model: Any, locator: Locator) -> Any:
    graph = model.graph
    *path, last = locator
    for node, attribute, index in path:
        attr = graph.node[node].attribute[attribute]
        graph = attr.g if index is None else attr.graphs[index]
    if last[0] == "init":
        return graph.initializer[last[1]]
    return graph.node[last[1]].attribute[last[2]].t


@dataclass(frozen=True)
class OnnxTensor:
    """Loader of one tensor proto of an ONNX model (picklable; the model is parsed once
    per process)."""

    identity: FileIdentity
    locator: Locator
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    external: tuple[FileIdentity, int] | None  # (file, offset) of external data

    def __call__(self) -> np.ndarray:
        what = f"tensor {self.name!r}: "
        nbytes = math.prod(self.shape) * self.dtype.itemsize
        if self.external is not None:
            file, offset = self.external
            return read_bytes(file, offset, nbytes, what).view(self.dtype).reshape(self.shape)
        from onnx import numpy_helper

        proto = _proto(_onnx_model(self.identity), self.locator)
        if proto.HasField("raw_data"):
            raw = np.frombuffer(proto.raw_data, dtype=np.uint8)
            return raw.view(self.dtype).reshape(self.shape)
        try:
            return np.asarray(numpy_helper.to_array(proto)).reshape(self.shape)
        except (ValueError, TypeError) as err:
            raise CheckpointError(self.identity.path, f"{what}{err}") from None


def _dtype(path: Path, data_type: int, name: str) -> np.dtype:
    from onnx import helper

    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(data_type))
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(path, f"tensor {name!r}: unsupported ONNX type "
                                    f"{data_type}") from None


def _external(path: Path, proto: Any, nbytes: int) -> tuple[FileIdentity, int]:
    info = {entry.key: entry.value for entry in proto.external_data}
    location = info.get("location", "")
    target = contained(path.parent, location)
    if target is None:
        raise CheckpointError(path, f"tensor {proto.name!r}: external data {location!r} "
                                    "is not a file inside the model's directory: refused")
    identity = FileIdentity.of(target)
    size = identity.size
    try:
        offset = int(info.get("offset", 0))
        length = int(info.get("length", size - offset))
    except ValueError:
        raise CheckpointError(path, f"tensor {proto.name!r}: external data offset or "
                                    "length is not an integer") from None
    if offset < 0 or length != nbytes or offset + length > size:
        raise CheckpointError(path, f"tensor {proto.name!r}: external data {offset}.."
                                    f"{offset + length} of a {size}-byte file does not hold "
                                    f"its {nbytes} bytes")
    return identity, offset


def _loader(path: Path, identity: FileIdentity, locator: Locator, proto: Any,
            name: str) -> OnnxTensor:
    """A checked loader of one tensor proto (CheckpointError when it cannot hold its
    declared shape)."""
    from onnx import external_data_helper

    dtype = _dtype(path, proto.data_type, name)
    shape = checked_shape(list(proto.dims), path, f"tensor {name!r}")
    nbytes = math.prod(shape) * dtype.itemsize
    external = None
    if external_data_helper.uses_external_data(proto):
        external = _external(path, proto, nbytes)
    elif proto.HasField("raw_data") and len(proto.raw_data) != nbytes:
        raise CheckpointError(path, f"tensor {name!r}: raw data of {len(proto.raw_data)} "
                              f"bytes for shape {list(shape)} of {dtype} ({nbytes} bytes)")
    return OnnxTensor(identity, locator, name, dtype, shape, external)


@dataclass
class _Graph:
    """What the reader needs of one (sub)graph."""

    graph: Any
    path: tuple[tuple[Any, ...], ...]
    prefix: str


def _graphs(model: Any, path: Path) -> list[_Graph]:
    """The main graph and every subgraph, depth first, without recursion."""
    from onnx import AttributeProto

    out: list[_Graph] = []
    stack = [_Graph(model.graph, (), "")]
    while stack:
        current = stack.pop()
        if len(current.path) > MAX_GRAPH_DEPTH:
            raise CheckpointError(path, f"subgraphs nested deeper than {MAX_GRAPH_DEPTH}")
        out.append(current)
        children = []
        for n, node in enumerate(current.graph.node):
            for a, attr in enumerate(node.attribute):
                label = f"{current.prefix}{node.name or node.op_type}/{attr.name}"
                if attr.type == AttributeProto.GRAPH:
                    children.append(_Graph(attr.g, (*current.path, (n, a, None)), label + "/"))
                elif attr.type == AttributeProto.GRAPHS:
                    children.extend(_Graph(g, (*current.path, (n, a, i)), f"{label}[{i}]/")
                                    for i, g in enumerate(attr.graphs))
        stack.extend(reversed(children))
    return out


def _consumers(graphs: list[_Graph]) -> tuple[dict[str, list[tuple[Any, int]]], dict[str, Any]]:
    """Tensor name -> (node, input index) of every node reading it, and tensor name ->
    the node producing it, over all graphs."""
    uses: dict[str, list[tuple[Any, int]]] = {}
    producers: dict[str, Any] = {}
    for g in graphs:
        for node in g.graph.node:
            for i, name in enumerate(node.input):
                if name:
                    uses.setdefault(name, []).append((node, i))
            for name in node.output:
                producers.setdefault(name, node)
    return uses, producers


def _role(op_type: str, index: int, domain: str) -> str:
    try:
        from onnx import defs

        inputs = defs.get_schema(op_type, domain=domain or "").inputs
        return inputs[min(index, len(inputs) - 1)].name
    except Exception:  # unknown or custom operator
        return f"input{index}"


def _final_use(name: str, uses: dict[str, list[tuple[Any, int]]]
               ) -> tuple[Any, int, tuple[int, ...] | None, Any]:
    """The first node that uses ``name`` as a weight, following pass-through ops and
    transposes: (node, input index, composed permutation or None, the
    DequantizeLinear node on the way or None)."""
    perm: tuple[int, ...] | None = None
    dequantize = None
    seen: set[str] = set()
    while name in uses and name not in seen:
        seen.add(name)
        node, index = uses[name][0]
        if node.op_type == "Transpose" and index == 0:
            attr = {a.name: a for a in node.attribute}
            step = tuple(attr["perm"].ints) if "perm" in attr else None
            if step is None:
                return node, index, perm, dequantize
            perm = step if perm is None else tuple(perm[i] for i in step)
        elif node.op_type in _PASS_THROUGH and index == 0:
            if node.op_type == "DequantizeLinear":
                dequantize = node
        else:
            return node, index, perm, dequantize
        name = node.output[0] if node.output else ""
    return None, -1, perm, dequantize


def _layout(op: Any, index: int, perm: tuple[int, ...] | None, ndim: int) -> Layout | None:
    if op is None:
        return Layout("matrix", perm) if perm and ndim == 2 else None
    origin = f"onnx {op.op_type}"
    if (op.op_type in _RNN_OPS and index == 3) or (op.op_type == "Gemm" and index == 2):
        return Layout("vector", origin=origin)  # biases, 2-D for LSTM/GRU/RNN
    if op.op_type in _CONV_OPS and ndim >= 3:
        return Layout("conv", perm, origin=origin)
    if op.op_type in _RNN_OPS and ndim == 3:
        return Layout("stack", perm, origin=origin)
    if op.op_type in _MATRIX_OPS:
        return Layout("matrix" if ndim == 2 else "stack", perm, origin=origin)
    return None  # shape ops (Slice, Reshape, ...): the name and shape decide


def _row_name(name: str, op: Any, index: int, prefix: str) -> str:
    """The exporter's name, or for a bare id the consuming node and input role (inside a
    subgraph, prefixed with the subgraph's path)."""
    if op is not None and (not name or _BARE_ID.fullmatch(name)):
        return f"{prefix}{op.name or op.op_type}.{_role(op.op_type, index, op.domain)}"
    return name


def iter_onnx(path: Path) -> Iterator[tuple[str, LazyTensor]]:
    """Weights of an ONNX model: initializers, tensor ``Constant`` nodes and those of
    every subgraph, quantised ones dequantised (see the module notes)."""
    need("onnx", "onnx", path)
    identity = FileIdentity.of(path)
    try:
        model = _onnx_model(identity)
        graphs = _graphs(model, path)
    except CheckpointError:
        raise
    except Exception as err:  # protobuf DecodeError and friends
        raise CheckpointError(path, f"unreadable ONNX ({type(err).__name__}: "
                                    f"{str(err)[:160]})") from None
    uses, producers = _consumers(graphs)
    protos: dict[str, tuple[Locator, Any]] = {}  # every tensor by name, for scales
    listed: list[tuple[str, Locator, Any, str, bool]] = []
    for g in graphs:
        for i, init in enumerate(g.graph.initializer):
            locator = (*g.path, ("init", i))
            protos.setdefault(init.name, (locator, init))
            listed.append((init.name, locator, init, g.prefix, True))
        for n, node in enumerate(g.graph.node):
            if node.op_type != "Constant":
                continue
            for a, attr in enumerate(node.attribute):
                if attr.name == "value" and node.output:
                    locator = (*g.path, ("const", n, a))
                    protos.setdefault(node.output[0], (locator, attr.t))
                    listed.append((node.output[0], locator, attr.t, g.prefix,
                                   len(attr.t.dims) >= 2))
        for sparse in g.graph.sparse_initializer:
            name = sparse.values.name
            yield name, LazyTensor.broken(name, str(path), f"sparse initializer {name!r}: "
                                                           "sparse tensors are not read")
    for name, locator, proto, prefix, wanted in listed:
        if not wanted:
            continue
        try:
            yield _entry(path, identity, name, locator, proto, prefix, uses, producers,
                         protos)
        except CheckpointError as err:
            yield name, LazyTensor.broken(name, str(path), err.problem)


def _entry(path: Path, identity: FileIdentity, name: str, locator: Locator, proto: Any,
           prefix: str, uses: dict[str, list[tuple[Any, int]]], producers: dict[str, Any],
           protos: dict[str, tuple[Locator, Any]]) -> tuple[str, LazyTensor]:
    """One weight as (row name, LazyTensor), dequantised when a quantised op reads it."""
    tensor = _loader(path, identity, locator, proto, name)
    op, index, perm, dequantize = _final_use(name, uses)
    row = _row_name(name, op, index, prefix)
    layout = _layout(op, index, perm, len(tensor.shape))
    quantised = _quantisation(path, identity, name, dequantize, op, index, protos,
                              len(tensor.shape), uses, producers)
    if quantised is None:
        return row, LazyTensor(row, tensor.shape, tensor.dtype, str(path), tensor,
                               data_key=(str(path), locator), layout=layout)
    scale, zero_point, axis, block = quantised
    loader = Dequantised(tensor, scale, zero_point, axis, block)
    if layout is not None:
        how = "dequantised" if scale is not None else "zero point only: no scale found"
        layout = Layout(layout.kind, layout.perm, layout.row_axes,
                        f"{layout.origin}, {tensor.dtype} {how}")
    out_dtype = scale.dtype if scale is not None else np.dtype(np.float32)
    return row, LazyTensor(row, tensor.shape, np.dtype(out_dtype) if out_dtype.kind == "f"
                           else np.dtype(np.float32), str(path), loader,
                           data_key=(str(path), locator, "dequantised"), layout=layout)


def _downstream_scale(op: Any, uses: dict[str, list[tuple[Any, int]]],
                      producers: dict[str, Any], stored: set[str]) -> str | None:
    """The stored weight scale of an integer op without a scale input (ConvInteger,
    MatMulInteger): ONNX Runtime's dynamic quantisation multiplies the op's output,
    through a Cast, by ``x_scale * w_scale``; the stored factor of that product is the
    weight's scale. None when the graph has no such pattern."""
    name = op.output[0] if op.output else ""
    for _ in range(4):  # through Cast nodes to the Mul
        if name not in uses:
            return None
        node, _index = uses[name][0]
        if node.op_type == "Cast":
            name = node.output[0]
            continue
        if node.op_type != "Mul":
            return None
        other = [n for n in node.input if n != name]
        if not other:
            return None
        if other[0] in stored:
            return other[0]
        factor = producers.get(other[0])
        if factor is not None and factor.op_type == "Mul":
            found = [n for n in factor.input if n in stored]
            return found[0] if len(found) == 1 else None
        return None
    return None


def _quantisation(path: Path, identity: FileIdentity, name: str, dequantize: Any, op: Any,
                  index: int, protos: dict[str, tuple[Locator, Any]], ndim: int,
                  uses: dict[str, list[tuple[Any, int]]], producers: dict[str, Any]
                  ) -> tuple[OnnxTensor | None, OnnxTensor | None, int | None, int] | None:
    """(scale, zero point, axis, block) when ``name`` is a quantised weight, else None."""
    def tensor(input_name: str) -> OnnxTensor | None:
        if not input_name:
            return None
        if input_name not in protos:
            raise CheckpointError(path, f"tensor {name!r}: its quantisation parameter "
                                        f"{input_name!r} is computed by the graph, not "
                                        "stored: not read")
        locator, proto = protos[input_name]
        return _loader(path, identity, locator, proto, input_name)

    if dequantize is not None:
        attrs = {a.name: a.i for a in dequantize.attribute}
        inputs = [*dequantize.input, "", ""]
        scale, zero_point = tensor(inputs[1]), tensor(inputs[2])
        axis = attrs.get("axis", 1) if scale is not None and scale.shape else None
        return scale, zero_point, axis, int(attrs.get("block_size", 0))
    if op is None or op.op_type not in _QUANTISED_INPUTS:
        return None
    weight, scale_at, zero_at, axis = _QUANTISED_INPUTS[op.op_type]
    if index != weight:
        return None
    inputs = [*op.input, *[""] * 8]
    if scale_at is not None:
        scale = tensor(inputs[scale_at])
    else:
        found = _downstream_scale(op, uses, producers, set(protos))
        scale = tensor(found) if found else None
    zero_point = tensor(inputs[zero_at])
    return scale, zero_point, axis % ndim if ndim else None, 0
