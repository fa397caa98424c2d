"""pdscan.jax.scan_ste_dict / scan_ste_mixture: custom_vjp gradients equal torch
autograd through the dense straight-through surrogate (tests/ste_oracles.py), under
jit, grad and vmap.

JAX's convention is the plain transpose: its VJP for the cotangent c is the conjugate
of PyTorch's for conj(c) (for real inputs, PyTorch's for conj(c) itself).
"""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("torch")
import jax.numpy as jnp  # noqa: E402

import pdscan.jax  # noqa: E402
import pdscan.ste as ste  # noqa: E402
from oracles import rel_err  # noqa: E402
from ste_oracles import dense_grads, ste_inputs  # noqa: E402

pytestmark = pytest.mark.jax
MODES = ["scatter", "gather"]
NAMES = {"dict": ["w", "Q", "d", "b", "x0"], "mixture": ["s", "M", "d", "b", "x0"]}


@pytest.fixture(autouse=True, scope="module")
def x64():
    """complex128 needs x64, which is global in JAX: on for this module, restored after."""
    before = jnp.asarray(1.0).dtype == jnp.float64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


def _fn(form, mode, reverse, temperature=1.0, **kw):
    if form == "dict":
        return lambda *a: pdscan.jax.scan_ste_dict(*a, mode=mode, reverse=reverse, **kw)
    return lambda *a: pdscan.jax.scan_ste_mixture(*a, mode=mode, reverse=reverse, temperature=temperature, **kw)


def _mixture_args(rng, inp, batch, L, N, K):
    return [rng.normal(size=batch + (L, K)), rng.normal(size=batch[-1:] + (K, N, N)), inp["d"], inp["b"], inp["x0"]]


def _check(form, args, mode, reverse, rng, temperature=1.0, jit=True, tol=1e-12, **kw):
    """x and the VJP of pdscan.jax against the dense surrogate, for a random cotangent."""
    present = [i for i, a in enumerate(args) if a is not None]
    fn = _fn(form, mode, reverse, temperature, **kw)

    def call(*leaves):
        full = list(args)
        for i, a in zip(present, leaves):
            full[i] = a
        return fn(*full)

    leaves = [jnp.asarray(args[i]) for i in present]
    x, pullback = jax.vjp(call, *leaves)
    cot = rng.normal(size=x.shape) + (1j * rng.normal(size=x.shape) if np.iscomplexobj(x) else 0)
    grads = (jax.jit(pullback) if jit else pullback)(jnp.asarray(cot, dtype=x.dtype))
    want_x, want = dense_grads(form, args, np.conj(cot), mode, reverse, temperature)
    assert x.dtype == want_x.dtype and rel_err(np.asarray(x), want_x) < tol
    for i, g in zip(present, grads):
        name = NAMES[form][i]
        assert g.shape == want[i].shape and g.dtype == want[i].dtype, name
        assert rel_err(np.asarray(g), np.conj(want[i])) < tol, name


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("seed, x0, ties", [(0, True, False), (1, False, True), (2, True, True)])
def test_dictionary_matches_dense_surrogate(mode, reverse, seed, x0, ties):
    rng = np.random.default_rng(seed)
    inp = ste_inputs(rng, (2, 3), L=7, N=5, K=4, x0=x0, ties=ties)
    _check("dict", [inp[k] for k in ("w", "Q", "d", "b", "x0")], mode, reverse, rng)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("seed, temperature", [(3, 1.0), (4, 0.3)])
def test_mixture_matches_dense_surrogate(mode, reverse, seed, temperature, monkeypatch):
    monkeypatch.setattr(ste, "MIXTURE_CHUNK_ELEMENTS", 2 * 3 * 5 * 5 * 3)  # several chunks of time
    rng = np.random.default_rng(seed)
    inp = ste_inputs(rng, (2, 3), L=8, N=5, K=3, x0=True, ties=False)
    _check("mixture", _mixture_args(rng, inp, (2, 3), 8, 5, 3), mode, reverse, rng, temperature)


@pytest.mark.parametrize("form", ["dict", "mixture"])
@pytest.mark.parametrize("seed, batch, L, N, K", [(5, (4,), 16, 6, 2), (6, (1, 2), 3, 9, 5)])
def test_real_values_other_shapes_and_eager(form, seed, batch, L, N, K):
    """float64 values, other sizes, and the pullback called eagerly (not jitted)."""
    rng = np.random.default_rng(seed)
    inp = ste_inputs(rng, batch, L=L, N=N, K=K, x0=True, ties=False, real=True)
    args = [inp[k] for k in ("w", "Q", "d", "b", "x0")] if form == "dict" else \
        _mixture_args(rng, inp, batch, L, N, K)
    _check(form, args, "scatter", seed % 2 == 0, rng, temperature=0.7, jit=False)


@pytest.mark.parametrize("form", ["dict", "mixture"])
def test_broadcast_and_mixed_dtypes(form):
    """d shared by the batch (L, N), a real float32 b, x0 (N,): cotangents are summed
    over the broadcast dimensions and cast back to each input's dtype."""
    rng = np.random.default_rng(7)
    inp = ste_inputs(rng, (3,), L=6, N=4, K=3, x0=True, ties=False)
    inp["d"], inp["x0"] = inp["d"][0], inp["x0"][0]
    inp["b"] = inp["b"].real.astype(np.float32)
    args = [inp[k] for k in ("w", "Q", "d", "b", "x0")] if form == "dict" else \
        _mixture_args(rng, inp, (3,), 6, 4, 3)
    fn = _fn(form, "gather", False)
    leaves = [jnp.asarray(a) for a in args]
    x, pullback = jax.vjp(fn, *leaves)
    cot = rng.normal(size=x.shape) + 1j * rng.normal(size=x.shape)
    grads = pullback(jnp.asarray(cot))
    # the oracle at float64 b: the float32 cotangent is its real part, rounded
    args64 = list(args)
    args64[3] = args[3].astype(np.float64)
    _, want = dense_grads(form, args64, np.conj(cot), "gather", False)
    for g, a, w_ in zip(grads, args, want):
        assert g.shape == np.shape(a) and g.dtype == np.asarray(a).dtype
        assert rel_err(np.asarray(g), np.conj(w_)) < (1e-6 if g.dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("form", ["dict", "mixture"])
def test_vmap_and_jit_grad(form):
    """vmap over a leading axis equals the batched call; jit(grad) of a real loss
    equals the VJP of its cotangent."""
    rng = np.random.default_rng(8)
    inp = ste_inputs(rng, (3, 2), L=5, N=4, K=3, x0=True, ties=False)
    args = [inp[k] for k in ("w", "Q", "d", "b", "x0")] if form == "dict" else \
        _mixture_args(rng, inp, (3, 2), 5, 4, 3)
    args[1] = np.broadcast_to(args[1], (3,) + args[1].shape).copy()  # one table per vmap lane
    args = [jnp.asarray(a) for a in args]
    fn = _fn(form, "scatter", True, 0.5)
    batched = fn(*args)
    mapped = jax.jit(jax.vmap(fn))(*args)
    assert rel_err(np.asarray(mapped), np.asarray(batched)) < 1e-13

    def loss(*a):
        return jnp.sum(jnp.abs(fn(*a)) ** 2)

    x, pullback = jax.vjp(fn, *args)
    want = pullback(2 * jnp.conj(x))  # JAX: the cotangent of |x|^2 is 2 conj(x)
    got = jax.jit(jax.grad(loss, argnums=tuple(range(5))))(*args)
    mapped_grads = jax.jit(jax.vmap(jax.grad(loss, argnums=tuple(range(5)))))(*args)
    for g, m, w_ in zip(got, mapped_grads, want):
        assert rel_err(np.asarray(g), np.asarray(w_)) < 1e-12
        assert rel_err(np.asarray(m), np.asarray(g)) < 1e-12


def test_pure_xla_backend_and_numpy_inputs():
    rng = np.random.default_rng(9)
    inp = ste_inputs(rng, (2,), L=6, N=5, K=4, x0=False, ties=True)
    args = [inp[k] for k in ("w", "Q", "d", "b", "x0")]
    _check("dict", args, "scatter", False, rng, backend="jax_xla")
    x = pdscan.jax.scan_ste_dict(*args)  # NumPy arrays are taken as JAX arrays
    assert isinstance(x, jax.Array) and rel_err(np.asarray(x), ste.scan_ste_dict(*args)) < 1e-13


def test_dictionary_contractions_run_in_the_kernels(monkeypatch):
    """The backward's grad_w / grad_Q run in the host kernels (Numba, or the NumPy
    array form without it) through the callback, not in the K-fold XLA array form,
    and still equal the dense surrogate."""
    from pdscan.adapters.jax import kernels

    seen = []
    original = kernels._dictionary_grads

    def spy(kernel, *args):
        seen.append(kernel)
        return original(kernel, *args)

    monkeypatch.setattr(kernels, "_dictionary_grads", spy)
    rng = np.random.default_rng(12)
    inp = ste_inputs(rng, (2, 3), L=7, N=5, K=4, x0=True, ties=True, q_batch=(2, 1))
    _check("dict", [inp[k] for k in ("w", "Q", "d", "b", "x0")], "gather", False, rng)
    assert seen and all(k is not None for k in seen)

def test_errors():
    import torch

    rng = np.random.default_rng(10)
    inp = ste_inputs(rng, (2,), L=3, N=4, K=2, x0=False, ties=False)
    w, Q, d, b = (jnp.asarray(inp[k]) for k in ("w", "Q", "d", "b"))
    with pytest.raises(ValueError, match=r"w and Q: expected w \(\.\.\., L, K\)"):
        pdscan.jax.scan_ste_dict(w[..., :1], Q, d, b)
    with pytest.raises(ValueError, match=r"temperature: expected a positive number"):
        pdscan.jax.scan_ste_mixture(w, Q, d, b, temperature=0.0)
    for bad in (True, float("inf"), float("nan"), "1"):  # bool, not finite, not a number
        with pytest.raises(ValueError, match=r"temperature: expected a positive number"):
            pdscan.jax.scan_ste_mixture(w, Q, d, b, temperature=bad)
    with pytest.raises(ValueError, match="mode"):
        pdscan.jax.scan_ste_dict(w, Q, d, b, mode="sideways")
    with pytest.raises(TypeError, match="reverse: expected a Python bool"):
        pdscan.jax.scan_ste_dict(w, Q, d, b, reverse=[1])
    with pytest.raises(TypeError, match="JAX or NumPy arrays"):
        pdscan.jax.scan_ste_dict(*(torch.tensor(inp[k]) for k in ("w", "Q", "d", "b")))
    with pytest.raises(ValueError, match=r"w and Q"):  # the core's checks also run under jit
        jax.jit(pdscan.jax.scan_ste_dict)(w[..., :1], Q, d, b)


def _gpu():
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        return None


@pytest.mark.skipif(_gpu() is None, reason="no JAX GPU")
@pytest.mark.parametrize("form", ["dict", "mixture"])
@pytest.mark.parametrize("mode", MODES)
def test_gpu_matches_dense_surrogate(form, mode):
    rng = np.random.default_rng(11)
    inp = ste_inputs(rng, (2, 3), L=33, N=8, K=4, x0=True, ties=True)
    args = [inp[k] for k in ("w", "Q", "d", "b", "x0")] if form == "dict" else \
        _mixture_args(rng, inp, (2, 3), 33, 8, 4)
    with jax.default_device(_gpu()):
        _check(form, args, mode, True, rng)
