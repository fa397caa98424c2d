"""The registry of backends.

A backend is an object with a ``name`` and two methods over a checked
``ScanProblem`` (see ``pdscan._problem``), both in the problem's array library:

* ``forward(p) -> x`` of shape ``p.batch_shape + (L, N)`` and dtype ``p.dtype``;
* ``vjp(p, x, grad_x, *, conjugate) -> (grad_d, grad_b, grad_x0)`` at the full batch
  shape and dtype (``grad_x0`` None when ``p.x0`` is None); the core sums over
  broadcast dimensions and casts back to the inputs' dtypes.  ``conjugate=False`` is
  the plain transpose (JAX's convention), ``True`` the conjugate (PyTorch's).

Backends that write into caller-provided buffers (the fast ones, which the
adapters call with tensors from the framework's allocator) also accept
``forward(p, out=x)`` and ``vjp(..., out=(grad_d, grad_b, grad_x0))`` with arrays of
the result's shape and dtype in the problem's library, and set ``writes_out = True``.

Backends never see empty problems, never re-check inputs, and never write into
their inputs.  Entries are imported lazily: a module is only loaded when its
library's arrays arrive or when it is asked for by name, so ``import pdscan`` imports
no framework.  A third party adds a backend with ``register(Entry(...))``.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from .._namespace import LIBRARIES


@dataclass(frozen=True)
class Entry:
    """How to find a backend: ``module`` holds an object named ``BACKEND``.

    libraries: which array libraries' arrays it takes; requires: top-level modules
    that must be importable; priority: the highest available one serving a library
    is the default for it.
    """

    name: str
    module: str
    libraries: tuple
    requires: tuple = ()
    priority: int = 0
    description: str = ""

    def installed(self) -> bool:
        return all(importlib.util.find_spec(req) is not None for req in self.requires)


_ENTRIES: dict[str, Entry] = {}
_LOADED: dict[str, object] = {}


def register(entry: Entry) -> None:
    """Add (or replace) a backend entry."""
    _ENTRIES[entry.name] = entry
    _LOADED.pop(entry.name, None)


for _entry in (
    Entry("numpy", "pdscan.backends.numpy_ref", ("numpy",), (), 10,
          "NumPy reference: sequential loop over time, the definition"),
    Entry("numba", "pdscan.backends.numba_cpu", ("numpy",), ("numba",), 20,
          "Numba CPU kernels, parallel over sequences and over time"),
    Entry("cuda", "pdscan.backends.cupy_cuda", ("cupy",), ("cupy",), 20,
          "CUDA kernels compiled through CuPy"),
    Entry("torch", "pdscan.adapters.torch", ("torch",), ("torch",), 20,
          "PyTorch custom ops (autograd, torch.compile) over the CPU and CUDA kernels"),
    Entry("jax", "pdscan.adapters.jax", ("jax",), ("jax",), 20,
          "JAX custom_vjp (jit, vmap, grad) over the CPU and CUDA kernels"),
    Entry("jax_xla", "pdscan.adapters.jax.xla", ("jax",), ("jax",), 5,
          "pure XLA (no host callback): chunked scan over the core monoid"),
    Entry("array_api", "pdscan.backends.array_api", LIBRARIES, (), 0,
          "any array-API namespace: associative scan with the core monoid"),
):
    register(_entry)


def entries() -> dict[str, Entry]:
    return dict(_ENTRIES)


def available() -> list[str]:
    """Names of the backends whose requirements are installed (nothing is imported)."""
    return [name for name, e in _ENTRIES.items() if e.installed() and importlib.util.find_spec(e.module)]


def get(name: str):
    """The backend object called ``name``, importing its module on first use."""
    if name not in _ENTRIES:
        raise ValueError(f"backend: unknown backend {name!r}; known: {', '.join(_ENTRIES)}")
    if name not in _LOADED:
        entry = _ENTRIES[name]
        if not entry.installed():
            missing = [r for r in entry.requires if importlib.util.find_spec(r) is None]
            raise ValueError(f"backend: {name!r} is not available: {', '.join(missing)} is not installed")
        try:
            module = importlib.import_module(entry.module)
        except ModuleNotFoundError as err:
            raise ValueError(f"backend: {name!r} is not available: {err}") from err
        _LOADED[name] = module.BACKEND
    return _LOADED[name]


def select(library: str, name: str | None = None):
    """The backend for arrays of ``library``: ``name`` if given, else the default."""
    if name is not None:
        entry = _ENTRIES.get(name)
        if entry is not None and library not in entry.libraries:
            raise ValueError(
                f"backend: {name!r} takes {', '.join(entry.libraries)} arrays, not {library} arrays"
            )
        return get(name)
    candidates = sorted(
        (e for e in _ENTRIES.values() if library in e.libraries and e.installed()),
        key=lambda e: -e.priority,
    )
    for entry in candidates:
        try:
            return get(entry.name)
        except ValueError:
            continue
    raise ValueError(f"backend: no backend takes {library} arrays")  # pragma: no cover
