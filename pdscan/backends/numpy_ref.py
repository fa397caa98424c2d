"""The NumPy reference: the scan and its VJP as plain loops over time.

This module is the definition every other backend is tested against; it favours
being read over being fast.  Batch dimensions are kept as they are (vectorised),
time is a Python loop.

Forward (``reverse=False``; with ``reverse=True`` time runs from L-1 down to 0)::

    x[t] = A_t x[t-1] + b[t],  x[-1] = x0

VJP (plain transpose; ``conjugate=True`` conjugates d and x first)::

    g[t]        = grad_x[t] + A_{t+1}^T g[t+1]        (adjoint state, g[L] = 0)
    grad_b[t]   = g[t]
    grad_d[t,j] = g[t][sigma_t(j)] * x[t-1][j]           (scatter mode)
    grad_d[t,i] = g[t][i] * x[t-1][sigma_t(i)]           (gather mode)
    grad_x0     = A_0^T g[0]

A step whose map sends a lane out of range (possible only with ``check_index=False``)
is never dereferenced: its state is NaN throughout, and so are its grad_d and the
adjoint state it passes back (``A_t^T g[t]``), as in every backend.
"""

from __future__ import annotations

import numpy as np


def gather(x, sigma):
    """out[..., i] = x[..., sigma[..., i]]"""
    x, sigma = np.broadcast_arrays(x, sigma)
    return np.take_along_axis(x, sigma, axis=-1)


def scatter_add(sigma, values):
    """out[..., i] = sum_{j: sigma[..., j] = i} values[..., j]"""
    values, sigma = np.broadcast_arrays(values, sigma)
    n = values.shape[-1]
    out = np.zeros(values.shape, values.dtype)
    rows = np.arange(values.size // n if n else 0)[:, None]
    np.add.at(out.reshape(-1, n), (rows, sigma.reshape(-1, n)), values.reshape(-1, n))
    return out


def apply(sigma, d, x, mode):
    """A x for A = (sigma, d) in ``mode``."""
    return d * gather(x, sigma) if mode == "gather" else scatter_add(sigma, d * x)


def apply_transposed(sigma, d, g, mode):
    """A^T g: the transpose of scatter is gather with the same (sigma, d), and back."""
    return apply(sigma, d, g, "gather" if mode == "scatter" else "scatter")


def step_map(p, t):
    """sigma_t, the map of step t: index[..., t, :], or maps[..., index[..., t], :]
    (-1 throughout for a selector out of range)."""
    if p.maps is None:
        return p.index[..., t, :]
    choice = p.index[..., t].astype(np.int64)[..., None, None]
    known = (choice >= 0) & (choice < p.K)
    sigma = np.take_along_axis(p.maps, np.where(known, choice, 0), axis=-2)
    return np.where(known, sigma.astype(np.int64), -1)[..., 0, :]


def out_of_range(sigma):
    """True, shape (..., 1), where the map sends a lane out of range."""
    return ((sigma < 0) | (sigma >= sigma.shape[-1])).any(axis=-1, keepdims=True)


def checked_step(p, t):
    """(sigma_t with lane 0 for every lane of a map out of range, that map's rows)."""
    sigma = step_map(p, t)
    bad = out_of_range(sigma)
    return np.where(bad, 0, sigma), bad


class NumpyReference:
    name = "numpy"

    def forward(self, p):
        x = np.empty(p.batch_shape + (p.L, p.N), p.dtype)
        state = p.x0 if p.x0 is not None else np.zeros(p.batch_shape + (p.N,), p.dtype)
        for t in p.time_order():
            sigma, bad = checked_step(p, t)
            state = apply(sigma, p.d[..., t, :], state, p.mode) + p.b[..., t, :]
            state = np.where(bad, np.nan, state)
            x[..., t, :] = state
        return x

    def vjp(self, p, x, grad_x, *, conjugate=False):
        conj = np.conj if conjugate else (lambda a: a)
        grad_d = np.empty(p.batch_shape + (p.L, p.N), p.dtype)
        grad_b = np.empty(p.batch_shape + (p.L, p.N), p.dtype)
        carry = np.zeros(p.batch_shape + (p.N,), p.dtype)  # A_{t+1}^T g[t+1]
        x0 = p.x0 if p.x0 is not None else np.zeros(p.batch_shape + (p.N,), p.dtype)
        order = list(p.time_order())
        for position in range(p.L - 1, -1, -1):  # adjoint: the forward order, backwards
            t = order[position]
            previous = x[..., order[position - 1], :] if position > 0 else x0
            (sigma, bad), d = checked_step(p, t), conj(p.d[..., t, :])
            g = grad_x[..., t, :] + carry
            grad_b[..., t, :] = g
            if p.mode == "scatter":
                grad_d[..., t, :] = gather(g, sigma) * conj(previous)
            else:
                grad_d[..., t, :] = g * gather(conj(previous), sigma)
            grad_d[..., t, :] = np.where(bad, np.nan, grad_d[..., t, :])
            carry = np.where(bad, np.nan, apply_transposed(sigma, d, g, p.mode))
        return grad_d, grad_b, (carry if p.x0 is not None else None)


BACKEND = NumpyReference()
