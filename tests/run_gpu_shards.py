"""Run every GPU test (marker ``cuda``) in parallel pytest processes on one GPU.

    python tests/run_gpu_shards.py [--shards 12] [--timeout 540] [--logs DIR] [paths ...]

The CUDA test file compiles hundreds of kernel variants through NVRTC, one process at
a time, and takes over ten minutes in one process; in shards on a machine with many
cores it takes about three.  The collected tests are cut into contiguous runs (tests
that share kernels sit together, so few variants compile twice), the CUDA file into
``--shards`` of them and the other files' GPU tests into one more.  Each shard writes its
own log; a summary follows, and the exit status is 0 only if every shard passed.  JAX
does not preallocate GPU memory here, as the shards share the device.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

BIG_FILE = "tests/test_cuda.py"


def split(ids, shards):
    """Contiguous runs of the collected test ids: the CUDA file's in ``shards`` runs of
    near-equal size, every other file's in one run after them (empty runs dropped)."""
    big = [i for i in ids if i.split("::")[0] == BIG_FILE]
    rest = [i for i in ids if i.split("::")[0] != BIG_FILE]
    runs = [big[k * len(big) // shards:(k + 1) * len(big) // shards] for k in range(shards)] + [rest]
    return [run for run in runs if run]


def collect(paths, env):
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-m", "cuda", *paths], capture_output=True, text=True, env=env)
    ids = [line.strip() for line in proc.stdout.splitlines() if "::" in line]
    if proc.returncode not in (0, 5) or not ids:  # 5: nothing collected
        sys.exit(f"collection failed (status {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return ids


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="*", default=["tests"])
    ap.add_argument("--shards", type=int, default=12, help="runs of the CUDA test file")
    ap.add_argument("--timeout", type=float, default=540, help="seconds before the shards left are stopped")
    ap.add_argument("--logs", default=None, help="directory for the shards' logs (a temporary one by default)")
    args = ap.parse_args(argv)
    if args.shards < 1:
        ap.error(f"--shards: expected a positive number, got {args.shards}")
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    logs = args.logs or tempfile.mkdtemp(prefix="pdscan-gpu-tests-")
    os.makedirs(logs, exist_ok=True)
    runs = split(collect(args.paths, env), args.shards)
    start = time.monotonic()
    procs = []
    for k, run in enumerate(runs):
        with open(os.path.join(logs, f"shard{k}.log"), "w") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE",
                                           *run], stdout=log, stderr=subprocess.STDOUT, env=env))
    for proc in procs:
        try:
            proc.wait(timeout=max(1.0, args.timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    ok = True
    for k, (run, proc) in enumerate(zip(runs, procs)):
        with open(os.path.join(logs, f"shard{k}.log")) as f:
            lines = f.read().splitlines()
        ok &= proc.returncode == 0
        status = "stopped at the time limit" if proc.returncode < 0 else (lines[-1] if lines else "no output")
        print(f"shard {k}: {len(run)} tests, {run[0].split('::')[0]}: {status}")
        for line in lines:
            if line.startswith(("FAILED", "ERROR")):
                print("   ", line[:300])
    print(f"{sum(map(len, runs))} tests in {len(runs)} shards, {time.monotonic() - start:.0f} s; logs in {logs}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
