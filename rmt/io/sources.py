"""Checkpoint sources other than a single file: shards, directories, .npz, dicts, modules.

Listing is lazy and fault-contained: a shard or file that cannot be read becomes broken
entries (``LazyTensor.error`` names the file and the problem) and every readable tensor
is still listed. Nothing outside the checkpoint is read: an index may name only files
inside its own directory, and symbolic links in a directory are followed only to regular
files inside it.
"""

from __future__ import annotations

import ast
import functools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rmt.errors import CheckpointError
from rmt.io.files import FileIdentity, contained, inside, regular_file_stat
from rmt.io.layout import torch_module_layout
from rmt.io.tensor import LazyTensor, checked_shape
from rmt.io.zipentry import ZipEntry, entry_problem, open_zip

MAX_INDEX_BYTES = 64 * 2**20
# Checkpoint files a directory without safetensors is read from.
OTHER_SUFFIXES = (".bin", ".pt", ".pth", ".jit", ".npz", ".gguf", ".onnx", ".h5", ".keras")
# .npy headers are short dict literals; NumPy itself refuses longer ones by default.
MAX_NPY_HEADER = 10000



def _same(arr: Any) -> Any:
    """The loader of an in-memory array: the array itself."""
    return arr

def _guarded(path: Path, names: list[str] | None = None) -> Iterator[tuple[str, LazyTensor]]:
    """The tensors of one file; if it fails, broken entries instead of an exception.

    ``names``: the tensors an index expects from this file (each gets a broken entry
    when the file is unreadable); without them the file gets one broken entry named
    after it.
    """
    from rmt.io import open_file

    wanted = None if names is None else set(names)
    seen: set[str] = set()
    try:
        regular_file_stat(path)  # a directory or FIFO named like a checkpoint file
        for name, tensor in open_file(path):
            if wanted is None or name in wanted:
                seen.add(name)
                yield name, tensor
    except CheckpointError as err:
        problem = err.problem
    except Exception as err:  # a library error in one file never stops the others
        problem = f"unreadable ({type(err).__name__}: {str(err)[:200]})"
    else:
        for name in sorted((wanted or set()) - seen):
            yield name, LazyTensor.broken(name, str(path), f"tensor {name!r} is listed in "
                                                           "the index but not in this shard")
        return
    if wanted is None:
        yield path.name, LazyTensor.broken(path.name, str(path), problem)
    else:
        for name in sorted(wanted - seen):
            yield name, LazyTensor.broken(name, str(path), problem)


def _read_weight_map(path: Path) -> dict[str, str]:
    size = regular_file_stat(path).st_size
    if size > MAX_INDEX_BYTES:
        raise CheckpointError(path, f"shard index of {size} bytes (more than "
                                    f"{MAX_INDEX_BYTES})")
    try:
        index = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as err:
        raise CheckpointError(path, f"bad shard index ({type(err).__name__}: "
                                    f"{str(err)[:120]})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise CheckpointError(path, "bad shard index: no 'weight_map' object of tensor name "
                                    "-> shard file")
    return weight_map


def iter_index(path: Path) -> Iterator[tuple[str, LazyTensor]]:
    """Tensors of a sharded checkpoint described by ``*.index.json`` (Hugging Face layout),
    shard by shard, each shard's tensors in file order.

    A shard that is missing, unreadable or outside the index's directory gives a broken
    entry for each tensor the index assigns to it.
    """
    weight_map = _read_weight_map(path)
    by_shard: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(name)
    for shard, names in by_shard.items():
        shard_path = contained(path.parent, shard)
        if shard.endswith(".index.json"):
            for name in names:
                yield name, LazyTensor.broken(name, str(path), f"shard {shard!r} is an index "
                                                               "itself (indexes do not nest)")
            continue
        if shard_path is None:
            target = path.parent / shard
            problem = (f"shard {shard!r} listed in the index is missing"
                       if not (target.exists() or target.is_symlink())
                       else f"shard path {shard!r} leaves the checkpoint directory: refused")
            for name in names:
                yield name, LazyTensor.broken(name, str(path), problem)
            continue
        yield from _guarded(shard_path, names)


def _directory_files(path: Path) -> list[Path]:
    try:
        entries = sorted(path.iterdir())
    except OSError as err:
        raise CheckpointError(path, f"cannot list directory ({err.strerror})") from None
    files = [p for p in entries if p.name.endswith(".safetensors")]
    return files or [p for p in entries if p.suffix in OTHER_SUFFIXES]


def iter_directory(path: Path) -> Iterator[tuple[str, LazyTensor]]:
    """Tensors of every checkpoint in a directory: its ``*.index.json`` if there is one,
    else each ``.safetensors`` file (or, without any, each file with a suffix of
    :data:`OTHER_SUFFIXES`: torch, TorchScript, .npz, GGUF, ONNX, Keras) in name order.

    A file that cannot be read (dangling or escaping symlink, not a regular file, bad
    content) gives one broken entry named after it; the other files are still read.
    """
    indexes = sorted(path.glob("*.safetensors.index.json")) or sorted(path.glob("*.index.json"))
    if indexes:
        yield from iter_index(indexes[0])
        return
    files = _directory_files(path)
    if not files:
        raise CheckpointError(path, "directory holds no checkpoint file (.safetensors, an "
                                    "index, or " + ", ".join(OTHER_SUFFIXES) + ")")
    for file in files:
        if file.is_symlink() and file.exists() and not inside(path, file):
            yield file.name, LazyTensor.broken(file.name, str(file), "symbolic link to a file "
                                                                     "outside the directory: "
                                                                     "refused")
            continue
        yield from _guarded(file)


@dataclass(frozen=True)
class NpyMember:
    """Loader of one array of a .npz archive (picklable)."""

    entry: ZipEntry
    header_len: int
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool

    def __call__(self) -> np.ndarray:
        nbytes = math.prod(self.shape) * self.dtype.itemsize
        raw = self.entry.read(self.header_len, self.header_len + nbytes)
        return raw.view(self.dtype).reshape(self.shape, order="F" if self.fortran_order else "C")


def _npy_header(raw: bytes) -> tuple[dict[str, Any], int]:
    """The header dict of a .npy member and its length, parsed as a literal (no code)."""
    if raw[:6] != b"\x93NUMPY" or len(raw) < 10:
        raise ValueError("not a .npy member (bad magic)")
    major = raw[6]
    if major == 1:
        length, start = int.from_bytes(raw[8:10], "little"), 10
    elif major in (2, 3):
        length, start = int.from_bytes(raw[8:12], "little"), 12
    else:
        raise ValueError(f"unknown .npy format version {major}")
    if length > MAX_NPY_HEADER or start + length > len(raw):
        raise ValueError(f"header of {length} bytes is longer than the member or the "
                         f"{MAX_NPY_HEADER}-byte limit")
    text = raw[start:start + length].decode("utf8" if major == 3 else "latin1")
    header = ast.literal_eval(text)
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ValueError("header is not a dict of descr, fortran_order and shape")
    return header, start + length


def iter_npz(path: Path) -> Iterator[tuple[str, LazyTensor]]:
    """Arrays of a NumPy ``.npz`` archive, read without NumPy's pickle path.

    Headers are parsed as literals; an array whose header is malformed, holds Python
    objects, or claims more bytes than its member holds becomes a broken entry.
    """
    identity = FileIdentity.of(path)
    zf, infos = open_zip(path)
    zf.close()
    for member, info in infos.items():
        if not member.endswith(".npy"):
            continue
        name = member[:-4]
        entry = ZipEntry.of(identity, info, f"array {name!r}: ")
        try:
            problem = entry_problem(info)
            if problem:
                raise ValueError(problem)
            header, header_len = _npy_header(entry.head(MAX_NPY_HEADER + 12))
            dtype = np.lib.format.descr_to_dtype(header["descr"])
            shape = checked_shape(header["shape"], path, f"array {name!r}")
            if dtype.hasobject:
                raise ValueError("holds Python objects (pickle refused)")
            if not isinstance(header["fortran_order"], bool):
                raise ValueError("fortran_order is not a boolean")
            nbytes = math.prod(shape) * dtype.itemsize
            if header_len + nbytes > info.file_size:
                raise ValueError(f"header claims {nbytes} bytes of data, the member holds "
                                 f"{info.file_size - header_len}")
            problem = entry_problem(info, header_len + nbytes)  # now that the need is known
            if problem:
                raise ValueError(problem)
        except CheckpointError as err:
            yield name, LazyTensor.broken(name, str(path), err.problem)
            continue
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError,
                UnicodeDecodeError, KeyError) as err:
            yield name, LazyTensor.broken(name, str(path), f"array {name!r}: {str(err)[:200]}")
            continue
        loader = NpyMember(entry, header_len, dtype, shape, header["fortran_order"])
        yield name, LazyTensor(name, shape, dtype, str(path), loader,
                               data_key=(str(path), member))


def iter_mapping(weights: Mapping[str, Any]) -> Iterator[tuple[str, LazyTensor]]:
    """A dict of arrays (NumPy, memmaps, CuPy, or anything ``np.asarray`` accepts)."""
    for name, value in weights.items():
        arr = value if hasattr(value, "shape") and hasattr(value, "dtype") else np.asarray(value)
        key = None
        if isinstance(arr, np.ndarray):  # the same memory under two names: tied weights
            key = ("<dict>", arr.__array_interface__["data"][0], arr.shape, arr.strides,
                   arr.dtype.str)
        yield str(name), LazyTensor(str(name), tuple(int(s) for s in arr.shape),
                                    np.dtype(arr.dtype), "<dict>", functools.partial(_same, arr),
                                    data_key=key)


def _torch_to_numpy(t: Any) -> np.ndarray:
    import ml_dtypes
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    for name in ("float8_e4m3fn", "float8_e5m2"):
        if t.dtype == getattr(torch, name, None):
            return t.view(torch.uint8).numpy().view(getattr(ml_dtypes, name))
    return t.numpy()


def iter_module(module: Any) -> Iterator[tuple[str, LazyTensor]]:
    """Parameters and buffers of a ``torch.nn.Module`` (its ``state_dict``), no copies;
    each with the layout its submodule's class gives it (a ``Conv1d`` weight is a kernel
    whatever its shape)."""
    owners = dict(module.named_modules())
    for name, t in module.state_dict().items():
        owner_name, _, attribute = name.rpartition(".")
        owner = owners.get(owner_name)
        layout = None if owner is None else torch_module_layout(type(owner).__name__,
                                                                attribute, t.dim())
        dtype = np.dtype(_torch_to_numpy(t.flatten()[:0]).dtype)
        key = (type(module).__name__, t.device.type, t.data_ptr(), tuple(t.shape),
               tuple(t.stride()), str(t.dtype))  # tied parameters share it
        yield name, LazyTensor(name, tuple(t.shape), dtype, type(module).__name__,
                               functools.partial(_torch_to_numpy, t), data_key=key,
                               layout=layout)

