"""Which tensor of one checkpoint is which tensor of another (``rmt.compare``, LoRA bases).

Names are matched after removing the wrappers that training code adds in front of a
model's own names, repeatedly and in this order: ``base_model.model.`` (PEFT),
``_orig_mod.`` (``torch.compile``), ``module.`` (``DataParallel`` / DDP) and ``model.``
(a Lightning module or a ``...ForCausalLM`` holding ``model``). Names still unmatched on
both sides are then matched by dotted suffix (of two components or more) when exactly one
name on the other side ends with the same components (``bert.encoder.layer.0...`` in a
classifier and ``encoder.layer.0...`` in the bare encoder). Everything else is reported as
unmatched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["WRAPPER_PREFIXES", "Pairing", "normalize_name", "pair_names"]

WRAPPER_PREFIXES = ("base_model.model.", "_orig_mod.", "module.", "model.")


def normalize_name(name: str) -> str:
    """The name with the wrapper prefixes of :data:`WRAPPER_PREFIXES` removed.

    Parameters
    ----------
    name : str
        A tensor name.

    Returns
    -------
    str
    """
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix) and len(name) > len(prefix):
                name = name[len(prefix):]
                changed = True
    return name


@dataclass(frozen=True)
class Pairing:
    """The result of matching two lists of names.

    Attributes
    ----------
    pairs : list of (str, str, str)
        (name in a, name in b, how: ``"name"`` or ``"suffix"``), in a's order.
    only_a, only_b : list of str
        Names without a partner.
    ambiguous : dict
        Name -> why it could not be paired (two names normalising alike, or a suffix that
        fits several names).
    """

    pairs: list[tuple[str, str, str]]
    only_a: list[str]
    only_b: list[str]
    ambiguous: dict[str, str]


def _by_key(names: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    keyed: dict[str, list[str]] = {}
    for name in names:
        keyed.setdefault(normalize_name(name), []).append(name)
    unique = {key: group[0] for key, group in keyed.items() if len(group) == 1}
    clashes = {n: f"names {', '.join(map(repr, group))} are the same after removing "
                  "wrapper prefixes" for group in keyed.values() if len(group) > 1
               for n in group}
    return unique, clashes


def _suffix_index(keys: Iterable[str]) -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for key in keys:
        parts = key.split(".")
        for i in range(len(parts)):
            index.setdefault(".".join(parts[i:]), []).append(key)
    return index


def pair_names(a: Iterable[str], b: Iterable[str]) -> Pairing:
    """Match the tensor names of two checkpoints.

    Parameters
    ----------
    a, b : iterable of str
        Names in checkpoint order.

    Returns
    -------
    Pairing
    """
    a, b = list(a), list(b)
    ka, clash_a = _by_key(a)
    kb, clash_b = _by_key(b)
    matched = {key: (ka[key], kb[key], "name") for key in ka.keys() & kb.keys()}
    left_a = [key for key in ka if key not in kb]
    left_b = [key for key in kb if key not in ka]
    ambiguous = {**clash_a, **clash_b}
    # Suffix matching, both ways, only between names left over.
    index_b = _suffix_index(left_b)
    index_a = _suffix_index(left_a)
    used_b: set[str] = set()
    for key in left_a:
        if "." not in key:  # a one-component name ("weight") is no evidence
            continue
        cands = [c for c in index_b.get(key, []) if c not in used_b]
        if not cands:  # a's name may be the longer one
            cands = [c for c in left_b if c not in used_b and "." in c
                     and key.endswith("." + c) and len(index_a.get(c, [])) == 1]
        if len(cands) == 1:
            matched[key] = (ka[key], kb[cands[0]], "suffix")
            used_b.add(cands[0])
        elif len(cands) > 1:
            ambiguous[ka[key]] = (f"its name ends {len(cands)} names of the other checkpoint "
                                  f"({', '.join(repr(kb[c]) for c in cands[:3])}"
                                  f"{', ...' if len(cands) > 3 else ''})")
    order = {name: i for i, name in enumerate(a)}
    pairs = sorted(matched.values(), key=lambda p: order[p[0]])
    paired_a = {p[0] for p in pairs}
    paired_b = {p[1] for p in pairs}
    return Pairing(pairs,
                   [n for n in a if n not in paired_a and n not in ambiguous],
                   [n for n in b if n not in paired_b and n not in ambiguous],
                   ambiguous)
