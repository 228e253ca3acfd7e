"""Checkpoint readers: round trips for every format, and a hostile-input suite."""

from __future__ import annotations

import json
import zipfile

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy

from rmt import io as rio
from rmt.errors import CheckpointError
from tests.checkpoints import malicious_pickle, write_torch_zip

DTYPES = [np.float64, np.float32, np.float16, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn,
          ml_dtypes.float8_e5m2, np.int64]


def _tensors(seed=0):
    rng = np.random.default_rng(seed)
    out = {f"w_{np.dtype(d).name}": rng.standard_normal((7, 5)).astype(d) for d in DTYPES}
    out["conv.weight"] = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    out["bias"] = rng.standard_normal(5).astype(np.float32)
    out["scalar"] = np.array(1.5, dtype=np.float32)
    return out


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(np.asarray(a).reshape(-1).view(np.uint8),
                                  np.asarray(b).reshape(-1).view(np.uint8))


def test_safetensors_round_trip_every_dtype(tmp_path):
    tensors = _tensors()
    path = tmp_path / "m.safetensors"
    rio.write_safetensors(path, tensors, metadata={"format": "pt"})
    assert rio.sniff(path) == "safetensors"
    seen = dict(rio.open_checkpoint(path))
    assert list(seen) == list(tensors)  # file order
    for name, arr in tensors.items():
        lazy = seen[name]
        assert lazy.shape == arr.shape and lazy.dtype == arr.dtype
        loaded = lazy.load()
        _same(loaded, arr)
        # read into process memory, never mapped: a file truncated under a map is SIGBUS
        assert not isinstance(loaded, np.memmap) and not isinstance(loaded.base, np.memmap)
    blocks = list(seen["w_float32"].row_blocks(3))
    assert [b.shape[0] for b in blocks] == [3, 3, 1]
    _same(np.concatenate(blocks), tensors["w_float32"])


def test_safetensors_agrees_with_the_reference_library(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {"a": rng.standard_normal((6, 4)).astype(np.float32),
              "b": rng.standard_normal((3, 2)).astype(np.float16)}
    path = tmp_path / "ref.safetensors"
    safetensors.numpy.save_file(arrays, str(path))
    for name, lazy in rio.open_checkpoint(path):
        _same(lazy.load(), arrays[name])
    ours = tmp_path / "ours.safetensors"
    bf = {"c": rng.standard_normal((5, 5)).astype(ml_dtypes.bfloat16)}
    rio.write_safetensors(ours, bf)
    from safetensors import safe_open

    with safe_open(str(ours), framework="numpy") as f:
        _same(f.get_tensor("c"), bf["c"])


def test_sharded_checkpoint_by_index_and_by_directory(tmp_path):
    rng = np.random.default_rng(2)
    shard1 = {"l0.weight": rng.standard_normal((8, 4)).astype(np.float32)}
    shard2 = {"l1.weight": rng.standard_normal((6, 4)).astype(ml_dtypes.bfloat16),
              "l1.bias": rng.standard_normal(6).astype(np.float32)}
    rio.write_safetensors(tmp_path / "model-00001-of-00002.safetensors", shard1)
    rio.write_safetensors(tmp_path / "model-00002-of-00002.safetensors", shard2)
    index = {"metadata": {}, "weight_map": {"l0.weight": "model-00001-of-00002.safetensors",
                                            "l1.weight": "model-00002-of-00002.safetensors",
                                            "l1.bias": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    for source in (tmp_path / "model.safetensors.index.json", tmp_path):
        got = dict(rio.open_checkpoint(source))
        assert set(got) == {"l0.weight", "l1.weight", "l1.bias"}
        _same(got["l1.weight"].load(), shard2["l1.weight"])
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    # a missing shard: its tensors are broken entries, the other shard is still read
    got = dict(rio.open_checkpoint(tmp_path))
    assert got["l0.weight"].error is None
    assert all("missing" in got[n].error for n in ("l1.weight", "l1.bias"))
    with pytest.raises(CheckpointError, match="missing"):
        got["l1.weight"].load()


def test_torch_zip_without_torch_round_trip(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    base = rng.standard_normal(40).astype(np.float32)
    state = {"fc.weight": rng.standard_normal((6, 4)).astype(np.float32),
             "fc.bf16": rng.standard_normal((5, 3)).astype(ml_dtypes.bfloat16),
             "conv.weight": rng.standard_normal((4, 2, 3, 3)).astype(np.float64),
             "view.transposed": (base, 0, (5, 4), (1, 5)),   # a transposed view
             "view.offset": (base, 10, (3, 5), (5, 1)),      # an offset view
             "nested": {"deep.weight": rng.standard_normal((3, 3)).astype(np.float16)}}
    for compress in (False, True):
        path = tmp_path / f"model{compress}.pt"
        write_torch_zip(path, {"state_dict": state}, monkeypatch=monkeypatch, compress=compress)
        monkeypatch.undo()
        assert rio.sniff(path) == "torch-zip"
        got = dict(rio.open_checkpoint(path))
        _same(got["state_dict.fc.weight"].load(), state["fc.weight"])
        _same(got["state_dict.fc.bf16"].load(), state["fc.bf16"])
        _same(got["state_dict.conv.weight"].load(), state["conv.weight"])
        _same(got["state_dict.nested.deep.weight"].load(), state["nested"]["deep.weight"])
        np.testing.assert_array_equal(got["state_dict.view.transposed"].load(),
                                      base[:20].reshape(4, 5).T)
        np.testing.assert_array_equal(got["state_dict.view.offset"].load(),
                                      base[10:25].reshape(3, 5))


def test_torch_zip_written_by_torch(tmp_path):
    torch = pytest.importorskip("torch", reason="torch not installed: the torch-written "
                                                "checkpoint test needs the 'torch' extra")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(),
                                torch.nn.Linear(8, 4))
    state = dict(model.state_dict())
    state["bf16"] = torch.randn(6, 5).to(torch.bfloat16)
    state["transposed"] = torch.randn(6, 5).t()
    path = tmp_path / "model.bin"
    torch.save(state, path)
    got = dict(rio.open_checkpoint(path))
    for name, t in state.items():
        ref = t.view(torch.int16).numpy().view(ml_dtypes.bfloat16) if t.dtype == torch.bfloat16 \
            else t.numpy()
        _same(np.ascontiguousarray(got[name].load()), np.ascontiguousarray(ref))
    module_view = dict(rio.open_checkpoint(model))
    _same(module_view["0.weight"].load(), model[0].weight.detach().numpy())


def test_npz_and_dict_sources(tmp_path):
    # .npz holds only NumPy's own dtypes (np.save cannot describe ml_dtypes' bfloat16/fp8)
    arrays = {k: v for k, v in _tensors(4).items()
              if v.dtype in (np.float64, np.float32, np.float16, np.int64)}
    path = tmp_path / "w.npz"
    np.savez(path, **arrays)
    assert rio.sniff(path) == "npz"
    got = dict(rio.open_checkpoint(path))
    for name, arr in arrays.items():
        _same(got[name].load(), arr)
    from_dict = dict(rio.open_checkpoint(arrays))
    assert from_dict["conv.weight"].shape == (4, 3, 3, 3)
    assert rio.get_tensor(path, "bias").shape == (5,)
    assert ("bias", (5,), "float32") in rio.describe(path)


# --- hostile inputs ---------------------------------------------------------------------

def _valid(tmp_path):
    path = tmp_path / "ok.safetensors"
    rio.write_safetensors(path, {"w": np.ones((64, 32), np.float32)})
    return path, path.read_bytes()


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda raw: raw[:5], "truncated"),
        (lambda raw: raw[:-100], "past the end"),
        (lambda raw: (10**12).to_bytes(8, "little") + raw[8:], "bad header"),
        (lambda raw: raw[:8] + b"[" + raw[9:], "bad header"),
        (lambda raw: raw.replace(b'"F32"', b'"X32"'), "unsupported dtype"),
        (lambda raw: raw.replace(b"[64,32]", b"[64,33]"), "offsets"),
    ],
)
def test_corrupt_safetensors(tmp_path, mutate, fragment):
    _, raw = _valid(tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(mutate(raw))
    with pytest.raises(CheckpointError, match=fragment) as info:
        list(rio.open_checkpoint(bad))
    assert "bad.safetensors" in str(info.value) and isinstance(info.value, ValueError)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", malicious_pickle(marker))
    with pytest.raises(CheckpointError, match=r"refused to unpickle (posix|os)\.system"):
        list(rio.open_checkpoint(path))
    assert not marker.exists()
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(malicious_pickle(marker))
    with pytest.raises(CheckpointError, match="refused"):
        list(rio.open_checkpoint(legacy))
    assert not marker.exists()


def test_other_bad_files(tmp_path, monkeypatch):
    junk = tmp_path / "junk.bin2"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="unrecognised"):
        list(rio.open_checkpoint(junk))
    with pytest.raises(CheckpointError, match="no such file"):
        list(rio.open_checkpoint(tmp_path / "missing.safetensors"))
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(CheckpointError, match="neither"):
        list(rio.open_checkpoint(other_zip))
    obj_npz = tmp_path / "obj.npz"
    np.savez(obj_npz, o=np.array([{"a": 1}], dtype=object), w=np.ones((3, 3)))
    entries = dict(rio.open_checkpoint(obj_npz))
    assert "objects" in entries["o"].error and entries["w"].error is None
    # a torch zip whose storage entry is missing or too short
    state = {"w": np.ones((4, 4), np.float32)}
    good = tmp_path / "good.pt"
    write_torch_zip(good, state, monkeypatch=monkeypatch)
    monkeypatch.undo()
    cut = tmp_path / "cut.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(cut, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            dst.writestr(item, data[:8] if item.filename.endswith("data/0") else data)
    ((_, cut_w),) = rio.open_checkpoint(cut)
    assert "truncated" in cut_w.error
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        list(rio.open_checkpoint(empty))


def test_stream_safetensors_checks_the_bytes_against_the_header(tmp_path):
    layout = {"w": (np.float32, (4, 3))}
    with pytest.raises(ValueError, match="w: got 44 bytes of data, the header says 48"):
        rio.stream_safetensors(tmp_path / "x.safetensors", layout,
                               lambda name: (np.zeros(11, np.float32),))
    rio.stream_safetensors(tmp_path / "y.safetensors", layout,
                           lambda name: (np.arange(6, dtype=np.float32),
                                         np.arange(6, 12, dtype=np.float32)))
    ((name, t),) = rio.open_checkpoint(tmp_path / "y.safetensors")
    assert name == "w"
    np.testing.assert_array_equal(t.load(), np.arange(12, dtype=np.float32).reshape(4, 3))
