"""The public functions: check the arguments once, then hand off to a backend."""

from __future__ import annotations

from . import backends, monoid
from ._namespace import common_library, device as _device
from ._adjoint import step_elements
from ._problem import check_flag, check_like_output, check_range, prepare, prepare_step, unbroadcast


def scan(index, d, b, x0=None, *, maps=None, mode="scatter", reverse=False, backend=None,
         check_index=True):
    """The states of the PD recurrence x_t = A_t x_{t-1} + b_t, shape batch + (L, N).

    index: (..., L, N) integer maps sigma_t, or (..., L) selectors into ``maps``
        (..., K, N), so that sigma_t = maps[..., index[..., t], :].
    d, b: (..., L, N) float32/float64/complex64/complex128; x0: (..., N) or None.
    mode: "scatter" ((A x)[i] = sum_{j: sigma(j)=i} d[j] x[j]) or "gather"
        ((A x)[i] = d[i] x[sigma(i)]).
    reverse: run from t = L-1 down to 0 (x_t = A_t x_{t+1} + b_t, x_L = x0).
    backend: a name from ``pdscan.backends.available()``; None picks the best one
        for the arrays' library.
    check_index: check that index values are in range before any work (on a GPU
        this reads two scalars back); with False, kernels stay bounds-safe and an
        out-of-range index makes the state of its step NaN (docs/semantics.md).

    Leading dimensions broadcast.  The result is in the inputs' library and on
    their device; torch and JAX arrays go through the differentiable adapters.
    """
    p = prepare(index, d, b, x0, maps=maps, mode=mode, reverse=reverse, check_index=check_index)
    be = backends.select(p.library, backend)
    if p.empty and not getattr(be, "handles_empty", False):
        return p.xp.zeros(p.batch_shape + (p.L, p.N), dtype=p.dtype, device=_device(p.d))
    return be.forward(p)


def scan_vjp(index, d, b, x0, x, grad_x, *, maps=None, mode="scatter", reverse=False, backend=None,
             conjugate=False, check_index=True):
    """The cotangents (grad_d, grad_b, grad_x0) of ``scan`` for the output cotangent
    ``grad_x``, given the forward's output ``x``.

    Each has the shape and dtype of its input (summed over broadcast dimensions; the
    real part for a real input); grad_x0 is None when x0 is None.

    ``conjugate=False`` is the plain transpose J^T grad_x, JAX's convention for
    holomorphic maps.  ``conjugate=True`` is PyTorch's (conjugate Wirtinger)
    convention, conj(J)^T grad_x, which is the same computation with d and x
    conjugated.  For real dtypes the two agree.
    """
    check_flag(conjugate, "conjugate")
    p = prepare(index, d, b, x0, maps=maps, mode=mode, reverse=reverse, check_index=check_index,
                extra=dict(x=x, grad_x=grad_x))
    x = check_like_output(p, x, "x")
    grad_x = check_like_output(p, grad_x, "grad_x")
    be = backends.select(p.library, backend)
    xp = p.xp
    if p.empty and not getattr(be, "handles_empty", False):
        zero = xp.zeros(p.batch_shape + (p.L, p.N), dtype=p.dtype, device=_device(p.d))
        grads = (zero, zero, None if x0 is None else xp.zeros(p.batch_shape + (p.N,), dtype=p.dtype,
                                                              device=_device(p.d)))
    else:
        grads = be.vjp(p, x, grad_x, conjugate=conjugate)
    grad_d, grad_b, grad_x0 = grads
    return (
        unbroadcast(xp, grad_d, d),
        unbroadcast(xp, grad_b, b),
        None if x0 is None else unbroadcast(xp, grad_x0, x0),
    )


def step(index, d, b, x, *, maps=None, mode="scatter", check_index=True):
    """One step of the recurrence, A x + b, for autoregressive decoding with an O(N)
    state.

    index: (..., N) map, or (...) selector into ``maps`` (..., K, N); d, b, x: (..., N).
    Works in any array-API namespace (the core monoid, no backend).
    """
    lifted = prepare_step(index, d, b, x, maps=maps, mode=mode, check_index=check_index)
    xp = lifted.xp
    one = step_elements(xp, lifted)
    return monoid.apply(xp, one.index[..., 0, :], one.d[..., 0, :], lifted.x0, mode) + one.b[..., 0, :]


def reduce(index, d, b, *, maps=None, mode="scatter", reverse=False, check_index=True):
    """The whole sequence as one affine element (index, d, b, mode), each (..., N):
    the scan's last state is ``step(A.index, A.d, A.b, x0, mode=A.mode)``.

    Chunks of a long sequence reduce independently (on different devices, say) and
    combine with ``pdscan.monoid.combine``; L = 0 gives the identity.
    """
    p = prepare(index, d, b, None, maps=maps, mode=mode, reverse=reverse, check_index=check_index)
    xp = p.xp
    if p.L == 0:
        return monoid.identity(xp, p.batch_shape + (p.N,), p.dtype, mode, device=_device(p.d))
    return monoid.reduce(xp, step_elements(xp, p), reverse=reverse)


__all__ = ["scan", "scan_vjp", "step", "reduce", "check_range"]
