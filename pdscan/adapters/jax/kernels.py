"""The ``"jax"`` backend: the project's kernels inside the compiled JAX program.

``jax.experimental.buffer_callback`` hands a Python function XLA's own buffers,
outputs included, in place:

* CPU: the buffers are NumPy views (no copy in or out); the Numba kernels (the
  NumPy reference where Numba is missing) write the result straight into XLA's
  output buffer.
* GPU: the buffers are CuPy views over the device pointers and the CUDA kernels
  are launched on XLA's stream, so nothing crosses to the host and nothing waits.
* Any other platform, or a GPU without the CUDA backend: the pure-XLA path.

``jax.lax.platform_dependent`` picks the branch when the program is lowered, so a
program jitted for the CPU on a GPU machine still runs the CPU kernels.  Under
vmap the callbacks see the batch as one more leading dimension (``vmap_method=
"expand_dims"``: unbatched operands get a dimension of 1) and the kernel-side
``prepare`` broadcasts it as views.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from ... import backends, ste
from .._host import HOST_KERNEL_LOCK as _HOST_KERNEL_LOCK, host_kernel  # noqa: F401 - used here and by siblings
from . import xla
from ._differentiable import JaxBackend, problem_of_arrays

try:
    from jax.experimental.buffer_callback import buffer_callback
except ImportError:  # older JAX: every platform takes the pure-XLA path
    buffer_callback = None

_kernels = {}


def cuda_kernel():
    """The CUDA backend, or None where it cannot load (no CuPy, no GPU)."""
    if "cuda" not in _kernels:
        try:
            _kernels["cuda"] = backends.get("cuda")
        except ValueError:
            _kernels["cuda"] = None
    return _kernels["cuda"]


def _has_jax_cuda():
    try:
        return bool(jax.devices("cuda"))
    except RuntimeError:
        return False


def _run_forward(kernel, p, out):
    if getattr(kernel, "writes_out", False):
        kernel.forward(p, out=out)
    else:
        out[...] = kernel.forward(p)


def _run_vjp(kernel, p, x, grad_x, conjugate, outs):
    # under vmap ("expand_dims") an unbatched x or grad_x keeps a size-1 axis where the
    # problem has the batch: the backends take them at the problem's full shape
    full = p.batch_shape + (p.L, p.N)
    x, grad_x = p.xp.broadcast_to(x, full), p.xp.broadcast_to(grad_x, full)
    grads = (outs + (None,))[:3]  # (grad_d, grad_b, grad_x0 or None)
    if getattr(kernel, "writes_out", False):
        kernel.vjp(p, x, grad_x, conjugate=conjugate, out=grads)
        return
    for target, value in zip(outs, kernel.vjp(p, x, grad_x, conjugate=conjugate)):
        target[...] = value


# -- CPU: NumPy views of XLA's host buffers ---------------------------------------


def _host(a):
    return None if a is None else np.asarray(a)


def _host_forward(mode, reverse):
    def callback(ctx, out, index, maps, d, b, x0):
        p = problem_of_arrays(_host(index), _host(maps), _host(d), _host(b), _host(x0), mode, reverse)
        with _HOST_KERNEL_LOCK:
            _run_forward(host_kernel(), p, np.asarray(out))
    return callback


def _host_vjp(mode, reverse, conjugate):
    def callback(ctx, outs, index, maps, d, x0, x, grad_x):
        # the VJP does not depend on b; d stands in for it to complete the problem
        p = problem_of_arrays(_host(index), _host(maps), _host(d), _host(d), _host(x0), mode, reverse)
        with _HOST_KERNEL_LOCK:
            _run_vjp(host_kernel(), p, _host(x), _host(grad_x), conjugate, tuple(np.asarray(o) for o in outs))
    return callback


def _dictionary_grads(kernel, index, maps, u, v, members, mode, reverse):
    """The dictionary form's (grad_w, grad_Q) on ``kernel`` (its fused contractions, or
    the array form where it has none) for arrays of one library; u stands in for d and b,
    which the contractions do not read, to complete the problem."""
    p = problem_of_arrays(index, maps, u, u, None, mode, reverse)
    fused = getattr(kernel, "dictionary_grads", None)
    return fused(p, u, v, members) if fused is not None else ste._dictionary_grads(p, u, v, members)


def _host_dictionary_grads(mode, reverse):
    def callback(ctx, outs, index, maps, u, v, members):
        arrays = (_host(index), _host(maps), _host(u), _host(v), _host(members))
        with _HOST_KERNEL_LOCK:
            for target, value in zip(outs, _dictionary_grads(host_kernel(), *arrays, mode, reverse)):
                np.asarray(target)[...] = value
    return callback


# -- GPU: CuPy views of XLA's device buffers, on XLA's stream --------------------

_device_of_stream = {}


def _cuda_device(stream, buffer):
    """The device of XLA's stream, read once per stream from a buffer's pointer
    (the callback runs on an XLA thread whose current device is not set for it)."""
    if stream not in _device_of_stream:
        import cupy

        pointer = buffer.__cuda_array_interface__["data"][0]
        _device_of_stream[stream] = cupy.cuda.runtime.pointerGetAttributes(pointer).device
    return _device_of_stream[stream]


def _cupy_view(buffer, device_id):
    """A CuPy array over an XLA device buffer (no copy; XLA keeps ownership)."""
    if buffer is None:
        return None
    import cupy

    interface = buffer.__cuda_array_interface__
    if interface.get("strides") is not None:
        raise ValueError("buffer_callback gave a strided device buffer; expected XLA's row-major layout")
    shape, dtype = tuple(interface["shape"]), np.dtype(interface["typestr"])
    memory = cupy.cuda.UnownedMemory(interface["data"][0], math.prod(shape) * dtype.itemsize, buffer, device_id)
    return cupy.ndarray(shape, dtype, cupy.cuda.MemoryPointer(memory, 0))


class _OnXlaStream:
    """``with`` block in which CuPy launches on XLA's stream and device."""

    def __init__(self, ctx, buffer):
        import cupy

        from ...backends.cupy_cuda import external_stream

        self.device_id = _cuda_device(ctx.stream, buffer)
        self._device = cupy.cuda.Device(self.device_id)
        self._stream = external_stream(ctx.stream, self.device_id)

    def __enter__(self):
        self._device.__enter__()
        self._stream.__enter__()
        return self

    def __exit__(self, *exc):
        self._stream.__exit__(*exc)
        self._device.__exit__(*exc)

    def view(self, buffer):
        return _cupy_view(buffer, self.device_id)


def _cuda_forward(mode, reverse):
    def callback(ctx, out, index, maps, d, b, x0):
        with _OnXlaStream(ctx, d) as on:
            p = problem_of_arrays(on.view(index), on.view(maps), on.view(d), on.view(b), on.view(x0), mode, reverse)
            _run_forward(cuda_kernel(), p, on.view(out))
    return callback


def _cuda_vjp(mode, reverse, conjugate):
    def callback(ctx, outs, index, maps, d, x0, x, grad_x):
        with _OnXlaStream(ctx, d) as on:
            p = problem_of_arrays(on.view(index), on.view(maps), on.view(d), on.view(d), on.view(x0), mode, reverse)
            _run_vjp(cuda_kernel(), p, on.view(x), on.view(grad_x), conjugate, tuple(on.view(o) for o in outs))
    return callback


def _cuda_dictionary_grads(mode, reverse):
    def callback(ctx, outs, index, maps, u, v, members):
        with _OnXlaStream(ctx, u) as on:
            arrays = tuple(on.view(a) for a in (index, maps, u, v, members))
            for target, value in zip(outs, _dictionary_grads(cuda_kernel(), *arrays, mode, reverse)):
                on.view(target)[...] = value
    return callback


# -- the backend -------------------------------------------------------------------


def _platform_branches(make_host, make_cuda, fallback):
    """Per-platform implementations for ``jax.lax.platform_dependent``.

    Every branch is traced, so the pure-XLA fallback (slow to trace and compile)
    is only added where a platform other than the CPU and CUDA can be lowered for:
    JAX's default backend is the most capable one present, so a CPU default, or a
    GPU default that is CUDA, means there is no TPU, ROCm or other device here.
    """
    if buffer_callback is None:
        return dict(default=fallback)
    branches = dict(cpu=make_host())
    has_cuda = _has_jax_cuda()
    if has_cuda:
        branches["cuda"] = make_cuda() if cuda_kernel() is not None else fallback
    if jax.default_backend() != "cpu" and not (jax.default_backend() == "gpu" and has_cuda):
        branches["default"] = fallback
    return branches


class KernelBackend(JaxBackend):
    name = "jax"

    def _forward(self, index, maps, d, b, x0, *, mode, reverse):
        result = jax.ShapeDtypeStruct(d.shape, d.dtype)

        def call(make_callback):
            return lambda *args: buffer_callback(make_callback(mode, reverse), result,
                                                 vmap_method="expand_dims")(*args)

        def fallback(*args):
            return xla.BACKEND._forward(*args, mode=mode, reverse=reverse)

        branches = _platform_branches(lambda: call(_host_forward), lambda: call(_cuda_forward), fallback)
        return jax.lax.platform_dependent(index, maps, d, b, x0, **branches)

    def _vjp(self, index, maps, d, x0, x, grad_x, *, mode, reverse, conjugate):
        grad = jax.ShapeDtypeStruct(d.shape, d.dtype)
        results = (grad, grad) if x0 is None else (grad, grad, jax.ShapeDtypeStruct(x0.shape, x0.dtype))

        def call(make_callback):
            def run(*args):
                grads = buffer_callback(make_callback(mode, reverse, conjugate), results,
                                        vmap_method="expand_dims")(*args)
                return tuple(grads) + (None,) * (3 - len(grads))
            return run

        def fallback(*args):
            return xla.BACKEND._vjp(*args, mode=mode, reverse=reverse, conjugate=conjugate)

        branches = _platform_branches(lambda: call(_host_vjp), lambda: call(_cuda_vjp), fallback)
        return jax.lax.platform_dependent(index, maps, d, x0, x, grad_x, **branches)

    def dictionary_grads(self, p, u, v, members):
        """The straight-through dictionary form's (grad_w, grad_Q) (``pdscan.ste``)
        through the fused kernels inside the compiled program, as the scans: the
        array form expands its factors K-fold, K times the work of the kernels.  Under
        vmap the callback runs once per vmapped element ("sequential"): the groups of
        ``members`` are per element."""
        results = (jax.ShapeDtypeStruct(p.batch_shape + (p.L, p.K), u.dtype),
                   jax.ShapeDtypeStruct((members.shape[0], p.K, p.N, p.N), u.dtype))
        mode, reverse = p.mode, p.reverse

        def call(make_callback):
            return lambda *args: tuple(buffer_callback(make_callback(mode, reverse), results,
                                                       vmap_method="sequential")(*args))

        def fallback(index, maps, u, v, members):
            return _dictionary_grads(None, index, maps, u, v, members, mode, reverse)

        branches = _platform_branches(lambda: call(_host_dictionary_grads), lambda: call(_cuda_dictionary_grads),
                                      fallback)
        return jax.lax.platform_dependent(p.index, p.maps, u, v, members, **branches)


BACKEND = KernelBackend()
