"""The PyTorch adapter: the PD scan as torch custom ops, with autograd.

Two opaque ops under the ``pdscan`` namespace, each with a fake (meta) kernel so
that torch.compile traces through them without running them:

* ``pdscan::scan_forward(index, d, b, x0?, maps?, mode, reverse) -> x``
* ``pdscan::scan_backward(index, d, x0?, maps?, x, grad_x, mode, reverse, conjugate)
  -> (grad_d, grad_b, grad_x0)``

The forward's autograd formula calls the backward op with ``conjugate=True``:
PyTorch's (conjugate Wirtinger) convention.  Both ops take arrays already broadcast
to one batch shape and cast to one dtype by the core's ``prepare``; since that is
done with torch operations, autograd itself sums gradients over broadcast
dimensions and takes the real part for real inputs.

Kernels: CPU tensors run the Numba backend (the NumPy reference without numba) on
zero-copy NumPy views; CUDA tensors run the CUDA backend on zero-copy CuPy views, on
torch's current stream, writing into outputs from torch's allocator, with no
synchronisation, so that a training step can be captured in a CUDA graph.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import backends
from .._problem import prepare

Tensor = torch.Tensor


# ------------------------------------------------------------------ kernels on views


def _cpu_backend():
    return backends.get("numba" if "numba" in backends.available() else "numpy")


def _cpu_view(t):
    return None if t is None else t.detach().resolve_conj().numpy()


def _cuda_context(device):
    import cupy

    stream = torch.cuda.current_stream(device)
    return cupy.cuda.Device(device.index), cupy.cuda.ExternalStream(stream.cuda_stream)


def _cuda_view(t):
    import cupy

    return None if t is None else cupy.asarray(t.detach().resolve_conj())


def _run(device, work):
    """Run ``work(backend, view)`` with the kernels and views for ``device``."""
    if device.type == "cpu":
        return work(_cpu_backend(), _cpu_view)
    if device.type == "cuda":
        card, stream = _cuda_context(device)
        with card, stream:
            return work(backends.get("cuda"), _cuda_view)
    raise TypeError(f"pdscan.torch: no kernels for {device.type} tensors (CPU and CUDA are supported)")


def _into(result, out_view):
    """Make sure ``out_view`` holds ``result`` (backends without out= return new arrays)."""
    if result is not out_view:
        out_view[...] = result


# ------------------------------------------------------------------ the ops


@torch.library.custom_op("pdscan::scan_forward", mutates_args=())
def scan_forward(index: Tensor, d: Tensor, b: Tensor, x0: Optional[Tensor], maps: Optional[Tensor], mode: str,
                 reverse: bool) -> Tensor:
    x = torch.empty(d.shape, dtype=d.dtype, device=d.device)
    if x.numel() == 0:
        return x.zero_()

    def work(backend, view):
        p = prepare(view(index), view(d), view(b), view(x0), maps=view(maps), mode=mode, reverse=reverse,
                    check_index=False)
        out = view(x)
        _into(backend.forward(p, out=out) if getattr(backend, "writes_out", False) else backend.forward(p),
              out)

    _run(d.device, work)
    return x


@scan_forward.register_fake
def _scan_forward_fake(index, d, b, x0, maps, mode, reverse):
    return torch.empty_like(d, memory_format=torch.contiguous_format)


@torch.library.custom_op("pdscan::scan_backward", mutates_args=())
def scan_backward(index: Tensor, d: Tensor, x0: Optional[Tensor], maps: Optional[Tensor], x: Tensor, grad_x: Tensor,
                  mode: str, reverse: bool, conjugate: bool) -> tuple[Tensor, Tensor, Tensor]:
    grads = (torch.empty(d.shape, dtype=d.dtype, device=d.device),
             torch.empty(d.shape, dtype=d.dtype, device=d.device),
             torch.zeros(d.shape[:-2] + d.shape[-1:], dtype=d.dtype, device=d.device))
    if d.numel() == 0:
        return grads[0].zero_(), grads[1].zero_(), grads[2]

    def work(backend, view):
        # b does not enter the VJP; d stands in for it so that the problem is complete
        p = prepare(view(index), view(d), view(d), view(x0), maps=view(maps), mode=mode, reverse=reverse,
                    check_index=False)
        outs = tuple(view(g) for g in grads)
        if getattr(backend, "writes_out", False):
            result = backend.vjp(p, view(x), view(grad_x), conjugate=conjugate,
                                 out=outs if x0 is not None else outs[:2] + (None,))
        else:
            result = backend.vjp(p, view(x), view(grad_x), conjugate=conjugate)
        for r, o in zip(result, outs):
            if r is not None:
                _into(r, o)

    _run(d.device, work)
    return grads


@scan_backward.register_fake
def _scan_backward_fake(index, d, x0, maps, x, grad_x, mode, reverse, conjugate):
    return (torch.empty_like(d, memory_format=torch.contiguous_format),
            torch.empty_like(d, memory_format=torch.contiguous_format),
            d.new_empty(d.shape[:-2] + d.shape[-1:]))


def _setup_context(ctx, inputs, output):
    index, d, b, x0, maps, mode, reverse = inputs
    ctx.save_for_backward(index, d, x0, maps, output)
    ctx.mode, ctx.reverse, ctx.has_x0 = mode, reverse, x0 is not None


def _backward(ctx, grad_x):
    index, d, x0, maps, x = ctx.saved_tensors
    grad_d, grad_b, grad_x0 = scan_backward(index, d, x0, maps, x, grad_x.contiguous(), ctx.mode, ctx.reverse, True)
    return None, grad_d, grad_b, (grad_x0 if ctx.has_x0 else None), None, None, None


scan_forward.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------------------ the registry backend and the entry point


class TorchBackend:
    """The registry's "torch" backend: ``pdscan.scan`` on torch tensors lands here."""

    name = "torch"
    writes_out = True

    def forward(self, p, out=None):
        x = scan_forward(p.index, p.d, p.b, p.x0, p.maps, p.mode, p.reverse)
        return x if out is None else out.copy_(x)

    def vjp(self, p, x, grad_x, *, conjugate=False, out=None):
        grads = scan_backward(p.index, p.d, p.x0, p.maps, x, grad_x, p.mode, p.reverse, bool(conjugate))
        grads = grads[:2] + ((grads[2] if p.x0 is not None else None),)
        if out is None:
            return grads
        return tuple(None if g is None else o.copy_(g) for g, o in zip(grads, out))

    def validation_devices(self):
        to_numpy = lambda t: t.detach().cpu().resolve_conj().numpy()  # noqa: E731
        rows = [("cpu", torch.from_numpy, to_numpy)]
        if torch.cuda.is_available():
            rows.append(("cuda", lambda a: torch.from_numpy(a).cuda(), to_numpy))
        return rows


BACKEND = TorchBackend()


def scan(index, d, b, x0=None, *, maps=None, mode="scatter", reverse=False, check_index=True):
    """``pdscan.scan`` for torch tensors, differentiable in d, b and x0 (PyTorch's
    convention) and usable under torch.compile and CUDA graph capture.

    Index values are checked unless torch is tracing or capturing, where nothing can
    be read back; the kernels are bounds-safe either way.
    """
    p = prepare(index, d, b, x0, maps=maps, mode=mode, reverse=reverse, check_index=check_index)
    if p.library != "torch":
        raise TypeError(f"pdscan.torch.scan takes torch tensors, got {p.library} arrays")
    return BACKEND.forward(p)


__all__ = ["scan", "scan_forward", "scan_backward", "BACKEND"]
