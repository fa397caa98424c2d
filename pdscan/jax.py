"""``pdscan.jax.scan``: the PD scan for JAX arrays, under jax.jit, jax.grad and jax.vmap.

    import pdscan.jax
    x = pdscan.jax.scan(index, d, b, x0, mode="scatter")

The project's kernels run inside the compiled program (Numba on the CPU, CUDA on
the GPU, through ``pdscan.adapters.jax``); ``backend="jax_xla"`` selects the pure
XLA implementation.  ``scan_ste_dict`` and ``scan_ste_mixture`` are the
straight-through scans (``pdscan.ste``) as custom_vjp functions; ``PDSSM`` and
``FlashPDSSM`` the layers built on them, pure functions over a parameter dict
(``pdscan.adapters.jax.layers``, docs/layers.md).  Importing this module imports JAX.
"""

from __future__ import annotations

from .adapters.jax._differentiable import scan
from .adapters.jax.layers import PDSSM, FlashPDSSM
from .adapters.jax.ste import scan_ste_dict, scan_ste_mixture

__all__ = ["scan", "scan_ste_dict", "scan_ste_mixture", "PDSSM", "FlashPDSSM"]
