"""Hostile, damaged, changing and ambiguous inputs: never a wrong, mixed or lost result.

Each test builds the bad input itself (seeded), runs the public entry point, and checks
both halves of the promise: the bad part is reported (a CheckpointError or a failed row
naming the file, the tensor and the problem) and everything else is still right.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time
import warnings
import zipfile

import ml_dtypes
import numpy as np
import pandas as pd
import pytest

import rmt
from rmt import analyze
from rmt import io as rio
from rmt.cli import main
from rmt.errors import AnalysisError, CheckpointError
from rmt.resume import ResumeError, ResumeLog
from tests.checkpoints import write_torch_zip

analyze_module = rmt.runner


def _w(seed, shape=(48, 24), dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _rows(df):
    return df.set_index("name")


def _st(path, tensors):
    rio.write_safetensors(path, tensors)
    return path


def _assert_failed(df, expected):
    """Each ``name -> fragment``: that row failed and its warning says ``fragment``."""
    for name, fragment in expected.items():
        assert df.loc[name, "status"] == "failed", name
        assert fragment in df.loc[name, "warning"], (name, df.loc[name, "warning"])


# --- 1. pickle content cannot outlive its load -------------------------------------------

def _pickle_zip(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/byteorder", "little")


def test_build_on_a_storage_stand_in_is_refused_and_changes_nothing(tmp_path, monkeypatch):
    # GLOBAL torch.HalfStorage; {"dtype": "float32"}; BUILD; STOP: tries to rewrite the
    # process-wide stand-in so later float16 files decode as another dtype
    attack = (b"\x80\x02ctorch\nHalfStorage\n}X\x05\x00\x00\x00dtypeX\x07\x00\x00\x00"
              b"float32sb.")
    _pickle_zip(tmp_path / "attack.pt", attack)
    with pytest.raises(CheckpointError, match="BUILD on"):
        list(rio.open_checkpoint(tmp_path / "attack.pt"))
    half = _w(0, (6, 4), np.float16)
    write_torch_zip(tmp_path / "half.pt", {"w": half}, monkeypatch=monkeypatch)
    monkeypatch.undo()
    ((_, t),) = rio.open_checkpoint(tmp_path / "half.pt")
    assert t.dtype == np.float16
    np.testing.assert_array_equal(t.load(), half)


@pytest.mark.parametrize(("payload", "fragment"), [
    (b"\x80\x02cbuiltins\neval\nX\x01\x00\x00\x001\x85R.", "refused to unpickle builtins.eval"),
    (b"\x80\x02ccollections\nOrderedDict\n)\x81.", "opcode"),               # NEWOBJ
    (b"\x80\x02ctorch\nFloatStorage\n)R.", "call of"),                       # REDUCE on a stand-in
    (b"\x80\x02ctorch\nFloatStorage\nK\x01a.", "APPEND to"),
    (b"\x80\x02\x82\x01.", "opcode"),                                        # EXT1
    (b"\x80\x02}.", "no tensors"),
])
def test_pickle_opcodes_outside_the_allow_list(tmp_path, payload, fragment):
    _pickle_zip(tmp_path / "p.pt", payload)
    with pytest.raises(CheckpointError, match=fragment) as info:
        list(rio.open_checkpoint(tmp_path / "p.pt"))
    assert "p.pt" in str(info.value)


def test_pickle_bombs_are_cheap(tmp_path, monkeypatch):
    # a memo index of 2**32 - 1 (the C unpickler would allocate a 32 GiB memo array)
    _pickle_zip(tmp_path / "memo.pt", b"\x80\x02}r\xff\xff\xff\xff.")
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="no tensors"):
        list(rio.open_checkpoint(tmp_path / "memo.pt"))
    # 200 000 nested lists: a bounded-depth error, not RecursionError or a crash
    deep = b"\x80\x02" + b"]" * 200_000 + b"a" * 199_999 + b"."
    _pickle_zip(tmp_path / "deep.pt", deep)
    with pytest.raises(CheckpointError, match="nested deeper"):
        list(rio.open_checkpoint(tmp_path / "deep.pt"))
    # more opcodes than the budget (each a list kept alive): refused, not run to the end
    many = b"\x80\x02]" + b"]a" * (2**20 + 10) + b"."
    _pickle_zip(tmp_path / "many.pt", many)
    with pytest.raises(CheckpointError, match="opcodes"):
        list(rio.open_checkpoint(tmp_path / "many.pt"))
    # billion laughs: 60 doubling levels over one tensor list it once
    t = _w(1, (12, 10))
    level: list = [t, t]
    for _ in range(60):
        level = [level, level]
    write_torch_zip(tmp_path / "laughs.pt", {"x": level}, monkeypatch=monkeypatch)
    monkeypatch.undo()
    names = [n for n, _ in rio.open_checkpoint(tmp_path / "laughs.pt")]
    assert len(names) == 2 and names[0].startswith("x.0.0")
    df = analyze(tmp_path / "laughs.pt", progress=False)
    assert len(df) == 2 and (df["status"] == "success").all()
    assert "same data" in df.loc[1, "warning"]  # one tensor object: computed once
    assert time.perf_counter() - start < 20


# --- 2. resume files never mix results -----------------------------------------------------

@pytest.fixture
def two_layers(tmp_path):
    return _st(tmp_path / "m.safetensors", {"a.weight": _w(1, (60, 30)),
                                            "b.weight": _w(2, (40, 20))})


def test_resume_refuses_another_checkpoint_options_or_a_changed_file(two_layers, tmp_path):
    log = tmp_path / "run.jsonl"
    first = analyze(two_layers, resume=log, progress=False)
    other = _st(tmp_path / "other.safetensors", {"a.weight": _w(3, (60, 30))})
    for kwargs in ({"source": other}, {"normalize": False}, {"min_evals": 5},
                   {"candidates": "ww"}, {"fpr": 0.01}):
        source = kwargs.pop("source", two_layers)
        with pytest.raises(ResumeError, match="belongs to another run"):
            analyze(source, resume=log, progress=False, **kwargs)
    # the same name rewritten on disk with other weights
    time.sleep(0.01)
    _st(two_layers, {"a.weight": _w(9, (60, 30)), "b.weight": _w(2, (40, 20))})
    with pytest.raises(ResumeError, match="checkpoint files"):
        analyze(two_layers, resume=log, progress=False)
    fresh = analyze(two_layers, resume=log, restart=True, progress=False)
    assert fresh.loc[0, "lambda_max"] != pytest.approx(first.loc[0, "lambda_max"])
    assert fresh.loc[0, "lambda_max"] == pytest.approx(rmt.esd(_w(9, (60, 30))).max())


def test_resume_returns_only_the_selected_layers_and_skips_foreign_lines(two_layers, tmp_path):
    log = tmp_path / "run.jsonl"
    analyze(two_layers, resume=log, progress=False)
    with open(log, "a") as fh:
        fh.write(json.dumps({"layer_id": 999}) + "\n" + "[1, 2]\n")
    with pytest.warns(UserWarning, match="not a layer record"):
        picked = analyze(two_layers, resume=log, layers="^b", progress=False)
    assert list(picked["name"]) == ["b.weight"]
    with pytest.warns(UserWarning):
        everything = analyze(two_layers, resume=log, progress=False)
    assert list(everything["layer_id"]) == [0, 1]


def test_resume_file_is_locked_and_a_cut_line_is_repaired(two_layers, tmp_path, monkeypatch):
    log = tmp_path / "run.jsonl"
    analyze(two_layers, resume=log, progress=False)
    holder = ResumeLog(log, json.loads(log.read_text().splitlines()[0])["checkpoint"],
                       json.loads(log.read_text().splitlines()[0])["options"], rmt.__version__)
    try:
        with pytest.raises(ResumeError, match="in use by another run"):
            analyze(two_layers, resume=log, progress=False)
    finally:
        holder.close()
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])  # interrupted mid-line
    redone = analyze(two_layers, resume=log, progress=False)
    assert len(redone) == 2
    # the cut line now ends with a newline and the redone layer starts on its own line
    records = [json.loads(line) for line in log.read_text().splitlines()[1:]
               if line.endswith("}")]
    assert sorted(r["layer_id"] for r in records) == [0, 1]


def test_stacked_rows_are_one_resume_record(tmp_path):
    path = _st(tmp_path / "moe.safetensors", {"experts": _w(4, (3, 40, 30))})
    log = tmp_path / "run.jsonl"
    df = analyze(path, resume=log, progress=False)
    lines = log.read_text().splitlines()
    assert len(df) == 3 and len(lines) == 2 and len(json.loads(lines[1])["rows"]) == 3


# --- 3. tensors are named unambiguously ----------------------------------------------------

def test_duplicate_names_across_files_are_both_analysed(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    a, b = _w(5, (60, 30)), 3 * _w(6, (60, 30))
    _st(folder / "a.safetensors", {"layers.0.weight": a})
    _st(folder / "b.safetensors", {"layers.0.weight": b})
    import concurrent.futures
    import multiprocessing

    pool = concurrent.futures.ProcessPoolExecutor(
        2, mp_context=multiprocessing.get_context("spawn"))
    for kwargs in ({}, {"n_jobs": 2}, {"n_jobs": 2, "backend": "processes"},
                   {"executor": pool}):  # serial, threads, pool, spawned workers
        df = _rows(analyze(folder, progress=False, **kwargs))
        assert set(df.index) == {"a.safetensors::layers.0.weight", "b.safetensors::layers.0.weight"}
        assert df.loc["a.safetensors::layers.0.weight", "lambda_max"] == pytest.approx(
            rmt.esd(a).max())
        assert df.loc["b.safetensors::layers.0.weight", "lambda_max"] == pytest.approx(
            rmt.esd(b).max())
        assert df["warning"].str.contains("occurs 2 times").all()
    pool.shutdown()


def test_names_that_flatten_alike_in_one_torch_zip(tmp_path, monkeypatch):
    a, b = _w(7, (30, 20)), _w(8, (30, 20))
    write_torch_zip(tmp_path / "m.pt", {"a.b": a, "a": {"b": b}}, monkeypatch=monkeypatch)
    monkeypatch.undo()
    df = _rows(analyze(tmp_path / "m.pt", progress=False))
    assert set(df.index) == {"a.b", "a.b#2"}
    assert {round(v, 9) for v in df["lambda_max"]} == {round(rmt.esd(a).max(), 9),
                                                       round(rmt.esd(b).max(), 9)}


def test_parallel_tasks_read_their_tensor_without_walking_the_checkpoint(tmp_path, monkeypatch):
    path = _st(tmp_path / "many.safetensors", {f"t{i}": _w(i, (12, 10)) for i in range(300)})
    tasks = [(i, n, t) for i, (n, t) in enumerate(rio.open_checkpoint(path))]
    chunks = analyze_module._chunks(tasks, 2)
    assert len(chunks) <= 8 + 1 and sum(map(len, chunks)) == 300
    monkeypatch.setattr(rio, "open_checkpoint", lambda *a: pytest.fail("walked the checkpoint"))
    import pickle

    out = analyze_module._run_chunk(pickle.loads(pickle.dumps(chunks[0])),
                                    rmt.layers.Options(min_evals=5))
    assert [o[0] for o in out] == [t[0] for t in chunks[0]]
    assert all(rows[0]["status"] == "success" for _, _, rows in out)


# --- nothing computed is lost ----------------------------------------------------------------

def test_bad_members_of_a_directory_are_failed_rows(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    good = _w(10, (50, 25))
    _st(folder / "a.safetensors", {"good.weight": good})
    (folder / "b.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    (folder / "c.safetensors").symlink_to(folder / "gone.safetensors")
    (folder / "d.safetensors").mkdir()
    outside = _st(tmp_path / "secret.safetensors", {"secret": _w(11, (40, 20))})
    (folder / "e.safetensors").symlink_to(outside)
    (folder / "f.safetensors").symlink_to(folder / "f.safetensors")  # a loop
    df = _rows(analyze(folder, progress=False))
    assert df.loc["good.weight", "status"] == "success"
    bad = {"b.safetensors": "bad header", "c.safetensors": "dangling",
           "d.safetensors": "not a regular file", "e.safetensors": "outside the directory",
           "f.safetensors": "cannot stat"}
    _assert_failed(df, bad)
    _assert_failed(df, {name: name for name in bad})  # each row names its file
    assert "secret" not in df.index


def test_index_shards_missing_corrupt_or_outside(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    _st(folder / "s1.safetensors", {"l0.weight": _w(12, (40, 20))})
    (folder / "s2.safetensors").write_bytes(b"junk" * 10)
    _st(tmp_path / "outside.safetensors", {"l3.weight": _w(13, (40, 20))})
    index = {"weight_map": {"l0.weight": "s1.safetensors", "l1.weight": "s2.safetensors",
                            "l2.weight": "missing.safetensors",
                            "l3.weight": "../outside.safetensors", "l4.weight": "/etc/passwd",
                            "l5.weight": "s1.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    df = _rows(analyze(folder, progress=False))
    assert df.loc["l0.weight", "status"] == "success"
    _assert_failed(df, {"l1.weight": "s2.safetensors", "l2.weight": "missing",
                        "l3.weight": "leaves the checkpoint directory",
                        "l4.weight": "leaves the checkpoint directory",
                        "l5.weight": "not in this shard"})


def test_torch_zip_with_one_bad_view_keeps_the_others(tmp_path, monkeypatch):
    base = np.arange(16, dtype=np.float32)
    good = _w(14, (30, 20))
    state = {"good": good,
             "stride0": (base, 0, (60000, 60000), (0, 0)),      # 16 floats as 27 GiB
             "stack0": (base, 0, (10**7, 20, 20), (0, 0, 0)),   # minutes of loops
             "overlap": (base, 0, (4, 8), (2, 1)),
             "past": (base, 10, (4, 4), (4, 1)),
             "negative": (base, 0, (4, 4), (-1, 1))}
    write_torch_zip(tmp_path / "m.pt", state, monkeypatch=monkeypatch)
    monkeypatch.undo()
    start = time.perf_counter()
    df = _rows(analyze(tmp_path / "m.pt", progress=False))
    assert time.perf_counter() - start < 10
    assert df.loc["good", "status"] == "success"
    assert df.loc["good", "lambda_max"] == pytest.approx(rmt.esd(good).max())
    for name in ("stride0", "stack0", "overlap", "past", "negative"):
        assert df.loc[name, "status"] == "failed", name
        assert "m.pt" in df.loc[name, "warning"] and name in df.loc[name, "warning"]


def test_npz_bad_members_are_failed_rows(tmp_path):
    path = tmp_path / "w.npz"
    good = _w(15, (40, 20))
    np.savez(path, good=good, obj=np.array([[{"a": 1}, None]], dtype=object))
    # a member whose header claims far more than it holds
    raw = {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)}
    buf = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(buf, raw)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("liar.npy", buf.getvalue() + b"\x00" * 64)
    df = _rows(analyze(path, progress=False))
    assert df.loc["good", "status"] == "success"
    assert df.loc["obj", "status"] == "failed" and "objects" in df.loc["obj", "warning"]
    assert df.loc["liar", "status"] == "failed" and "claims" in df.loc["liar", "warning"]


def test_a_tensor_that_raises_is_a_failed_row_unless_debugging(two_layers, monkeypatch):
    real = rmt.layers._row

    def flaky(name, W, base, opts):
        if name == "a.weight":
            raise TypeError("library bug")
        return real(name, W, base, opts)

    monkeypatch.setattr(rmt.layers, "_row", flaky)
    df = _rows(analyze(two_layers, progress=False))
    assert df.loc["a.weight", "warning"] == "TypeError: library bug"
    assert df.loc["b.weight", "status"] == "success"
    with pytest.raises(AnalysisError) as info:
        analyze(two_layers, progress=False, on_error="raise")
    assert isinstance(info.value.__cause__, TypeError)


def test_a_failure_mid_run_keeps_finished_rows(tmp_path, monkeypatch, capsys):
    path = _st(tmp_path / "m.safetensors", {f"l{i}.weight": _w(20 + i, (40, 20))
                                            for i in range(4)})
    log = tmp_path / "run.jsonl"
    real = ResumeLog.append
    calls = []

    def disk_full(self, layer_id, name, rows):
        calls.append(layer_id)
        if layer_id == 2:
            raise OSError(28, "No space left on device")
        real(self, layer_id, name, rows)

    monkeypatch.setattr(ResumeLog, "append", disk_full)
    with pytest.raises(AnalysisError, match="No space left") as info:
        analyze(path, resume=log, progress=False)
    assert len(info.value.table) == 3  # the third was computed, then its write failed
    assert len(log.read_text().splitlines()) == 1 + 2
    calls.clear()
    out = tmp_path / "table.csv"
    assert main(["analyze", str(path), "--resume", str(log), "--format", "csv", "--out",
                 str(out)]) == 1
    assert "No space left" in capsys.readouterr().err
    assert len(pd.read_csv(out)) == 3  # resumed 2 + the one computed before the failure
    monkeypatch.undo()
    assert len(analyze(path, resume=log, progress=False)) == 4


def test_a_dead_worker_keeps_finished_rows(two_layers):
    import concurrent.futures
    from concurrent.futures.process import BrokenProcessPool

    class DyingPool(concurrent.futures.Executor):
        def __init__(self):
            self.calls = 0

        def submit(self, fn, *args):
            self.calls += 1
            fut = concurrent.futures.Future()
            if self.calls == 1:
                fut.set_result(fn(*args))
            else:
                fut.set_exception(BrokenProcessPool("a worker was killed"))
            return fut

    with pytest.raises(AnalysisError, match="killed") as info:
        analyze(two_layers, executor=DyingPool(), progress=False)
    assert len(info.value.table) >= 1


def test_out_is_checked_before_any_work(two_layers, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(analyze_module, "analyze", lambda *a, **k: pytest.fail("ran"))
    assert main(["analyze", str(two_layers), "--out", str(tmp_path / "no" / "t.csv")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["analyze", str(two_layers), "--out", str(tmp_path)]) == 1
    assert "is a directory" in capsys.readouterr().err


# --- bounded cost -----------------------------------------------------------------------------

def _header_file(path, header: dict | bytes, data: bytes = b""):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


@pytest.mark.parametrize(("header", "fragment"), [
    ({"w": {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]}}, "do not hold"),
    ({"w": {"dtype": "F32", "shape": [2**62 + 1, 4], "data_offsets": [0, 16]}}, "do not hold"),
    ({"w": {"dtype": "F32", "shape": "22", "data_offsets": [0, 16]}}, "shape must be a list"),
    ({"w": {"dtype": "F32", "shape": [2.0, 2], "data_offsets": [0, 16]}}, "non-negative integers"),
    ({"w": {"dtype": "F32", "shape": [-2, -2], "data_offsets": [0, 16]}}, "non-negative"),
    ({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0.0, 16]}}, "two integers"),
    ({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": "0,16"}}, "two integers"),
    ({"w": {"dtype": "Q4", "shape": [2, 2], "data_offsets": [0, 16]}}, "unsupported dtype"),
    ({"w": {"dtype": ["F32"], "shape": [2, 2], "data_offsets": [0, 16]}}, "unsupported dtype"),
    ({"w": [1, 2]}, "not an object"),
    ({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
      "b": {"dtype": "F32", "shape": [1, 2], "data_offsets": [8, 16]}}, "overlap"),
    ({"a": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
      "c": {"dtype": "F32", "shape": [1], "data_offsets": [16, 20]}}, "overlap"),
    (b'{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}, '
     b'"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', "more than once"),
    (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
    (b'{"w": ' * 50_000 + b"1" + b"}" * 50_000, "nested deeper"),
    (b"\xff\xfe{", "not JSON"),
])
def test_safetensors_headers_are_validated(tmp_path, header, fragment):
    path = _header_file(tmp_path / "bad.safetensors", header, b"\x00" * 64)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=fragment) as info:
        list(rio.open_checkpoint(path))
    assert "bad.safetensors" in str(info.value) and time.perf_counter() - start < 5


def test_zip_bombs_and_damaged_zips(tmp_path, monkeypatch):
    w = _w(30, (30, 20))
    write_torch_zip(tmp_path / "ok.pt", {"w": w}, monkeypatch=monkeypatch)
    monkeypatch.undo()
    raw = (tmp_path / "ok.pt").read_bytes()
    # a storage entry that inflates far past what its tensor needs
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(tmp_path / "ok.pt") as src, zipfile.ZipFile(bomb, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("data/0"):
                dst.writestr(item.filename, data + b"\x00" * (64 * 2**20),
                             compress_type=zipfile.ZIP_DEFLATED)
            else:
                dst.writestr(item, data)
    ((_, t),) = rio.open_checkpoint(bomb)
    assert t.error and "inflates" in t.error
    # a flipped byte inside the stored tensor: bad CRC, at load
    start = raw.index(w.tobytes()[:16])
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(raw[:start] + bytes([raw[start] ^ 0xFF]) + raw[start + 1:])
    df = analyze(flipped, progress=False)
    assert df.loc[0, "status"] == "failed" and "bad CRC" in df.loc[0, "warning"]
    # a truncated central directory: an error at open
    (tmp_path / "cut.pt").write_bytes(raw[:-10])
    with pytest.raises(CheckpointError, match=r"cut\.pt"):
        list(rio.open_checkpoint(tmp_path / "cut.pt"))
    # encryption flag and an unknown compression method on the storage entry
    for flag, method, fragment in ((0x1, 0, "encrypted"), (0, 99, "compression method")):
        data = bytearray(raw)
        for pos in _central_entries(data):
            name_len = struct.unpack_from("<H", data, pos + 28)[0]
            if bytes(data[pos + 46:pos + 46 + name_len]).endswith(b"data/0"):
                struct.pack_into("<HH", data, pos + 8, flag, method)
        bad = tmp_path / f"bad{method}.pt"
        bad.write_bytes(bytes(data))
        ((_, t),) = rio.open_checkpoint(bad)
        assert t.error and fragment in t.error


def _central_entries(data: bytearray):
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        yield pos
        pos = data.find(b"PK\x01\x02", pos + 4)


def test_file_truncated_or_rewritten_during_a_run(tmp_path, monkeypatch):
    path = _st(tmp_path / "m.safetensors", {f"l{i}.weight": _w(40 + i, (64, 32))
                                            for i in range(4)})
    real = analyze_module.analyze_tensor
    seen = []

    def truncate_after_first(i, name, tensor, opts):
        rows = real(i, name, tensor, opts)
        seen.append(name)
        if len(seen) == 1:
            with open(path, "r+b") as fh:
                fh.truncate(os.path.getsize(path) // 2)  # an in-place re-download
        return rows

    monkeypatch.setattr(analyze_module, "analyze_tensor", truncate_after_first)
    df = analyze(path, progress=False)  # no SIGBUS, no bare mmap error
    assert df.loc[0, "status"] == "success"
    assert (df.loc[1:, "status"] == "failed").all()
    assert df.loc[1:, "warning"].str.contains("changed on disk").all()


# --- never read outside what the user named -------------------------------------------------

def test_hdf5_external_virtual_and_empty_datasets(tmp_path):
    h5py = pytest.importorskip("h5py", reason="the 'keras' extra (h5py) is not installed")
    secret = tmp_path / "secret.bin"
    secret.write_bytes(_w(50, (20, 20)).tobytes())
    path = tmp_path / "m.h5"
    good = _w(51, (30, 20))
    with h5py.File(path, "w") as f:
        f["good"] = good
        f.create_dataset("external", shape=(20, 20), dtype="f4",
                         external=[(str(secret), 0, 1600)])
        f.create_dataset("nodata", shape=(10**6, 10**6), dtype="f4", chunks=(100, 100))
        layout = h5py.VirtualLayout(shape=(20, 20), dtype="f4")
        layout[:] = h5py.VirtualSource(str(tmp_path / "other.h5"), "x", shape=(20, 20))
        f.create_virtual_dataset("virtual", layout)
    start = time.perf_counter()
    df = _rows(analyze(path, progress=False))
    assert time.perf_counter() - start < 10
    assert df.loc["good", "lambda_max"] == pytest.approx(rmt.esd(good).max())
    _assert_failed(df, {"external": "external raw storage", "nodata": "no data",
                        "virtual": "virtual"})


def test_onnx_external_data_outside_and_mis_sized_initializers(tmp_path):
    onnx = pytest.importorskip("onnx", reason="the 'onnx' extra is not installed")
    from onnx import TensorProto, helper, numpy_helper

    good = _w(52, (30, 20))
    (tmp_path / "secret.bin").write_bytes(_w(53, (20, 20)).tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(_w(54, (20, 20)).tobytes())

    def external(name, location, length=1600):
        t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[20, 20])
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        return t

    sized = TensorProto(name="missized", data_type=TensorProto.FLOAT, dims=[30, 20],
                        raw_data=b"\x00" * 100)
    inits = [numpy_helper.from_array(good, "good"), external("inside", "weights.bin"),
             external("outside", "../secret.bin"), external("absolute", str(tmp_path /
                                                                            "secret.bin")),
             external("short", "weights.bin", length=3200), sized]
    graph = helper.make_graph([], "g", [], [], initializer=inits)
    onnx.save(helper.make_model(graph), str(folder / "m.onnx"))
    df = _rows(analyze(folder / "m.onnx", progress=False))
    assert df.loc["good", "status"] == "success" and df.loc["inside", "status"] == "success"
    assert df.loc["inside", "lambda_max"] == pytest.approx(rmt.esd(_w(54, (20, 20))).max())
    _assert_failed(df, {"outside": "inside the model's directory",
                        "absolute": "inside the model's directory", "short": "does not hold",
                        "missized": "raw data of 100 bytes"})


# --- clear errors, validated up front --------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"conv": "flaten"}, "conv"), ({"candidates": "pwerlaw"}, "candidates"),
    ({"min_evals": -1}, "min_evals"), ({"max_evals": -1}, "max_evals"),
    ({"n_jobs": 0}, "n_jobs"), ({"n_threads": 0}, "n_threads"), ({"layers": "(["}, "layers"),
    ({"on_error": "ignore"}, "on_error"), ({"device": "tpu"}, "device"),
])
def test_options_are_validated_before_the_file_is_touched(tmp_path, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        analyze(tmp_path / "does-not-exist.safetensors", **kwargs)


def test_cli_arguments(two_layers, capsys):
    for args in (["--layers", "(["], ["--jobs", "0"], ["--min-evals", "-1"],
                 ["--max-evals", "x"]):
        with pytest.raises(SystemExit) as info:
            main(["analyze", str(two_layers), *args])
        assert info.value.code == 2
        assert "error" in capsys.readouterr().err
    assert main(["analyze", str(two_layers), "--layers", "nothing-like-this"]) == 1
    assert "no layer matched" in capsys.readouterr().err


def test_special_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero"):
        with pytest.raises(CheckpointError, match="not a regular file"):
            list(rio.open_checkpoint(path))
    index = tmp_path / "model.safetensors.index.json"
    (tmp_path / "shard").mkdir()
    index.write_text(json.dumps({"weight_map": {"w": "shard"}}))
    ((_, t),) = rio.open_checkpoint(index)
    assert "not a regular file" in t.error or "directory" in t.error


# --- the caller's threads ---------------------------------------------------------------------

def test_threads_never_exceed_the_callers_limits(two_layers, monkeypatch):
    import numba
    from threadpoolctl import threadpool_info, threadpool_limits

    seen = []
    real = rmt.layers._row

    def spy(name, W, base, opts):
        seen.append((numba.get_num_threads(),
                     max(lib["num_threads"] for lib in threadpool_info())))
        return real(name, W, base, opts)

    monkeypatch.setattr(rmt.layers, "_row", spy)
    before = numba.get_num_threads()
    with threadpool_limits(1):
        analyze(two_layers, progress=False)
    assert seen and all(s == (1, 1) for s in seen)
    seen.clear()
    numba.set_num_threads(1)
    try:
        analyze(two_layers, progress=False)
        assert all(s[0] == 1 for s in seen)
    finally:
        numba.set_num_threads(before)
    assert numba.get_num_threads() == before


def test_omp_num_threads_is_respected_in_a_fresh_process(tmp_path):
    import subprocess

    code = ("import numba, rmt; from rmt._threads import limit_threads;"
            "from threadpoolctl import threadpool_info\n"
            "with limit_threads(None) as n:\n"
            "    print(n, numba.get_num_threads(), max(l['num_threads'] for l in "
            "threadpool_info()))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["1", "1", "1"]


def test_explicit_threads_are_restored():
    import numba

    from rmt._threads import limit_threads

    before = numba.get_num_threads()
    with limit_threads(1):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="n_threads"):
            with limit_threads(0):
                pass


# --- formats read as before -------------------------------------------------------------------

def test_bf16_and_fp8_tensors_still_read_exactly(tmp_path):
    tensors = {"bf": _w(60, (20, 12)).astype(ml_dtypes.bfloat16),
               "f8": _w(61, (20, 12)).astype(ml_dtypes.float8_e4m3fn)}
    path = _st(tmp_path / "m.safetensors", tensors)
    for name, t in rio.open_checkpoint(path):
        got = t.load()
        assert got.dtype == tensors[name].dtype
        np.testing.assert_array_equal(got.view(np.uint8), tensors[name].view(np.uint8))


def test_a_directory_named_like_a_file_and_bad_thresholds(tmp_path):
    (tmp_path / "model.safetensors").mkdir()
    with pytest.raises(CheckpointError, match="not a regular file"):
        analyze(tmp_path / "model.safetensors")
    for bad in ({"fpr": 1.5}, {"fpr": float("nan")}, {"mp_tolerance": -1},
                {"min_tail": True}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            analyze(tmp_path / "does-not-exist", **bad)


def test_a_resume_file_inside_the_checkpoint_directory(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    _st(folder / "m.safetensors", {"w": _w(70, (40, 20))})
    log = folder / "run.json"  # a .json name, inside the directory it describes
    first = analyze(folder, resume=log, progress=False)
    again = analyze(folder, resume=log, progress=False)  # not "another checkpoint"
    pd.testing.assert_frame_equal(first.drop(columns="seconds"), again.drop(columns="seconds"),
                                  check_dtype=False)


def test_indexes_that_name_themselves_or_carry_nul_bytes(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    _st(folder / "s.safetensors", {"ok": _w(71, (40, 20))})
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"ok": "s.safetensors",
                                                "loop": "model.safetensors.index.json",
                                                "nul": "s\u0000.safetensors"}}))
    df = _rows(analyze(folder, progress=False))
    assert df.loc["ok", "status"] == "success"
    assert "indexes do not nest" in df.loc["loop", "warning"]
    assert df.loc["nul", "status"] == "failed"
    with pytest.raises(CheckpointError, match="not a valid path"):
        analyze(str(tmp_path / "a\x00b.safetensors"))


def test_negative_view_sizes_are_refused(tmp_path, monkeypatch):
    base = np.arange(64, dtype=np.float32)
    write_torch_zip(tmp_path / "neg.pt", {"neg": (base, 0, (-4, 8), (8, 1)),
                                          "ok": (base, 0, (8, 8), (8, 1))},
                    monkeypatch=monkeypatch)
    monkeypatch.undo()
    entries = dict(rio.open_checkpoint(tmp_path / "neg.pt"))
    assert "negative size" in entries["neg"].error and entries["ok"].error is None


def test_a_small_parallel_job_does_not_wait_for_the_pool(two_layers, monkeypatch):
    # two tiny layers take milliseconds here: no pool is started for them
    monkeypatch.setattr(analyze_module.concurrent.futures, "ProcessPoolExecutor",
                        lambda *a, **k: pytest.fail("started a pool for a tiny job"))
    df = analyze(two_layers, n_jobs=2, backend="processes", progress=False)
    assert (df["status"] == "success").all()


def test_a_parallel_job_hands_over_to_ready_workers(tmp_path, monkeypatch):
    path = _st(tmp_path / "m.safetensors", {f"l{i}": _w(80 + i, (30, 20)) for i in range(24)})
    serial = analyze(path, progress=False)
    real = analyze_module.analyze_tensor
    here = []

    def slow(i, name, tensor, opts):  # this process only: spawned workers run the real one
        here.append(i)
        time.sleep(0.5)
        return real(i, name, tensor, opts)

    monkeypatch.setattr(analyze_module, "analyze_tensor", slow)
    parallel = analyze(path, n_jobs=2, backend="processes", progress=False)
    assert 0 < len(here) < 24  # some tasks here while the workers started, the rest there
    pd.testing.assert_frame_equal(parallel.drop(columns="seconds"),
                                  serial.drop(columns="seconds"), check_dtype=False)


def test_unreadable_layers_are_retried_on_resume(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    _st(folder / "a.safetensors", {"a": _w(90, (40, 20))})
    index = {"weight_map": {"a": "a.safetensors", "b": "b.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    log = tmp_path / "run.jsonl"
    first = _rows(analyze(folder, resume=log, progress=False))
    assert first.loc["b", "status"] == "failed"
    assert len(log.read_text().splitlines()) == 2  # header + layer a only


def test_a_bare_tensor_at_the_top_of_a_torch_zip_is_named(tmp_path, monkeypatch):
    w = _w(91, (30, 20))
    write_torch_zip(tmp_path / "bare.pt", w, monkeypatch=monkeypatch)
    monkeypatch.undo()
    ((name, t),) = rio.open_checkpoint(tmp_path / "bare.pt")
    assert name == "<root>"
    np.testing.assert_array_equal(t.load(), w)


def test_selection_applies_to_broken_tensors_but_not_to_broken_files(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    _st(folder / "a.safetensors", {"attn.weight": _w(92, (40, 20))})
    (folder / "b.safetensors").write_bytes(b"junk" * 4)
    df = analyze(folder, layers="attn", progress=False)
    assert list(df["name"]) == ["attn.weight", "b.safetensors"]  # the bad file is never hidden
    assert df.loc[1, "shape"] == "" and df.loc[1, "dtype"] == ""  # nothing known about it
    assert main(["analyze", str(folder), "--layers", "nothing-like-this"]) == 1  # unmatched
    index = {"weight_map": {"attn.weight": "a.safetensors", "mlp.weight": "gone.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert list(analyze(folder, layers="attn", progress=False)["name"]) == ["attn.weight"]
    assert "mlp.weight" in set(analyze(folder, progress=False)["name"])


def test_tied_weights_in_dicts_and_modules_are_computed_once():
    w = _w(93, (40, 20))
    df = _rows(analyze({"embed": w, "head": w, "other": w.copy()}, progress=False))
    assert "same data as 'embed'" in df.loc["head", "warning"]
    assert df.loc["other", "warning"] == ""
    assert df.loc["head", "lambda_max"] == df.loc["embed", "lambda_max"]
    torch = pytest.importorskip("torch", reason="torch not installed (the 'torch' extra)")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(50, 16), torch.nn.Linear(16, 50))
    model[1].weight = model[0].weight  # tied input and output embeddings
    rows = _rows(analyze(model, progress=False))
    assert "same data as '0.weight'" in rows.loc["1.weight", "warning"]


def test_resume_from_another_version_and_the_cli_restart_flag(two_layers, tmp_path, capsys):
    log = tmp_path / "run.jsonl"
    analyze(two_layers, resume=log, progress=False)
    lines = log.read_text().splitlines()
    header = json.loads(lines[0])
    header["rmt_version"] = "0.0.1"
    log.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    with pytest.raises(ResumeError, match=r"rmt version 0\.0\.1"):
        analyze(two_layers, resume=log, progress=False)
    assert main(["analyze", str(two_layers), "--resume", str(log), "--raw"]) == 1
    assert "belongs to another run" in capsys.readouterr().err
    assert main(["analyze", str(two_layers), "--resume", str(log), "--raw", "--restart"]) == 0
    assert json.loads(log.read_text().splitlines()[0])["options"]["normalize"] is False


def test_cli_debug_shows_the_traceback(two_layers, monkeypatch):
    def broken(name, W, base, opts):
        raise OverflowError("deep inside a library")

    monkeypatch.setattr(rmt.layers, "_row", broken)
    assert main(["analyze", str(two_layers)]) == 0  # recorded as failed rows
    with pytest.raises(AnalysisError) as info:
        main(["analyze", str(two_layers), "--debug"])
    assert isinstance(info.value.__cause__, OverflowError)


def test_a_file_that_shrinks_while_a_tensor_is_read(tmp_path, monkeypatch):
    from rmt.io import files

    path = _st(tmp_path / "m.safetensors", {"big": _w(94, (256, 128)), "next": _w(95, (40, 20))})
    monkeypatch.setattr(files, "READ_CHUNK", 4096)
    real, calls = files._pread_into, []

    def shrink_midway(fd, buffer, offset):
        calls.append(offset)
        if len(calls) == 3:  # the re-download truncates the file under the reader
            os.truncate(path, 1000)
        return real(fd, buffer, offset)

    monkeypatch.setattr(files, "_pread_into", shrink_midway)
    df = _rows(analyze(path, progress=False))
    assert df.loc["big", "status"] == "failed" and "shrank" in df.loc["big", "warning"]
    assert "changed on disk" in df.loc["next", "warning"]


def test_rows_of_a_stack_come_in_numeric_order(tmp_path):
    path = _st(tmp_path / "moe.safetensors", {"experts": _w(96, (12, 40, 30))})
    log = tmp_path / "run.jsonl"
    for _ in range(2):  # computed, then read back from the resume file
        df = analyze(path, resume=log, progress=False)
        assert list(df["name"]) == [f"experts[{e}]" for e in range(12)]


def test_a_weight_too_small_for_float64_squares_is_named_not_called_zero():
    rng = np.random.default_rng(44)
    df = rmt.analyze({"subnormal": rng.standard_normal((120, 60)) * 1e-310,
                      "zero": np.zeros((50, 40)), "fine": rng.standard_normal((80, 40))},
                     progress=False).set_index("name")
    assert "underflows" in df.loc["subnormal", "warning"]
    assert df.loc["zero", "warning"] == "all entries are zero"
    assert df.loc["fine", "status"] == "success"
