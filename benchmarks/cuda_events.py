"""Timing with CUDA events, shared by the GPU benchmarks."""

from __future__ import annotations

import numpy as np


def time_ms(run, repeats=20, warmup=3):
    """Median milliseconds of ``repeats`` calls of ``run``, timed with CUDA events on
    CuPy's current stream: the host work before the first launch counts."""
    import cupy

    for _ in range(warmup):
        run()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    samples = []
    for _ in range(repeats):
        start.record()
        run()
        stop.record()
        stop.synchronize()
        samples.append(cupy.cuda.get_elapsed_time(start, stop))
    return float(np.median(samples))
