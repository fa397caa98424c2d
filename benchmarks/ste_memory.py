"""Peak memory of a straight-through training step: pdscan against the dense surrogate.

    python benchmarks/ste_memory.py                 # CPU (torch CPU tensors)
    python benchmarks/ste_memory.py --device cuda   # CUDA, plus time per step

One step is the forward and the backward (gradients of every input) of
``pdscan.torch.scan_ste_dict`` (form A) or ``scan_ste_mixture`` (form B), against the
dense straight-through implementation in torch (the N x N transition of every step
built, as the paper's reference code does, and differentiated by autograd), and
against the plain scan ``pdscan.torch.scan`` with the same hard transitions.
complex64 states, float32 router and dictionary, scatter mode, x0 given.

Every variant runs in a fresh subprocess.  The number reported is the memory the
step needs beyond its inputs (parameters, inputs and the cotangent are allocated
before the baseline is taken):

* CPU: the process's peak resident set (VmHWM) minus its resident set just before
  the step, with the peak reset through /proc/self/clear_refs.  tracemalloc cannot
  see torch's allocations, NumPy's or Numba's, but every byte any of them touches
  is resident.  A warm-up step compiles the kernels first; glibc is told to serve
  blocks over 128 KiB with mmap (returned to the system on free) and is trimmed
  before the baseline, so neither compilation nor memory cached by the warm-up
  inflates or hides the step's memory.  Time: median of 3 steps (informative only:
  this is a shared 2-core machine).
* CUDA: torch.cuda.max_memory_allocated minus memory_allocated before the step,
  after a warm-up step.  pdscan's CuPy work allocates from torch's caching
  allocator (pdscan.adapters.torch), so it is counted too.  Time per step: median
  of CUDA-event timings of the forward+backward.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time

VARIANTS = ["plain", "dict_pdscan", "dict_dense", "mixture_pdscan", "mixture_dense"]
LABELS = {"plain": "plain scan (pdscan.torch.scan)", "dict_pdscan": "A: pdscan scan_ste_dict",
          "dict_dense": "A: dense surrogate", "mixture_pdscan": "B: pdscan scan_ste_mixture",
          "mixture_dense": "B: dense surrogate"}


# -- the step of each variant ------------------------------------------------------------


def dense_scan(torch, P, d, b, x0):
    """x_t = (P_t D_t) x_{t-1} + b_t with the dense N x N matrices (scatter mode)."""
    # unbind, not A[..., t, :, :]: the backward of one index per step would zero-fill
    # a gradient of A's full size at every step
    A = (P.to(d.dtype) * d[..., None, :]).unbind(-3)
    state, states = x0, []
    for A_t, b_t in zip(A, b.unbind(-2)):
        state = (A_t @ state[..., None])[..., 0] + b_t
        states.append(state)
    return torch.stack(states, dim=-2)


def make_inputs(torch, B, L, N, K, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    real = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    cplx = lambda *shape: torch.complex(real(*shape), real(*shape)) * 0.5 ** 0.5  # noqa: E731
    Q = torch.rand(K, N, N, generator=g)
    d = (0.9 + 0.1 * torch.rand(B, L, N, generator=g)) * torch.exp(2j * torch.pi * torch.rand(B, L, N, generator=g))
    leaves = dict(router=real(B, L, K), dict=Q / Q.sum(-2, keepdim=True), logits=real(K, N, N),
                  d=d.to(torch.complex64), b=cplx(B, L, N), x0=cplx(B, N))
    leaves = {k: v.to(device).requires_grad_() for k, v in leaves.items()}
    cot = cplx(B, L, N).to(device)
    return leaves, cot


def make_step(torch, variant, t):
    import pdscan.torch

    F = torch.nn.functional
    d, b, x0 = t["d"], t["b"], t["x0"]
    if variant == "plain":
        index = t["router"].detach().argmax(-1)
        maps = t["dict"].detach().argmax(-2)
        return lambda: pdscan.torch.scan(index, d, b, x0, maps=maps, check_index=False), (d, b, x0)
    if variant.startswith("dict"):
        w, Q = t["router"], t["dict"]
        if variant == "dict_pdscan":
            return lambda: pdscan.torch.scan_ste_dict(w, Q, d, b, x0), (w, Q, d, b, x0)

        def dense():
            K, N = Q.shape[-3], Q.shape[-1]
            W = (F.one_hot(w.argmax(-1), K).to(w.dtype) - w).detach() + w
            H = F.one_hot(Q.argmax(-2), N).transpose(-1, -2).to(Q.dtype)
            P = torch.einsum("...lk,...kij->...lij", W, (H - Q).detach() + Q)
            return dense_scan(torch, P, d, b, x0)
        return dense, (w, Q, d, b, x0)
    s, M = t["router"], t["logits"]
    if variant == "mixture_pdscan":
        return lambda: pdscan.torch.scan_ste_mixture(s, M, d, b, x0), (s, M, d, b, x0)

    def dense():
        Mt = torch.einsum("...lk,...kij->...lij", s, M)
        soft = torch.softmax(Mt, dim=-2)
        hard = F.one_hot(Mt.argmax(-2), Mt.shape[-1]).transpose(-1, -2).to(Mt.dtype)
        return dense_scan(torch, (hard - soft).detach() + soft, d, b, x0)
    return dense, (s, M, d, b, x0)


def train_step(torch, step, params, cot):
    x = step()
    return torch.autograd.grad(x, params, cot)


# -- one variant in this process ------------------------------------------------------------


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(args):
    import torch

    device = args.device
    leaves, cot = make_inputs(torch, args.B, args.L, args.N, args.K, device)
    step, params = make_step(torch, args.child, leaves)
    result = {}
    train_step(torch, step, params, cot)  # warm-up: Numba / CUDA compilation, cuBLAS, allocators
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        grads = train_step(torch, step, params, cot)
        torch.cuda.synchronize()
        result["extra_bytes"] = torch.cuda.max_memory_allocated() - base
        del grads
        reps = args.reps if args.child.endswith("pdscan") or args.child == "plain" else 3
        times = []
        for _ in range(reps):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            train_step(torch, step, params, cot)
            stop.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(stop))
        result["ms"] = statistics.median(times)
    else:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        base = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        grads = train_step(torch, step, params, cot)
        result["extra_bytes"] = (_status_kib("VmHWM") - base) * 1024
        del grads
        times = []
        for _ in range(3):
            start = time.perf_counter()
            train_step(torch, step, params, cot)
            times.append(1e3 * (time.perf_counter() - start))
        result["ms"] = statistics.median(times)
    print(json.dumps(result))


# -- the table --------------------------------------------------------------------------------


def run_variant(args, variant):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", variant, "--device", args.device,
           "--B", str(args.B), "--L", str(args.L), "--N", str(args.N), "--K", str(args.K), "--reps", str(args.reps)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--B", type=int, default=16)
    parser.add_argument("--L", type=int, default=1024)
    parser.add_argument("--N", type=int, default=64)
    parser.add_argument("--K", type=int, default=8)
    parser.add_argument("--reps", type=int, default=20, help="timed steps on CUDA (pdscan and plain)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    results = {v: run_variant(args, v) for v in VARIANTS}
    mib = lambda n: n / 2 ** 20  # noqa: E731
    print(f"device {args.device}: B={args.B} L={args.L} N={args.N} K={args.K}, complex64, scatter, x0; "
          f"memory beyond the inputs for one forward+backward")
    print("| variant | peak extra MiB | dense / pdscan | ms per step |")
    print("| --- | ---: | ---: | ---: |")
    for v in VARIANTS:
        r = results[v]
        ratio = ""
        if v.endswith("pdscan"):
            dense = results[v.replace("pdscan", "dense")]["extra_bytes"]
            ratio = f"{dense / max(r['extra_bytes'], 1):.1f}x"
        print(f"| {LABELS[v]} | {mib(r['extra_bytes']):.1f} | {ratio} | {r['ms']:.1f} |")
    plain, form_a = results["plain"]["ms"], results["dict_pdscan"]["ms"]
    print(f"\nform A time per step / plain scan: {form_a / plain:.2f}x")


if __name__ == "__main__":
    main()
