"""The dense straight-through surrogates (N x N matrices per step) in torch, and
random inputs for the straight-through scans.

argmax has no derivative, so gradcheck does not apply; these surrogates,
differentiated by torch autograd in float64/complex128, are the oracle for every
straight-through test (core, JAX, torch).  They share no code with the library.
"""

from __future__ import annotations

import numpy as np
import torch


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


def ste_inputs(rng, batch, L, N, K, x0, ties, real=False, q_batch=None):
    """w (batch, L, K), Q (q_batch, K, N, N) column-stochastic (default batch[-1:], one
    per head), d, b, x0: complex unless ``real``; ``ties`` puts exact ties into Q's
    columns and w's rows."""
    vals = (lambda *shape: rng.normal(size=shape)) if real else \
        (lambda *shape: rng.normal(size=shape) + 1j * rng.normal(size=shape))
    w = rng.normal(size=batch + (L, K))
    Q = rng.uniform(size=(batch[-1:] if q_batch is None else q_batch) + (K, N, N))  # broadcast over the batch
    Q = Q / Q.sum(-2, keepdims=True)
    if ties:  # exact ties: argmax must take the first row, and the first router weight
        Q[..., 0, 1, :] = Q[..., 0, 3, :] = Q[..., 0, :, :].max(-2) + 0.1
        w[..., 2, 1] = w[..., 2, 3] = w[..., 2, :].max(-1) + 0.5
    mag = rng.uniform(0.9, 1.0, size=batch + (L, N))
    if real:
        d = mag * rng.choice([-1.0, 1.0], size=batch + (L, N))
    else:
        d = mag * np.exp(2j * np.pi * rng.uniform(size=batch + (L, N)))
    return dict(w=w, Q=Q, d=d, b=vals(*batch, L, N), x0=vals(*batch, N) if x0 else None)


def dense_grads(form, args, cot, mode, reverse, temperature=1.0):
    """(x, grads) of the dense surrogate at NumPy ``args`` (router, table, d, b, x0)
    for the cotangent ``cot``, in PyTorch's convention; None for a missing x0."""
    leaves = [None if a is None else torch.tensor(a, requires_grad=True) for a in args]
    if form == "dict":
        x = dense_dictionary(*leaves, mode, reverse)
    else:
        x = dense_mixture(*leaves, mode, reverse, temperature)
    want = torch.autograd.grad(x, [a for a in leaves if a is not None], torch.tensor(cot).to(x.dtype))
    want = iter(g.numpy() for g in want)
    return x.detach().numpy(), [None if a is None else next(want) for a in leaves]
