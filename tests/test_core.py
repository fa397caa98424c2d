"""The semantics of pdscan.scan / scan_vjp / step / reduce against the dense oracle,
on the NumPy reference and the generic array-API backend."""

import numpy as np
import pytest

import pdscan
from oracles import (dense_scan, dense_vjp, lane_order_problem, make_inputs, rel_err,
                     with_indices_out_of_range, zero_nan)

BACKENDS = ["numpy", "array_api"]
MODES = ["scatter", "gather"]


def call(inputs, **kw):
    return pdscan.scan(inputs["index"], inputs["d"], inputs["b"], inputs["x0"], maps=inputs["maps"], **kw)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("K", [None, 4])
@pytest.mark.parametrize("x0", [True, False])
def test_scan_matches_dense(backend, mode, reverse, K, x0):
    rng = np.random.default_rng([hash((backend, mode, reverse, K, x0)) % 2**32])
    inputs = make_inputs(rng, batch=(2, 3), L=11, N=6, K=K, x0=x0)
    got = call(inputs, mode=mode, reverse=reverse, backend=backend)
    want = dense_scan(**inputs, mode=mode, reverse=reverse)
    assert got.shape == want.shape and got.dtype == np.complex128
    assert rel_err(got, want) < 1e-13


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
def test_broadcasting_batch_dimensions(backend, mode):
    rng = np.random.default_rng(1)
    L, N = 7, 5
    inputs = {
        "index": rng.integers(0, 2, size=(1, L)),  # selectors shared over batch and heads
        "maps": rng.integers(0, N, size=(4, 2, N)),  # one dictionary per head (4 heads)
        "d": rng.normal(size=(3, 1, L, N)) + 0j,  # per batch, shared over heads
        "b": rng.normal(size=(3, 4, L, N)),
        "x0": rng.normal(size=(N,)),
    }
    got = call(inputs, mode=mode, backend=backend)
    assert got.shape == (3, 4, L, N)
    assert rel_err(got, dense_scan(**inputs, mode=mode)) < 1e-13


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
def test_split_and_continue(backend, mode, reverse):
    """Scanning [0, L) equals scanning part of it and continuing from its last state."""
    rng = np.random.default_rng(2)
    inp = make_inputs(rng, batch=(4,), L=13, N=6)
    full = call(inp, mode=mode, reverse=reverse, backend=backend)
    m = 5
    first, second = (slice(m, None), slice(None, m)) if reverse else (slice(None, m), slice(m, None))
    part1 = pdscan.scan(inp["index"][:, first], inp["d"][:, first], inp["b"][:, first], inp["x0"],
                        mode=mode, reverse=reverse, backend=backend)
    carry = part1[:, 0] if reverse else part1[:, -1]
    part2 = pdscan.scan(inp["index"][:, second], inp["d"][:, second], inp["b"][:, second], carry,
                        mode=mode, reverse=reverse, backend=backend)
    joined = np.concatenate([part2, part1] if reverse else [part1, part2], axis=1)
    assert rel_err(joined, full) < 1e-13


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("K", [None, 3])
def test_reduce_agrees_with_scan(mode, reverse, K):
    rng = np.random.default_rng(3)
    inp = make_inputs(rng, batch=(2, 2), L=10, N=7, K=K)
    total = pdscan.reduce(inp["index"], inp["d"], inp["b"], maps=inp["maps"], mode=mode, reverse=reverse)
    assert total.index.shape == total.d.shape == total.b.shape == (2, 2, 7)
    last = pdscan.step(total.index, total.d, total.b, inp["x0"], mode=total.mode)
    x = call(inp, mode=mode, reverse=reverse, backend="numpy")
    assert rel_err(last, x[..., 0, :] if reverse else x[..., -1, :]) < 1e-13


def test_reduce_of_empty_sequence_is_identity():
    idx = np.zeros((2, 0, 4), np.int32)
    d = np.zeros((2, 0, 4), np.complex64)
    e = pdscan.reduce(idx, d, d)
    x = np.arange(8.0).reshape(2, 4).astype(np.complex64)
    np.testing.assert_array_equal(pdscan.step(e.index, e.d, e.b, x, mode=e.mode), x)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("K", [None, 3])
def test_step_is_one_step_of_scan(mode, K):
    rng = np.random.default_rng(4)
    inp = make_inputs(rng, batch=(5,), L=1, N=6, K=K)
    idx = inp["index"][:, 0]
    got = pdscan.step(idx, inp["d"][:, 0], inp["b"][:, 0], inp["x0"], maps=inp["maps"], mode=mode)
    assert rel_err(got, call(inp, mode=mode)[:, 0]) < 1e-14


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("K", [None, 3])
def test_vjp_matches_dense(backend, mode, reverse, K):
    rng = np.random.default_rng(5)
    inp = make_inputs(rng, batch=(3,), L=8, N=5, K=K)
    x = call(inp, mode=mode, reverse=reverse, backend=backend)
    grad_x = rng.normal(size=x.shape) + 1j * rng.normal(size=x.shape)
    got = pdscan.scan_vjp(inp["index"], inp["d"], inp["b"], inp["x0"], x, grad_x, maps=inp["maps"],
                          mode=mode, reverse=reverse, backend=backend)
    want = dense_vjp(**inp, grad_x=grad_x, mode=mode, reverse=reverse)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert rel_err(g, w) < 1e-12


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
def test_vjp_against_finite_differences(mode, reverse):
    """<grad_x, J v> = <vjp(grad_x), v> for a random direction v (no conjugation:
    the plain-transpose convention), J v by central differences in complex128."""
    rng = np.random.default_rng(6)
    inp = make_inputs(rng, batch=(2,), L=6, N=4, unit=True)
    f = lambda d, b, x0: pdscan.scan(inp["index"], d, b, x0, mode=mode, reverse=reverse)
    primal = (inp["d"], inp["b"], inp["x0"])
    x = f(*primal)
    grad_x = rng.normal(size=x.shape) + 1j * rng.normal(size=x.shape)
    grads = pdscan.scan_vjp(inp["index"], *primal, x, grad_x, mode=mode, reverse=reverse)
    for k in range(3):
        v = rng.normal(size=primal[k].shape) + 1j * rng.normal(size=primal[k].shape)
        eps = 1e-6
        plus = list(primal); plus[k] = primal[k] + eps * v
        minus = list(primal); minus[k] = primal[k] - eps * v
        jv = (f(*plus) - f(*minus)) / (2 * eps)
        lhs = np.sum(grad_x * jv)
        rhs = np.sum(grads[k] * v)
        assert abs(lhs - rhs) <= 1e-7 * max(1.0, abs(lhs))


@pytest.mark.parametrize("backend", BACKENDS)
def test_conjugate_convention(backend):
    """PyTorch's convention: conj(J)^T g = conj(J^T conj(g))."""
    rng = np.random.default_rng(7)
    inp = make_inputs(rng, batch=(2,), L=7, N=5, K=3)
    x = call(inp, backend=backend)
    g = rng.normal(size=x.shape) + 1j * rng.normal(size=x.shape)
    args = (inp["index"], inp["d"], inp["b"], inp["x0"], x)
    plain = pdscan.scan_vjp(*args, np.conj(g), maps=inp["maps"], backend=backend)
    conj = pdscan.scan_vjp(*args, g, maps=inp["maps"], backend=backend, conjugate=True)
    for p, c in zip(plain, conj):
        assert rel_err(c, np.conj(p)) < 1e-13


def test_vjp_sums_broadcast_dimensions_and_keeps_dtypes():
    rng = np.random.default_rng(8)
    L, N = 6, 4
    index = rng.integers(0, N, size=(L, N)).astype(np.int16)
    d = rng.normal(size=(1, L, N)).astype(np.float32)  # real, broadcast over the batch
    b = (rng.normal(size=(3, L, N)) + 1j * rng.normal(size=(3, L, N))).astype(np.complex64)
    x0 = rng.normal(size=(N,)).astype(np.float32)
    x = pdscan.scan(index, d, b, x0)
    assert x.dtype == np.complex64 and x.shape == (3, L, N)
    g = np.ones_like(x)
    gd, gb, gx0 = pdscan.scan_vjp(index, d, b, x0, x, g)
    assert (gd.shape, gd.dtype) == ((1, L, N), np.float32)
    assert (gb.shape, gb.dtype) == ((3, L, N), np.complex64)
    assert (gx0.shape, gx0.dtype) == ((N,), np.float32)
    full = dense_vjp(index, d.astype(np.complex128), b, x0, g.astype(np.complex128))
    assert rel_err(gd, full[0].sum(axis=0, keepdims=True).real) < 1e-5
    assert rel_err(gx0, full[2].sum(axis=0).real) < 1e-5


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
@pytest.mark.parametrize("index_dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
                                         np.int64, np.uint64])
def test_dtypes(dtype, index_dtype):
    rng = np.random.default_rng(9)
    inp = make_inputs(rng, batch=(2,), L=5, N=4, dtype=dtype, index_dtype=index_dtype)
    x = call(inp)
    assert x.dtype == dtype
    tol = 1e-5 if np.dtype(dtype).itemsize <= 8 and dtype != np.float64 else 1e-13
    assert rel_err(x, dense_scan(**inp)) < tol


def test_degenerate_sizes():
    rng = np.random.default_rng(10)
    for backend in BACKENDS:
        empty = make_inputs(rng, batch=(2,), L=0, N=3)
        x = call(empty, backend=backend)
        assert x.shape == (2, 0, 3)
        grads = pdscan.scan_vjp(empty["index"], empty["d"], empty["b"], empty["x0"], x, x, backend=backend)
        assert [g.shape for g in grads] == [(2, 0, 3), (2, 0, 3), (2, 3)]
        one = make_inputs(rng, batch=(2,), L=4, N=1)
        assert rel_err(call(one, backend=backend), dense_scan(**one)) < 1e-14


@pytest.mark.parametrize("N", [5, 64])
def test_reference_sums_a_row_in_lane_order(N):
    """The reference fixes the order of a row's adds: its sources in lane order, bit
    for bit (lane_order_problem), as Numba's pass per sequence and the pipelined CUDA
    scan do.  (The array-API backend's tree-ordered scan regroups them.)"""
    inputs, want = lane_order_problem(np.random.default_rng(), 15, N)
    np.testing.assert_array_equal(call(inputs, backend="numpy"), want)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's notes on Inf arithmetic
@pytest.mark.parametrize("backend", BACKENDS + ["numba"])
@pytest.mark.parametrize("mode", MODES)
def test_nan_and_inf_propagate(backend, mode):
    """A NaN or an Inf reaches exactly the states its lane reaches, as the sparse
    recurrence (not a dense product, where 0 * Inf would spread NaN) says."""
    if backend == "numba":
        pytest.importorskip("numba")
    rng = np.random.default_rng(11)
    inp = make_inputs(rng, batch=(2,), L=6, N=5, x0=False)
    inp["b"][0, 1, 0] = np.nan
    inp["d"][1, 2, 1] = np.inf
    x = call(inp, mode=mode, backend=backend)
    want = dense_scan(**inp, mode=mode)
    assert np.isnan(x[0, 1, 0]) and not np.isnan(x[0, 0]).any() and np.isinf(want).any()
    np.testing.assert_array_equal(np.isfinite(x), np.isfinite(want))
    if backend != "array_api":  # a complex Inf times Inf can be NaN: the tree order regroups
        np.testing.assert_array_equal(np.isinf(x), np.isinf(want))
    assert rel_err(np.where(np.isfinite(x), x, 0), np.where(np.isfinite(want), want, 0)) < 1e-12


def test_inputs_are_not_modified():
    rng = np.random.default_rng(12)
    for backend in BACKENDS:
        inp = make_inputs(rng, batch=(2,), L=6, N=4, K=3)
        saved = {k: None if v is None else v.copy() for k, v in inp.items()}
        x = call(inp, backend=backend)
        g = np.ones_like(x)
        x_saved = x.copy()
        pdscan.scan_vjp(inp["index"], inp["d"], inp["b"], inp["x0"], x, g, maps=inp["maps"], backend=backend)
        for k, v in inp.items():
            if v is not None:
                np.testing.assert_array_equal(v, saved[k])
        np.testing.assert_array_equal(x, x_saved)
        np.testing.assert_array_equal(g, np.ones_like(x))


@pytest.mark.parametrize("backend", BACKENDS + ["numba"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("K", [None, 3])
def test_out_of_range_without_check_is_nan_where_it_steps_on_every_backend(backend, mode, reverse, K):
    """check_index=False: a step whose map sends a lane out of range has a NaN state
    throughout and nothing else changes; the other sequences are untouched (the
    flattened batch is never read across rows).  The VJP agrees with the reference's,
    NaN for NaN: the bad step's grad_d and whatever flows back through it."""
    if backend == "numba":
        pytest.importorskip("numba")
    rng = np.random.default_rng()
    inp = with_indices_out_of_range(rng, K)
    x = call(inp, mode=mode, reverse=reverse, backend=backend, check_index=False)
    want = dense_scan(**inp, mode=mode, reverse=reverse)
    np.testing.assert_array_equal(np.isnan(x), np.isnan(want))
    assert np.isnan(x[1, 2]).all() and np.isnan(x[1, 7]).all() and not np.isnan(x[[0, 2]]).any()
    assert rel_err(zero_nan(x), zero_nan(want)) < 1e-12
    grad_x = np.asarray(rng.standard_normal(x.shape), x.dtype)
    args = (inp["index"], inp["d"], inp["b"], inp["x0"], zero_nan(x), grad_x)
    kw = dict(maps=inp["maps"], mode=mode, reverse=reverse, check_index=False)
    got = pdscan.scan_vjp(*args, backend=backend, **kw)
    ref = pdscan.scan_vjp(*args, backend="numpy", **kw)
    for name, g, r in zip(("grad_d", "grad_b", "grad_x0"), got, ref):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(r), err_msg=name)
        assert rel_err(zero_nan(g), zero_nan(r)) < 1e-12, name
        assert not np.isnan(g[[0, 2]]).any(), name
    assert np.isnan(ref[0][1, 2]).all() and np.isnan(ref[0][1, 7]).all()
    # the good sequences' gradients are those of a checked call on them alone
    good = {k: None if v is None else v[[0, 2]] for k, v in inp.items()}
    clean = pdscan.scan_vjp(good["index"], good["d"], good["b"], good["x0"], zero_nan(x)[[0, 2]],
                            grad_x[[0, 2]], maps=good["maps"], mode=mode, reverse=reverse, backend="numpy")
    for g, c in zip(got, clean):
        assert rel_err(g[[0, 2]], c) < 1e-12


@pytest.mark.parametrize("mode", MODES)
def test_step_and_reduce_with_an_index_out_of_range(mode):
    rng = np.random.default_rng()
    inp = with_indices_out_of_range(rng, None)
    x = call(inp, mode=mode, backend="numpy", check_index=False)
    one = pdscan.step(inp["index"][:, 2], inp["d"][:, 2], inp["b"][:, 2], x[:, 1], mode=mode, check_index=False)
    np.testing.assert_array_equal(np.isnan(one), np.isnan(x[:, 2]))
    whole = pdscan.reduce(inp["index"], inp["d"], inp["b"], mode=mode, check_index=False)
    last = pdscan.step(whole.index, whole.d, whole.b, inp["x0"], mode=mode, check_index=False)
    np.testing.assert_array_equal(np.isnan(last), np.isnan(x[:, -1]))
    assert rel_err(zero_nan(last), zero_nan(x[:, -1])) < 1e-12


@pytest.mark.parametrize("mode", MODES)
def test_step_and_reduce_of_an_empty_batch(mode):
    index, values = np.zeros((0, 5, 4), np.int64), np.zeros((0, 5, 4))
    whole = pdscan.reduce(index, values, values, mode=mode)
    assert whole.index.shape == whole.d.shape == whole.b.shape == (0, 4)
    assert pdscan.step(index[:, 0], values[:, 0], values[:, 0], values[:, 0], mode=mode).shape == (0, 4)
