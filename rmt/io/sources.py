"""Checkpoint sources other than a single file: shards, .npz, dicts, torch modules."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rmt.errors import CheckpointError
from rmt.io.tensor import LazyTensor


def iter_index(path: Path) -> Iterator[tuple[str, LazyTensor]]:
    """Tensors of a sharded checkpoint described by ``*.index.json`` (Hugging Face layout),
    shard by shard, each shard's tensors in file order."""
    from rmt.io import open_checkpoint

    try:
        weight_map = json.loads(path.read_text())["weight_map"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(path, f"bad shard index ({type(err).__name__}: {err})") from None
    shards = list(dict.fromkeys(weight_map.values()))
    for shard in shards:
        shard_path = path.parent / shard
        if not shard_path.is_file():
            raise CheckpointError(path, f"shard {shard} listed in the index is missing")
        wanted = {k for k, v in weight_map.items() if v == shard}
        for name, tensor in open_checkpoint(shard_path):
            if name in wanted:
                yield name, tensor


def iter_directory(path: Path) -> Iterator[tuple[str, LazyTensor]]:
    """Tensors of every checkpoint in a directory: its ``*.index.json`` if there is one,
    else each ``.safetensors`` (or, without any, ``.bin``/``.pt``/``.npz``) file in name order."""
    from rmt.io import open_checkpoint

    indexes = sorted(path.glob("*.safetensors.index.json")) or sorted(path.glob("*.index.json"))
    if indexes:
        yield from iter_index(indexes[0])
        return
    files = sorted(path.glob("*.safetensors"))
    if not files:
        files = sorted(p for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".npz"))
    if not files:
        raise CheckpointError(path, "directory holds no checkpoint file (.safetensors, .bin, "
                                    ".pt, .pth, .npz or an index)")
    for file in files:
        yield from open_checkpoint(file)


def iter_npz(path: Path) -> Iterator[tuple[str, LazyTensor]]:
    """Arrays of a NumPy ``.npz`` archive (``allow_pickle=False``: object arrays are refused)."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if n.endswith(".npy")]
            headers = {}
            for member in members:
                with zf.open(member) as fh:
                    version = np.lib.format.read_magic(fh)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(fh)
                headers[member[:-4]] = (tuple(shape), np.dtype(dtype))
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(path, f"unreadable .npz ({type(err).__name__}: {err})") from None
    for name, (shape, dtype) in headers.items():
        if dtype.hasobject:
            raise CheckpointError(path, f"array {name!r} holds Python objects (pickle refused)")

        def loader(name: str = name) -> np.ndarray:
            try:
                with np.load(path, allow_pickle=False) as npz:
                    return npz[name]
            except (ValueError, OSError, zipfile.BadZipFile) as err:
                raise CheckpointError(path, f"array {name!r}: {err}") from None

        yield name, LazyTensor(name, shape, dtype, str(path), loader)


def iter_mapping(weights: Mapping[str, Any]) -> Iterator[tuple[str, LazyTensor]]:
    """A dict of arrays (NumPy, memmaps, CuPy, or anything ``np.asarray`` accepts)."""
    for name, value in weights.items():
        arr = value if hasattr(value, "shape") and hasattr(value, "dtype") else np.asarray(value)
        yield str(name), LazyTensor(str(name), tuple(int(s) for s in arr.shape),
                                    np.dtype(arr.dtype), "<dict>", lambda arr=arr: arr)


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
    """Parameters and buffers of a ``torch.nn.Module`` (its ``state_dict``), no copies."""
    for name, t in module.state_dict().items():
        dtype = np.dtype(_torch_to_numpy(t.flatten()[:0]).dtype)
        yield name, LazyTensor(name, tuple(t.shape), dtype, type(module).__name__,
                               lambda t=t: _torch_to_numpy(t))
