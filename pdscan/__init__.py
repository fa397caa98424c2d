"""pdscan: the scan of PD-SSMs, x_t = P_t D_t x_{t-1} + b_t, on any array library.

    import pdscan
    x = pdscan.scan(index, d, b)            # NumPy, CuPy, torch, JAX or any array-API array

``pdscan.torch`` and ``pdscan.jax`` (imported on first access) are the framework
entry points; ``pdscan.monoid`` is the PD monoid; ``pdscan.backends`` the registry.
Importing pdscan imports no framework.
"""

from __future__ import annotations

import importlib

from . import backends, monoid
from ._api import reduce, scan, scan_vjp, step
from .monoid import Affine
from .ste import scan_ste_dict, scan_ste_dict_vjp, scan_ste_mixture, scan_ste_mixture_vjp

__version__ = "0.1.0"

__all__ = [
    "scan", "scan_vjp", "step", "reduce", "Affine", "monoid", "backends", "__version__",
    "scan_ste_dict", "scan_ste_dict_vjp", "scan_ste_mixture", "scan_ste_mixture_vjp",
]

_LAZY_SUBMODULES = ("torch", "jax", "validation")


def __getattr__(name):
    # pdscan.torch / pdscan.jax import their framework, so only when asked for
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
