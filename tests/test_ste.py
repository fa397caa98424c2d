"""Straight-through scans: gradients equal autograd through the dense surrogate.

argmax has no derivative, so gradcheck does not apply; the oracle is the dense
straight-through implementation (N x N matrices per step) in torch
(tests/ste_oracles.py), differentiated by torch autograd, in float64/complex128.
"""

import importlib.util

import numpy as np
import pytest

import pdscan.ste as ste
from oracles import rel_err

torch = pytest.importorskip("torch")
from ste_oracles import dense_dictionary, dense_mixture, ste_inputs as _inputs  # noqa: E402
MODES = ["scatter", "gather"]


def _torch(a):
    return None if a is None else torch.tensor(a, requires_grad=True)


# the fused contractions (numba) and the array form that defines them (numpy)
@pytest.mark.parametrize("backend", [pytest.param("numba", marks=pytest.mark.skipif(
    importlib.util.find_spec("numba") is None, reason="numba is not installed")), "numpy"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("seed, x0, ties, q_batch", [(0, True, False, (3,)), (1, False, True, (2, 1)),
                                                     (2, True, True, ()), (6, True, False, (2, 3))])
def test_dictionary_form_matches_dense_surrogate(backend, mode, reverse, seed, x0, ties, q_batch, monkeypatch):
    """Q one per head (grad_Q sums over pairs of sequences), one per row, one for all
    and one per sequence."""
    if seed != 1:  # chunks of 3 steps for 7 (the last one short); seed 1 keeps one chunk
        monkeypatch.setattr(ste, "DICTIONARY_CHUNK_ELEMENTS", 2 * 3 * 4 * 5 * 3)
    rng = np.random.default_rng(seed)
    inp = _inputs(rng, (2, 3), L=7, N=5, K=4, x0=x0, ties=ties, q_batch=q_batch)
    args = [inp[k] for k in ("w", "Q", "d", "b", "x0")]
    x = ste.scan_ste_dict(*args, mode=mode, reverse=reverse)
    leaves = [_torch(a) for a in args]
    dense_x = dense_dictionary(*leaves, mode, reverse)
    assert rel_err(x, dense_x.detach().numpy()) < 1e-13
    cot = rng.normal(size=x.shape) + 1j * rng.normal(size=x.shape)
    want = torch.autograd.grad(dense_x, [a for a in leaves if a is not None], torch.tensor(cot))
    got = ste.scan_ste_dict_vjp(*args, x, cot, mode=mode, reverse=reverse, conjugate=True, backend=backend)
    got = [g for g in got if g is not None]
    for name, g, w_ in zip(["w", "Q", "d", "b", "x0"], got, want):
        assert g.shape == w_.shape and g.dtype == w_.numpy().dtype, name
        assert rel_err(g, w_.numpy()) < 1e-12, name
    plain = ste.scan_ste_dict_vjp(*args, x, np.conj(cot), mode=mode, reverse=reverse, backend=backend)
    for g, p in zip(got, [p for p in plain if p is not None]):
        assert rel_err(np.conj(p), g) < 1e-12


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("seed, temperature", [(3, 1.0), (4, 0.3)])
def test_mixture_form_matches_dense_surrogate(mode, reverse, seed, temperature, monkeypatch):
    monkeypatch.setattr(ste, "MIXTURE_CHUNK_ELEMENTS", 2 * 3 * 5 * 5 * 3)  # several chunks of time
    rng = np.random.default_rng(seed)
    inp = _inputs(rng, (2, 3), L=8, N=5, K=3, x0=True, ties=False)
    s = rng.normal(size=(2, 3, 8, 3))
    M = rng.normal(size=(3, 3, 5, 5))
    args = [s, M, inp["d"], inp["b"], inp["x0"]]
    x = ste.scan_ste_mixture(*args, mode=mode, reverse=reverse, temperature=temperature)
    leaves = [_torch(a) for a in args]
    dense_x = dense_mixture(*leaves, mode, reverse, temperature)
    assert rel_err(x, dense_x.detach().numpy()) < 1e-13
    cot = rng.normal(size=x.shape) + 1j * rng.normal(size=x.shape)
    want = torch.autograd.grad(dense_x, leaves, torch.tensor(cot))
    got = ste.scan_ste_mixture_vjp(*args, x, cot, mode=mode, reverse=reverse, temperature=temperature,
                                   conjugate=True)
    for name, g, w_ in zip(["s", "M", "d", "b", "x0"], got, want):
        assert g.shape == w_.shape, name
        assert rel_err(g, w_.numpy()) < 1e-12, name


@pytest.mark.parametrize("backend", [pytest.param("numba", marks=pytest.mark.skipif(
    importlib.util.find_spec("numba") is None, reason="numba is not installed")), "numpy"])
def test_dictionary_gradient_is_formed_per_dictionary(backend):
    """grad_Q is summed over the sequences that share a dictionary inside the
    contraction: (G, K, N, N) for G dictionaries, never one (K, N, N) per sequence (a
    batch of 256 through 16 heads of N = 128 would need 4 GiB), on every path."""
    from pdscan import backends

    rng = np.random.default_rng(7)
    inp = _inputs(rng, (4, 3), L=5, N=6, K=2, x0=False, ties=False)  # one dictionary per head
    args = [inp[k] for k in ("w", "Q", "d", "b", "x0")]
    p = ste._dictionary_problem(*args, "scatter", False)
    members, groups = ste._dictionary_members(p, inp["Q"])
    assert groups == (1, 3) and members.tolist() == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    u, v = (rng.normal(size=(4, 3, 5, 6)) + 1j * rng.normal(size=(4, 3, 5, 6)) for _ in range(2))
    fused = getattr(backends.get(backend), "dictionary_grads", None)
    grad_w, grad_q = fused(p, u, v, members) if fused else ste._dictionary_grads(p, u, v, members)
    assert grad_w.shape == (4, 3, 5, 2) and grad_q.shape == (3, 2, 6, 6)
    for h in range(3):  # the definition: the sum over the head's sequences and steps that chose k
        for k in range(2):
            want = sum(np.outer(u[b, h, t], v[b, h, t]) for b in range(4) for t in range(5) if p.index[b, h, t] == k)
            np.testing.assert_allclose(grad_q[h, k], want, rtol=1e-12, atol=1e-12)

def test_router_errors():
    rng = np.random.default_rng(5)
    inp = _inputs(rng, (2,), L=3, N=4, K=2, x0=False, ties=False)
    with pytest.raises(ValueError, match=r"w and Q: expected w \(\.\.\., L, K\)"):
        ste.scan_ste_dict(inp["w"][..., :1], inp["Q"], inp["d"], inp["b"])
    with pytest.raises(TypeError, match=r"Q: expected float32 or float64"):
        ste.scan_ste_dict(inp["w"], inp["Q"].astype(complex), inp["d"], inp["b"])
    with pytest.raises(ValueError, match=r"temperature: expected a positive number"):
        ste.scan_ste_mixture(inp["w"], inp["Q"], inp["d"], inp["b"], temperature=0.0)
    for bad in (True, float("inf"), float("nan"), "1"):  # bool, not finite, not a number
        with pytest.raises(ValueError, match=r"temperature: expected a positive number"):
            ste.scan_ste_mixture(inp["w"], inp["Q"], inp["d"], inp["b"], temperature=bad)
