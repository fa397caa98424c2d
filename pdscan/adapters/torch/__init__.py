"""The PyTorch adapter: the PD scan as torch custom ops with autograd.

``pdscan.scan`` on torch tensors selects this module's ``BACKEND``: the core's
``prepare`` (torch operations, so autograd sums over broadcast dimensions and takes
real parts through them) hands it a checked problem, and ``BACKEND.forward`` calls
the custom op ``pdscan::scan_forward``, whose autograd formula runs
``pdscan::scan_backward`` (``_ops``).  The ops run the Numba kernels on CPU tensors
and the CUDA kernels on CUDA tensors, on torch's current stream, without copies
(``_kernels``).

``pdscan.torch.scan`` is ``pdscan.scan`` for torch tensors.  Where there are no
index values to check (``check_index=False``, torch.compile tracing, CUDA graph
capture) it calls the op on the tensors as given: the op checks shapes and dtypes
with the core's ``prepare`` itself and reduces gradients over broadcast dimensions
in its backward, so nothing is checked twice and nothing is traced but the op.
Unchecked index values rely on the kernels' bounds safety (an out-of-range index
makes the state of its step NaN).
"""

from __future__ import annotations

import numpy as np
import torch

from ... import _api
from ..._problem import check_flag, check_options
from ._ops import scan_backward, scan_forward


def _values_hidden(t) -> bool:
    """True where index values cannot be read: while torch.compile traces (fake
    tensors), or while a CUDA graph is captured (reading would synchronise)."""
    if torch.compiler.is_compiling():
        return True
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


class TorchBackend:
    """The registry's ``"torch"`` backend over a ``ScanProblem`` of torch tensors."""

    name = "torch"
    # the ops return new tensors; ``out=`` is taken but filled by a copy
    writes_out = False
    # empty problems go through the op too, so that their (zero) gradients flow
    handles_empty = True

    def forward(self, p, out=None):
        """The states of ``p``, differentiable with respect to p.d, p.b and p.x0."""
        x = scan_forward(p.index, p.d, p.b, p.x0, p.maps, p.mode, p.reverse)
        if out is None:
            return x
        return out.copy_(x)

    def vjp(self, p, x, grad_x, *, conjugate=False, out=None):
        """(grad_d, grad_b, grad_x0) at the full batch shape (grad_x0 None without x0)."""
        grads = scan_backward(p.index, p.d, p.x0, p.maps, x, grad_x, p.mode, p.reverse, bool(conjugate))
        grads = grads[:2] + ((grads[2] if p.x0 is not None else None),)
        if out is None:
            return grads
        return tuple(None if target is None else target.copy_(g) for target, g in zip(out, grads))

    def validation_devices(self):
        """(label, to_native, to_numpy) for ``pdscan validate``: the CPU, and CUDA
        where torch has it."""
        def to_numpy(t):
            return t.detach().resolve_conj().cpu().numpy()

        rows = [("cpu", torch.from_numpy, to_numpy)]
        if torch.cuda.is_available():
            rows.append(("cuda", lambda a: torch.from_numpy(np.ascontiguousarray(a)).cuda(), to_numpy))
        return rows


BACKEND = TorchBackend()


def scan(index, d, b, x0=None, *, maps=None, mode="scatter", reverse=False, check_index=True):
    """``pdscan.scan`` for torch tensors, differentiable with respect to d, b and x0.

    The same arguments, broadcasting, dtype promotion and errors as ``pdscan.scan``.
    Gradients follow PyTorch's convention for complex values (conjugate Wirtinger)
    and are summed over broadcast dimensions; index and maps get none.  Index values
    are checked unless ``check_index=False``, or while torch.compile traces or a
    CUDA graph is captured, where they cannot be read.
    """
    check_flag(check_index, "check_index")
    if torch.compiler.is_compiling():
        # the op's fake implementation runs the core's shape and dtype checks while
        # tracing; mode and reverse are plain Python values, checked here
        check_options(mode, reverse)
        return scan_forward(index, d, b, x0, maps, mode, reverse)
    arrays = (index, d, b, x0, maps)
    all_tensors = all(a is None or isinstance(a, torch.Tensor) for a in arrays)
    if all_tensors and (not check_index or _values_hidden(d)):
        # the op checks shapes and dtypes with the core's prepare (on views, no
        # copies) and reduces gradients over broadcast dimensions itself; going
        # through pdscan.scan would run prepare a second time, on the tensors
        check_options(mode, reverse)
        return torch.ops.pdscan.scan_forward.default(index, d, b, x0, maps, mode, reverse)
    # index values to check, or a non-tensor argument: the core's checks and errors
    return _api.scan(index, d, b, x0, maps=maps, mode=mode, reverse=reverse, backend="torch",
                     check_index=check_index)


__all__ = ["BACKEND", "TorchBackend", "scan", "scan_forward", "scan_backward"]
