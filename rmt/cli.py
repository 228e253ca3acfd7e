"""The ``rmt`` command line.

``rmt analyze PATH`` prints one row per layer of a checkpoint; ``rmt compare BASE OTHER``
one row per layer of a fine-tune against its base; ``rmt demo`` does the same
for a small built-in model; ``rmt energy`` runs the memorisation experiment. (The
benchmarks ship with the repository, not the package: ``python -m benchmarks`` in a
clone.) Results go to stdout (or ``--out``);
progress and the summary go to stderr. An error prints one line and exits with status 1
(2 for bad arguments).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from rmt import __version__


def _clip(text: Any, width: int) -> Any:
    """``text`` cut in the middle to ``width`` characters (both ends of a name matter)."""
    if not isinstance(text, str) or len(text) <= width:
        return text
    keep = (width - 1) // 2
    return f"{text[:keep]}…{text[-(width - 1 - keep):]}"


def _table(df: pd.DataFrame, width: int | None) -> str:
    """A fixed-width table; with ``width``, long names and warnings are clipped so each
    line fits (``--format csv``/``json`` keep everything)."""
    shown = df.copy()
    if width is not None:
        for col, share in (("name", 0.3), ("warning", 0.3), ("layout", 0.2), ("reason", 0.3)):
            if col in shown:
                limit = max(16, int(width * share))
                shown[col] = [_clip(v, limit) for v in shown[col]]
    with pd.option_context("display.width", width or 10_000, "display.max_columns", None,
                           "display.float_format", "{:.4g}".format):
        return shown.to_string(index=False) + "\n"


def _print_frame(df: pd.DataFrame, fmt: str) -> None:
    if fmt == "parquet":
        raise ValueError("--format parquet writes a file: give --out FILE.parquet")
    if fmt == "json":
        sys.stdout.write(df.to_json(orient="records", indent=2) + "\n")
    elif fmt == "csv":
        df.to_csv(sys.stdout, index=False)
    else:
        sys.stdout.write(_table(df, _terminal_width()))


def _terminal_width() -> int | None:
    """Columns of the terminal stdout goes to (None when it is a pipe or file)."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size((120, 24)).columns


TABLE_COLUMNS = ["layer_id", "name", "shape", "layout", "N", "M", "alpha", "num_spikes",
                 "stable_rank", "phase", "status", "warning"]


COMPARE_TABLE_COLUMNS = ["layer_id", "name", "shape", "relative_change", "base_alpha",
                         "alpha", "delta_alpha", "phase_change", "delta_matrix_rank",
                         "left_overlap", "num_intruders", "status", "warning"]


def _shown(df: pd.DataFrame) -> list[str]:
    """The table columns of an analysis, a comparison (it has base_name), a trajectory (it
    has step), or every column of a per-layer summary (no layer_id)."""
    if "base_name" in df.columns:
        return COMPARE_TABLE_COLUMNS
    if "layer_id" not in df.columns:
        return list(df.columns)
    return ["step", *TABLE_COLUMNS] if "step" in df.columns else TABLE_COLUMNS


def _write(df: pd.DataFrame, fmt: str, out: str | None) -> None:
    if out is None:
        _print_frame(df if fmt != "table" else df[_shown(df)], fmt)
        return
    if fmt == "parquet":
        write_parquet(df, out)
    elif fmt == "json":
        df.to_json(out, orient="records", indent=2)
    elif fmt == "csv":
        df.to_csv(out, index=False)
    else:
        with open(out, "w") as fh:
            fh.write(_table(df[_shown(df)], None))


def _check_writable(out: str) -> None:
    """Refuse an ``--out`` that cannot be written, before any work is done."""
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"--out {out}: is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"--out {out}: directory {parent} does not exist")
    if not os.access(path if path.exists() else parent, os.W_OK):
        raise ValueError(f"--out {out}: not writable")


def _cmd_analyze(args: argparse.Namespace) -> int:
    from rmt.errors import AnalysisError
    from rmt.runner import analyze, summary

    if args.out is not None:
        _check_writable(args.out)

    unmatched: list[str] = []

    def run(executor: Any = None) -> pd.DataFrame:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            df = analyze(args.path, executor=executor, resume=args.resume,
                         restart=args.restart, plot_dir=args.plot, heads=args.heads,
                         base=args.base, k=args.k, epsilon=args.epsilon,
                         **_analysis_options(args))
        for w in caught:
            if str(w.message).startswith(("no layer matched", "no weight tensors")):
                unmatched.append(str(w.message))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return df

    start = time.perf_counter()
    try:
        if args.scheduler:
            try:
                from dask.distributed import Client
            except ImportError:
                raise RuntimeError("--scheduler needs Dask: pip install 'dask[distributed]' "
                                   "(or rmt's [dask] extra)") from None
            with Client(args.scheduler) as client:
                df = run(client.get_executor())
        else:
            df = run()
    except AnalysisError as err:
        if args.debug:
            raise
        _write(err.table, args.format, args.out)
        print(f"rmt analyze: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        table = getattr(err, "table", None)
        if table is not None:
            _write(table, args.format, args.out)
        raise
    if unmatched:
        raise ValueError(unmatched[0].replace("layers=", "--layers "))
    _write(df, args.format, args.out)
    if args.base is not None:
        ok = df[df.status == "success"]
        print(f"{len(df)} rows ({len(df) - len(ok)} failed) in "
              f"{time.perf_counter() - start:.2f} s; median relative change "
              f"{ok['relative_change'].median():.3g}; intruder dimensions "
              f"{int(ok['num_intruders'].fillna(0).sum())}; phase changes "
              f"{int((ok['phase_change'].fillna('') != '').sum())}", file=sys.stderr)
        return 0
    info = summary(df)
    phases = ", ".join(f"{k} {v}" for k, v in info.get("phases", {}).items())
    print(f"{info['n_layers']} layers ({info['n_failed']} failed) in "
          f"{time.perf_counter() - start:.2f} s; mean alpha {info.get('alpha', float('nan')):.3g}"
          f"; {phases}", file=sys.stderr)
    return 0


def _heads(text: str) -> Any:
    """--heads N, N:KV or N:KV:D."""
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N, N:KV or N:KV:D, got {text!r}") from None
    if not 1 <= len(parts) <= 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected N, N:KV or N:KV:D (positive), got {text!r}")
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return tuple(parts)
    return {"n_heads": parts[0], "n_kv_heads": parts[1], "head_dim": parts[2]}


def _analysis_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options every analysing command passes on (those of ``rmt analyze``)."""
    return dict(layers=args.layers, device=args.device, n_jobs=args.jobs,
                backend="processes" if args.processes else "threads", normalize=not args.raw,
                candidates=args.candidates,
                min_evals=args.min_evals, max_evals=args.max_evals, conv=args.conv,
                n_threads=args.n_threads, on_error="raise" if args.debug else "record",
                randomize=args.randomize, tpl=args.tpl, uncertainty=args.uncertainty,
                vectors=args.vectors, inverse=args.inverse, farms=args.farms,
                fingers=args.fingers, enable=args.enable, rng=args.rng)


def _cmd_report(args: argparse.Namespace) -> int:
    from rmt.report import report

    if (args.source is None) == (args.track is None):
        raise ValueError("give a checkpoint (SOURCE) or a training run (--track GLOB)")
    options = _analysis_options(args)
    if args.heads is not None:
        options["heads"] = args.heads
    start = time.perf_counter()
    out = report(args.source if args.track is None else args.track, args.out,
                 base=args.base, track=args.track is not None, format=args.format,
                 steps=args.steps, progress=None, **options)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) in "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def _cmd_track(args: argparse.Namespace) -> int:
    from rmt.trajectory import track, track_summary

    if args.out is not None:
        _check_writable(args.out)
    start = time.perf_counter()
    sources = args.checkpoints[0] if len(args.checkpoints) == 1 else args.checkpoints

    def run(executor: Any = None) -> pd.DataFrame:
        return track(sources, steps=args.steps, executor=executor, resume=args.resume,
                     restart=args.restart, **_analysis_options(args))

    if args.scheduler:
        from dask.distributed import Client

        with Client(args.scheduler) as client:
            df = run(client.get_executor())
    else:
        df = run()
    summary = track_summary(df)
    _write(summary if args.summary else df, args.format, args.out)
    if args.plot:
        from rmt.plot import plot_trajectory

        plot_trajectory(df, args.plot)
    alarms = summary[summary["alarms"] != ""] if len(summary) else summary
    print(f"{df['step'].nunique()} checkpoints, {len(summary)} layers in "
          f"{time.perf_counter() - start:.2f} s; alarms in {len(alarms)} layers"
          + "".join(f"\n  {row['name']}: {row['alarms']}" for _, row in alarms.head(20).iterrows()),
          file=sys.stderr)
    return 0


def write_parquet(df: pd.DataFrame, path: str) -> None:
    """Write a table as Parquet (needs pyarrow): tuple columns become lists.

    Parameters
    ----------
    df : pandas.DataFrame
        An rmt table.
    path : str
        The file.
    """
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise RuntimeError("--format parquet needs pyarrow: pip install pyarrow (or rmt's "
                           "[parquet] extra)") from None
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object:
            values = out[col].tolist()
            if any(isinstance(v, tuple | list) for v in values):
                out[col] = [list(v) if isinstance(v, tuple | list) else None for v in values]
            elif not all(isinstance(v, str) or v is None for v in values):
                out[col] = [None if v is None or (isinstance(v, float) and v != v) else str(v)
                            for v in values]
    out.to_parquet(path, index=False)


def _cmd_compare(args: argparse.Namespace) -> int:
    args.path, args.base, args.plot, args.heads = args.other, args.base, None, None
    return _cmd_analyze(args)


def _comparison_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--k", type=_count(1), default=10,
                        help="top singular vectors compared (principal angles, intruders)")
    parser.add_argument("--epsilon", type=float, default=0.5,
                        help="intruder threshold on the largest |cosine| with the base's "
                        "singular vectors (default 0.5)")


def _cmd_energy(args: argparse.Namespace) -> int:
    from rmt.energy import critical_energy, memorization_experiment

    start = time.perf_counter()
    df = memorization_experiment(n=args.n, phis=args.phis, n_seeds=args.seeds, rng=args.seed)
    summary = df.groupby("phi").agg(
        phi_actual=("phi_actual", "first"), m=("m", "first"), runs=("energy", "size"),
        energy_mean=("energy", "mean"), energy_sd=("energy", "std"),
        predicted=("predicted", "first"), linear_baseline=("linear_baseline", "first"),
        index_mean=("hessian_index", "mean"), max_grad_norm=("grad_norm", "max"))
    summary["critical_energy"] = [critical_energy(p) for p in summary["phi_actual"]]
    summary = summary.reset_index()
    _print_frame(summary, args.format)
    print(f"tanh network n = {args.n} (P = {2 * args.n**2}), Levenberg-Marquardt minima; "
          f"prediction 1/2 (1 - phi)^2; {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if args.plot:
        from rmt.plot import save_energy_plot

        save_energy_plot(summary, args.plot, label=f"tanh net n={args.n}, minima")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from rmt.demo import DEMO_TABLE_COLUMNS, demo_model, layer_table

    start = time.perf_counter()
    df = layer_table(demo_model(args.seed), normalize=not args.raw, device=args.device,
                     n_threads=args.n_threads)
    _print_frame(df[DEMO_TABLE_COLUMNS] if args.format == "table" else df, args.format)
    if args.format == "table":
        matches = int((df["built"] == df["phase"]).sum())
        built = int((df["built"] != "").sum())
        print(f"\n{len(df)} layers in {time.perf_counter() - start:.2f} s "
              f"(eigenvalues of X = WᵀW/{'1' if args.raw else 'N'}, float64); detected phase "
              f"= built phase for {matches} of {built}; every column: --format csv",
              file=sys.stderr)
    return 0


def _count(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid regular expression "
                                         f"({err})") from None
    return text


DESCRIPTION = """\
Random-matrix-theory spectra of neural-network weights: for every weight matrix and
conv kernel of a checkpoint, its eigenvalue spectrum, power-law and Marchenko-Pastur
fits and its Martin & Mahoney phase."""

EPILOG = """\
examples:
  rmt demo                               analyse a small built-in model
  rmt analyze model.safetensors          one row per layer; summary on stderr
  rmt analyze model.pt --format csv --out layers.csv --plot plots/
  rmt compare base.safetensors finetuned.safetensors   deltas, intruder dimensions
  rmt analyze lora-adapter/ --base base-model/        a LoRA adapter against its base
  rmt track 'run/checkpoint-*' --plot figs/    alpha over training, alarms per layer
  rmt energy --n 8 --seeds 6             Pennington & Bahri: theory against experiment
  rmt analyze --help                     formats read and every option

Results go to stdout (or --out), progress and summaries to stderr. Errors print one
line and exit with status 1 (2 for bad arguments)."""

FORMATS = """\
formats (sniffed by content):
  .safetensors, a sharded checkpoint (*.index.json or its directory)
  PyTorch .pt/.pth/.bin: zip (torch >= 1.6), legacy pre-zip, TorchScript (.jit)
      read without torch and without running pickle code
  .npz (NumPy), GGUF (needs gguf), ONNX (needs onnx: initializers, Constant nodes,
      subgraphs, quantised weights), Keras .h5/.weights.h5/.keras (needs h5py)

how tensors are read as matrices (the 'layout' column says which and why):
  2-D: a matrix; 4-D: a conv kernel (out, in, kh, kw), kh*kw slices pooled;
  3-D: a Conv1d kernel or a stack of matrices (MoE experts), from the framework
  (Keras and ONNX layer types, TorchScript modules), the name, or the shape;
  Keras kernels are channels-last and are transposed; optimizer state is skipped."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``rmt`` command."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="rmt", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=raw)
    parser.add_argument("--version", action="version", version=f"rmt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="analyse the built-in demo model and print a table")
    demo.add_argument("--seed", type=int, default=0, help="seed of the demo weights")
    demo.add_argument("--format", choices=("table", "csv", "json"), default="table")
    demo.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    demo.add_argument("--n-threads", type=_count(1), default=None, help="BLAS/Numba threads")
    demo.add_argument("--raw", action="store_true",
                      help="eigenvalues of WᵀW without 1/N (WeightWatcher's convention)")
    demo.set_defaults(func=_cmd_demo)

    an = sub.add_parser("analyze", help="analyse every layer of a checkpoint",
                        description="Analyse every weight matrix and conv kernel of a "
                        "checkpoint: one row per layer.", epilog=FORMATS, formatter_class=raw)
    an.add_argument("path", help="checkpoint file or directory (formats below)")
    an.add_argument("--format", choices=("table", "csv", "json", "parquet"), default="table",
                    help="parquet (needs pyarrow, and --out) for tables too large for CSV")
    an.add_argument("--out", help="write the table to this file instead of stdout")
    an.add_argument("--layers", type=_regex, help="regex: only tensors whose name matches")
    an.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    an.add_argument("--jobs", type=_count(1), default=1,
                    help="layers side by side (threads of this process; see --processes)")
    an.add_argument("--processes", action="store_true",
                    help="--jobs as spawned worker processes instead of threads")
    an.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786)")
    an.add_argument("--plot", metavar="DIR", help="write one PNG per layer and summary.png")
    an.add_argument("--resume", metavar="FILE", help="JSON-lines file of finished layers "
                    "(tied to this checkpoint and these options)")
    an.add_argument("--restart", action="store_true",
                    help="start the --resume file anew if it belongs to another run")
    an.add_argument("--debug", action="store_true",
                    help="stop at the first bad tensor and show the traceback")
    an.add_argument("--raw", action="store_true", help="eigenvalues of WᵀW without 1/N")
    an.add_argument("--conv", choices=("slices", "flatten", "per-slice"), default="slices",
                    help="conv kernels as kh*kw pooled out x in slices (default) or one "
                    "out x (in*kh*kw) matrix")
    an.add_argument("--candidates", choices=("powerlaw", "ww"), default="powerlaw",
                    help="power-law fit convention ('ww' reproduces WeightWatcher's alpha)")
    an.add_argument("--min-evals", type=_count(0), default=10,
                    help="layers with fewer eigenvalues get a failed row (default 10)")
    an.add_argument("--max-evals", type=_count(0), default=None,
                    help="skip layers with more eigenvalues than this")
    an.add_argument("--randomize", action="store_true",
                    help="also analyse each layer with its entries shuffled: randomized ESD, "
                    "correlation traps (num_traps), distances (one more ESD per layer)")
    an.add_argument("--tpl", action="store_true",
                    help="also fit a truncated power law to each tail; best_fit column")
    an.add_argument("--uncertainty", action="store_true",
                    help="also give alpha error bars (bootstrap interval, xmin band)")
    an.add_argument("--vectors", action="store_true",
                    help="also compute eigenvector localisation (WeightWatcher's vectors=True "
                    "columns) and where the largest spike lives")
    an.add_argument("--inverse", action="store_true",
                    help="also fit a power law to the inverse ESD 1/lambda (inv_* columns)")
    an.add_argument("--farms", action="store_true",
                    help="also estimate alpha on fixed-aspect-ratio submatrices (FARMS)")
    an.add_argument("--fingers", choices=("dk", "clip_xmax"), default=None,
                    help="test the top of each tail for outlier eigenvalues and fit without "
                    "them ('dk': Dragon-King test; 'clip_xmax': WeightWatcher's rule)")
    an.add_argument("--enable", action="append", default=[], metavar="NAME",
                    help="turn on an opt-in analysis by name, a plug-in's too (repeatable)")
    an.add_argument("--rng", type=_count(0), default=0,
                    help="seed of the shuffles (each layer's depends on it and its name)")
    an.add_argument("--n-threads", type=_count(1), default=None,
                    help="BLAS/Numba threads (default: the limits already in force)")
    an.add_argument("--heads", nargs="?", const=True, default=None, type=_heads,
                    metavar="N[:KV[:D]]",
                    help="also analyse every attention head: each head's slice of q/k/v/o "
                    "and its QK and OV maps (rows name[h3], roles qk and ov). Alone: the "
                    "geometry from config.json beside the checkpoint; or N heads, N:KV "
                    "with grouped key/value heads, N:KV:D with the head width")
    _comparison_options(an)
    an.add_argument("--base", metavar="BASE", default=None,
                    help="the checkpoint PATH was fine-tuned from (for a LoRA adapter: the "
                    "model it adapts): compare each layer with it (as 'rmt compare BASE "
                    "PATH')")
    an.set_defaults(func=_cmd_analyze)

    co = sub.add_parser("compare", help="compare a fine-tune (or LoRA adapter) with its base",
                        description="Compare two checkpoints of one architecture layer by "
                        "layer: the analysis of each weight in OTHER, in BASE and of the "
                        "update OTHER - BASE, norms, principal angles and intruder "
                        "dimensions. OTHER may be a PEFT LoRA adapter directory.",
                        epilog=FORMATS, formatter_class=raw)
    co.add_argument("base", help="the base checkpoint")
    co.add_argument("other", help="the fine-tuned checkpoint or a LoRA adapter directory")
    for action in an._actions:  # every analysis option of `rmt analyze` (compare reads
        # whole matrices: no --heads)
        if action.dest not in ("help", "path", "base", "plot", "k", "epsilon", "heads") \
                and action.option_strings:
            co._add_action(action)
    _comparison_options(co)
    co.set_defaults(func=_cmd_compare)

    tr = sub.add_parser("track", help="analyse every checkpoint of a training run",
                        description="Analyse every checkpoint of a training run: one row per "
                        "checkpoint x layer, steps parsed from the names (step-1000, "
                        "checkpoint-500, epoch=3); alarms per layer on stderr.",
                        epilog=FORMATS, formatter_class=raw)
    tr.add_argument("checkpoints", nargs="+",
                    help="checkpoint paths, or one quoted glob ('ckpts/step-*')")
    tr.add_argument("--steps", type=int, nargs="+", default=None,
                    help="the checkpoints' steps, in order (default: from the names)")
    tr.add_argument("--summary", action="store_true",
                    help="print the per-layer summary (trends, alarms, change points) "
                    "instead of the long table")
    for action in an._actions:  # track runs no per-head analysis: no --heads
        if action.dest not in ("help", "path", "base", "k", "epsilon", "heads") \
                and action.option_strings:
            tr._add_action(action)
    tr.set_defaults(func=_cmd_track)

    rp = sub.add_parser("report", help="write a report (one offline HTML page) of a model, "
                        "a comparison or a training run",
                        description="Analyse and write a report: one self-contained HTML "
                        "page (opens offline: summary, flagged layers, block x role layer "
                        "map, sortable table, each layer's figures), Markdown with PNGs, or "
                        "a Hugging Face model-card block.", epilog=FORMATS,
                        formatter_class=raw)
    rp.add_argument("source", nargs="?", default=None,
                    help="the checkpoint (or, with --base, the fine-tuned one)")
    rp.add_argument("--base", metavar="BASE", default=None,
                    help="the checkpoint SOURCE was fine-tuned from: a comparison report")
    rp.add_argument("--track", metavar="GLOB", default=None,
                    help="a training run's checkpoints ('ckpts/step-*'): α over training")
    rp.add_argument("--steps", type=int, nargs="+", default=None,
                    help="with --track: the checkpoints' steps (default: from the names)")
    rp.add_argument("-o", "--out", default="report.html", help="the file written "
                    "(default report.html; --format md writes its PNGs beside it)")
    rp.add_argument("--format", choices=("html", "md", "model-card"), default="html")
    for action in an._actions:
        if action.dest not in ("help", "path", "base", "plot", "k", "epsilon", "format",
                               "out", "resume", "restart", "scheduler") \
                and action.option_strings:
            rp._add_action(action)
    rp.set_defaults(func=_cmd_report)

    en = sub.add_parser("energy",
                        help="Pennington & Bahri's minimiser energy: theory vs experiment")
    en.add_argument("--n", type=_count(1), default=8, help="network width (P = 2n^2)")
    en.add_argument("--phis", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    en.add_argument("--seeds", type=_count(1), default=6, help="runs per phi")
    en.add_argument("--seed", type=int, default=0, help="master random seed")
    en.add_argument("--format", choices=("table", "csv", "json"), default="table")
    en.add_argument("--plot", metavar="FILE", help="write energy against phi as a PNG")
    en.set_defaults(func=_cmd_energy)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rmt`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("rmt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rmt analyze ... | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # one line, no traceback, non-zero exit
        if getattr(args, "debug", False):
            raise
        print(f"rmt {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
