"""The ``rmt`` command line.

``rmt demo`` analyses a small built-in model and prints one row of ESD metrics per
layer. Results go to stdout; nothing else is printed there.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import pandas as pd

from rmt import __version__


def _print_frame(df: pd.DataFrame, fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(df.to_json(orient="records", indent=2) + "\n")
    elif fmt == "csv":
        df.to_csv(sys.stdout, index=False)
    else:
        with pd.option_context("display.width", 200, "display.max_columns", None,
                               "display.float_format", "{:.4g}".format):
            sys.stdout.write(df.to_string(index=False) + "\n")


def _cmd_demo(args: argparse.Namespace) -> int:
    from rmt.demo import demo_model, layer_table

    start = time.perf_counter()
    df = layer_table(demo_model(args.seed), normalize=not args.raw, device=args.device,
                     n_threads=args.n_threads)
    _print_frame(df, args.format)
    if args.format == "table":
        print(f"\n{len(df)} layers in {time.perf_counter() - start:.2f} s "
              f"(eigenvalues of X = WᵀW/{'1' if args.raw else 'N'}, float64)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``rmt`` command."""
    parser = argparse.ArgumentParser(prog="rmt", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"rmt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="analyse the built-in demo model and print a table")
    demo.add_argument("--seed", type=int, default=0, help="seed of the demo weights")
    demo.add_argument("--format", choices=("table", "csv", "json"), default="table")
    demo.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    demo.add_argument("--n-threads", type=int, default=None, help="BLAS/Numba threads")
    demo.add_argument("--raw", action="store_true",
                      help="eigenvalues of WᵀW without 1/N (WeightWatcher's convention)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rmt`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
