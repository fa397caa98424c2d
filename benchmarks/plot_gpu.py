"""Plot time against L at a fixed number of elements from benchmarks/gpu.py's JSON:
pdscan forward (and forward+backward), jax.lax.associative_scan, and the floor.

``python benchmarks/plot_gpu.py gpu_benchmark.json docs/gpu_scan.png``
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    source, target = argv[0], argv[1] if len(argv) > 1 else "docs/gpu_scan.png"
    result = json.load(open(source))
    sweep = result["sweep"]
    lengths = [r["L"] for r in sweep]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    names = sorted({name for r in sweep for name in r["times_ms"]})
    for name in names:
        ax.plot(lengths, [r["times_ms"].get(name, float("nan")) for r in sweep], marker="o", label=name)
    ax.plot(lengths, [r["floor_forward_ms"] for r in sweep], "k--", label="forward floor (28 B/element)")
    ax.plot(lengths, [r["floor_forward_backward_ms"] for r in sweep], "k:", label="f+b floor (72 B/element)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("L (S = 2^25 / (64 L), N = 64)")
    ax.set_ylabel("ms (device time of a call among queued calls)")
    ax.set_title(f"PD scan, complex64, 2^25 elements, {result['device']}", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
