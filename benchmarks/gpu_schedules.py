"""Tuning run for the CUDA forward: each schedule and tile size at the benchmark
shapes, against the copy floor, in one table.

    python benchmarks/gpu_schedules.py [S,L,N[,K] ...] [--schedules "pipe 32K;team kernels"] [--modes gather]
                                       [--rounds 5]

Rows: the pipelined forward at several tile budgets (PDSCAN_CUDA_PIPE_TILE_BYTES),
blocks per multiprocessor (PDSCAN_CUDA_PIPE_BLOCKS_PER_SM: fewer sequences than
PIPE_CUT_BELOW of the multiprocessors are cut into chunks of time, at least PIPE_MIN_CHUNK
steps), consumer
and producer warps (the producers a compile-time define, PD_PIPE_PRODUCERS), the slots of
the ring (PD_PIPE_STAGES, a define too), and the team kernels' schedule (one team per
sequence, or three launches over chunks), in scatter and gather mode.  With --rounds R
every schedule is timed R times, the rounds interleaved, and the table gives the median
round (the spread between separate runs on one machine reaches 15 %; interleaving puts
the variants under the same drift).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import cupy
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_events import time_queued_ms  # noqa: E402
from gpu import FORWARD_BYTES, SHAPES, copy_bandwidth, make_inputs, pdscan_variants  # noqa: E402

from pdscan.backends.cupy_cuda import _kernels, _launch  # noqa: E402

SCHEDULES = {
    "pipe 16K": dict(PIPE_TILE_BYTES=16 * 1024),
    "pipe 32K": dict(PIPE_TILE_BYTES=32 * 1024),
    "pipe 32K, 2/SM": dict(PIPE_TILE_BYTES=32 * 1024, PIPE_BLOCKS_PER_SM=2),
    "pipe 32K, 4/SM": dict(PIPE_TILE_BYTES=32 * 1024, PIPE_BLOCKS_PER_SM=4),
    "pipe 32K, 3/SM": dict(PIPE_TILE_BYTES=32 * 1024, PIPE_BLOCKS_PER_SM=3),
    "pipe 32K, 6/SM": dict(PIPE_TILE_BYTES=32 * 1024, PIPE_BLOCKS_PER_SM=6),
    "pipe 32K, 8/SM": dict(PIPE_TILE_BYTES=32 * 1024, PIPE_BLOCKS_PER_SM=8),
    "pipe 32K, 4/SM, 128 steps": dict(PIPE_TILE_BYTES=32 * 1024, PIPE_BLOCKS_PER_SM=4, PIPE_MIN_CHUNK=128),
    "pipe 32K, 8/SM, 128 steps": dict(PIPE_TILE_BYTES=32 * 1024, PIPE_BLOCKS_PER_SM=8, PIPE_MIN_CHUNK=128),
    "pipe 32K, 4/SM, 512 steps": dict(PIPE_TILE_BYTES=32 * 1024, PIPE_BLOCKS_PER_SM=4, PIPE_MIN_CHUNK=512),
    # producers x consumer warps (the default: 3 producers; 1 consumer warp up to N = 32, 2 beyond)
    "pipe, 2P 1C": dict(producers=2, pipe_consumer_warps=1),
    "pipe, 2P 2C": dict(producers=2, pipe_consumer_warps=2),
    "pipe, 2P 4C": dict(producers=2, pipe_consumer_warps=4),
    "pipe, 3P 1C": dict(producers=3, pipe_consumer_warps=1),
    "pipe, 3P 2C": dict(producers=3, pipe_consumer_warps=2),
    "pipe, 3P 4C": dict(producers=3, pipe_consumer_warps=4),
    # a ring of 4 slots instead of 6 (PD_PIPE_STAGES): longer tiles in the same shared memory
    "pipe, 4 slots, 2P": dict(stages=4, producers=2),
    "pipe, 4 slots, 2P, 32K, 3/SM": dict(stages=4, producers=2, PIPE_BLOCKS_PER_SM=3),
    "team kernels": dict(use_pipe=False),
}
KNOBS = ("use_pipe", "PIPE_TILE_BYTES", "PIPE_BLOCKS_PER_SM", "PIPE_MIN_CHUNK", "force_chunk_len",
         "pipe_consumer_warps")


def apply(settings, defaults, base_defines):
    """Set the launcher's knobs (and the producers' and slots' defines, recompiling) for
    one row."""
    settings = dict(settings)
    producers = settings.pop("producers", None)
    stages = settings.pop("stages", None)
    defines = dict(base_defines)
    if producers is not None:
        defines["PD_PIPE_PRODUCERS"] = str(producers)
    if stages is not None:
        defines["PD_PIPE_STAGES"] = str(stages)
    if defines != _kernels.DEFINES:
        _kernels.set_defines(defines)
    for k, v in {**defaults, **settings}.items():
        setattr(_launch, k, v)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="*", help="S,L,N[,K] (default: the benchmark's)")
    parser.add_argument("--schedules", default=";".join(SCHEDULES),
                        help="names from SCHEDULES, separated by semicolons")
    parser.add_argument("--modes", default="scatter,gather")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    shapes = [tuple(int(v) for v in a.split(",")) + (None,) * (4 - len(a.split(","))) for a in args.shapes] or SHAPES
    schedules = {name: SCHEDULES[name] for name in args.schedules.split(";")}
    bandwidth = copy_bandwidth()
    defaults = {k: getattr(_launch, k) for k in KNOBS}
    base_defines = dict(_kernels.DEFINES)
    inputs = {shape: make_inputs(*shape) for shape in shapes}
    rows = {name: functools.partial(apply, settings, defaults, base_defines) for name, settings in schedules.items()}
    samples = interleaved(inputs, args.modes.split(","), rows, args.rounds)
    apply({}, defaults, base_defines)
    print(f"\ncopy {bandwidth / 1e12:.2f} TB/s; defines: {os.environ.get('PDSCAN_CUDA_DEFINES', '')!r}; "
          f"median of {args.rounds} interleaved rounds (min-max)")
    print_table(samples, bandwidth, "schedule")


def interleaved(inputs, modes, variants, rounds):
    """{(shape, mode, name): forward ms of each round}: every variant (name: a function
    that sets it up) timed once a round at every shape and mode, the rounds interleaved
    so that the variants share the machine's drift.  Device time of calls queued back to
    back (``time_queued_ms``): the host's launch path, the same for every variant, stays
    out of the comparison."""
    samples = {}
    for round_ in range(rounds):
        for (S, L, N, K), inp in inputs.items():
            for mode in modes:
                forward = pdscan_variants(inp, mode)["pdscan forward"]
                for name, set_up in variants.items():
                    set_up()
                    ms = time_queued_ms(forward, repeats=10)
                    samples.setdefault(((S, L, N, K), mode, name), []).append(ms)
                    print(round_, S, L, N, K, mode, name, f"{ms:.3f}", sep=" | ", flush=True)
    return samples


def print_table(samples, bandwidth, variant="variant", nbytes=FORWARD_BYTES, timed="fwd"):
    """The median of each cell's rounds (their min-max) and its ratio to the floor of
    ``nbytes`` per element."""
    print(f"| S, L, N, K | mode | {variant} | {timed} ms | x floor |")
    print("| --- | --- | --- | ---: | ---: |")
    for ((S, L, N, K), mode, name), ms in samples.items():
        floor = S * L * N * nbytes / bandwidth * 1e3
        med = float(np.median(ms))
        spread = f" ({min(ms):.3f}-{max(ms):.3f})" if len(ms) > 1 else ""
        print(f"| {S}, {L}, {N}, {K or '-'} | {mode} | {name} | {med:.3f}{spread} | {med / floor:.2f} |")


if __name__ == "__main__":
    cupy.cuda.Device().use()
    np.random.seed(0)
    main(sys.argv[1:])
