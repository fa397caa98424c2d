"""The JAX adapter: pdscan.jax.scan and the "jax" / "jax_xla" backends under jit,
grad and vmap, against the NumPy reference and a plain jax.lax.scan written here."""

import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import pdscan  # noqa: E402
import pdscan.jax  # noqa: E402
from oracles import make_inputs, random_unit_values, with_indices_out_of_range, zero_nan  # noqa: E402

pytestmark = pytest.mark.jax

MODES = ["scatter", "gather"]
LOSSES = {
    "sum_abs2": lambda x: jnp.sum(jnp.abs(x) ** 2),
    "weighted_real": lambda x: jnp.sum(jnp.real(x * (0.3 - 0.7j)) * jnp.arange(x.shape[-2])[:, None]),
    "last_state": lambda x: jnp.sum(jnp.abs(x[..., -1, :] + 1.0)),
}


@pytest.fixture(autouse=True, scope="module")
def x64():
    """complex128 needs x64, which is global in JAX: on for this module, restored after."""
    before = jnp.asarray(1.0).dtype == jnp.float64  # read the flag without a version-specific API
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


def to_jax(inputs):
    return {k: None if v is None else jnp.asarray(v) for k, v in inputs.items()}


def jax_scan(inputs, **kw):
    return pdscan.jax.scan(inputs["index"], inputs["d"], inputs["b"], inputs["x0"], maps=inputs["maps"], **kw)


def lax_scan_reference(index, d, b, x0, maps, mode, reverse):
    """The recurrence as a plain jax.lax.scan over time (one sequence per vmap lane)."""

    def one_sequence(index, d, b, x0, maps):
        sigma = index if maps is None else jnp.take(maps, index, axis=0)

        def step(x, t):
            s, dt, bt = t
            y = dt * x[s] if mode == "gather" else jnp.zeros_like(x).at[s].add(dt * x)
            return y + bt, y + bt

        _, xs = jax.lax.scan(step, x0, (sigma, d, b), reverse=reverse)
        return xs

    batch = d.shape[:-2]
    x0 = jnp.zeros(batch + d.shape[-1:], d.dtype) if x0 is None else x0
    fn = one_sequence
    for _ in batch:
        fn = jax.vmap(fn, in_axes=(0, 0, 0, 0, None if maps is None else 0))
    return fn(index, d, b, x0, maps)


def numpy_reference(inputs, mode, reverse, grad_x):
    x = pdscan.scan(inputs["index"], inputs["d"], inputs["b"], inputs["x0"], maps=inputs["maps"], mode=mode,
                    reverse=reverse, backend="numpy")
    grads = pdscan.scan_vjp(inputs["index"], inputs["d"], inputs["b"], inputs["x0"], x, grad_x,
                            maps=inputs["maps"], mode=mode, reverse=reverse, backend="numpy")
    return x, grads


def max_rel(got, want):
    got, want = np.asarray(got), np.asarray(want)
    return float(np.max(np.abs(got - want)) / max(1.0, float(np.max(np.abs(want)))))


def scan_and_vjp(inputs, grad_x, **kw):
    """The forward and the reverse-mode cotangents through jax.vjp of pdscan.jax.scan."""
    j = to_jax(inputs)
    diff = {k: j[k] for k in ("d", "b", "x0") if j[k] is not None}

    def fn(diff):
        return jax_scan({**j, **diff}, **kw)

    x, pullback = jax.vjp(fn, diff)
    (grads,) = pullback(jnp.asarray(grad_x))
    return x, (grads["d"], grads["b"], grads.get("x0"))


KERNEL_CASES = [(m, r, k, x0) for m in MODES for r in (False, True) for k in (None, 3) for x0 in (True, False)]
# the pure-XLA path compiles slowly (sort-based scatter-add in the monoid): a covering subset
XLA_CASES = [("scatter", False, None, True), ("scatter", True, 3, False), ("gather", False, 3, True),
             ("gather", True, None, True)]


@pytest.mark.parametrize("backend,mode,reverse,K,x0", [("jax",) + c for c in KERNEL_CASES]
                         + [("jax_xla",) + c for c in XLA_CASES])
def test_forward_and_vjp_match_numpy_reference(backend, mode, reverse, K, x0):
    rng = np.random.default_rng([len(backend), MODES.index(mode), reverse, K or 0, x0])
    inputs = make_inputs(rng, batch=(3,), L=21, N=5, K=K, x0=x0, unit=True)
    grad_x = make_inputs(rng, batch=(3,), L=21, N=5)["b"]
    x, grads = scan_and_vjp(inputs, grad_x, mode=mode, reverse=reverse, backend=backend)
    want_x, want_grads = numpy_reference(inputs, mode, reverse, grad_x)
    assert x.dtype == jnp.complex128 and x.shape == want_x.shape
    assert max_rel(x, want_x) < 1e-12
    for got, want in zip(grads, want_grads):
        assert (got is None) == (want is None)
        if want is not None:
            assert max_rel(got, want) < 1e-12


@pytest.mark.parametrize("backend", ["jax", "jax_xla"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("K", [None, 3])
def test_out_of_range_under_jit_is_nan_where_it_steps(backend, mode, K):
    """Under jit the index cannot be checked: a step whose map sends a lane out of
    range is NaN throughout, the other sequences are untouched, and the cotangents
    are the reference's, NaN for NaN."""
    rng = np.random.default_rng()
    inputs = with_indices_out_of_range(rng, K)
    grad_x = make_inputs(rng, batch=(3,), L=11, N=5)["b"]
    j = to_jax(inputs)

    @jax.jit
    def forward_and_pullback(index, diff, g):
        def fn(diff):
            return pdscan.jax.scan(index, diff["d"], diff["b"], diff["x0"], maps=j["maps"], mode=mode,
                                   backend=backend)
        x, pullback = jax.vjp(fn, diff)
        return x, pullback(g)[0]

    x, grads = forward_and_pullback(j["index"], {k: j[k] for k in ("d", "b", "x0")}, jnp.asarray(grad_x))
    args = (inputs["index"], inputs["d"], inputs["b"], inputs["x0"])
    kw = dict(maps=inputs["maps"], mode=mode, check_index=False, backend="numpy")
    want_x = pdscan.scan(*args, **kw)
    want = pdscan.scan_vjp(*args, want_x, grad_x, **kw)
    x = np.asarray(x)
    assert np.isnan(x[1, 2]).all() and not np.isnan(x[[0, 2]]).any()
    np.testing.assert_array_equal(np.isnan(x), np.isnan(want_x))
    assert max_rel(zero_nan(x), zero_nan(want_x)) < 1e-12
    for name, w in zip(("d", "b", "x0"), want):
        got = np.asarray(grads[name])
        np.testing.assert_array_equal(np.isnan(got), np.isnan(w), err_msg=name)
        assert max_rel(zero_nan(got), zero_nan(w)) < 1e-12, name


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("K", [None, 3])
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_gradients_equal_grad_through_lax_scan(mode, reverse, K, loss):
    rng = np.random.default_rng([MODES.index(mode), reverse, K or 0, len(loss)])
    inputs = to_jax(make_inputs(rng, batch=(2,), L=40, N=6, K=K, unit=True))  # |d| near 1 over 40 steps
    loss_fn = LOSSES[loss]

    def via_pdscan(d, b, x0):
        return loss_fn(pdscan.jax.scan(inputs["index"], d, b, x0, maps=inputs["maps"], mode=mode, reverse=reverse))

    def via_lax(d, b, x0):
        return loss_fn(lax_scan_reference(inputs["index"], d, b, x0, inputs["maps"], mode, reverse))

    args = (inputs["d"], inputs["b"], inputs["x0"])
    got = jax.grad(via_pdscan, argnums=(0, 1, 2))(*args)
    want = jax.grad(via_lax, argnums=(0, 1, 2))(*args)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and max_rel(g, w) < 1e-11


@pytest.mark.parametrize("mode", MODES)
def test_broadcast_and_real_inputs_reduce_their_gradients(mode):
    """d shared over the batch, real b, x0 shared: cotangents summed and real."""
    rng = np.random.default_rng(5)
    L, N = 9, 4
    index = jnp.asarray(rng.integers(0, N, size=(3, L, N)), jnp.int32)
    d = jnp.asarray(random_unit_values(rng, (1, L, N), np.complex128))
    b = jnp.asarray(rng.normal(size=(3, L, N)))
    x0 = jnp.asarray(rng.normal(size=(N,)))

    def loss(scan_fn):
        return lambda d, b, x0: LOSSES["sum_abs2"](scan_fn(d, b, x0))

    def via_pdscan(d, b, x0):
        return pdscan.jax.scan(index, d, b, x0, mode=mode)

    def via_lax(d, b, x0):
        full = jnp.broadcast_to
        return lax_scan_reference(index, full(d, (3, L, N)), full(b, (3, L, N)).astype(d.dtype),
                                  full(x0, (3, N)).astype(d.dtype), None, mode, False)

    got = jax.grad(loss(via_pdscan), argnums=(0, 1, 2))(d, b, x0)
    want = jax.grad(loss(via_lax), argnums=(0, 1, 2))(d, b, x0)
    for g, w, primal in zip(got, want, (d, b, x0)):
        assert g.shape == primal.shape and g.dtype == primal.dtype
        assert max_rel(g, w) < 1e-12


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("K", [None, 2])
def test_check_grads_reverse_mode(mode, K):
    rng = np.random.default_rng([MODES.index(mode), K or 0])
    inputs = to_jax(make_inputs(rng, batch=(2,), L=5, N=3, K=K, unit=True))

    def fn(d, b, x0):
        return pdscan.jax.scan(inputs["index"], d, b, x0, maps=inputs["maps"], mode=mode, reverse=True)

    check_grads(fn, (inputs["d"], inputs["b"], inputs["x0"]), order=1, modes=["rev"])


def test_vmap_equals_a_python_loop_over_several_in_axes():
    rng = np.random.default_rng(7)
    inputs = to_jax(make_inputs(rng, batch=(4,), L=12, N=5, unit=True))
    index, d, b, x0 = inputs["index"], inputs["d"], inputs["b"], inputs["x0"]

    def fn(index, d, b, x0):
        return pdscan.jax.scan(index, d, b, x0, mode="scatter")

    everything = jax.vmap(fn)(index, d, b, x0)
    loop = jnp.stack([fn(index[k], d[k], b[k], x0[k]) for k in range(4)])
    assert max_rel(everything, loop) < 1e-13
    only_index = jax.vmap(fn, in_axes=(0, None, None, None))(index, d[0], b[0], x0[0])
    loop = jnp.stack([fn(index[k], d[0], b[0], x0[0]) for k in range(4)])
    assert max_rel(only_index, loop) < 1e-13
    only_x0 = jax.vmap(fn, in_axes=(None, None, None, 0))(index[0], d[0], b[0], x0)
    loop = jnp.stack([fn(index[0], d[0], b[0], x0[k]) for k in range(4)])
    assert max_rel(only_x0, loop) < 1e-13
    nested = jax.vmap(jax.vmap(fn))(index[None], d[None], b[None], x0[None])[0]
    assert max_rel(nested, everything) < 1e-13


def test_vmap_of_grad_grad_of_vmap_and_jit_of_grad():
    rng = np.random.default_rng(8)
    inputs = to_jax(make_inputs(rng, batch=(3,), L=10, N=4, K=2, unit=True))
    index, maps = inputs["index"], inputs["maps"]

    def loss(d, b, x0, index, maps):
        return LOSSES["weighted_real"](pdscan.jax.scan(index, d, b, x0, maps=maps, mode="gather", reverse=True))

    grad = jax.grad(loss, argnums=(0, 1, 2))
    args = (inputs["d"], inputs["b"], inputs["x0"])
    loop = [grad(*(a[k] for a in args), index[k], maps[k]) for k in range(3)]
    vmapped = jax.vmap(grad)(*args, index, maps)
    jitted = jax.jit(jax.vmap(grad))(*args, index, maps)
    summed = jax.grad(lambda *a: jnp.sum(jax.vmap(loss)(*a, index, maps)), argnums=(0, 1, 2))(*args)
    for part in range(3):
        want = jnp.stack([g[part] for g in loop])
        assert max_rel(vmapped[part], want) < 1e-13
        assert max_rel(jitted[part], want) < 1e-13
        assert max_rel(summed[part], want) < 1e-13
    one = jax.jit(grad)(*(a[0] for a in args), index[0], maps[0])
    assert all(max_rel(o, w) < 1e-13 for o, w in zip(one, loop[0]))


@pytest.mark.parametrize("dtype", [np.complex64, np.float32, np.complex128])
def test_jit_equals_eager_and_reference_in_each_dtype(dtype):
    rng = np.random.default_rng(9)
    inputs = make_inputs(rng, batch=(2, 3), L=17, N=6, dtype=dtype, unit=True)
    j = to_jax(inputs)
    eager = jax_scan(j, mode="gather")
    jitted = jax.jit(lambda j: jax_scan(j, mode="gather"))(j)
    assert eager.dtype == jitted.dtype == dtype
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(jitted))
    wide = {k: v if v is None or v.dtype.kind == "i" else v.astype(np.complex128) for k, v in inputs.items()}
    want = pdscan.scan(wide["index"], wide["d"], wide["b"], wide["x0"], mode="gather", backend="numpy")
    assert max_rel(eager, want) < (1e-12 if dtype == np.complex128 else 2e-5)


def test_numpy_arrays_are_taken_as_jax_arrays():
    rng = np.random.default_rng(13)
    inputs = make_inputs(rng, batch=(2,), L=6, N=3)
    got = pdscan.jax.scan(inputs["index"], jnp.asarray(inputs["d"]), inputs["b"], inputs["x0"])
    want = pdscan.scan(inputs["index"], inputs["d"], inputs["b"], inputs["x0"], backend="numpy")
    assert isinstance(got, jax.Array) and max_rel(got, want) < 1e-13


def test_dtype_promotion_follows_the_core():
    rng = np.random.default_rng(10)
    index = jnp.asarray(rng.integers(0, 4, size=(6, 4)), jnp.int8)
    d = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(6, 4)) + 0j, jnp.complex64)
    assert pdscan.jax.scan(index, d, b).dtype == jnp.complex64
    assert pdscan.jax.scan(index, d, d, jnp.ones(4, jnp.float64)).dtype == jnp.float64


def test_pdscan_scan_routes_jax_arrays_to_the_adapter_and_vjp_both_conventions():
    rng = np.random.default_rng(11)
    inputs = make_inputs(rng, batch=(2,), L=13, N=5, K=3, unit=True)
    grad_x = make_inputs(rng, batch=(2,), L=13, N=5)["b"]
    j = to_jax(inputs)
    assert pdscan.backends.select("jax") is pdscan.backends.get("jax")
    x = pdscan.scan(j["index"], j["d"], j["b"], j["x0"], maps=j["maps"])
    want_x = pdscan.scan(inputs["index"], inputs["d"], inputs["b"], inputs["x0"], maps=inputs["maps"])
    assert isinstance(x, jax.Array) and max_rel(x, want_x) < 1e-12
    for backend in ("jax", "jax_xla"):
        for conjugate in (False, True):
            got = pdscan.scan_vjp(j["index"], j["d"], j["b"], j["x0"], x, jnp.asarray(grad_x), maps=j["maps"],
                                  backend=backend, conjugate=conjugate)
            want = pdscan.scan_vjp(inputs["index"], inputs["d"], inputs["b"], inputs["x0"], want_x, grad_x,
                                   maps=inputs["maps"], backend="numpy", conjugate=conjugate)
            assert all(max_rel(g, w) < 1e-12 for g, w in zip(got, want))


def test_empty_problems_give_zeros_and_zero_gradients():
    index = jnp.zeros((2, 0, 3), jnp.int32)
    d = jnp.ones((2, 0, 3), jnp.complex128)
    x0 = jnp.ones((2, 3), jnp.complex128)
    assert pdscan.jax.scan(index, d, d, x0).shape == (2, 0, 3)
    grad_x0 = jax.grad(lambda x0: jnp.sum(jnp.abs(pdscan.jax.scan(index, d, d, x0)) ** 2))(x0)
    np.testing.assert_array_equal(np.asarray(grad_x0), 0)


def test_bad_input_gets_the_core_errors():
    rng = np.random.default_rng(12)
    j = to_jax(make_inputs(rng, batch=(2,), L=4, N=3))
    index, d, b = j["index"], j["d"], j["b"]
    with pytest.raises(ValueError, match=r"index: values must lie in \[0, 3\); index\[1, 2, 0\] = 7"):
        pdscan.jax.scan(index.at[1, 2, 0].set(7), d, b)
    with pytest.raises(ValueError, match=r"maps: values must lie in \[0, 3\)"):
        pdscan.jax.scan(jnp.zeros((2, 4), jnp.int32), d, b, maps=jnp.full((2, 3), 5))
    with pytest.raises(ValueError, match=r"b: expected shape \(\.\.\., L, N\) = \(\.\.\., 4, 3\)"):
        pdscan.jax.scan(index, d, b[..., :2])
    with pytest.raises(ValueError, match=r"the leading \(batch\) dimensions do not broadcast"):
        pdscan.jax.scan(index, d, jnp.concatenate([b, b, b]))
    with pytest.raises(TypeError, match=r"d: expected float32, float64, complex64 or complex128"):
        pdscan.jax.scan(index, index, b)
    with pytest.raises(TypeError, match=r"index: expected an integer dtype"):
        pdscan.jax.scan(d, d, b)
    with pytest.raises(ValueError, match=r"mode: expected 'scatter' or 'gather'"):
        pdscan.jax.scan(index, d, b, mode="dense")
    with pytest.raises(TypeError, match=r"reverse: expected a Python bool"):
        pdscan.jax.scan(index, d, b, reverse=1)
    with pytest.raises(TypeError, match=r"b: expected an array, got list"):
        pdscan.jax.scan(index, d, b.tolist())
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"arrays from different libraries cannot be mixed .*b is torch"):
        pdscan.jax.scan(index, d, torch.asarray(np.array(b)))
    with pytest.raises(ValueError, match=r"backend: 'numpy' takes numpy arrays, not jax arrays"):
        pdscan.jax.scan(index, d, b, backend="numpy")
    # under jit the shapes are still checked; index values cannot be read there
    with pytest.raises(ValueError, match=r"x0: expected shape \(\.\.\., N\)"):
        jax.jit(lambda d: pdscan.jax.scan(index, d, b, jnp.ones(5, d.dtype)))(d)


def test_validation_rows_for_the_jax_backend():
    from pdscan import validation

    devices = pdscan.backends.get("jax").validation_devices()
    assert [label for label, _, _ in devices][:1] == ["cpu"]
    # the jax_xla rows compile slowly (its reference agreement is tested above)
    rows = validation.run(size=(2, 19, 4, 3), dtypes=("complex128",), only=["jax"])
    assert {r.backend for r in rows} == {"jax"} and [r.device for r in rows][:1] == ["cpu"]
    assert all(r.ok for r in rows), validation.format_table(rows, (2, 19, 4, 3))


def test_finding_the_xla_backend_module_imports_no_framework():
    """pdscan.backends.available() runs find_spec on the entry modules."""
    code = (
        "import importlib.util, sys\n"
        "assert importlib.util.find_spec('pdscan.adapters.jax.xla') is not None\n"
        "assert 'jax' not in sys.modules, 'jax was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _lowered_text(fn, *args, device):
    placed = [jax.device_put(a, device) for a in args]
    return jax.jit(fn).lower(*placed).as_text()


def test_the_cpu_kernels_run_inside_the_compiled_program():
    """The CPU lowering calls the kernels through one buffer callback per direction."""
    rng = np.random.default_rng(14)
    j = to_jax(make_inputs(rng, batch=(2,), L=5, N=3))
    cpu = jax.devices("cpu")[0]

    def loss(d, b, x0):
        return LOSSES["sum_abs2"](pdscan.jax.scan(j["index"], d, b, x0))

    text = _lowered_text(jax.grad(loss, argnums=(0, 1, 2)), j["d"], j["b"], j["x0"], device=cpu)
    assert text.count("xla_buffer_python_cpu_callback") == 2  # forward and VJP, no pure-XLA fallback
    assert "stablehlo.sort" not in text


def _gpu_or_skip():
    try:
        gpu = jax.devices("gpu")[0]
    except RuntimeError:
        pytest.skip("JAX has no GPU here")
    from pdscan.adapters.jax import kernels

    if kernels.cuda_kernel() is None:
        pytest.skip("the CUDA backend is not available")
    return gpu


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
def test_gpu_kernels_match_the_reference_under_jit_grad_and_vmap(dtype, mode, reverse):
    gpu = _gpu_or_skip()
    rng = np.random.default_rng([MODES.index(mode), reverse])
    inputs = make_inputs(rng, batch=(3,), L=300, N=8, K=4, dtype=dtype, unit=True)
    grad_x = make_inputs(rng, batch=(3,), L=300, N=8, dtype=dtype)["b"]
    j = {k: None if v is None else jax.device_put(v, gpu) for k, v in inputs.items()}

    @jax.jit
    def forward_backward(d, b, x0, grad_x):
        x, pullback = jax.vjp(lambda d, b, x0: pdscan.jax.scan(j["index"], d, b, x0, maps=j["maps"], mode=mode,
                                                                 reverse=reverse), d, b, x0)
        return x, pullback(grad_x)

    x, grads = forward_backward(j["d"], j["b"], j["x0"], jax.device_put(grad_x, gpu))
    assert x.devices() == {gpu}
    wide = {k: v if v is None or v.dtype.kind == "i" else v.astype(np.complex128) for k, v in inputs.items()}
    want_x, want_grads = numpy_reference(wide, mode, reverse, grad_x.astype(np.complex128))
    tol = 1e-12 if dtype == np.complex128 else 2e-5
    assert max_rel(x, want_x) < tol
    assert all(max_rel(g, w) < tol for g, w in zip(grads, want_grads))
    vmapped = jax.jit(jax.vmap(lambda i, d, b, x0, m: pdscan.jax.scan(i, d, b, x0, maps=m, mode=mode,
                                                                       reverse=reverse)))(
        j["index"], j["d"], j["b"], j["x0"], j["maps"])
    assert max_rel(vmapped, want_x) < tol


@pytest.mark.cuda
def test_gpu_kernels_run_on_xlas_stream_inside_the_program():
    """One compiled program with two dependent scans and XLA work between them: the
    CUDA kernels must be ordered on XLA's stream, with no host round trip."""
    gpu = _gpu_or_skip()
    rng = np.random.default_rng(15)
    inputs = make_inputs(rng, batch=(64,), L=2048, N=32, dtype=np.complex64, unit=True)
    j = {k: None if v is None else jax.device_put(v, gpu) for k, v in inputs.items()}

    def chained(index, d, b, x0):
        first = pdscan.jax.scan(index, d, b, x0)
        return pdscan.jax.scan(index, d, jnp.sin(first), x0 * 2)

    text = _lowered_text(chained, j["index"], j["d"], j["b"], j["x0"], device=gpu)
    # the GPU callback (XLA may lower both scans to calls of one function), no host callback
    assert "xla_buffer_python_gpu_callback" in text
    assert "callback" not in text.replace("xla_buffer_python_gpu_callback", "")
    got = jax.jit(chained)(j["index"], j["d"], j["b"], j["x0"])
    first = pdscan.scan(inputs["index"], inputs["d"], inputs["b"], inputs["x0"], backend="numpy")
    want = pdscan.scan(inputs["index"], inputs["d"], np.sin(first), inputs["x0"] * 2, backend="numpy")
    assert max_rel(got, want) < 1e-4


def test_the_core_entry_point_works_under_jit_grad_and_vmap():
    """pdscan.scan itself (not only pdscan.jax.scan) on JAX arrays, with a concrete
    index closed over: index values cannot be checked under jit and are skipped."""
    rng = np.random.default_rng(21)
    inputs = to_jax(make_inputs(rng, batch=(2,), L=6, N=4, x0=False))
    index, d = inputs["index"], inputs["d"]
    want = pdscan.scan(index, d, d)
    assert np.allclose(jax.jit(lambda d: pdscan.scan(index, d, d))(d), want)
    grad = jax.jit(jax.grad(lambda d: jnp.sum(jnp.abs(pdscan.scan(index, d, d, mode="gather")) ** 2)))(d)
    lax = jax.grad(lambda d: jnp.sum(jnp.abs(lax_scan_reference(index, d, d, None, None, "gather", False)) ** 2))(d)
    assert np.allclose(grad, lax, rtol=1e-10)
    assert np.allclose(jax.vmap(lambda d: pdscan.scan(index, d, d))(d[None])[0], want)
    with pytest.raises(ValueError, match=r"index: values must lie in \[0, 4\)"):
        pdscan.scan(index.at[1, 2, 3].set(4), d, d)
