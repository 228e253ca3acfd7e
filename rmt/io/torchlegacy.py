"""Legacy (pre-zip) PyTorch files, ``torch.save`` before 1.6 or with
``_use_new_zipfile_serialization=False``, read without torch and without running code.

The file is a run of pickles followed by raw storages:

1. the magic number ``0x1950a86a20f9469cfc6c``, 2. the protocol version (1001),
3. ``sys_info`` (byte order, type sizes), 4. the object, whose tensors are
``torch._utils._rebuild_tensor[_v2]`` calls on storages given by persistent ids
``("storage", <type>, key, location, elements, view)``, 5. the list of storage keys,
then for each key in that order an 8-byte little-endian element count and the
storage's bytes.

Every pickle runs in the same restricted interpreter as the zip reader's
(:mod:`rmt.io.torchzip`): containers, tensor rebuilds and storage types only. The
pickles together may be at most :data:`~rmt.io.torchzip.MAX_PICKLE_BYTES` long; each
storage's count must equal what the object declared, and every byte range must lie
inside the file. Tensors are then read by ``pread`` at their storage's offset.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rmt.errors import CheckpointError
from rmt.io.files import FileIdentity, read_bytes
from rmt.io.tensor import LazyTensor
from rmt.io.torchzip import (
    MAX_PICKLE_BYTES,
    _extent,
    _TensorRef,
    _walk,
    strided_view,
    unpickle,
    view_problem,
)

# The first pickle of every legacy file: protocol 2, LONG1 of the magic number.
LEGACY_SIGNATURE = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001
_CHUNK = 65536


class _PreadStream:
    """A read-only file object over ``pread`` for the unpickler that never reads past
    ``limit`` bytes (so no pickle can make it load more than that)."""

    def __init__(self, identity: FileIdentity, limit: int) -> None:
        self.identity, self.limit = identity, min(limit, identity.size)
        self.pos = 0
        self._buffer = b""
        self._at = 0  # file offset of the buffer's first byte

    def _cover(self, end: int) -> None:
        """Make the buffer hold bytes pos..end (end <= limit)."""
        if self._at <= self.pos and end <= self._at + len(self._buffer):
            return
        want = min(self.limit, max(end, self.pos + _CHUNK))
        self._buffer = read_bytes(self.identity, self.pos, want - self.pos).tobytes()
        self._at = self.pos

    def read(self, n: int = -1) -> bytes:
        n = self.limit - self.pos if n < 0 else min(n, self.limit - self.pos)
        self._cover(self.pos + n)
        start = self.pos - self._at
        self.pos += n
        return self._buffer[start:start + n]

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self) -> bytes:
        window = _CHUNK
        while True:
            end = min(self.limit, self.pos + window)
            self._cover(end)
            start = self.pos - self._at
            at = self._buffer.find(b"\n", start, end - self._at)
            if at >= 0:
                return self.read(at - start + 1)
            if end >= self.limit:
                return self.read()
            window *= 2  # long lines cost O(length), not O(length^2)


@dataclass(frozen=True)
class LegacyStorageView:
    """Loader of one tensor view of a storage in a legacy torch file (picklable)."""

    identity: FileIdentity
    data_offset: int  # byte offset of the storage's first element in the file
    dtype: np.dtype
    offset: int  # elements from the storage's start to the view's first element
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    name: str

    def __call__(self) -> np.ndarray:
        if math.prod(self.shape) == 0:
            return np.empty(self.shape, dtype=self.dtype)
        item = self.dtype.itemsize
        raw = read_bytes(self.identity, self.data_offset + self.offset * item,
                         _extent(self.shape, self.stride) * item, f"tensor {self.name!r}: ")
        return strided_view(raw, self.dtype, self.shape, self.stride)


def _header(stream: _PreadStream, path: Path) -> None:
    magic, _ = unpickle(stream, path)
    if magic != _MAGIC:
        raise CheckpointError(path, "not a legacy torch file (bad magic number)")
    version, _ = unpickle(stream, path)
    if version != _PROTOCOL:
        raise CheckpointError(path, f"legacy torch protocol {str(version)[:20]} (only "
                                    f"{_PROTOCOL} exists)")
    sys_info, _ = unpickle(stream, path)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise CheckpointError(path, "big-endian (or unmarked) legacy torch file: not "
                                    "supported")


def _storage_offsets(identity: FileIdentity, path: Path, keys: Any, start: int,
                     storages: dict[str, tuple[np.dtype, int]]) -> dict[str, int]:
    """Byte offset of each storage's data, checking each stored count."""
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointError(path, "storage key list is not a list of strings")
    offsets: dict[str, int] = {}
    pos = start
    for key in keys:
        if key not in storages or key in offsets:
            raise CheckpointError(path, f"storage key {key[:40]!r} is unknown or listed "
                                        "twice: the storages after it cannot be located")
        dtype, numel = storages[key]
        count = int.from_bytes(read_bytes(identity, pos, 8, f"storage {key!r}: ").tobytes(),
                               "little", signed=True)
        if count != numel:
            raise CheckpointError(path, f"storage {key!r} holds {count} elements, its "
                                        f"tensors declared {numel}")
        offsets[key] = pos + 8
        pos += 8 + numel * np.dtype(dtype).itemsize
        if pos > identity.size:
            raise CheckpointError(path, f"storage {key!r} runs past the end of the "
                                        f"{identity.size}-byte file")
    return offsets


def iter_torch_legacy(path: str | Path) -> Iterator[tuple[str, LazyTensor]]:
    """(name, LazyTensor) for every tensor of a legacy torch file (nested dicts are
    flattened with dots, as for zip checkpoints).

    A bad tensor view is a broken entry; a bad header, pickle or storage table raises
    :class:`~rmt.errors.CheckpointError`.
    """
    path = Path(path)
    identity = FileIdentity.of(path)
    stream = _PreadStream(identity, MAX_PICKLE_BYTES)
    _header(stream, path)
    obj, storages = unpickle(stream, path, legacy=True)
    keys, _ = unpickle(stream, path)
    offsets = _storage_offsets(identity, path, keys, stream.pos, storages)
    found = 0
    for name, ref, _owner in _walk(obj, path):
        found += 1
        yield name, _lazy(path, identity, offsets, name, ref)
    if not found:
        raise CheckpointError(path, "holds no tensors (its pickle rebuilds none)")


def _lazy(path: Path, identity: FileIdentity, offsets: dict[str, int], name: str,
          ref: _TensorRef) -> LazyTensor:
    dtype = np.dtype(ref.storage.dtype)
    problem = ref.problem or view_problem(ref)
    if ref.storage.key not in offsets:
        problem = f"storage {ref.storage.key!r} is not in the file's storage list"
    if problem:
        return LazyTensor.broken(name, str(path), f"tensor {name!r}: {problem}", ref.shape,
                                 dtype)
    loader = LegacyStorageView(identity, offsets[ref.storage.key], dtype,
                               ref.storage.start + ref.offset, ref.shape, ref.stride, name)
    return LazyTensor(name, ref.shape, dtype, str(path), loader,
                      data_key=(str(path), ref.storage.key, loader.offset, ref.shape,
                                ref.stride))
