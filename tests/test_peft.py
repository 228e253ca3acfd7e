"""rmt.io.peft: LoRA adapters in PEFT's file format, their updates' spectra from the factors
(exact against the dense product), PEFT's scaling rules, and adapters that are wrong."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

import rmt
from rmt.io import open_checkpoint, sniff
from rmt.io.peft import read_config
from rmt.layers import low_rank_esd


def _adapter(path, tensors, **config):
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q", "v"],
           **config}
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    save_file(tensors, str(path / "adapter_model.safetensors"))
    return path


def _factors(rng, out, inp, r, dtype=np.float32):
    return (rng.standard_normal((r, inp)).astype(dtype),
            rng.standard_normal((out, r)).astype(dtype))


@pytest.mark.parametrize("rslora", [False, True])
def test_linear_updates_are_exact_and_scaled_as_peft_scales_them(tmp_path, rslora):
    rng = np.random.default_rng(0)
    A1, B1 = _factors(rng, 384, 1536, 8)
    A2, B2 = _factors(rng, 1536, 384, 4)  # rank 4 by rank_pattern, alpha 32 by alpha_pattern
    pre = "base_model.model.encoder.layer.0."
    path = _adapter(tmp_path / "ad", {
        f"{pre}attention.q.lora_A.weight": A1, f"{pre}attention.q.lora_B.weight": B1,
        f"{pre}mlp.v.lora_A.weight": A2, f"{pre}mlp.v.lora_B.weight": B2,
        f"{pre}mlp.v.lora_B.bias": np.zeros(1536, np.float32),  # lora_bias: no spectrum
        "base_model.model.classifier.weight": rng.standard_normal((3, 384)).astype(np.float32),
    }, rank_pattern={"v": 4}, alpha_pattern={"mlp.v": 32}, use_rslora=rslora)
    assert sniff(path) == "peft"
    entries = dict(open_checkpoint(path))
    assert list(entries) == [f"{pre}attention.q.weight", f"{pre}mlp.v.weight",
                             "base_model.model.classifier.weight"]
    s1 = 16 / (np.sqrt(8) if rslora else 8)
    s2 = 32 / (np.sqrt(4) if rslora else 4)
    for name, (A, B, s) in {f"{pre}attention.q.weight": (A1, B1, s1),
                            f"{pre}mlp.v.weight": (A2, B2, s2)}.items():
        t = entries[name]
        assert t.low_rank.scale == pytest.approx(s) and t.shape == (B.shape[0], A.shape[1])
        dense = s * (B.astype(np.float64) @ A.astype(np.float64))
        # formed in float64, stored in the factors' precision (float32)
        np.testing.assert_array_equal(t.load(), dense.astype(np.float32))
        ev, _ = low_rank_esd(t.low_rank, t.shape, "slices")
        ref = rmt.esd(dense)
        assert np.max(np.abs(ev - ref)) <= 1e-12 * ref[-1]
        assert np.count_nonzero(ev) == A.shape[0]
    df = rmt.analyze(path, progress=False)
    assert list(df.matrix_rank[:2]) == [8, 4]
    dense_df = rmt.analyze({n: entries[n].low_rank.dense(np.float64)
                            for n in list(entries)[:2]}, progress=False)
    for col in ("alpha", "lambda_max", "stable_rank", "log_norm", "num_spikes", "sv_max"):
        np.testing.assert_allclose(df[col][:2].astype(float), dense_df[col].astype(float),
                                   rtol=1e-9, err_msg=col)
    assert list(df.phase[:2]) == list(dense_df.phase)


def test_embedding_fan_in_fan_out_and_conv_updates(tmp_path):
    rng = np.random.default_rng(1)
    Ae, Be = _factors(rng, 64, 1000, 4)      # lora_embedding_A: r × vocab, _B: dim × r
    A, B = _factors(rng, 96, 32, 4)          # GPT-2 Conv1D: weight stored in × out
    Ac = rng.standard_normal((2, 6, 3, 3)).astype(np.float32)
    Bc = rng.standard_normal((10, 2, 1, 1)).astype(ml_dtypes.bfloat16)
    path = _adapter(tmp_path / "ad", {
        "base_model.model.wte.lora_embedding_A": Ae, "base_model.model.wte.lora_embedding_B": Be,
        "base_model.model.h.0.attn.c_attn.lora_A.weight": A,
        "base_model.model.h.0.attn.c_attn.lora_B.weight": B,
        "base_model.model.conv.lora_A.weight": Ac, "base_model.model.conv.lora_B.weight": Bc,
    }, r=4, lora_alpha=4, fan_in_fan_out=True, rank_pattern={"conv": 2})
    e = dict(open_checkpoint(path))
    emb = e["base_model.model.wte.weight"]
    assert emb.shape == (1000, 64)
    np.testing.assert_array_equal(emb.load(),
                                  (Be.astype(float) @ Ae.astype(float)).T.astype(np.float32))
    attn = e["base_model.model.h.0.attn.c_attn.weight"]
    assert attn.shape == (32, 96)  # in × out, as the Conv1D weight it updates
    conv = e["base_model.model.conv.weight"]
    assert conv.shape == (10, 6, 3, 3) and conv.low_rank.scale == 2.0
    dense = 2.0 * np.einsum("or,rihw->oihw", Bc.astype(float)[:, :, 0, 0], Ac.astype(float))
    np.testing.assert_array_equal(conv.load(), dense.astype(np.float32))
    for rule in ("slices", "flatten"):
        ev, _ = low_rank_esd(conv.low_rank, conv.shape, rule)
        ref = rmt.esd(dense, conv=rule)
        assert np.max(np.abs(ev - ref)) <= 1e-12 * ref[-1]
    df = rmt.analyze(path, progress=False)
    assert (df.status == "success").all(), df.warning.tolist()


def test_bad_adapters_say_what_is_wrong(tmp_path):
    rng = np.random.default_rng(2)
    A, B = _factors(rng, 40, 30, 8)
    path = _adapter(tmp_path / "ad", {
        "m.a.lora_A.weight": A,                               # no lora_B
        "m.b.lora_A.weight": A, "m.b.lora_B.weight": B[:, :4],  # ranks do not fit
        "m.c.lora_A.weight": A[:4], "m.c.lora_B.weight": B[:, :4],  # rank 4, config r=8
        "m.d.lora_A.weight": A, "m.d.lora_B.weight": np.zeros_like(B),  # untrained
        "m.e.lora_A.weight": A, "m.e.lora_B.weight": B,
    })
    df = rmt.analyze(path, progress=False).set_index("name")
    assert "has no lora_B factor" in df.warning["m.a.weight"]
    assert "do not fit" in df.warning["m.b.weight"]
    assert "config says r=8" in df.warning["m.c.weight"]
    assert "untrained" in df.warning["m.d.weight"]
    assert df.status["m.e.weight"] == "success"
    cfg = tmp_path / "adapter_config.json"
    for text, problem in (('{"peft_type": "IA3"}', "rmt reads LoRA"), ("[1]", "JSON object"),
                          ('{"r": "8"}', "r must be int"), ("{", "not a JSON"),
                          ('{"r": 4, "rank_pattern": {"q": 2.5}}', "is not a int")):
        cfg.write_text(text)
        with pytest.raises(rmt.errors.CheckpointError, match=problem):
            read_config(cfg)
    cfg.write_text(" " * (1 << 21))
    with pytest.raises(rmt.errors.CheckpointError, match="refused"):
        read_config(cfg)


REAL = Path(__file__).parent / "data" / "minilm-lora"


def test_a_real_peft_adapter_against_its_base():
    """tests/data/minilm-lora: PEFT's LoRA (r=8, alpha=16, query and value) after 300 steps
    of a real fine-tune of all-MiniLM-L6-v2 (tests/data/make_minilm_lora.py)."""
    from safetensors.numpy import load_file

    from rmt.pretrained import PretrainedUnavailable, fetch

    try:
        base_path = fetch("all-MiniLM-L6-v2")
    except PretrainedUnavailable as err:
        pytest.skip(str(err))
    alone = rmt.analyze(REAL, progress=False)
    lora = alone[alone.name.str.contains("lora") | alone.name.str.contains("attention")]
    assert len(lora) == 12 and (lora.status == "success").all()
    assert (lora.matrix_rank == 8).all()
    df = rmt.analyze(REAL, base=base_path, progress=False)
    mods = df[df.name.str.contains("attention.self")]
    assert len(mods) == 12 and (mods.status == "success").all(), mods.warning.tolist()
    assert (mods.matched_by == "suffix").all()  # bert.encoder... against encoder...
    assert (mods.delta_matrix_rank == 8).all()
    factors = load_file(str(REAL / "adapter_model.safetensors"))
    base = load_file(str(base_path))
    for _, row in mods.iterrows():
        module = row["name"][: -len(".weight")]
        delta = 2.0 * (factors[f"{module}.lora_B.weight"].astype(np.float64)
                       @ factors[f"{module}.lora_A.weight"].astype(np.float64))
        W = base[row["base_name"]].astype(np.float64)
        assert row["delta_norm"] == pytest.approx(np.linalg.norm(delta), rel=1e-10)
        assert row["relative_change"] == pytest.approx(
            np.linalg.norm(delta) / np.linalg.norm(W), rel=1e-7)
        merged = rmt.esd(W.astype(np.float32) + delta.astype(np.float32))
        assert row["lambda_max"] == pytest.approx(merged[-1], rel=1e-6)
    head = df[df.name == "base_model.model.classifier.weight"]
    assert "only in the other checkpoint" in head.warning.iloc[0]


def test_dora_modules_are_merged_as_peft_merges_them(tmp_path):
    rng = np.random.default_rng(4)
    W = rng.standard_normal((48, 40))
    A, B = _factors(rng, 48, 40, 4)
    m = (np.linalg.norm(W, axis=1) * rng.uniform(0.8, 1.2, 48)).astype(np.float32)
    path = _adapter(tmp_path / "ad", {"base_model.model.fc.lora_A.weight": A,
                                      "base_model.model.fc.lora_B.weight": B,
                                      "base_model.model.fc.lora_magnitude_vector": m},
                    r=4, lora_alpha=8, use_dora=True)
    alone = rmt.analyze(path, progress=False)
    assert "DoRA update" in alone.warning.iloc[0]
    V = W + 2.0 * (B.astype(np.float64) @ A.astype(np.float64))
    merged = (m / np.linalg.norm(V, axis=1))[:, None] * V
    df = rmt.analyze(path, base={"fc.weight": W}, progress=False)
    row = df.iloc[0]
    assert row.status == "success", row.warning
    assert row.delta_norm == pytest.approx(np.linalg.norm(merged - W), rel=1e-12)
    assert row.lambda_max == pytest.approx(rmt.esd(merged)[-1], rel=1e-12)


def test_lora_brings_intruder_dimensions_that_full_fine_tuning_does_not():
    """Shuttleworth et al.'s finding on real MiniLM fine-tunes of the same task: the PEFT
    adapter above, and every weight trained (its query and value weights, float16)."""
    from rmt.pretrained import PretrainedUnavailable, fetch

    try:
        base_path = fetch("all-MiniLM-L6-v2")
    except PretrainedUnavailable as err:
        pytest.skip(str(err))
    full = rmt.compare(base_path, REAL.parent / "minilm-full-finetune-qv.safetensors",
                       progress=False)
    full = full[full.status == "success"]
    lora = rmt.analyze(REAL, base=base_path, progress=False)
    lora = lora[lora.name.str.contains("attention.self")]
    assert len(full) == 12 and len(lora) == 12
    assert (full.matched_by == "suffix").all()
    assert full.num_intruders.sum() == 0
    assert lora.num_intruders.sum() >= 6
    # full fine-tuning moves the weights less and keeps their top subspaces closer
    assert full.relative_change.median() < lora.relative_change.median()
    assert full.left_overlap.median() > lora.left_overlap.median()


def test_adapter_model_bin_is_read_like_safetensors(tmp_path, monkeypatch):
    """PEFT writes adapter_model.bin (a torch zip) when safe_serialization is off."""
    from tests.checkpoints import write_torch_zip

    rng = np.random.default_rng(6)
    A, B = _factors(rng, 50, 40, 8)
    keys = {"base_model.model.fc.lora_A.weight": A, "base_model.model.fc.lora_B.weight": B}
    st = _adapter(tmp_path / "st", keys)
    pt = tmp_path / "pt"
    pt.mkdir()
    (pt / "adapter_config.json").write_text((st / "adapter_config.json").read_text())
    write_torch_zip(pt / "adapter_model.bin", keys, monkeypatch=monkeypatch)
    monkeypatch.undo()
    a, b = rmt.analyze(st, progress=False), rmt.analyze(pt, progress=False)
    assert a.name.tolist() == b.name.tolist() == ["base_model.model.fc.weight"]
    assert b.matrix_rank.iloc[0] == 8 and b.lambda_max.iloc[0] == a.lambda_max.iloc[0]
