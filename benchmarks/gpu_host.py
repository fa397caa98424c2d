"""The host time of a CUDA backend call (Python: the checks, the plan, the launches) at a
small shape, where the GPU runs a call's kernels faster than the host issues them.

    python benchmarks/gpu_host.py [--calls 1000] [--rounds 5] [S,L,N]

For ``pdscan.scan`` and ``pdscan.scan_vjp`` on CuPy arrays (scatter and gather mode,
check_index=False): "back to back", calls issued with no synchronisation inside a round
(the stream absorbs the kernels), the wall time per call of each round, median and
min-max over the rounds; "alone", one call timed with CUDA events from before its
first launch to the end of its last kernel, waited for (median of 20).  To compare two
checkouts, run it with each on PYTHONPATH: it prints the pdscan it imported.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_events import host_us_per_call, time_ms  # noqa: E402
from gpu import make_inputs  # noqa: E402

import pdscan  # noqa: E402


def calls(inp, mode):
    index, d, b, gx = inp["index"], inp["d"], inp["b"], inp["grad_x"]
    x = pdscan.scan(index, d, b, mode=mode, backend="cuda", check_index=False)
    return {
        "scan": lambda: pdscan.scan(index, d, b, mode=mode, backend="cuda", check_index=False),
        "scan_vjp": lambda: pdscan.scan_vjp(index, d, b, None, x, gx, mode=mode, backend="cuda",
                                            check_index=False),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", nargs="?", default="8,128,64")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    S, L, N = (int(v) for v in args.shape.split(","))
    inp = make_inputs(S, L, N)
    print(f"pdscan from {os.path.dirname(pdscan.__file__)}; (S, L, N) = ({S}, {L}, {N}), complex64")
    print("| call | mode | back to back us/call | alone us |")
    print("| --- | --- | ---: | ---: |")
    for mode in ("scatter", "gather"):
        for name, run in calls(inp, mode).items():
            for _ in range(20):  # compile, allocate
                run()
            per_call = [host_us_per_call(run, args.calls) for _ in range(args.rounds)]
            alone_us = time_ms(run, repeats=20) * 1e3
            print(f"| {name} | {mode} | {np.median(per_call):.1f} ({min(per_call):.1f}-{max(per_call):.1f}) "
                  f"| {alone_us:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
