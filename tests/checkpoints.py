"""Tiny checkpoints written in the tests' tmp_path, including a torch-free torch-zip writer."""

from __future__ import annotations

import io
import pickle
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import ml_dtypes
import numpy as np

_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                  np.dtype(np.float16): "HalfStorage",
                  np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
                  np.dtype(np.int64): "LongStorage"}


def _rebuild_tensor_v2(*args):  # pragma: no cover - pickled by name, never called here
    raise AssertionError


class _Storage:
    def __init__(self, key: str, array: np.ndarray) -> None:
        self.key, self.array = key, array


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, shape, stride) -> None:
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride


def torch_pickle(obj, *, monkeypatch, legacy: bool = False) -> tuple[bytes, list[_Storage]]:
    """Pickle ``obj`` (nested dicts whose leaves are NumPy arrays or (array, offset, shape,
    stride) views) as torch.save does, without torch: fake ``torch`` modules make pickle
    emit the same GLOBAL names torch does. Returns the pickle and its storages."""
    fake_torch = types.ModuleType("torch")
    fake_utils = types.ModuleType("torch._utils")
    _rebuild_tensor_v2.__module__ = "torch._utils"
    fake_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    storage_types = {}
    for dtype, name in _STORAGE_NAMES.items():
        cls = type(name, (), {"__module__": "torch"})
        setattr(fake_torch, name, cls)
        storage_types[dtype] = cls
    fake_torch._utils = fake_utils
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setitem(sys.modules, "torch._utils", fake_utils)

    storages: list[_Storage] = []
    memo: dict[int, object] = {}  # shared containers stay shared in the pickle
    alive: list[object] = []  # memoised objects stay alive, so no id is reused

    def convert(value):
        if id(value) in memo:
            return memo[id(value)]
        if isinstance(value, dict):
            memo[id(value)] = out = OrderedDict()
            alive.append(value)
            out.update((k, convert(v)) for k, v in value.items())
            return out
        if isinstance(value, list):
            memo[id(value)] = out = []
            alive.append(value)
            out.extend(convert(v) for v in value)
            return out
        if isinstance(value, tuple) and len(value) == 4:  # (base array, offset, shape, stride)
            base, offset, shape, stride = value
        else:
            base = np.ascontiguousarray(value)
            offset, shape = 0, base.shape
            stride = tuple(s // base.itemsize for s in base.strides) if base.ndim else ()
        if id(base) in memo:  # views of one array share one storage
            storage = memo[id(base)]
        else:
            storage = _Storage(str(len(storages)), np.ascontiguousarray(base).ravel())
            storages.append(storage)
            memo[id(base)] = storage
        tensor = _Tensor(storage, offset, tuple(shape), tuple(stride))
        memo[id(value)] = tensor
        alive.extend((base, value))
        return tensor

    converted = convert(obj)

    class Pickler(pickle.Pickler):
        def persistent_id(self, value):
            if isinstance(value, _Storage):
                pid = ("storage", storage_types[value.array.dtype], value.key, "cpu",
                       value.array.size)
                return (*pid, None) if legacy else pid  # legacy ids end in view metadata
            return None

        def reducer_override(self, value):
            if isinstance(value, _Tensor):
                return (_rebuild_tensor_v2, (value.storage, value.offset, value.shape,
                                             value.stride, False, OrderedDict()))
            return NotImplemented

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(converted)
    return buf.getvalue(), storages


def write_torch_zip(path: Path, obj, *, monkeypatch, prefix: str = "archive",
                    compress: bool = False) -> None:
    """Write ``obj`` (see :func:`torch_pickle`) in torch.save's zip layout, without torch."""
    data, storages = torch_pickle(obj, monkeypatch=monkeypatch)
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=mode) as zf:
        zf.writestr(f"{prefix}/data.pkl", data)
        zf.writestr(f"{prefix}/byteorder", "little")
        for storage in storages:
            zf.writestr(f"{prefix}/data/{storage.key}", storage.array.tobytes())
        zf.writestr(f"{prefix}/version", "3\n")


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def legacy_header(little_endian: bool = True) -> bytes:
    """The three pickles a legacy torch file starts with (magic, version, sys_info)."""
    sys_info = {"protocol_version": 1001, "little_endian": little_endian,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return b"".join(pickle.dumps(v, protocol=2) for v in (LEGACY_MAGIC, 1001, sys_info))


def write_torch_legacy(path: Path, obj, *, monkeypatch, body: bytes | None = None,
                       count_delta: int = 0) -> None:
    """Write ``obj`` in torch's legacy (pre-zip) layout, without torch, following
    ``torch.serialization._legacy_save``: header pickles, the object, the sorted storage
    keys, then each storage as an int64 element count and its bytes. ``body`` replaces
    the object pickle; ``count_delta`` corrupts every stored count."""
    data, storages = torch_pickle(obj, monkeypatch=monkeypatch, legacy=True)
    keys = sorted(s.key for s in storages)
    by_key = {s.key: s for s in storages}
    with open(path, "wb") as fh:
        fh.write(legacy_header())
        fh.write(body if body is not None else data)
        fh.write(pickle.dumps(keys, protocol=2))
        for key in keys:
            array = by_key[key].array
            fh.write((array.size + count_delta).to_bytes(8, "little", signed=True))
            fh.write(array.tobytes())


def malicious_pickle(marker: Path) -> bytes:
    """A pickle that would create ``marker`` if it were executed."""

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    return pickle.dumps({"weight": Evil()}, protocol=2)
