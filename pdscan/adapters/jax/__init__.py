"""The JAX adapter: the PD scan as a ``jax.custom_vjp`` under jit, vmap and grad.

Two backends take JAX arrays:

* ``"jax"`` (``pdscan.adapters.jax.kernels``): the project's kernels inside the
  compiled program through ``jax.experimental.buffer_callback``: the Numba kernels
  on the CPU (zero-copy NumPy views of XLA's buffers) and the CUDA kernels on the
  GPU (CuPy views of the device buffers, launched on XLA's stream);
* ``"jax_xla"`` (``pdscan.adapters.jax.xla``): pure XLA, a chunked scan built on
  the core monoid, for platforms with neither and as an independent check.

This package's own module imports nothing heavy: ``importlib.util.find_spec`` of
``pdscan.adapters.jax.xla`` (which ``pdscan.backends.available()`` runs) imports
this file, and must not import JAX.  ``BACKEND`` and ``scan`` load on first use.
"""

from __future__ import annotations

import importlib

_LAZY = {"BACKEND": "kernels", "scan": "_differentiable"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
