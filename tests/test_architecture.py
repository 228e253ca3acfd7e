"""Layer roles from names and shapes (rmt.architecture), family by family.

Each table is a model family's tensor names and shapes, written by hand from its public
configuration (hidden sizes, layer counts, expert counts as published), with the role,
block and expert every tensor must get. MiniLM is also checked on the real checkpoint.
"""

from __future__ import annotations

import pandas as pd
import pytest

import rmt
from rmt.architecture import ROLES, annotate, describe

# (name, shape, role, block, expert)
LLAMA_2_7B = [  # hidden 4096, intermediate 11008, vocab 32000, 32 layers
    ("model.embed_tokens.weight", (32000, 4096), "embed", None, None),
    ("model.layers.0.self_attn.q_proj.weight", (4096, 4096), "q", 0, None),
    ("model.layers.0.self_attn.k_proj.weight", (4096, 4096), "k", 0, None),
    ("model.layers.0.self_attn.v_proj.weight", (4096, 4096), "v", 0, None),
    ("model.layers.0.self_attn.o_proj.weight", (4096, 4096), "o", 0, None),
    ("model.layers.31.mlp.gate_proj.weight", (11008, 4096), "gate", 31, None),
    ("model.layers.31.mlp.up_proj.weight", (11008, 4096), "up", 31, None),
    ("model.layers.31.mlp.down_proj.weight", (4096, 11008), "down", 31, None),
    ("model.layers.31.input_layernorm.weight", (4096,), "norm", 31, None),
    ("model.layers.31.post_attention_layernorm.weight", (4096,), "norm", 31, None),
    ("model.norm.weight", (4096,), "norm", None, None),
    ("lm_head.weight", (32000, 4096), "lm_head", None, None),
]
QWEN2_7B = [  # GQA: 28 query heads, 4 key/value heads of 128; q/k/v biases
    ("model.layers.3.self_attn.q_proj.weight", (3584, 3584), "q", 3, None),
    ("model.layers.3.self_attn.q_proj.bias", (3584,), "q", 3, None),
    ("model.layers.3.self_attn.k_proj.weight", (512, 3584), "k", 3, None),
    ("model.layers.3.self_attn.v_proj.weight", (512, 3584), "v", 3, None),
]
META_LLAMA = [  # the original consolidated.00.pth names
    ("tok_embeddings.weight", (32000, 4096), "embed", None, None),
    ("layers.5.attention.wq.weight", (4096, 4096), "q", 5, None),
    ("layers.5.attention.wk.weight", (4096, 4096), "k", 5, None),
    ("layers.5.attention.wv.weight", (4096, 4096), "v", 5, None),
    ("layers.5.attention.wo.weight", (4096, 4096), "o", 5, None),
    ("layers.5.feed_forward.w1.weight", (11008, 4096), "gate", 5, None),
    ("layers.5.feed_forward.w2.weight", (4096, 11008), "down", 5, None),
    ("layers.5.feed_forward.w3.weight", (11008, 4096), "up", 5, None),
    ("layers.5.attention_norm.weight", (4096,), "norm", 5, None),
    ("norm.weight", (4096,), "norm", None, None),
    ("output.weight", (32000, 4096), "lm_head", None, None),
]
GPT2 = [  # n_embd 768, 12 layers; Conv1D weights stored (in, out)
    ("transformer.wte.weight", (50257, 768), "embed", None, None),
    ("transformer.wpe.weight", (1024, 768), "pos_embed", None, None),
    ("transformer.h.0.ln_1.weight", (768,), "norm", 0, None),
    ("transformer.h.0.attn.c_attn.weight", (768, 2304), "qkv", 0, None),
    ("transformer.h.0.attn.c_proj.weight", (768, 768), "o", 0, None),
    ("transformer.h.0.ln_2.weight", (768,), "norm", 0, None),
    ("transformer.h.11.mlp.c_fc.weight", (768, 3072), "fc_in", 11, None),
    ("transformer.h.11.mlp.c_proj.weight", (3072, 768), "fc_out", 11, None),
    ("transformer.ln_f.weight", (768,), "norm", None, None),
    ("lm_head.weight", (50257, 768), "lm_head", None, None),
]
PYTHIA = [  # GPT-NeoX: fused query_key_value, interleaved per head
    ("gpt_neox.embed_in.weight", (50304, 512), "embed", None, None),
    ("gpt_neox.layers.2.attention.query_key_value.weight", (1536, 512), "qkv", 2, None),
    ("gpt_neox.layers.2.attention.dense.weight", (512, 512), "o", 2, None),
    ("gpt_neox.layers.2.mlp.dense_h_to_4h.weight", (2048, 512), "fc_in", 2, None),
    ("gpt_neox.layers.2.mlp.dense_4h_to_h.weight", (512, 2048), "fc_out", 2, None),
    ("gpt_neox.layers.2.input_layernorm.weight", (512,), "norm", 2, None),
    ("gpt_neox.final_layer_norm.weight", (512,), "norm", None, None),
    ("embed_out.weight", (50304, 512), "lm_head", None, None),
]
BERT = [  # bert-base-uncased
    ("bert.embeddings.word_embeddings.weight", (30522, 768), "embed", None, None),
    ("bert.embeddings.position_embeddings.weight", (512, 768), "pos_embed", None, None),
    ("bert.embeddings.token_type_embeddings.weight", (2, 768), "embed", None, None),
    ("bert.embeddings.LayerNorm.weight", (768,), "norm", None, None),
    ("bert.encoder.layer.7.attention.self.query.weight", (768, 768), "q", 7, None),
    ("bert.encoder.layer.7.attention.self.key.weight", (768, 768), "k", 7, None),
    ("bert.encoder.layer.7.attention.self.value.weight", (768, 768), "v", 7, None),
    ("bert.encoder.layer.7.attention.output.dense.weight", (768, 768), "o", 7, None),
    ("bert.encoder.layer.7.attention.output.LayerNorm.weight", (768,), "norm", 7, None),
    ("bert.encoder.layer.7.intermediate.dense.weight", (3072, 768), "fc_in", 7, None),
    ("bert.encoder.layer.7.output.dense.weight", (768, 3072), "fc_out", 7, None),
    ("bert.pooler.dense.weight", (768, 768), "other", None, None),
    ("cls.predictions.transform.dense.weight", (768, 768), "other", None, None),
]
DISTILBERT = [
    ("distilbert.transformer.layer.4.attention.q_lin.weight", (768, 768), "q", 4, None),
    ("distilbert.transformer.layer.4.attention.k_lin.weight", (768, 768), "k", 4, None),
    ("distilbert.transformer.layer.4.attention.v_lin.weight", (768, 768), "v", 4, None),
    ("distilbert.transformer.layer.4.attention.out_lin.weight", (768, 768), "o", 4, None),
    ("distilbert.transformer.layer.4.ffn.lin1.weight", (3072, 768), "fc_in", 4, None),
    ("distilbert.transformer.layer.4.ffn.lin2.weight", (768, 3072), "fc_out", 4, None),
    ("distilbert.transformer.layer.4.sa_layer_norm.weight", (768,), "norm", 4, None),
]
MPNET = [  # all-mpnet-base-v2
    ("encoder.layer.3.attention.attn.q.weight", (768, 768), "q", 3, None),
    ("encoder.layer.3.attention.attn.k.weight", (768, 768), "k", 3, None),
    ("encoder.layer.3.attention.attn.v.weight", (768, 768), "v", 3, None),
    ("encoder.layer.3.attention.attn.o.weight", (768, 768), "o", 3, None),
    ("encoder.layer.3.intermediate.dense.weight", (3072, 768), "fc_in", 3, None),
    ("encoder.layer.3.output.dense.weight", (768, 3072), "fc_out", 3, None),
    ("encoder.relative_attention_bias.weight", (32, 12), "pos_embed", None, None),
]
T5 = [  # t5-small (ReLU) and v1.1 (gated) feed-forwards
    ("shared.weight", (32128, 512), "embed", None, None),
    ("encoder.block.0.layer.0.SelfAttention.q.weight", (512, 512), "q", 0, None),
    ("encoder.block.0.layer.0.SelfAttention.o.weight", (512, 512), "o", 0, None),
    ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", (32, 8),
     "pos_embed", 0, None),
    ("encoder.block.0.layer.1.DenseReluDense.wi.weight", (2048, 512), "fc_in", 0, None),
    ("encoder.block.0.layer.1.DenseReluDense.wo.weight", (512, 2048), "fc_out", 0, None),
    ("decoder.block.5.layer.1.EncDecAttention.k.weight", (512, 512), "k", 5, None),
    ("decoder.block.5.layer.2.DenseReluDense.wi_0.weight", (1024, 512), "gate", 5, None),
    ("decoder.block.5.layer.2.DenseReluDense.wi_1.weight", (1024, 512), "up", 5, None),
    ("decoder.block.5.layer.2.layer_norm.weight", (512,), "norm", 5, None),
]
MIXTRAL = [  # 8 experts, hidden 4096, intermediate 14336
    ("model.layers.9.block_sparse_moe.gate.weight", (8, 4096), "router", 9, None),
    ("model.layers.9.block_sparse_moe.experts.0.w1.weight", (14336, 4096), "gate", 9, 0),
    ("model.layers.9.block_sparse_moe.experts.0.w2.weight", (4096, 14336), "down", 9, 0),
    ("model.layers.9.block_sparse_moe.experts.7.w3.weight", (14336, 4096), "up", 9, 7),
    ("model.layers.9.self_attn.k_proj.weight", (1024, 4096), "k", 9, None),
]
QWEN_MOE = [  # Qwen1.5-MoE-A2.7B: 60 routed experts and a shared one
    ("model.layers.4.mlp.gate.weight", (60, 2048), "router", 4, None),
    ("model.layers.4.mlp.experts.59.gate_proj.weight", (1408, 2048), "gate", 4, 59),
    ("model.layers.4.mlp.experts.59.down_proj.weight", (2048, 1408), "down", 4, 59),
    ("model.layers.4.mlp.shared_expert.up_proj.weight", (5632, 2048), "up", 4, "shared"),
    ("model.layers.4.mlp.shared_expert_gate.weight", (1, 2048), "router", 4, None),
]
STACKED_EXPERTS = [  # experts stored as one 3-D tensor: one row per expert, name[e]
    ("model.layers.2.mlp.experts.gate_up_proj[5]", (32, 2880, 5760), "gate_up", 2, 5),
    ("model.layers.2.mlp.experts.down_proj[31]", (32, 2880, 2880), "down", 2, 31),
    ("model.layers.2.mlp.router.weight", (32, 2880), "router", 2, None),
]
VIT_HF = [  # google/vit-base-patch16-224
    ("vit.embeddings.cls_token", (1, 1, 768), "other", None, None),
    ("vit.embeddings.position_embeddings", (1, 197, 768), "pos_embed", None, None),
    ("vit.embeddings.patch_embeddings.projection.weight", (768, 3, 16, 16), "conv", None,
     None),
    ("vit.encoder.layer.11.attention.attention.query.weight", (768, 768), "q", 11, None),
    ("vit.encoder.layer.11.attention.output.dense.weight", (768, 768), "o", 11, None),
    ("vit.encoder.layer.11.intermediate.dense.weight", (3072, 768), "fc_in", 11, None),
    ("vit.encoder.layer.11.output.dense.weight", (768, 3072), "fc_out", 11, None),
    ("vit.encoder.layer.11.layernorm_before.weight", (768,), "norm", 11, None),
    ("classifier.weight", (1000, 768), "lm_head", None, None),
]
VIT_TIMM = [
    ("cls_token", (1, 1, 768), "other", None, None),
    ("pos_embed", (1, 197, 768), "pos_embed", None, None),
    ("patch_embed.proj.weight", (768, 3, 16, 16), "conv", None, None),
    ("blocks.6.norm1.weight", (768,), "norm", 6, None),
    ("blocks.6.attn.qkv.weight", (2304, 768), "qkv", 6, None),
    ("blocks.6.attn.proj.weight", (768, 768), "o", 6, None),
    ("blocks.6.mlp.fc1.weight", (3072, 768), "fc_in", 6, None),
    ("blocks.6.mlp.fc2.weight", (768, 3072), "fc_out", 6, None),
    ("head.weight", (1000, 768), "lm_head", None, None),
]
TRANSFORMER_LAYER = [  # torch.nn.TransformerEncoder: nn.MultiheadAttention inside
    ("layers.1.self_attn.in_proj_weight", (1536, 512), "qkv", 1, None),
    ("layers.1.self_attn.out_proj.weight", (512, 512), "o", 1, None),
    ("layers.1.linear1.weight", (2048, 512), "fc_in", 1, None),
    ("layers.1.linear2.weight", (512, 2048), "fc_out", 1, None),
    ("layers.1.norm1.weight", (512,), "norm", 1, None),
]
MOBILENET_V2 = [
    ("features.0.0.weight", (32, 3, 3, 3), "conv", 0, None),
    ("features.4.conv.1.0.weight", (144, 1, 3, 3), "conv", 4, None),
    ("features.4.conv.2.weight", (32, 144, 1, 1), "conv", 4, None),
    ("classifier.1.weight", (1000, 1280), "lm_head", None, None),
]
FAMILIES = {"llama-2-7b": LLAMA_2_7B, "qwen2-7b": QWEN2_7B, "meta-llama": META_LLAMA,
            "gpt2": GPT2, "pythia": PYTHIA, "bert": BERT, "distilbert": DISTILBERT,
            "mpnet": MPNET, "t5": T5, "mixtral": MIXTRAL, "qwen-moe": QWEN_MOE,
            "stacked-experts": STACKED_EXPERTS, "vit-hf": VIT_HF, "vit-timm": VIT_TIMM,
            "nn.TransformerEncoderLayer": TRANSFORMER_LAYER, "mobilenet-v2": MOBILENET_V2}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_tensor_of_a_family_gets_its_role_block_and_expert(family):
    for name, shape, role, block, expert in FAMILIES[family]:
        part = describe(name, shape)
        assert (part.role, part.block, part.expert) == (role, block, expert), name
        assert part.role in ROLES


def test_torchvision_resnet_stages_are_numbered_in_order():
    # resnet18: layer1..layer4, two BasicBlocks each; the stem and head are in no block
    names = ["conv1.weight", "bn1.weight"]
    for stage in range(1, 5):
        for unit in range(2):
            names += [f"layer{stage}.{unit}.conv1.weight", f"layer{stage}.{unit}.bn1.weight",
                      f"layer{stage}.{unit}.conv2.weight"]
        if stage > 1:
            names += [f"layer{stage}.0.downsample.0.weight",
                      f"layer{stage}.0.downsample.1.weight"]
    names.append("fc.weight")
    shapes = ["64x3x7x7" if "conv" in n or "downsample.0" in n else "64" for n in names]
    shapes[-1] = "1000x512"
    df = annotate(pd.DataFrame({"name": names, "shape": shapes}))
    by = dict(zip(df.name, zip(df.role, df.block, strict=True), strict=True))
    assert by["conv1.weight"] == ("conv", pd.NA) or pd.isna(by["conv1.weight"][1])
    assert by["layer1.0.conv1.weight"] == ("conv", 0)
    assert by["layer1.1.conv2.weight"] == ("conv", 1)
    assert by["layer2.0.conv1.weight"] == ("conv", 2)
    assert by["layer4.1.conv2.weight"] == ("conv", 7)
    assert by["layer3.0.downsample.0.weight"][0] == "conv"
    assert by["layer3.0.bn1.weight"][0] == "norm"
    assert by["fc.weight"][0] == "lm_head" and pd.isna(by["fc.weight"][1])


def test_unknown_names_are_other_never_an_error():
    for name in ["", "weird", "a.b.c", "x[3]", "9", "...", "a..b", "ÿ.ü", "mlp.gate"]:
        part = describe(name)
        assert part.role in ROLES
    assert describe("net.3.weight", (10, 20)).role == "other"
    assert describe("net.3.weight", (10, 20)).block == 3
    assert describe("blob", (8, 3, 3, 3)).role == "conv"  # a 4-D kernel of no known name


def test_the_table_has_the_columns_after_the_name():
    from rmt.pretrained import fetch

    df = rmt.analyze(fetch("all-MiniLM-L6-v2"), progress=False)  # the real checkpoint
    assert list(df.columns[:5]) == ["layer_id", "name", "block", "role", "expert"]
    assert all(c in rmt.COLUMNS for c in ("block", "role", "expert"))
    ok = df[df.status == "success"]
    counts = ok.role.value_counts().to_dict()
    # the token-type embedding (2 x 384) is a failed row: too few eigenvalues
    assert counts == {"q": 6, "k": 6, "v": 6, "o": 6, "fc_in": 6, "fc_out": 6, "embed": 1,
                      "pos_embed": 1, "other": 1}  # the pooler
    assert sorted(ok.block.dropna().unique().tolist()) == list(range(6))
    assert ok.expert.isna().all()


def test_experts_are_summarised_as_a_population_with_the_odd_one_named():
    import numpy as np

    from rmt.experts import MAD_TO_SIGMA, expert_summary
    from rmt.synthetic import phase_matrix

    rng = np.random.default_rng(7)
    weights = {}
    for block in range(2):
        weights[f"model.layers.{block}.block_sparse_moe.gate.weight"] = \
            rng.standard_normal((8, 256))  # the router: 8 experts, 8 eigenvalues
        for e in range(8):  # heavy-tailed experts, but block 1's expert 5 never trained
            W = (rng.standard_normal((512, 256)) if (block, e) == (1, 5)
                 else phase_matrix("heavy-tailed", 512, 256, rng=100 + 10 * block + e))
            weights[f"model.layers.{block}.block_sparse_moe.experts.{e}.w1.weight"] = W
    df = rmt.analyze(weights, progress=False)
    router = df[df.role == "router"]
    assert len(router) == 2 and (router.status == "success").all()  # despite 8 < min_evals
    summary = expert_summary(df)
    assert summary[["block", "role", "n_experts"]].values.tolist() == [[0, "gate", 8],
                                                                       [1, "gate", 8]]
    for block, row in summary.set_index("block").iterrows():
        alpha = df[(df.block == block) & (df.role == "gate")].set_index("expert").alpha
        median, mad = alpha.median(), (alpha - alpha.median()).abs().median()
        far = alpha[(alpha - median).abs() > 3 * MAD_TO_SIGMA * mad]
        assert row.alpha_median == pytest.approx(median) and row.alpha_mad == pytest.approx(mad)
        assert row.outlier_experts == tuple(far.index) and row.router_stable_rank > 1
    odd = summary.set_index("block").loc[1]
    assert 5 in odd.outlier_experts and odd.other_phase_experts == (5,)
    assert odd.majority_phase == "heavy-tailed"
    assert summary.set_index("block").loc[0].other_phase_experts == ()
    assert expert_summary(rmt.analyze({"w": rng.standard_normal((50, 40))},
                                      progress=False)).empty


def test_a_shared_expert_is_reported_beside_the_routed_population():
    import numpy as np

    from rmt.experts import expert_summary

    rng = np.random.default_rng(8)
    weights = {f"model.layers.3.mlp.experts.{e}.down_proj.weight":
               rng.standard_normal((128, 300)) for e in range(4)}
    weights["model.layers.3.mlp.shared_expert.down_proj.weight"] = rng.standard_normal(
        (128, 600))
    weights["model.layers.3.mlp.gate.weight"] = rng.standard_normal((4, 128))
    df = rmt.analyze(weights, progress=False)
    assert df.set_index("name").expert.to_dict()[
        "model.layers.3.mlp.shared_expert.down_proj.weight"] == "shared"
    row = expert_summary(df).iloc[0]
    shared = df[df.expert.astype(str) == "shared"].alpha.item()
    assert (row.block, row.role, row.n_experts) == (3, "down", 4)
    assert row.shared_alpha == pytest.approx(shared)
