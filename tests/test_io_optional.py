"""GGUF, ONNX and Keras/HDF5 readers (each skipped when its library is absent)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

import rmt
from rmt import io as rio
from rmt.errors import CheckpointError


def test_gguf_plain_and_quantized(tmp_path):
    gguf = pytest.importorskip("gguf", reason="the 'gguf' extra is not installed")
    from gguf.quants import quantize

    rng = np.random.default_rng(0)
    plain = rng.standard_normal((24, 64)).astype(np.float32)
    half = rng.standard_normal((16, 32)).astype(np.float16)
    quant_src = rng.standard_normal((16, 64)).astype(np.float32)
    q = quantize(quant_src, gguf.GGMLQuantizationType.Q8_0)
    path = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("blk.0.ffn.weight", plain)
    w.add_tensor("blk.0.attn.weight", half)
    w.add_tensor("blk.0.q8.weight", q, raw_shape=q.shape,
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert rio.sniff(path) == "gguf"
    got = dict(rio.open_checkpoint(path))
    np.testing.assert_array_equal(got["blk.0.ffn.weight"].load(), plain)
    np.testing.assert_array_equal(got["blk.0.attn.weight"].load(), half)
    deq = got["blk.0.q8.weight"].load()
    assert deq.shape == (16, 64) and deq.dtype == np.float32
    # Q8_0 keeps 8 bits per weight with a per-block scale: relative error ~ 1/127
    assert np.abs(deq - quant_src).max() <= np.abs(quant_src).max() / 100
    df = rmt.analyze(path, progress=False)
    assert (df["status"] == "success").all() and len(df) == 3


def test_onnx_initializers_with_external_data(tmp_path):
    onnx = pytest.importorskip("onnx", reason="the 'onnx' extra is not installed")
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(1)
    W1 = rng.standard_normal((32, 16)).astype(np.float32)
    W2 = rng.standard_normal((16, 8)).astype(np.float64)
    graph = helper.make_graph(
        [], "g", [], [], initializer=[numpy_helper.from_array(W1, "fc1.weight"),
                                      numpy_helper.from_array(W2, "fc2.weight")])
    model = helper.make_model(graph)
    path = tmp_path / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    got = dict(rio.open_checkpoint(path))
    np.testing.assert_array_equal(got["fc1.weight"].load(), W1)
    np.testing.assert_array_equal(got["fc2.weight"].load(), W2)
    assert got["fc1.weight"].shape == (32, 16)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\xff\x00 not protobuf" * 10)
    with pytest.raises(CheckpointError, match="ONNX"):
        list(rio.open_checkpoint(broken))


def test_keras_h5_and_keras_zip(tmp_path):
    h5py = pytest.importorskip("h5py", reason="the 'keras' extra is not installed")
    rng = np.random.default_rng(2)
    kernel = rng.standard_normal((20, 10)).astype(np.float32)
    conv = rng.standard_normal((3, 3, 4, 8)).astype(np.float32)
    h5 = tmp_path / "model.weights.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=kernel)
        f.create_dataset("layers/dense/vars/1", data=np.zeros(10, np.float32))
        f.create_dataset("layers/conv2d/vars/0", data=conv)
    assert rio.sniff(h5) == "hdf5"
    got = dict(rio.open_checkpoint(h5))
    np.testing.assert_array_equal(got["layers/dense/vars/0"].load(), kernel)
    assert got["layers/conv2d/vars/0"].shape == (3, 3, 4, 8)
    keras = tmp_path / "model.keras"
    with zipfile.ZipFile(keras, "w") as zf:
        zf.writestr("config.json", "{}")
        zf.write(h5, "model.weights.h5")
    assert rio.sniff(keras) == "hdf5"
    np.testing.assert_array_equal(dict(rio.open_checkpoint(keras))["layers/dense/vars/0"].load(),
                                  kernel)


def test_missing_library_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_gguf(name, *args, **kwargs):
        if name == "gguf":
            raise ImportError("no gguf")
        return real_import(name, *args, **kwargs)

    path = tmp_path / "x.gguf"
    path.write_bytes(b"GGUF" + b"\x00" * 60)
    monkeypatch.setattr(builtins, "__import__", no_gguf)
    with pytest.raises(CheckpointError, match=r"rmt\[gguf\]"):
        list(rio.open_checkpoint(path))
