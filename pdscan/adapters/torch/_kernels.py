"""Running the backends' kernels on torch tensors, without copies.

* CPU tensors: NumPy views of the tensors' memory (``Tensor.numpy()`` shares it),
  run by the Numba backend, or by the NumPy reference where Numba is missing.
* CUDA tensors: CuPy views over the device pointers, run by the CUDA backend on
  torch's current stream.  Every allocation, the results' and the kernels'
  scratch space alike, comes from torch's caching allocator, and nothing waits on
  the device, so that a step using the op can be captured in a CUDA graph: memory
  allocated during capture then belongs to the graph's private pool and is not
  handed to anyone else between replays (CuPy's own pool knows nothing of graphs).

Both run a ``ScanProblem`` built by the core's ``prepare`` on the views, which
checks shapes and dtypes with the core's errors but not index values
(``check_index=False``): the public wrapper checked those on the tensors, unless
the caller opted out or they could not be read (torch.compile, CUDA graph
capture), and then the kernels' bounds safety applies.  Results are fresh tensors
from ``torch.empty``.
"""

from __future__ import annotations


import numpy as np
import torch

from ... import backends
from ..._problem import check_like_output, integer_dtype_error, prepare, value_dtype_error
from .._host import HOST_KERNEL_LOCK as _HOST_KERNEL_LOCK, host_kernel  # noqa: F401 - used here and by siblings

NUMPY_DTYPE = {
    torch.float32: np.float32, torch.float64: np.float64,
    torch.complex64: np.complex64, torch.complex128: np.complex128,
    torch.int8: np.int8, torch.int16: np.int16, torch.int32: np.int32, torch.int64: np.int64,
    torch.uint8: np.uint8, torch.uint16: np.uint16, torch.uint32: np.uint32, torch.uint64: np.uint64,
}
TORCH_DTYPE = {np.dtype(v): k for k, v in NUMPY_DTYPE.items()}

_kernels = {}


def cuda_kernel():
    """The CUDA backend (CuPy and the compiled kernels), loaded on first CUDA call."""
    if "cuda" not in _kernels:
        _kernels["cuda"] = backends.get("cuda")  # a clear ValueError when CuPy is missing
    return _kernels["cuda"]


def plain(t):
    """``t`` without autograd history and without a lazy conjugate or negative bit
    (neither NumPy nor CuPy knows of those; resolving them copies only if set)."""
    return None if t is None else t.detach().resolve_conj().resolve_neg()


def check_tensors(**named):
    """The core's errors for what no view can carry, before any view is built:
    tensors on different devices (the dispatcher runs the CUDA kernel as soon as one
    argument is on a GPU; views must not be built over another device's memory), and
    dtypes that NumPy and CuPy do not have (bfloat16, bool, ...)."""
    devices = {name: t.device for name, t in named.items() if t is not None}
    if len(set(devices.values())) > 1:
        detail = ", ".join(f"{name} on {device}" for name, device in devices.items())
        raise ValueError(f"all arrays must be on one device ({detail})")
    for name, t in named.items():
        if t is not None and t.dtype not in NUMPY_DTYPE:
            raise (integer_dtype_error if name in ("index", "maps") else value_dtype_error)(name, t.dtype)


def _run_forward(kernel, p, out):
    if getattr(kernel, "writes_out", False):
        written = kernel.forward(p, out=out)
        if written is not out:  # a backend that could not use the buffer returns its own
            out[...] = written
    else:
        out[...] = kernel.forward(p)


def _run_vjp(kernel, p, x, grad_x, conjugate, outs):
    if getattr(kernel, "writes_out", False):
        written = kernel.vjp(p, x, grad_x, conjugate=conjugate, out=outs)
    else:
        written = kernel.vjp(p, x, grad_x, conjugate=conjugate)
    for target, value in zip(outs, written):
        if target is not None and value is not target:
            target[...] = value


def _new_states(p, device):
    return torch.empty(p.batch_shape + (p.L, p.N), dtype=TORCH_DTYPE[np.dtype(p.dtype)], device=device)


def _new_grads(p, device, with_x0):
    """[grad_d, grad_b, grad_x0] at the full batch shape, in the problem's dtype;
    grad_x0 is zeros where there is no x0 (the kernels then leave it alone)."""
    grads = [_new_states(p, device), _new_states(p, device)]
    make = torch.empty if with_x0 else torch.zeros
    grads.append(make(p.batch_shape + (p.N,), dtype=grads[0].dtype, device=device))
    return grads


# -- CPU --------------------------------------------------------------------------


def _host_view(t):
    return None if t is None else plain(t).numpy()


def cpu_forward(index, d, b, x0, maps, mode, reverse):
    check_tensors(index=index, d=d, b=b, x0=x0, maps=maps)
    p = prepare(*map(_host_view, (index, d, b, x0)), maps=_host_view(maps), mode=mode, reverse=reverse,
                check_index=False)
    x = _new_states(p, d.device)
    if p.empty:
        return x.zero_()
    with _HOST_KERNEL_LOCK:
        _run_forward(host_kernel(), p, x.numpy())
    return x


def cpu_vjp(index, d, x0, maps, x, grad_x, mode, reverse, conjugate):
    check_tensors(index=index, d=d, x0=x0, maps=maps, x=x, grad_x=grad_x)
    # the VJP does not read b: x (full batch shape, the problem's dtype) stands in for it
    x_view = _host_view(x)
    p = prepare(*map(_host_view, (index, d)), x_view, _host_view(x0), maps=_host_view(maps), mode=mode,
                reverse=reverse, check_index=False)
    grads = _new_grads(p, d.device, x0 is not None)
    if p.empty:
        return tuple(g.zero_() for g in grads)
    x_view = check_like_output(p, x_view, "x")
    grad_x_view = check_like_output(p, _host_view(grad_x), "grad_x")
    outs = (grads[0].numpy(), grads[1].numpy(), grads[2].numpy() if x0 is not None else None)
    with _HOST_KERNEL_LOCK:
        _run_vjp(host_kernel(), p, x_view, grad_x_view, conjugate, outs)
    return tuple(grads)


# -- CUDA -------------------------------------------------------------------------



class _OnTorchStream:
    """``with`` block in which CuPy runs on the tensors' device, launches on torch's
    current stream and allocates from torch's caching allocator."""

    def __init__(self, device):
        import cupy

        from ...backends.cupy_cuda import external_stream

        self._cupy = cupy
        self.device = device
        self.device_id = device.index if device.index is not None else torch.cuda.current_device()
        pointer = torch.cuda.current_stream(self.device_id).cuda_stream
        self._contexts = (
            cupy.cuda.Device(self.device_id),
            external_stream(pointer, self.device_id),
            cupy.cuda.using_allocator(self._allocate),
        )

    def __enter__(self):
        for context in self._contexts:
            context.__enter__()
        return self

    def __exit__(self, *exc):
        for context in reversed(self._contexts):
            context.__exit__(*exc)

    def _allocate(self, nbytes):
        # the tensor owns the block; CuPy's array keeps it alive and dropping it
        # returns the block to torch's allocator, stream-ordered like any tensor
        block = torch.empty(max(nbytes, 1), dtype=torch.uint8, device=self.device)
        memory = self._cupy.cuda.UnownedMemory(block.data_ptr(), nbytes, block, self.device_id)
        return self._cupy.cuda.MemoryPointer(memory, 0)

    def view(self, t):
        """A CuPy array over the tensor's memory (no copy; strides kept).  Built from
        the pointer directly: importing through ``__cuda_array_interface__`` would ask
        the driver which device owns the pointer, on every call."""
        if t is None:
            return None
        t = plain(t)
        dtype = np.dtype(NUMPY_DTYPE[t.dtype])
        if t.numel() == 0:
            return self._cupy.empty(tuple(t.shape), dtype)
        itemsize = t.element_size()
        extent = (1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))) * itemsize
        memory = self._cupy.cuda.UnownedMemory(t.data_ptr(), extent, t, self.device_id)
        return self._cupy.ndarray(tuple(t.shape), dtype, self._cupy.cuda.MemoryPointer(memory, 0),
                                  strides=tuple(s * itemsize for s in t.stride()))


def cuda_forward(index, d, b, x0, maps, mode, reverse):
    check_tensors(index=index, d=d, b=b, x0=x0, maps=maps)
    kernel = cuda_kernel()
    with _OnTorchStream(d.device) as on:
        p = prepare(*map(on.view, (index, d, b, x0)), maps=on.view(maps), mode=mode, reverse=reverse,
                    check_index=False)
        x = _new_states(p, d.device)
        if p.empty:
            return x.zero_()
        _run_forward(kernel, p, on.view(x))
    return x


def cuda_vjp(index, d, x0, maps, x, grad_x, mode, reverse, conjugate):
    check_tensors(index=index, d=d, x0=x0, maps=maps, x=x, grad_x=grad_x)
    kernel = cuda_kernel()
    with _OnTorchStream(d.device) as on:
        x_view = on.view(x)  # stands in for b, as on the CPU
        p = prepare(*map(on.view, (index, d)), x_view, on.view(x0), maps=on.view(maps), mode=mode,
                    reverse=reverse, check_index=False)
        grads = _new_grads(p, d.device, x0 is not None)
        if p.empty:
            return tuple(g.zero_() for g in grads)
        x_view = check_like_output(p, x_view, "x")
        grad_x_view = check_like_output(p, on.view(grad_x), "grad_x")
        outs = (on.view(grads[0]), on.view(grads[1]), on.view(grads[2]) if x0 is not None else None)
        _run_vjp(kernel, p, x_view, grad_x_view, conjugate, outs)
    return tuple(grads)
