"""The scan as two torch custom ops, ``pdscan::scan_forward`` and ``pdscan::scan_backward``.

Both are opaque to torch.compile (each has a fake implementation giving the
results' shapes and dtypes) and functional (fresh outputs, inputs never written).

``pdscan::scan_forward(index, d, b, x0?, maps?, mode, reverse) -> x`` takes the
arguments of ``pdscan.scan`` as they are, broadcastable batch dimensions and mixed
value dtypes included: the kernels' ``prepare`` broadcasts and casts them as views.
Its autograd formula calls ``pdscan::scan_backward`` in PyTorch's convention
(``conjugate=True``: conj(J)^T grad_x), then sums over the dimensions that
broadcasting added and takes the real part for a real input with the core's
``unbroadcast`` (torch operations, so compiled backward graphs hold them).  index
and maps get no gradient.

``pdscan::scan_backward(index, d, x0?, maps?, x, grad_x, mode, reverse, conjugate)
-> (grad_d, grad_b, grad_x0)`` at the full batch shape and in the problem's dtype;
without x0, grad_x0 is zeros (the schema has no optional outputs).  The VJP does
not read b, so b is neither an input nor kept for the backward: x, which has the
full batch shape and the problem's dtype, stands in for it where the problem's
shape and dtype are worked out.  It has no autograd formula (no double backward).
"""

from __future__ import annotations

from collections import namedtuple
from typing import Optional

import torch
from torch import Tensor

from ..._namespace import namespace
from ..._problem import check_sizes, prepare, unbroadcast
from . import _kernels

#: what ``unbroadcast`` reads of an input: its shape and dtype (b itself is not kept)
_Like = namedtuple("_Like", "shape dtype")

#: the array-API namespace of torch tensors, for the core's ``unbroadcast``
_TORCH_XP = namespace(torch.empty(0))


def _check_device(t):
    if not t.is_cpu:
        raise ValueError(f"pdscan.torch: tensors on {t.device} are not supported; CPU and CUDA tensors are")


# -- forward ------------------------------------------------------------------------


@torch.library.custom_op("pdscan::scan_forward", mutates_args=())
def scan_forward(index: Tensor, d: Tensor, b: Tensor, x0: Optional[Tensor], maps: Optional[Tensor], mode: str,
                 reverse: bool) -> Tensor:
    """The states x, batch + (L, N), of the scan (see ``pdscan.scan``)."""
    _check_device(d)
    return _kernels.cpu_forward(index, d, b, x0, maps, mode, reverse)


@scan_forward.register_kernel("cuda")
def _scan_forward_cuda(index, d, b, x0, maps, mode, reverse):
    return _kernels.cuda_forward(index, d, b, x0, maps, mode, reverse)


def result_meta(index, d, b, x0, maps, mode, reverse):
    """(batch_shape, L, N, dtype) of a scan's states.

    Where every size is a plain integer this runs the core's ``prepare`` (on fake
    tensors under torch.compile), so that tracing raises the core's errors.  Sizes
    that torch.compile made symbolic cannot go through the core's shape code (it
    hashes sizes): its ``check_sizes`` compares L and N (each comparison a guard, so
    that a call whose sizes disagree traces again and raises there), and torch's own
    broadcasting and promotion, the same rules, give the rest.
    """
    tensors = [t for t in (index, maps, d, b, x0) if t is not None]
    if all(type(n) is int for t in tensors for n in t.shape):
        p = prepare(index, d, b, x0, maps=maps, mode=mode, reverse=reverse, check_index=False)
        return p.batch_shape, p.L, p.N, p.dtype
    check_sizes(index, d, b, x0, maps)
    L, N = d.shape[-2:]
    batches = [d.shape[:-2], b.shape[:-2]]
    batches.append(index.shape[:-2] if maps is None else index.shape[:-1])
    if maps is not None:
        batches.append(maps.shape[:-2])
    if x0 is not None:
        batches.append(x0.shape[:-1])
    dtype = d.dtype
    for t in (b, x0):
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return tuple(torch.broadcast_shapes(*batches)), L, N, dtype


@scan_forward.register_fake
def _scan_forward_fake(index, d, b, x0, maps, mode, reverse):
    batch, L, N, dtype = result_meta(index, d, b, x0, maps, mode, reverse)
    return d.new_empty(batch + (L, N), dtype=dtype)


# -- backward -----------------------------------------------------------------------


@torch.library.custom_op("pdscan::scan_backward", mutates_args=())
def scan_backward(index: Tensor, d: Tensor, x0: Optional[Tensor], maps: Optional[Tensor], x: Tensor,
                  grad_x: Tensor, mode: str, reverse: bool, conjugate: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(grad_d, grad_b, grad_x0) at the full batch shape (grad_x0 zeros without x0)."""
    _check_device(d)
    return _kernels.cpu_vjp(index, d, x0, maps, x, grad_x, mode, reverse, conjugate)


@scan_backward.register_kernel("cuda")
def _scan_backward_cuda(index, d, x0, maps, x, grad_x, mode, reverse, conjugate):
    return _kernels.cuda_vjp(index, d, x0, maps, x, grad_x, mode, reverse, conjugate)


@scan_backward.register_fake
def _scan_backward_fake(index, d, x0, maps, x, grad_x, mode, reverse, conjugate):
    batch, L, N, dtype = result_meta(index, d, x, x0, maps, mode, reverse)
    return (d.new_empty(batch + (L, N), dtype=dtype), d.new_empty(batch + (L, N), dtype=dtype),
            d.new_empty(batch + (N,), dtype=dtype))


# -- autograd -----------------------------------------------------------------------


def _setup_context(ctx, inputs, output):
    index, d, b, x0, maps, mode, reverse = inputs
    ctx.save_for_backward(index, d, x0, maps, output)
    ctx.mode, ctx.reverse = mode, reverse
    ctx.b_like = _Like(tuple(b.shape), b.dtype)


def _backward(ctx, grad_x):
    index, d, x0, maps, x = ctx.saved_tensors
    _, wants_d, wants_b, wants_x0, _, _, _ = ctx.needs_input_grad
    if not (wants_d or wants_b or wants_x0):
        return (None,) * 7
    grads = scan_backward(index, d, x0, maps, x, grad_x, ctx.mode, ctx.reverse, True)
    grad_d = _like_input(grads[0], d) if wants_d else None
    grad_b = _like_input(grads[1], ctx.b_like) if wants_b else None
    grad_x0 = _like_input(grads[2], x0) if wants_x0 else None
    return None, grad_d, grad_b, grad_x0, None, None, None


def _like_input(grad, like):
    """The gradient in the input's shape and dtype (summed over broadcast dimensions,
    the real part for a real input); as it is when it already has both."""
    if grad.shape == like.shape and grad.dtype == like.dtype:
        return grad
    return unbroadcast(_TORCH_XP, grad, like)


scan_forward.register_autograd(_backward, setup_context=_setup_context)
