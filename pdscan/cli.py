"""The ``pdscan`` command line: ``pdscan validate``."""

from __future__ import annotations

import argparse
import sys


def _size(text):
    parts = tuple(int(p) for p in text.split(","))
    if len(parts) != 4 or min(parts) < 1:
        raise argparse.ArgumentTypeError("expected S,L,N,K: four positive integers")
    return parts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pdscan", description="PD-SSM scan kernels")
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser(
        "validate", help="check every available backend against the NumPy reference and print one table")
    validate.add_argument("--size", type=_size, default=(8, 257, 16, 4), metavar="S,L,N,K",
                          help="sequences, steps, states, dictionary maps (default 8,257,16,4)")
    validate.add_argument("--backends", default=None, help="comma-separated backend names (default: all available)")
    validate.add_argument("--dtypes", default="float32,float64,complex64,complex128")
    validate.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from . import backends, validation

    only = args.backends.split(",") if args.backends else None
    print(f"available backends: {', '.join(backends.available())}", flush=True)
    print(validation.format_header(args.size), flush=True)
    rows = validation.run(size=args.size, dtypes=tuple(args.dtypes.split(",")), only=only, seed=args.seed,
                          on_row=lambda row: print(validation.format_row(row), flush=True))
    failed = [r for r in rows if not r.ok]
    if not rows:
        print("no backend was validated")
        return 1
    print(f"{len(rows) - len(failed)} of {len(rows)} rows within tolerance")
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
