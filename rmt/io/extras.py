"""Optional libraries: imported only when a file of their format is opened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rmt.errors import CheckpointError


def need(module: str, extra: str, path: Path | str) -> Any:
    """Import ``module``, or refuse ``path`` with a message saying how to install it.

    The module's import name is its pip name for every format rmt reads. The advice
    names the package itself (right for a clone and an installed rmt alike)
    and the rmt extra that pulls it in.
    """
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise CheckpointError(path, f"reading this format needs the {module!r} package: "
                                    f"pip install {module} (or rmt's [{extra}] extra: "
                                    f"pip install 'rmt[{extra}]', or '.[{extra}]' in a "
                                    "clone of rmt)") from None
