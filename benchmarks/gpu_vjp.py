"""The CUDA VJP's schedules against each other and the floor: the pipelined scan of the
carry, writing grad_d ("pipe"); the same with grad_d in an element-wise pass after it
("pipe, grad_d apart"); the team kernels' fused VJP ("team").

    python benchmarks/gpu_vjp.py [S,L,N[,K] ...] [--modes scatter,gather] [--rounds 5]

The VJP alone (x given), complex64, int32 index, no index check.  Its floor: 44 bytes
per element (index, d, x, grad_x read; grad_d, grad_b written) over the copy
bandwidth of the same run.  Rounds interleave the schedules so that they share the
machine's drift (as gpu_schedules.py); each cell is the median round (min-max).  Both
schedules' outputs are compared first (largest difference relative to the largest
value).  "carry" and "grad_d" time the scan and the element-wise pass of "pipe, grad_d
apart" alone.
"""

from __future__ import annotations

import argparse
import os
import sys

import cupy
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_events import time_queued_ms  # noqa: E402
from gpu import SHAPES, copy_bandwidth, make_inputs  # noqa: E402
from gpu_schedules import print_table  # noqa: E402

import pdscan  # noqa: E402
from pdscan.backends.cupy_cuda import _launch  # noqa: E402

VJP_BYTES = 44
SCHEDULES = {"pipe": dict(pipe_vjp=None, vjp_fuse_grad_d=True),
             "pipe, grad_d apart": dict(pipe_vjp=None, vjp_fuse_grad_d=False),
             "team": dict(pipe_vjp=False, vjp_fuse_grad_d=True)}


def use(schedule):
    for knob, value in SCHEDULES[schedule].items():
        setattr(_launch, knob, value)


def vjp_run(inp, x, mode):
    def run():
        return pdscan.scan_vjp(inp["index"], inp["d"], inp["b"], None, x, inp["grad_x"], maps=inp["maps"],
                               mode=mode, backend="cuda", check_index=False)
    return run


def parts(inp, x, mode):
    """The pipe schedule's carry scan and element-wise pass, each alone (the launcher's
    own calls, recorded once and replayed)."""
    recorded = {}
    run_pipe, kernel = _launch.run_pipe, _launch.K.kernel

    def record_pipe(*args, **kwargs):  # the outer call (its chunks' scan calls it again)
        recorded.setdefault("carry", lambda: run_pipe(*args, **kwargs))
        return run_pipe(*args, **kwargs)

    def record_kernel(name):
        k = kernel(name)
        if "vjp_grad_d" not in name:
            return k

        def launch(grid, block, args, **kw):
            recorded["grad_d"] = lambda: k(grid, block, args, **kw)
            return k(grid, block, args, **kw)
        return launch

    _launch.run_pipe, _launch.K.kernel = record_pipe, record_kernel
    use("pipe, grad_d apart")
    try:
        vjp_run(inp, x, mode)()
    finally:
        _launch.run_pipe, _launch.K.kernel = run_pipe, kernel
        use("pipe")
    return recorded


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="*", help="S,L,N[,K] (default: the benchmark's)")
    parser.add_argument("--modes", default="scatter,gather")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    shapes = [tuple(int(v) for v in a.split(",")) + (None,) * (4 - len(a.split(","))) for a in args.shapes] or SHAPES
    bandwidth = copy_bandwidth()
    cases = {}
    for shape in shapes:
        inp = make_inputs(*shape)
        for mode in args.modes.split(","):
            x = pdscan.scan(inp["index"], inp["d"], inp["b"], maps=inp["maps"], mode=mode, backend="cuda",
                            check_index=False)
            outs = {}
            for name in SCHEDULES:
                use(name)
                outs[name] = [cupy.asnumpy(g) for g in vjp_run(inp, x, mode)() if g is not None]
            use("pipe")
            for name in SCHEDULES:
                worst = max(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)
                            for a, b in zip(outs[name], outs["team"]))
                print(f"{shape} {mode}: {name} against team, largest difference {worst:.1e}", flush=True)
            cases[(shape, mode)] = (inp, x, parts(inp, x, mode))
    samples = {}
    for round_ in range(args.rounds):
        for (shape, mode), (inp, x, recorded) in cases.items():
            for name in SCHEDULES:
                use(name)
                samples.setdefault((shape, mode, name), []).append(time_queued_ms(vjp_run(inp, x, mode), repeats=10))
            use("pipe")
            for name, run in recorded.items():
                samples.setdefault((shape, mode, name), []).append(time_queued_ms(run, repeats=10))
    print(f"\ncopy {bandwidth / 1e12:.2f} TB/s; the VJP alone; median of {args.rounds} interleaved rounds (min-max)")
    print_table(samples, bandwidth, "schedule", VJP_BYTES, "VJP")
    return 0


if __name__ == "__main__":
    cupy.cuda.Device().use()
    sys.exit(main())
