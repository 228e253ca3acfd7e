"""Optional formats: GGUF (``gguf``), ONNX (``onnx``), Keras/HDF5 (``h5py``).

Each reader imports its library only when a file of its format is opened; without the
library the file is refused with a :class:`~rmt.errors.CheckpointError` that names the
extra to install. Quantised GGUF tensors (Q8_0, Q4_K, ...) are dequantised to float32 by
``gguf.quants.dequantize`` when loaded; F32/F16/BF16 tensors are memory-mapped views.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from rmt.errors import CheckpointError
from rmt.io.tensor import LazyTensor


def _need(module: str, extra: str, path: Path) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise CheckpointError(path, f"reading this format needs the {module!r} package: "
                                    f"pip install 'rmt[{extra}]'") from None


def iter_gguf(path: Path) -> Iterator[tuple[str, LazyTensor]]:
    """Tensors of a GGUF file (llama.cpp), in NumPy (rows, cols) order."""
    gguf = _need("gguf", "gguf", path)
    from gguf.quants import dequantize

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as err:  # the library raises ValueError/IndexError/struct errors alike
        raise CheckpointError(path, f"unreadable GGUF ({type(err).__name__}: {err})") from None
    qt = gguf.GGMLQuantizationType
    plain = {qt.F32: np.dtype(np.float32), qt.F16: np.dtype(np.float16),
             qt.BF16: np.dtype(ml_dtypes.bfloat16), qt.F64: np.dtype(np.float64)}
    for t in reader.tensors:
        shape = tuple(int(s) for s in reversed(t.shape.tolist()))
        kind = t.tensor_type
        if kind in plain:
            dtype = plain[kind]

            def loader(t=t, dtype=dtype, shape=shape) -> np.ndarray:
                return np.asarray(t.data).view(dtype).reshape(shape)
        else:
            dtype = np.dtype(np.float32)

            def loader(t=t, kind=kind, shape=shape) -> np.ndarray:
                return dequantize(t.data, kind).reshape(shape)

        yield str(t.name), LazyTensor(str(t.name), shape, dtype, str(path), loader)


def iter_onnx(path: Path) -> Iterator[tuple[str, LazyTensor]]:
    """Initializers of an ONNX model; external data is read per tensor when loaded."""
    onnx = _need("onnx", "onnx", path)
    from onnx import external_data_helper, helper, numpy_helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf DecodeError and friends
        raise CheckpointError(path, f"unreadable ONNX ({type(err).__name__}: {err})") from None
    for init in model.graph.initializer:
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type))
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(path, f"initializer {init.name!r}: unsupported ONNX type "
                                        f"{init.data_type}") from None

        def loader(init=init) -> np.ndarray:
            if external_data_helper.uses_external_data(init):
                external_data_helper.load_external_data_for_tensor(init, str(path.parent))
            return numpy_helper.to_array(init)

        yield init.name, LazyTensor(init.name, tuple(int(d) for d in init.dims), dtype,
                                    str(path), loader)


def iter_hdf5(path: Path) -> Iterator[tuple[str, LazyTensor]]:
    """Datasets of a Keras ``.h5``/``.weights.h5`` file or of a ``.keras`` zip, by HDF5 path."""
    h5py = _need("h5py", "keras", path)
    source: Any = path
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if n.endswith(".weights.h5")]
            if not members:
                raise CheckpointError(path, ".keras archive without model.weights.h5")
            source = io.BytesIO(zf.read(members[0]))
    try:
        handle = h5py.File(source, "r")
    except OSError as err:
        raise CheckpointError(path, f"unreadable HDF5 ({err})") from None
    found: list[tuple[str, tuple[int, ...], np.dtype]] = []
    handle.visititems(lambda name, obj: found.append((name, obj.shape, obj.dtype))
                      if isinstance(obj, h5py.Dataset) else None)
    for name, shape, dtype in found:
        def loader(name=name) -> np.ndarray:
            return handle[name][()]

        yield name, LazyTensor(name, tuple(shape), np.dtype(dtype), str(path), loader)
