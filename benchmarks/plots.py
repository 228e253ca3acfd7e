"""The cost of ``--plot``: analysis with and without per-layer figures.

Two checkpoints, each analysed in a fresh process with and without ``plot_dir``:

- all-MiniLM-L6-v2 (``rmt.pretrained``, 37 matrices of 384 to 1536);
- a VGG16-shaped Keras ``.h5`` (13 conv kernels (3, 3, in, out) up to 512x512 and the
  4096x4096 and 4096x1000 dense layers; random weights, channels-last as Keras stores
  them). Read by PyTorch's layout such a file becomes 262,144 tiny problems per kernel, and
  ``--plot`` once drew 786,000-point curves and 100,000 spike markers: 18 extra minutes.

Figures are drawn on a background thread while the next layers are analysed (the
kernels release the GIL), and every curve is thinned to at most 2000 points, so a figure
costs the same for any layer size. Goal: at most 0.25 s per figure. The ratio to the
unplotted run depends on the machine: where the analysis already keeps every core busy
(2 cores here) the drawing adds its own time; where layers are cheaper than a figure
(MiniLM's take ~0.02 s each) drawing is the floor; with ``n_jobs > 1`` the workers draw
in parallel.

Run: ``python -m benchmarks.plots``; writes ``benchmarks/results/plots.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks._common import machine, publish, run_json

CHILD = """
import json, sys, tempfile, time
import rmt
path, plot = sys.argv[1], sys.argv[2] == "1"
rmt.analyze(path, progress=False, layers=[0, 1])  # Numba caches, imports
out = tempfile.mkdtemp() if plot else None
if plot:
    import matplotlib.figure  # imported by the first figure otherwise: counted below
start = time.perf_counter()
df = rmt.analyze(path, progress=False, plot_dir=out)
print(json.dumps({"seconds": time.perf_counter() - start, "rows": len(df)}))
"""

VGG16_CONV = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
              (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]


def vgg16_keras(path: Path) -> Path:
    """A VGG16-shaped legacy Keras .h5 (model_weights/<layer>/<layer>/kernel:0)."""
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        group = f.create_group("model_weights")
        names = []
        for i, (cin, cout) in enumerate(VGG16_CONV):
            names.append(f"conv{i + 1}")
            group.create_dataset(f"conv{i + 1}/conv{i + 1}/kernel:0",
                                 data=rng.standard_normal((3, 3, cin, cout), dtype=np.float32))
        for name, shape in (("fc2", (4096, 4096)), ("predictions", (4096, 1000))):
            names.append(name)
            group.create_dataset(f"{name}/{name}/kernel:0",
                                 data=rng.standard_normal(shape, dtype=np.float32))
        group.attrs["layer_names"] = np.array(names, dtype="S")
        for name in names:
            group[name].attrs["weight_names"] = np.array([f"{name}/kernel:0"], dtype="S")
    return path


def measure(path: Path) -> dict:
    plain = run_json([sys.executable, "-c", CHILD, str(path), "0"])
    plotted = run_json([sys.executable, "-c", CHILD, str(path), "1"])
    return {"rows": plain["rows"], "plain_s": plain["seconds"],
            "plot_s": plotted["seconds"], "ratio": plotted["seconds"] / plain["seconds"],
            "per_figure_s": (plotted["seconds"] - plain["seconds"]) / plain["rows"]}


def main(argv: list[str] | None = None) -> int:
    """Measure both checkpoints; write ``benchmarks/results/plots.{json,md}``."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    from rmt.pretrained import fetch

    info = machine(1)
    with tempfile.TemporaryDirectory() as tmp:
        results = {"minilm": measure(fetch("all-MiniLM-L6-v2")),
                   "vgg16_keras": measure(vgg16_keras(Path(tmp) / "vgg16.h5"))}
    md = (f"Plots — {info['cpu']}, {info['cores']} cores, {info['date']}\n\n"
          "| checkpoint | rows | analysis | with `--plot` | ratio | extra per figure |\n"
          "|---|---|---|---|---|---|\n"
          + "\n".join(f"| {name} | {r['rows']} | {r['plain_s']:.2f} s | {r['plot_s']:.2f} s | "
                      f"{r['ratio']:.2f} | {r['per_figure_s']:.2f} s |"
                      for name, r in results.items()))
    publish("plots", {"machine": info, "results": results}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
