"""Formats and families: rmt's α on real checkpoints against an independent loader.

For every file, each tensor is loaded a second time by the format's own library —
``safetensors.numpy``, ``torch.load``, ``torch.jit.load``, ``onnx.numpy_helper``, or
``h5py`` read with Keras's documented kernel layouts — turned into matrices by the
framework's documented convention (PyTorch/ONNX kernels (out, in, *k) as k slices, or as
their out x (in*k) filters when a side is 1; Keras kernels channels-last), and its α is
computed by a float64 SVD and the exact power-law scan of :mod:`tests.reference`. The
table gives, per file, the rows rmt analysed, how many it fitted, and the largest |Δα|
between the two over the fitted layers.

The real files come from wheels on the package index (``rmt.pretrained``); the Keras
fixtures of ``tests/data/keras`` were written by Keras itself. Run:
``python -m benchmarks.formats`` (needs torch, onnx and h5py); writes
``benchmarks/results/formats.{json,md}`` and the table in ``docs/formats.md``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import machine, publish
from tests import reference

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "formats.md"


def _torch_matrices(W: np.ndarray) -> list[np.ndarray]:
    W = W.astype(np.float64)
    if W.ndim == 2:
        return [W]
    if min(W.shape[0], W.shape[1]) == 1:  # one channel: the filters
        return [W.reshape(W.shape[0], -1)]
    flat = W.reshape(W.shape[0], W.shape[1], -1)
    return [flat[:, :, i] for i in range(flat.shape[2])]


def _keras_matrices(name: str, K: np.ndarray) -> list[np.ndarray]:
    K = K.astype(np.float64)
    if K.ndim == 4:  # (kh, kw, in, out)
        if 1 in K.shape[2:] or "depthwise" in name:
            channels = K.shape[3] if K.shape[2] == 1 else K.shape[2]
            return [K.reshape(-1, channels).T]
        flat = K.reshape(-1, K.shape[2], K.shape[3])
        return [flat[i] for i in range(flat.shape[0])]
    if K.ndim == 3:
        if "attention_output" in name or "output_dense" in name:
            return [K.reshape(-1, K.shape[-1])]
        if any(k in name for k in ("query", "key", "value")):
            return [K.reshape(K.shape[0], -1)]
        return [K[i] for i in range(K.shape[0])]  # Conv1D (k, in, out)
    return [K]


def _alpha(matrices: list[np.ndarray]) -> float:
    ev = np.sort(np.concatenate([np.linalg.svd(A, compute_uv=False) ** 2 / max(A.shape)
                                 for A in matrices]))
    ev = ev[ev > ev[-1] * max(max(A.shape) for A in matrices) * 1e-13]
    return float(reference.powerlaw_scan(ev)[0][0])


def _safetensors(path: Path) -> Iterator[tuple[str, list[np.ndarray]]]:
    from safetensors.numpy import load_file

    for name, W in load_file(path).items():
        if W.ndim >= 2:
            yield name, _torch_matrices(W)


def _torch(path: Path) -> Iterator[tuple[str, list[np.ndarray]]]:
    import torch

    def walk(prefix: str, obj: Any) -> Iterator[tuple[str, Any]]:
        if isinstance(obj, torch.Tensor):
            yield prefix, obj
        elif isinstance(obj, dict):
            for key, value in obj.items():
                yield from walk(f"{prefix}.{key}" if prefix else str(key), value)

    state = torch.load(path, map_location="cpu", weights_only=True)
    for name, t in walk("", state):
        if t.dim() >= 2:
            yield name, _torch_matrices(t.float().numpy())


def _torchscript(path: Path) -> Iterator[tuple[str, list[np.ndarray]]]:
    import torch

    for name, t in torch.jit.load(path, map_location="cpu").state_dict().items():
        if t.dim() >= 2:
            yield name, _torch_matrices(t.float().numpy())


def _onnx(path: Path) -> Iterator[tuple[str, list[np.ndarray]]]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    graphs, found = [model.graph], {}
    while graphs:
        graph = graphs.pop()
        for init in graph.initializer:
            found[init.name] = numpy_helper.to_array(init)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attr.g)
                elif node.op_type == "Constant" and attr.name == "value":
                    found[node.output[0]] = numpy_helper.to_array(attr.t)
    for name, W in found.items():
        if W.ndim >= 2 and W.dtype.kind == "f":
            yield name, _torch_matrices(W)


def _keras(path: Path) -> Iterator[tuple[str, list[np.ndarray]]]:
    import h5py

    with h5py.File(path, "r") as f:
        data: dict[str, np.ndarray] = {}
        f.visititems(lambda n, o: data.__setitem__(n, o[()])
                     if isinstance(o, h5py.Dataset) and not n.startswith("optimizer") else None)
    for name, K in data.items():
        if K.ndim >= 2:
            yield name, _keras_matrices(name, K)


Loader = Callable[[Path], Iterator[tuple[str, list[np.ndarray]]]]
FILES: list[tuple[str, str, str, str, Loader]] = [
    # (label, family, format, rmt.pretrained name or fixture path, independent loader)
    ("all-MiniLM-L6-v2", "sentence transformer", "safetensors", "all-MiniLM-L6-v2",
     _safetensors),
    ("facenet MTCNN P-Net", "face detection (CNN)", "legacy torch", "facenet-pnet", _torch),
    ("facenet MTCNN O-Net", "face detection (CNN)", "legacy torch", "facenet-onet", _torch),
    ("LPIPS VGG head", "perceptual metric (1x1 convs)", "torch zip", "lpips-vgg", _torch),
    ("Silero VAD", "speech (Conv1d + LSTM)", "TorchScript", "silero-vad-jit", _torchscript),
    ("Silero VAD", "speech (Conv1d + LSTM)", "ONNX, Constant nodes in If branches",
     "silero-vad-onnx", _onnx),
    ("NudeNet 320n", "detection (YOLOv8)", "ONNX initializers", "nudenet-320n", _onnx),
    ("RapidOCR PP-OCRv4 rec", "OCR (CNN + transformer)", "ONNX initializers",
     "rapidocr-rec", _onnx),
    ("FER emotion", "emotion (separable CNN)", "Keras 2 .h5, full model", "fer-emotion",
     _keras),
    ("Keras fixture", "every Keras kernel layout", "Keras 3 legacy .h5",
     "tests/data/keras/model.h5", _keras),
    ("Keras fixture", "every Keras kernel layout", "Keras 3 .weights.h5",
     "tests/data/keras/model.weights.h5", _keras),
]


def check(path: Path, loader: Loader) -> dict[str, Any]:
    """rmt.analyze on ``path`` against the independent loader's α per fitted layer."""
    import rmt

    table = rmt.analyze(path, progress=False).set_index("name")
    fitted = table[table["status"] == "success"]
    deltas, missing = [], []
    for name, matrices in loader(path):
        if name not in table.index:
            missing.append(name)
            continue
        if name in fitted.index:
            deltas.append(abs(float(fitted.loc[name, "alpha"]) - _alpha(matrices)))
    return {"rows": len(table), "fitted": len(fitted), "compared": len(deltas),
            "max_abs_dalpha": max(deltas) if deltas else None, "missing": missing,
            "layouts": sorted(set(table["layout"].fillna("").str.replace(r"; 1 channel.*", "",
                                                              regex=True)))}


def main(argv: list[str] | None = None) -> int:
    """Check every file; write ``benchmarks/results/formats.{json,md}`` and the docs table."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    from rmt.pretrained import fetch

    info = machine(1)
    results = []
    for label, family, fmt, source, loader in FILES:
        path = ROOT / source if source.startswith("tests/") else fetch(source)
        try:
            found = check(path, loader)
        except ImportError as err:  # the independent loader's library is not installed
            found = {"rows": "—", "fitted": "—", "compared": 0, "max_abs_dalpha": None,
                     "skipped": f"needs {err.name}"}
        results.append({"file": label, "family": family, "format": fmt, "source": source,
                        **found})
    md = (f"Formats — checked {info['date']} (rmt against each format's own library)\n\n"
          "| file | family | format | rows | fitted | α compared | max abs Δα |\n"
          "|---|---|---|---|---|---|---|\n"
          + "\n".join(f"| {r['file']} | {r['family']} | {r['format']} | {r['rows']} | "
                      f"{r['fitted']} | {r['compared']} | "
                      + (f"{r['max_abs_dalpha']:.1e}" if r["max_abs_dalpha"] is not None
                         else "—") + " |" for r in results))
    publish("formats", {"machine": info, "results": results}, md, doc=DOC)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
