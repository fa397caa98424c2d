"""Tuning run for the CUDA forward: each schedule and tile size at the benchmark
shapes, against the copy floor, in one table.

    python benchmarks/gpu_schedules.py [S,L,N[,K] ...] [--schedules "pipe 32K;team kernels"] [--modes gather]

PDSCAN_CUDA_DEFINES=... compiles kernel variants (PD_PIPE_PRODUCERS=3, say).
Rows: the pipelined forward at several tile budgets (PDSCAN_CUDA_PIPE_TILE_BYTES)
and blocks per multiprocessor (PDSCAN_CUDA_PIPE_BLOCKS_PER_SM: fewer sequences than
multiprocessors are cut into chunks of time, at least PIPE_MIN_CHUNK steps), and
the team kernels' schedule (one team per sequence, or three launches over chunks),
in scatter and gather mode.
"""

from __future__ import annotations

import argparse
import os
import sys

import cupy
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu import FORWARD_BYTES, SHAPES, copy_bandwidth, make_inputs, time_ms  # noqa: E402

import pdscan  # noqa: E402
from pdscan.backends.cupy_cuda import _launch  # noqa: E402

SCHEDULES = {
    "pipe 16K": dict(PIPE_TILE_BYTES=16 * 1024),
    "pipe 32K": dict(PIPE_TILE_BYTES=32 * 1024),
    "pipe 32K, 2/SM": dict(PIPE_TILE_BYTES=32 * 1024, PIPE_BLOCKS_PER_SM=2),
    "pipe 32K, 4/SM": dict(PIPE_TILE_BYTES=32 * 1024, PIPE_BLOCKS_PER_SM=4),
    "pipe 32K, 8/SM": dict(PIPE_TILE_BYTES=32 * 1024, PIPE_BLOCKS_PER_SM=8),
    "pipe 32K, 4/SM, 128 steps": dict(PIPE_TILE_BYTES=32 * 1024, PIPE_BLOCKS_PER_SM=4, PIPE_MIN_CHUNK=128),
    "team kernels": dict(use_pipe=False),
}
KNOBS = ("use_pipe", "PIPE_TILE_BYTES", "PIPE_BLOCKS_PER_SM", "PIPE_MIN_CHUNK", "force_chunk_len")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="*", help="S,L,N[,K] (default: the benchmark's)")
    parser.add_argument("--schedules", default=";".join(SCHEDULES),
                        help="names from SCHEDULES, separated by semicolons")
    parser.add_argument("--modes", default="scatter,gather")
    args = parser.parse_args(argv)
    shapes = [tuple(int(v) for v in a.split(",")) + (None,) * (4 - len(a.split(","))) for a in args.shapes] or SHAPES
    schedules = {name: SCHEDULES[name] for name in args.schedules.split(";")}
    bandwidth = copy_bandwidth()
    defaults = {k: getattr(_launch, k) for k in KNOBS}
    rows = []
    for S, L, N, K in shapes:
        inp = make_inputs(S, L, N, K)
        floor = S * L * N * FORWARD_BYTES / bandwidth * 1e3
        for mode in args.modes.split(","):
            for name, settings in schedules.items():
                for k, v in {**defaults, **settings}.items():
                    setattr(_launch, k, v)
                ms = time_ms(lambda: pdscan.scan(inp["index"], inp["d"], inp["b"], maps=inp["maps"], mode=mode,
                                                 backend="cuda", check_index=False), repeats=10)
                rows.append((f"{S}, {L}, {N}, {K or '-'}", mode, name, ms, ms / floor))
                print(*rows[-1], sep=" | ", flush=True)
        for k, v in defaults.items():
            setattr(_launch, k, v)
    print(f"\ncopy {bandwidth / 1e12:.2f} TB/s; defines: {os.environ.get('PDSCAN_CUDA_DEFINES', '')!r}")
    print("| S, L, N, K | mode | schedule | fwd ms | x floor |")
    print("| --- | --- | --- | ---: | ---: |")
    for shape, mode, name, ms, ratio in rows:
        print(f"| {shape} | {mode} | {name} | {ms:.3f} | {ratio:.2f} |")


if __name__ == "__main__":
    cupy.cuda.Device().use()
    np.random.seed(0)
    main(sys.argv[1:])
