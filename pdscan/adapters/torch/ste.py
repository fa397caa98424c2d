"""The straight-through scans (``pdscan.ste``) as torch custom ops with autograd.

Four ops, each opaque to torch.compile (a fake implementation gives the results'
shapes and dtypes) and functional (fresh outputs, inputs never written)::

    pdscan::scan_ste_dict_forward(w, Q, d, b, x0?, mode, reverse) -> x
    pdscan::scan_ste_dict_backward(w, Q, d, x0?, x, grad_x, mode, reverse, conjugate)
        -> (grad_w, grad_Q, grad_d, grad_b, grad_x0)
    pdscan::scan_ste_mixture_forward(s, M, d, b, x0?, mode, reverse, temperature) -> x
    pdscan::scan_ste_mixture_backward(s, M, d, x0?, x, grad_x, mode, reverse, temperature, conjugate)
        -> (grad_s, grad_M, grad_d, grad_b, grad_x0)

They call the core's ``scan_ste_*`` / ``scan_ste_*_vjp`` on views of the tensors
(``_kernels``): NumPy views on the CPU (the Numba backend, or the NumPy reference
without Numba), CuPy views on CUDA, on torch's current stream and torch's caching
allocator (the CUDA backend; the contractions are CuPy matmuls).  The results are
handed to torch without a copy.

The backward ops give grad_w/s, grad_Q/M, grad_d and grad_x0 at their inputs'
shapes and dtypes (the core sums over broadcast dimensions); grad_b comes at the
full batch shape in the problem's dtype (x stands in for b, which the VJP does not
read, so b is not kept) and the autograd formula sums it down with the core's
``unbroadcast`` in torch operations.  Without x0, grad_x0 is zeros.  The autograd
formulas use PyTorch's convention (``conjugate=True``); no double backward.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ... import ste
from ..._namespace import namespace
from ..._problem import unbroadcast
from . import _kernels
from ._ops import _check_device

_Like = namedtuple("_Like", "shape dtype")
_FORMS = {
    "dict": (ste.scan_ste_dict, ste.scan_ste_dict_vjp, ste._dictionary_problem),
    "mixture": (ste.scan_ste_mixture, ste.scan_ste_mixture_vjp,
                lambda *a: ste._mixture_problem(*a)[0]),
}


# -- running the core on views ------------------------------------------------------


def _to_torch_cpu(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _run(form, which, device, tensors, **kw):
    """The core's forward (which=0) or VJP (which=1) of ``form`` on views of the
    tensors, its results as tensors on ``device`` (None stays None)."""
    fn = _FORMS[form][which]
    if device.type == "cuda":
        kernel = _kernels.cuda_kernel()
        with _kernels._OnTorchStream(device) as on:
            out = fn(*map(on.view, tensors), backend=kernel.name, **kw)
            # the results live in blocks from torch's allocator; as_tensor keeps them
            convert = lambda a: torch.as_tensor(a, device=device).contiguous()  # noqa: E731
            return convert(out) if which == 0 else tuple(None if g is None else convert(g) for g in out)
    _check_device(tensors[2])
    views = [_kernels._host_view(t) for t in tensors]
    with _kernels._HOST_KERNEL_LOCK:
        out = fn(*views, backend=_kernels.host_kernel().name, **kw)
    return _to_torch_cpu(out) if which == 0 else tuple(None if g is None else _to_torch_cpu(g) for g in out)


def _backward_results(form, router, table, d, x0, x, grad_x, kw):
    grads = _run(form, 1, d.device, (router, table, d, x, x0, x, grad_x), **kw)
    grad_x0 = grads[4] if x0 is not None else x.new_zeros(x.shape[:-2] + x.shape[-1:])
    return grads[:4] + (grad_x0,)


# -- shapes for the fake implementations --------------------------------------------


def _meta(form, router, table, d, b, x0, mode, reverse, temperature):
    """(batch_shape, L, N, dtype) of the states.  With plain integer sizes this runs
    the core's checks (on fake tensors under torch.compile, so tracing raises the
    core's errors); symbolic sizes go through torch's broadcasting and promotion."""
    tensors = [t for t in (router, table, d, b, x0) if t is not None]
    if all(type(n) is int for t in tensors for n in t.shape):
        args = (router, table, d, b, x0, mode, reverse) + ((temperature,) if form == "mixture" else ())
        p = _FORMS[form][2](*args)
        return p.batch_shape, p.L, p.N, p.dtype
    batches = [router.shape[:-2], table.shape[:-3], d.shape[:-2], b.shape[:-2]]
    dtype = torch.promote_types(d.dtype, b.dtype)
    if x0 is not None:
        batches.append(x0.shape[:-1])
        dtype = torch.promote_types(dtype, x0.dtype)
    return tuple(torch.broadcast_shapes(*batches)), d.shape[-2], d.shape[-1], dtype


def _fake_forward(form, router, table, d, b, x0, mode, reverse, temperature):
    batch, L, N, dtype = _meta(form, router, table, d, b, x0, mode, reverse, temperature)
    return d.new_empty(batch + (L, N), dtype=dtype)


def _fake_backward(router, table, d, x0, x):
    grad_x0 = x.new_empty(x.shape[:-2] + x.shape[-1:]) if x0 is None else torch.empty_like(x0)
    return (torch.empty_like(router), torch.empty_like(table), torch.empty_like(d), torch.empty_like(x), grad_x0)


# -- dictionary form ----------------------------------------------------------------


@torch.library.custom_op("pdscan::scan_ste_dict_forward", mutates_args=(), device_types=("cpu", "cuda"))
def scan_ste_dict_forward(w: Tensor, Q: Tensor, d: Tensor, b: Tensor, x0: Optional[Tensor], mode: str,
                          reverse: bool) -> Tensor:
    """The states x, batch + (L, N), of the dictionary form's hard scan."""
    return _run("dict", 0, d.device, (w, Q, d, b, x0), mode=mode, reverse=reverse)


@scan_ste_dict_forward.register_fake
def _(w, Q, d, b, x0, mode, reverse):
    return _fake_forward("dict", w, Q, d, b, x0, mode, reverse, None)


@torch.library.custom_op("pdscan::scan_ste_dict_backward", mutates_args=(), device_types=("cpu", "cuda"))
def scan_ste_dict_backward(w: Tensor, Q: Tensor, d: Tensor, x0: Optional[Tensor], x: Tensor, grad_x: Tensor,
                           mode: str, reverse: bool, conjugate: bool
                           ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(grad_w, grad_Q, grad_d, grad_b at the full batch shape, grad_x0 or zeros)."""
    return _backward_results("dict", w, Q, d, x0, x, grad_x,
                             dict(mode=mode, reverse=reverse, conjugate=conjugate))


@scan_ste_dict_backward.register_fake
def _(w, Q, d, x0, x, grad_x, mode, reverse, conjugate):
    return _fake_backward(w, Q, d, x0, x)


# -- mixture form -------------------------------------------------------------------


@torch.library.custom_op("pdscan::scan_ste_mixture_forward", mutates_args=(), device_types=("cpu", "cuda"))
def scan_ste_mixture_forward(s: Tensor, M: Tensor, d: Tensor, b: Tensor, x0: Optional[Tensor], mode: str,
                             reverse: bool, temperature: float) -> Tensor:
    """The states x, batch + (L, N), of the mixture form's hard scan."""
    return _run("mixture", 0, d.device, (s, M, d, b, x0), mode=mode, reverse=reverse, temperature=temperature)


@scan_ste_mixture_forward.register_fake
def _(s, M, d, b, x0, mode, reverse, temperature):
    return _fake_forward("mixture", s, M, d, b, x0, mode, reverse, temperature)


@torch.library.custom_op("pdscan::scan_ste_mixture_backward", mutates_args=(), device_types=("cpu", "cuda"))
def scan_ste_mixture_backward(s: Tensor, M: Tensor, d: Tensor, x0: Optional[Tensor], x: Tensor, grad_x: Tensor,
                              mode: str, reverse: bool, temperature: float, conjugate: bool
                              ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(grad_s, grad_M, grad_d, grad_b at the full batch shape, grad_x0 or zeros)."""
    return _backward_results("mixture", s, M, d, x0, x, grad_x,
                             dict(mode=mode, reverse=reverse, temperature=temperature, conjugate=conjugate))


@scan_ste_mixture_backward.register_fake
def _(s, M, d, x0, x, grad_x, mode, reverse, temperature, conjugate):
    return _fake_backward(s, M, d, x0, x)


# -- autograd -----------------------------------------------------------------------


def _setup_context(ctx, inputs, output):
    router, table, d, b, x0 = inputs[:5]
    ctx.save_for_backward(router, table, d, x0, output)
    ctx.static = inputs[5:]  # mode, reverse (and temperature)
    ctx.b_like = _Like(tuple(b.shape), b.dtype)


def _make_backward(backward_op):
    def backward(ctx, grad_x):
        router, table, d, x0, x = ctx.saved_tensors
        wants = ctx.needs_input_grad[:5]
        nothing = (None,) * (5 + len(ctx.static))
        if not any(wants):
            return nothing
        grads = list(backward_op(router, table, d, x0, x, grad_x, *ctx.static, True))
        grads[3] = unbroadcast(namespace(grad_x), grads[3], ctx.b_like)
        if x0 is None:
            grads[4] = None
        return tuple(g if want else None for g, want in zip(grads, wants)) + nothing[5:]
    return backward


scan_ste_dict_forward.register_autograd(_make_backward(scan_ste_dict_backward), setup_context=_setup_context)
scan_ste_mixture_forward.register_autograd(_make_backward(scan_ste_mixture_backward), setup_context=_setup_context)


# -- the public functions -------------------------------------------------------------


def scan_ste_dict(w, Q, d, b, x0=None, *, mode="scatter", reverse=False):
    """``pdscan.scan_ste_dict`` for torch tensors (dictionary form, Flash PD-SSM).

    Hard forward: k_t = argmax_k w[..., t, k], sigma_k(j) = argmax_i Q[..., k, i, j].
    Differentiable with respect to w, Q, d, b and x0: the gradients of the dense
    straight-through surrogate in PyTorch's convention, without any N x N tensor per
    step.  Works under torch.compile(fullgraph=True).
    """
    ste.check_static(mode, reverse)
    return scan_ste_dict_forward(w, Q, d, b, x0, mode, reverse)


def scan_ste_mixture(s, M, d, b, x0=None, *, mode="scatter", reverse=False, temperature=1.0):
    """``pdscan.scan_ste_mixture`` for torch tensors (per-step mixture form, PD-SSM).

    Hard forward: sigma_t(j) = argmax_i M_t[i, j] with M_t = sum_k s[..., t, k] M[..., k];
    gradients through the column softmax of M_t / temperature, recomputed a chunk of
    steps at a time in the backward.  Works under torch.compile(fullgraph=True).
    """
    ste.check_static(mode, reverse, temperature)
    return scan_ste_mixture_forward(s, M, d, b, x0, mode, reverse, float(temperature))
