"""Tuning run for the CUDA forward: each schedule and tile size at the benchmark
shapes, against the copy floor, in one table.

    python benchmarks/gpu_schedules.py            # PDSCAN_CUDA_DEFINES=... for kernel variants

Rows: the single-pass forward streaming whole sequences and with look-back tiles,
at several tile budgets (PDSCAN_CUDA_TILE_BYTES), and the three-launch chunked
scan, in scatter and gather mode.
"""

from __future__ import annotations

import os
import sys

import cupy
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu import FORWARD_BYTES, SHAPES, copy_bandwidth, make_inputs, time_ms  # noqa: E402

import pdscan  # noqa: E402
from pdscan.backends.cupy_cuda import _launch  # noqa: E402

SCHEDULES = {
    "stream 10K": dict(use_lookback=True, single_pass="stream", TILE_BYTES=10 * 1024),
    "stream 20K": dict(use_lookback=True, single_pass="stream", TILE_BYTES=20 * 1024),
    "stream 40K": dict(use_lookback=True, single_pass="stream", TILE_BYTES=40 * 1024),
    "lookback 10K": dict(use_lookback=True, single_pass="lookback", TILE_BYTES=10 * 1024),
    "lookback 20K": dict(use_lookback=True, single_pass="lookback", TILE_BYTES=20 * 1024),
    "lookback 40K": dict(use_lookback=True, single_pass="lookback", TILE_BYTES=40 * 1024),
    "chunks": dict(use_lookback=False),
}


def main(argv):
    """``argv``: shapes as S,L,N[,K] (default: the benchmark's)."""
    shapes = [tuple(int(v) for v in a.split(",")) + (None,) * (4 - len(a.split(","))) for a in argv] or SHAPES
    bandwidth = copy_bandwidth()
    defaults = {k: getattr(_launch, k) for k in ("use_lookback", "single_pass", "TILE_BYTES", "force_chunk_len")}
    rows = []
    for S, L, N, K in shapes:
        inp = make_inputs(S, L, N, K)
        floor = S * L * N * FORWARD_BYTES / bandwidth * 1e3
        for mode in ("scatter", "gather"):
            for name, settings in SCHEDULES.items():
                for k, v in {**defaults, **settings}.items():
                    setattr(_launch, k, v)
                ms = time_ms(lambda: pdscan.scan(inp["index"], inp["d"], inp["b"], maps=inp["maps"], mode=mode,
                                                 backend="cuda", check_index=False), repeats=10)
                rows.append((f"{S}, {L}, {N}, {K or '-'}", mode, name, ms, ms / floor))
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
