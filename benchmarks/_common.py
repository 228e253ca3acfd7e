"""Helpers shared by the benchmarks: machine description, timing, peak memory, output."""

from __future__ import annotations

import json
import platform
import subprocess
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine(n_threads: int) -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, thread pins, library versions."""
    import numba
    import numpy
    import scipy
    from threadpoolctl import threadpool_info

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": n_threads,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "blas": sorted({f"{i['internal_api']} {i.get('version')} ({i.get('architecture')})"
                        for i in threadpool_info() if i["user_api"] == "blas"}),
        "date": time.strftime("%Y-%m-%d"),
    }


def measure(fn: Callable[[], Any], repeat: int = 1) -> tuple[Any, float, float]:
    """Run ``fn`` ``repeat`` times: (last result, best seconds, peak traced MiB of one run).

    Peak memory is what NumPy/SciPy allocate during the call (tracemalloc sees NumPy's
    buffers and SciPy's LAPACK workspaces; BLAS-internal buffers are not traced).
    """
    best = float("inf")
    result = None
    peak = 0.0
    for i in range(repeat):
        if i == 0:
            tracemalloc.start()
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
        if i == 0:
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    # timing under tracemalloc is slower: re-time once without it when only one run
    if repeat == 1:
        start = time.perf_counter()
        result = fn()
        best = time.perf_counter() - start
    return result, best, peak


def write(name: str, payload: dict[str, Any], table: str, directory: Path = RESULTS) -> None:
    """Write ``<directory>/<name>.json`` and ``<directory>/<name>.md``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (directory / f"{name}.md").write_text(table + "\n")


def run_json(cmd: list[Any], *, cwd: Path | None = None,
             env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a child process whose last stdout line is a JSON result (``{}`` if it prints none).

    A failing child raises ``RuntimeError`` carrying the end of its stderr.
    """
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:3]))} ... failed ({out.returncode}):\n"
                           f"{out.stderr[-4000:]}")
    lines = out.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


DOCS = Path(__file__).resolve().parents[1] / "docs"
BENCHMARKS_DOC = DOCS / "benchmarks.md"


def update_doc(name: str, table: str, doc: Path = BENCHMARKS_DOC) -> None:
    """Replace the block between ``<!-- name-table -->`` markers of ``doc`` with ``table``."""
    start, end = f"<!-- {name}-table -->", f"<!-- /{name}-table -->"
    text = doc.read_text()
    if start not in text or end not in text:
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{start}\n{table}\n{end}{tail}")


def publish(name: str, payload: dict[str, Any], table: str, *,
            doc: Path | None = BENCHMARKS_DOC, directory: Path = RESULTS) -> None:
    """Print the table, write ``<directory>/<name>.{json,md}`` and refresh its block in
    ``doc`` (docs/benchmarks.md by default; None: no document)."""
    print(table)
    write(name, payload, table, directory)
    if doc is not None:
        update_doc(name, table, doc)

