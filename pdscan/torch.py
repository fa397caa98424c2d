"""``pdscan.torch``: the PD scan for torch tensors, with autograd, under
torch.compile and in CUDA graphs.

    import pdscan.torch
    x = pdscan.torch.scan(index, d, b, x0, mode="scatter")   # differentiable in d, b, x0
    x.abs().square().sum().backward()

``scan_forward`` and ``scan_backward`` are the custom ops themselves
(``torch.ops.pdscan.scan_forward`` / ``scan_backward``, see ``pdscan.adapters.torch``);
they run the Numba kernels on CPU tensors and the CUDA kernels on CUDA tensors.
``scan_ste_dict`` and ``scan_ste_mixture`` are the straight-through scans
(``pdscan.ste``) as custom ops with autograd (``pdscan.adapters.torch.ste``);
``PDSSM`` and ``FlashPDSSM`` the layers built on them (``pdscan.adapters.torch.layers``,
docs/layers.md).  Importing this module imports torch.
"""

from __future__ import annotations

from .adapters.torch import scan, scan_backward, scan_forward
from .adapters.torch.layers import PDSSM, FlashPDSSM
from .adapters.torch.ste import scan_ste_dict, scan_ste_mixture

__all__ = ["scan", "scan_forward", "scan_backward", "scan_ste_dict", "scan_ste_mixture", "PDSSM", "FlashPDSSM"]
