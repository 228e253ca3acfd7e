"""Every Python snippet of the README and the user guide runs as pasted, each in a fresh
interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"README": ROOT / "README.md", "guide": ROOT / "docs" / "guide.md"}
FOUND = {name: re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)
         for name, path in PAGES.items()}
SNIPPETS = [code for codes in FOUND.values() for code in codes]


def test_the_pages_have_snippets():
    assert len(FOUND["README"]) >= 4 and len(FOUND["guide"]) >= 7


@pytest.mark.parametrize("code", SNIPPETS, ids=[s.splitlines()[-1][:40] for s in SNIPPETS])
def test_snippet_runs_as_pasted(code, tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode and "PretrainedUnavailable" in done.stderr:
        pytest.skip("package index unreachable for rmt.pretrained.fetch")
    assert done.returncode == 0, done.stderr[-3000:]
