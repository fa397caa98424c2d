"""GPU benchmark of the PyTorch op against the raw CUDA backend.

The torch rows are ``pdscan.torch.scan`` on CUDA tensors: the forward (inputs
without and with ``requires_grad``) and the forward plus the backward
(``torch.autograd.grad`` of the states, pulled back with a given cotangent, so
nothing accumulates into ``.grad``).  The raw rows run the same work on the same
device memory (shared through DLPack, no copy) with ``pdscan.scan`` /
``pdscan.scan_vjp`` on CuPy arrays.  Both skip the index check (``check_index=
False``), which reads values back.  The target: the op within 10% of the raw
backend at (S, L, N) = (256, 4096, 64), complex64 values, int32 index.

For benchmarks/gpu.py: ``torch_variants(inputs, mode)`` takes its ``make_inputs``
dict (CuPy arrays: index, maps, d, b, grad_x) and returns {row name: run} in the
shape of its VARIANTS table (``VARIANTS`` here holds the entry to merge).  Run
alone: ``python benchmarks/gpu_torch.py``; exit status 1 when a row is over target
or the two paths disagree.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from cuda_events import time_ms

TARGET_RATIO = 1.10


def make_inputs(S, L, N, K=None, dtype="complex64", seed=0):
    """CuPy inputs: index int32 (S, L, N) (or selectors (S, L) into maps (S, K, N)),
    d with |d| in [0.9, 1], b and grad_x normal."""
    import cupy

    rng = cupy.random.default_rng(seed)
    shape = (S, L, N)
    real = cupy.float32 if dtype == "complex64" else cupy.float64
    d = (rng.uniform(0.9, 1.0, shape, dtype=real) * cupy.exp(2j * np.pi * rng.uniform(0, 1, shape, dtype=real)))

    def normal():
        return rng.standard_normal(shape, dtype=real) + 1j * rng.standard_normal(shape, dtype=real)

    if K:
        index, maps = rng.integers(0, K, (S, L), dtype=cupy.int32), rng.integers(0, N, (S, K, N), dtype=cupy.int32)
    else:
        index, maps = rng.integers(0, N, shape, dtype=cupy.int32), None
    return dict(index=index, maps=maps, d=d.astype(dtype), b=normal().astype(dtype), grad_x=normal().astype(dtype))


def _on_cupy_stream():
    """A context that runs torch on CuPy's current stream, where the callers' timing
    events are recorded (nothing to do in the usual case: both use the default)."""
    import contextlib

    import cupy
    import torch

    pointer = cupy.cuda.get_current_stream().ptr
    if pointer == torch.cuda.current_stream().cuda_stream:
        return contextlib.nullcontext
    stream = torch.cuda.ExternalStream(pointer)
    return lambda: torch.cuda.stream(stream)


def torch_variants(inputs, mode="scatter"):
    """{row name: run} for ``pdscan.torch.scan`` on the inputs' memory (DLPack views)."""
    import torch

    import pdscan.torch

    def view(name):
        a = inputs.get(name)
        return None if a is None else torch.from_dlpack(a)

    index, maps, d, b, grad_x = (view(k) for k in ("index", "maps", "d", "b", "grad_x"))
    d_leaf, b_leaf = view("d").requires_grad_(), view("b").requires_grad_()
    on_stream = _on_cupy_stream()

    def forward():
        with on_stream():
            return pdscan.torch.scan(index, d, b, maps=maps, mode=mode, check_index=False)

    def forward_recorded():
        with on_stream():
            return pdscan.torch.scan(index, d_leaf, b_leaf, maps=maps, mode=mode, check_index=False)

    def forward_backward():
        with on_stream():
            x = pdscan.torch.scan(index, d_leaf, b_leaf, maps=maps, mode=mode, check_index=False)
            return x.detach(), torch.autograd.grad(x, (d_leaf, b_leaf), grad_x)

    return {"torch forward": forward, "torch forward (requires_grad)": forward_recorded,
            "torch forward+backward": forward_backward}


def cuda_variants(inputs, mode="scatter"):
    """{row name: run} for the raw CUDA backend on CuPy arrays."""
    import pdscan

    index, maps, d, b, grad_x = (inputs.get(k) for k in ("index", "maps", "d", "b", "grad_x"))

    def forward():
        return pdscan.scan(index, d, b, maps=maps, mode=mode, backend="cuda", check_index=False)

    def forward_backward():
        x = forward()
        return x, pdscan.scan_vjp(index, d, b, None, x, grad_x, maps=maps, mode=mode, backend="cuda",
                                  check_index=False)

    return {"cuda forward": forward, "cuda forward+backward": forward_backward}


#: the entry for benchmarks/gpu.py's VARIANTS table
VARIANTS = {"torch": torch_variants}


def check_agreement(inputs, mode="scatter"):
    """Largest relative difference between the torch op and the raw backend over
    the states, grad_d and grad_b (the raw VJP in PyTorch's convention,
    ``conjugate=True``, which is what autograd computes)."""
    import cupy

    import pdscan

    x_torch, (grad_d, grad_b) = torch_variants(inputs, mode)["torch forward+backward"]()
    index, maps, d, b, grad_x = (inputs.get(k) for k in ("index", "maps", "d", "b", "grad_x"))
    x = pdscan.scan(index, d, b, maps=maps, mode=mode, backend="cuda")
    want = (x,) + pdscan.scan_vjp(index, d, b, None, x, grad_x, maps=maps, mode=mode, backend="cuda",
                                  conjugate=True)[:2]
    worst = 0.0
    for got, ref in zip((x_torch, grad_d, grad_b), want):
        got = cupy.from_dlpack(got.detach())
        worst = max(worst, float(cupy.linalg.norm((got - ref).ravel()) / max(float(cupy.linalg.norm(ref.ravel())), 1e-30)))
    return worst


def compare(S=256, L=4096, N=64, K=None, dtype="complex64", mode="scatter", repeats=20, rounds=3):
    """Rows (name, ms, ratio to the raw backend, ok).  Raw and torch runs alternate
    over ``rounds`` and each keeps its best median, so that drift in clocks or in
    other load on the machine falls on both alike."""
    inputs = make_inputs(S, L, N, K, dtype)
    variants = {**cuda_variants(inputs, mode), **torch_variants(inputs, mode)}
    best = {}
    for _ in range(rounds):
        for name, run in variants.items():
            best[name] = min(best.get(name, float("inf")), time_ms(run, repeats))
    rows = []
    for raw_name, torch_names in (("cuda forward", ("torch forward", "torch forward (requires_grad)")),
                                  ("cuda forward+backward", ("torch forward+backward",))):
        rows.append((raw_name, best[raw_name], 1.0, True))
        for name in torch_names:
            ratio = best[name] / best[raw_name]
            rows.append((name, best[name], ratio, ratio <= TARGET_RATIO))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256,4096,64", help="S,L,N")
    parser.add_argument("--maps", type=int, default=0, help="K: the dictionary form with K maps (0: off)")
    parser.add_argument("--dtype", default="complex64")
    parser.add_argument("--mode", default="scatter")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    S, L, N = (int(v) for v in args.size.split(","))
    import torch

    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}; (S, L, N) = ({S}, {L}, {N}) {args.dtype} "
          f"index int32, mode {args.mode}, K {args.maps or '-'}", flush=True)
    error = check_agreement(make_inputs(min(S, 8), min(L, 513), N, args.maps or None, args.dtype), args.mode)
    print(f"torch op vs CUDA backend, max rel. difference: {error:.2e}")
    rows = compare(S, L, N, args.maps or None, args.dtype, args.mode, args.repeats)
    print(f"{'variant':<32} {'ms':>9} {'ratio':>7}  target <= {TARGET_RATIO}")
    for name, ms, ratio, ok in rows:
        print(f"{name:<32} {ms:>9.3f} {ratio:>7.3f}  {'ok' if ok else 'SLOW'}")
    tolerance = 1e-5 if args.dtype == "complex64" else 1e-12
    return 0 if error <= tolerance and all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
