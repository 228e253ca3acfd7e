"""safetensors reader: the JSON header is parsed and validated by hand, tensors are read
by offset.

``safetensors.numpy`` cannot read FP8 and needs ``import ml_dtypes`` for BF16, and
``load_file`` holds two copies of a shard; parsing the 8-byte length and the header and
reading each tensor's ``data_offsets`` range works for every dtype with one copy. Every
structural fact is checked against the file size before anything is read, and tensors
are read with ``pread`` (:mod:`rmt.io.files`) so a file that shrinks during a run gives
an error, not SIGBUS.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from rmt.errors import CheckpointError
from rmt.io.files import FileIdentity, read_bytes, regular_file_stat
from rmt.io.tensor import LazyTensor, checked_shape

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32), "I16": np.dtype(np.int16), "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8), "U16": np.dtype(np.uint16), "U32": np.dtype(np.uint32),
    "U64": np.dtype(np.uint64), "BOOL": np.dtype(np.bool_),
}
MAX_HEADER = 100 * 2**20


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


class _DuplicateKey(Exception):
    pass


def _parse_header(path: Path, raw: bytes) -> dict:
    # json's C decoder counts its own recursion, so deep nesting raises RecursionError
    # (never a C stack overflow); duplicate names are caught while objects are built.
    try:
        header = json.loads(raw, object_pairs_hook=_unique_keys)
    except _DuplicateKey as dup:
        raise CheckpointError(path, f"bad header: tensor name {str(dup.args[0])[:80]!r} "
                                    "appears more than once") from None
    except RecursionError:
        raise CheckpointError(path, "bad header: JSON nested deeper than the parser allows "
                                    "(a real header has depth 3)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(path, f"bad header: not JSON ({type(err).__name__}: "
                                    f"{str(err)[:120]})") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "bad header: not a JSON object")
    return header


def _offsets(path: Path, name: str, entry: dict) -> tuple[int, int]:
    offsets = entry.get("data_offsets")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise CheckpointError(path, f"tensor {name!r}: data_offsets must be two integers, "
                                    f"got {str(offsets)[:60]}")
    return offsets[0], offsets[1]


def read_header(path: str | Path) -> tuple[dict, int]:
    """Parse and validate a safetensors header: (tensor entries, byte offset of the data).

    Every field is checked with Python integers (no int64 products that wrap): dtype
    known, shape a list of non-negative ints, ``data_offsets`` two ints whose span is
    exactly the shape's bytes, inside the file, and no two tensors' bytes overlapping.
    Duplicate names, non-JSON, nesting deeper than the JSON parser's recursion limit and
    headers longer than :data:`MAX_HEADER` are refused.

    Parameters
    ----------
    path : path
        The .safetensors file.

    Returns
    -------
    entries : dict
        Tensor name → header entry (dtype, shape, data_offsets).
    data_start : int
        Byte offset where the data section begins.

    Raises
    ------
    rmt.errors.CheckpointError
        Naming the file, the tensor and the problem.
    """
    path = Path(path)
    size = regular_file_stat(path).st_size
    if size < 8:
        raise CheckpointError(path, f"truncated: {size} bytes, shorter than the 8-byte "
                                    "header length")
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if n > MAX_HEADER or 8 + n > size:
            raise CheckpointError(path, f"bad header: length {n} does not fit a {size}-byte file")
        raw = fh.read(n)
    header = _parse_header(path, raw)
    header.pop("__metadata__", None)
    data_start = 8 + n
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise CheckpointError(path, f"bad header entry for {name!r}: not an object")
        dtype = entry.get("dtype")
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise CheckpointError(path, f"tensor {name!r}: unsupported dtype {str(dtype)[:40]}")
        shape = checked_shape(entry.get("shape"), path, f"tensor {name!r}")
        begin, end = _offsets(path, name, entry)
        expected = math.prod(shape) * DTYPES[dtype].itemsize
        if begin < 0 or end - begin != expected:
            raise CheckpointError(path, f"tensor {name!r}: offsets {begin}..{end} do not hold "
                                        f"shape {list(shape)} of {dtype}")
        if data_start + end > size:
            raise CheckpointError(path, f"tensor {name!r}: offsets past the end of the file "
                                        f"(truncated: needs {data_start + end} bytes, has {size})")
        spans.append((begin, end, name))
    reach, last = 0, ""  # furthest end so far, and whose: catches nested spans too
    for begin, end, name in sorted(s for s in spans if s[1] > s[0]):
        if begin < reach:
            raise CheckpointError(path, f"tensors {last!r} and {name!r}: data offsets overlap")
        reach, last = end, name
    return header, data_start


@dataclass(frozen=True)
class FileSlice:
    """Loader of a C-ordered tensor stored at ``offset`` of a file (picklable)."""

    identity: FileIdentity
    name: str
    offset: int
    dtype: np.dtype
    shape: tuple[int, ...]

    def __call__(self) -> np.ndarray:
        nbytes = math.prod(self.shape) * self.dtype.itemsize
        raw = read_bytes(self.identity, self.offset, nbytes, f"tensor {self.name!r}: ")
        return raw.view(self.dtype).reshape(self.shape)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of the first axis only (one ranged read).

        Parameters
        ----------
        start, stop : int
            The row range (clipped to the tensor).

        Returns
        -------
        numpy.ndarray
        """
        start, stop = max(0, start), min(self.shape[0], stop)
        row = math.prod(self.shape[1:]) * self.dtype.itemsize
        raw = read_bytes(self.identity, self.offset + start * row, max(0, stop - start) * row,
                         f"tensor {self.name!r}: ")
        return raw.view(self.dtype).reshape((max(0, stop - start), *self.shape[1:]))


def iter_safetensors(path: str | Path) -> Iterator[tuple[str, LazyTensor]]:
    """(name, LazyTensor) for every tensor of a .safetensors file, in file order."""
    path = Path(path)
    identity = FileIdentity.of(path)
    header, data_start = read_header(path)
    entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    for name, entry in entries:
        dtype = DTYPES[entry["dtype"]]
        shape = tuple(entry["shape"])
        begin, end = entry["data_offsets"]
        loader = FileSlice(identity, name, data_start + begin, dtype, shape)
        yield name, LazyTensor(name, shape, dtype, str(path), loader,
                               data_key=(str(path), begin, end, entry["dtype"], shape))


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
        nbytes = math.prod(shape) * dtype.itemsize
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
    """Write arrays (any DTYPES dtype, bfloat16/float8 included) to a .safetensors file.

    Parameters
    ----------
    path : path
        File to write.
    tensors : dict of str to numpy.ndarray
        Arrays by name.
    metadata : dict of str to str, optional
        The header's ``__metadata__``.
    """
    arrays = {name: np.asarray(arr, order="C") for name, arr in tensors.items()}
    stream_safetensors(path, {name: (arr.dtype, arr.shape) for name, arr in arrays.items()},
                       lambda name: (arrays[name],), metadata)
