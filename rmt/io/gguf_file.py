"""GGUF files (llama.cpp), read with the optional ``gguf`` package.

The library parses the header; rmt checks what it reports before reading any tensor
(sizes with Python integers, byte ranges inside the file, no two tensors sharing bytes)
and reads each tensor itself by offset with ``pread``. Quantised tensors (Q8_0, Q4_K,
...) are dequantised to float32 by ``gguf.quants.dequantize``; overlapping or
out-of-file ranges make the tensor a broken entry.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from rmt.errors import CheckpointError
from rmt.io.extras import need
from rmt.io.files import FileIdentity, read_bytes
from rmt.io.tensor import LazyTensor, checked_shape


@dataclass(frozen=True)
class GgufTensor:
    """Loader of one GGUF tensor by byte range (picklable)."""

    identity: FileIdentity
    name: str
    offset: int
    nbytes: int
    kind: int
    shape: tuple[int, ...]

    def __call__(self) -> np.ndarray:
        import gguf
        from gguf.quants import dequantize, quant_shape_to_byte_shape

        raw = read_bytes(self.identity, self.offset, self.nbytes, f"tensor {self.name!r}: ")
        kind = gguf.GGMLQuantizationType(self.kind)
        plain = _gguf_plain(gguf)
        if kind in plain:
            return raw.view(plain[kind]).reshape(self.shape)
        blocks = raw.reshape(quant_shape_to_byte_shape(self.shape, kind))
        return np.asarray(dequantize(blocks, kind), dtype=np.float32).reshape(self.shape)


def _gguf_plain(gguf: Any) -> dict[Any, np.dtype]:
    qt = gguf.GGMLQuantizationType
    return {qt.F32: np.dtype(np.float32), qt.F16: np.dtype(np.float16),
            qt.BF16: np.dtype(ml_dtypes.bfloat16), qt.F64: np.dtype(np.float64),
            qt.I8: np.dtype(np.int8), qt.I16: np.dtype(np.int16), qt.I32: np.dtype(np.int32),
            qt.I64: np.dtype(np.int64)}


def iter_gguf(path: Path) -> Iterator[tuple[str, LazyTensor]]:
    """Tensors of a GGUF file (llama.cpp), in NumPy (rows, cols) order."""
    gguf = need("gguf", "gguf", path)
    identity = FileIdentity.of(path)
    try:
        reader = gguf.GGUFReader(str(path))
        tensors = [(str(t.name), int(t.tensor_type), [int(d) for d in t.shape.tolist()],
                    int(t.data_offset)) for t in reader.tensors]
    except Exception as err:  # the library raises ValueError/IndexError/KeyError/struct errors
        raise CheckpointError(path, f"unreadable GGUF ({type(err).__name__}: "
                                    f"{str(err)[:160]})") from None
    del reader  # drop its memory map of the whole file: tensors are read by pread
    plain = _gguf_plain(gguf)
    spans: list[tuple[int, int]] = []
    for name, kind_code, dims, offset in tensors:
        try:
            shape = checked_shape(list(reversed(dims)), path, f"tensor {name!r}")
            kind = gguf.GGMLQuantizationType(kind_code)
            block, type_size = gguf.GGML_QUANT_SIZES[kind]
            if shape and shape[-1] % block:
                raise CheckpointError(path, f"tensor {name!r}: row of {shape[-1]} is not a "
                                            f"multiple of the {kind.name} block of {block}")
            nbytes = math.prod(shape) // block * type_size
            if offset < 0 or offset + nbytes > identity.size:
                raise CheckpointError(path, f"tensor {name!r}: bytes {offset}..{offset + nbytes}"
                                            f" lie outside the {identity.size}-byte file")
            if any(offset < end and begin < offset + nbytes for begin, end in spans):
                raise CheckpointError(path, f"tensor {name!r}: its bytes overlap another "
                                            "tensor's")
        except CheckpointError as err:
            yield name, LazyTensor.broken(name, str(path), err.problem)
            continue
        spans.append((offset, offset + nbytes))
        dtype = plain.get(kind, np.dtype(np.float32))
        yield name, LazyTensor(name, shape, dtype, str(path),
                               GgufTensor(identity, name, offset, nbytes, kind_code, shape),
                               data_key=(str(path), offset, nbytes))
