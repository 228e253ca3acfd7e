"""Where a tensor sits in its network: block, role and expert, from its name and shape.

``describe("model.layers.17.self_attn.k_proj.weight")`` gives block 17, role ``"k"``,
expert None. The rules are ordered name patterns (first match wins), matched on the
dot-separated components of the name so that wrapper prefixes (``model.``,
``transformer.``, ``0.auto_model.``, ``module.``) never matter; a name no rule knows gets
role ``"other"``, never an error. Covered naming schemes (each has a name/shape table in
the tests): LLaMA / Mistral / Qwen2 / Meta's original LLaMA, GPT-2 (``c_attn``,
``c_proj``, ``c_fc``), GPT-NeoX / Pythia, BERT / MiniLM / DistilBERT, MPNet, T5, Mixtral
and Qwen-MoE / DeepSeek-MoE experts (numbered and stacked), ViT (Hugging Face and timm),
torchvision ResNet / MobileNet, ``nn.MultiheadAttention`` and ``nn.Transformer*Layer``.

Roles:

* attention: ``q``, ``k``, ``v``, ``o``, ``qkv`` (one fused projection of all three);
* feed-forward: ``gate``, ``up``, ``down`` (gated MLPs), ``gate_up`` (gate and up fused),
  ``fc_in``, ``fc_out`` (two-layer MLPs);
* ``embed`` (token and token-type embeddings), ``pos_embed`` (absolute and relative
  position embeddings), ``lm_head`` (the output head: a language-model head or a
  classifier), ``router`` (a mixture-of-experts gate), ``conv`` (convolution kernels),
  ``norm`` (normalisation weights), ``other``.

Blocks are integers: the index of the repeated unit (``layers.17``, ``h.3``,
``encoder.layer.5``, ``blocks.2``, ``features.7``); for nested stages (torchvision's
``layer2.1``) the units are numbered in order over the whole network by :func:`annotate`.
Tensors outside the repeated units (embeddings, the head, the final norm) have none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

__all__ = ["ROLES", "Part", "annotate", "block_key", "describe", "role_of"]

#: Every role :func:`describe` gives.
ROLES = ("q", "k", "v", "o", "qkv", "qk", "ov", "gate", "up", "down", "gate_up", "fc_in", "fc_out",
         "embed", "pos_embed", "lm_head", "router", "conv", "norm", "other")

# A component boundary before and after: the pattern is a whole dotted component (or run).
_B, _E = r"(?:^|\.)", r"(?:\.|$|\[)"

_ATTENTION = r"(?:attn|attention|selfattention|self_attn|encdecattention|crossattention)"

#: (pattern, role), first match wins, on the lower-cased name.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), role) for p, role in (
        # mixture-of-experts gates: Mixtral block_sparse_moe.gate, Qwen/DeepSeek mlp.gate,
        # Switch router.classifier, Qwen's shared_expert_gate
        (_B + r"(?:gate|router)" + r"(?:\.weight|\.bias)?$", "router"),
        (_B + r"router\.classifier" + _E, "router"),
        (_B + r"shared_expert_gate" + _E, "router"),
        # one head's bilinear maps (rmt.heads): W_Q^hᵀ W_K^h and W_O^h W_V^h
        (_B + r"qk\[", "qk"),
        (_B + r"ov\[", "ov"),
        # learnt tokens (ViT's class token): vectors, not kernels, whatever their shape
        (_B + r"(?:cls_token|mask_token|dist_token|register_tokens)" + _E, "other"),
        (_B + r"(?:[a-z_]*norm[a-z_0-9]*|ln_?[a-z0-9]*|bn\d*|batchnorm\d*)" + _E, "norm"),
        (_B + r"(?:wpe|pos_embed|position_embeddings|positional_embedding|embed_positions|"
         r"relative_attention_bias|position_embedding)" + _E, "pos_embed"),
        (_B + r"(?:embed_tokens|word_embeddings|wte|tok_embeddings|token_embedding|embed_in|"
         r"token_type_embeddings|shared|wordembeddings)" + _E, "embed"),
        (r"^(?:[a-z0-9_]+\.)?(?:embeddings|embedding)\.weight$", "embed"),
        (_B + r"(?:lm_head|embed_out|classifier|score|head)" + _E, "lm_head"),
        (r"^(?:output|fc)\.(?:weight|bias)$", "lm_head"),
        (_B + r"(?:c_attn|qkv|qkv_proj|query_key_value|wqkv|in_proj_weight|in_proj)" + _E,
         "qkv"),
        (_B + r"(?:q_proj|query|q_lin|wq|q)" + _E, "q"),
        (_B + r"(?:k_proj|key|k_lin|wk|k)" + _E, "k"),
        (_B + r"(?:v_proj|value|v_lin|wv|v)" + _E, "v"),
        (_B + r"(?:o_proj|out_proj|out_lin|wo|o|c_proj|proj|dense)" + _E,
         "o?"),  # an output projection when under attention (resolved below)
        (_B + r"gate_up_proj" + _E, "gate_up"),
        (_B + r"(?:gate_proj|w1|wi_0)" + _E, "gate"),
        (_B + r"(?:up_proj|w3|wi_1)" + _E, "up"),
        (_B + r"(?:down_proj|w2)" + _E, "down"),
        (_B + r"(?:c_fc|fc1|fc_in|dense_h_to_4h|linear1|lin1|wi|intermediate\.dense)" + _E,
         "fc_in"),
        (_B + r"(?:fc2|fc_out|dense_4h_to_h|linear2|lin2|output\.dense|c_proj|wo)" + _E,
         "fc_out"),
        (_B + r"(?:conv[a-z0-9_]*|downsample|patch_embed|patch_embeddings|projection)" + _E,
         "conv"),
    ))

_UNDER_ATTENTION = re.compile(_B + _ATTENTION + r"\.")

#: Repeated units whose index is the block number.
_BLOCK = re.compile(_B + r"(?:layers|layer|h|blocks|block|encoder\.layer|decoder\.layers|"
                    r"decoder\.block|encoder\.block|features|stages|resblocks)\.(\d+)" + _E)
#: Nested stages (torchvision ResNet's layer2.1): numbered in order by annotate.
_STAGE = re.compile(_B + r"(?:layer|stage|features)(\d+)\.(\d+)" + _E)
_ANY_NUMBER = re.compile(_B + r"(\d+)" + _E)

_EXPERT = re.compile(_B + r"experts?\.(\d+)" + _E)
_SHARED = re.compile(_B + r"shared_experts?" + _E)
_STACK_INDEX = re.compile(r"\[(\d+)\]$")
#: rmt.heads' rows: name[h3], a fused projection's sections name[q,h3]
_HEAD = re.compile(r"\[(?:(q|k|v),)?h(\d+)\]$")


@dataclass(frozen=True)
class Part:
    """Where one tensor sits.

    Attributes
    ----------
    block : int or None
        Index of its repeated unit (None outside them).
    role : str
        One of :data:`ROLES`.
    expert : int, "shared" or None
        Routed expert index, ``"shared"`` for a shared expert, None outside experts.
    head : int or None
        The attention head of a per-head row (``rmt.analyze(heads=True)``).
    """

    block: int | None
    role: str
    expert: int | str | None
    head: int | None = None


def role_of(name: str, shape: tuple[int, ...] | None = None) -> str:
    """The role of a tensor (one of :data:`ROLES`).

    Parameters
    ----------
    name : str
        Tensor name as stored (a stack's row ``name[e]`` too).
    shape : tuple of int, optional
        Stored shape: a 3-D to 5-D tensor no name rule places is a ``conv`` kernel when its
        name does not say it is a stack of experts; a 1-D one is ``other``.

    Returns
    -------
    str
    """
    low = name.lower()
    head = _HEAD.search(low)
    if head and head.group(1):
        return head.group(1)
    for pattern, role in _RULES:
        if not pattern.search(low):
            continue
        if role == "o?":
            # out_proj / o_proj are attention outputs anywhere; proj, dense, c_proj, wo
            # only under an attention module (GPT-2's mlp.c_proj is the MLP's output)
            explicit = re.search(_B + r"(?:o_proj|out_proj|out_lin|o)" + _E, low)
            if explicit or _UNDER_ATTENTION.search(low):
                return "o"
            continue
        if role == "conv" and shape is not None and len(shape) < 2:
            return "other"  # a conv net's 1-D parameters (downsample.1 is a batch norm)
        return role
    if shape is not None and 3 <= len(shape) <= 5 and not _EXPERT.search(low) \
            and "expert" not in low:
        return "conv"
    return "other"


def block_key(name: str) -> tuple[int, ...] | None:
    """The repeated unit a name is in, as stored: ``(17,)``, ``(2, 1)`` for nested stages.

    Parameters
    ----------
    name : str
        Tensor name.

    Returns
    -------
    tuple of int or None
    """
    low = name.lower()
    stage = _STAGE.search(low)
    if stage:
        return int(stage.group(1)), int(stage.group(2))
    match = _BLOCK.search(low)
    if match:
        return (int(match.group(1)),)
    if role_of(name) in ("embed", "pos_embed", "lm_head"):
        return None
    first = _ANY_NUMBER.search(low)  # an unknown scheme: its first numbered component
    return (int(first.group(1)),) if first else None


def _expert(name: str) -> int | str | None:
    low = name.lower()
    if _SHARED.search(low):
        return "shared"
    match = _EXPERT.search(low)
    if match:
        return int(match.group(1))
    stacked = _STACK_INDEX.search(low)
    if stacked and "expert" in low:
        return int(stacked.group(1))
    return None


def describe(name: str, shape: tuple[int, ...] | None = None) -> Part:
    """Block, role and expert of one tensor.

    Parameters
    ----------
    name : str
        Tensor name as stored (a stack's row ``name[e]`` too).
    shape : tuple of int, optional
        Stored shape (see :func:`role_of`).

    Returns
    -------
    Part
        ``block`` is the last index of :func:`block_key` (for nested stages use
        :func:`annotate`, which numbers them over the whole network).
    """
    key = block_key(name)
    return Part(None if key is None else key[-1], role_of(name, shape), _expert(name),
                _head(name))


def _head(name: str) -> int | None:
    match = _HEAD.search(name.lower())
    return int(match.group(2)) if match else None


def _shape(text: Any) -> tuple[int, ...] | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return tuple(int(p) for p in text.split("x"))
    except ValueError:
        return None


def _expert_column(values: list[Any], index: Any) -> Any:
    """Nullable integers, or objects when a shared expert ("shared") is among them."""
    if any(isinstance(v, str) for v in values):
        return pd.Series(values, index=index, dtype=object)
    return pd.array(values, dtype="Int64")


def annotate(df: pd.DataFrame, name_column: str = "name") -> pd.DataFrame:
    """The table with ``block``, ``role``, ``expert`` and ``head`` columns after its names.

    Parameters
    ----------
    df : pandas.DataFrame
        A table with a name column and, optionally, ``shape`` (``"4096x4096"``).
    name_column : str, default "name"
        The column holding tensor names.

    Returns
    -------
    pandas.DataFrame
        A copy; ``block`` is a nullable integer (nested stages numbered in order of their
        (stage, unit) pairs), ``role`` a string, ``expert`` an integer, ``"shared"`` or None,
        ``head`` a nullable integer (per-head rows only).
    """
    out = df.copy()
    names = [n if isinstance(n, str) else "" for n in out[name_column]]
    shapes = [_shape(s) for s in out["shape"]] if "shape" in out else [None] * len(names)
    keys = [block_key(n) if n else None for n in names]
    nested = sorted({k for k in keys if k is not None and len(k) > 1})
    number = {k: i for i, k in enumerate(nested)}
    blocks = [None if k is None else (number[k] if len(k) > 1 else k[0]) for k in keys]
    columns = {
        "block": pd.array(blocks, dtype="Int64"),
        "role": [role_of(n, s) if n else "other" for n, s in zip(names, shapes, strict=True)],
        "expert": _expert_column([_expert(n) for n in names], out.index),
        "head": pd.array([_head(n) for n in names], dtype="Int64"),
    }
    for col in columns:
        if col in out:
            del out[col]
    at = list(out.columns).index(name_column) + 1
    for offset, (col, values) in enumerate(columns.items()):
        out.insert(at + offset, col, values)
    return out
