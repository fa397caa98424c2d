"""CPU benchmark of the Numba backend against the memory-bandwidth floor.

    python benchmarks/cpu.py [--repeat 7] [--json out.json]

complex64, scatter mode, int32 index.  Bytes: each input read once and each output
written once.  Forward: index 4 + d 8 + b 8 + x 8 = 28 B per element.  Backward
(the VJP alone): index 4 + d 8 + x 8 + grad_x 8 read, grad_d 8 + grad_b 8 written
= 44 B per element; forward+backward counts both, 72 B.  The floor divides the
bytes by the copy bandwidth measured here, in this run (a NumPy copy of a 256 MiB
buffer, bytes read plus written).  Times are medians after a warm-up that also
compiles.  The NumPy reference is timed on the same shapes (fewer repeats).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from pdscan import _problem
from pdscan.backends import get, numba_cpu

SHAPES = [(64, 2048, 64), (1, 131072, 64)]
FORWARD_BYTES = 4 + 8 + 8 + 8
BACKWARD_BYTES = 4 + 8 + 8 + 8 + 8 + 8


def median_time(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def copy_bandwidth(repeat):
    src = np.random.default_rng(0).random(256 * 2**20 // 8)
    dst = np.empty_like(src)
    return 2 * src.nbytes / median_time(lambda: np.copyto(dst, src), repeat)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import numba

    bandwidth = copy_bandwidth(args.repeat)
    numba_backend, reference = get("numba"), get("numpy")
    rows = []
    rng = np.random.default_rng(0)
    for S, L, N in SHAPES:
        index = rng.integers(0, N, size=(S, L, N), dtype=np.int32)
        d = (rng.uniform(0.9, 1.0, (S, L, N)) * np.exp(2j * np.pi * rng.uniform(size=(S, L, N)))).astype(np.complex64)
        b = (rng.normal(size=(S, L, N)) + 1j * rng.normal(size=(S, L, N))).astype(np.complex64)
        p = _problem.prepare(index, d, b, check_index=False)
        x = np.empty((S, L, N), np.complex64)
        grad_x = np.ones_like(x)
        numba_backend.forward(p, out=x)
        elements = S * L * N
        fwd = median_time(lambda: numba_backend.forward(p, out=x), args.repeat)
        bwd = median_time(lambda: numba_backend.vjp(p, x, grad_x), args.repeat)
        ref_fwd = median_time(lambda: reference.forward(p), max(1, args.repeat // 3))
        ref_bwd = median_time(lambda: reference.vjp(p, x, grad_x), max(1, args.repeat // 3))
        check = np.abs(numba_backend.forward(p) - reference.forward(p)).max() / np.abs(x).max()
        floor_f = elements * FORWARD_BYTES / bandwidth
        floor_b = elements * BACKWARD_BYTES / bandwidth
        rows.append(dict(shape=(S, L, N), forward_ms=fwd * 1e3, forward_floor_ms=floor_f * 1e3,
                         forward_ratio=fwd / floor_f, backward_ms=bwd * 1e3, backward_floor_ms=floor_b * 1e3,
                         backward_ratio=bwd / floor_b, fwd_bwd_ms=(fwd + bwd) * 1e3,
                         fwd_bwd_ratio=(fwd + bwd) / (floor_f + floor_b),
                         reference_forward_ms=ref_fwd * 1e3, reference_fwd_bwd_ms=(ref_fwd + ref_bwd) * 1e3,
                         speedup_forward=ref_fwd / fwd, speedup_fwd_bwd=(ref_fwd + ref_bwd) / (fwd + bwd),
                         schedule="/".join("seq" if numba_cpu.plan(S, L, k) is None else "chunks" for k in ("forward", "vjp")),
                         max_rel_diff=float(check)))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{numba.get_num_threads()} numba threads ({numba.threading_layer()} layer), load average {load:.1f}, "
          f"copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write); complex64, scatter, int32 index")
    head = (f"{'S, L, N':<16} {'fwd/bwd sched':<14} {'fwd ms':>7} {'floor':>6} {'ratio':>6} {'bwd ms':>7} {'floor':>6} "
            f"{'ratio':>6} {'f+b ms':>7} {'ratio':>6} {'ref fwd':>8} {'ref f+b':>8} {'x fwd':>6} {'x f+b':>6}")
    print(head)
    for r in rows:
        print(f"{str(r['shape']):<16} {r['schedule']:<14} {r['forward_ms']:>7.1f} {r['forward_floor_ms']:>6.1f} "
              f"{r['forward_ratio']:>6.2f} {r['backward_ms']:>7.1f} {r['backward_floor_ms']:>6.1f} "
              f"{r['backward_ratio']:>6.2f} {r['fwd_bwd_ms']:>7.1f} {r['fwd_bwd_ratio']:>6.2f} "
              f"{r['reference_forward_ms']:>8.0f} {r['reference_fwd_bwd_ms']:>8.0f} {r['speedup_forward']:>6.1f} "
              f"{r['speedup_fwd_bwd']:>6.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(bandwidth=bandwidth, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
