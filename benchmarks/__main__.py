"""``python -m benchmarks [--quick] [--only NAME,...]``: every benchmark, one summary table.

Runs the side-by-side benchmarks in turn (each writes ``benchmarks/results/<name>.json``
and ``.md`` and refreshes its table in docs/benchmarks.md), then writes
``benchmarks/results/summary.md`` with the headline ratios, the machine and the thread
counts, and refreshes the summary in docs/benchmarks.md. ``--quick`` keeps to a few minutes: the
MiniLM-sized ESD shapes, power-law fits up to n = 4000, the Hessian comparison; the full
run adds the LLM shapes, n = 16000-200000 fits, the LLM-shaped checkpoint, layers side by
side (``benchmarks.layers_parallel``), the parallel and
thread etiquette (``benchmarks.etiquette``), the cost of ``--plot`` (``benchmarks.plots``),
α on real checkpoints of every format against the format's own library
(``benchmarks.formats``, needs torch, onnx and h5py), WeightWatcher
on two real models (which installs WeightWatcher and torch 2.13.0 into its own venv),
PyHessian, hessian-eigenthings and curvlinops on the same torch models
(``benchmarks.hessian_incumbents``, installed with ``--no-deps`` into its own directory) and
the GPU benchmarks (``benchmarks.gpu``: skipped, saying so, without a CUDA device).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from benchmarks import (
    analyze_llm,
    esd,
    etiquette,
    formats,
    gpu,
    hessian,
    hessian_incumbents,
    layers_parallel,
    opt_in,
    plots,
    powerlaw_fit,
    weightwatcher,
)
from benchmarks._common import RESULTS, machine, update_doc

QUICK = {"esd": (esd, ["--quick"]), "powerlaw_fit": (powerlaw_fit, ["--quick"]),
         "hessian": (hessian, [])}
FULL = {"esd": (esd, []), "powerlaw_fit": (powerlaw_fit, []), "hessian": (hessian, []),
        "analyze_llm": (analyze_llm, []), "layers_parallel": (layers_parallel, []),
        "etiquette": (etiquette, []), "plots": (plots, []),
        "formats": (formats, []), "opt_in": (opt_in, []),
        "hessian_incumbents": (hessian_incumbents, []),
        "weightwatcher": (weightwatcher, ["--models", "minilm,mpnet"]), "gpu": (gpu, [])}


def _load(name: str) -> dict | None:
    for candidate in (name, f"{name}-quick"):
        path = RESULTS / f"{candidate}.json"
        if path.is_file():
            return json.loads(path.read_text())
    return None


def summary_table() -> str:
    """Headline numbers from whatever results exist."""
    rows = []
    if (d := _load("esd")) is not None:
        r = d["results"]
        rows.append(("ESD vs WeightWatcher's SVD (1 thread)",
                     f"{min(x['ratios']['svd_over_rmt_f64'] for x in r):.1f}–"
                     f"{max(x['ratios']['svd_over_rmt_f64'] for x in r):.1f}× faster; "
                     f"bf16 ≤ {max(x['ratios']['rmt_bf16_over_floor'] for x in r):.2f}× the "
                     f"float64 floor; error ≤ {max(x['max_rel_err']['rmt_f64'] for x in r):.0e}"
                     "·λmax"))
    if (d := _load("powerlaw_fit")) is not None:
        r = [x for x in d["results"] if "speedup_2threads" in x]
        big = [x for x in d["results"] if "speedup_2threads" not in x]
        rows.append(("power-law fit vs powerlaw (2 threads)",
                     f"{min(x['speedup_2threads'] for x in r):.0f}–"
                     f"{max(x['speedup_2threads'] for x in r):.0f}× faster, identical xmin, "
                     f"max Δα {max(x['abs_dalpha'] for x in r):.0e}"
                     + (f"; n = {big[0]['n']} in {big[0]['rmt_2threads_s']:.2f} s" if big else "")))
    if (d := _load("weightwatcher")) is not None:
        parts = [f"{m}: {v['ww']['seconds'] / v['rmt']['powerlaw']['seconds']:.1f}× faster, "
                 f"{v['rmt']['powerlaw']['seconds'] / v['floor']['seconds']:.2f}× floor, "
                 f"α within 2% on {v['agree_ww_candidates']['within_2pct']:.0%}"
                 for m, v in d["results"].items()]
        rows.append(("rmt.analyze vs WeightWatcher analyze (1 thread)", "; ".join(parts)))
    if (d := _load("analyze_llm")) is not None:
        per_core = "; ".join(f"{r['threads']} thr{' n_jobs=2' if r['n_jobs'] > 1 else ''} "
                             f"{r['ratio']:.2f}×" for r in d.get("rows", []))
        rows.append(("LLM-shaped bf16 checkpoint", f"{d['ratio']:.2f}× the float64 floor, "
                     f"peak RSS {d['rmt']['rss_MiB']:.0f} MiB"
                     + (f" (per core count: {per_core})" if per_core else "")))
    if (d := _load("layers_parallel")) is not None:
        m = d["median"]["idle"]
        ref = m["1 core (n_threads=1)"]
        rows.append(("MiniLM layers side by side (2 cores, idle)",
                     f"n_jobs=2 {ref / m['n_jobs=2 (threads)']:.2f}× one core; two BLAS "
                     f"threads {ref / m['2 BLAS threads (n_threads=2)']:.2f}×"))
    if (d := _load("etiquette")) is not None:
        p, t = d["parallel"], d["threads_under_load"]
        rows.append(("parallel and thread etiquette",
                     f"{p['tensors']} tiny tensors with n_jobs=2: {p['ratio']:.2f}× serial; "
                     f"MiniLM under load with OMP_NUM_THREADS=1: default {t['ratio']:.2f}× "
                     "n_threads=1"))
    if (d := _load("plots")) is not None:
        r = d["results"]
        rows.append(("--plot cost", "; ".join(f"{k}: {v['ratio']:.2f}× unplotted, "
                                             f"{v['per_figure_s']:.2f} s per figure"
                                             for k, v in r.items())))
    if (d := _load("opt_in")) is not None:
        for model, switches in d["results"].items():  # per model: the switches and floors
            rows.append((f"opt-in analyses' cost ({model}, 1 thread)", "; ".join(
                f"{k}: {v['ratio']:.2f}× the default pass"
                + (f" (median round {v['median_round_ratio']:.2f}×)"
                   if "median_round_ratio" in v else "")
                + (f" (goal ≤ {v['goal']:g})" if v.get("goal") else "")
                for k, v in switches.items() if k not in ("default", "floors"))))
    if (d := _load("formats")) is not None:
        r = [x for x in d["results"] if x.get("max_abs_dalpha") is not None]
        rows.append(("formats: α against each format's own library",
                     f"{len(r)} real files and fixtures, {sum(x['compared'] for x in r)} layers, "
                     f"max abs Δα {max(x['max_abs_dalpha'] for x in r):.0e}"))
    if (d := _load("hessian")) is not None:
        ours = [x for x in d["results"] if x["method"].startswith("rmt")]
        rows.append(("Hessian SLQ (320 matvecs)",
                     "; ".join(f"{x['operator']}: W1/width {x['W1_over_width']:.1e}, index "
                               f"error {x['index_abs_err']:.4f}" for x in ours)))
    if (d := _load("gpu-checkpoint")) is not None:
        rows.append((f"{d['n_params'] / 1e9:.1f} B-parameter bf16 checkpoint on "
                     f"{d['machine']['gpu']}",
                     f"rmt.analyze {d['analyze']['seconds']:.1f} s end to end "
                     f"({d['analyze_over_floor']:.2f}× the float64 Gram + eigvalsh floor); "
                     f"block 0 {d['block0']['cpu_over_device']:.1f}× faster than on the CPU"))
    if (d := _load("gpu-powerlaw")) is not None:
        r = d["results"]
        rows.append((f"power-law fit on {d['machine']['gpu']}",
                     f"{min(x['cpu_over_device'] for x in r):.1f}–"
                     f"{max(x['cpu_over_device'] for x in r):.1f}× the CPU path, same xmin: "
                     f"{all(x['same_xmin_as_cpu'] for x in r)}"))
    lines = ["| benchmark | result |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and write the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(FULL))
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.only:
        plan = {k: FULL[k] for k in args.only.split(",")}
    timings = {}
    for name, (module, module_args) in plan.items():
        start = time.perf_counter()
        print(f"== {name}", file=sys.stderr, flush=True)
        module.main(module_args)
        timings[name] = time.perf_counter() - start
    info = machine(1)
    table = summary_table()
    md = (f"Measured on {info['cpu']}, {info['cores']} cores (threads as stated per row), "
          f"numpy {info['numpy']}, scipy {info['scipy']}, numba {info['numba']}, "
          f"{', '.join(info['blas'])}, {info['date']}.\n\n{table}")
    (RESULTS / "summary.md").write_text(md + "\n")
    previous = RESULTS / "summary.json"
    if previous.is_file():  # an --only run keeps the other benchmarks' durations
        timings = {**json.loads(previous.read_text()).get("seconds", {}), **timings}
    previous.write_text(json.dumps({"machine": info, "seconds": timings}, indent=2) + "\n")
    update_doc("summary", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
