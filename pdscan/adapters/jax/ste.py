"""``pdscan.jax.scan_ste_dict`` and ``pdscan.jax.scan_ste_mixture``: the
straight-through scans (``pdscan.ste``) as ``jax.custom_vjp`` functions, under
jit, grad and vmap.

The forward and the backward are the core's ``scan_ste_*`` and ``scan_ste_*_vjp``
called on JAX arrays (tracers): the argmax, the contractions and the rank-one
gradients are jax.numpy operations, and the scan and its VJP run on the selected
JAX backend (the ``"jax"`` kernels through buffer_callback by default).  The
backward is JAX's convention, the plain transpose (``conjugate=False``).

As in ``pdscan.jax.scan``, the custom_vjp sits after the broadcasting and casting
of d, b and x0 (jax.numpy, so JAX's autodiff sums their cotangents over broadcast
dimensions and takes the real part for a real input).  b is then at the full
batch shape and the problem's dtype, like the states x, so the backward keeps x
only and lets it stand in for b (the VJP does not read b).  w/s and Q/M keep their
own shapes: the core sums their gradients over the dimensions broadcasting added.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ... import ste
from ..._namespace import common_library
from ._differentiable import library_of_argument

_custom = {}


def _to_jax(fname, named):
    """JAX arrays of the arguments (NumPy arrays are taken, as JAX functions do)."""
    libraries = {name: library_of_argument(name, a) for name, a in named.items() if a is not None}
    if set(libraries.values()) - {"numpy", "jax"}:
        common_library(named)  # the core's error for mixed libraries
        raise TypeError(f"pdscan.jax.{fname} takes JAX or NumPy arrays, got {libraries['d']} arrays")
    return [None if a is None else jnp.asarray(a) for a in named.values()]


def _problem(form, router, table, d, b, x0, mode, reverse, temperature):
    if form == "dict":
        return ste._dictionary_problem(router, table, d, b, x0, mode, reverse)
    return ste._mixture_problem(router, table, d, b, x0, mode, reverse, temperature)[0]


def _full_values(form, router, table, d, b, x0, mode, reverse, temperature):
    """d, b and x0 broadcast to the problem's batch shape and cast to its dtype,
    after the core's checks (run on abstract values: nothing is computed)."""
    meta = {}

    def probe(router, table, d, b, x0):
        p = _problem(form, router, table, d, b, x0, mode, reverse, temperature)
        meta.update(batch=p.batch_shape, dtype=p.dtype, L=p.L, N=p.N)
        return p.d

    jax.eval_shape(probe, router, table, d, b, x0)
    batch, dtype, L, N = meta["batch"], meta["dtype"], meta["L"], meta["N"]

    def full(a, tail):
        return None if a is None else jnp.broadcast_to(a.astype(dtype), batch + tail)

    return full(d, (L, N)), full(b, (L, N)), full(x0, (N,))


def _differentiable(form, mode, reverse, temperature, backend):
    """The custom_vjp ``(router, table, d, b, x0) -> x`` of one form and configuration;
    d, b and x0 already at the full batch shape and one dtype."""
    key = (form, mode, reverse, temperature, backend)
    if key in _custom:
        return _custom[key]
    kw = dict(mode=mode, reverse=reverse, backend=backend)
    if form == "dict":
        forward, vjp = ste.scan_ste_dict, ste.scan_ste_dict_vjp
    else:
        kw["temperature"] = temperature
        forward, vjp = ste.scan_ste_mixture, ste.scan_ste_mixture_vjp

    @jax.custom_vjp
    def scan_fn(router, table, d, b, x0):
        return forward(router, table, d, b, x0, **kw)

    def scan_fwd(router, table, d, b, x0):
        x = forward(router, table, d, b, x0, **kw)
        return x, (router, table, d, x0, x)

    def scan_bwd(residuals, grad_x):
        router, table, d, x0, x = residuals
        # x stands in for b: same shape and dtype, and the VJP reads neither's values
        return tuple(vjp(router, table, d, x, x0, x, grad_x, conjugate=False, **kw))

    scan_fn.defvjp(scan_fwd, scan_bwd)
    _custom[key] = scan_fn
    return scan_fn


@functools.partial(jax.jit, static_argnames=("form", "mode", "reverse", "temperature", "backend"))
def _run(router, table, d, b, x0, *, form, mode, reverse, temperature, backend):
    d, b, x0 = _full_values(form, router, table, d, b, x0, mode, reverse, temperature)
    return _differentiable(form, mode, reverse, temperature, backend)(router, table, d, b, x0)


def scan_ste_dict(w, Q, d, b, x0=None, *, mode="scatter", reverse=False, backend=None):
    """``pdscan.scan_ste_dict`` for JAX arrays (dictionary form, Flash PD-SSM).

    Hard forward: k_t = argmax_k w[..., t, k], sigma_k(j) = argmax_i Q[..., k, i, j].
    Gradients (with respect to w, Q, d, b and x0) are those of the dense
    straight-through surrogate, in JAX's convention, computed without any N x N
    tensor per step.  Usable under jax.jit, jax.grad and jax.vmap.
    """
    w, Q, d, b, x0 = _to_jax("scan_ste_dict", dict(w=w, Q=Q, d=d, b=b, x0=x0))
    ste.check_static(mode, reverse)
    return _run(w, Q, d, b, x0, form="dict", mode=mode, reverse=reverse, temperature=None, backend=backend)


def scan_ste_mixture(s, M, d, b, x0=None, *, mode="scatter", reverse=False, temperature=1.0, backend=None):
    """``pdscan.scan_ste_mixture`` for JAX arrays (per-step mixture form, PD-SSM).

    Hard forward: sigma_t(j) = argmax_i M_t[i, j] with M_t = sum_k s[..., t, k] M[..., k].
    Gradients are those of the dense surrogate through the column softmax of
    M_t / temperature (a static Python number), in JAX's convention; M_t is
    recomputed a chunk of steps at a time, never stored for every step.
    """
    s, M, d, b, x0 = _to_jax("scan_ste_mixture", dict(s=s, M=M, d=d, b=b, x0=x0))
    ste.check_static(mode, reverse, temperature)
    return _run(s, M, d, b, x0, form="mixture", mode=mode, reverse=reverse, temperature=float(temperature),
                backend=backend)
