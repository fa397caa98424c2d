"""A/B of CUDA kernel builds: the forward of each build, bitwise against the first, then
timed in interleaved rounds.

    git archive 1e213b9 pdscan/backends/cupy_cuda | tar -x -C /tmp/base
    python benchmarks/gpu_ab.py base=/tmp/base/pdscan/backends/cupy_cuda,head=pdscan/backends/cupy_cuda \\
        [--rounds 6] [--check] [--no-time]

A build is a directory of the CUDA backend's sources (the .cu/.cuh files and its
_launch.py); NAME=DIR:CW also sets the consumer warps of the pipelined forward.  One
process swaps the kernel sources (``_kernels.use_sources``) and the launcher's mirror
of the pipelined scan's shared-memory layout (``_pipe_rows`` and ``pipe_smem``, taken
from the build's own _launch.py) between builds, so every build runs on the same inputs
under the same drift of the machine (the interleaved rounds of gpu_schedules.py); the
rest of the launcher is this checkout's, so a build's kernels must take the arguments it
passes (pd_scan_pipe's from 1e213b9 on, which added its GRAD_D parameter).  --check: the outputs of every build on the
benchmark shapes and on odd cases (crowded rows that walk their source lists, permutations,
out-of-range lanes, N not a multiple of 32, reverse with x0) must equal the first
build's bit for bit.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import cupy
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu import SHAPES, copy_bandwidth, make_inputs  # noqa: E402
from gpu_schedules import interleaved, print_table  # noqa: E402

import pdscan  # noqa: E402
from pdscan.backends.cupy_cuda import _kernels, _launch  # noqa: E402

MODES = ("scatter", "gather")


class Build:
    def __init__(self, spec):
        self.name, _, rest = spec.partition("=")
        path, _, cw = rest.partition(":")
        self.here = Path(path).resolve()
        self.consumer_warps = int(cw) if cw else None
        # the build's launcher, imported beside the live one (its relative imports
        # resolve to this checkout's _kernels), for its shared-memory layout only
        module_name = f"pdscan.backends.cupy_cuda._launch_of_{self.name}"
        spec_ = importlib.util.spec_from_file_location(module_name, self.here / "_launch.py")
        self.launch = importlib.util.module_from_spec(spec_)
        sys.modules[module_name] = self.launch
        spec_.loader.exec_module(self.launch)

    def use(self):
        if _kernels.HERE != self.here:
            _kernels.use_sources(self.here)
        _launch.pipe_consumer_warps = self.launch.pipe_consumer_warps = self.consumer_warps
        _launch._pipe_rows, _launch.pipe_smem = self.launch._pipe_rows, self.launch.pipe_smem


def forward(inp, mode, reverse=False, x0=None):
    return pdscan.scan(inp["index"], inp["d"], inp["b"], maps=inp["maps"], mode=mode, backend="cuda",
                       check_index=False, reverse=reverse, x0=x0)


def odd_case(S, L, N, K=None, kind="random", seed=1):
    inp = make_inputs(S, L, N, K, seed=seed)
    if kind == "crowded":  # every lane on three rows: the walk of the source lists
        inp["index"] = (inp["index"] % 3).astype(cupy.int32)
    elif kind == "permutation":
        inp["index"] = cupy.argsort(cupy.random.default_rng(seed).random((S, L, N)), axis=-1).astype(cupy.int32)
    elif kind == "out of range":
        index = inp["index"].copy()
        index[:, ::7, 3] = N + 5
        inp["index"] = index
    return inp


def difference(ref, out):
    """How far ``out`` is from ``ref`` where they differ bit for bit ("" where not)."""
    unequal = np.count_nonzero((ref.view(np.uint8).reshape(ref.size, -1) != out.view(np.uint8).reshape(ref.size, -1))
                               .any(axis=1))
    if not unequal:
        return ""
    finite = np.isfinite(ref) & np.isfinite(out)
    scale = np.abs(ref[finite]).max(initial=0.0) or 1.0
    worst = np.abs(ref - out)[finite].max(initial=0.0) / scale
    return (f"{unequal} of {ref.size} values, largest difference {worst:.1e} of the largest value, "
            f"non-finite in the same places: {np.array_equal(np.isfinite(ref), np.isfinite(out))}")


def check(builds):
    cases = [(str(shape), make_inputs(*shape)) for shape in SHAPES]
    for args in [(3, 1003, 64, None, "random"), (3, 1003, 64, None, "crowded"), (3, 1003, 64, None, "permutation"),
                 (2, 777, 100, None, "random"), (5, 333, 17, None, "crowded"), (1, 5003, 128, None, "random"),
                 (4, 999, 64, 8, "random"), (2, 555, 64, None, "out of range"), (300, 130, 33, None, "random")]:
        cases.append((str(args), odd_case(*args)))
    first, differ = {}, 0
    for n, build in enumerate(builds):
        build.use()
        for label, inp in cases:
            for mode in MODES:
                for reverse in (False, True):
                    out = cupy.asnumpy(forward(inp, mode, reverse, inp["b"][:, 0] if reverse else None))
                    key = (label, mode, reverse)
                    if n == 0:
                        first[key] = out
                        continue
                    report = difference(first[key], out)
                    if report:
                        differ += 1
                        print(f"differs: {build.name} {label} {mode} reverse={reverse}: {report}")
    print(f"bitwise: {len(first)} cases, {differ} differ from {builds[0].name}", flush=True)
    return differ


def timing(builds, rounds):
    bandwidth = copy_bandwidth()
    inputs = {shape: make_inputs(*shape) for shape in SHAPES}
    samples = interleaved(inputs, MODES, {build.name: build.use for build in builds}, rounds)
    print(f"\ncopy {bandwidth / 1e12:.2f} TB/s; median of {rounds} interleaved rounds (min-max)")
    print_table(samples, bandwidth, "build")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builds", help="NAME=DIR[:CW],... (the first is the reference of --check)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--no-time", action="store_true")
    args = parser.parse_args(argv)
    builds = [Build(spec) for spec in args.builds.split(",")]
    differ = check(builds) if args.check else 0
    if not args.no_time:
        timing(builds, args.rounds)
    return 1 if differ else 0


if __name__ == "__main__":
    cupy.cuda.Device().use()
    sys.exit(main())
