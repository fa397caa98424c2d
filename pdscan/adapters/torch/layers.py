"""PD-SSM layers for PyTorch: ``PDSSM`` (per-step mixture of K transition logit
matrices, ``scan_ste_mixture``) and ``FlashPDSSM`` (a router picking one of K
dictionary matrices per step, ``scan_ste_dict``).

Each is one post-norm block (the equations are in ``pdscan.adapters._layers`` and
docs/layers.md); heads are a batch dimension of the scan, so the whole layer is one
straight-through scan call.  All parameters are real (complex B and C are stored as
real and imaginary parts), so any torch optimizer applies and PyTorch's conjugate
Wirtinger convention never reaches the user: the straight-through ops handle it.
The parameter names and shapes are those of ``pdscan.jax.PDSSM`` / ``FlashPDSSM``:
``{k: v.numpy() for k, v in layer.state_dict().items()}`` is a JAX parameter dict.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .._layers import check_config, check_input, check_params, param_specs
from .ste import scan_ste_dict, scan_ste_mixture


def _sample_(tensor, init):
    """Fill ``tensor`` in place from ``init`` (an ``_layers.Init``) with torch's RNG."""
    if init.kind == "normal":
        return nn.init.normal_(tensor, 0.0, init.a)
    if init.kind == "zeros":
        return nn.init.zeros_(tensor)
    if init.kind == "ones":
        return nn.init.ones_(tensor)
    if init.kind == "logit_uniform":
        return tensor.copy_(torch.logit(torch.empty_like(tensor).uniform_(init.a, init.b)))
    raise ValueError(f"init: unknown kind {init.kind!r}")


class _PDSSMBase(nn.Module):
    _form = None  # "mixture" or "dict"

    def __init__(self, d_model, state_size=16, heads=1, dict_size=8, mlp_ratio=2, temperature=1.0,
                 magnitude_init=(0.9, 0.999), phase_init=(0.001, 0.1), eps=1e-5, mode="scatter", *,
                 device=None, dtype=torch.float32):
        super().__init__()
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
        self.config = check_config(d_model, state_size, heads, dict_size, mlp_ratio, temperature,
                                   magnitude_init, phase_init, eps, mode)
        self._specs = param_specs(self.config)
        for name, (shape, _) in self._specs.items():
            self.register_parameter(name, nn.Parameter(torch.empty(shape, device=device, dtype=dtype)))
        self.reset_parameters()

    def reset_parameters(self):
        """Draw every parameter afresh from its initialization (torch's global RNG)."""
        with torch.no_grad():
            for name, (_, init) in self._specs.items():
                _sample_(getattr(self, name), init)

    def extra_repr(self):
        c = self.config
        return (f"d_model={c['d_model']}, state_size={c['state_size']}, heads={c['heads']}, "
                f"dict_size={c['dict_size']}, temperature={c['temperature']}")

    def load_params(self, params):
        """Copy a parameter dict (NumPy or JAX arrays, or tensors, by name: the JAX
        layers' layout) into this layer."""
        check_params(params, self.config, f"{type(self).__name__}.load_params")
        with torch.no_grad():
            for name in self._specs:
                p = getattr(self, name)
                p.copy_(torch.tensor(_to_numpy(params[name]), dtype=p.dtype, device=p.device))
        return self

    def _step_inputs(self, u):
        """Per step and head, for the input u (..., L, D): the router logits (..., H, L, K),
        |d| and the phase of d, and b (..., H, L, N)."""
        # heads become the batch dimension just before time: (..., H, L, .)
        logits = torch.einsum("...ld,hkd->...hlk", u, self.mix_w) + self.mix_b[:, None, :]
        mag = torch.sigmoid(torch.einsum("...ld,hnd->...hln", u, self.mag_w) + self.mag_b[:, None, :])
        phase = (2 * math.pi) * torch.sigmoid(torch.einsum("...ld,hnd->...hln", u, self.phase_w)
                                              + self.phase_b[:, None, :])
        b = torch.complex(torch.einsum("...ld,hnd->...hln", u, self.B_re),
                          torch.einsum("...ld,hnd->...hln", u, self.B_im))
        return logits, mag, phase, b

    def _states(self, u):
        """The scan's states x, (..., H, L, N) complex, for the input u (..., L, D)."""
        c = self.config
        logits, mag, phase, b = self._step_inputs(u)
        weights = torch.softmax(logits, dim=-1)
        d = torch.polar(mag, phase)
        # every head starts from e_0: a state the hard transitions move around from the first step
        x0 = torch.zeros(c["heads"], c["state_size"], dtype=d.dtype, device=d.device)
        x0[:, 0] = 1
        if self._form == "mixture":
            return scan_ste_mixture(weights, self.transitions, d, b, x0, mode=c["mode"], temperature=c["temperature"])
        # the soft dictionary: each column of Q_k a distribution over the rows
        Q = torch.softmax(self.transitions / c["temperature"], dim=-2)
        return scan_ste_dict(weights, Q, d, b, x0, mode=c["mode"])

    def forward(self, u):
        """u (..., L, d_model) real -> (..., L, d_model)."""
        if not isinstance(u, torch.Tensor) or not u.is_floating_point():
            raise TypeError(f"u: expected a real floating-point tensor, got {getattr(u, 'dtype', type(u))}")
        check_input(u, self.config["d_model"], f"{type(self).__name__}")
        u = u.to(self.mix_w.dtype)
        x = self._states(u)
        # Re(C x) = C_re Re(x) - C_im Im(x), summed over heads and state
        y = (torch.einsum("...hln,dhn->...ld", x.real, self.C_re)
             - torch.einsum("...hln,dhn->...ld", x.imag, self.C_im)) + self.skip * u
        D, eps = self.config["d_model"], self.config["eps"]
        h = nn.functional.layer_norm(u + y, (D,), self.norm1_w, self.norm1_b, eps)
        mlp = nn.functional.linear(nn.functional.gelu(nn.functional.linear(h, self.mlp1_w, self.mlp1_b)),
                                   self.mlp2_w, self.mlp2_b)
        return nn.functional.layer_norm(h + mlp, (D,), self.norm2_w, self.norm2_b, eps)


def _to_numpy(a):
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)  # a NumPy or JAX array (JAX arrays convert through __array__)


class PDSSM(_PDSSMBase):
    """PD-SSM layer (mixture form): per step and head, s_t = softmax(mix_w u_t + mix_b)
    mixes K transition logit matrices, M_t = sum_k s_t[k] M_k, and the hard
    transition is its column argmax, learned straight-through
    (``pdscan.torch.scan_ste_mixture``, softmax temperature ``temperature``).

    Arguments: ``d_model`` (D, input and output width), ``state_size`` (N),
    ``heads`` (H), ``dict_size`` (K), ``mlp_ratio`` (the MLP's hidden width is
    mlp_ratio * D), ``temperature``, ``magnitude_init`` and ``phase_init`` (the
    ranges that |d| and phase / 2 pi start in), ``eps`` (LayerNorm), ``mode``
    ("scatter": A_t = P_t D_t, column one-hot, the default; "gather": A_t = D_t P_t^T,
    row one-hot), ``device``,
    ``dtype`` (float32 or float64; the scan runs in the matching complex type).

    Parameters (all real; see ``pdscan.adapters._layers.param_specs`` for their
    initialization): mix_w (H, K, D), mix_b (H, K), transitions (H, K, N, N),
    mag_w, phase_w, B_re, B_im (H, N, D), mag_b, phase_b (H, N), C_re, C_im (D, H, N),
    skip (D,), norm1_w/b, norm2_w/b (D,), mlp1_w (F, D), mlp1_b (F,), mlp2_w (D, F),
    mlp2_b (D,).  Input and output (..., L, D).
    """

    _form = "mixture"


class FlashPDSSM(_PDSSMBase):
    """Flash PD-SSM layer (dictionary form): per step and head a router,
    w_t = softmax(mix_w u_t + mix_b), picks one of K soft dictionary matrices
    Q_k = softmax over rows of transitions[k] / temperature; the hard transition is
    the column argmax of Q_{argmax w_t}, learned straight-through
    (``pdscan.torch.scan_ste_dict``).  Only K maps are ever formed, so the
    transitions cost O(K N^2) for the whole sequence instead of O(L N^2).

    Arguments, parameters and shapes are those of ``PDSSM``.
    """

    _form = "dict"
