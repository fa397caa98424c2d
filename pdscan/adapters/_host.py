"""The CPU kernels the adapters run, shared by PyTorch and JAX.

Numba's parallel kernels must not be entered from two threads at once (its
workqueue threading layer is not reentrant), and the frameworks may call from
several threads (XLA runs independent callbacks concurrently; torch has autograd
device threads and user threads).  One lock for the whole process, since both
adapters may run in it.
"""

from __future__ import annotations

import threading

from .. import backends

HOST_KERNEL_LOCK = threading.Lock()
_host = []


def host_kernel():
    """The CPU backend: Numba, or the NumPy reference where Numba cannot load."""
    if not _host:
        try:
            _host.append(backends.get("numba"))
        except ValueError:
            _host.append(backends.get("numpy"))
    return _host[0]
