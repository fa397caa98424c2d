"""The generic backend: any array-API namespace, built only on the core monoid.

The forward is an associative (tree-ordered) scan of affine elements, so it runs
on any array library, under jax.jit included, with no host loop over time; the
VJP is the adjoint scan of ``pdscan._adjoint``.  It is O(L log L) work and meant
for libraries without a dedicated backend, and as an independent oracle.
"""

from __future__ import annotations

from .. import monoid
from .._adjoint import step_elements, vjp_by_adjoint_scan


class ArrayApiBackend:
    name = "array_api"

    def forward(self, p):
        xp = p.xp
        elements = step_elements(xp, p)
        prefix = monoid.associative_scan(xp, elements, reverse=p.reverse)
        if p.x0 is None:
            return prefix.b
        return monoid.apply(xp, prefix.index, prefix.d, p.x0[..., None, :], p.mode) + prefix.b

    def vjp(self, p, x, grad_x, *, conjugate=False):
        return vjp_by_adjoint_scan(self.forward, p, x, grad_x, conjugate=conjugate)


BACKEND = ArrayApiBackend()
