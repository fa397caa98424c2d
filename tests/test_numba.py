"""The Numba CPU backend against the NumPy reference, on both schedules."""

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("numba")

import pdscan  # noqa: E402
from pdscan import _problem  # noqa: E402
from pdscan.backends import numba_cpu, numba_cpu_kernels  # noqa: E402
from oracles import lane_order_problem, make_inputs, rel_err  # noqa: E402

pytestmark = pytest.mark.numba
MODES = ["scatter", "gather"]
TOL = {np.complex128: 1e-12, np.float64: 1e-12, np.complex64: 1e-5, np.float32: 1e-5}


@pytest.fixture(params=["sequences", "chunks"])
def schedule(request, monkeypatch):
    """Both schedules on small inputs: chunks of 4 steps, so L = 11 leaves a short one."""
    monkeypatch.setattr(numba_cpu, "FORCE_CHUNK_STEPS", 4 if request.param == "chunks" else None)
    if request.param == "sequences":
        monkeypatch.setattr(numba_cpu, "MIN_CHUNKED_STEPS", 10**18)
    return request.param


def both(inputs, **kw):
    args = (inputs["index"], inputs["d"], inputs["b"], inputs["x0"])
    return (pdscan.scan(*args, maps=inputs["maps"], backend="numba", **kw),
            pdscan.scan(*args, maps=inputs["maps"], backend="numpy", **kw))


def both_vjp(inputs, x, grad_x, **kw):
    args = (inputs["index"], inputs["d"], inputs["b"], inputs["x0"], x, grad_x)
    return (pdscan.scan_vjp(*args, maps=inputs["maps"], backend="numba", **kw),
            pdscan.scan_vjp(*args, maps=inputs["maps"], backend="numpy", **kw))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("K", [None, 3])
@pytest.mark.parametrize("x0", [True, False])
def test_matches_reference(schedule, mode, reverse, K, x0):
    rng = np.random.default_rng()
    inputs = make_inputs(rng, batch=(2, 3), L=11, N=6, K=K, x0=x0, unit=True)
    got, want = both(inputs, mode=mode, reverse=reverse)
    assert rel_err(got, want) < 1e-12
    grad_x = rng.normal(size=want.shape) + 1j * rng.normal(size=want.shape)
    for conjugate in (False, True):
        got_g, want_g = both_vjp(inputs, want, grad_x, mode=mode, reverse=reverse, conjugate=conjugate)
        for g, w in zip(got_g, want_g):
            assert (g is None) == (w is None)
            if w is not None:
                assert g.shape == w.shape and g.dtype == w.dtype
                assert rel_err(g, w) < 1e-12


@pytest.mark.parametrize("dtype, index_dtype", [(np.complex64, np.int32), (np.float32, np.uint8),
                                                (np.float64, np.int16), (np.complex128, np.uint64)])
def test_dtypes(schedule, dtype, index_dtype):
    rng = np.random.default_rng()
    inputs = make_inputs(rng, batch=(3,), L=9, N=5, dtype=dtype, index_dtype=index_dtype, unit=True)
    got, want = both(inputs, mode="scatter")
    assert got.dtype == dtype and rel_err(got, want) < TOL[dtype]
    grad_x = np.ones_like(want)
    for g, w in zip(*both_vjp(inputs, want, grad_x, mode="gather")):
        assert g.dtype == w.dtype and rel_err(g, w) < TOL[dtype]


@pytest.mark.parametrize("mode", MODES)
def test_broadcast_dictionary_per_head(schedule, mode):
    rng = np.random.default_rng()
    L, N = 10, 4
    maps = rng.integers(0, 2, size=(3, 5, N))  # a dictionary per head, collisions
    index = rng.integers(0, 5, size=(2, 3, L))
    d = rng.uniform(0.8, 1, size=(1, 3, L, N)) + 0j
    b = rng.normal(size=(2, 1, L, N)) + 0j
    x0 = rng.normal(size=(N,)) + 0j
    args = (index, d, b, x0)
    got = pdscan.scan(*args, maps=maps, mode=mode, backend="numba")
    want = pdscan.scan(*args, maps=maps, mode=mode, backend="numpy")
    assert got.shape == (2, 3, L, N) and rel_err(got, want) < 1e-12
    g = rng.normal(size=got.shape) + 0j
    for a, w in zip(pdscan.scan_vjp(*args, got, g, maps=maps, mode=mode, backend="numba"),
                    pdscan.scan_vjp(*args, got, g, maps=maps, mode=mode, backend="numpy")):
        assert a.shape == w.shape and rel_err(a, w) < 1e-12


@pytest.mark.parametrize("L, N", [(1, 5), (7, 1), (1, 1), (13, 3)])
def test_small_and_odd_sizes(schedule, L, N):
    rng = np.random.default_rng()
    inputs = make_inputs(rng, batch=(2,), L=L, N=N, K=2)
    for mode in MODES:
        for reverse in (False, True):
            got, want = both(inputs, mode=mode, reverse=reverse)
            assert rel_err(got, want) < 1e-12


@pytest.mark.parametrize("N", [5, 64])
def test_scatter_sums_a_row_in_lane_order(N, monkeypatch):
    """A pass per sequence sums each row's sources in lane order, bit for bit, as the
    reference does (lane_order_problem); chunks regroup the adds, so not them."""
    monkeypatch.setattr(numba_cpu, "MIN_CHUNKED_STEPS", 10**18)
    inputs, want = lane_order_problem(np.random.default_rng(), 15, N)
    got, _ = both(inputs)
    np.testing.assert_array_equal(got, want)


def test_default_for_numpy_arrays():
    assert pdscan.backends.select("numpy").name == "numba"


@pytest.mark.parametrize("mode", MODES)
def test_out_buffers_are_fully_written_and_inputs_untouched(schedule, mode):
    rng = np.random.default_rng()
    inputs = make_inputs(rng, batch=(4,), L=10, N=6, K=3)
    saved = {k: None if v is None else v.copy() for k, v in inputs.items()}
    p = _problem.prepare(inputs["index"], inputs["d"], inputs["b"], inputs["x0"], maps=inputs["maps"], mode=mode)
    out = np.full((4, 10, 6), np.nan + 1j * np.nan)
    x = numba_cpu.BACKEND.forward(p, out=out)
    assert x is out and not np.isnan(out).any()
    assert rel_err(out, numba_cpu_reference(p)) < 1e-12
    grad_x = rng.normal(size=out.shape) + 0j
    outs = tuple(np.full(s, np.nan + 0j) for s in ((4, 10, 6), (4, 10, 6), (4, 6)))
    grads = numba_cpu.BACKEND.vjp(p, x, grad_x, out=outs)
    for g, o in zip(grads, outs):
        assert g is o and not np.isnan(o).any()
    for k, v in inputs.items():
        if v is not None:
            np.testing.assert_array_equal(v, saved[k])


def numba_cpu_reference(p):
    return pdscan.backends.get("numpy").forward(p)


@pytest.mark.parametrize("mode", MODES)
def test_out_of_range_index_without_check_is_nan_not_a_crash(schedule, mode):
    rng = np.random.default_rng()
    inputs = make_inputs(rng, batch=(2,), L=9, N=4)
    index = inputs["index"].copy()
    index[1, 5, 2] = 1000
    index[0, 3, 0] = -7
    x = pdscan.scan(index, inputs["d"], inputs["b"], mode=mode, backend="numba", check_index=False)
    assert np.isnan(x[1, 5]).all() and np.isnan(x[0, 3]).all()
    assert not np.isnan(x[1, :5]).any() and not np.isnan(x[0, :3]).any()
    grads = pdscan.scan_vjp(index, inputs["d"], inputs["b"], None, x, np.ones_like(x), mode=mode,
                            backend="numba", check_index=False)
    assert np.isnan(grads[0]).any()
    maps = rng.integers(0, 4, size=(2, 3, 4))
    sel = rng.integers(0, 3, size=(2, 9))
    sel[0, 4] = 3
    x = pdscan.scan(sel, inputs["d"], inputs["b"], maps=maps, mode=mode, backend="numba", check_index=False)
    assert np.isnan(x[0, 4]).all() and not np.isnan(x[1]).any()


def test_long_decaying_chunks_stay_exact(monkeypatch):
    """Chunk summaries of |d| < 1 flush subnormal factors to zero: still exact."""
    monkeypatch.setattr(numba_cpu, "FORCE_CHUNK_STEPS", 1500)
    rng = np.random.default_rng()
    L, N = 4001, 8
    index = rng.integers(0, N, size=(1, L, N)).astype(np.int32)
    d = (0.9 * np.exp(2j * np.pi * rng.uniform(size=(1, L, N)))).astype(np.complex64)
    b = (rng.normal(size=(1, L, N)) + 0j).astype(np.complex64)
    got = pdscan.scan(index, d, b, backend="numba")
    want = pdscan.scan(index, d.astype(np.complex128), b.astype(np.complex128), backend="numpy")
    assert rel_err(got, want) < 1e-5


def test_second_process_loads_compiled_code_from_the_cache():
    code = (
        "import numpy as np, pdscan\n"
        "from pdscan.backends import numba_cpu_kernels as nc\n"
        "i = np.zeros((2, 3, 4), np.int32); d = np.ones((2, 3, 4), np.complex64)\n"
        "x = pdscan.scan(i, d, d, backend='numba')\n"
        "pdscan.scan_vjp(i, d, d, None, x, x, backend='numba')\n"
        "stats = [f.stats for f in (nc.forward_phase, nc.vjp_phase)]\n"
        "print(sum(sum(s.cache_misses.values()) for s in stats), sum(sum(s.cache_hits.values()) for s in stats))\n"
    )
    for _ in range(2):  # the first run may compile; the second must not
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    misses, hits = map(int, out.split())
    assert misses == 0 and hits == 2


def test_index_widths_share_kernels():
    """Narrow and unsigned indices reuse the int32 and int64 kernels: no compile per
    width.  (Whatever ran before in this process, no kernel has an index argument
    of another width; a count of signatures would depend on the order of the tests.)"""
    rng = np.random.default_rng()
    inputs = make_inputs(rng, batch=(2,), L=5, N=4, dtype=np.complex64, index_dtype=np.int32)
    for index_dtype in (np.int32, np.uint8, np.int8, np.int16, np.uint16, np.uint32):
        index = inputs["index"].astype(index_dtype)
        got = pdscan.scan(index, inputs["d"], inputs["b"], inputs["x0"], backend="numba")
        want = pdscan.scan(index, inputs["d"], inputs["b"], inputs["x0"], backend="numpy")
        assert rel_err(got, want) < 1e-5
    kernels = (numba_cpu_kernels.forward_phase, numba_cpu_kernels.vjp_phase)
    integer_arrays = {str(arg.dtype) for kernel in kernels for signature in kernel.signatures for arg in signature
                      if hasattr(arg, "dtype") and hasattr(arg, "ndim") and "int" in str(arg.dtype)}
    assert integer_arrays and integer_arrays <= {"int32", "int64"}
