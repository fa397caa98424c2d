"""CUDA backend: the PD scan and its VJP as CUDA kernels compiled through CuPy.

Takes CuPy arrays (and, through the adapters, any CUDA memory they wrap as CuPy
views).  Kernel sources are the ``.cu`` / ``.cuh`` files beside this file
(``pdscan_pipe.cu``: the pipelined scan for N up to 128, which runs the forward and
the VJP's carry; ``pdscan_vjp.cu``: the VJP's element-wise parts; ``pdscan_kernels.cu``:
the team kernels, which run both beyond N = 128; ``pdscan_ste.cu``: the
straight-through dictionary gradients), compiled by NVRTC on first use and cached
by CuPy.  Launch code and the choice of schedule by shape are in ``_launch.py`` (the
gradients' in ``_launch_grads.py``).

Determinism: gather mode's forward is bitwise reproducible, and so is the pipelined
scatter of one pass (each row sums its sources in lane order), the VJP's carry in
gather mode included.  Where the team kernels sum colliding lanes (scatter beyond
N = 128, in the forward or the gather-mode VJP, and the scan over chunk summaries
when a scatter is cut in time) they use shared-memory float atomics, whose order can
vary; ``set_deterministic(True)`` (or PDSCAN_CUDA_DETERMINISTIC=1) switches those to
a fixed summation order, and then every path is bitwise reproducible.
"""

from __future__ import annotations

import contextlib
import functools

from ..._problem import VALUE_DTYPES


def set_deterministic(flag: bool) -> None:
    """Scatter with a fixed summation order (bitwise reproducible; slower)."""
    from . import _launch

    _launch.deterministic = bool(flag)


@contextlib.contextmanager
def deterministic(flag: bool = True):
    """Context in which scatter sums in a fixed order."""
    from . import _launch

    before = _launch.deterministic
    _launch.deterministic = bool(flag)
    try:
        yield
    finally:
        _launch.deterministic = before


class _StreamHandle:
    """A raw ``cudaStream_t`` in the CUDA stream protocol (``__cuda_stream__``: version,
    handle), the form ``cupy.cuda.Stream.from_external`` takes."""

    __slots__ = ("_pointer",)

    def __init__(self, pointer: int):
        self._pointer = int(pointer)

    def __cuda_stream__(self):
        return (0, self._pointer)


@functools.lru_cache(maxsize=None)
def external_stream(pointer: int, device_id: int):
    """A CuPy stream for a stream another framework made (torch's current stream,
    XLA's): CuPy launches on it under ``with``.  One wrapper per (stream, device),
    made on first use: the adapters ask on every call.  CuPy 14 replaced
    ``cupy.cuda.ExternalStream`` by ``Stream.from_external``; older CuPy has only the
    former."""
    import cupy

    from_external = getattr(cupy.cuda.Stream, "from_external", None)
    if from_external is None:
        return cupy.cuda.ExternalStream(pointer, device_id)
    with cupy.cuda.Device(device_id):
        return from_external(_StreamHandle(pointer))


def _value_name(dtype) -> str:
    name = getattr(dtype, "name", None)
    if name in VALUE_DTYPES:
        return name
    raise TypeError(f"cuda backend: unsupported value dtype {dtype}")  # prepare() rules it out


def _target(out, shape, dtype, nbatch):
    """(array to write, the caller's out or None): the kernels write (S, ...) rows
    C-contiguously; an ``out`` of another layout gets a temporary and a copy."""
    import cupy

    if out is None:
        return cupy.empty(shape, dtype), None
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"out: expected shape {tuple(shape)} and dtype {dtype}, got {out.shape} {out.dtype}")
    if out.flags.c_contiguous:
        return out, None
    return cupy.empty(shape, dtype), out


def _finish(written, caller):
    if caller is None:
        return written
    caller[...] = written
    return caller


class CudaBackend:
    name = "cuda"
    writes_out = True

    def forward(self, p, out=None):
        from . import _launch as launch

        nb = len(p.batch_shape)
        value = _value_name(p.dtype)
        itemsize = p.d.itemsize
        ix = launch.indexing(p, itemsize, 4 * itemsize + 8)
        d, d_stride = launch.layout(p.d, nb)
        b, b_stride = launch.layout(p.b, nb)
        x0, x0_stride = launch.layout(p.x0, nb)
        x, caller = _target(out, p.batch_shape + (p.L, p.N), p.dtype, nb)
        flags = launch._flags(reverse=p.reverse, signed=ix.signed)
        launch.run_scan(value, p.mode, ix, d, d_stride, b, b_stride, x0, x0_stride, x, p.S, p.L, p.N, flags)
        return _finish(x, caller)

    def vjp(self, p, x, grad_x, *, conjugate, out=None):
        from . import _launch as launch, _launch_grads as grads

        nb = len(p.batch_shape)
        value = _value_name(p.dtype)
        itemsize = p.d.itemsize
        conj = bool(conjugate) and value.startswith("complex")
        ix = launch.indexing(p, itemsize, 4 * itemsize + 8)
        d, d_stride = launch.layout(p.d, nb)
        xs, x_stride = launch.layout(x, nb)
        gx, gx_stride = launch.layout(grad_x, nb)
        x0, x0_stride = launch.layout(p.x0, nb)
        shape = p.batch_shape + (p.L, p.N)
        outs = out if out is not None else (None, None, None)
        grad_d, caller_d = _target(outs[0], shape, p.dtype, nb)
        grad_b, caller_b = _target(outs[1], shape, p.dtype, nb)
        grad_x0, caller_x0 = (None, None)
        if p.x0 is not None:
            grad_x0, caller_x0 = _target(outs[2], p.batch_shape + (p.N,), p.dtype, nb)
        grads.run_vjp(value, p.mode, ix, d, d_stride, xs, x_stride, gx, gx_stride, x0, x0_stride,
                       grad_d, grad_b, grad_x0, p.S, p.L, p.N, p.reverse, conj)
        return (_finish(grad_d, caller_d), _finish(grad_b, caller_b),
                None if grad_x0 is None else _finish(grad_x0, caller_x0))

    def dictionary_grads(self, p, u, v, members):
        """The straight-through dictionary form's grad_w at the full batch shape and
        grad_Q (G, K, N, N), one per group of sequences in ``members`` (``pdscan.ste``),
        from the rank-one factors: one kernel each."""
        from . import _launch_grads as grads

        grad_w, grad_q = grads.dictionary_grads(_value_name(u.dtype), p, u, v, members)
        return grad_w.reshape(p.batch_shape + (p.L, p.K)), grad_q


BACKEND = CudaBackend()

__all__ = ["BACKEND", "CudaBackend", "set_deterministic", "deterministic", "external_stream"]
