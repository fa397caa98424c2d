"""A short, fixed workload of the pipelined CUDA scan for compute-sanitizer.

Three sequences of 5003 steps, N = 64, complex64, cut into chunks of 33 steps (so the
summary kernel, the scan of the summaries and the replay all run) in tiles of 5
steps; forward and reverse, each checked against the NumPy reference.

    PDSCAN_CUDA_LINEINFO=1 compute-sanitizer --tool racecheck --racecheck-report hazard \\
        python benchmarks/sanitize_pipe.py
    compute-sanitizer --tool memcheck python benchmarks/sanitize_pipe.py --modes scatter,gather

--chunk 0: one unit per sequence (no chunking); --chunk -1: the launcher's own plan (with
--length 7683, 30 chunks a sequence, whose summaries' scan is cut into chunks again);
--plain-copies: plain shared-memory stores instead of cp.async (what racecheck can
order); --directions forward or reverse: one direction only; --lanes N (64 by default;
up to 32 runs one consumer warp); --dictionary K: the maps form with K maps; --vjp: the
VJP too (its carry through the same scan, writing grad_d; then the first step's
kernel), against the reference; --grad-d-apart: the VJP's grad_d from its element-wise
kernel instead.  Gather mode's chunk summaries follow paths (pdscan_pipe_chase.cuh);
PDSCAN_CUDA_PIPE_CHASE=0 runs them through the exchange instead.
docs/benchmarks.md has the results.
"""

from __future__ import annotations

import argparse

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunk", type=int, default=33, help="chunk length (0: no chunking, -1: by shape)")
    ap.add_argument("--tile", type=int, default=5)
    ap.add_argument("--length", type=int, default=5003)
    ap.add_argument("--modes", default="scatter")
    ap.add_argument("--plain-copies", action="store_true")
    ap.add_argument("--directions", default="forward,reverse")
    ap.add_argument("--lanes", type=int, default=64, help="N")
    ap.add_argument("--dictionary", type=int, default=0, help="K > 0: the maps form with K maps")
    ap.add_argument("--vjp", action="store_true", help="the VJP too")
    ap.add_argument("--grad-d-apart", action="store_true", help="the VJP's grad_d from the element-wise kernel")
    args = ap.parse_args(argv)
    directions = args.directions.split(",")
    if not set(directions) <= {"forward", "reverse"}:
        ap.error(f"--directions: expected forward, reverse or both, got {args.directions!r}")

    import cupy

    import pdscan
    from pdscan._problem import prepare
    from pdscan.backends import numpy_ref
    from pdscan.backends.cupy_cuda import _launch

    _launch.use_pipe = True
    _launch.force_chunk_len = None if args.chunk < 0 else args.chunk
    _launch.force_tile_len = args.tile
    _launch.vjp_fuse_grad_d = not args.grad_d_apart
    if args.plain_copies:
        _launch._grain = lambda *a: 0  # every copy as plain byte stores
    rng = np.random.default_rng(0)
    S, L, N, K = 3, args.length, args.lanes, args.dictionary
    maps = rng.integers(0, N, (S, K, N)).astype(np.int32) if K else None
    index = rng.integers(0, K, (S, L)).astype(np.int32) if K else rng.integers(0, N, (S, L, N)).astype(np.int32)
    d = (0.99 * np.exp(2j * np.pi * rng.random((S, L, N)))).astype(np.complex64)
    b = (rng.standard_normal((S, L, N)) + 1j * rng.standard_normal((S, L, N))).astype(np.complex64)
    x0 = rng.standard_normal((S, N)).astype(np.complex64)
    for mode in args.modes.split(","):
        for reverse in [direction == "reverse" for direction in directions]:
            p = prepare(cupy.asarray(index), cupy.asarray(d), cupy.asarray(b), cupy.asarray(x0),
                        maps=None if maps is None else cupy.asarray(maps), mode=mode, reverse=reverse)
            got = cupy.asnumpy(pdscan.backends.get("cuda").forward(p))
            want = numpy_ref.BACKEND.forward(prepare(index, d, b, x0, maps=maps, mode=mode, reverse=reverse))
            err = float(np.abs(got - want).max() / np.abs(want).max())
            print(f"{mode:8s} reverse={reverse!s:5s} max relative error {err:.2e}")
            assert err < 1e-4, "the pipelined scan disagrees with the reference"
            if args.vjp:
                grad_x = (rng.standard_normal(want.shape) + 1j * rng.standard_normal(want.shape)).astype(np.complex64)
                got = pdscan.backends.get("cuda").vjp(p, cupy.asarray(want), cupy.asarray(grad_x), conjugate=True)
                wants = numpy_ref.BACKEND.vjp(prepare(index, d, b, x0, maps=maps, mode=mode, reverse=reverse), want,
                                              grad_x, conjugate=True)
                err = max(float(np.abs(cupy.asnumpy(g) - w).max() / np.abs(w).max()) for g, w in zip(got, wants))
                print(f"{mode:8s} reverse={reverse!s:5s} VJP max relative error {err:.2e}")
                assert err < 1e-3, "the VJP disagrees with the reference"


if __name__ == "__main__":
    main()
