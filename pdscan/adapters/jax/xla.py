"""The pure-XLA JAX backend (``"jax_xla"``): no host callback, any JAX platform.

The time axis is cut into chunks of ``CHUNK`` steps.  ``jax.lax.scan`` walks the
chunks in order carrying the state; inside a chunk, the core monoid's associative
scan gives every step's prefix as one affine element, which is applied to the
carried state.  Work is O(L log CHUNK) and the sequential depth L / CHUNK.  The
VJP is the core's adjoint scan (``pdscan._adjoint``) over this same forward.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ... import monoid
from ..._adjoint import step_elements, vjp_by_adjoint_scan
from ._differentiable import JaxBackend, problem_of_arrays

#: steps per chunk: the associative scan inside costs log2(CHUNK) combines per step
#: (each, in scatter mode, a sort-based scatter-add), and compile time grows with it
CHUNK = 16


def _pad_time(a, pad, fill):
    """``a`` (..., L, N) with ``pad`` more steps holding ``fill`` (broadcast to (..., N))."""
    if pad == 0:
        return a
    tail = jnp.broadcast_to(fill, a.shape[:-2] + (pad, a.shape[-1])).astype(a.dtype)
    return jnp.concatenate([a, tail], axis=-2)


def _to_chunks(a, n_chunks, chunk):
    """(..., n_chunks * chunk, N) -> (n_chunks, ..., chunk, N), chunks leading for lax.scan."""
    split = jnp.reshape(a, a.shape[:-2] + (n_chunks, chunk, a.shape[-1]))
    return jnp.moveaxis(split, -3, 0)


def _from_chunks(a):
    """(n_chunks, ..., chunk, N) -> (..., n_chunks * chunk, N)."""
    joined = jnp.moveaxis(a, 0, -3)
    return jnp.reshape(joined, joined.shape[:-3] + (joined.shape[-3] * joined.shape[-2], joined.shape[-1]))


def chunked_scan(p):
    """The states of the (non-empty) problem ``p`` of JAX arrays, batch + (L, N)."""
    sigma, d, b, _ = step_elements(jnp, p)
    if p.reverse:  # a reverse scan is a forward scan over the steps in reverse order
        sigma, d, b = (jnp.flip(a, axis=-2) for a in (sigma, d, b))
    chunk = min(CHUNK, p.L)
    n_chunks = -(-p.L // chunk)
    pad = n_chunks * chunk - p.L
    # the padding steps are identities (x -> x), so they leave the real states alone
    sigma = _pad_time(sigma, pad, jnp.arange(p.N, dtype=sigma.dtype))
    d = _pad_time(d, pad, jnp.ones((), p.dtype))
    b = _pad_time(b, pad, jnp.zeros((), p.dtype))
    chunks = tuple(_to_chunks(a, n_chunks, chunk) for a in (sigma, d, b))
    state = p.x0 if p.x0 is not None else jnp.zeros(p.batch_shape + (p.N,), p.dtype)

    def one_chunk(state, elements):
        prefix = monoid.associative_scan(jnp, monoid.Affine(*elements, p.mode))
        states = monoid.apply(jnp, prefix.index, prefix.d, state[..., None, :], p.mode) + prefix.b
        return states[..., -1, :], states

    _, states = jax.lax.scan(one_chunk, state, chunks)
    x = _from_chunks(states)[..., : p.L, :]
    return jnp.flip(x, axis=-2) if p.reverse else x


class XlaBackend(JaxBackend):
    name = "jax_xla"

    def _forward(self, index, maps, d, b, x0, *, mode, reverse):
        return chunked_scan(problem_of_arrays(index, maps, d, b, x0, mode, reverse))

    def _vjp(self, index, maps, d, x0, x, grad_x, *, mode, reverse, conjugate):
        # the VJP does not depend on b; d stands in for it to complete the problem
        p = problem_of_arrays(index, maps, d, d, x0, mode, reverse)
        return vjp_by_adjoint_scan(chunked_scan, p, x, grad_x, conjugate=conjugate)


BACKEND = XlaBackend()
