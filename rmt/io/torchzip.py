"""PyTorch ``.pt``/``.bin`` zip checkpoints read without torch and without running their code.

``torch.save`` writes a zip: ``<prefix>/data.pkl`` (a pickle of the object, tensors
pickled as calls to ``torch._utils._rebuild_tensor_v2`` on storages given by persistent
ids) and ``<prefix>/data/<key>`` (the raw storages, stored uncompressed and 64-byte
aligned). The pickle is read by a restricted unpickler whose ``find_class`` knows only
containers, the tensor-rebuild functions and the storage types, each mapped to a harmless
stand-in; anything else — ``os.system``, ``builtins.eval``, any class — is refused with a
:class:`~rmt.errors.CheckpointError` before it could run. Storages are memory-mapped at
their offsets in the zip (read into memory if the entry is compressed) and tensors are
strided views of them, so transposed and offset views come back bit-exact.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from rmt.errors import CheckpointError
from rmt.io.tensor import LazyTensor

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "Float8_e4m3fnStorage": ml_dtypes.float8_e4m3fn,
    "Float8_e5m2Storage": ml_dtypes.float8_e5m2, "LongStorage": np.int64,
    "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any,
                    *_: Any) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor without a storage")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size),
                      tuple(int(s) for s in stride))


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data


_ALLOWED: dict[str, Any] = {
    "collections.OrderedDict": collections.OrderedDict,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    **{f"torch.{name}": _StorageType(np.dtype(dt)) for name, dt in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, path: Path) -> None:
        super().__init__(io.BytesIO(data))
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        key = f"{module}.{name}"
        if key in _ALLOWED:
            return _ALLOWED[key]
        raise CheckpointError(self._path, f"refused to unpickle {key}: only tensors and "
                                          "containers are read (no code from a checkpoint runs)")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise CheckpointError(self._path, f"unexpected persistent id {pid!r:.80}")
        return _Storage(str(pid[2]), pid[1].dtype, int(pid[4]))


def _data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise CheckpointError(path, f"corrupt zip entry {info.filename}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, _TensorRef]]:
    if isinstance(obj, _TensorRef):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _flatten(v, f"{prefix}.{i}" if prefix else str(i))


def iter_torch_zip(path: str | Path) -> Iterator[tuple[str, LazyTensor]]:
    """(name, LazyTensor) for every tensor in a torch zip checkpoint (nested dicts are
    flattened with dots, e.g. ``state_dict.fc.weight``)."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
        names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(path, f"not a readable zip archive ({err})") from None
    with zf:
        pkl = [n for n in names if n.endswith("data.pkl")]
        if len(pkl) != 1:
            raise CheckpointError(path, "not a torch zip checkpoint (no single data.pkl)")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = f"{prefix}byteorder"
        if byteorder in names and zf.read(byteorder).strip() not in (b"little", b""):
            raise CheckpointError(path, "big-endian torch checkpoints are not supported")
        try:
            obj = _RestrictedUnpickler(zf.read(pkl[0]), path).load()
        except CheckpointError:
            raise
        except Exception as err:  # truncated or malformed pickle stream
            raise CheckpointError(path, f"unreadable pickle ({type(err).__name__}: {err})"
                                  ) from None
        infos = {n: zf.getinfo(n) for n in names}
    for name, ref in _flatten(obj):
        entry = f"{prefix}data/{ref.storage.key}"
        if entry not in infos:
            raise CheckpointError(path, f"tensor {name!r}: storage {entry} missing from the zip")
        info = infos[entry]
        dtype = np.dtype(ref.storage.dtype)
        if info.file_size < ref.storage.numel * dtype.itemsize:
            raise CheckpointError(path, f"tensor {name!r}: storage {entry} is truncated")
        extent = ref.offset + sum((s - 1) * st for s, st in zip(ref.shape, ref.stride, strict=True)
                                  if s > 0) + 1
        if ref.offset < 0 or min(ref.stride, default=0) < 0 or (
                min(ref.shape, default=1) > 0 and extent > ref.storage.numel):
            raise CheckpointError(path, f"tensor {name!r}: view past the end of its storage")

        def loader(info=info, ref=ref, dtype=dtype) -> np.ndarray:
            if info.compress_type == zipfile.ZIP_STORED:
                base = np.memmap(path, dtype=np.uint8, mode="r", offset=_data_offset(path, info),
                                 shape=(ref.storage.numel * dtype.itemsize,)).view(dtype)
            else:
                with zipfile.ZipFile(path) as z:
                    base = np.frombuffer(z.read(info.filename), dtype=dtype)[: ref.storage.numel]
            if 0 in ref.shape:
                return np.empty(ref.shape, dtype=dtype)
            strides = tuple(s * dtype.itemsize for s in ref.stride)
            return np.lib.stride_tricks.as_strided(base[ref.offset:], shape=ref.shape,
                                                   strides=strides, writeable=False)

        yield name, LazyTensor(name, ref.shape, dtype, str(path), loader)
