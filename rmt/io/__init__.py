"""Checkpoint readers: every format becomes a stream of ``(name, LazyTensor)``.

``open_checkpoint(source)`` sniffs the format and yields the tensors one at a time, each
read only when asked (memory maps where the format allows), so a whole model never sits
in memory. Sources: a ``.safetensors`` file, a sharded Hugging Face checkpoint (its
``*.index.json`` or the directory), a PyTorch ``.pt``/``.bin`` file (zip or legacy
pre-1.6 format) or TorchScript archive (read without torch and without running pickle
code), a ``.npz`` archive, a dict of arrays, or a
``torch.nn.Module``; with their optional libraries, GGUF, ONNX and Keras/HDF5; and PEFT
LoRA adapters (:mod:`rmt.io.peft`: one low-rank update per module). Unreadable
files raise :class:`rmt.errors.CheckpointError` naming the file and the problem; a bad
tensor, or a bad file of a directory or shard index, is a broken entry instead, so the
rest of the checkpoint is still read. Tensors are read into memory with ``pread``
(:mod:`rmt.io.files`), never memory-mapped, so a file that shrinks on disk during a run
is an error for the tensors it lost, not a crash.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rmt.errors import CheckpointError
from rmt.io.files import regular_file_stat
from rmt.io.gguf_file import iter_gguf
from rmt.io.keras_h5 import iter_hdf5
from rmt.io.onnx_model import iter_onnx
from rmt.io.peft import is_adapter, iter_adapter
from rmt.io.safetensors import (
    iter_safetensors,
    read_header,
    stream_safetensors,
    write_safetensors,
)
from rmt.io.sources import iter_directory, iter_index, iter_mapping, iter_module, iter_npz
from rmt.io.tensor import LazyTensor
from rmt.io.torchlegacy import LEGACY_SIGNATURE, iter_torch_legacy
from rmt.io.torchzip import iter_torch_zip
from rmt.io.zipentry import open_zip

__all__ = ["LazyTensor", "describe", "get_tensor", "open_checkpoint", "open_file",
           "read_header", "sniff", "stream_safetensors", "write_safetensors"]


# Names that promise a file: a directory called like this is refused, not walked.
FILE_SUFFIXES = (".safetensors", ".index.json", ".pt", ".pth", ".bin", ".jit", ".npz",
                 ".gguf", ".onnx", ".h5", ".keras", ".pkl")


def sniff(path: str | Path) -> str:
    """The format of a checkpoint path: ``safetensors``, ``index``, ``directory``, ``peft``
    (a LoRA adapter directory),
    ``torch-zip`` (also TorchScript), ``torch-legacy``, ``npz``, ``gguf``, ``hdf5``
    (Keras), ``onnx`` — by content where the format has a signature. FIFOs, devices
    and sockets are refused without being opened.

    Parameters
    ----------
    path : path
        The checkpoint.

    Returns
    -------
    str

    Raises
    ------
    rmt.errors.CheckpointError
        Not a regular file, unreadable, or an unrecognised format.
    """
    path = Path(path)
    if path.is_dir() and not path.name.endswith(FILE_SUFFIXES):
        return "peft" if is_adapter(path) else "directory"
    regular_file_stat(path)  # FIFOs, devices and directories named like files are refused
    if path.name.endswith(".index.json"):
        return "index"
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as err:
        raise CheckpointError(path, f"cannot read ({err.strerror or err})") from None
    if head[:4] == b"GGUF":
        return "gguf"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "hdf5"
    if path.suffix == ".onnx":
        return "onnx"
    if head[:4] == b"PK\x03\x04":
        zf, infos = open_zip(path)
        zf.close()
        names = list(infos)
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "torch-zip"
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        if any(n.endswith(".weights.h5") for n in names):
            return "hdf5"
        raise CheckpointError(path, "zip archive that is neither a torch checkpoint nor .npz")
    if path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{"):
        return "safetensors"  # read_header then says precisely what is wrong, if anything
    if head.startswith(LEGACY_SIGNATURE):
        return "torch-legacy"
    if head[257:262] == b"ustar":
        raise CheckpointError(path, "tar archive (torch < 0.4 saved checkpoints as tar): not a "
                                    "format rmt reads; re-save it with a newer torch")
    if head[:1] == b"\x80":
        raise CheckpointError(path, "a plain pickle, not a torch checkpoint: refused (a pickle "
                                    "can run code; rmt reads torch.save files, safetensors, "
                                    ".npz, GGUF, ONNX and Keras HDF5)")
    raise CheckpointError(path, f"unrecognised checkpoint format (first bytes "
                                f"{head[:8].hex(' ')}): not safetensors, a torch zip or "
                                "legacy torch file, TorchScript, .npz, GGUF, ONNX, Keras "
                                "HDF5, a shard index or a directory")


_READERS = {"safetensors": iter_safetensors, "index": iter_index, "directory": iter_directory,
            "peft": iter_adapter,
            "torch-zip": iter_torch_zip, "torch-legacy": iter_torch_legacy, "npz": iter_npz,
            "gguf": iter_gguf, "onnx": iter_onnx, "hdf5": iter_hdf5}


def open_file(path: str | Path, *, adapters: bool = True) -> Iterator[tuple[str, LazyTensor]]:
    """The tensors of one checkpoint path (format sniffed); errors are raised.

    Parameters
    ----------
    path : path
        One file or directory.
    adapters : bool, default True
        Read a PEFT adapter (a directory with ``adapter_config.json``, or its
        ``adapter_model.*`` file) as LoRA updates (:mod:`rmt.io.peft`); False: as the
        plain tensors of the file.

    Yields
    ------
    (name, LazyTensor)
    """
    path = Path(path)
    if adapters and is_adapter(path):
        yield from iter_adapter(path)
        return
    yield from _READERS[sniff(path)](path)


def open_checkpoint(source: Any) -> Iterator[tuple[str, LazyTensor]]:
    """Iterate over the tensors of a checkpoint.

    Parameters
    ----------
    source : path, mapping or torch.nn.Module
        A file or directory path (format sniffed), a dict of arrays, or a torch module.

    Yields
    ------
    (str, LazyTensor)
        Tensor name and its lazily loaded tensor. Tensors that cannot be read (a bad
        view, a refused array, an unreadable shard of a directory or index) are yielded
        as broken entries whose ``error`` says why, so the rest is still read.

    Raises
    ------
    rmt.errors.CheckpointError
        The file itself is unreadable or refused (a directory's or index's bad members
        are broken entries instead).
    """
    if isinstance(source, Mapping):
        yield from iter_mapping(source)
        return
    if hasattr(source, "state_dict") and callable(source.state_dict):
        yield from iter_module(source)
        return
    yield from open_file(source)


def get_tensor(source: Any, name: str) -> LazyTensor:
    """The LazyTensor called ``name`` (headers are read, no tensor data).

    Parameters
    ----------
    source : path, mapping or torch.nn.Module
        As in :func:`open_checkpoint`.
    name : str
        Tensor name as stored.

    Returns
    -------
    LazyTensor

    Raises
    ------
    KeyError
        No such tensor.
    """
    for found, tensor in open_checkpoint(source):
        if found == name:
            return tensor
    raise KeyError(f"no tensor {name!r} in {source}")


def describe(source: Any) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of every tensor, from headers only.

    Parameters
    ----------
    source : path, mapping or torch.nn.Module
        As in :func:`open_checkpoint`.

    Returns
    -------
    list of (name, shape, dtype)
    """
    return [(n, t.shape, str(t.dtype)) for n, t in open_checkpoint(source)]
