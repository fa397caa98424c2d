"""Time of a JAX training step of the dictionary form: the backward's contractions in
the project's kernels against the array form.

    python benchmarks/ste_jax_contractions.py                      # (64, 4, 40, 64, K = 16) and (16, 4, 40, 128, K = 32)
    python benchmarks/ste_jax_contractions.py --shapes 256,16,40,128,32

One step is ``jax.jit(jax.grad(loss))`` of ``pdscan.jax.scan_ste_dict`` with respect to
every input (w (B, H, L, K), one dictionary Q (H, K, N, N) per head broadcast over B,
d and b (B, H, L, N)), loss = sum |x|^2; complex64 states, float32 router and
dictionary, scatter mode, on JAX's default device.  "kernels": the default backend,
whose backward calls the fused grad_w / grad_Q contractions (Numba on the CPU, CUDA on
the GPU) through buffer_callback; "array form": the same backend with that call
removed, so the contractions run as jax.numpy (``pdscan.ste._dictionary_grads``), which
expands the rank-one factors K-fold.  Each variant runs in a fresh process; the time
is the median of ``--repeat`` steps after a compiling one, and the two must agree on
the gradient (printed as the relative difference of grad_Q).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def _one(variant, shape, repeat):
    import jax
    import jax.numpy as jnp
    import numpy as np

    import pdscan.jax
    from pdscan.adapters.jax import kernels

    if variant == "array form":
        del kernels.KernelBackend.dictionary_grads
    B, H, L, N, K = shape
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(B, H, L, K)), jnp.float32)
    Q = jnp.asarray(rng.random(size=(H, K, N, N)), jnp.float32)
    d = jnp.asarray(0.99 * np.exp(1j * rng.uniform(0, 0.1, size=(B, H, L, N))), jnp.complex64)
    b = jnp.asarray(rng.normal(size=(B, H, L, N)) + 1j * rng.normal(size=(B, H, L, N)), jnp.complex64)

    def loss(w, Q, d, b):
        return jnp.sum(jnp.abs(pdscan.jax.scan_ste_dict(w, Q, d, b)) ** 2)

    step = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))
    grads = jax.block_until_ready(step(w, Q, d, b))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        grads = jax.block_until_ready(step(w, Q, d, b))
        times.append(time.perf_counter() - start)
    return dict(ms=1e3 * statistics.median(times), grad_q=np.asarray(grads[1]).tolist(),
                device=str(jax.devices()[0]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="+", default=["64,4,40,64,16", "16,4,40,128,32"], help="B,H,L,N,K")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        variant, shape = args.child
        print(json.dumps(_one(variant, tuple(int(a) for a in shape.split(",")), args.repeat)))
        return
    import numpy as np

    print("| B, H, L, N, K | kernels ms | array form ms | array / kernels | grad_Q rel. diff |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for shape in args.shapes:
        runs = {}
        for variant in ("kernels", "array form"):
            out = subprocess.run([sys.executable, __file__, "--repeat", str(args.repeat), "--child", variant, shape],
                                 capture_output=True, text=True, check=True).stdout
            runs[variant] = json.loads(out.strip().splitlines()[-1])
        a, b = np.asarray(runs["kernels"]["grad_q"]), np.asarray(runs["array form"]["grad_q"])
        diff = float(np.abs(a - b).max() / np.abs(b).max())
        k, f = runs["kernels"]["ms"], runs["array form"]["ms"]
        print(f"| {shape.replace(',', ', ')} | {k:.1f} | {f:.1f} | {f / k:.2f} | {diff:.1e} |")
    print(f"device: {runs['kernels']['device']}")


if __name__ == "__main__":
    main()
