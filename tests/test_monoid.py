"""The PD monoid: its laws, its agreement with dense matrices, and any namespace."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import array_api_compat.numpy as xnp
import pdscan
from pdscan import monoid
from oracles import dense, dense_scan, make_inputs, rel_err

MODES = ["scatter", "gather"]


@st.composite
def affine_elements(draw, count):
    """``count`` random affine elements sharing a batch and N, drawn with collisions."""
    n = draw(st.integers(1, 7))
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    seed = draw(st.integers(0, 2**32 - 1))
    rows = draw(st.integers(1, n))  # index values from [0, rows): rows < n forces collisions
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        shape = batch + (n,)
        out.append((rng.integers(0, rows, size=shape),
                    rng.normal(size=shape) + 1j * rng.normal(size=shape),
                    rng.normal(size=shape) + 1j * rng.normal(size=shape)))
    return out


@settings(max_examples=60, deadline=None)
@given(affine_elements(3), st.sampled_from(MODES))
def test_combine_is_associative(elements, mode):
    a, b, c = (monoid.Affine(*e, mode) for e in elements)
    left = monoid.combine(xnp, monoid.combine(xnp, c, b), a)
    right = monoid.combine(xnp, c, monoid.combine(xnp, b, a))
    np.testing.assert_array_equal(left.index, right.index)
    np.testing.assert_allclose(left.d, right.d, rtol=1e-13)
    np.testing.assert_allclose(left.b, right.b, rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(affine_elements(2), st.sampled_from(MODES))
def test_compose_and_apply_match_dense(elements, mode):
    (s1, d1, _), (s2, d2, x) = elements
    index, d = monoid.compose(xnp, (s2, d2), (s1, d1), mode)
    np.testing.assert_allclose(dense(index, d, mode), dense(s2, d2, mode) @ dense(s1, d1, mode),
                               rtol=1e-13, atol=1e-13)
    y = monoid.apply(xnp, s1, d1, x, mode)
    np.testing.assert_allclose(y, np.einsum("...ij,...j->...i", dense(s1, d1, mode), x), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("mode", MODES)
def test_identity_and_transpose(mode):
    rng = np.random.default_rng(0)
    s, d = rng.integers(0, 3, size=(2, 5)), rng.normal(size=(2, 5))
    e = monoid.identity(xnp, (2, 5), np.float64, mode)
    index, dd = monoid.compose(xnp, (s, d), (e.index, e.d), mode)
    np.testing.assert_array_equal(index, s)
    np.testing.assert_array_equal(dd, d)
    index, dd = monoid.compose(xnp, (e.index, e.d), (s, d), mode)
    np.testing.assert_array_equal(index, s)
    np.testing.assert_array_equal(dd, d)
    t = monoid.transpose(monoid.Affine(s, d, None, mode))
    np.testing.assert_array_equal(dense(t.index, t.d, t.mode), np.swapaxes(dense(s, d, mode), -1, -2))


def test_scatter_add_sums_collisions():
    index = np.array([[2, 2, 0, 2], [1, 1, 1, 1]])
    values = np.array([[1.0, 10.0, 100.0, 1000.0], [1.0, 2.0, 3.0, 4.0]])
    got = monoid.scatter_add(xnp, index, values, 4)
    np.testing.assert_array_equal(got, [[100.0, 0.0, 1011.0, 0.0], [0.0, 10.0, 0.0, 0.0]])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
def test_associative_scan_matches_sequential_reference(mode, reverse):
    """The tree-ordered scan is an independent oracle for the sequential loop."""
    rng = np.random.default_rng(1)
    inp = make_inputs(rng, batch=(2,), L=21, N=6, x0=False)
    prefix = monoid.associative_scan(xnp, monoid.Affine(inp["index"], inp["d"], inp["b"], mode), reverse=reverse)
    x = pdscan.scan(inp["index"], inp["d"], inp["b"], mode=mode, reverse=reverse, backend="numpy")
    assert rel_err(prefix.b, x) < 1e-13


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("K", [None, 3])
def test_array_api_strict_namespace(mode, K):
    """pdscan.scan on arrays of a namespace it has no backend for: the generic path."""
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(2)
    inp = make_inputs(rng, batch=(2,), L=9, N=5, K=K)
    strict = {k: None if v is None else xps.asarray(v) for k, v in inp.items()}
    x = pdscan.scan(strict["index"], strict["d"], strict["b"], strict["x0"], maps=strict["maps"], mode=mode)
    assert type(x).__module__.startswith("array_api_strict")
    assert rel_err(np.asarray(x), dense_scan(**inp, mode=mode)) < 1e-13
    g = xps.asarray(np.ones(x.shape, np.complex128))
    grads = pdscan.scan_vjp(strict["index"], strict["d"], strict["b"], strict["x0"], x, g, maps=strict["maps"],
                            mode=mode)
    want = pdscan.scan_vjp(inp["index"], inp["d"], inp["b"], inp["x0"], np.asarray(x), np.asarray(g),
                           maps=inp["maps"], mode=mode, backend="numpy")
    for a, w in zip(grads, want):
        assert rel_err(np.asarray(a), w) < 1e-13
    total = pdscan.reduce(strict["index"], strict["d"], strict["b"], maps=strict["maps"], mode=mode)
    last = pdscan.step(total.index, total.d, total.b, strict["x0"], mode=mode)
    assert rel_err(np.asarray(last), np.asarray(x)[:, -1]) < 1e-13


def test_reads_and_writes_out_of_range_stay_in_their_row():
    """gather reads nothing for an index out of range (NaN; -1 for an index), and
    scatter_add puts its value nowhere: no row of the flattened batch is reached
    from another (an index of N or -1 would otherwise land in the next or previous
    row)."""
    x = np.arange(1.0, 7.0).reshape(2, 3)
    index = np.array([[0, 3, 2], [-1, 1, 2]])
    got = monoid.gather(xnp, x, index)
    np.testing.assert_array_equal(got, [[1.0, np.nan, 3.0], [np.nan, 5.0, 6.0]])
    np.testing.assert_array_equal(monoid.gather(xnp, np.array([[2, 0, 1], [1, 1, 0]]), index),
                                  [[2, -1, 1], [-1, 1, 0]])
    np.testing.assert_array_equal(monoid.scatter_add(xnp, index, x, 3), [[1.0, 0.0, 3.0], [0.0, 5.0, 6.0]])
    # an empty batch gives an empty result (the sort's passes never run)
    assert monoid.scatter_add(xnp, np.zeros((0, 4), int), np.zeros((0, 4)), 4).shape == (0, 4)


@pytest.mark.parametrize("mode", MODES)
def test_a_step_out_of_range_is_x_to_nan_with_a_map_in_range(mode):
    index = np.array([[[0, 1, 2], [0, 5, 1]]])  # step 1 sends lane 1 out of range
    d, b = np.ones((1, 2, 3)), np.ones((1, 2, 3))
    element = monoid.steps(xnp, index, d, b, mode)
    np.testing.assert_array_equal(element.index, [[[0, 1, 2], [0, 1, 2]]])
    assert np.isnan(element.d[0, 1]).all() and np.isnan(element.b[0, 1]).all()
    assert not np.isnan(element.d[0, 0]).any() and not np.isnan(element.b[0, 0]).any()
