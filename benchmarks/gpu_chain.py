"""The scan of chunk summaries cut into chunks of its own, against one step per summary:
forward and VJP times at shapes cut into chunks of time, both modes, and how far each
setting's forward is from a complex128 run.

    python benchmarks/gpu_chain.py [S,L,N ...] [--settings "not cut;0.35;0.7"] [--rounds 6]
                                   [--add "NAME:KNOB=VALUE,KNOB=VALUE"] [--no-vjp]

A setting is a set of the launcher's knobs (``_launch``), named in SETTINGS or added with
--add: "not cut" never cuts the summaries' scan (``CHAIN_MIN_STEPS = 0``), a number cuts
it into chunks of about that number times sqrt(C) steps (``CHAIN_CHUNK_SCALE``).  A knob
named PD_... is a kernel define (``_kernels.set_defines``), e.g. PD_PIPE_STAGES=4.  A
shape S,L,N,K is the dictionary form.  The
settings are timed in interleaved rounds (the median and min-max of the rounds), so they
share the machine's drift.  Error: the largest difference from the complex128 forward
(on the same inputs, not cut), over the largest value.
"""

from __future__ import annotations

import argparse
import os
import sys

import cupy
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_events import time_queued_ms  # noqa: E402
from gpu import copy_bandwidth, make_inputs  # noqa: E402

import pdscan  # noqa: E402
from pdscan.backends.cupy_cuda import _kernels, _launch  # noqa: E402

SHAPES = [(8, 65536, 64), (64, 2048, 128), (2, 262144, 64), (1, 1048576, 64), (4, 65536, 256)]
FORWARD_BYTES, VJP_BYTES = 28, 44


SETTINGS = {"not cut": dict(CHAIN_MIN_STEPS=0)}
SETTINGS.update({f"{scale:g}": dict(CHAIN_CHUNK_SCALE=scale) for scale in (0.25, 0.35, 0.5, 0.7, 1.0, 1.4)})
KNOBS = {k: getattr(_launch, k) for k in ("CHAIN_MIN_STEPS", "CHAIN_CHUNK_SCALE", "TEAMS_PER_SM", "MIN_CHUNK",
                                          "PIPE_BLOCKS_PER_SM", "PIPE_MIN_CHUNK", "PIPE_CUT_BELOW",
                                          "deterministic", "pipe_chase", "pipe_consumer_warps",
                                          "pipe_fold_chain")}
DEFINES = dict(_kernels.DEFINES)


def use(settings):
    defines = dict(DEFINES)
    for k, v in {**KNOBS, **settings}.items():
        if k.startswith("PD_"):
            defines[k] = v
            continue
        if k == "pipe_consumer_warps":  # a count, or None (0) for the default
            value = None if str(v) in ("", "0", "None") else int(v)
        elif isinstance(KNOBS[k], bool):
            value = str(v) in ("1", "True", "true")
        else:
            value = type(KNOBS[k])(v)
        setattr(_launch, k, value)
    if defines != _kernels.DEFINES:
        _kernels.set_defines(defines)


def runs(inp, mode):
    index, maps, d, b, gx = (inp[k] for k in ("index", "maps", "d", "b", "grad_x"))

    def forward(dtype=None):
        dd, bb = (d, b) if dtype is None else (d.astype(dtype), b.astype(dtype))
        return pdscan.scan(index, dd, bb, maps=maps, mode=mode, backend="cuda", check_index=False)

    x = forward()

    def vjp():
        return pdscan.scan_vjp(index, d, b, None, x, gx, maps=maps, mode=mode, backend="cuda", check_index=False)

    return forward, vjp


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="*", help="S,L,N (default: the script's)")
    parser.add_argument("--settings", default="not cut;0.35;0.5;0.7")
    parser.add_argument("--add", action="append", default=[], help="NAME:KNOB=VALUE,...")
    parser.add_argument("--modes", default="scatter,gather")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--no-vjp", action="store_true", help="time the forward only")
    args = parser.parse_args(argv)
    shapes = [tuple(int(v) for v in a.split(",")) for a in args.shapes] or SHAPES
    for spec in args.add:
        name, _, knobs = spec.partition(":")
        SETTINGS[name] = dict(kv.split("=") for kv in knobs.split(","))
    settings = {name: SETTINGS[name] for name in args.settings.split(";") + [s.partition(":")[0] for s in args.add]}
    modes = args.modes.split(",")
    bandwidth = copy_bandwidth()
    inputs = {shape: make_inputs(*shape) for shape in shapes}
    error, samples = {}, {}
    for shape, inp in inputs.items():
        for mode in modes:
            use(SETTINGS["not cut"])
            forward, _ = runs(inp, mode)
            exact = cupy.asnumpy(forward(cupy.complex128))
            scale_of_values = np.abs(exact).max()
            for name, setting in settings.items():
                use(setting)
                got = cupy.asnumpy(forward()).astype(np.complex128)
                error[shape, mode, name] = np.abs(got - exact).max() / scale_of_values
    for round_ in range(args.rounds):
        for shape, inp in inputs.items():
            for mode in modes:
                for name, setting in settings.items():
                    use(setting)
                    forward, vjp = runs(inp, mode)
                    for run_name, run in (("forward", forward), ("vjp", vjp))[:1 if args.no_vjp else 2]:
                        samples.setdefault((shape, mode, name, run_name), []).append(time_queued_ms(run, repeats=10))
        print(f"round {round_} done", flush=True)
    use({})
    print(f"\ncopy {bandwidth / 1e12:.2f} TB/s; median of {args.rounds} interleaved rounds (min-max); "
          f"x floor: forward {FORWARD_BYTES} B, VJP {VJP_BYTES} B an element")
    print("| S, L, N | mode | setting | forward ms | x floor | VJP ms | x floor | fwd error |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for shape in inputs:
        elements = int(np.prod(shape[:3]))
        for mode in modes:
            for name in settings:
                cells = []
                for run_name, nbytes in (("forward", FORWARD_BYTES), ("vjp", VJP_BYTES)):
                    ms = samples.get((shape, mode, name, run_name), [float("nan")])
                    med = float(np.median(ms))
                    cells.append(f"{med:.3f} ({min(ms):.3f}-{max(ms):.3f}) | "
                                 f"{med / (elements * nbytes / bandwidth * 1e3):.2f}")
                print(f"| {', '.join(map(str, shape))} | {mode} | {name} | {' | '.join(cells)} | "
                      f"{error[shape, mode, name]:.1e} |")
    return 0


if __name__ == "__main__":
    cupy.cuda.Device().use()
    sys.exit(main())
