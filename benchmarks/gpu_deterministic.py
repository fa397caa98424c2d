"""The CUDA backward (``scan_vjp``) with and without the deterministic option, at the
benchmark shapes, both modes, in interleaved rounds (the median, and the spread):

    python benchmarks/gpu_deterministic.py [--rounds 6]

Deterministic sums each row's terms in a fixed order; the default uses shared-memory
float atomics where the adjoint is a scatter (gather mode).  docs/benchmarks.md has
the results.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_events import time_queued_ms  # noqa: E402
from gpu import SHAPES, copy_bandwidth, make_inputs  # noqa: E402

import pdscan  # noqa: E402
from pdscan.backends.cupy_cuda import _launch  # noqa: E402

BACKWARD_BYTES = 44  # index, d, x, grad_x read; grad_d, grad_b written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    bandwidth = copy_bandwidth()
    inputs = {shape: make_inputs(*shape) for shape in SHAPES}
    samples = {}
    default = _launch.deterministic
    try:
        for _ in range(args.rounds):
            for shape, inp in inputs.items():
                for mode in ("scatter", "gather"):
                    x = pdscan.scan(inp["index"], inp["d"], inp["b"], maps=inp["maps"], mode=mode, backend="cuda",
                                    check_index=False)
                    for deterministic in (False, True):
                        _launch.deterministic = deterministic

                        def backward():
                            return pdscan.scan_vjp(inp["index"], inp["d"], inp["b"], None, x, inp["grad_x"],
                                                   maps=inp["maps"], mode=mode, backend="cuda", check_index=False)

                        ms = time_queued_ms(backward, repeats=10)
                        samples.setdefault((shape, mode, deterministic), []).append(ms)
    finally:
        _launch.deterministic = default
    print(f"copy {bandwidth / 1e12:.2f} TB/s; scan_vjp ms, median of {args.rounds} interleaved rounds (min-max)")
    print("| S, L, N, K | mode | sums | ms | x floor |")
    print("| --- | --- | --- | ---: | ---: |")
    for ((S, L, N, K), mode, deterministic), ms in samples.items():
        floor = S * L * N * BACKWARD_BYTES / bandwidth * 1e3
        med = float(np.median(ms))
        print(f"| {S}, {L}, {N}, {K or '-'} | {mode} | {'deterministic' if deterministic else 'atomics'} | "
              f"{med:.3f} ({min(ms):.3f}-{max(ms):.3f}) | {med / floor:.2f} |")


if __name__ == "__main__":
    main()
