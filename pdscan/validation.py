"""``pdscan validate``: every available backend and adapter against the reference.

Each backend runs the forward and the VJP (both conventions) over a set of cases
(both modes, forward and reverse, the dictionary form, x0, scatter collisions, a
length that is not a multiple of any block size) on fresh random inputs.  The
reference is the NumPy backend run in complex128 on the same (upcast) inputs.
One table, one row per backend, device and dtype; the exit status is non-zero on
any mismatch or failure.

Backends say where they run through ``BACKEND.validation_devices()``: a list of
(label, to_native, to_numpy) converting NumPy arrays to the backend's arrays and
back.  Without it, NumPy backends run on the CPU and CuPy ones on the GPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from . import backends
from ._api import scan, scan_vjp

#: relative-error bounds against the complex128 reference
TOLERANCE = {"float32": 2e-5, "complex64": 2e-5, "float64": 1e-12, "complex128": 1e-12}


@dataclass
class Row:
    backend: str
    device: str
    dtype: str
    error: float
    seconds: float
    ok: bool
    note: str = ""


def _cases(rng, S, L, N, K, dtype):
    """Inputs with |d| in [0.5, 1] so that L steps neither vanish nor blow up."""
    complex_ = np.dtype(dtype).kind == "c"
    for mode in ("scatter", "gather"):
        for reverse in (False, True):
            for use_maps in (False, True):
                mag = rng.uniform(0.5, 1.0, size=(S, L, N))
                d = mag * (np.exp(2j * np.pi * rng.uniform(size=(S, L, N))) if complex_ else rng.choice([-1, 1], (S, L, N)))
                b = rng.normal(size=(S, L, N)) + (1j * rng.normal(size=(S, L, N)) if complex_ else 0)
                x0 = rng.normal(size=(S, N)) + (1j * rng.normal(size=(S, N)) if complex_ else 0)
                grad_x = rng.normal(size=(S, L, N)) + (1j * rng.normal(size=(S, L, N)) if complex_ else 0)
                rows = max(1, N // 2)  # draw targets from half the rows: collisions in scatter mode
                if use_maps:
                    maps = rng.integers(0, rows, size=(K, N)).astype(np.int32)  # one dictionary, broadcast
                    index = rng.integers(0, K, size=(S, L)).astype(np.int32)
                else:
                    maps = None
                    index = rng.integers(0, rows, size=(S, L, N)).astype(np.int32)
                arrays = dict(index=index, maps=maps, d=d.astype(dtype), b=b.astype(dtype), x0=x0.astype(dtype),
                              grad_x=grad_x.astype(dtype))
                yield dict(mode=mode, reverse=reverse), arrays


def _rel(a, ref):
    scale = np.linalg.norm(ref.ravel())
    return float(np.linalg.norm((np.asarray(a, ref.dtype) - ref).ravel()) / (scale if scale else 1.0))


def _reference(arrays, options, conjugate):
    widen = {"f": np.float64, "c": np.complex128}
    wide = {k: (v.astype(widen[v.dtype.kind]) if v is not None and v.dtype.kind in widen else v)
            for k, v in arrays.items()}
    x = scan(wide["index"], wide["d"], wide["b"], wide["x0"], maps=wide["maps"], backend="numpy", **options)
    grads = scan_vjp(wide["index"], wide["d"], wide["b"], wide["x0"], x, wide["grad_x"], maps=wide["maps"],
                     backend="numpy", conjugate=conjugate, **options)
    return x, grads


def _default_devices(entry):
    if "numpy" in entry.libraries:
        return [("cpu", lambda a: a, lambda a: a)]
    if "cupy" in entry.libraries:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return [("gpu", cupy.asarray, cupy.asnumpy)]
    return []


def _validate_one(name, label, to_native, to_numpy, dtype, size, seed):
    S, L, N, K = size
    rng = np.random.default_rng(seed)
    worst, seconds = 0.0, 0.0
    for options, arrays in _cases(rng, S, L, N, K, dtype):
        native = {k: None if v is None else to_native(v) for k, v in arrays.items()}
        for conjugate in (False, True):
            start = time.perf_counter()
            x = scan(native["index"], native["d"], native["b"], native["x0"], maps=native["maps"], backend=name,
                     **options)
            grads = scan_vjp(native["index"], native["d"], native["b"], native["x0"], x, native["grad_x"],
                             maps=native["maps"], backend=name, conjugate=conjugate, **options)
            x_np, grads_np = to_numpy(x), [to_numpy(g) for g in grads]
            seconds += time.perf_counter() - start
            ref_x, ref_grads = _reference(arrays, options, conjugate)
            errors = [_rel(x_np, ref_x)] + [_rel(g, r) for g, r in zip(grads_np, ref_grads)]
            if any(np.isnan(e) for e in errors):
                return float("nan"), seconds
            worst = max(worst, *errors)
    return worst, seconds


def run(size=(8, 257, 16, 4), dtypes=("float32", "float64", "complex64", "complex128"), only=None, seed=0,
        on_row=None):
    """Validate every available backend; returns the table's rows (each also handed
    to ``on_row`` as soon as it is measured)."""
    rows = _Rows(on_row)
    for name in backends.available():
        if only and name not in only:
            continue
        entry = backends.entries()[name]
        try:
            backend = backends.get(name)
            devices = backend.validation_devices() if hasattr(backend, "validation_devices") else _default_devices(entry)
        except Exception as err:  # noqa: BLE001 - a broken backend is a row, not a crash
            rows.append(Row(name, "-", "-", float("nan"), 0.0, False, f"failed to load: {err}"))
            continue
        for label, to_native, to_numpy in devices:
            for dtype in dtypes:
                try:
                    # the first run compiles (XLA, per shape), so the time is the second
                    # run's; both runs' errors count
                    first, _ = _validate_one(name, label, to_native, to_numpy, dtype, size, seed)
                    error, seconds = _validate_one(name, label, to_native, to_numpy, dtype, size, seed + 1)
                    error = float(np.maximum(first, error))  # NaN from either run stays NaN
                    ok = bool(error <= TOLERANCE[dtype])
                    # the reference runs the NumPy backend on the same inputs widened: in the
                    # wide dtypes that row compares it with itself
                    note = "the reference itself" if name == "numpy" and dtype in ("float64", "complex128") else ""
                    rows.append(Row(name, label, dtype, error, seconds, ok, note))
                except Exception as err:  # noqa: BLE001
                    rows.append(Row(name, label, dtype, float("nan"), 0.0, False, f"{type(err).__name__}: {err}"))
    return rows


class _Rows(list):
    def __init__(self, on_row):
        super().__init__()
        self._on_row = on_row

    def append(self, row):
        super().append(row)
        if self._on_row is not None:
            self._on_row(row)


def format_header(size) -> str:
    S, L, N, K = size
    return "\n".join([
        f"pdscan validate: S={S} sequences, L={L} steps, N={N} states, K={K} maps; "
        "modes scatter/gather x forward/reverse x index/maps, forward + VJP (both conventions)",
        f"{'backend':<11} {'device':<8} {'dtype':<11} {'max rel err':>12} {'tolerance':>10} {'time (s)':>9}  result",
    ])


def format_row(r) -> str:
    tol = TOLERANCE.get(r.dtype, float("nan"))
    status = ("ok" if r.ok else "FAIL") + (f" ({r.note})" if r.note else "")
    return f"{r.backend:<11} {r.device:<8} {r.dtype:<11} {r.error:>12.2e} {tol:>10.0e} {r.seconds:>9.3f}  {status}"


def format_table(rows, size) -> str:
    return "\n".join([format_header(size)] + [format_row(r) for r in rows])
