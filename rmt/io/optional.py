"""Optional formats: GGUF (``gguf``), ONNX (``onnx``), Keras/HDF5 (``h5py``).

Each reader imports its library only when a file of its format is opened; without the
library the file is refused with a :class:`~rmt.errors.CheckpointError` that names the
extra to install. The libraries parse the containers; rmt checks what they report
before reading any tensor (sizes with Python integers, byte ranges inside the file, no
data outside the model's directory) and reads the bytes itself:

- GGUF: tensors are read by offset with ``pread``; quantised ones (Q8_0, Q4_K, ...) are
  dequantised to float32 by ``gguf.quants.dequantize``. Overlapping or out-of-file
  ranges make the tensor a broken entry.
- ONNX: external data must be a regular file inside the model's directory, its range
  inside that file and of exactly the tensor's size; a mis-sized initializer is a
  broken entry.
- HDF5: datasets with external raw storage or virtual (other-file) sources are refused,
  and so are datasets whose declared shape has no data behind it (unallocated storage,
  or compressed storage that would inflate more than 100 times).
"""

from __future__ import annotations

import contextlib
import functools
import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from rmt.errors import CheckpointError
from rmt.io.files import FileIdentity, contained, read_bytes
from rmt.io.tensor import LazyTensor, checked_shape
from rmt.io.zipentry import MAX_INFLATE_RATIO, entry_problem, open_zip


def _need(module: str, extra: str, path: Path) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise CheckpointError(path, f"reading this format needs the {module!r} package: "
                                    f"pip install 'rmt[{extra}]'") from None


# --- GGUF --------------------------------------------------------------------------------

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
    gguf = _need("gguf", "gguf", path)
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


# --- ONNX --------------------------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def _onnx_model(identity: FileIdentity) -> Any:
    import onnx

    identity.check()
    return onnx.load(identity.path, load_external_data=False)


@dataclass(frozen=True)
class OnnxInitializer:
    """Loader of one ONNX initializer (picklable): the model is parsed once per process."""

    identity: FileIdentity
    index: int
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    external: tuple[FileIdentity, int] | None  # (file, offset) of external data

    def __call__(self) -> np.ndarray:
        what = f"initializer {self.name!r}: "
        nbytes = math.prod(self.shape) * self.dtype.itemsize
        if self.external is not None:
            file, offset = self.external
            data = read_bytes(file, offset, nbytes, what)
            return data.view(self.dtype).reshape(self.shape)
        from onnx import numpy_helper

        init = _onnx_model(self.identity).graph.initializer[self.index]
        if init.HasField("raw_data"):
            raw = np.frombuffer(init.raw_data, dtype=np.uint8)
            return raw.view(self.dtype).reshape(self.shape)
        try:
            return np.asarray(numpy_helper.to_array(init)).reshape(self.shape)
        except (ValueError, TypeError) as err:
            raise CheckpointError(self.identity.path, f"{what}{err}") from None


def _external(path: Path, init: Any, nbytes: int) -> tuple[FileIdentity, int]:
    info = {entry.key: entry.value for entry in init.external_data}
    location = info.get("location", "")
    target = contained(path.parent, location)
    if target is None:
        raise CheckpointError(path, f"initializer {init.name!r}: external data {location!r} "
                                    "is not a file inside the model's directory: refused")
    identity = FileIdentity.of(target)
    size = identity.size
    try:
        offset = int(info.get("offset", 0))
        length = int(info.get("length", size - offset))
    except ValueError:
        raise CheckpointError(path, f"initializer {init.name!r}: external data offset or "
                                    "length is not an integer") from None
    if offset < 0 or length != nbytes or offset + length > size:
        raise CheckpointError(path, f"initializer {init.name!r}: external data {offset}.."
                                    f"{offset + length} of a {size}-byte file does not hold "
                                    f"its {nbytes} bytes")
    return identity, offset


def iter_onnx(path: Path) -> Iterator[tuple[str, LazyTensor]]:
    """Initializers of an ONNX model; external data is read per tensor when loaded."""
    _need("onnx", "onnx", path)
    from onnx import external_data_helper, helper

    identity = FileIdentity.of(path)
    try:
        model = _onnx_model(identity)
    except Exception as err:  # protobuf DecodeError and friends
        raise CheckpointError(path, f"unreadable ONNX ({type(err).__name__}: "
                                    f"{str(err)[:160]})") from None
    for index, init in enumerate(model.graph.initializer):
        name = init.name
        try:
            try:
                dtype = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type))
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(path, f"initializer {name!r}: unsupported ONNX type "
                                            f"{init.data_type}") from None
            shape = checked_shape(list(init.dims), path, f"initializer {name!r}")
            nbytes = math.prod(shape) * dtype.itemsize
            external = None
            if external_data_helper.uses_external_data(init):
                external = _external(path, init, nbytes)
            elif init.HasField("raw_data") and len(init.raw_data) != nbytes:
                raise CheckpointError(path, f"initializer {name!r}: raw data of "
                                            f"{len(init.raw_data)} bytes for shape "
                                            f"{list(shape)} of {dtype} ({nbytes} bytes)")
        except CheckpointError as err:
            yield name, LazyTensor.broken(name, str(path), err.problem)
            continue
        loader = OnnxInitializer(identity, index, name, dtype, shape, external)
        yield name, LazyTensor(name, shape, dtype, str(path), loader,
                               data_key=(str(path), "initializer", index))


# --- HDF5 (Keras) --------------------------------------------------------------------------

@contextlib.contextmanager
def _h5_open(identity: FileIdentity, member: str | None) -> Iterator[Any]:
    import h5py

    identity.check()
    if member is None:
        with h5py.File(identity.path, "r") as handle:
            yield handle
        return
    # A .keras zip: h5py reads the member through a file object, no copy to memory.
    with zipfile.ZipFile(identity.path) as zf, zf.open(member) as fh, \
            h5py.File(fh, "r") as handle:
        yield handle


def _dataset_problem(ds: Any) -> str | None:
    if ds.external:
        return "dataset with external raw storage (it reads other files): refused"
    if getattr(ds, "is_virtual", False):
        return "virtual dataset (its data lives in other files): refused"
    nbytes = math.prod(int(s) for s in ds.shape) * ds.dtype.itemsize
    stored = int(ds.id.get_storage_size())
    if nbytes and stored == 0:
        return f"declared shape {list(ds.shape)} has no data behind it"
    if ds.compression is None and ds.chunks is None and stored < nbytes:
        return f"declared {nbytes} bytes, {stored} stored"
    if nbytes > MAX_INFLATE_RATIO * stored + 2**20:
        return (f"{stored} stored bytes would inflate to {nbytes} (refused: more than "
                f"{MAX_INFLATE_RATIO}x)")
    return None


@dataclass(frozen=True)
class Hdf5Dataset:
    """Loader of one HDF5 dataset by path (picklable)."""

    identity: FileIdentity
    member: str | None
    name: str

    def __call__(self) -> np.ndarray:
        try:
            with _h5_open(self.identity, self.member) as handle:
                return np.asarray(handle[self.name][()])
        except (OSError, KeyError, ValueError, TypeError) as err:
            raise CheckpointError(self.identity.path, f"dataset {self.name!r}: unreadable "
                                                      f"({type(err).__name__}: {err})") from None


def iter_hdf5(path: Path) -> Iterator[tuple[str, LazyTensor]]:
    """Datasets of a Keras ``.h5``/``.weights.h5`` file or of a ``.keras`` zip, by HDF5 path."""
    h5py = _need("h5py", "keras", path)
    identity = FileIdentity.of(path)
    member = None
    if zipfile.is_zipfile(path):
        zf, infos = open_zip(path)
        zf.close()
        members = [n for n in infos if n.endswith(".weights.h5")]
        if not members:
            raise CheckpointError(path, ".keras archive without model.weights.h5")
        member = members[0]
        problem = entry_problem(infos[member])
        if problem:
            raise CheckpointError(path, f"{member}: {problem}")
    found: list[tuple[str, tuple[int, ...], np.dtype, str | None]] = []
    try:
        with _h5_open(identity, member) as handle:
            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset):
                    found.append((name, tuple(int(s) for s in obj.shape), obj.dtype,
                                  _dataset_problem(obj)))

            handle.visititems(visit)
    except CheckpointError:
        raise
    except Exception as err:  # h5py raises OSError, KeyError, TypeError, RuntimeError alike
        raise CheckpointError(path, f"unreadable HDF5 ({type(err).__name__}: "
                                    f"{str(err)[:160]})") from None
    for name, shape, dtype, problem in found:
        if problem:
            yield name, LazyTensor.broken(name, str(path), f"dataset {name!r}: {problem}",
                                          shape, dtype if not dtype.hasobject else None)
            continue
        yield name, LazyTensor(name, shape, np.dtype(dtype), str(path),
                               Hdf5Dataset(identity, member, name),
                               data_key=(str(path), member, name))
