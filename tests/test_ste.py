"""Straight-through scans: gradients equal autograd through the dense surrogate.

argmax has no derivative, so gradcheck does not apply; the oracle is the dense
straight-through implementation (N x N matrices per step) written here in torch,
differentiated by torch autograd, in float64/complex128.
"""

import numpy as np
import pytest

import pdscan.ste as ste
from oracles import rel_err

torch = pytest.importorskip("torch")
MODES = ["scatter", "gather"]


def _dense_scan(P, d, b, x0, mode, reverse):
    """x_t = A_t x + b_t with A_t = P_t D_t (scatter) or D_t P_t^T (gather), dense."""
    P = P.to(d.dtype)
    A = P * d[..., None, :] if mode == "scatter" else d[..., :, None] * P.transpose(-1, -2)
    L = d.shape[-2]
    state = torch.zeros_like(b[..., 0, :]) if x0 is None else x0.expand_as(b[..., 0, :])
    states = [None] * L
    for t in (range(L - 1, -1, -1) if reverse else range(L)):
        state = (A[..., t, :, :] @ state[..., None])[..., 0] + b[..., t, :]
        states[t] = state
    return torch.stack(states, dim=-2)


def dense_dictionary(w, Q, d, b, x0, mode, reverse):
    K, N = Q.shape[-3], Q.shape[-1]
    W = (torch.nn.functional.one_hot(w.argmax(-1), K).to(w.dtype) - w).detach() + w
    H = torch.nn.functional.one_hot(Q.argmax(-2), N).transpose(-1, -2).to(Q.dtype)  # H[k, i, j]
    Qhat = (H - Q).detach() + Q
    P = torch.einsum("...lk,...kij->...lij", W, Qhat)
    return _dense_scan(P, d, b, x0, mode, reverse)


def dense_mixture(s, M, d, b, x0, mode, reverse, temperature):
    Mt = torch.einsum("...lk,...kij->...lij", s, M)
    soft = torch.softmax(Mt / temperature, dim=-2)
    hard = torch.nn.functional.one_hot(Mt.argmax(-2), Mt.shape[-1]).transpose(-1, -2).to(Mt.dtype)
    P = (hard - soft).detach() + soft
    return _dense_scan(P, d, b, x0, mode, reverse)


def _inputs(rng, batch, L, N, K, x0, ties):
    cplx = lambda *shape: rng.normal(size=shape) + 1j * rng.normal(size=shape)
    w = rng.normal(size=batch + (L, K))
    Q = rng.uniform(size=batch[-1:] + (K, N, N))  # one dictionary per head, broadcast over the batch
    Q = Q / Q.sum(-2, keepdims=True)
    if ties:  # exact ties: argmax must take the first row, and the first router weight
        Q[..., 0, 1, :] = Q[..., 0, 3, :] = Q[..., 0, :, :].max(-2) + 0.1
        w[..., 2, 1] = w[..., 2, 3] = w[..., 2, :].max(-1) + 0.5
    mag = rng.uniform(0.9, 1.0, size=batch + (L, N))
    d = mag * np.exp(2j * np.pi * rng.uniform(size=batch + (L, N)))
    return dict(w=w, Q=Q, d=d, b=cplx(*batch, L, N), x0=cplx(*batch, N) if x0 else None)


def _torch(a):
    return None if a is None else torch.tensor(a, requires_grad=True)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("seed, x0, ties", [(0, True, False), (1, False, True), (2, True, True)])
def test_dictionary_form_matches_dense_surrogate(mode, reverse, seed, x0, ties):
    rng = np.random.default_rng(seed)
    inp = _inputs(rng, (2, 3), L=7, N=5, K=4, x0=x0, ties=ties)
    args = [inp[k] for k in ("w", "Q", "d", "b", "x0")]
    x = ste.scan_ste_dict(*args, mode=mode, reverse=reverse)
    leaves = [_torch(a) for a in args]
    dense_x = dense_dictionary(*leaves, mode, reverse)
    assert rel_err(x, dense_x.detach().numpy()) < 1e-13
    cot = rng.normal(size=x.shape) + 1j * rng.normal(size=x.shape)
    want = torch.autograd.grad(dense_x, [a for a in leaves if a is not None], torch.tensor(cot))
    got = ste.scan_ste_dict_vjp(*args, x, cot, mode=mode, reverse=reverse, conjugate=True)
    got = [g for g in got if g is not None]
    for name, g, w_ in zip(["w", "Q", "d", "b", "x0"], got, want):
        assert g.shape == w_.shape and g.dtype == w_.numpy().dtype, name
        assert rel_err(g, w_.numpy()) < 1e-12, name
    plain = ste.scan_ste_dict_vjp(*args, x, np.conj(cot), mode=mode, reverse=reverse)
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


def test_router_errors():
    rng = np.random.default_rng(5)
    inp = _inputs(rng, (2,), L=3, N=4, K=2, x0=False, ties=False)
    with pytest.raises(ValueError, match=r"w and Q: expected w \(\.\.\., L, K\)"):
        ste.scan_ste_dict(inp["w"][..., :1], inp["Q"], inp["d"], inp["b"])
    with pytest.raises(TypeError, match=r"Q: expected float32 or float64"):
        ste.scan_ste_dict(inp["w"], inp["Q"].astype(complex), inp["d"], inp["b"])
    with pytest.raises(ValueError, match=r"temperature: expected a positive number"):
        ste.scan_ste_mixture(inp["w"], inp["Q"], inp["d"], inp["b"], temperature=0.0)
