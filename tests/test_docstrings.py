"""Every public function, class and method has a numpydoc docstring with its Parameters and
Returns (numpydoc's own validator); result classes document every field."""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import pkgutil

import pytest

import rmt

numpydoc_validate = pytest.importorskip("numpydoc.validate", reason="numpydoc (test extra)")

# GL08: no docstring; PR01: a parameter not documented; PR02: a documented parameter that
# does not exist; PR10: a parameter's colon spacing; RT01: no Returns section.
CODES = {"GL08", "PR01", "PR02", "PR10", "RT01"}


def _modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(rmt.__path__, "rmt.")
             if not m.name.endswith("__main__")]
    return ["rmt", *names]


def _public() -> list[object]:
    seen: dict[str, object] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr, None)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            targets = [obj]
            if inspect.isclass(obj):
                targets += [v for k, v in vars(obj).items()
                            if not k.startswith("_") and inspect.isfunction(v)]
            for target in targets:
                seen.setdefault(f"{target.__module__}.{target.__qualname__}", target)
    return sorted(seen.items())


PUBLIC = _public()


def _is_record(cls: type) -> bool:
    """Dataclasses, named tuples and enums document fields as Attributes, not Parameters."""
    return (dataclasses.is_dataclass(cls) or issubclass(cls, enum.Enum)
            or (issubclass(cls, tuple) and hasattr(cls, "_fields")))


def test_the_public_api_is_large_enough_to_mean_something():
    assert len(PUBLIC) > 120


@pytest.mark.parametrize("qualname, obj", PUBLIC, ids=[q for q, _ in PUBLIC])
def test_numpydoc_sections(qualname, obj):
    errors = {code for code, _ in numpydoc_validate.validate(qualname)["errors"]}
    if inspect.isclass(obj):
        errors.discard("RT01")
        # records document fields as Attributes; a subclass that keeps its base's
        # __init__ (the rmt.errors family) has its parameters documented there
        if _is_record(obj) or "__init__" not in vars(obj):
            errors.discard("PR01")
    assert not errors & CODES, (qualname, sorted(errors & CODES))


@pytest.mark.parametrize("qualname, obj", [(q, o) for q, o in PUBLIC
                                           if inspect.isclass(o) and dataclasses.is_dataclass(o)],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_result_classes_document_every_field(qualname, obj):
    from numpydoc.docscrape import ClassDoc

    doc = ClassDoc(obj)
    documented = {name.strip() for item in doc["Attributes"] + doc["Parameters"]
                  for name in item.name.split(",")}
    text = inspect.getdoc(obj) or ""
    missing = [f.name for f in dataclasses.fields(obj) if not f.name.startswith("_")
               and f.name not in documented and f"``{f.name}``" not in text]
    assert not missing, (qualname, missing)
