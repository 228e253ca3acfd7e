"""Every Python snippet of the README runs as pasted, each in a fresh interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_snippets():
    assert len(SNIPPETS) >= 7


@pytest.mark.parametrize("code", SNIPPETS, ids=[s.splitlines()[-1][:40] for s in SNIPPETS])
def test_snippet_runs_as_pasted(code, tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode and "PretrainedUnavailable" in done.stderr:
        pytest.skip("package index unreachable for rmt.pretrained.fetch")
    assert done.returncode == 0, done.stderr[-3000:]
