"""safetensors reader: the JSON header is parsed by hand and each tensor is memory-mapped.

``safetensors.numpy`` cannot read FP8 and needs ``import ml_dtypes`` for BF16, and
``load_file`` holds two copies of a shard; parsing the 8-byte length and the header and
mapping ``data_offsets`` works for every dtype with zero copies (science/ecosystem.md §0).
Every structural fact is checked against the file size before anything is mapped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import ml_dtypes
import numpy as np

from rmt.errors import CheckpointError
from rmt.io.tensor import LazyTensor

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32), "I16": np.dtype(np.int16), "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8), "U16": np.dtype(np.uint16), "U32": np.dtype(np.uint32),
    "U64": np.dtype(np.uint64), "BOOL": np.dtype(np.bool_),
}
MAX_HEADER = 100 * 2**20


def read_header(path: str | Path) -> tuple[dict, int]:
    """Parse and validate a safetensors header: (tensor entries, byte offset of the data)."""
    path = Path(path)
    size = os.path.getsize(path)
    if size < 8:
        raise CheckpointError(path, f"truncated: {size} bytes, shorter than the 8-byte "
                                    "header length")
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if n > MAX_HEADER or 8 + n > size:
            raise CheckpointError(path, f"bad header: length {n} does not fit a {size}-byte file")
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(path, f"bad header: not JSON ({err})") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "bad header: not a JSON object")
    header.pop("__metadata__", None)
    data_start = 8 + n
    for name, entry in header.items():
        try:
            dtype = entry["dtype"]
            shape = [int(s) for s in entry["shape"]]
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(path, f"bad header entry for {name!r}: {entry!r}") from None
        if dtype not in DTYPES:
            raise CheckpointError(path, f"tensor {name!r}: unsupported dtype {dtype}")
        expected = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype].itemsize
        if min(shape, default=0) < 0 or begin < 0 or end - begin != expected:
            raise CheckpointError(path, f"tensor {name!r}: offsets {begin}..{end} do not hold "
                                        f"shape {shape} of {dtype}")
        if data_start + end > size:
            raise CheckpointError(path, f"tensor {name!r}: offsets past the end of the file "
                                        f"(truncated: needs {data_start + end} bytes, has {size})")
    return header, data_start


def _memmap(path: Path, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    if count == 0:
        return np.empty(shape, dtype=dtype)
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=(count * dtype.itemsize,))
    if not shape:  # memmap cannot be 0-d; a scalar is one element, copied
        return np.array(raw.view(dtype)[0])
    return raw.view(dtype).reshape(shape)


def iter_safetensors(path: str | Path) -> Iterator[tuple[str, LazyTensor]]:
    """(name, LazyTensor) for every tensor of a .safetensors file, in file order."""
    path = Path(path)
    header, data_start = read_header(path)
    entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    for name, entry in entries:
        dtype = DTYPES[entry["dtype"]]
        shape = tuple(int(s) for s in entry["shape"])
        offset = data_start + int(entry["data_offsets"][0])

        def loader(offset=offset, dtype=dtype, shape=shape) -> np.ndarray:
            return _memmap(path, offset, dtype, shape)

        yield name, LazyTensor(name, shape, dtype, str(path), loader)


def stream_safetensors(
    path: str | Path,
    layout: dict[str, tuple[np.dtype, tuple[int, ...]]],
    chunks: Callable[[str], Iterable[np.ndarray]],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write a .safetensors file tensor by tensor, holding one chunk in memory at a time.

    Parameters
    ----------
    path : path
        Output file.
    layout : dict
        ``name -> (dtype, shape)`` in file order; dtype is any of ``DTYPES``.
    chunks : callable
        ``chunks(name)`` yields arrays whose bytes, in order, are the tensor's row-major
        data (their own dtype is not interpreted: raw bits are fine); the total is checked
        against the header.
    metadata : dict of str, optional
        The ``__metadata__`` entry.
    """
    codes = {v: k for k, v in DTYPES.items()}
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, (dtype, shape) in layout.items():
        dtype = np.dtype(dtype)
        if dtype not in codes:
            raise ValueError(f"{name}: dtype {dtype} has no safetensors code")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        header[name] = {"dtype": codes[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little"))
        fh.write(raw)
        for name in layout:
            written = 0
            for chunk in chunks(name):
                data = np.asarray(chunk, order="C").reshape(-1).view(np.uint8)
                fh.write(data.data)
                written += data.nbytes
            begin, end = header[name]["data_offsets"]
            if written != end - begin:
                raise ValueError(f"{name}: got {written} bytes of data, the header says "
                                 f"{end - begin}")


def write_safetensors(path: str | Path, tensors: dict[str, np.ndarray],
                      metadata: dict[str, str] | None = None) -> None:
    """Write arrays (any DTYPES dtype, bfloat16/float8 included) to a .safetensors file."""
    arrays = {name: np.asarray(arr, order="C") for name, arr in tensors.items()}
    stream_safetensors(path, {name: (arr.dtype, arr.shape) for name, arr in arrays.items()},
                       lambda name: (arrays[name],), metadata)
