"""PyTorch ``.pt``/``.bin`` zip checkpoints read without torch and without running their code.

``torch.save`` writes a zip: ``<prefix>/data.pkl`` (a pickle of the object, tensors
pickled as calls to ``torch._utils._rebuild_tensor_v2`` on storages given by persistent
ids) and ``<prefix>/data/<key>`` (the raw storages, stored uncompressed and 64-byte
aligned).

The pickle is run by a restricted interpreter (the pure-Python unpickler with its own
opcode loop), never by ``pickle.load``:

- ``find_class`` knows only containers, the tensor-rebuild functions and the storage
  types; anything else (``os.system``, ``builtins.eval``, any class) is refused before
  it could run. The stand-ins it hands out are created afresh for every load, so
  nothing one file does can outlive its own load or change how another file is read.
- ``REDUCE`` calls only those allowed functions; ``BUILD`` is accepted only on the
  dicts and tensors the pickle itself created (its state is discarded); ``INST``,
  ``OBJ``, ``NEWOBJ``, the extension registry and out-of-band buffers are refused.
- The pickle may be at most :data:`MAX_PICKLE_BYTES` long and run at most
  :data:`MAX_OPS` opcodes, and the memo is a dict (a huge memo index costs nothing), so
  memory stays proportional to what the file holds.

The object is then walked without recursion, each container once (shared references
cannot multiply the tensors: sixty doubling levels over one tensor list it once), at
most :data:`MAX_DEPTH` levels and :data:`MAX_TENSORS` tensors. Every tensor view is
checked with Python integers: it must lie inside its storage, have no stride-0 or
overlapping axes, and its storage entry must exist with at least the bytes it needs; a
bad view becomes that tensor's failed entry, the others are still read. Storages are
read with ``pread`` at their offset in the zip (CRC-32 verified once per entry) or,
when compressed, decompressed as a stream up to exactly the bytes needed.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from rmt.errors import CheckpointError
from rmt.io.files import FileIdentity
from rmt.io.layout import Layout, infer_layout, torch_module_layout
from rmt.io.quantised import Constant, Dequantised
from rmt.io.tensor import MAX_NDIM, LazyTensor
from rmt.io.zipentry import ZipEntry, entry_problem, open_zip

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "Float8_e4m3fnStorage": ml_dtypes.float8_e4m3fn,
    "Float8_e5m2Storage": ml_dtypes.float8_e5m2, "LongStorage": np.int64,
    "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "QInt8Storage": np.int8, "QUInt8Storage": np.uint8, "QInt32Storage": np.int32,
}

# Bounds on what one pickle may do. A real state dict needs ~30 opcodes and ~300 bytes of
# pickle per tensor (a 7B model: ~300 tensors, 100 kB), so these admit ~65,000 tensors;
# the worst pickle within them (2 M one-byte opcodes each keeping an object) was measured
# at 2.6 s and 139 MiB.
MAX_PICKLE_BYTES = 64 * 2**20
MAX_OPS = 2 * 2**20
MAX_DEPTH = 64
MAX_TENSORS = 1_000_000


class _StorageType:
    """Stand-in for ``torch.<X>Storage``; one fresh instance per load (never shared)."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    start: int = 0  # first element within the root storage (legacy storage views)


class _ScriptClass:
    """Stand-in for a TorchScript class (``__torch__.<module> <Name>``): only its name
    is kept; one fresh instance per load."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _ScriptObject:
    """An instance of a TorchScript class: its attributes (submodules, parameters,
    buffers) as the pickle's BUILD gave them; no method of it exists or runs."""

    __slots__ = ("attrs", "class_name")

    def __init__(self, class_name: str) -> None:
        self.class_name = class_name
        self.attrs: dict[Any, Any] = {}


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    problem: str | None = None  # why the tensor cannot be read (an unsupported dtype)
    # torch quantised tensor: ("tensor", scale, zero_point) or
    # ("channel", scales, zero_points, axis) with scales/zero_points _TensorRefs
    quant: tuple[Any, ...] | None = None


# torch dtypes named by GLOBAL in torch >= 2.1 pickles (``_rebuild_tensor_v3`` over an
# UntypedStorage of bytes): the ones NumPy and ml_dtypes can hold. Others (complex32,
# bits*, float4_e2m1fn_x2) make that tensor a broken entry.
_TORCH_DTYPES = {
    "float64": np.float64, "float32": np.float32, "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16, "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
    "float8_e5m2": ml_dtypes.float8_e5m2, "float8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "float8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "float8_e8m0fnu": getattr(ml_dtypes, "float8_e8m0fnu", None),
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8,
    "uint64": np.uint64, "uint32": np.uint32, "uint16": np.uint16, "uint8": np.uint8,
    "bool": np.bool_, "complex64": np.complex64, "complex128": np.complex128,
    "qint8": np.int8, "quint8": np.uint8, "qint32": np.int32,
}
_QSCHEMES = ("per_tensor_affine", "per_channel_affine", "per_channel_affine_float_qparams",
             "per_tensor_symmetric", "per_channel_symmetric")
_UNREAD_DTYPES = ("complex32", "bits8", "bits16", "bits1x8", "bits2x4", "bits4x2",
                  "float4_e2m1fn_x2")


class _DType:
    """Stand-in for a ``torch.<dtype>`` object: its name and NumPy dtype (None: unread)."""

    __slots__ = ("name", "numpy")

    def __init__(self, name: str, numpy: Any) -> None:
        self.name, self.numpy = name, None if numpy is None else np.dtype(numpy)


class _TypeName:
    """Stand-in for ``torch.Tensor``/``torch.nn.Parameter`` as the target type of
    ``_rebuild_from_type_v2``: only a name, never instantiated."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _count(value: Any) -> bool:
    """A non-negative Python int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or len(value) > MAX_NDIM or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise pickle.UnpicklingError(f"tensor {what} must be a tuple of at most {MAX_NDIM} "
                                     f"integers, got {str(value)[:60]}")
    return tuple(value)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any,
                    *_: Any) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor without a storage")
    if not isinstance(storage_offset, int) or isinstance(storage_offset, bool):
        raise pickle.UnpicklingError(f"tensor offset must be an integer, got "
                                     f"{str(storage_offset)[:40]}")
    shape, strides = _ints(size, "size"), _ints(stride, "stride")
    if len(shape) != len(strides):
        raise pickle.UnpicklingError(f"tensor size {shape} and stride {strides} differ in "
                                     "length")
    return _TensorRef(storage, storage_offset, shape, strides)


def _rebuild_tensor_v3(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any = None, hooks: Any = None, dtype: Any = None,
                       *_: Any) -> _TensorRef:
    """torch >= 2.1's rebuild over an UntypedStorage (bytes) with the dtype given apart."""
    if not isinstance(storage, _Storage) or storage.dtype != np.uint8:
        raise pickle.UnpicklingError("tensor v3 without an untyped storage")
    if not isinstance(dtype, _DType):
        raise pickle.UnpicklingError("tensor v3 without a dtype")
    if dtype.numpy is None:
        ref = _rebuild_tensor(storage, storage_offset, size, stride)
        return _TensorRef(ref.storage, ref.offset, ref.shape, ref.stride,
                          problem=f"dtype torch.{dtype.name} is not read")
    typed = _Storage(storage.key, dtype.numpy, storage.numel // dtype.numpy.itemsize,
                     storage.start)
    return _rebuild_tensor(typed, storage_offset, size, stride)


def _rebuild_qtensor(storage: Any, storage_offset: Any, size: Any, stride: Any,
                     qparams: Any, *_: Any) -> _TensorRef:
    """``torch._utils._rebuild_qtensor``: integers plus the scale and zero point (one
    pair, or one per channel along an axis); dequantised when loaded."""
    ref = _rebuild_tensor(storage, storage_offset, size, stride)
    if not isinstance(qparams, tuple) or not qparams or not isinstance(qparams[0], _TypeName):
        raise pickle.UnpicklingError("quantised tensor without a quantisation scheme")
    scheme = qparams[0].name
    if scheme in ("per_tensor_affine", "per_tensor_symmetric") and len(qparams) == 3 \
            and all(isinstance(v, int | float) and not isinstance(v, bool)
                    for v in qparams[1:]):
        return _TensorRef(ref.storage, ref.offset, ref.shape, ref.stride,
                          quant=("tensor", float(qparams[1]), float(qparams[2])))
    if scheme.startswith("per_channel") and len(qparams) == 4 \
            and isinstance(qparams[1], _TensorRef) and isinstance(qparams[2], _TensorRef) \
            and isinstance(qparams[3], int) and 0 <= qparams[3] < max(len(ref.shape), 1):
        return _TensorRef(ref.storage, ref.offset, ref.shape, ref.stride,
                          quant=("channel", qparams[1], qparams[2], qparams[3]))
    return _TensorRef(ref.storage, ref.offset, ref.shape, ref.stride,
                      problem=f"quantisation scheme {scheme} with parameters "
                              f"{str(qparams[1:])[:60]} is not read")


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data


def _rebuild_from_type(func: Any, new_type: Any, args: Any, state: Any = None) -> Any:
    """``torch._tensor._rebuild_from_type_v2``: a tensor with Python state (attributes,
    a subclass); the rebuild it wraps is one of the allowed ones, the state is dropped."""
    if not any(func is f for f in _CALLABLE.values()) or func is _rebuild_from_type \
            or not isinstance(new_type, _TypeName) or not isinstance(args, tuple):
        raise pickle.UnpicklingError("rebuild_from_type of something other than a tensor")
    return func(*args)


def _restore_type_tag(value: Any, *_: Any) -> Any:
    """``torch.jit._pickle.restore_type_tag``: a typed dict/list, kept as it is."""
    return value


def _build_list(items: Any) -> Any:
    """``torch.jit._pickle.build_*list``: TorchScript's typed lists, kept as lists."""
    if not isinstance(items, list):
        raise pickle.UnpicklingError("typed list of something other than a list")
    return items


_CALLABLE = {
    "collections.OrderedDict": collections.OrderedDict,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_tensor": _rebuild_tensor,  # pre-1.0 legacy files
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_qtensor": _rebuild_qtensor,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type,
    **{f"torch.jit._pickle.build_{kind}list": _build_list
       for kind in ("int", "double", "bool", "tensor")},
    "torch.jit._pickle.restore_type_tag": _restore_type_tag,
}
_REFUSED_OPS = {op[0] for op in (pickle.INST, pickle.OBJ, pickle.NEWOBJ_EX,
                                 pickle.EXT1, pickle.EXT2, pickle.EXT4, pickle.NEXT_BUFFER,
                                 pickle.READONLY_BUFFER)}


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with an allow-list of names, opcodes and BUILD targets."""

    def __init__(self, data: bytes | Any, path: Path, *, script: bool = False,
                 legacy: bool = False) -> None:
        super().__init__(io.BytesIO(data) if isinstance(data, bytes | bytearray) else data)
        self._path = path
        # TorchScript archives pickle their modules as __torch__.* class instances:
        # accepted as inert stand-ins (a name and an attribute dict), never imported.
        self._script = script
        self._legacy = legacy  # legacy files may describe storage views
        # Fresh stand-ins for this load only: a BUILD or SETITEM aimed at them cannot
        # reach another load (and BUILD on them is refused anyway).
        self._names: dict[str, Any] = {
            **_CALLABLE,
            **{f"torch.{name}": _StorageType(np.dtype(dt))
               for name, dt in _STORAGE_DTYPES.items()},
            "torch.storage.UntypedStorage": _StorageType(np.dtype(np.uint8)),
            "torch.UntypedStorage": _StorageType(np.dtype(np.uint8)),
            **{f"torch.{name}": _DType(name, dt) for name, dt in _TORCH_DTYPES.items()},
            **{f"torch.{name}": _DType(name, None) for name in _UNREAD_DTYPES},
            "torch.Tensor": _TypeName("Tensor"),
            "torch._tensor.Tensor": _TypeName("Tensor"),
            "torch.nn.parameter.Parameter": _TypeName("Parameter"),
            **{f"torch.{name}": _TypeName(name) for name in _QSCHEMES},
        }
        self.storages: dict[str, tuple[np.dtype, int]] = {}
        # pickle._Unpickler (the pure-Python unpickler) is private and untyped in typeshed:
        # its dispatch table and stack are typed here, the overrides need ignores.
        dispatch: dict[int, Any] = dict(pickle._Unpickler.dispatch)
        dispatch[pickle.REDUCE[0]] = _RestrictedUnpickler._reduce
        dispatch[pickle.BUILD[0]] = _RestrictedUnpickler._build
        dispatch[pickle.APPENDS[0]] = _RestrictedUnpickler._appends
        dispatch[pickle.APPEND[0]] = _RestrictedUnpickler._append
        dispatch[pickle.NEWOBJ[0]] = _RestrictedUnpickler._newobj
        self.dispatch = dispatch  # type: ignore[misc]

    def _refuse(self, problem: str) -> CheckpointError:
        return CheckpointError(self._path, f"refused pickle content: {problem}")

    def find_class(self, module: str, name: str) -> Any:
        key = f"{module}.{name}"
        if key in self._names:
            return self._names[key]
        if self._script and (module == "__torch__" or module.startswith("__torch__.")):
            return self._names.setdefault(key, _ScriptClass(key))
        raise CheckpointError(self._path, f"refused to unpickle {key[:120]}: only tensors and "
                                          "containers are read (no code from a checkpoint runs)")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)
                and any(pid[1] is v for v in self._names.values())
                and isinstance(pid[2], str) and _count(pid[4])
                and (len(pid) == 5 or pid[5] is None or self._legacy)):
            raise CheckpointError(self._path, f"unexpected persistent id {str(pid)[:80]}")
        key, dtype, numel = pid[2], pid[1].dtype, pid[4]
        if self.storages.setdefault(key, (dtype, numel)) != (dtype, numel):
            raise CheckpointError(self._path, f"storage {key!r} is declared with two different "
                                              "dtypes or sizes")
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return _Storage(key, dtype, numel)
        # legacy storage view: (view key, first element, length) of the root storage
        if not (isinstance(view, tuple) and len(view) == 3 and _count(view[1])
                and _count(view[2]) and view[1] + view[2] <= numel):
            raise CheckpointError(self._path, f"storage view {str(view)[:80]} does not lie "
                                              f"inside its {numel}-element storage")
        return _Storage(key, dtype, view[2], view[1])

    def _reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if not any(func is f for f in _CALLABLE.values()) or not isinstance(args, tuple):
            raise self._refuse(f"call of {type(func).__name__} (only tensor rebuilds and "
                               "OrderedDict are called)")
        self.stack[-1] = func(*args)

    def _newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if not (isinstance(cls, _ScriptClass) and self._names.get(cls.name) is cls
                and args == ()):
            raise self._refuse(f"NEWOBJ of {type(cls).__name__} (only TorchScript module "
                               "stand-ins are created)")
        self.append(_ScriptObject(cls.name))  # type: ignore[union-attr]  # checked above

    def _build(self) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        if type(target) is _ScriptObject:
            if target.attrs:
                raise self._refuse("TorchScript object state set twice")
            # its attributes (submodules, parameters, buffers); a custom __getstate__
            # (quantised packed params) gives a tuple, walked as "state"
            target.attrs = state if type(state) is dict else {"state": state}
            return
        # other state (torch's _metadata, tensor attributes) is not needed: discarded
        if type(target) not in (dict, collections.OrderedDict, _TensorRef):
            raise self._refuse(f"BUILD on {type(target).__name__} (only the pickle's own "
                               "dicts and tensors take state)")

    def _appends(self) -> None:
        items = self.pop_mark()  # type: ignore[attr-defined]
        if type(self.stack[-1]) is not list:
            raise self._refuse(f"APPENDS to {type(self.stack[-1]).__name__}")
        self.stack[-1].extend(items)

    def _append(self) -> None:
        value = self.stack.pop()
        if type(self.stack[-1]) is not list:
            raise self._refuse(f"APPEND to {type(self.stack[-1]).__name__}")
        self.stack[-1].append(value)

    def load(self) -> Any:
        """``pickle._Unpickler.load`` with the opcode allow-list and the opcode budget."""
        self._unframer = pickle._Unframer(self._file_read, self._file_readline)  # type: ignore[attr-defined]
        self.read = self._unframer.read
        self.readinto = self._unframer.readinto
        self.readline = self._unframer.readline
        self.metastack: list[Any] = []
        self.stack: list[Any] = []
        self.append = self.stack.append
        self.proto = 0
        read, dispatch = self.read, self.dispatch
        try:
            for _ in range(MAX_OPS):
                key = read(1)
                if not key:
                    raise EOFError
                if key[0] in _REFUSED_OPS:
                    raise self._refuse(f"opcode {key!r} (builds arbitrary objects)")
                dispatch[key[0]](self)  # type: ignore[arg-type]  # our table, our class
        except pickle._Stop as stop:  # type: ignore[attr-defined]
            return stop.value
        raise self._refuse(f"more than {MAX_OPS} opcodes")


def _children(node: Any) -> Iterator[tuple[Any, Any]] | None:
    if isinstance(node, dict):
        return iter(node.items())
    if isinstance(node, list | tuple):
        return enumerate(node)
    if isinstance(node, _ScriptObject):
        return iter(node.attrs.items())
    return None


def _walk(obj: Any, path: Path) -> Iterator[tuple[str, _TensorRef, str | None]]:
    """(dotted name, tensor, class of the TorchScript module holding it or None) of a
    nested structure, depth first in order, without recursion and without materialising
    a container's children (memory O(depth)); each container is entered once. Entries
    whose key starts with ``optim`` (``optimizer``, ``optimizer_state_dict``, ...) are
    training state, not weights, and are skipped."""
    if isinstance(obj, _TensorRef):
        yield "<root>", obj, None  # a file holding one bare tensor
        return
    seen: set[int] = set()
    found = 0
    stack: list[tuple[str, Iterator[tuple[Any, Any]], str | None]] = []
    top = _children(obj)
    if top is not None:
        seen.add(id(obj))
        stack.append(("", top, getattr(obj, "class_name", None)))
    while stack:
        prefix, children, owner = stack[-1]
        item = next(children, None)
        if item is None:
            stack.pop()
            continue
        key, value = item
        if isinstance(key, str) and (key.lower().startswith("optim")
                                     or key == "_flat_weights"):
            continue  # optimizer state is not weights; an RNN's _flat_weights repeats them
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, _TensorRef):
            found += 1
            if found > MAX_TENSORS:
                raise CheckpointError(path, f"more than {MAX_TENSORS} tensors")
            yield name, value, owner
            continue
        grandchildren = _children(value)
        if grandchildren is None or id(value) in seen:
            continue  # not a container, or shared: its tensors were listed under its first name
        seen.add(id(value))
        if len(stack) >= MAX_DEPTH:
            raise CheckpointError(path, f"objects nested deeper than {MAX_DEPTH} levels "
                                        f"under {prefix[:80]!r}")
        stack.append((name, grandchildren, getattr(value, "class_name", None)))


def owner_layout(name: str, owner: str | None, ndim: int) -> Layout | None:
    """The layout a TorchScript module's class gives its tensor (``Conv1d.weight``: a
    kernel), or None."""
    if owner is None:
        return None
    return torch_module_layout(owner.rsplit(".", 1)[-1], name.rsplit(".", 1)[-1], ndim)


def _extent(shape: tuple[int, ...], stride: tuple[int, ...]) -> int:
    """Elements from a view's first to its last, inclusive (axes of size 0 or 1 add none)."""
    return 1 + sum((sz - 1) * st for sz, st in zip(shape, stride, strict=True) if sz > 1)


def view_problem(ref: _TensorRef) -> str | None:
    """Why a tensor view cannot be read as a matrix of its own bytes (None: it can).

    All arithmetic is on Python integers, so shapes like [2**62 + 1, 4] cannot wrap.
    """
    if min(ref.shape, default=0) < 0:
        return f"negative size {list(ref.shape)}"
    numel = math.prod(ref.shape)
    if ref.offset < 0:
        return f"negative storage offset {ref.offset}"
    if numel == 0:
        return None
    if numel > ref.storage.numel:
        return (f"view of {numel} elements on a storage of {ref.storage.numel} (stride-0 or "
                "overlapping view)")
    axes = sorted((st, sz) for sz, st in zip(ref.shape, ref.stride, strict=True) if sz > 1)
    extent = 1
    for st, sz in axes:
        if st < extent:
            return (f"size {list(ref.shape)} with stride {list(ref.stride)} reads elements "
                    "more than once (stride-0, negative or overlapping axes)")
        extent += (sz - 1) * st
    if ref.offset + extent > ref.storage.numel:
        return (f"view past the end of its storage (needs {ref.offset + extent} elements, "
                f"has {ref.storage.numel})")
    return None


def strided_view(raw: np.ndarray, dtype: np.dtype, shape: tuple[int, ...],
                 stride: tuple[int, ...]) -> np.ndarray:
    """A read-only strided view (strides in elements) of the bytes ``raw`` as ``dtype``.

    The strides are applied to an unsigned integer view of the same item size and the
    result is then viewed as ``dtype``: ``as_strided`` goes through the array interface,
    which cannot describe ml_dtypes' 1-byte floats (float8 would fail as ``'<f1'``).
    """
    item = dtype.itemsize
    carrier = raw.view(np.dtype(f"u{item}")) if item in (1, 2, 4, 8) else raw.view(dtype)
    view = np.lib.stride_tricks.as_strided(carrier, shape=shape,
                                           strides=tuple(s * item for s in stride),
                                           writeable=False)
    return view.view(dtype)


@dataclass(frozen=True)
class ZipStorageView:
    """Loader of one tensor view of a storage entry in a torch zip (picklable)."""

    entry: ZipEntry
    dtype: np.dtype
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def __call__(self) -> np.ndarray:
        if math.prod(self.shape) == 0:
            return np.empty(self.shape, dtype=self.dtype)
        extent = _extent(self.shape, self.stride)
        item = self.dtype.itemsize
        raw = self.entry.read(self.offset * item, (self.offset + extent) * item)
        return strided_view(raw, self.dtype, self.shape, self.stride)


def _read_member(identity: FileIdentity, info: zipfile.ZipInfo) -> bytes:
    """A small member (data.pkl, byteorder), refused if damaged or over
    :data:`MAX_PICKLE_BYTES`."""
    problem = entry_problem(info)
    if problem:
        raise CheckpointError(identity.path, f"{info.filename}: {problem}")
    return ZipEntry.of(identity, info).read_all(MAX_PICKLE_BYTES)


def quantised_loader(q: Any, ref: _TensorRef, part: Any) -> Dequantised:
    """The dequantising loader of a torch quantised tensor: ``q`` loads its integers,
    ``part(inner_ref, what)`` the loader of a per-channel scales or zero-points tensor."""
    assert ref.quant is not None
    if ref.quant[0] == "tensor":
        _, scale, zero = ref.quant
        return Dequantised(q, Constant(scale), Constant(zero), None)
    _, scales, zeros, axis = ref.quant
    if scales.shape != (ref.shape[axis],) or zeros.shape != (ref.shape[axis],):
        raise CheckpointError("", f"per-channel scales {list(scales.shape)} do not match "
                                  f"axis {axis} of {list(ref.shape)}")
    return Dequantised(q, part(scales, "scales"), part(zeros, "zero_points"), axis)


def quantised_layout(layout: Layout | None, ref: _TensorRef) -> Layout | None:
    """The layout of a tensor, saying it was dequantised (when it was)."""
    if ref.quant is None:
        return layout
    base = layout or infer_layout("", ref.shape)
    note = f"{ref.storage.dtype} dequantised"
    return Layout(base.kind, base.perm, base.row_axes,
                  f"{base.origin}, {note}" if base.origin else note)


def unpickle(data: bytes | Any, path: Path, *, script: bool = False,
             legacy: bool = False) -> tuple[Any, dict[str, tuple[np.dtype, int]]]:
    """The object of one pickle, by the restricted unpickler, and the storages its
    persistent ids declared (key -> (dtype, elements)); any failure is a
    :class:`~rmt.errors.CheckpointError`."""
    unpickler = _RestrictedUnpickler(data, path, script=script, legacy=legacy)
    try:
        return unpickler.load(), unpickler.storages
    except CheckpointError:
        raise
    except Exception as err:  # truncated or malformed pickle stream, bad arguments
        raise CheckpointError(path, f"unreadable pickle ({type(err).__name__}: "
                                    f"{str(err)[:120]})") from None


def iter_torch_zip(path: str | Path) -> Iterator[tuple[str, LazyTensor]]:
    """(name, LazyTensor) for every tensor in a torch zip checkpoint (nested dicts are
    flattened with dots, e.g. ``state_dict.fc.weight``) or TorchScript archive
    (parameters and buffers by module path, e.g. ``encoder.0.conv.weight``; the
    archive's tensor constants as ``constants.<i>``).

    A tensor whose view or storage entry is bad is yielded as a broken entry (its
    ``error`` says why); problems with the archive or the pickle raise
    :class:`~rmt.errors.CheckpointError`.
    """
    path = Path(path)
    identity = FileIdentity.of(path)
    zf, infos = open_zip(path)
    zf.close()
    pkl = [n for n in infos if n == "data.pkl" or n.endswith("/data.pkl")]
    if len(pkl) != 1:
        raise CheckpointError(path, "not a torch zip checkpoint (no single data.pkl)")
    prefix = pkl[0][: -len("data.pkl")]
    byteorder = infos.get(f"{prefix}byteorder")
    if byteorder is not None:
        order = _read_member(identity, byteorder)[:16].strip()
        if order not in (b"little", b""):
            raise CheckpointError(path, "big-endian torch checkpoints are not supported")
    script = f"{prefix}constants.pkl" in infos or any(
        n.startswith(f"{prefix}code/") for n in infos)
    obj, _ = unpickle(_read_member(identity, infos[pkl[0]]), path, script=script)
    found = 0
    for name, ref, owner in _walk(obj, path):
        found += 1
        yield name, _lazy(path, identity, infos, f"{prefix}data/", name, ref,
                          owner_layout(name, owner, len(ref.shape)))
    if script:
        constants, _ = unpickle(_read_member(identity, infos[f"{prefix}constants.pkl"]),
                                path, script=True)
        for name, ref, _owner in _walk({"constants": constants}, path):
            found += 1
            yield name, _lazy(path, identity, infos, f"{prefix}constants/", name, ref, None)
    if not found:
        raise CheckpointError(path, "holds no tensors (its pickle rebuilds none)")


def _lazy(path: Path, identity: FileIdentity, infos: dict[str, zipfile.ZipInfo], storages: str,
          name: str, ref: _TensorRef, layout: Layout | None) -> LazyTensor:
    entry = f"{storages}{ref.storage.key}"
    dtype = np.dtype(ref.storage.dtype)
    info = infos.get(entry)
    needed = ref.storage.numel * dtype.itemsize
    if info is None:
        problem: str | None = f"storage {entry} missing from the zip"
    elif info.file_size < needed:
        problem = f"storage {entry} is truncated ({info.file_size} of {needed} bytes)"
    else:
        problem = ref.problem or entry_problem(info, needed) or view_problem(ref)
    if problem or info is None:
        return LazyTensor.broken(name, str(path), f"tensor {name!r}: {problem}", ref.shape,
                                 dtype)
    loader: Any = ZipStorageView(ZipEntry.of(identity, info, f"tensor {name!r}: "), dtype,
                                 ref.offset, ref.shape, ref.stride)
    key = (str(path), entry, ref.offset, ref.shape, ref.stride)
    if ref.quant is not None:
        def part(inner: _TensorRef, what: str) -> Any:
            found = _lazy(path, identity, infos, storages, f"{name}.{what}", inner, None)
            if found.error:
                raise CheckpointError(path, found.error)
            return found._loader
        try:
            loader, dtype = quantised_loader(loader, ref, part), np.dtype(np.float32)
        except CheckpointError as err:
            return LazyTensor.broken(name, str(path), err.problem, ref.shape)
    return LazyTensor(name, ref.shape, dtype, str(path), loader, data_key=key,
                      layout=quantised_layout(layout, ref))
