"""Per-head attention rows (rmt.heads): each head's slice of q/k/v/o, fused projections in
both layouts, grouped-query attention, and the bilinear maps W_QK, W_OV against dense
references."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

import rmt
from rmt.heads import HeadSpec, head_matrices, head_spec


def _gqa(rng, n=8, kv=2, d=16, hidden=64):
    q = rng.standard_normal((n * d, hidden))
    k = rng.standard_normal((kv * d, hidden))
    v = rng.standard_normal((kv * d, hidden))
    o = rng.standard_normal((hidden, n * d))
    return q, k, v, o


def test_heads_are_the_rows_and_columns_of_each_head():
    rng = np.random.default_rng(0)
    q, k, v, o = _gqa(rng)
    spec = HeadSpec(8, 2, 16)
    heads = head_matrices(q, "q", spec, "layers.0.self_attn.q_proj.weight")["q"]
    assert len(heads) == 8 and all(np.array_equal(h, q[16 * i:16 * (i + 1)])
                                   for i, h in enumerate(heads))
    assert len(head_matrices(k, "k", spec)["k"]) == 2
    outs = head_matrices(o, "o", spec, "layers.0.self_attn.o_proj.weight")["o"]
    assert all(np.array_equal(h, o[:, 16 * i:16 * (i + 1)]) for i, h in enumerate(outs))
    # GPT-2's Conv1D stores in x out: the same heads from the transposed matrix
    fused = np.concatenate([q, k, v])  # sectioned [q; k; v], out x in
    parts = head_matrices(fused.T, "qkv", spec, "h.0.attn.c_attn.weight")
    assert all(np.array_equal(a, b) for a, b in zip(parts["q"], heads, strict=True))
    assert np.array_equal(parts["v"][1], v[16:])
    # GPT-NeoX interleaves per key/value group: [q of its 4 query heads; k; v]
    groups = [np.concatenate([q[64 * g:64 * (g + 1)], k[16 * g:16 * (g + 1)],
                              v[16 * g:16 * (g + 1)]]) for g in range(2)]
    inter = head_matrices(np.concatenate(groups), "qkv", spec,
                          "gpt_neox.layers.0.attention.query_key_value.weight")
    assert all(np.array_equal(a, b) for a, b in zip(inter["q"], heads, strict=True))
    assert np.array_equal(inter["k"][1], k[16:]) and np.array_equal(inter["v"][0], v[:16])


def test_a_geometry_that_does_not_fit_is_a_failed_row_and_the_matrix_row_stays(tmp_path):
    rng = np.random.default_rng(1)
    q = _gqa(rng)[0]
    path = tmp_path / "m.safetensors"
    save_file({"layers.0.self_attn.q_proj.weight": q.astype(np.float32)}, str(path))
    df = rmt.analyze(path, heads=5, progress=False)  # 128 rows are not 5 heads
    assert df.status.tolist() == ["success", "failed"]
    assert "heads:" in df.warning[1] and "5 heads" in df.warning[1]


def _model(tmp_path, rng, config=True):
    q, k, v, o = _gqa(rng)
    tensors = {"model.layers.0.self_attn.q_proj.weight": q, "model.layers.0.self_attn."
               "k_proj.weight": k, "model.layers.0.self_attn.v_proj.weight": v,
               "model.layers.0.self_attn.o_proj.weight": o,
               "model.layers.0.mlp.up_proj.weight": rng.standard_normal((128, 64))}
    path = tmp_path / "model.safetensors"
    save_file({n: t.astype(np.float32) for n, t in tensors.items()}, str(path))
    if config:
        (tmp_path / "config.json").write_text(json.dumps(
            {"model_type": "llama", "num_attention_heads": 8, "num_key_value_heads": 2,
             "hidden_size": 64, "head_dim": 16}))
    return path, (q, k, v, o)


def test_grouped_query_heads_and_their_bilinear_maps_match_dense_references(tmp_path):
    rng = np.random.default_rng(2)
    path, (q, k, v, o) = _model(tmp_path, rng)
    df = rmt.analyze(path, heads=True, progress=False)  # geometry from config.json
    assert (df.status == "success").all()
    counts = df.role.value_counts().to_dict()
    assert counts == {"q": 9, "k": 3, "v": 3, "o": 9, "qk": 8, "ov": 8, "up": 1}
    q32, k32, v32, o32 = (a.astype(np.float32).astype(np.float64) for a in (q, k, v, o))
    for h in range(8):
        g = h // 4  # 8 query heads share 2 key/value heads
        Q, K = q32[16 * h:16 * (h + 1)], k32[16 * g:16 * (g + 1)]
        Wo, V = o32[:, 16 * h:16 * (h + 1)], v32[16 * g:16 * (g + 1)]
        for role, dense in (("qk", Q.T @ K), ("ov", Wo @ V)):
            row = df[(df.role == role) & (df["head"] == h)].iloc[0]
            ev = rmt.esd(dense)  # the hidden x hidden map, formed densely
            assert row.lambda_max == pytest.approx(ev[-1], rel=1e-12)
            assert row.num_evals == 64 and row.block == 0
            nonzero = ev[ev > 1e-10 * ev[-1]]
            assert nonzero.size == 16  # rank d
            assert row.log_norm == pytest.approx(np.log10(np.sum(ev)), rel=1e-10)
        row = df[(df.role == "q") & (df["head"] == h)].iloc[0]
        assert row.lambda_max == pytest.approx(rmt.esd(Q)[-1], rel=1e-12)
    whole = df[df["head"].isna() & (df.role == "q")].iloc[0]
    assert whole.lambda_max == pytest.approx(rmt.esd(q32)[-1], rel=1e-12)


def test_the_maps_read_the_matrix_when_an_opt_in_needs_it(tmp_path):
    rng = np.random.default_rng(3)
    path, _ = _model(tmp_path, rng)
    df = rmt.analyze(path, heads=True, randomize=True, progress=False)
    qk = df[df.role == "qk"]
    assert (qk.status == "success").all() and qk.rand_lambda_max.notna().all()


def test_heads_true_without_a_config_says_what_to_give(tmp_path):
    path, _ = _model(tmp_path, np.random.default_rng(4), config=False)
    with pytest.raises(ValueError, match=r"config\.json"):
        rmt.analyze(path, heads=True, progress=False)
    with pytest.raises(ValueError, match="heads"):
        head_spec("twelve")
    with pytest.raises(ValueError, match="shared"):
        HeadSpec(8, 3, 16)


def test_minilm_heads_from_its_public_config(tmp_path):
    from rmt.pretrained import fetch

    (tmp_path / "model.safetensors").symlink_to(fetch("all-MiniLM-L6-v2"))
    (tmp_path / "config.json").write_text(json.dumps(  # its config.json on the hub
        {"model_type": "bert", "hidden_size": 384, "num_attention_heads": 12,
         "num_hidden_layers": 6, "intermediate_size": 1536}))
    df = rmt.analyze(tmp_path / "model.safetensors", heads=True, layers=r"layer\.0\.",
                     progress=False)
    heads = df[df["head"].notna()]
    assert sorted(heads.role.unique()) == ["k", "o", "ov", "q", "qk", "v"]
    assert (heads.groupby("role").size() == 12).all() and (heads.status == "success").all()
    assert (heads[heads.role == "q"].M == 32).all()  # head_dim = 384 / 12
    W = rmt.io.open_checkpoint(tmp_path / "model.safetensors")
    tensors = dict(W)
    Q = np.asarray(tensors["encoder.layer.0.attention.self.query.weight"].load(), np.float64)
    K = np.asarray(tensors["encoder.layer.0.attention.self.key.weight"].load(), np.float64)
    ev = rmt.esd(Q[64:96].T @ K[64:96])  # head 2
    row = heads[(heads.role == "qk") & (heads["head"] == 2)].iloc[0]
    assert row.lambda_max == pytest.approx(ev[-1], rel=1e-10)


def test_gpt2_fused_conv1d_projection_heads_and_maps(tmp_path):
    rng = np.random.default_rng(5)
    n, d, hidden = 4, 12, 48
    q, k, v = (rng.standard_normal((n * d, hidden)) for _ in range(3))
    o = rng.standard_normal((hidden, n * d))
    # Conv1D stores in x out: c_attn is hidden x 3·hidden, c_proj hidden x hidden
    save_file({"transformer.h.0.attn.c_attn.weight": np.concatenate([q, k, v]).T.copy(),
               "transformer.h.0.attn.c_proj.weight": o.T.copy()}, str(tmp_path / "g.st"))
    df = rmt.analyze(tmp_path / "g.st", heads=n, progress=False)
    assert (df.status == "success").all()
    # the whole c_attn (qkv) and c_proj (o) rows, then each head's
    assert df.role.value_counts().to_dict() == {"q": 4, "k": 4, "v": 4, "o": 5, "qk": 4,
                                                "ov": 4, "qkv": 1}
    for h in range(n):
        sl = slice(d * h, d * (h + 1))
        for role, dense in (("qk", q[sl].T @ k[sl]), ("ov", o[:, sl] @ v[sl])):
            row = df[(df.role == role) & (df["head"] == h)].iloc[0]
            assert row.lambda_max == pytest.approx(rmt.esd(dense)[-1], rel=1e-12)
    assert df[df.name == "transformer.h.0.attn.c_attn.weight[v,h3]"].role.item() == "v"
