"""The differentiable scan shared by the JAX backends, and ``pdscan.jax.scan``.

A JAX backend supplies two primal functions over arrays already broadcast to one
batch shape and cast to one dtype (the arrays of a ``ScanProblem``)::

    _forward(index, maps, d, b, x0, *, mode, reverse) -> x
    _vjp(index, maps, d, x0, x, grad_x, *, mode, reverse, conjugate) -> (grad_d, grad_b, grad_x0)

written with JAX operations only (callbacks included), so that they trace under
jit and batch under vmap.  This module wraps them in a ``jax.custom_vjp``: the
backward is the core's VJP contract in JAX's convention (the plain transpose,
``conjugate=False``), and index and maps get no cotangent.  The custom_vjp sits
after the core's ``prepare`` (which broadcasts and casts with jax.numpy), so JAX's
own autodiff of those operations sums the cotangents over broadcast dimensions and
takes the real part for real inputs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ... import backends
from ..._namespace import common_library
from ..._problem import check_flag, check_options, check_range, prepare

#: the pure-XLA backend's registry entry (kept here too so that it can be selected
#: by name once the adapter is loaded, whatever the core list holds)
XLA_ENTRY = backends.Entry(
    "jax_xla", "pdscan.adapters.jax.xla", ("jax",), ("jax",), 5,
    "pure XLA (no callback): chunked scan over the core monoid, any JAX platform")


class JaxBackend:
    """The backend-contract side of a JAX backend (``forward`` / ``vjp`` over a
    ``ScanProblem``); subclasses supply ``_forward`` and ``_vjp``."""

    name = "jax"
    writes_out = False  # JAX arrays are immutable: results are always new arrays

    def __init__(self):
        self._differentiable = {}
        self._jit_forward = jax.jit(self._forward, static_argnames=("mode", "reverse"))
        self._jit_vjp = jax.jit(self._vjp, static_argnames=("mode", "reverse", "conjugate"))

    def _forward(self, index, maps, d, b, x0, *, mode, reverse):  # pragma: no cover - abstract
        raise NotImplementedError

    def _vjp(self, index, maps, d, x0, x, grad_x, *, mode, reverse, conjugate):  # pragma: no cover
        raise NotImplementedError

    # -- the registry contract ----------------------------------------------------

    def forward(self, p, out=None):
        """The states of the checked problem ``p``: differentiable, jit-able, vmap-able."""
        _reject_out(out)
        scan_fn = self.differentiable(p.mode, p.reverse)
        return scan_fn(p.index, p.maps, p.d, p.b, p.x0)

    def vjp(self, p, x, grad_x, *, conjugate=False, out=None):
        """(grad_d, grad_b, grad_x0) at the full batch shape (grad_x0 None without x0)."""
        _reject_out(out)
        return self._jit_vjp(p.index, p.maps, p.d, p.x0, x, grad_x, mode=p.mode, reverse=p.reverse,
                             conjugate=bool(conjugate))

    def differentiable(self, mode, reverse):
        """The ``jax.custom_vjp`` scan ``(index, maps, d, b, x0) -> x`` for one mode and
        direction (maps and x0 may be None)."""
        key = (mode, reverse)
        if key not in self._differentiable:
            self._differentiable[key] = _make_custom_vjp(self, mode, reverse)
        return self._differentiable[key]

    def validation_devices(self):
        """(label, to_native, to_numpy) for ``pdscan validate``: the CPU, and the GPU
        when JAX has one."""
        # validate runs float64 and complex128 rows, which JAX only holds with x64;
        # the validate command owns its process, so turning it on there is harmless
        jax.config.update("jax_enable_x64", True)
        rows = [("cpu", jax.devices("cpu")[0])]
        gpu = _first_gpu()
        if gpu is not None:
            rows.append(("gpu", gpu))
        return [(label, (lambda a, dev=dev: jax.device_put(a, dev)), np.asarray) for label, dev in rows]


def _reject_out(out):
    if out is not None:
        raise TypeError("out: JAX arrays are immutable; the JAX backends return new arrays (pass out=None)")


def _first_gpu():
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:  # no GPU backend in this process
        return None


def _make_custom_vjp(backend, mode, reverse):
    @jax.custom_vjp
    def scan_fn(index, maps, d, b, x0):
        return backend._jit_forward(index, maps, d, b, x0, mode=mode, reverse=reverse)

    def scan_fwd(index, maps, d, b, x0):
        x = backend._jit_forward(index, maps, d, b, x0, mode=mode, reverse=reverse)
        return x, (index, maps, d, x0, x)

    def scan_bwd(residuals, grad_x):
        index, maps, d, x0, x = residuals
        grad_d, grad_b, grad_x0 = backend._jit_vjp(index, maps, d, x0, x, grad_x, mode=mode, reverse=reverse,
                                                   conjugate=False)
        # integer index and maps take no cotangent (None: a symbolic zero, float0)
        return None, None, grad_d, grad_b, grad_x0

    scan_fn.defvjp(scan_fwd, scan_bwd)
    return scan_fn


def problem_of_arrays(index, maps, d, b, x0, mode, reverse):
    """The ``ScanProblem`` of arrays that a backend's primal functions receive (and
    that host callbacks receive as NumPy / CuPy views): only shapes are looked at."""
    return prepare(index, d, b, x0, maps=maps, mode=mode, reverse=reverse, check_index=False)


def library_of_argument(name, a):
    """The array library of argument ``name``, with the core's error for a non-array."""
    return common_library({name: a})


def _check_index_when_concrete(index, d, b, x0, maps, mode, reverse):
    """The core's checks in the core's order: shapes first (on abstract values, so
    that a concrete index may meet traced values), then index values where they are
    concrete (under jit or vmap there is nothing to read; the kernels are bounds-safe)."""
    jax.eval_shape(lambda *arrays: prepare(*arrays[:4], maps=arrays[4], mode=mode, reverse=reverse,
                                           check_index=False).d, index, d, b, x0, maps)
    N = d.shape[-1]
    checks = [(index, "index", N)] if maps is None else [(index, "index", maps.shape[-2]), (maps, "maps", N)]
    for array, name, high in checks:
        try:
            check_range(jnp, array, name, high)
        except jax.errors.ConcretizationTypeError:
            pass


@functools.partial(jax.jit, static_argnames=("mode", "reverse", "backend"))
def _checked_scan(index, d, b, x0, maps, *, mode, reverse, backend):
    # prepare runs inside jit: every array is then a tracer, so the core's checks see
    # one (abstract) device even when a concrete index meets traced values under grad
    p = prepare(index, d, b, x0, maps=maps, mode=mode, reverse=reverse, check_index=False)
    chosen = backends.select("jax", backend)
    if p.empty and not getattr(chosen, "handles_empty", False):
        return jnp.zeros(p.batch_shape + (p.L, p.N), dtype=p.dtype)
    return chosen.forward(p)


def scan(index, d, b, x0=None, *, maps=None, mode="scatter", reverse=False, backend=None, check_index=True):
    """``pdscan.scan`` for JAX arrays, usable under jax.jit, jax.grad and jax.vmap.

    The same arguments, broadcasting, dtype promotion and errors as ``pdscan.scan``,
    except that NumPy arrays are taken (as JAX arrays) as every JAX function does;
    ``backend`` is ``"jax"`` (the project's kernels, the default) or ``"jax_xla"``
    (pure XLA).  Index values are checked when they are concrete; under jit or vmap
    they cannot be read, and an out-of-range index makes the state of its step NaN.
    """
    named = dict(index=index, d=d, b=b, x0=x0, maps=maps)
    libraries = {name: library_of_argument(name, a) for name, a in named.items() if a is not None}
    if set(libraries.values()) - {"numpy", "jax"}:
        common_library(named)  # the core's error for mixed libraries
        raise TypeError(f"pdscan.jax.scan takes JAX or NumPy arrays, got {libraries['d']} arrays")
    # NumPy arrays become JAX arrays, as in any JAX function (jax.test_util and jit
    # constants hand those over); other libraries are never converted
    index, d, b, x0, maps = (None if a is None else jnp.asarray(a) for a in (index, d, b, x0, maps))
    check_options(mode, reverse)  # before jit hashes them as static arguments
    check_flag(check_index, "check_index")
    if check_index:
        _check_index_when_concrete(index, d, b, x0, maps, mode, reverse)
    return _checked_scan(index, d, b, x0, maps, mode=mode, reverse=reverse, backend=backend)


if XLA_ENTRY.name not in backends.entries():
    backends.register(XLA_ENTRY)
