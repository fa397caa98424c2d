"""Tuning run for the chunked CUDA scan and VJP: the chunk count rule
(``_launch.TEAMS_PER_SM`` teams per multiprocessor, chunks of at least
``_launch.MIN_CHUNK`` steps) at the benchmark shapes, forward and forward+backward,
scatter mode, against the copy floor.

    python benchmarks/gpu_chunks.py
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_events import time_queued_ms  # noqa: E402
from gpu import FORWARD_BYTES, SHAPES, copy_bandwidth, make_inputs, pdscan_variants  # noqa: E402

from pdscan.backends.cupy_cuda import _launch  # noqa: E402

#: (teams per multiprocessor, shortest chunk) pairs
SETTINGS = [(16, 64), (32, 64), (64, 64), (32, 32), (64, 32), (128, 32)]


def main():
    bandwidth = copy_bandwidth()
    defaults = (_launch.TEAMS_PER_SM, _launch.MIN_CHUNK)
    print(f"copy bandwidth {bandwidth / 1e12:.2f} TB/s; ms forward / forward+backward, scatter, complex64")
    print("| S, L, N, K | floor fwd | " + " | ".join(f"{t} teams, {c} steps" for t, c in SETTINGS) + " |")
    print("| --- | ---: |" + " ---: |" * len(SETTINGS))
    try:
        for S, L, N, K in SHAPES:
            inp = make_inputs(S, L, N, K)
            cells = []
            for _launch.TEAMS_PER_SM, _launch.MIN_CHUNK in SETTINGS:
                times = [time_queued_ms(run) for run in pdscan_variants(inp).values()]
                cells.append(" / ".join(f"{t:.2f}" for t in times))
            floor = S * L * N * FORWARD_BYTES / bandwidth * 1e3
            print(f"| {S}, {L}, {N}, {K or '–'} | {floor:.3f} | " + " | ".join(cells) + " |", flush=True)
            del inp
    finally:
        _launch.TEAMS_PER_SM, _launch.MIN_CHUNK = defaults


if __name__ == "__main__":
    main()
