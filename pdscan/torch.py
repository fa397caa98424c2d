"""``pdscan.torch``: the PD scan for PyTorch (custom ops with autograd).

    import pdscan.torch
    x = pdscan.torch.scan(index, d, b)   # differentiable in d, b, x0

See ``pdscan.adapters.torch``.
"""

from .adapters.torch import scan, scan_backward, scan_forward

__all__ = ["scan", "scan_forward", "scan_backward"]
