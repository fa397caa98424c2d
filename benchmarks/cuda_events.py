"""Timing with CUDA events, shared by the GPU benchmarks."""

from __future__ import annotations

import time

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


def time_queued_ms(run, repeats=20, warmup=3):
    """Median milliseconds of the device work of each of ``repeats`` calls of ``run``
    queued back to back (events around each call, one wait after the last).  The host's
    work for a call (its launch path) overlaps the device work of the calls before it,
    as in a model's step; where the host is the slower, its time shows here too."""
    import cupy

    for _ in range(warmup):
        run()
    events = [(cupy.cuda.Event(), cupy.cuda.Event()) for _ in range(repeats)]
    for start, stop in events:
        start.record()
        run()
        stop.record()
    events[-1][1].synchronize()
    return float(np.median([cupy.cuda.get_elapsed_time(start, stop) for start, stop in events]))


def host_us_per_call(run, calls):
    """Wall microseconds per call of ``calls`` calls of ``run`` issued with no wait
    between them (the stream absorbs their kernels): the host's own time of a call
    where the device keeps up.  The device is idle at the start and waited for after."""
    import cupy

    cupy.cuda.get_current_stream().synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        run()
    elapsed = time.perf_counter() - start
    cupy.cuda.get_current_stream().synchronize()
    return elapsed / calls * 1e6
