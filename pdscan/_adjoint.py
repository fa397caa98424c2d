"""The VJP of a scan expressed through scans, for any backend that has a forward.

The adjoint state obeys its own PD recurrence, running the other way in time with
the transposed transforms shifted by one step:

    g[t] = grad_x[t] + A_next(t)^T g[next(t)]

so it is a scan in the transposed mode with ``reverse`` flipped.  The rest of the
VJP (grad_d, grad_x0) is a few element-wise operations with the core monoid.  A
backend with a fused backward kernel does not need this; the generic array-API
backend uses it as is.
"""

from __future__ import annotations

from . import monoid


def step_maps(xp, p):
    """sigma_t for every step, batch + (L, N), signed (a selector out of range gives
    a map of -1)."""
    sigma = p.index if p.maps is None else monoid.select_maps(xp, p.maps, p.index)
    return xp.astype(sigma, monoid.default_index_dtype(xp), copy=False)


def step_elements(xp, p) -> monoid.Affine:
    """The problem's steps as affine elements (``monoid.steps``)."""
    return monoid.steps(xp, step_maps(xp, p), p.d, p.b, p.mode)


def _next_along_time(xp, a, axis, reverse, zero_last):
    length = a.shape[axis]
    sl = [slice(None)] * a.ndim
    def part(start, stop):
        sl[axis] = slice(start, stop)
        return a[tuple(sl)]
    edge = part(0, 1) if reverse else part(length - 1, length)
    if zero_last:
        edge = xp.zeros_like(edge)
    if reverse:
        return xp.concat([edge, part(0, length - 1)], axis=axis)
    return xp.concat([part(1, length), edge], axis=axis)


def vjp_by_adjoint_scan(forward, p, x, grad_x, *, conjugate=False):
    """(grad_d, grad_b, grad_x0) of the scan ``p`` using only ``forward(problem)``."""
    xp = p.xp
    d = xp.conj(p.d) if conjugate and xp.isdtype(p.dtype, "complex floating") else p.d
    index_axis = -1 if p.maps is not None else -2
    adjoint = p.replace(
        index=_next_along_time(xp, p.index, p.index.ndim + index_axis, p.reverse, False),
        d=_next_along_time(xp, d, d.ndim - 2, p.reverse, True),
        b=grad_x,
        x0=None,
        mode=monoid.transpose_mode(p.mode),
        reverse=not p.reverse,
    )
    g = forward(adjoint)
    xc = xp.conj(x) if conjugate and xp.isdtype(p.dtype, "complex floating") else x
    x0 = p.x0
    if x0 is not None and conjugate and xp.isdtype(p.dtype, "complex floating"):
        x0 = xp.conj(x0)
    first = xp.zeros_like(xc[..., :1, :]) if x0 is None else x0[..., None, :]
    if p.reverse:  # previous state of step t is x[t+1]; of step L-1 it is x0
        previous = xp.concat([xc[..., 1:, :], first], axis=-2)
    else:
        previous = xp.concat([first, xc[..., :-1, :]], axis=-2)
    sigma = step_maps(xp, p)
    # a step with a lane out of range: NaN for its grad_d and for what flows through it
    # (the adjoint scan's step before it, and grad_x0), as in the kernels
    bad = monoid.bad_steps(xp, sigma, p.N)
    if p.mode == "scatter":
        grad_d = monoid.gather(xp, g, sigma) * previous
    else:
        grad_d = g * monoid.gather(xp, previous, sigma)
    grad_x0 = None
    if p.x0 is not None:
        t0 = p.L - 1 if p.reverse else 0
        grad_x0 = monoid.apply(xp, sigma[..., t0, :], d[..., t0, :], g[..., t0, :],
                               monoid.transpose_mode(p.mode))
        grad_x0 = monoid.poison(xp, grad_x0, bad[..., t0, :])
    return monoid.poison(xp, grad_d, bad), g, grad_x0
