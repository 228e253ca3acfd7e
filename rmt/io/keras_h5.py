"""Keras weights in HDF5 (``h5py``): ``.h5`` models, ``.weights.h5`` and ``.keras`` zips.

Three layouts are recognised:

- a full legacy model (``model.save("m.h5")``, Keras 2 and 3): weights under
  ``model_weights/<layer>/...``, layer classes in the ``model_config`` attribute;
  ``optimizer_weights`` (Adam moments and the like) is not model weights and is skipped;
- legacy ``save_weights`` files: the same layer groups at the root;
- Keras 3 ``.weights.h5`` (also inside a ``.keras`` zip): ``layers/<class>[_k]/vars/<i>``,
  where the path names the layer class; the ``optimizer`` group is skipped.

Tensors come in model order (legacy ``layer_names``/``weight_names``) or, without it,
in natural name order (``dense_2`` before ``dense_10``). Every variable gets a Keras
layout (:func:`rmt.io.layout.keras_layout`): kernels are stored channels-last and are
read as PyTorch-order kernels, so a Conv2D kernel ``(3, 3, 512, 512)`` is nine 512x512
slices, not 262,144 tiny matrices.

Datasets with external raw storage or virtual (other-file) sources are refused, and so
are datasets whose declared shape has no data behind it (unallocated storage, or
compressed storage that would inflate more than 100 times).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rmt.errors import CheckpointError
from rmt.io.extras import need
from rmt.io.files import FileIdentity
from rmt.io.layout import keras_layout
from rmt.io.tensor import LazyTensor
from rmt.io.zipentry import MAX_INFLATE_RATIO, entry_problem, open_zip

# Groups of a Keras file that hold training state, not the model.
_TRAINING_STATE = ("optimizer_weights", "optimizer")
# A model_config larger than this is not parsed (layouts then come from names alone).
MAX_CONFIG_BYTES = 16 * 2**20
_CONFIG_MAX_DEPTH = 200


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


def _text(value: Any) -> str:
    return value.decode("utf8", "replace") if isinstance(value, bytes) else str(value)


def _layer_classes(config_text: Any) -> dict[str, str]:
    """Layer name -> class name from a Keras ``model_config`` JSON (nested models too)."""
    text = _text(config_text)
    if len(text) > MAX_CONFIG_BYTES:
        return {}
    try:
        config = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    classes: dict[str, str] = {}
    stack: list[tuple[Any, int]] = [(config, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > _CONFIG_MAX_DEPTH:
            continue
        if isinstance(node, dict):
            inner = node.get("config")
            if isinstance(node.get("class_name"), str) and isinstance(inner, dict) \
                    and isinstance(inner.get("name"), str):
                classes.setdefault(inner["name"], node["class_name"])
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return classes


def _natural(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _model_order(handle: Any, root: str) -> list[str]:
    """Dataset paths in the order legacy Keras lists them (layer_names, weight_names)."""
    group = handle[root] if root else handle
    order: list[str] = []
    for layer in group.attrs.get("layer_names", []):
        layer = _text(layer)
        sub = group.get(layer)
        if sub is None or not hasattr(sub, "attrs"):
            continue
        for weight in sub.attrs.get("weight_names", []):
            order.append("/".join(p for p in (root, layer, _text(weight)) if p))
    return order


def _variables(handle: Any, h5py: Any) -> list[tuple[str, str | None]]:
    """(dataset path, class of its layer or None) of every model variable, in order."""
    legacy_root = "model_weights" if "model_weights" in handle else ""
    legacy = bool(legacy_root) or "layer_names" in handle.attrs
    classes = _layer_classes(handle.attrs["model_config"]) \
        if "model_config" in handle.attrs else {}
    paths: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and name.split("/", 1)[0] not in _TRAINING_STATE:
            paths.append(name)

    handle.visititems(visit)
    present = set(paths)
    ordered = [p for p in _model_order(handle, legacy_root) if p in present] if legacy else []
    listed = set(ordered)
    ordered += sorted((p for p in paths if p not in listed), key=_natural)
    out = []
    for path in ordered:
        parts = path.split("/")
        layer = parts[1] if legacy_root and len(parts) > 1 else parts[0]
        out.append((path, classes.get(layer)))
    return out


def iter_hdf5(path: Path) -> Iterator[tuple[str, LazyTensor]]:
    """Model variables of a Keras ``.h5``/``.weights.h5`` file or a ``.keras`` zip, named
    by HDF5 path, each with its Keras layout; optimizer state is skipped."""
    h5py = need("h5py", "keras", path)
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
    found: list[tuple[str, tuple[int, ...], np.dtype, str | None, str | None]] = []
    try:
        with _h5_open(identity, member) as handle:
            for name, class_name in _variables(handle, h5py):
                ds = handle[name]
                found.append((name, tuple(int(s) for s in ds.shape), ds.dtype,
                              _dataset_problem(ds), class_name))
    except CheckpointError:
        raise
    except Exception as err:  # h5py raises OSError, KeyError, TypeError, RuntimeError alike
        raise CheckpointError(path, f"unreadable HDF5 ({type(err).__name__}: "
                                    f"{str(err)[:160]})") from None
    for name, shape, dtype, problem, class_name in found:
        if problem:
            yield name, LazyTensor.broken(name, str(path), f"dataset {name!r}: {problem}",
                                          shape, dtype if not dtype.hasobject else None)
            continue
        layout = keras_layout(name.split("/"), class_name, shape)
        yield name, LazyTensor(name, shape, np.dtype(dtype), str(path),
                               Hdf5Dataset(identity, member, name),
                               data_key=(str(path), member, name), layout=layout)
