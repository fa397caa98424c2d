"""GPU benchmark of the CUDA backend against the copy-bandwidth floor and against
``jax.lax.associative_scan`` with the PD combine (what a user would write today).

One command, under 5 minutes on an H100: ``python benchmarks/gpu.py --json out.json``.
It measures the device-to-device copy bandwidth, and for each shape (complex64
values, int32 index, scatter mode; gather mode too with
``--variants pdscan,pdscan_gather,...``) the floor, pdscan forward and forward+backward,
and the associative scan; then a sweep of L at a fixed element count for the plot
(benchmarks/plot_gpu.py).  Variants are rows of a table of named runs, so other
front ends (the torch and JAX adapters) add theirs to VARIANTS.

Two times per run: the device time of a call among calls queued back to back (what a
model's step sees, the host's launch path hidden behind the work before it; this is
the time set against the floor), and "one call": events around a single call that is
waited for before the next, which adds the host's launch path (about 0.1 to 0.3 ms a
call here).  The associative scan waits for its result inside each call, so its two
times agree.

Bytes per element: forward 28 (index 4, d 8, b 8, x 8); forward+backward 72 (the
forward's 28, then index, d, x, grad_x read and grad_d, grad_b written).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import cupy  # noqa: E402
import numpy as np  # noqa: E402

import pdscan  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the other benchmark modules sit beside this one
from cuda_events import time_ms, time_queued_ms  # noqa: E402

SHAPES = [(256, 4096, 64, None), (8, 65536, 64, None), (64, 2048, 128, None), (256, 4096, 64, 8)]
FORWARD_BYTES, FORWARD_BACKWARD_BYTES = 28, 72


def copy_bandwidth():
    """Bytes read + written per second by a 2 GiB device-to-device copy."""
    a = cupy.ones(2**28, cupy.float64)
    b = cupy.empty_like(a)
    ms = time_ms(lambda: b.__setitem__(Ellipsis, a), repeats=10)
    return 2 * a.nbytes / (ms * 1e-3)


def make_inputs(S, L, N, K=None, seed=0):
    rng = cupy.random.default_rng(seed)
    shape = (S, L, N)
    mag = rng.uniform(0.9, 1.0, shape, dtype=cupy.float32)
    d = (mag * cupy.exp(2j * np.pi * rng.uniform(0, 1, shape, dtype=cupy.float32))).astype(cupy.complex64)

    def normal():
        return (rng.standard_normal(shape, dtype=cupy.float32)
                + 1j * rng.standard_normal(shape, dtype=cupy.float32)).astype(cupy.complex64)

    if K:
        index = rng.integers(0, K, (S, L), dtype=cupy.int32)
        maps = rng.integers(0, N, (S, K, N), dtype=cupy.int32)
    else:
        index, maps = rng.integers(0, N, shape, dtype=cupy.int32), None
    return dict(index=index, maps=maps, d=d, b=normal(), grad_x=normal())


def pdscan_variants(inp, mode="scatter"):
    """pdscan on CuPy arrays (no index check: the timed kernels only)."""
    index, maps, d, b, gx = (inp[k] for k in ("index", "maps", "d", "b", "grad_x"))

    def forward():
        return pdscan.scan(index, d, b, maps=maps, mode=mode, backend="cuda", check_index=False)

    def forward_backward():
        x = forward()
        return pdscan.scan_vjp(index, d, b, None, x, gx, maps=maps, mode=mode, backend="cuda", check_index=False)

    return {"pdscan forward": forward, "pdscan forward+backward": forward_backward}


def associative_scan_variants(inp, mode="scatter"):
    """The scan a user would write: jax.lax.associative_scan with the PD combine."""
    import jax
    import jax.numpy as jnp

    index, maps, d, b = (inp[k] for k in ("index", "maps", "d", "b"))
    if maps is None:
        sigma = index
    else:
        sigma = maps[cupy.arange(maps.shape[0])[:, None], index]
    sigma, d, b = (jnp.from_dlpack(a) for a in (sigma, d, b))

    def combine(earlier, later):  # scatter mode: A2 A1 = (s2[s1], d2[s1] d1), b = A2 b1 + b2
        s1, d1, b1 = earlier
        s2, d2, b2 = later
        s = jnp.take_along_axis(s2, s1, axis=-1)
        dd = jnp.take_along_axis(d2, s1, axis=-1) * d1
        n = b1.shape[-1]
        moved = jax.vmap(jax.vmap(lambda idx, v: jnp.zeros(n, v.dtype).at[idx].add(v)))(s2, d2 * b1)
        return s, dd, moved + b2

    @jax.jit
    def run(sigma, d, b):
        return jax.lax.associative_scan(combine, (sigma, d, b), axis=1)[2]

    return {"associative_scan forward": lambda: run(sigma, d, b).block_until_ready()}


#: named variant groups: name -> function(inputs) -> {row name: run}
VARIANTS = {
    "pdscan": pdscan_variants,
    "pdscan_gather": lambda inp: {f"{k} (gather)": run for k, run in pdscan_variants(inp, "gather").items()},
    "associative_scan": associative_scan_variants,
}

import gpu_torch  # noqa: E402 - imports torch only when its rows run

VARIANTS.update(gpu_torch.VARIANTS)


def measure(shape, bandwidth, variants, repeats):
    S, L, N, K = shape
    inp = make_inputs(S, L, N, K)
    elements = S * L * N
    row = dict(S=S, L=L, N=N, K=K, elements=elements,
               floor_forward_ms=elements * FORWARD_BYTES / bandwidth * 1e3,
               floor_forward_backward_ms=elements * FORWARD_BACKWARD_BYTES / bandwidth * 1e3, times_ms={},
               call_ms={})
    for group in variants:
        try:
            runs = VARIANTS[group](inp)
        except Exception as err:  # noqa: BLE001 - a missing framework skips its rows
            print(f"  {group}: skipped ({type(err).__name__}: {err})", flush=True)
            continue
        for name, run in runs.items():
            n = repeats if "associative" not in name else 5
            row["times_ms"][name] = time_queued_ms(run, repeats=n)
            row["call_ms"][name] = time_ms(run, repeats=n)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="gpu_benchmark.json")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--no-sweep", action="store_true")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    device = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    bandwidth = copy_bandwidth()
    print(f"{device}: copy bandwidth {bandwidth / 1e12:.2f} TB/s", flush=True)
    result = dict(device=device, copy_bandwidth=bandwidth, shapes=[], sweep=[])
    for shape in SHAPES:
        result["shapes"].append(measure(shape, bandwidth, variants, args.repeats))
        print(f"  done {shape}", flush=True)
    if not args.no_sweep:  # time against L at 2^25 elements, N = 64
        for L in (256, 1024, 4096, 16384, 65536, 262144):
            result["sweep"].append(measure((2**25 // (64 * L), L, 64, None), bandwidth, variants, args.repeats))
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print_tables(result)
    return 0


def print_tables(result):
    device, bandwidth = result["device"], result["copy_bandwidth"]
    print(f"\n{device}, copy {bandwidth / 1e12:.2f} TB/s; complex64, int32 index; ms (x floor); "
          "queued calls (one call waited for)")
    print("| S, L, N, K | mode | floor fwd | pdscan fwd | floor f+b | pdscan f+b | assoc. scan fwd |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for mode, suffix in (("scatter", ""), ("gather", " (gather)")):
        for r in result["shapes"]:
            if f"pdscan forward{suffix}" not in r["times_ms"]:
                continue
            cells = []
            for name, floor in ((f"pdscan forward{suffix}", r["floor_forward_ms"]),
                                (f"pdscan forward+backward{suffix}", r["floor_forward_backward_ms"])):
                t, call = r["times_ms"][name], r["call_ms"][name]
                cells += [f"{floor:.3f}", f"{t:.3f} ({t / floor:.2f}x; {call:.3f})"]
            assoc = r["times_ms"].get("associative_scan forward") if not suffix else None
            print(f"| {r['S']}, {r['L']}, {r['N']}, {r['K'] or '-'} | {mode} | {' | '.join(cells)} | "
                  f"{'-' if assoc is None else f'{assoc:.2f}'} |")


if __name__ == "__main__":
    sys.exit(main())
