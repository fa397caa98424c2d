"""GPU benchmark of the JAX path against the raw CUDA backend.

The JAX path is ``pdscan.jax.scan`` under ``jax.jit``: the forward, and the forward
plus the backward (``jax.vjp`` of the scan, pulled back with a given cotangent).
The raw CUDA backend runs the same work on the same device arrays (shared through
DLPack, no copy) with ``pdscan.scan`` / ``pdscan.scan_vjp`` on CuPy arrays and no
index check, which is what the JAX path skips under jit as well.  The target is a
ratio of at most 1.15 at (S, L, N) = (256, 4096, 64), complex64 values, int32 index.

For benchmarks/gpu.py: ``jax_variants(...)`` and ``cuda_variants(...)`` return
{name: run} with ``run()`` doing one call and waiting for it; ``compare(...)``
times both and returns rows.  Run alone: ``python benchmarks/gpu_jax.py``; it also
times the forward behind other GPU work in one jit (``behind_other_work``), where the
call's host time is hidden.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# JAX takes 75% of the GPU at start by default, which would starve CuPy's pool
# (the raw CUDA backend and the other adapters in the same process); this only
# acts if JAX is not started yet
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

TARGET_RATIO = 1.15


def make_inputs(S, L, N, dtype="complex64", index_dtype="int32", seed=0):
    """Device inputs as JAX arrays: index (S, L, N), d with |d| in [0.9, 1], b, grad_x."""
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.PRNGKey(seed), 7)
    shape = (S, L, N)
    real = jnp.float32 if dtype == "complex64" else jnp.float64
    magnitude = jax.random.uniform(keys[0], shape, real, 0.9, 1.0)
    phase = jax.random.uniform(keys[1], shape, real, 0.0, 2 * jnp.pi)
    d = (magnitude * jnp.exp(1j * phase)).astype(dtype)

    def normal(key_re, key_im):
        return (jax.random.normal(key_re, shape, real) + 1j * jax.random.normal(key_im, shape, real)).astype(dtype)

    index = jax.random.randint(keys[2], shape, 0, N, dtype=index_dtype)
    b, grad_x = normal(keys[3], keys[4]), normal(keys[5], keys[6])
    return dict(index=index, d=d, b=b, grad_x=grad_x)


def jax_variants(inputs, mode="scatter"):
    """{name: run} for the JAX path under jit, over ``make_inputs``' arrays."""
    import jax

    import pdscan.jax

    index, d, b, grad_x = (inputs[k] for k in ("index", "d", "b", "grad_x"))

    @jax.jit
    def forward(index, d, b):
        return pdscan.jax.scan(index, d, b, mode=mode)

    @jax.jit
    def forward_backward(index, d, b, grad_x):
        x, pullback = jax.vjp(lambda d, b: pdscan.jax.scan(index, d, b, mode=mode), d, b)
        return x, pullback(grad_x)

    return {
        "jax forward": lambda: jax.block_until_ready(forward(index, d, b)),
        "jax forward+backward": lambda: jax.block_until_ready(forward_backward(index, d, b, grad_x)),
    }


def cuda_variants(inputs, mode="scatter"):
    """{name: run} for the raw CUDA backend on the same device memory (DLPack views)."""
    import cupy

    import pdscan

    index, d, b, grad_x = (cupy.from_dlpack(inputs[k]) for k in ("index", "d", "b", "grad_x"))
    stream = cupy.cuda.get_current_stream()

    def forward():
        x = pdscan.scan(index, d, b, mode=mode, backend="cuda", check_index=False)
        stream.synchronize()
        return x

    def forward_backward():
        x = pdscan.scan(index, d, b, mode=mode, backend="cuda", check_index=False)
        grads = pdscan.scan_vjp(index, d, b, None, x, grad_x, mode=mode, backend="cuda", check_index=False)
        stream.synchronize()
        return x, grads

    return {"cuda forward": forward, "cuda forward+backward": forward_backward}


def time_run(run, repeats=20, warmup=3):
    """Median seconds of one call (each call waits for its result)."""
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return samples[len(samples) // 2]


def check_agreement(inputs, mode="scatter"):
    """Largest relative difference between the JAX path and the raw CUDA backend."""
    import numpy as np

    jax_out = jax_variants(inputs, mode)["jax forward+backward"]()
    cuda_out = cuda_variants(inputs, mode)["cuda forward+backward"]()
    pairs = [(jax_out[0], cuda_out[0]), (jax_out[1][0], cuda_out[1][0]), (jax_out[1][1], cuda_out[1][1])]
    worst = 0.0
    for from_jax, from_cuda in pairs:
        a, w = np.asarray(from_jax), from_cuda.get()
        worst = max(worst, float(np.linalg.norm((a - w).ravel()) / max(np.linalg.norm(w.ravel()), 1e-30)))
    return worst


def compare(S=256, L=4096, N=64, dtype="complex64", mode="scatter", repeats=20):
    """Rows (name, seconds, ratio to the CUDA backend, ok) for forward and forward+backward."""
    inputs = make_inputs(S, L, N, dtype)
    seconds = {}
    for variants in (cuda_variants(inputs, mode), jax_variants(inputs, mode)):
        for name, run in variants.items():
            seconds[name] = time_run(run, repeats)
    rows = []
    for part in ("forward", "forward+backward"):
        raw, through_jax = seconds[f"cuda {part}"], seconds[f"jax {part}"]
        rows.append((f"cuda {part}", raw, 1.0, True))
        ratio = through_jax / raw
        rows.append((f"jax {part}", through_jax, ratio, ratio <= TARGET_RATIO))
    return rows


def behind_other_work(inputs, mode="scatter", repeats=20):
    """(other work alone, the raw scan, the two in one jit) in seconds: the JAX scan
    jitted after about 10 ms of matrix products whose result it waits for.  XLA calls
    the scan's host code while the GPU runs what was queued before it, so what the
    scan adds there is the kernels' time without the call's host time."""
    import jax
    import jax.numpy as jnp

    import pdscan.jax

    index, d, b = (inputs[k] for k in ("index", "d", "b"))
    m = jax.random.normal(jax.random.PRNGKey(1), (8192, 8192), jnp.float32)

    def other(m):
        for _ in range(3):
            m = jnp.tanh(m @ m * 1e-4)
        return m

    other_alone = jax.jit(other)

    @jax.jit
    def other_then_scan(m, index, d, b):
        done = other(m)
        # the scan waits for the products (a factor of exactly 1 that reads their result)
        return done, pdscan.jax.scan(index, d, b * (1 + 0 * done[0, 0]), mode=mode)

    raw = cuda_variants(inputs, mode)["cuda forward"]
    return (time_run(lambda: jax.block_until_ready(other_alone(m)), repeats), time_run(raw, repeats),
            time_run(lambda: jax.block_until_ready(other_then_scan(m, index, d, b)), repeats))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256,4096,64", help="S,L,N")
    parser.add_argument("--dtype", default="complex64")
    parser.add_argument("--mode", default="scatter")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    S, L, N = (int(v) for v in args.size.split(","))
    import jax

    print(f"JAX {jax.__version__} on {jax.devices()[0].device_kind}; (S, L, N) = ({S}, {L}, {N}) {args.dtype} "
          f"index int32, mode {args.mode}", flush=True)
    error = check_agreement(make_inputs(min(S, 8), min(L, 513), N, args.dtype), args.mode)
    print(f"JAX path vs CUDA backend, max rel. difference: {error:.2e}")
    rows = compare(S, L, N, args.dtype, args.mode, args.repeats)
    print(f"{'variant':<24} {'ms':>9} {'ratio':>7}  target <= {TARGET_RATIO}")
    for name, seconds, ratio, ok in rows:
        print(f"{name:<24} {seconds * 1e3:>9.3f} {ratio:>7.3f}  {'ok' if ok else 'SLOW'}")
    other, raw, both = behind_other_work(make_inputs(S, L, N, args.dtype), args.mode, args.repeats)
    print(f"behind {other * 1e3:.3f} ms of other GPU work in the same jit, the JAX forward adds "
          f"{(both - other) * 1e3:.3f} ms (the raw forward alone: {raw * 1e3:.3f} ms)")
    tolerance = 1e-5 if args.dtype == "complex64" else 1e-12
    return 0 if error <= tolerance and all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
