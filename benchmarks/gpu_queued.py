"""One call waited for against calls queued back to back, and the host's share, at the
shapes of benchmarks/gpu.py.

    python benchmarks/gpu_queued.py [--rounds 3]

For each shape and mode, pdscan forward and forward+backward (``gpu.pdscan_variants``):
"one call", CUDA events around a call that is waited for before the next (``time_ms``: the
host's launch path counts); "queued", events around each of calls issued back to back with
one wait after the last (``time_queued_ms``: the launch path overlaps the work before it);
"host", the wall time per call of 30 calls issued with no wait.  Medians over the rounds,
the shapes interleaved within a round.
"""

from __future__ import annotations

import argparse
import os
import sys

import cupy
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_events import host_us_per_call, time_ms, time_queued_ms  # noqa: E402
from gpu import FORWARD_BACKWARD_BYTES, FORWARD_BYTES, SHAPES, copy_bandwidth, make_inputs, pdscan_variants  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    bandwidth = copy_bandwidth()
    print(f"copy bandwidth {bandwidth / 1e12:.2f} TB/s", flush=True)
    samples = {}
    for _ in range(args.rounds):
        for S, L, N, K in SHAPES:
            inp = make_inputs(S, L, N, K)
            for mode in ("scatter", "gather"):
                for name, run in pdscan_variants(inp, mode).items():
                    bytes_per_element = FORWARD_BACKWARD_BYTES if "backward" in name else FORWARD_BYTES
                    row = samples.setdefault((S, L, N, K, mode, name.split()[-1]), dict(
                        floor=S * L * N * bytes_per_element / bandwidth * 1e3, call=[], queued=[], host=[]))
                    row["call"].append(time_ms(run))
                    row["queued"].append(time_queued_ms(run))
                    row["host"].append(host_us_per_call(run, 30))
            del inp
            cupy.get_default_memory_pool().free_all_blocks()
    print("| S, L, N, K | mode | call | one call ms (x floor) | queued ms (x floor) | host us a call |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for (S, L, N, K, mode, call), row in samples.items():
        one, queued, host = (float(np.median(row[k])) for k in ("call", "queued", "host"))
        print(f"| {S}, {L}, {N}, {K or '-'} | {mode} | {call} | {one:.3f} ({one / row['floor']:.2f}) | "
              f"{queued:.3f} ({queued / row['floor']:.2f}) | {host:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
