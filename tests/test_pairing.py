"""rmt.pairing: names matched across wrappers, by suffix, and what cannot be matched."""

from __future__ import annotations

from rmt.pairing import normalize_name, pair_names


def test_wrapper_prefixes_are_removed_repeatedly():
    assert normalize_name("base_model.model.model.layers.0.q.weight") == "layers.0.q.weight"
    assert normalize_name("module._orig_mod.fc.weight") == "fc.weight"
    assert normalize_name("model.") == "model."  # nothing would be left
    assert normalize_name("encoder.model.x") == "encoder.model.x"  # only in front


def test_pairs_by_name_then_by_unique_suffix():
    a = ["module.embed.weight", "bert.encoder.layer.0.q.weight", "bert.encoder.layer.1.q.weight",
         "classifier.weight", "only_a.weight"]
    b = ["embed.weight", "encoder.layer.0.q.weight", "encoder.layer.1.q.weight", "only_b.w"]
    p = pair_names(a, b)
    assert p.pairs == [("module.embed.weight", "embed.weight", "name"),
                       ("bert.encoder.layer.0.q.weight", "encoder.layer.0.q.weight", "suffix"),
                       ("bert.encoder.layer.1.q.weight", "encoder.layer.1.q.weight", "suffix")]
    assert p.only_a == ["classifier.weight", "only_a.weight"] and p.only_b == ["only_b.w"]
    assert not p.ambiguous


def test_clashes_and_ambiguous_suffixes_are_reported_not_guessed():
    p = pair_names(["module.fc.weight", "fc.weight", "q.weight"],
                   ["fc.weight", "x.q.weight", "y.q.weight"])
    assert p.pairs == []
    assert set(p.ambiguous) == {"module.fc.weight", "fc.weight", "q.weight"}
    assert "same after removing wrapper prefixes" in p.ambiguous["fc.weight"]
    assert "2 names" in p.ambiguous["q.weight"]
